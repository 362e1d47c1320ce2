#!/usr/bin/env bash
# Builds the control plane image (default molecule/control-plane:latest) WITHOUT any registry, the way
# build-tenant-image.sh builds the tenant platform's (the same steps, lib/service-image.sh):
# apps/control-plane/src/main.ts bundled with esbuild (bundle-control-plane.sh: the bundle, the migrations, the
# embedded database package), in a root filesystem of this machine's own node binary and the libraries it links,
# loaded with `docker import`. An image whose content hash label matches is reused, so repeated test runs build once.
# Safe to run concurrently (flock). Prints the image name as its last line on stdout.
#
#   CONTROL_PLANE_IMAGE   default "molecule/control-plane:latest"
#   FORCE_REBUILD=1       build even when an image with the same hash exists
#
# The same /app as control-plane.Dockerfile's; the entrypoint is node /app/dist/cp/main.mjs; PORT 8090; /data is
# MOLECULE_DATA_DIR, owned by uid 1000.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf 'build-control-plane-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=lib/service-image.sh
source "$ROOT/infra/lib/service-image.sh"
service_image control-plane "${CONTROL_PLANE_IMAGE:-molecule/control-plane:latest}" \
  "$ROOT/infra/bundle-control-plane.sh" /app/dist/cp/main.mjs 8090
