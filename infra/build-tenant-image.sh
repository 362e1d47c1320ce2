#!/usr/bin/env bash
# Builds the tenant platform image (default molecule/tenant-platform:latest) WITHOUT any registry, the way
# build-workspace-image.sh builds the workspace image: apps/tenant-platform/src/main.ts is bundled with esbuild, and
# the root filesystem is this machine's own node binary, the shared libraries it links, the bundle, the database
# migrations and the embedded database package, loaded with `docker import`. An image whose content hash label
# matches is reused, so repeated test runs build once. Safe to run concurrently (flock). Prints the image name as its
# last line on stdout.
#
#   TENANT_IMAGE   default "molecule/tenant-platform:latest"
#   FORCE_REBUILD=1  build even when an image with the same hash exists
#
# Layout inside the image:
#   /usr/local/bin/node   the host's node binary (+ its libraries under /lib*, /usr/lib*)
#   /app                  infra/bundle-tenant-platform.sh's output; the entrypoint is node /app/dist/main.mjs
#   /data                 MOLECULE_DATA_DIR (embedded database, generated tokens); owned by uid 1000
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${TENANT_IMAGE:-molecule/tenant-platform:latest}
BUILD_DIR="$ROOT/infra/.build"
APP_UID=1000
APP_GID=1000

log() { printf 'build-tenant-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
command -v flock >/dev/null || die "flock is not installed (util-linux)"
command -v node >/dev/null || die "node is not on PATH"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"

mkdir -p "$BUILD_DIR"
work=$(mktemp -d "$BUILD_DIR/tenant.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. Bundle (outside the lock: each process bundles into its own temp dir).
bash "$ROOT/infra/bundle-tenant-platform.sh" "$work/app"

# The real binary, not a version-manager shim.
node_bin=$(node -p 'process.execPath')
node_bin=$(readlink -f "$node_bin")
node_version=$("$node_bin" --version)
arch=$(uname -m)
pglite_version=$(node -p 'require(process.argv[1]).version' "$work/app/node_modules/@electric-sql/pglite/package.json")

# Everything under /app (bundle, migrations, canvas, pglite), the node binary's version, and the two scripts.
hash=$(
  {
    (cd "$work/app" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    echo "node $node_version $arch"
    sha256sum "${BASH_SOURCE[0]}" "$ROOT/infra/bundle-tenant-platform.sh" | cut -d' ' -f1
  } | sha256sum | cut -c1-32
)

# 2. Serialise the check-and-import so two concurrent runs build once.
exec 9>"$BUILD_DIR/tenant-platform.lock"
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
mkdir -p "$rootfs"/{usr/local/bin,etc,tmp,data}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/data"
cp "$node_bin" "$rootfs/usr/local/bin/node"
chmod 0755 "$rootfs/usr/local/bin/node"
mv "$work/app" "$rootfs/app"

if ldd "$node_bin" >/dev/null 2>&1; then
  # "libx.so => /path (addr)" and the loader "/lib64/ld-linux-x86-64.so.2 (addr)"; skip the vdso.
  while read -r lib; do
    [[ -n "$lib" && -e "$lib" ]] || continue
    cp -L --parents "$lib" "$rootfs/"
  done < <(ldd "$node_bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
fi

cat >"$rootfs/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/usr/sbin/nologin
molecule:x:$APP_UID:$APP_GID:molecule:/data:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<GROUP
root:x:0:
molecule:x:$APP_GID:
nogroup:x:65534:
GROUP
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
: >"$rootfs/etc/hosts"
: >"$rootfs/etc/resolv.conf"

# Everything is root-owned except /data, which belongs to the platform's user (works without root on the host). A new
# named volume mounted on /data takes this ownership.
tar -C "$rootfs" -cf "$work/rootfs.tar" --numeric-owner --owner=0 --group=0 --exclude=./data .
tar -C "$rootfs" -rf "$work/rootfs.tar" --numeric-owner --owner="$APP_UID" --group="$APP_GID" ./data

# 4. Import.
log "importing $IMAGE (node $node_version, pglite $pglite_version, hash $hash)"
docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/node","/app/dist/main.mjs"]' \
  --change 'WORKDIR /data' \
  --change 'ENV NODE_ENV=production' \
  --change 'ENV HOME=/data' \
  --change 'ENV MOLECULE_DATA_DIR=/data' \
  --change 'ENV PORT=8080' \
  --change 'EXPOSE 8080' \
  --change "USER $APP_UID:$APP_GID" \
  --change "LABEL molecule.image.hash=$hash" \
  --change "LABEL molecule.image.node=$node_version" \
  --change 'LABEL molecule.image.kind=tenant-platform' \
  - "$IMAGE" <"$work/rootfs.tar" >/dev/null

# Drop the image this tag pointed at before, and older untagged builds, unless a container still uses them.
if [[ -n "$previous" ]]; then
  now=$(docker image inspect --format '{{ .Id }}' "$IMAGE")
  if [[ "$previous" != "$now" ]]; then docker image rm "$previous" >/dev/null 2>&1 || true; fi
fi
docker image prune --force --filter label=molecule.image.kind=tenant-platform >/dev/null 2>&1 || true

echo "$IMAGE"
