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
#   /usr/local/bin/node                the host's node binary (+ its libraries under /lib*, /usr/lib*)
#   /app/dist/main.mjs                 the bundled tenant platform (ESM)
#   /app/dist/static/                  the canvas UI's files; its routes read them at ./static/ from the bundle
#   /app/drizzle/*.sql                 migrations; packages/db finds them at ../drizzle/ from the bundle
#   /app/node_modules/@electric-sql/pglite   kept out of the bundle: it loads its .wasm/.data files from beside itself
#   /data                              MOLECULE_DATA_DIR (embedded database, generated tokens); owned by uid 1000
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${TENANT_IMAGE:-molecule/tenant-platform:latest}
ENTRY="$ROOT/apps/tenant-platform/src/main.ts"
MIGRATIONS="$ROOT/packages/db/drizzle"
CANVAS_STATIC="$ROOT/apps/tenant-platform/src/canvas/static"
BUILD_DIR="$ROOT/infra/.build"
APP_UID=1000
APP_GID=1000

log() { printf 'build-tenant-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
command -v flock >/dev/null || die "flock is not installed (util-linux)"
command -v node >/dev/null || die "node is not on PATH"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"

esbuild=""
for candidate in "$ROOT/node_modules/.bin/esbuild" "$ROOT/apps/tenant-platform/node_modules/.bin/esbuild" \
  "$ROOT/packages/agent-sdk/node_modules/.bin/esbuild"; do
  if [[ -x "$candidate" ]]; then esbuild=$candidate; break; fi
done
[[ -n "$esbuild" ]] || die "esbuild not found; run 'pnpm install' at $ROOT"

# The embedded database package, resolved the way the bundle's importer (packages/db) resolves it, through the pnpm
# store symlinks to its real directory.
pglite_dir=$(cd "$ROOT/packages/db" && node -e '
  const { dirname, join } = require("node:path");
  const { existsSync, readFileSync, realpathSync } = require("node:fs");
  let dir = dirname(realpathSync(require.resolve("@electric-sql/pglite")));
  while (!(existsSync(join(dir, "package.json")) &&
      JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).name === "@electric-sql/pglite")) {
    if (dirname(dir) === dir) throw new Error("package root not found");
    dir = dirname(dir);
  }
  console.log(dir);') || die "@electric-sql/pglite is not installed; run 'pnpm install' at $ROOT"
[[ -d "$MIGRATIONS" ]] || die "migrations not found at $MIGRATIONS"

mkdir -p "$BUILD_DIR"
work=$(mktemp -d "$BUILD_DIR/tenant.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. Bundle (outside the lock: each process bundles into its own temp dir).
#    - ESM output: CommonJS dependencies still call require() and read __dirname (dockerode's ssh2 does at load
#      time), so the banner defines both from import.meta.url.
#    - @electric-sql/pglite stays external (copied below).
#    - cpu-features is a native optional dependency of ssh2 (only used for docker-over-ssh), required inside a
#      try/catch: external and absent, so ssh2 falls back to its JavaScript ciphers. The tenant never needs it.
banner='import { createRequire as __moleculeCreateRequire } from "node:module";'
banner+='import { fileURLToPath as __moleculeFileURLToPath } from "node:url";'
banner+='import { dirname as __moleculeDirname } from "node:path";'
banner+='const require = __moleculeCreateRequire(import.meta.url);'
banner+='const __filename = __moleculeFileURLToPath(import.meta.url);'
banner+='const __dirname = __moleculeDirname(__filename);'
"$esbuild" "$ENTRY" --bundle --platform=node --target=node20 --format=esm --legal-comments=none \
  --external:@electric-sql/pglite --external:cpu-features --banner:js="$banner" \
  --log-level=warning --outfile="$work/main.mjs"

# The real binary, not a version-manager shim.
node_bin=$(node -p 'process.execPath')
node_bin=$(readlink -f "$node_bin")
node_version=$("$node_bin" --version)
arch=$(uname -m)
pglite_version=$(node -p 'require(process.argv[1]).version' "$pglite_dir/package.json")

tree_hash() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1); }

hash=$(
  {
    sha256sum "$work/main.mjs" | cut -d' ' -f1
    tree_hash "$MIGRATIONS"
    if [[ -d "$CANVAS_STATIC" ]]; then tree_hash "$CANVAS_STATIC"; fi
    echo "pglite $pglite_version $(tree_hash "$pglite_dir")"
    echo "node $node_version $arch"
    sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1 # the layout and --change lines below
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
mkdir -p "$rootfs"/{usr/local/bin,app/dist,app/drizzle,app/node_modules/@electric-sql,etc,tmp,data}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/data"
cp "$node_bin" "$rootfs/usr/local/bin/node"
chmod 0755 "$rootfs/usr/local/bin/node"
cp "$work/main.mjs" "$rootfs/app/dist/main.mjs"
cp "$MIGRATIONS"/*.sql "$rootfs/app/drizzle/"
if [[ -d "$CANVAS_STATIC" ]]; then cp -R "$CANVAS_STATIC" "$rootfs/app/dist/static"; fi
cp -RL "$pglite_dir" "$rootfs/app/node_modules/@electric-sql/pglite"
chmod -R a+rX,go-w "$rootfs/app"

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

# Drop the image this tag pointed at before, unless something still uses it.
if [[ -n "$previous" ]]; then
  now=$(docker image inspect --format '{{ .Id }}' "$IMAGE")
  if [[ "$previous" != "$now" ]]; then docker image rm "$previous" >/dev/null 2>&1 || true; fi
fi

echo "$IMAGE"
