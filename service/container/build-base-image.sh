#!/usr/bin/env bash
# Build a minimal Debian bookworm + Python 3.11 base image with debootstrap, for `bentoml containerize`
# where no container registry is reachable (air-gapped or proxied networks).
#
#   service/container/build-base-image.sh [TAG]        (default TAG: nnserve-base:bookworm)
#
# DEBIAN_MIRROR     the Debian mirror to bootstrap from (default: the host's apt source, else deb.debian.org)
# EXTRA_CA_CERTS    space-separated .crt files the image must trust, e.g. a TLS-intercepting proxy's CA
#                   (default: the host's /usr/local/share/ca-certificates/*.crt)
set -euo pipefail
TAG="${1:-nnserve-base:bookworm}"
if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
  DEBIAN_MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi
ROOT="$(mktemp -d)"  # under the caller's TMPDIR, if set
trap 'rm -rf "$ROOT"' EXIT
# Everything that runs inside the new root gets a clean TMPDIR: the caller's (say /work/tmp) does not
# exist in there, and Debian's maintainer scripts fail on it ("mktemp: failed to create file").
in_root() { env -u TMPDIR "$@"; }

in_root debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$ROOT" "$DEBIAN_MIRROR" >/dev/null

shopt -s nullglob
for crt in ${EXTRA_CA_CERTS:-/usr/local/share/ca-certificates/*.crt}; do
  cp "$crt" "$ROOT/usr/local/share/ca-certificates/"
done
in_root chroot "$ROOT" update-ca-certificates >/dev/null
in_root chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/var/cache/debconf/*-old

# SSL_CERT_FILE and UV_NATIVE_TLS make pip and uv (which bentoml's Dockerfile installs with) use the
# system trust store, extra CAs included; Debian's Python needs PIP_BREAK_SYSTEM_PACKAGES for pip.
tar -C "$ROOT" -c . | docker import \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV UV_NATIVE_TLS=1' \
  --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
  --change 'CMD ["/bin/bash"]' \
  - "$TAG" >/dev/null
echo "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
