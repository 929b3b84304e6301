// nodemeter's microbenchmarks (Google Benchmark): parsers, the store's window, the renderers.
// bench/run.sh runs them and writes their table into bench/RESULTS.md.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
