#!/usr/bin/env bash
# Runs the cgroup v2 VM test end to end: kernel (fetched and cached), initramfs (built and cached), boot,
# result. Used by tests/e2e/vm_cgroup_v2.sh and tests/vm/capture-fixtures.sh.
#
#   tests/vm/vm.sh NODEMETER_BINARY CONSOLE_LOG [EXTRA_KERNEL_ARGS]
#
# Prints the in-VM check lines. Exit status: 0 all checks passed; 77 (after saying why) when qemu, busybox-static,
# cpio or the kernel cannot be had; otherwise non-zero (the number of failed checks, 124 timeout, 125 no result).
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 NODEMETER_BINARY CONSOLE_LOG [EXTRA_KERNEL_ARGS]" >&2
  exit 2
fi
binary=$1
log=$2
extra=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
cache="${NODEMETER_VM_CACHE:-/var/cache/nodemeter-vm}"

for tool in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio gcc:gcc; do
  if ! command -v "${tool%%:*}" >/dev/null; then
    echo "vm: ${tool%%:*} is not installed (Debian package ${tool#*:}; scripts/deps.sh test installs it)"
    exit 77
  fi
done
if [ ! -x "$binary" ]; then
  echo "vm: no nodemeter binary at '$binary'" >&2
  exit 1
fi

t0=$SECONDS
set +e
kernel_dir=$("$here/fetch-kernel.sh")
rc=$?
set -e
[ $rc -eq 0 ] || exit $rc

# The initramfs is rebuilt only when something that goes into it changed.
key=$( {
  sha256sum "$binary" "$(command -v busybox)" "$here/init" "$here/vmtest.sh" "$here/memhog.c" \
    "$here/build-initramfs.sh" "$kernel_dir"/modules/*.ko | cut -d' ' -f1
  ldd "$binary" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u | xargs -r sha256sum
} | sha256sum | cut -c1-16)
initrd="$cache/initramfs/$key.cpio.gz"
if [ ! -f "$initrd" ]; then
  "$here/build-initramfs.sh" "$binary" "$kernel_dir" "$initrd"
  # Keep the four newest images.
  ls -t "$cache"/initramfs/*.cpio.gz 2>/dev/null | tail -n +5 | xargs -r rm -f
fi

echo "vm: kernel $(sed -n 's/^Version: //p' "$kernel_dir/package") ($(basename "$kernel_dir")), initramfs $initrd" \
  "($(du -k "$initrd" | cut -f1) KiB), ready in $((SECONDS - t0)) s"
t1=$SECONDS
set +e
"$here/run-vm.sh" "$kernel_dir/vmlinux" "$initrd" "$log" "$extra"
rc=$?
set -e
echo "vm: the VM ran $((SECONDS - t1)) s"
tr -d '\r' <"$log" | grep -E '^(VMTEST|VMLOG|VMBENCH) ' || true
exit $rc
