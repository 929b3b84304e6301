#!/usr/bin/env bash
# e2e: nodemeter agent on a real pure cgroup v2 kernel (Debian's 6.1, booted under qemu with cgroup_no_v1=all).
#
# This machine runs cgroup v1 (hybrid), so the v2 code paths meet a real v2 kernel only here: tests/vm/ boots
# Debian's own kernel with a busybox initramfs holding $NODEMETER_BINARY, lays out a kubelet + containerd node
# with real processes, runs the agent on /sys/fs/cgroup and checks what it serves against the kernel's files
# (tests/vm/README.md lists the checks). Skips (77) when qemu, busybox-static or the kernel package cannot be had.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=${NODEMETER_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
binary=${NODEMETER_BINARY:-$src/build/nodemeter}
if [ ! -x "$binary" ]; then
  echo "vm_cgroup_v2: no nodemeter binary at '$binary' (set NODEMETER_BINARY)"
  exit 1
fi

log=$(mktemp /tmp/nodemeter-vm-console.XXXXXX)
keep_log=0
cleanup() { [ "$keep_log" = 1 ] || rm -f "$log"; }
trap cleanup EXIT

start=$SECONDS
"$src/tests/vm/vm.sh" "$binary" "$log"
rc=$?
took=$((SECONDS - start))
[ $rc -eq 77 ] && exit 77

passed=$(tr -d '\r' <"$log" | grep -c '^VMTEST PASS ')
failed=$(tr -d '\r' <"$log" | grep -c '^VMTEST FAIL ')
case $rc in
  0)
    echo "vm_cgroup_v2: $passed checks passed on a real cgroup v2 kernel in ${took} s"
    exit 0
    ;;
  124)
    echo "vm_cgroup_v2: the VM timed out after ${took} s ($passed passed, $failed failed before that)"
    ;;
  *)
    echo "vm_cgroup_v2: $failed of $((passed + failed)) checks failed (VM exit $rc) in ${took} s:"
    tr -d '\r' <"$log" | grep '^VMTEST FAIL ' | sed 's/^VMTEST FAIL /  /'
    ;;
esac
keep_log=1
echo "vm_cgroup_v2: full console in $log"
exit 1
