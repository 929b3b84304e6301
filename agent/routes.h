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
#include <vector>

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

// The Kubernetes API pod watch, as /readyz?verbose reports it.
struct PodWatchState {
  bool synced = false;
  bool healthy = false;
  std::string last_error;
};

// A response with a text body (plain text unless said), never cached.
api::Response text_response(const api::Request& req, boost::beast::http::status status,
                            std::string body,
                            std::string_view content_type = "text/plain; charset=utf-8");

struct HealthCheck {
  std::string name;
  bool ok;
  std::string reason;     // why it failed
  std::string note = {};  // said after "ok" in verbose answers
};
// Kubernetes-style health answer: "ok", or with ?verbose (and whenever a check fails) one
// "[+]name ok" / "[-]name failed: reason" line per check and "<endpoint> check passed|failed".
api::Response health_response(const api::Request& req, std::string_view endpoint,
                              const std::vector<HealthCheck>& checks);

int64_t steady_ns(std::chrono::steady_clock::time_point t);

// What one snapshot turns into (an exposition, a Metrics API view), made once: snapshots are
// immutable and published once per pass, so every request between two passes shares the result.
template <class T>
class PerSnapshot {
 public:
  std::shared_ptr<const T> get(const api::SnapshotPtr& snap,
                               const std::function<T(const api::Snapshot&)>& make) {
    std::lock_guard lock(mu_);
    if (snap != snapshot_ || !value_) {
      value_ = std::make_shared<const T>(make(*snap));
      snapshot_ = snap;
    }
    return value_;
  }

 private:
  std::mutex mu_;
  api::SnapshotPtr snapshot_;
  std::shared_ptr<const T> value_;
};

struct AgentRoutes {
  std::function<api::SnapshotPtr()> snapshot;
  SelfMetrics* metrics = nullptr;
  const Clock* clock = nullptr;
  const HealthState* health = nullptr;
  std::chrono::nanoseconds interval{std::chrono::seconds{5}};
  std::chrono::nanoseconds window{std::chrono::seconds{15}};
  api::MetricsApiOptions metrics_api;
  // Set where pods are named from the API. An unreachable API server does not make the agent
  // unready (it keeps serving what it measures, named from the last known state and the
  // runtime), but /readyz?verbose says so.
  std::function<PodWatchState()> pod_watch;
  std::shared_ptr<PerSnapshot<std::string>> resource_text =
      std::make_shared<PerSnapshot<std::string>>();
  std::shared_ptr<PerSnapshot<std::string>> cadvisor_text =
      std::make_shared<PerSnapshot<std::string>>();
  std::shared_ptr<PerSnapshot<std::string>> node_view_text =  // /metrics/view, for the aggregator
      std::make_shared<PerSnapshot<std::string>>();
  std::shared_ptr<PerSnapshot<api::MetricsView>> metrics_view =
      std::make_shared<PerSnapshot<api::MetricsView>>();

  api::Response operator()(const api::Request& request) const;
};

// The route a path belongs to, for self-metric labels: a known pattern or "other".
std::string route_pattern(std::string_view path);

}  // namespace nodemeter::agent
