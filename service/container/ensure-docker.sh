#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io (and debootstrap, for local base images)
# when missing, and start dockerd in the background when it is not running. Needs root for both.
set -euo pipefail
export PATH="/usr/bin:/usr/sbin:$PATH"  # Debian's docker client: it has the buildx plugin BuildKit needs
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
mkdir -p build
nohup dockerd >build/dockerd.log 2>&1 &
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 0.5
done
echo "dockerd did not start; see build/dockerd.log" >&2
exit 1
