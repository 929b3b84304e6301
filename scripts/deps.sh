#!/usr/bin/env bash
# Installs exactly the Debian packages that are missing for a purpose; silent when none are.
#   scripts/deps.sh build   what `make run` needs
#   scripts/deps.sh test    build + what the test suite needs (promtool, prometheus, qemu, kernel, ...)
#   scripts/deps.sh bench   test + what the benchmarks compare against (nginx, wrk, systemd-cgtop)
set -euo pipefail

build=(g++ cmake make pkg-config libboost1.81-dev prometheus-cpp-dev nlohmann-json3-dev
       libsystemd-dev libssl-dev zlib1g-dev libyaml-cpp-dev)
test=(catch2 libbenchmark-dev prometheus curl procps python3 openssl clang libclang-rt-14-dev faketime systemd strace
      qemu-system-x86 busybox-static cpio xz-utils nodejs)
bench=(nginx-light wrk systemd hyperfine)

case "${1:-build}" in
  build) want=("${build[@]}") ;;
  test) want=("${build[@]}" "${test[@]}") ;;
  bench) want=("${build[@]}" "${test[@]}" "${bench[@]}") ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

# npm comes with NodeSource's nodejs where that is installed; Debian's own nodejs needs Debian's npm.
if [ "${1:-build}" != build ] && ! command -v npm >/dev/null 2>&1; then
  want+=(npm)
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "nodemeter needs these Debian packages, and installing them needs root: ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A missing package may be unknown to a stale list: refresh once, then install.
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/nodemeter-apt.log 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/nodemeter-apt.log 2>&1 ||
    { cat /tmp/nodemeter-apt.log >&2; exit 1; }
fi
