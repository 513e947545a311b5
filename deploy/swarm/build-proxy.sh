#!/usr/bin/env bash
# Build the Swarm stack's front proxy image (Dockerfile.proxy: HAProxy from Debian, haproxy.cfg checked).
#
#   deploy/swarm/build-proxy.sh [IMAGE]     (default IMAGE: nnserve-proxy:<version>)
#
# BASE_IMAGE   the base image (default: nnserve-base:bookworm, built here with debootstrap when missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/usr/bin:/usr/sbin:$PATH"  # Debian's docker client (buildx), as service/container/build.sh
VERSION="$(sed -n 's/^__version__ = "\(.*\)".*/\1/p' service/__init__.py)"
IMAGE="${1:-nnserve-proxy:$VERSION}"
BASE_IMAGE="${BASE_IMAGE:-nnserve-base:bookworm}"
if [[ "$BASE_IMAGE" == nnserve-base:* ]] && ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  service/container/build-base-image.sh "$BASE_IMAGE"
fi
docker build -q -f deploy/swarm/Dockerfile.proxy --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" deploy/swarm >/dev/null
echo "built $IMAGE on $BASE_IMAGE"
