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
#include <string>
#include <string_view>

#include "cgroup/reader.h"

namespace nodemeter::agent {

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
  prometheus::Family<prometheus::Counter>* http_requests_;
  prometheus::Family<prometheus::Histogram>* http_duration_;
};

// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds from <proc_root>/self.
std::vector<prometheus::MetricFamily> process_families(const std::filesystem::path& proc_root);

}  // namespace nodemeter::agent
