// One collection pass: scan the pod and container cgroups, name them, read them (grouped by file
// kind), record the reads in the store, and build the immutable snapshot every endpoint serves.
// The collector's tolerance lives here, in one place: a vanished cgroup is absence; PSI the kernel
// lacks is absence; anything else is counted, logged once with its path, and raises
// resource_scrape_error while everything that was read is still served.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>

#include "agent/clock.h"
#include "agent/identity.h"
#include "agent/log.h"
#include "agent/self_metrics.h"
#include "agent/store.h"
#include "api/snapshot.h"
#include "cgroup/reader.h"

namespace nodemeter::agent {

struct SamplerOptions {
  std::string node_name;
  std::chrono::nanoseconds interval{std::chrono::seconds{5}};
  std::chrono::nanoseconds window{std::chrono::seconds{15}};
  bool pressure = true;
  // Limits rarely change: read them on the first pass and then every this many passes.
  unsigned limits_every = 12;
};

class Sampler {
 public:
  Sampler(cgroup::Layout layout, std::filesystem::path proc_root, std::unique_ptr<PodSource> source,
          SamplerOptions options, const Clock& clock, Logger& log, SelfMetrics* metrics = nullptr);

  // Runs one pass and returns its snapshot. Never throws for anything a cgroup tree can do.
  api::SnapshotPtr run_pass();

  const Store& store() const { return store_; }
  size_t open_descriptors() const { return reader_.open_descriptors(); }

 private:
  void report(const cgroup::ReadError& error, bool& scrape_error);

  cgroup::Layout layout_;
  std::filesystem::path proc_root_;
  std::unique_ptr<PodSource> source_;
  SamplerOptions options_;
  const Clock& clock_;
  Logger& log_;
  SelfMetrics* metrics_;
  cgroup::CgroupReader reader_;
  Store store_;
  uint64_t passes_ = 0;
  std::optional<api::WallTime> boot_time_;
  uint64_t root_inode_ = 0;
  std::unordered_set<std::string> failing_paths_;  // logged once until they read again
  std::unordered_set<std::string> failing_now_;
};

// Boot time from <proc_root>/stat's btime line.
std::optional<api::WallTime> read_boot_time(const std::filesystem::path& proc_root);

}  // namespace nodemeter::agent
