#!/usr/bin/env bash
# Long fuzz runs (`make fuzz`): every fuzz target for FUZZ_SECONDS, two at a time, from the seed
# corpus and the regressions, into a work corpus kept in the build directory. Prints executions,
# executions per second, coverage and corpus size per target, and appends them to
# <build>/fuzz-results.txt. A crash stops nothing else; the run fails at the end, naming the
# artifacts to turn into regressions (tests/fuzz/regressions/<target>/).
#   tests/fuzz/run.sh <clang build dir> <seconds per target>
set -uo pipefail
build=${1:?usage: run.sh <build dir> <seconds>}
seconds=${2:?usage: run.sh <build dir> <seconds>}
src=$(cd "$(dirname "$0")" && pwd)
targets=(cgroup_parse mountinfo cgroup_path runtime_config selector quantity http_request)
logs="$build/fuzz-logs"
mkdir -p "$logs" "$build/fuzz-artifacts"

run() {
  local t=$1 inputs=("$src/corpus/$1")
  [ -d "$src/regressions/$t" ] && inputs+=("$src/regressions/$t")
  mkdir -p "$build/fuzz-corpus/$t"
  "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t-" \
    "$build/fuzz-corpus/$t" "${inputs[@]}" >"$logs/$t.log" 2>&1
  echo $? >"$logs/$t.rc"
}

for ((i = 0; i < ${#targets[@]}; i += 2)); do
  run "${targets[i]}" &
  [ $((i + 1)) -lt ${#targets[@]} ] && run "${targets[i + 1]}" &
  wait
done

status=0
{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, ${seconds} s per target, two at a time"
  printf '%-16s %14s %10s %8s %8s %s\n' target execs execs/s cov corpus result
  for t in "${targets[@]}"; do
    log="$logs/$t.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corpus=$(find "$build/fuzz-corpus/$t" -type f | wc -l)
    rc=$(cat "$logs/$t.rc")
    result=ok
    if [ "$rc" != 0 ]; then result="CRASH (see $log)"; status=1; fi
    printf '%-16s %14s %10s %8s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$corpus" "$result"
  done
} | tee -a "$build/fuzz-results.txt"
[ $status -eq 0 ] || ls "$build"/fuzz-artifacts/ >&2
exit $status
