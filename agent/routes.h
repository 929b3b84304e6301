// The agent's HTTP surface: which path is answered by which renderer. A pure function of the
// request, the latest snapshot and the health state; the server only moves bytes.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "agent/clock.h"
#include "agent/self_metrics.h"
#include "api/metrics_api.h"
#include "api/server.h"
#include "api/snapshot.h"

namespace nodemeter::agent {

// Written by the sampler thread, read by the server thread.
struct HealthState {
  std::atomic<int64_t> started_steady_ns{0};
  std::atomic<int64_t> first_pass_steady_ns{0};  // 0 until the first pass finished
  std::atomic<int64_t> last_pass_steady_ns{0};
};

int64_t steady_ns(std::chrono::steady_clock::time_point t);

// The exposition of one snapshot, rendered once: snapshots are immutable and published once per
// pass, so every scrape between two passes is answered with the same bytes.
class RenderCache {
 public:
  // Returns the body for snap, calling render(snap) only for a snapshot not seen last time.
  std::shared_ptr<const std::string> get(
      const api::SnapshotPtr& snap, const std::function<std::string(const api::Snapshot&)>& render);

 private:
  std::mutex mu_;
  api::SnapshotPtr snapshot_;
  std::shared_ptr<const std::string> body_;
};

struct AgentRoutes {
  std::function<api::SnapshotPtr()> snapshot;
  SelfMetrics* metrics = nullptr;
  const Clock* clock = nullptr;
  const HealthState* health = nullptr;
  std::chrono::nanoseconds interval{std::chrono::seconds{5}};
  std::chrono::nanoseconds window{std::chrono::seconds{15}};
  api::MetricsApiOptions metrics_api;
  std::shared_ptr<RenderCache> resource_cache = std::make_shared<RenderCache>();
  std::shared_ptr<RenderCache> cadvisor_cache = std::make_shared<RenderCache>();

  api::Response operator()(const api::Request& request) const;
};

// The route a path belongs to, for self-metric labels: a known pattern or "other".
std::string route_pattern(std::string_view path);

}  // namespace nodemeter::agent
