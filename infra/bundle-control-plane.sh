#!/usr/bin/env bash
# Assembles the control plane as a self-contained folder that `node <out>/dist/cp/main.mjs` runs with nothing else
# installed. Used by build-control-plane-image.sh (registry-free image) and control-plane.Dockerfile (ordinary build).
#
#   bash infra/bundle-control-plane.sh <out-dir>          (after `pnpm install` at the repository root)
#
#   <out>/dist/cp/main.mjs                    apps/control-plane/src/main.ts bundled by esbuild (ESM, node20), two
#                                             levels below <out> as src/db/migrations.ts is below apps/control-plane,
#                                             so its ../../drizzle/ is <out>/drizzle/
#   <out>/dist/cp/molecule-cp.mjs             the operator CLI (apps/control-plane/src/cli.ts): `node` runs it
#   <out>/drizzle/*.sql                       the control plane's migrations
#   <out>/node_modules/@electric-sql/pglite   the embedded database (without DATABASE_URL), kept out of the bundle
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENTRY="$ROOT/apps/control-plane/src/main.ts"
CLI="$ROOT/apps/control-plane/src/cli.ts"
MIGRATIONS="$ROOT/apps/control-plane/drizzle"

log() { printf 'bundle-control-plane: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=lib/bundle.sh
source "$ROOT/infra/lib/bundle.sh"

[[ $# -eq 1 ]] || die "usage: $0 <out-dir>"
out=$1
bundle_check_out "$out"
[[ -d "$MIGRATIONS" ]] || die "migrations not found at $MIGRATIONS"

mkdir -p "$out"/{dist/cp,drizzle}
bundle_entry "$ENTRY" "$out/dist/cp/main.mjs"
bundle_entry "$CLI" "$out/dist/cp/molecule-cp.mjs"
cp "$MIGRATIONS"/*.sql "$out/drizzle/"
bundle_pglite "$out"
chmod -R a+rX,go-w "$out"
