// The aggregator's collection loop: every resolution it fetches every agent's node view
// (GET /metrics/view) concurrently, at most N at once, keeps the latest view per node, forgets a
// node after three missed resolutions, and publishes one immutable cluster MetricsView that the
// Metrics API handler serves. Failing agents are counted and logged once per state change; the
// others keep serving. Runs on one io_context; the view is readable from any thread.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/log.h"
#include "agent/self_metrics.h"
#include "api/metrics_api.h"
#include "kube/http_client.h"

namespace nodemeter::agent {

// One agent to fetch: its base URL, and the node it runs on when discovery knows it (agents found
// as pods). Views are kept per node (per URL where the node is not known), so an agent pod
// replaced on its node continues its node's history.
struct AgentTarget {
  std::string node;
  std::string url;  // "https://10.244.1.7:10261"
};

// Turns --agents values into targets (no node names).
std::vector<AgentTarget> static_targets(const std::vector<std::string>& urls);

using HttpClientFactory =
    std::function<boost::system::result<std::shared_ptr<kube::HttpClient>, std::string>(
        boost::asio::io_context& io, std::string_view base_url, const kube::TlsClientOptions& tls)>;
// kube::HttpClient::create.
HttpClientFactory default_http_client_factory();

struct AggregatorOptions {
  std::chrono::nanoseconds resolution{std::chrono::seconds{15}};
  std::chrono::milliseconds agent_timeout{5000};  // one fetch: connect, send, whole response
  size_t max_concurrent = 64;                     // fetches in flight at once
  // Called at the start of every cycle (on the io thread): the agents to fetch this time.
  std::function<std::vector<AgentTarget>()> targets;
  kube::TlsClientOptions agent_tls;  // CA the agents' certificates must chain to, or insecure
  // The aggregator's own token (service account), re-read by the source when it rotates; an
  // empty string sends no Authorization header.
  std::function<std::string()> bearer_token;
  int missed_resolutions_to_forget = 3;
  std::string user_agent = "nodemeter-aggregator";
};

// The aggregator's own metrics (/metrics): agents by state, fetch errors by reason, cycle
// duration, what it serves, HTTP requests, and the usual process_* metrics.
class AggregatorMetrics {
 public:
  AggregatorMetrics(std::string version, std::filesystem::path proc_root = "/proc");

  void count_fetch_error(std::string_view reason);  // transport, status, parse, client
  void observe_cycle(std::chrono::nanoseconds elapsed, size_t agents_ok, size_t agents_failing,
                     size_t nodes, size_t pods);
  void observe_request(std::string_view path, unsigned code, std::chrono::nanoseconds elapsed);

  std::string render() const;
  prometheus::Registry& registry() { return *registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::filesystem::path proc_root_;
  prometheus::Family<prometheus::Counter>* fetch_errors_;
  prometheus::Histogram* cycle_duration_;
  prometheus::Gauge* agents_ok_;
  prometheus::Gauge* agents_failing_;
  prometheus::Gauge* nodes_;
  prometheus::Gauge* pods_;
  prometheus::Counter* cycles_;
  ServingMetrics serving_;
};

// What one cycle did.
struct CycleReport {
  size_t agents = 0;     // fetched this cycle
  size_t ok = 0;         // answered with a valid view
  size_t failed = 0;     // transport error, HTTP status other than 200, or an invalid view
  size_t nodes = 0;      // served after the cycle (NodeMetrics)
  size_t pods = 0;       // served after the cycle (PodMetrics)
  size_t forgotten = 0;  // nodes dropped in this cycle after their third miss
  std::chrono::nanoseconds elapsed{0};
};

class Aggregator {
 public:
  Aggregator(boost::asio::io_context& io, AggregatorOptions options, Logger& log,
             AggregatorMetrics* metrics = nullptr,
             HttpClientFactory factory = default_http_client_factory());
  // Stops; fetches still in flight finish into nothing.
  ~Aggregator();
  Aggregator(const Aggregator&) = delete;
  Aggregator& operator=(const Aggregator&) = delete;

  // One cycle now: fetch every target, merge, publish; done (on the io thread) once published.
  // Call on the io thread, never while another cycle runs.
  void run_cycle(std::function<void(const CycleReport&)> done = {});
  // A cycle now and then one per resolution on a steady grid (a cycle that overruns skips the
  // ticks it missed; two never overlap). Call on the io thread.
  void start();
  // Cancels the timer and the fetches in flight. Callable from any thread.
  void stop();

  // The cluster view of the last cycle; an empty view before the first. Any thread.
  std::shared_ptr<const api::MetricsView> view() const;
  // Cycles completed; any thread (readiness: at least one).
  uint64_t cycles() const;
  // Healthy when a cycle finished (or the aggregator started) recently enough: within three
  // resolutions plus the longest a cycle can take (the agent timeout for each round of
  // max_concurrent fetches).
  bool live(std::chrono::steady_clock::time_point now) const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace nodemeter::agent
