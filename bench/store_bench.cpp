// The store's rate computation: one CPU rate from two readings, the window over a full ring, and
// one pass's worth of record() + fill() for 100 and 1000 containers.
#include <benchmark/benchmark.h>

#include <chrono>
#include <string>
#include <vector>

#include "agent/store.h"

namespace {

using namespace std::chrono_literals;
using nodemeter::agent::CgroupIdentity;
using nodemeter::agent::SteadyTime;
using nodemeter::agent::WallTime;
using nodemeter::agent::WindowPoint;

const SteadyTime kSteady0{std::chrono::seconds{1000}};
const WallTime kWall0{std::chrono::seconds{1'700'000'000}};

void BM_cpu_nano_cores(benchmark::State& state) {
  uint64_t older = 1'234'567'890'123;
  for (auto _ : state) {
    benchmark::DoNotOptimize(older);
    auto v =
        nodemeter::agent::cpu_nano_cores(older, kSteady0, older + 7'500'000'000, kSteady0 + 15s);
    benchmark::DoNotOptimize(v);
  }
}
BENCHMARK(BM_cpu_nano_cores);

// A full ring (the store keeps at most 8 points) at a 5 s interval and a 15 s window.
void BM_window_usage(benchmark::State& state) {
  std::vector<WindowPoint> points;
  for (int i = 0; i < 8; ++i) {
    points.push_back({kSteady0 + i * 5s, kWall0 + i * 5s,
                      1'000'000'000ull * static_cast<uint64_t>(i + 1),
                      50'000'000ull + static_cast<uint64_t>(i), std::nullopt});
  }
  const nodemeter::agent::WindowParams params{15s, 5s, 1s};
  for (auto _ : state) {
    auto u = nodemeter::agent::window_usage(points, std::nullopt, params);
    benchmark::DoNotOptimize(u);
  }
}
BENCHMARK(BM_window_usage);

// One pass: every container recorded, then every snapshot entry filled (its window computed).
void BM_store_pass(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  std::vector<CgroupIdentity> ids;
  for (size_t i = 0; i < n; ++i) {
    ids.push_back(
        {"kubepods/burstable/pod" + std::to_string(i) + "/" + std::string(64, 'a'), 1000 + i});
  }
  nodemeter::agent::Store store;
  nodemeter::api::Sample sample;
  sample.memory.usage_bytes = 64 << 20;
  sample.memory.working_set_bytes = 48 << 20;
  SteadyTime now = kSteady0;
  uint64_t cpu = 1'000'000'000;
  for (auto _ : state) {
    now += 5s;
    cpu += 250'000'000;
    sample.time = kWall0 + (now - kSteady0);
    sample.cpu.cumulative_ns = cpu;
    for (const auto& id : ids)
      store.record(id, now, sample);
    store.end_pass();
    for (const auto& id : ids) {
      nodemeter::api::ContainerSnapshot c;
      store.fill(id, now, c);
      benchmark::DoNotOptimize(c);
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK(BM_store_pass)->Arg(100)->Arg(1000)->Unit(benchmark::kMicrosecond);

}  // namespace
