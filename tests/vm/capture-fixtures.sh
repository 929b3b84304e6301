#!/usr/bin/env bash
# Captures real cgroup v2 files from the test VM into tests/fixtures/captured-v2/, for the unit tests.
#
#   tests/vm/capture-fixtures.sh [NODEMETER_BINARY]      (default: $NODEMETER_BINARY, else build/nodemeter)
#
# Boots the VM exactly as the e2e test does, with nodemeter.capture=1 on the kernel command line: after its
# checks, the in-VM script prints the files of the root, kubepods.slice, three pods and their containers twice,
# about three seconds apart (t0/, t1/), between VMCAPTURE markers. This script writes them out byte for byte (every cgroup
# file ends in a newline, and the console carries whole lines) and records the kernel, the command line, the
# snapshot times and which process sat where in INFO.txt. The capture does not depend on the agent's checks
# passing; it replaces the whole folder.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
binary=${1:-${NODEMETER_BINARY:-$src/build/nodemeter}}
dest=$src/tests/fixtures/captured-v2

log=$(mktemp /tmp/nodemeter-vm-capture.XXXXXX)
stage=$(mktemp -d /tmp/nodemeter-vm-capture.XXXXXX)
trap 'rm -rf "$log" "$stage"' EXIT

set +e
"$here/vm.sh" "$binary" "$log" nodemeter.capture=1
rc=$?
set -e
if [ $rc -eq 77 ]; then
  echo "capture-fixtures: the VM cannot run here; nothing captured" >&2
  exit 77
fi
[ $rc -eq 0 ] || echo "capture-fixtures: (some checks failed, exit $rc; the capture does not depend on them)" >&2

tr -d '\r' <"$log" | awk -v out="$stage" '
  /^VMCAPTURE BEGIN / { path = $3; file = out "/" path; dir = file; sub(/\/[^\/]*$/, "", dir)
                        system("mkdir -p \"" dir "\""); printf "" > file; inside = 1; next }
  /^VMCAPTURE END /   { if (inside && $3 == path) { close(file); inside = 0; n++ } else { bad = 1 } ; next }
  /^VMCAPTURE INFO /  { sub(/^VMCAPTURE INFO /, ""); print > (out "/INFO.lines"); next }
  inside              { print >> file }
  END { if (inside || bad || n == 0) exit 1; print n " files" > "/dev/stderr" }
' || { echo "capture-fixtures: no complete capture in the console output" >&2; exit 1; }

{
  echo "# Real cgroup v2 files captured by tests/vm/capture-fixtures.sh from the VM test (tests/vm/README.md)."
  echo "# Each file was read inside the VM as the kernel produced it. tN/ = /sys/fs/cgroup at snapshot N."
  cat "$stage/INFO.lines"
} >"$stage/INFO.txt"
rm -f "$stage/INFO.lines"
if [ ! -d "$stage/t0" ] || [ ! -d "$stage/t1" ]; then
  echo "capture-fixtures: snapshots t0/ and t1/ missing" >&2
  exit 1
fi

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
cp -r "$stage" "$dest"
chmod -R u+rwX,go+rX "$dest"
echo "capture-fixtures: wrote $(find "$dest" -type f | wc -l) files to $dest"
