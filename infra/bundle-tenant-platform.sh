#!/usr/bin/env bash
# Assembles the tenant platform as a self-contained folder that `node <out>/dist/main.mjs` runs with nothing else
# installed. Used by build-tenant-image.sh (registry-free image) and tenant-platform.Dockerfile (ordinary build).
#
#   bash infra/bundle-tenant-platform.sh <out-dir>        (after `pnpm install` at the repository root)
#
#   <out>/dist/main.mjs                       apps/tenant-platform/src/main.ts bundled by esbuild (ESM, node20)
#   <out>/dist/static/                        the canvas UI's files; its routes read them at ./static/ from the bundle
#   <out>/drizzle/*.sql                       migrations; packages/db reads them at ../drizzle/ from the bundle
#   <out>/node_modules/@electric-sql/pglite   kept out of the bundle: it loads its .wasm/.data files from beside itself
# The esbuild and PGlite steps are shared with bundle-control-plane.sh (lib/bundle.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENTRY="$ROOT/apps/tenant-platform/src/main.ts"
MIGRATIONS="$ROOT/packages/db/drizzle"
CANVAS_STATIC="$ROOT/apps/tenant-platform/src/canvas/static"

log() { printf 'bundle-tenant-platform: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=lib/bundle.sh
source "$ROOT/infra/lib/bundle.sh"

[[ $# -eq 1 ]] || die "usage: $0 <out-dir>"
out=$1
bundle_check_out "$out"
[[ -d "$MIGRATIONS" ]] || die "migrations not found at $MIGRATIONS"

mkdir -p "$out"/{dist,drizzle}
bundle_entry "$ENTRY" "$out/dist/main.mjs"
cp "$MIGRATIONS"/*.sql "$out/drizzle/"
if [[ -d "$CANVAS_STATIC" ]]; then cp -R "$CANVAS_STATIC" "$out/dist/static"; fi
bundle_pglite "$out"
chmod -R a+rX,go-w "$out"
