#!/usr/bin/env bash
# Builds the control plane image (default molecule/control-plane:latest) WITHOUT any registry, the way
# build-tenant-image.sh builds the tenant platform's: apps/control-plane/src/main.ts bundled with esbuild
# (bundle-control-plane.sh), and a root filesystem of this machine's own node binary, the shared libraries it links,
# the bundle, the migrations and the embedded database package, loaded with `docker import`. An image whose content
# hash label matches is reused, so repeated test runs build once. Safe to run concurrently (flock). Prints the image
# name as its last line on stdout.
#
#   CONTROL_PLANE_IMAGE   default "molecule/control-plane:latest"
#   FORCE_REBUILD=1       build even when an image with the same hash exists
#
# Layout inside the image (the same /app as control-plane.Dockerfile's):
#   /usr/local/bin/node   the host's node binary (+ its libraries under /lib*, /usr/lib*)
#   /app                  bundle-control-plane.sh's output; the entrypoint is node /app/dist/cp/main.mjs
#   /data                 MOLECULE_DATA_DIR (embedded database and generated secrets without DATABASE_URL); uid 1000
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${CONTROL_PLANE_IMAGE:-molecule/control-plane:latest}
BUILD_DIR="$ROOT/infra/.build"
APP_UID=1000
APP_GID=1000

log() { printf 'build-control-plane-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=lib/rootfs.sh
source "$ROOT/infra/lib/rootfs.sh"
rootfs_preflight

mkdir -p "$BUILD_DIR"
work=$(mktemp -d "$BUILD_DIR/control-plane.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. Bundle (outside the lock: each process bundles into its own temp dir).
bash "$ROOT/infra/bundle-control-plane.sh" "$work/app"

rootfs_node

# Everything under /app, the node binary's version, and the scripts.
hash=$(
  {
    (cd "$work/app" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    echo "node $node_version $arch"
    sha256sum "${BASH_SOURCE[0]}" "$ROOT/infra/bundle-control-plane.sh" "$ROOT/infra/lib/bundle.sh" \
      "$ROOT/infra/lib/rootfs.sh" | cut -d' ' -f1
  } | sha256sum | cut -c1-32
)

# 2. Serialise the check-and-import so two concurrent runs build once.
rootfs_lock_or_reuse "$IMAGE" "$hash" "$BUILD_DIR/control-plane.lock"

# 3. Assemble the root filesystem.
rootfs="$work/rootfs"
rootfs_base "$rootfs" molecule "$APP_UID" "$APP_GID" /data
mkdir -p "$rootfs/data"
chmod 0700 "$rootfs/data"
mv "$work/app" "$rootfs/app"
rootfs_tar "$rootfs" "$work/rootfs.tar" data "$APP_UID" "$APP_GID"

# 4. Import.
log "importing $IMAGE (node $node_version, hash $hash)"
rootfs_import "$IMAGE" "$work/rootfs.tar" "$hash" control-plane \
  --change 'ENTRYPOINT ["/usr/local/bin/node","/app/dist/cp/main.mjs"]' \
  --change 'WORKDIR /data' \
  --change 'ENV NODE_ENV=production' \
  --change 'ENV HOME=/data' \
  --change 'ENV MOLECULE_DATA_DIR=/data' \
  --change 'ENV PORT=8090' \
  --change 'EXPOSE 8090' \
  --change "USER $APP_UID:$APP_GID"

echo "$IMAGE"
