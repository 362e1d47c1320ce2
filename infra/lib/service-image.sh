# The registry-free image of one of our Node services (sourced by build-tenant-image.sh and
# build-control-plane-image.sh, not run). Bundles the app with its bundle script, lays out a root filesystem of this
# machine's node binary, the libraries it links and the bundle under /app, and loads it with `docker import`. An image
# whose content-hash label matches is reused; the check-and-import is serialised with flock.
#
#   service_image NAME IMAGE BUNDLE_SCRIPT ENTRYPOINT PORT
#     NAME           short name for logs, the lock and the image's label (tenant-platform, control-plane)
#     IMAGE          the tag to build
#     BUNDLE_SCRIPT  infra/bundle-*.sh, which writes the app into the directory it is given
#     ENTRYPOINT     path of the bundle's main module inside the image
#     PORT           the service's default PORT, also EXPOSEd
#
# Layout inside the image: /usr/local/bin/node (+ its libraries under /lib*, /usr/lib*), /app (the bundle),
# /data (MOLECULE_DATA_DIR: the embedded database and generated secrets without DATABASE_URL; uid 1000, mode 0700).
# FORCE_REBUILD=1 builds even when an image with the same hash exists. Prints IMAGE as its last line on stdout.

service_image() {
  local name=$1 image=$2 bundle_script=$3 entrypoint=$4 port=$5
  local root build_dir work hash rootfs app_uid=1000 app_gid=1000
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  build_dir="$root/infra/.build"

  # shellcheck source=rootfs.sh
  source "$root/infra/lib/rootfs.sh"
  rootfs_preflight

  mkdir -p "$build_dir"
  work=$(mktemp -d "$build_dir/$name.XXXXXX")
  # shellcheck disable=SC2064 # expand now: $work is local to this function
  trap "rm -rf '$work'" EXIT

  # Bundle outside the lock: each process bundles into its own temp dir.
  bash "$bundle_script" "$work/app"
  rootfs_node

  # Everything under /app, the node binary's version, and the scripts that made the image.
  hash=$(
    {
      (cd "$work/app" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
      echo "node $node_version $arch"
      sha256sum "${BASH_SOURCE[1]}" "${BASH_SOURCE[0]}" "$bundle_script" "$root/infra/lib/bundle.sh" \
        "$root/infra/lib/rootfs.sh" | cut -d' ' -f1
    } | sha256sum | cut -c1-32
  )

  rootfs_lock_or_reuse "$image" "$hash" "$build_dir/$name.lock"

  rootfs="$work/rootfs"
  rootfs_base "$rootfs" molecule "$app_uid" "$app_gid" /data
  mkdir -p "$rootfs/data"
  chmod 0700 "$rootfs/data"
  mv "$work/app" "$rootfs/app"
  rootfs_tar "$rootfs" "$work/rootfs.tar" data "$app_uid" "$app_gid"

  log "importing $image (node $node_version, hash $hash)"
  rootfs_import "$image" "$work/rootfs.tar" "$hash" "$name" \
    --change "ENTRYPOINT [\"/usr/local/bin/node\",\"$entrypoint\"]" \
    --change 'WORKDIR /data' \
    --change 'ENV NODE_ENV=production' \
    --change 'ENV HOME=/data' \
    --change 'ENV MOLECULE_DATA_DIR=/data' \
    --change "ENV PORT=$port" \
    --change "EXPOSE $port" \
    --change "USER $app_uid:$app_gid"

  echo "$image"
}
