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
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENTRY="$ROOT/apps/tenant-platform/src/main.ts"
MIGRATIONS="$ROOT/packages/db/drizzle"
CANVAS_STATIC="$ROOT/apps/tenant-platform/src/canvas/static"

log() { printf 'bundle-tenant-platform: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 <out-dir>"
out=$1
[[ ! -e "$out" || -z "$(ls -A "$out")" ]] || die "$out exists and is not empty"
command -v node >/dev/null || die "node is not on PATH"
[[ -d "$MIGRATIONS" ]] || die "migrations not found at $MIGRATIONS"

esbuild=""
for candidate in "$ROOT/node_modules/.bin/esbuild" "$ROOT/apps/tenant-platform/node_modules/.bin/esbuild" \
  "$ROOT/packages/agent-sdk/node_modules/.bin/esbuild"; do
  if [[ -x "$candidate" ]]; then esbuild=$candidate; break; fi
done
[[ -n "$esbuild" ]] || die "esbuild not found; run 'pnpm install' at $ROOT"

# The embedded database package as packages/db resolves it, through the pnpm store's symlinks to its real folder.
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

mkdir -p "$out"/{dist,drizzle,node_modules/@electric-sql}

# - ESM output: CommonJS dependencies still call require() and read __dirname (dockerode's ssh2 does at load time),
#   so the banner defines both from import.meta.url.
# - @electric-sql/pglite stays external (copied below).
# - cpu-features is a native optional dependency of ssh2 (only for docker-over-ssh), required inside a try/catch:
#   external and absent, ssh2 falls back to its JavaScript ciphers. The tenant never needs it.
banner='import { createRequire as __moleculeCreateRequire } from "node:module";'
banner+='import { fileURLToPath as __moleculeFileURLToPath } from "node:url";'
banner+='import { dirname as __moleculeDirname } from "node:path";'
banner+='const require = __moleculeCreateRequire(import.meta.url);'
banner+='const __filename = __moleculeFileURLToPath(import.meta.url);'
banner+='const __dirname = __moleculeDirname(__filename);'
"$esbuild" "$ENTRY" --bundle --platform=node --target=node20 --format=esm --legal-comments=none \
  --external:@electric-sql/pglite --external:cpu-features --banner:js="$banner" \
  --log-level=warning --outfile="$out/dist/main.mjs"

cp "$MIGRATIONS"/*.sql "$out/drizzle/"
if [[ -d "$CANVAS_STATIC" ]]; then cp -R "$CANVAS_STATIC" "$out/dist/static"; fi
cp -RL "$pglite_dir" "$out/node_modules/@electric-sql/pglite"
chmod -R a+rX,go-w "$out"
