#!/usr/bin/env bash
# Builds the initramfs of the cgroup v2 test VM.
#
#   tests/vm/build-initramfs.sh NODEMETER_BINARY KERNEL_DIR OUT.cpio.gz
#
# Holds busybox-static with its applet links, the nodemeter binary (debug info stripped) with exactly the shared libraries `ldd`
# lists and the dynamic loader, memhog (tests/vm/memhog.c built with gcc -static), the kernel modules
# fetch-kernel.sh kept, /init and /vmtest.sh. cpio newc, gzip, every file owned by root.
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 NODEMETER_BINARY KERNEL_DIR OUT.cpio.gz" >&2
  exit 2
fi
binary=$1
kernel_dir=$2
out=$3
here=$(cd "$(dirname "$0")" && pwd)

busybox=$(command -v busybox || true)
[ -n "$busybox" ] || { echo "build-initramfs: busybox is not installed (Debian: busybox-static)" >&2; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then
  echo "build-initramfs: $busybox is dynamically linked; the VM needs busybox-static" >&2
  exit 1
fi
[ -x "$binary" ] || { echo "build-initramfs: $binary is not an executable" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,etc,lib/modules}

cp "$busybox" "$root/bin/busybox"
"$busybox" --list-full | while read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$root/$(dirname "$applet")"
  ln -sf /bin/busybox "$root/$applet"
done

# Debug info is most of a RelWithDebInfo binary (~50 MiB of 55): without it the image packs, loads and unpacks
# under emulation in a fraction of the time.
strip --strip-debug -o "$root/bin/nodemeter" "$binary"
# Every absolute path ldd prints: the libraries at the paths the loader will look for them, and the loader.
ldd "$binary" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u | while read -r lib; do
  mkdir -p "$root/$(dirname "$lib")"
  cp -L "$lib" "$root/$lib"
done

gcc -static -O2 -Wall -Wextra -Werror -o "$root/bin/memhog" "$here/memhog.c"
cp "$kernel_dir"/modules/*.ko "$root/lib/modules/"
install -m 0755 "$here/init" "$root/init"
install -m 0755 "$here/vmtest.sh" "$root/vmtest.sh"
echo vmnode >"$root/etc/hostname"
echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
# The kernel opens /dev/console before /init runs (and before devtmpfs is mounted).
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

mkdir -p "$(dirname "$out")"
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
  cpio --null -o -H newc --owner=0:0 --quiet | gzip -1) >"$out.tmp"
mv "$out.tmp" "$out"
