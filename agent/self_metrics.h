// The agent's own metrics (/metrics): how long passes and cgroup reads take, what failed, what is
// tracked, what the HTTP server answered, and the usual process_* metrics.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "cgroup/reader.h"
#include "kube/pods.h"

namespace nodemeter::agent {

// What every nodemeter command serves on /metrics besides its own: nodemeter_build_info, and the
// HTTP server's nodemeter_http_requests_total and nodemeter_http_request_duration_seconds.
class ServingMetrics {
 public:
  ServingMetrics(prometheus::Registry& registry, const std::string& version);
  // path: the route's pattern, never the raw path (bounded cardinality).
  void observe_request(std::string_view path, unsigned code, std::chrono::nanoseconds elapsed);

 private:
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* duration_;
};

class SelfMetrics final : public cgroup::ReadObserver {
 public:
  SelfMetrics(std::string version, cgroup::Mode mode, std::filesystem::path proc_root);

  void on_file_read(cgroup::FileKind kind, std::chrono::nanoseconds elapsed,
                    const cgroup::ReadError* error) override;
  void observe_pass(std::chrono::nanoseconds elapsed, size_t pods, size_t containers);
  // Counts a read error met outside a file read callback (e.g. a scan problem).
  void count_read_error(std::string_view file, std::string_view reason);
  // path: the route's pattern, never the raw path (bounded cardinality).
  void observe_request(std::string_view path, unsigned code, std::chrono::nanoseconds elapsed);

  // A request the authentication and authorization guard decided: allowed, unauthenticated,
  // forbidden or error (a review that could not be made).
  void count_guard_outcome(std::string_view outcome);
  // More families, collected at each render (e.g. the Kubernetes API watch's state). Register
  // before serving starts.
  void add_collector(std::function<std::vector<prometheus::MetricFamily>()> collect);

  // The exposition of everything, process_* included (Go text format).
  std::string render() const;
  prometheus::Registry& registry() { return *registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  cgroup::Mode mode_;
  std::filesystem::path proc_root_;
  prometheus::Histogram* pass_duration_;
  prometheus::Family<prometheus::Histogram>* read_duration_family_;
  std::array<prometheus::Histogram*, cgroup::kFileKindCount> read_duration_{};
  prometheus::Family<prometheus::Counter>* read_errors_;
  prometheus::Gauge* containers_;
  prometheus::Gauge* pods_;
  ServingMetrics serving_;
  prometheus::Family<prometheus::Counter>* guard_outcomes_;
  std::vector<std::function<std::vector<prometheus::MetricFamily>()>> collectors_;
};

// The Go text exposition of a registry's families, `more`, and the process_* families of
// <proc_root>/self, sorted by name: what a command's /metrics serves.
std::string render_self_metrics(const prometheus::Registry& registry,
                                const std::filesystem::path& proc_root,
                                std::vector<prometheus::MetricFamily> more = {});

// The state of a Kubernetes API watch as metrics, every name prefixed with `prefix`
// ("nodemeter_kubernetes_pods_watch"): _synced and _healthy (0/1), _pods, and the _lists,
// _watches, _relists_gone, _errors and _events counters, and the time of the last successful
// exchange (_last_success_timestamp_seconds) once there was one.
std::vector<prometheus::MetricFamily> informer_families(const std::string& prefix,
                                                        const kube::PodInformer::Status& status);

// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds from <proc_root>/self.
std::vector<prometheus::MetricFamily> process_families(const std::filesystem::path& proc_root);

}  // namespace nodemeter::agent
