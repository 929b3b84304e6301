#!/usr/bin/env bash
# Fetches Debian's own kernel for the cgroup v2 VM test, once, into a cache outside the work tree.
#
#   tests/vm/fetch-kernel.sh            prints the kernel directory (vmlinuz, vmlinux, config, modules/, package)
#
# The kernel is the package that `linux-image-amd64` depends on (Debian 12: linux-image-6.1.0-N-amd64),
# fetched with `apt-get download` and unpacked with `dpkg-deb`; nothing is installed on this host. Only the
# image, its config and the few modules the test loads (loop, so that reading a block device gives page
# cache and io.stat numbers; zram + zsmalloc for swap) are kept. NODEMETER_VM_CACHE overrides the cache
# (default /var/cache/nodemeter-vm). `vmlinux` is the image's xz payload unpacked here once: qemu boots it
# directly (PVH entry), which saves the guest from decompressing 8 MiB of xz under software emulation
# (about 15 s on a loaded 2-core machine). Exits 77 after saying why when no kernel can be had, 1 on real errors.
set -euo pipefail

cache="${NODEMETER_VM_CACHE:-/var/cache/nodemeter-vm}"
modules=(kernel/drivers/block/loop.ko kernel/drivers/block/zram/zram.ko kernel/mm/zsmalloc.ko)

skip() { echo "fetch-kernel: $*" >&2; exit 77; }

complete() {
  [ -f "$1/vmlinuz" ] && [ -f "$1/vmlinux" ] && [ -f "$1/package" ] || return 1
  for m in "${modules[@]}"; do [ -f "$1/modules/$(basename "$m")" ] || return 1; done
}

newest_cached() {
  local d
  for d in $(ls -d "$cache"/kernel/*/ 2>/dev/null | sort -rV); do
    if complete "${d%/}"; then
      echo "${d%/}"
      return 0
    fi
  done
  return 1
}

# unpack_vmlinux BZIMAGE OUT: the ELF kernel inside a bzImage whose payload is xz (Debian's CONFIG_KERNEL_XZ).
unpack_vmlinux() {
  local off
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$1" | head -n 1 | cut -d: -f1)
  [ -n "$off" ] || { echo "fetch-kernel: no xz payload in $1" >&2; return 1; }
  if command -v xz >/dev/null; then
    # xz stops at the end of the stream; tail, writing the rest, then dies of SIGPIPE: not an error.
    xz -dc --single-stream <(tail -c +$((off + 1)) "$1") >"$2"
  else
    python3 -c 'import lzma, sys
d = open(sys.argv[1], "rb").read()[int(sys.argv[2]):]
open(sys.argv[3], "wb").write(lzma.LZMADecompressor().decompress(d))' "$1" "$off" "$2"
  fi
  [ "$(head -c 4 "$2" | od -An -c | tr -d ' ')" = '177ELF' ] || { echo "fetch-kernel: $2 is not an ELF image" >&2; return 1; }
}

image_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

mkdir -p "$cache/kernel" 2>/dev/null || skip "cannot create the kernel cache $cache"

pkg=$(image_package || true)
if [ -z "$pkg" ] && [ "$(id -u)" -eq 0 ]; then
  # An empty or stale package list knows no linux-image-amd64: refresh it once.
  apt-get update -qq >/dev/null 2>&1 || true
  pkg=$(image_package || true)
fi
if [ -z "$pkg" ]; then
  if dir=$(newest_cached); then
    echo "$dir"
    exit 0
  fi
  skip "apt-cache does not know linux-image-amd64 and no kernel is cached in $cache/kernel"
fi

kver=${pkg#linux-image-}
dir="$cache/kernel/$kver"
if complete "$dir"; then
  echo "$dir"
  exit 0
fi

work=$(mktemp -d "$cache/fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
# apt-get download drops its privileges to _apt, which must be able to write where it downloads.
chmod 0755 "$work"
if id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
if ! (cd "$work" && apt-get download -qq "$pkg" >"$work/apt.log" 2>&1); then
  if dir=$(newest_cached); then
    echo "fetch-kernel: could not download $pkg; using the cached $(basename "$dir")" >&2
    echo "$dir"
    exit 0
  fi
  cat "$work/apt.log" >&2
  skip "apt-get download $pkg failed and no kernel is cached in $cache/kernel"
fi
deb=$(ls "$work"/*.deb)
mkdir -p "$work/x"
members=("./boot/vmlinuz-$kver" "./boot/config-$kver")
for m in "${modules[@]}"; do members+=("./lib/modules/$kver/$m"); done
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/x" "${members[@]}"

staged="$work/kernel"
mkdir -p "$staged/modules"
cp "$work/x/boot/vmlinuz-$kver" "$staged/vmlinuz"
unpack_vmlinux "$staged/vmlinuz" "$staged/vmlinux"
cp "$work/x/boot/config-$kver" "$staged/config"
for m in "${modules[@]}"; do cp "$work/x/lib/modules/$kver/$m" "$staged/modules/"; done
dpkg-deb -f "$deb" Package Version >"$staged/package"
rm -rf "$dir"
mv "$staged" "$dir"
echo "$dir"
