# Bundling steps shared by bundle-tenant-platform.sh and bundle-control-plane.sh (sourced, not run): one service's
# entry point as a single ESM file esbuild makes, plus the embedded database package it loads at run time.
# The sourcing script sets ROOT and defines log() and die() first.

# Sets `esbuild` to the repository's esbuild binary.
bundle_find_esbuild() {
  local candidate
  esbuild=""
  for candidate in "$ROOT/node_modules/.bin/esbuild" "$ROOT/apps/tenant-platform/node_modules/.bin/esbuild" \
    "$ROOT/packages/agent-sdk/node_modules/.bin/esbuild"; do
    if [[ -x "$candidate" ]]; then esbuild=$candidate; break; fi
  done
  [[ -n "$esbuild" ]] || die "esbuild not found; run 'pnpm install' at $ROOT"
}

# bundle_entry ENTRY OUTFILE: ENTRY and everything it imports in one ESM file for node20.
# - CommonJS dependencies still call require() and read __dirname (dockerode's ssh2 does at load time), so the banner
#   defines both from import.meta.url.
# - @electric-sql/pglite stays external (bundle_pglite copies it beside the bundle).
# - cpu-features is a native optional dependency of ssh2 (only for docker-over-ssh), required inside a try/catch:
#   external and absent, ssh2 falls back to its JavaScript ciphers. The services never need it.
bundle_entry() {
  local entry=$1 outfile=$2 banner
  bundle_find_esbuild
  banner='import { createRequire as __moleculeCreateRequire } from "node:module";'
  banner+='import { fileURLToPath as __moleculeFileURLToPath } from "node:url";'
  banner+='import { dirname as __moleculeDirname } from "node:path";'
  banner+='const require = __moleculeCreateRequire(import.meta.url);'
  banner+='const __filename = __moleculeFileURLToPath(import.meta.url);'
  banner+='const __dirname = __moleculeDirname(__filename);'
  "$esbuild" "$entry" --bundle --platform=node --target=node20 --format=esm --legal-comments=none \
    --external:@electric-sql/pglite --external:cpu-features --banner:js="$banner" \
    --log-level=warning --outfile="$outfile"
}

# bundle_pglite OUT: copies @electric-sql/pglite, as packages/db resolves it (through the pnpm store's symlinks to its
# real folder), to OUT/node_modules/@electric-sql/pglite. PGlite loads its .wasm/.data files from its own folder, so
# it cannot be bundled.
bundle_pglite() {
  local out=$1 pglite_dir
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
  mkdir -p "$out/node_modules/@electric-sql"
  cp -RL "$pglite_dir" "$out/node_modules/@electric-sql/pglite"
}

# bundle_check_out OUT: OUT must be absent or empty.
bundle_check_out() {
  local out=$1
  [[ ! -e "$out" || -z "$(ls -A "$out")" ]] || die "$out exists and is not empty"
  command -v node >/dev/null || die "node is not on PATH"
}
