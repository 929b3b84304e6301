#!/usr/bin/env bash
# Boots the cgroup v2 test VM and reads its result from the serial console.
#
#   tests/vm/run-vm.sh KERNEL INITRAMFS CONSOLE_LOG [EXTRA_KERNEL_ARGS]
#
# KERNEL is a bzImage or, faster under software emulation, the uncompressed ELF vmlinux (PVH entry).
# qemu-system-x86_64, 2 vCPUs, 512 MiB, KVM when /dev/kvm is usable, else software emulation (TCG), the kernel
# booted pure cgroup v2 (cgroup_no_v1=all psi=1). The console goes to CONSOLE_LOG. qemu runs under a hard timeout
# (NODEMETER_VM_TIMEOUT seconds, default 150) and is killed by its PID on timeout or when this script exits.
# Exit status: the in-VM test's ("VMTEST DONE rc=N"), 124 on timeout, 125 when the VM stopped without a result.
set -euo pipefail

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "usage: $0 KERNEL INITRAMFS CONSOLE_LOG [EXTRA_KERNEL_ARGS]" >&2
  exit 2
fi
kernel=$1
initrd=$2
log=$3
extra=${4:-}
timeout_s=${NODEMETER_VM_TIMEOUT:-150}

accel=${NODEMETER_VM_ACCEL:-}
cpu=${NODEMETER_VM_CPU:-qemu64}
# NODEMETER_VM_ACCEL (kvm, tcg, kvm:tcg) and NODEMETER_VM_CPU override the choice. A host that is itself a
# guest with nested PVM (nested_pvm=1 on its command line) opens /dev/kvm, but only PVM-enabled guest kernels
# boot there: a stock kernel hangs in early boot, so such hosts use TCG.
if [ -z "$accel" ]; then
  accel=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ] && ! grep -qw nested_pvm=1 /proc/cmdline; then
    accel=kvm:tcg # qemu falls back to software emulation when KVM cannot create a VM here
  fi
fi

# qboot instead of SeaBIOS, and no network card (no iPXE option ROM): seconds less before the kernel runs.
firmware=()
if [ -f /usr/share/qemu/qboot.rom ]; then firmware=(-bios /usr/share/qemu/qboot.rom); fi

qemu_pid=""
stop_qemu() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -TERM "$qemu_pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$qemu_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$qemu_pid" 2>/dev/null || true
  fi
}
trap stop_qemu EXIT
trap 'stop_qemu; exit 130' INT TERM

# qemu runs under coreutils' timeout as well: should this script be killed outright (SIGKILL from a test
# runner's own timeout), qemu still ends 10 s after the hard limit. Signals sent to that PID reach qemu.
timeout --kill-after=5 $((timeout_s + 10)) \
  qemu-system-x86_64 -machine "accel=$accel" -cpu "$cpu" -smp 2 -m 512 -nographic -no-reboot -net none \
  "${firmware[@]}" -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyS0 cgroup_no_v1=all psi=1 panic=-1 quiet $extra" </dev/null >"$log" 2>&1 &
qemu_pid=$!

start=$SECONDS
timed_out=0
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ $((SECONDS - start)) -ge "$timeout_s" ]; then
    timed_out=1
    stop_qemu
    break
  fi
  sleep 0.2
done
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""

if [ "$timed_out" = 1 ]; then
  echo "run-vm: the VM did not finish within ${timeout_s} s; killed" >&2
  exit 124
fi
rc=$(tr -d '\r' <"$log" | sed -n 's/^VMTEST DONE rc=\([0-9][0-9]*\)$/\1/p' | tail -n 1)
if [ -z "$rc" ]; then
  echo "run-vm: the VM stopped without a result line; console tail:" >&2
  tr -d '\r' <"$log" | tail -n 30 >&2
  exit 125
fi
exit "$rc"
