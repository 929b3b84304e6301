// What every scrape pays to take the current snapshot: agent/published.h (a mutex around one
// shared_ptr copy) against the std::atomic<std::shared_ptr> it replaced, side by side, alone and
// with a second thread reading at the same time (two scrapes at once).
#include <benchmark/benchmark.h>

#include <atomic>
#include <memory>

#include "agent/published.h"

namespace {

struct Snapshot {
  int pods = 30;
};

nodemeter::agent::Published<Snapshot> published;
std::atomic<std::shared_ptr<const Snapshot>> atomic_ptr;

void BM_snapshot_load_published(benchmark::State& state) {
  if (state.thread_index() == 0) published.store(std::make_shared<const Snapshot>());
  for (auto _ : state) {
    auto snap = published.load();
    benchmark::DoNotOptimize(snap);
  }
}
BENCHMARK(BM_snapshot_load_published)->Threads(1)->Threads(2);

void BM_snapshot_load_atomic_shared_ptr(benchmark::State& state) {
  if (state.thread_index() == 0) atomic_ptr.store(std::make_shared<const Snapshot>());
  for (auto _ : state) {
    auto snap = atomic_ptr.load();
    benchmark::DoNotOptimize(snap);
  }
}
BENCHMARK(BM_snapshot_load_atomic_shared_ptr)->Threads(1)->Threads(2);

}  // namespace
