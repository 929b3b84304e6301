// `nodemeter bench`: how long reading cgroups takes on this host. For each file kind present and
// each read method (open + read + close; openat on a kept directory descriptor; a kept descriptor
// re-read with pread at offset 0) it measures the latency of one read, and it times the agent's
// whole collection pass against the raw pread floor over the same pod and container cgroups.
// With --create it first builds synthetic container cgroups laid out like a node (and busy
// processes in some of them), and removes all of it again, also on SIGINT/SIGTERM and on error.
#pragma once

#include <boost/system/result.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace nodemeter::agent {

enum class ReadMethod { kOpenReadClose, kOpenat, kPread };
const char* to_string(ReadMethod method);  // "open+read+close", "openat", "pread"

struct BenchOptions {
  std::filesystem::path cgroup_root = "/sys/fs/cgroup";
  std::filesystem::path proc_root = "/proc";
  std::filesystem::path containerd_state_dir =
      "/run/containerd/io.containerd.runtime.v2.task/k8s.io";
  std::filesystem::path crio_state_dir = "/run/containers/storage/overlay-containers";
  bool pods_only = false;
  size_t iterations = 2000;  // timed reads per file kind and method; 0 skips the file table
  std::optional<std::chrono::nanoseconds> duration;  // instead of iterations: time per cell
  size_t passes = 20;  // collection passes (and floor passes) to take the median of; 0 skips
  size_t create = 0;   // synthetic container cgroups to build first
  size_t burners = 0;  // busy processes placed in some of them
  bool json = false;
  bool show_help = false;
  std::vector<std::string> command;  // after "--": run while the synthetic cgroups exist
};

// Parses the bench's flags; the error is one sentence naming the flag.
boost::system::result<BenchOptions, std::string> parse_bench_options(
    const std::vector<std::string>& args);
std::string bench_usage();

// Latency distribution of one cell; percentiles by nearest rank.
struct LatencyStats {
  size_t reads = 0;
  uint64_t p50_ns = 0;
  uint64_t p90_ns = 0;
  uint64_t p99_ns = 0;
  uint64_t max_ns = 0;
};
// Sorts samples_ns and summarizes it (all zero when empty).
LatencyStats summarize(std::vector<uint64_t>& samples_ns);
// Nearest-rank percentile (0 < q <= 1) of sorted values; 0 when empty.
uint64_t percentile(const std::vector<uint64_t>& sorted, double q);
// Median of unsorted values (the lower middle for an even count); 0 when empty.
uint64_t median(std::vector<uint64_t> values);

struct FileResult {
  std::string file;  // e.g. "memory.stat"
  ReadMethod method = ReadMethod::kPread;
  size_t cgroups = 0;  // cgroups that have the file (and were read)
  size_t errors = 0;   // reads that failed (a cgroup vanished mid-run, say)
  LatencyStats latency;
};

struct PassResult {
  size_t pods = 0;
  size_t containers = 0;
  size_t cgroups = 0;  // pod and container cgroups read by each pass
  size_t passes = 0;
  uint64_t median_ns = 0;      // nodemeter agent's pass: scan, read, parse, store, snapshot
  uint64_t cpu_median_ns = 0;  // the pass's CPU time (user + system) of this process
  uint64_t min_ns = 0;
  uint64_t max_ns = 0;
  std::vector<std::string> floor_files;    // the files every pass needs, read without parsing
  std::optional<uint64_t> floor_pread_ns;  // medians over the same cgroups; absent without any
  std::optional<uint64_t> floor_openat_ns;
  std::optional<uint64_t> floor_open_read_close_ns;
  std::optional<double> ratio;  // median_ns / floor_pread_ns
};

struct CreatedInfo {
  size_t containers = 0;
  size_t pods = 0;
  size_t burners = 0;
  std::string parent;  // the cgroup holding everything made, e.g. "nodemeter-bench-1234"
};

struct BenchReport {
  std::string version;
  std::string cgroup_root;
  std::string mode;    // "v1", "v2" or "hybrid"
  std::string scope;   // "all" or "pods"
  size_t cgroups = 0;  // distinct cgroups measured (relative paths across hierarchies)
  std::optional<size_t> iterations;
  std::optional<std::chrono::nanoseconds> duration;
  std::optional<CreatedInfo> created;
  std::vector<FileResult> files;
  std::optional<PassResult> pass;
  bool interrupted = false;
};

std::string render_bench_table(const BenchReport& report);
nlohmann::ordered_json bench_json(const BenchReport& report);

// Runs the bench; returns the process exit code: 0, 1 when it cannot run here (no cgroups, no
// permission), 2 for a bad flag, 128 + signal when interrupted.
int run_bench(const std::vector<std::string>& args, std::FILE* out, std::FILE* err);
int run_bench(const std::vector<std::string>& args);

}  // namespace nodemeter::agent
