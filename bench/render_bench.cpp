// The renderers at 100 and 1000 containers, from a synthetic snapshot shaped like a busy node
// (two containers per pod, every container with a window): /metrics/resource and
// /metrics/cadvisor as the agent serves them (families built, then Go-compatible text), and the
// Metrics API pods list (view built, then the JSON response).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "api/exposition.h"
#include "api/metrics_api.h"
#include "api/resource_metrics.h"
#include "api/snapshot.h"

namespace {

using namespace std::chrono_literals;
namespace api = nodemeter::api;

const api::WallTime kNow{std::chrono::seconds{1'700'000'000}};

api::Sample sample(uint64_t i) {
  api::Sample s;
  s.time = kNow - 1s + std::chrono::milliseconds(i % 997);
  s.cpu.cumulative_ns = 1'000'000'000ull * (i + 1) + 123'456'789;
  s.cpu.user_ns = s.cpu.cumulative_ns / 3 * 2;
  s.cpu.system_ns = s.cpu.cumulative_ns / 3;
  s.cpu.periods = 10'000 + i;
  s.cpu.throttled_periods = i;
  s.cpu.throttled_ns = i * 1'000'000;
  s.memory.usage_bytes = (64ull << 20) + i * 4096;
  s.memory.working_set_bytes = (48ull << 20) + i * 4096;
  s.memory.rss_bytes = 40ull << 20;
  s.memory.cache_bytes = 24ull << 20;
  s.memory.swap_bytes = 0;
  s.memory.failcnt = 0;
  s.memory.oom_kills = 0;
  s.memory.limit_bytes = 256ull << 20;
  return s;
}

api::WindowUsage usage(uint64_t i) {
  return api::WindowUsage{kNow - 1s, 15s, 10'000'000 + i * 1000, (48ull << 20) + i * 4096, 0};
}

api::Snapshot synthetic(size_t containers) {
  api::Snapshot s;
  s.taken_at = kNow;
  s.interval = 5s;
  s.window = 15s;
  s.mode = nodemeter::cgroup::Mode::kHybrid;
  s.passes = 10;
  s.node.name = "node-1";
  s.node.start_time = kNow - 24h;
  s.node.latest = sample(1'000'000);
  s.node.usage = usage(1'000'000);
  const size_t pods = (containers + 1) / 2;
  size_t made = 0;
  for (size_t p = 0; p < pods; ++p) {
    api::PodSnapshot pod;
    char uid[64];
    std::snprintf(uid, sizeof uid, "%08zx-5b4a-4392-8180-7f6e5d4c3b2a", p);
    pod.uid = uid;
    pod.name = "web-6d4cf56db6-" + std::to_string(10000 + p);
    pod.namespace_ = p % 3 == 0 ? "kube-system" : "default";
    pod.labels = {{"app", "web"}, {"pod-template-hash", "6d4cf56db6"}};
    pod.qos = nodemeter::cgroup::QosClass::kBurstable;
    pod.start_time = kNow - 1h;
    pod.latest = sample(p);
    pod.usage = usage(p);
    for (size_t c = 0; c < 2 && made < containers; ++c, ++made) {
      api::ContainerSnapshot cs;
      cs.name = c == 0 ? "app" : "sidecar";
      cs.id = std::string(56, 'a') + uid;
      cs.id.resize(64, '0');
      cs.runtime = nodemeter::cgroup::Runtime::kContainerd;
      cs.start_time = kNow - 1h + std::chrono::seconds(c);
      cs.latest = sample(made);
      cs.usage = usage(made);
      pod.containers.push_back(std::move(cs));
    }
    s.pods.push_back(std::move(pod));
  }
  return s;
}

void BM_render_metrics_resource(benchmark::State& state) {
  const api::Snapshot snap = synthetic(static_cast<size_t>(state.range(0)));
  size_t bytes = 0;
  for (auto _ : state) {
    std::string body;
    body.reserve(256 * (snap.pods.size() + 4));  // as the agent's route does
    api::GoTextSerializer::render(body, api::resource_families(snap));
    bytes = body.size();
    benchmark::DoNotOptimize(body);
  }
  state.counters["body_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_render_metrics_resource)->Arg(100)->Arg(1000)->Unit(benchmark::kMicrosecond);

void BM_render_metrics_cadvisor(benchmark::State& state) {
  const api::Snapshot snap = synthetic(static_cast<size_t>(state.range(0)));
  size_t bytes = 0;
  for (auto _ : state) {
    std::string body;
    api::GoTextSerializer::render(body, api::cadvisor_families(snap));
    bytes = body.size();
    benchmark::DoNotOptimize(body);
  }
  state.counters["body_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_render_metrics_cadvisor)->Arg(100)->Arg(1000)->Unit(benchmark::kMicrosecond);

void BM_render_metrics_api_pods(benchmark::State& state) {
  const api::Snapshot snap = synthetic(static_cast<size_t>(state.range(0)));
  api::Request req{api::http::verb::get, "/apis/metrics.k8s.io/v1beta1/pods", 11};
  req.set(api::http::field::accept, "application/json");
  api::MetricsApiOptions options;
  options.version = api::version_info("0.1.0");
  size_t bytes = 0;
  for (auto _ : state) {
    const api::MetricsView view = api::make_metrics_view(snap);
    api::Response res = api::handle_metrics_api(req, view, options, kNow);
    bytes = res.body().size();
    benchmark::DoNotOptimize(res);
  }
  state.counters["body_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_render_metrics_api_pods)->Arg(100)->Arg(1000)->Unit(benchmark::kMicrosecond);

}  // namespace
