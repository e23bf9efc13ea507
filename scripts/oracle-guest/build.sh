#!/usr/bin/env bash
# Builds (and caches) the oracle guest: a Debian 6.12 kernel and an initramfs
# with busybox, the native executor and its agent, all static. Installs what
# is missing from Debian's packages (qemu-system-x86, busybox-static) when run
# as root; otherwise says which command to run. See docs/oracle-guest.md.
#
#   bash scripts/oracle-guest/build.sh            # install + build (idempotent, ~1 s when cached)
#   MEMTWIN_GUEST_KERNEL=linux-image-6.12.117+deb12-amd64-unsigned bash scripts/oracle-guest/build.sh
#
# Output: .cache/oracle-guest/{vmlinuz,initramfs.cpio.gz,kernel-package}
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
cache=$root/.cache/oracle-guest
mkdir -p "$cache"
t0=$(date +%s.%N)
say() { echo "oracle-guest: $*"; }
die() {
  echo "oracle-guest: error: $*" >&2
  exit 1
}

[ "$(uname -m)" = x86_64 ] || die "needs an x86-64 Linux machine (Debian packages for amd64)"
command -v apt-get > /dev/null || die "needs Debian's apt-get (the guest is built from Debian packages)"

apt_updated=0
apt_update() {
  if [ $apt_updated = 0 ]; then
    apt-get update -qq || die "apt-get update failed"
    apt_updated=1
  fi
}
need_root() {
  [ "$(id -u)" = 0 ] || die "$1 is missing; run as root: apt-get install -y --no-install-recommends $2"
}

# 1. Debian packages on the host: QEMU (TCG) and busybox for the guest.
missing=()
command -v qemu-system-x86_64 > /dev/null || missing+=(qemu-system-x86)
[ "$(dpkg-query -W -f='${Status}' busybox-static 2> /dev/null)" = "install ok installed" ] || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  need_root "${missing[*]}" "${missing[*]}"
  apt_update
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null ||
    die "apt-get install ${missing[*]} failed"
fi

# 2. The guest kernel: the newest Debian 6.12 generic kernel, unless pinned.
fetch=0
[ -s "$cache/vmlinuz" ] && [ -s "$cache/kernel-package" ] && [ -s "$cache/virtio_blk.ko" ] || fetch=1
[ -n "${MEMTWIN_GUEST_KERNEL:-}" ] && [ "$MEMTWIN_GUEST_KERNEL" != "$(cat "$cache/kernel-package" 2> /dev/null)" ] && fetch=1
if [ $fetch = 1 ]; then
  pkg=${MEMTWIN_GUEST_KERNEL:-}
  if [ -z "$pkg" ]; then
    pkg=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64-unsigned$' 2> /dev/null | awk '{print $1}' | sort -V | tail -1)
    if [ -z "$pkg" ]; then
      need_root "the package list" "(first) apt-get update"
      apt_update
      pkg=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -1)
    fi
    [ -n "$pkg" ] || die "no linux-image-6.12.*-amd64-unsigned package in apt's lists (Debian 12 bookworm has them); try: apt-get update"
  fi
  say "fetching $pkg"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -qq "$pkg" 2> /dev/null) || {
    apt_update
    (cd "$tmp" && apt-get download -qq "$pkg") || die "apt-get download $pkg failed"
  }
  dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*' './boot/config-*' \
    './lib/modules/*/kernel/drivers/block/virtio_blk.ko*'
  grep -q '^CONFIG_NUMA=y' "$tmp"/boot/config-* || die "$pkg has no CONFIG_NUMA"
  grep -q '^CONFIG_VIRTIO_CONSOLE=y' "$tmp"/boot/config-* || die "$pkg has no built-in virtio console"
  grep -q '^CONFIG_SWAP=y' "$tmp"/boot/config-* || die "$pkg has no CONFIG_SWAP"
  # The swap disks' driver (a module in Debian's kernel: virtio_blk, no dependencies), uncompressed for busybox insmod.
  ko=$(find "$tmp/lib/modules" -name 'virtio_blk.ko*' | head -1)
  [ -n "$ko" ] || die "$pkg has no virtio_blk module"
  case "$ko" in
    *.xz) xz -dc "$ko" > "$cache/virtio_blk.ko.new" ;;
    *.zst) zstd -dqc "$ko" > "$cache/virtio_blk.ko.new" ;;
    *.gz) gzip -dc "$ko" > "$cache/virtio_blk.ko.new" ;;
    *) cp "$ko" "$cache/virtio_blk.ko.new" ;;
  esac
  mv "$cache/virtio_blk.ko.new" "$cache/virtio_blk.ko"
  cp "$tmp"/boot/vmlinuz-* "$cache/vmlinuz.new" && mv "$cache/vmlinuz.new" "$cache/vmlinuz"
  echo "$pkg" > "$cache/kernel-package"
fi

# 3. The static executor and agent, then the initramfs (rebuilt every time: it takes a second).
make -s -C native guest
stage=$(mktemp -d)
mkdir -p "$stage"/{bin,proc,sys,dev,tmp,run,lib/modules}
cp /bin/busybox "$stage/bin/busybox"
cp "$cache/virtio_blk.ko" "$stage/lib/modules/"
cp native/build/guest/memtwin-native native/build/guest/memtwin-guest-agent "$stage/bin/"
cp native/guest/init "$stage/init"
chmod 755 "$stage/init" "$stage"/bin/*
(cd "$stage" && find . | LC_ALL=C sort | /bin/busybox cpio -o -H newc -R 0:0 2> /dev/null | gzip -1 > "$cache/initramfs.cpio.gz.new")
mv "$cache/initramfs.cpio.gz.new" "$cache/initramfs.cpio.gz"
rm -rf "$stage"

say "ready: $(cat "$cache/kernel-package"), $(qemu-system-x86_64 --version | head -1) ($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s)"
