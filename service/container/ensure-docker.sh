#!/usr/bin/env bash
# Make sure the container build has what it needs: Debian's docker.io and debootstrap (for local base
# images) installed, and a Docker engine that answers (dockerd started in the background when it is
# not running). Needs root to install or start anything. Each need is checked on its own: an engine
# that already runs does not excuse a missing debootstrap.
set -euo pipefail
SBIN_DIRS="${SBIN_DIRS:-/usr/sbin /sbin}"  # where Debian puts both, whether or not they are on PATH
has() {
  command -v "$1" >/dev/null && return 0
  for dir in $SBIN_DIRS; do [[ -x "$dir/$1" ]] && return 0; done
  return 1
}
missing=()
has dockerd || missing+=(docker.io)
has debootstrap || missing+=(debootstrap)
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if docker info >/dev/null 2>&1; then exit 0; fi
mkdir -p build
PATH="/usr/sbin:$PATH" nohup dockerd >build/dockerd.log 2>&1 &
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 0.5
done
echo "dockerd did not start; see build/dockerd.log" >&2
exit 1
