#!/usr/bin/env bash
# Rebuilds bench/RESULTS.md end to end on this machine from an existing build:
#   bench/run.sh [BUILD]     (default: build; `make bench` builds everything first, then runs this)
# Runs the microbenchmarks, `nodemeter bench --create 1000`, the agent's pass against the pread floor,
# systemd-cgtop on the same cgroups, the agent's memory, and wrk against the agent and nginx.
# Needs root (it creates cgroups) and the packages of `scripts/deps.sh bench`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python3 "$here/results.py" "${1:-build}"
