#!/usr/bin/env bash
# Build the nnserve image: a bento of service/ and models/ (bentofile.yaml), then `bentoml containerize`.
#
#   service/container/build.sh [IMAGE]          (default IMAGE: nnserve:<version from pyproject.toml>)
#
# BASE_IMAGE      use this base image instead of bentofile.yaml's (BentoML's standard python:3.11-slim)
# LOCAL_BASE=1    build a Debian base image with debootstrap (build-base-image.sh) and use it; chosen
#                 automatically when python:3.11-slim cannot be pulled (no registry reachable)
# EXTRA_CA_CERTS  space-separated .crt files the build and the service must trust (proxies)
# GPU=1           the CUDA variant: onnxruntime-gpu on an NVIDIA CUDA runtime base (needs a registry)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/usr/bin:/usr/sbin:$PATH"  # Debian's docker client: it has the buildx plugin BuildKit needs
BENTOML="${BENTOML:-$PWD/.venv/bin/bentoml}"
VERSION="$(sed -n 's/^__version__ = "\(.*\)".*/\1/p' service/__init__.py)"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
IMAGE="${1:-nnserve:$VERSION}"
STANDARD_BASE="$(awk '/base_image:/ {print $2; exit}' bentofile.yaml)"
# onnxruntime-gpu 1.31.1 from PyPI is built for CUDA 13 (libcublas.so.13, cuDNN 9): a CUDA 13 runtime base.
# The tag is not verified here (no registry reachable): check it exists before a GPU build.
GPU_BASE="nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04"

if [[ "${GPU:-}" == 1 ]]; then
  BASE_IMAGE="${BASE_IMAGE:-$GPU_BASE}"
elif [[ -z "${BASE_IMAGE:-}" ]]; then
  if [[ "${LOCAL_BASE:-}" != 1 ]] && timeout 120 docker pull -q "$STANDARD_BASE" >/dev/null 2>&1; then
    BASE_IMAGE="$STANDARD_BASE"
  else
    BASE_IMAGE="nnserve-base:bookworm"
    echo "using a local Debian base image ($BASE_IMAGE): $STANDARD_BASE cannot be pulled or LOCAL_BASE=1"
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || service/container/build-base-image.sh "$BASE_IMAGE"
  fi
fi

# The extra CA certificates travel in the bento (service/container/ca-certificates/, not committed).
rm -f service/container/ca-certificates/*.crt
for crt in ${EXTRA_CA_CERTS:-}; do cp "$crt" service/container/ca-certificates/; done

mkdir -p build/container
sed -e "s|^\( *base_image:\).*|\1 $BASE_IMAGE|" bentofile.yaml > build/container/bentofile.yaml
if [[ "${GPU:-}" == 1 ]]; then
  sed -i -e 's/- onnxruntime==/- onnxruntime-gpu==/' build/container/bentofile.yaml
  printf 'envs:\n  - name: NNSERVE_PROVIDERS\n    value: auto\n' >>build/container/bentofile.yaml
fi

started=$(date +%s)
BENTO="$("$BENTOML" build -f build/container/bentofile.yaml -o tag --label "version=$VERSION" --label "commit=$COMMIT" . | tail -n 1)"
BENTO="${BENTO#__tag__:}"
# BentoML refuses a Dockerfile template outside the current directory, and it copies the bento to the
# temporary directory before building: so containerize from there.
(cd "${TMPDIR:-/tmp}" && "$BENTOML" containerize "$BENTO" -t "$IMAGE" --backend docker \
  --opt "label=org.opencontainers.image.version=$VERSION" \
  --opt "label=org.opencontainers.image.revision=$COMMIT" \
  --opt "label=nnserve.base-image=$BASE_IMAGE" >build-container.log 2>&1) || {
  tail -n 40 "${TMPDIR:-/tmp}/build-container.log" >&2
  exit 1
}
size="$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
echo "built $IMAGE from $BENTO on $BASE_IMAGE in $(( $(date +%s) - started )) s: $size"
