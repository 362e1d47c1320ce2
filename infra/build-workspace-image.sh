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

command -v docker >/dev/null || die "docker is not installed"
command -v flock >/dev/null || die "flock is not installed (util-linux)"
command -v node >/dev/null || die "node is not on PATH"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"

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

# The real binary, not a version-manager shim.
node_bin=$(node -p 'process.execPath')
node_bin=$(readlink -f "$node_bin")
node_version=$("$node_bin" --version)
arch=$(uname -m)

hash=$(
  {
    sha256sum "$work/echo-agent.js" | cut -d' ' -f1
    echo "node $node_version $arch"
    sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1 # the layout and --change lines below
  } | sha256sum | cut -c1-32
)

# 2. Serialise the check-and-import so two concurrent runs build once.
exec 9>"$BUILD_DIR/workspace-echo.lock"
flock 9

if [[ "${FORCE_REBUILD:-0}" != "1" ]]; then
  current=$(docker image inspect --format '{{ index .Config.Labels "molecule.image.hash" }}' "$IMAGE" 2>/dev/null || true)
  if [[ "$current" == "$hash" ]]; then
    log "$IMAGE is up to date (hash $hash)"
    echo "$IMAGE"
    exit 0
  fi
  # Same content under another tag: tag it instead of importing again.
  existing=$(docker images --quiet --filter "label=molecule.image.hash=$hash" | head -n1)
  if [[ -n "$existing" ]]; then
    docker tag "$existing" "$IMAGE"
    log "tagged existing image $existing as $IMAGE (hash $hash)"
    echo "$IMAGE"
    exit 0
  fi
fi
previous=$(docker image inspect --format '{{ .Id }}' "$IMAGE" 2>/dev/null || true)

# 3. Assemble the root filesystem.
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{usr/local/bin,app,etc,tmp,workspace/.molecule}
chmod 1777 "$rootfs/tmp"
chmod 0755 "$rootfs/workspace"
chmod 0700 "$rootfs/workspace/.molecule"
cp "$node_bin" "$rootfs/usr/local/bin/node"
cp "$work/echo-agent.js" "$rootfs/app/echo-agent.js"
chmod 0755 "$rootfs/usr/local/bin/node"
chmod 0644 "$rootfs/app/echo-agent.js"

if ldd "$node_bin" >/dev/null 2>&1; then
  # "libx.so => /path (addr)" and the loader "/lib64/ld-linux-x86-64.so.2 (addr)"; skip the vdso.
  while read -r lib; do
    [[ -n "$lib" && -e "$lib" ]] || continue
    cp -L --parents "$lib" "$rootfs/"
  done < <(ldd "$node_bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
fi

cat >"$rootfs/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/usr/sbin/nologin
agent:x:$AGENT_UID:$AGENT_GID:agent:/workspace:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<GROUP
root:x:0:
agent:x:$AGENT_GID:
nogroup:x:65534:
GROUP
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
: >"$rootfs/etc/hosts"
: >"$rootfs/etc/resolv.conf"

# Everything is root-owned except /workspace, which belongs to the agent user (works without root on the host).
tar -C "$rootfs" -cf "$work/rootfs.tar" --numeric-owner --owner=0 --group=0 --exclude=./workspace .
tar -C "$rootfs" -rf "$work/rootfs.tar" --numeric-owner --owner="$AGENT_UID" --group="$AGENT_GID" ./workspace

# 4. Import.
log "importing $IMAGE (node $node_version, hash $hash)"
docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/node","/app/echo-agent.js"]' \
  --change 'WORKDIR /workspace' \
  --change 'ENV NODE_ENV=production' \
  --change 'ENV HOME=/workspace' \
  --change 'ENV AGENT_PORT=8000' \
  --change 'EXPOSE 8000' \
  --change "USER $AGENT_UID:$AGENT_GID" \
  --change "LABEL molecule.image.hash=$hash" \
  --change "LABEL molecule.image.node=$node_version" \
  --change 'LABEL molecule.image.kind=workspace-echo' \
  - "$IMAGE" <"$work/rootfs.tar" >/dev/null

# Drop the image this tag pointed at before, unless something still uses it.
if [[ -n "$previous" ]]; then
  now=$(docker image inspect --format '{{ .Id }}' "$IMAGE")
  if [[ "$previous" != "$now" ]]; then docker image rm "$previous" >/dev/null 2>&1 || true; fi
fi

echo "$IMAGE"
