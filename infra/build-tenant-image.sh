#!/usr/bin/env bash
# Builds the tenant platform image (default molecule/tenant-platform:latest) WITHOUT any registry, the way
# build-workspace-image.sh builds the workspace image: apps/tenant-platform/src/main.ts bundled with esbuild
# (bundle-tenant-platform.sh: the bundle, the database migrations, the canvas and the embedded database package), in
# a root filesystem of this machine's own node binary and the libraries it links, loaded with `docker import`. The
# steps are lib/service-image.sh's, shared with build-control-plane-image.sh. An image whose content hash label
# matches is reused, so repeated test runs build once. Safe to run concurrently (flock). Prints the image name as its
# last line on stdout.
#
#   TENANT_IMAGE     default "molecule/tenant-platform:latest"
#   FORCE_REBUILD=1  build even when an image with the same hash exists
#
# The entrypoint is node /app/dist/main.mjs; PORT 8080; /data is MOLECULE_DATA_DIR, owned by uid 1000.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf 'build-tenant-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=lib/service-image.sh
source "$ROOT/infra/lib/service-image.sh"
service_image tenant-platform "${TENANT_IMAGE:-molecule/tenant-platform:latest}" \
  "$ROOT/infra/bundle-tenant-platform.sh" /app/dist/main.mjs 8080
