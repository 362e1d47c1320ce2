# Root-filesystem image steps shared by build-workspace-image.sh and lib/service-image.sh (sourced, not run).
# An image is this machine's own node binary, the shared libraries it links, a minimal /etc and the app, loaded with
# `docker import`; a content hash label lets repeated builds reuse it, and a lock serialises concurrent builds.
# The sourcing script defines log() and die() first.

# Fails early with one line when a tool or the engine is missing.
rootfs_preflight() {
  command -v docker >/dev/null || die "docker is not installed"
  command -v flock >/dev/null || die "flock is not installed (util-linux)"
  command -v node >/dev/null || die "node is not on PATH"
  docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"
}

# Sets node_bin (the real binary, not a version-manager shim), node_version and arch.
rootfs_node() {
  node_bin=$(node -p 'process.execPath')
  node_bin=$(readlink -f "$node_bin")
  node_version=$("$node_bin" --version)
  arch=$(uname -m)
}

# rootfs_lock_or_reuse IMAGE HASH LOCKFILE: takes the build lock (held until the script exits); when IMAGE already
# carries HASH, or another image does (tagged as IMAGE then), prints IMAGE and exits. FORCE_REBUILD=1 skips reuse.
# Sets `previous` to the image IMAGE pointed at before.
rootfs_lock_or_reuse() {
  local image=$1 hash=$2 lockfile=$3 current existing
  exec 9>"$lockfile"
  flock 9
  if [[ "${FORCE_REBUILD:-0}" != "1" ]]; then
    current=$(docker image inspect --format '{{ index .Config.Labels "molecule.image.hash" }}' "$image" 2>/dev/null || true)
    if [[ "$current" == "$hash" ]]; then
      log "$image is up to date (hash $hash)"
      echo "$image"
      exit 0
    fi
    # Same content under another tag: tag it instead of importing again.
    existing=$(docker images --quiet --filter "label=molecule.image.hash=$hash" | head -n1)
    if [[ -n "$existing" ]]; then
      docker tag "$existing" "$image"
      log "tagged existing image $existing as $image (hash $hash)"
      echo "$image"
      exit 0
    fi
  fi
  previous=$(docker image inspect --format '{{ .Id }}' "$image" 2>/dev/null || true)
}

# rootfs_base ROOTFS USER UID GID HOME: /usr/local/bin/node with its libraries, /tmp, and an /etc with root, USER
# (UID:GID, home HOME) and nobody.
rootfs_base() {
  local rootfs=$1 user=$2 uid=$3 gid=$4 home=$5 lib
  mkdir -p "$rootfs"/{usr/local/bin,etc,tmp}
  chmod 1777 "$rootfs/tmp"
  cp "$node_bin" "$rootfs/usr/local/bin/node"
  chmod 0755 "$rootfs/usr/local/bin/node"
  if ldd "$node_bin" >/dev/null 2>&1; then
    # "libx.so => /path (addr)" and the loader "/lib64/ld-linux-x86-64.so.2 (addr)"; skip the vdso.
    while read -r lib; do
      [[ -n "$lib" && -e "$lib" ]] || continue
      cp -L --parents "$lib" "$rootfs/"
    done < <(ldd "$node_bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
  fi
  cat >"$rootfs/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/usr/sbin/nologin
$user:x:$uid:$gid:$user:$home:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
  cat >"$rootfs/etc/group" <<GROUP
root:x:0:
$user:x:$gid:
nogroup:x:65534:
GROUP
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
  : >"$rootfs/etc/hosts"
  : >"$rootfs/etc/resolv.conf"
}

# rootfs_tar ROOTFS TARFILE DIR UID GID: everything root-owned except ./DIR, owned by UID:GID (works without root on
# the host; a new named volume mounted there takes this ownership).
rootfs_tar() {
  local rootfs=$1 tarfile=$2 dir=$3 uid=$4 gid=$5
  tar -C "$rootfs" -cf "$tarfile" --numeric-owner --owner=0 --group=0 --exclude="./$dir" .
  tar -C "$rootfs" -rf "$tarfile" --numeric-owner --owner="$uid" --group="$gid" "./$dir"
}

# rootfs_import IMAGE TARFILE HASH KIND [--change …]: imports with the hash, node and kind labels, then drops the
# image IMAGE pointed at before and older untagged builds of KIND, unless a container still uses them.
rootfs_import() {
  local image=$1 tarfile=$2 hash=$3 kind=$4 now
  shift 4
  docker import "$@" \
    --change "LABEL molecule.image.hash=$hash" \
    --change "LABEL molecule.image.node=$node_version" \
    --change "LABEL molecule.image.kind=$kind" \
    - "$image" <"$tarfile" >/dev/null
  if [[ -n "${previous:-}" ]]; then
    now=$(docker image inspect --format '{{ .Id }}' "$image")
    if [[ "$previous" != "$now" ]]; then docker image rm "$previous" >/dev/null 2>&1 || true; fi
  fi
  docker image prune --force --filter "label=molecule.image.kind=$kind" >/dev/null 2>&1 || true
}
