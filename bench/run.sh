#!/usr/bin/env bash
# Rebuilds bench/RESULTS.md end to end on this machine from an existing build:
#   bench/run.sh [BUILD]     (default: build; `make bench` builds everything first, then runs this)
#   bench/run.sh --aggregator [BUILD]   only the aggregator's scale benchmark (section 7 and its
#                                       rows of the targets table; the other sections are kept)
# Runs the microbenchmarks, `nodemeter bench --create 1000`, the agent's pass against the pread floor,
# systemd-cgtop on the same cgroups, the agent's memory, wrk against the agent and nginx, and the
# aggregator against 1000 impersonated agents of 30 pods each.
# Needs root (it creates cgroups) and the packages of `scripts/deps.sh bench`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ "${1:-}" == "--aggregator" ]]; then
  exec python3 "$here/results.py" --aggregator "${2:-build}"
fi
exec python3 "$here/results.py" "${1:-build}"
