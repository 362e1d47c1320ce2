#!/usr/bin/env bash
# Builds the reference workspace image (default molecule/workspace-echo:latest) WITHOUT any registry: the echo agent
# is bundled with esbuild, and the root filesystem is assembled from this machine's own node binary and the shared
# libraries it links, then loaded with `docker import`. An image whose content hash label matches is reused, so
# repeated test runs build once. Safe to run concurrently (flock). Prints the image name as its last line on stdout.
#
#   WORKSPACE_IMAGE_PREFIX  default "molecule/workspace-"
#   WORKSPACE_IMAGE_TAG     default "latest"
#   FORCE_REBUILD=1         build even when an image with the same hash exists
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${WORKSPACE_IMAGE_PREFIX:-molecule/workspace-}
TAG=${WORKSPACE_IMAGE_TAG:-latest}
IMAGE="${PREFIX}echo:${TAG}"
ENTRY="$ROOT/packages/agent-sdk/src/echo-agent.ts"
BUILD_DIR="$ROOT/infra/.build"
AGENT_UID=1000
AGENT_GID=1000

log() { printf 'build-workspace-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=lib/rootfs.sh
source "$ROOT/infra/lib/rootfs.sh"
rootfs_preflight

esbuild=""
for candidate in "$ROOT/packages/agent-sdk/node_modules/.bin/esbuild" "$ROOT/node_modules/.bin/esbuild"; do
  if [[ -x "$candidate" ]]; then esbuild=$candidate; break; fi
done
[[ -n "$esbuild" ]] || die "esbuild not found; run 'pnpm install' at $ROOT"

mkdir -p "$BUILD_DIR"
work=$(mktemp -d "$BUILD_DIR/echo.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. Bundle (outside the lock: each process bundles into its own temp dir).
"$esbuild" "$ENTRY" --bundle --platform=node --target=node20 --format=cjs --legal-comments=none \
  --log-level=warning --outfile="$work/echo-agent.js"

rootfs_node
hash=$(
  {
    sha256sum "$work/echo-agent.js" | cut -d' ' -f1
    echo "node $node_version $arch"
    sha256sum "${BASH_SOURCE[0]}" "$ROOT/infra/lib/rootfs.sh" | cut -d' ' -f1 # the layout and --change lines
  } | sha256sum | cut -c1-32
)

# 2. Serialise the check-and-import so two concurrent runs build once.
rootfs_lock_or_reuse "$IMAGE" "$hash" "$BUILD_DIR/workspace-echo.lock"

# 3. Assemble the root filesystem.
rootfs="$work/rootfs"
rootfs_base "$rootfs" agent "$AGENT_UID" "$AGENT_GID" /workspace
mkdir -p "$rootfs"/{app,workspace/.molecule}
chmod 0755 "$rootfs/workspace"
chmod 0700 "$rootfs/workspace/.molecule"
cp "$work/echo-agent.js" "$rootfs/app/echo-agent.js"
chmod 0644 "$rootfs/app/echo-agent.js"
rootfs_tar "$rootfs" "$work/rootfs.tar" workspace "$AGENT_UID" "$AGENT_GID"

# 4. Import.
log "importing $IMAGE (node $node_version, hash $hash)"
rootfs_import "$IMAGE" "$work/rootfs.tar" "$hash" workspace-echo \
  --change 'ENTRYPOINT ["/usr/local/bin/node","/app/echo-agent.js"]' \
  --change 'WORKDIR /workspace' \
  --change 'ENV NODE_ENV=production' \
  --change 'ENV HOME=/workspace' \
  --change 'ENV AGENT_PORT=8000' \
  --change 'EXPOSE 8000' \
  --change "USER $AGENT_UID:$AGENT_GID"

echo "$IMAGE"
