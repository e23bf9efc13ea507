#!/usr/bin/env bash
# Builds the validation guest's initramfs (.cache/validate-qemu/initramfs.cpio.gz)
# from the oracle guest's kernel and busybox (scripts/oracle-guest/build.sh
# must have run), native/guest/memtwin-dirty.c and virtio_balloon.ko from the
# same Debian kernel package. Idempotent; see docs/validate-qemu.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
og=$root/.cache/oracle-guest
cache=$root/.cache/validate-qemu
die() {
  echo "validate-qemu: error: $*" >&2
  exit 1
}
command -v qemu-system-x86_64 > /dev/null || die "qemu-system-x86_64 is missing; run: bash scripts/oracle-guest/build.sh"
[ -s "$og/vmlinuz" ] && [ -s "$og/kernel-package" ] || die "no oracle guest kernel; run: bash scripts/oracle-guest/build.sh"
[ -x /bin/busybox ] || die "busybox is missing; run: bash scripts/oracle-guest/build.sh"
mkdir -p "$cache"
pkg=$(cat "$og/kernel-package")
ko=$cache/virtio_balloon.ko
if [ ! -s "$ko" ] || [ "$(cat "$cache/ko-package" 2> /dev/null)" != "$pkg" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -qq "$pkg" 2> /dev/null) || die "apt-get download $pkg failed (try apt-get update)"
  dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp" --wildcards './lib/modules/*/kernel/drivers/virtio/virtio_balloon.ko*'
  f=$(find "$tmp/lib" -name 'virtio_balloon.ko*' | head -1)
  case "$f" in *.xz) xz -dc "$f" > "$ko" ;; *) cp "$f" "$ko" ;; esac
  echo "$pkg" > "$cache/ko-package"
fi
make -s -C native build/guest/memtwin-dirty
stage=$(mktemp -d)
mkdir -p "$stage"/{bin,lib,proc,sys,dev,tmp}
cp /bin/busybox "$stage/bin/busybox"
cp native/build/guest/memtwin-dirty "$stage/bin/"
cp "$ko" "$stage/lib/virtio_balloon.ko"
cp scripts/validate-qemu/init "$stage/init"
chmod 755 "$stage/init" "$stage"/bin/*
(cd "$stage" && find . | LC_ALL=C sort | /bin/busybox cpio -o -H newc -R 0:0 2> /dev/null | gzip -1 > "$cache/initramfs.cpio.gz.new")
mv "$cache/initramfs.cpio.gz.new" "$cache/initramfs.cpio.gz"
rm -rf "$stage"
echo "validate-qemu: ready: $cache/initramfs.cpio.gz ($pkg)"
