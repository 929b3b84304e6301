// The node's metrics at one moment: what the sampler publishes and every renderer reads.
// Immutable once published; renderers are pure functions of a snapshot (and a request).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cgroup/scan.h"
#include "cgroup/types.h"

namespace nodemeter::api {

using WallTime = std::chrono::system_clock::time_point;

// One read of one cgroup. CPU and memory share the timestamp: the wall time the cgroup was read.
struct Sample {
  WallTime time;
  cgroup::CpuUsage cpu;
  cgroup::MemoryUsage memory;
  cgroup::Pressure pressure;
};

// Usage over the window, as metrics-server computes it: CPU is the cumulative difference between
// the newest and oldest samples of one identity divided by their time difference.
struct WindowUsage {
  WallTime timestamp;               // the newest sample's wall time
  std::chrono::nanoseconds window;  // newest - oldest (steady clock), > 0
  uint64_t nano_cores = 0;
  uint64_t working_set_bytes = 0;  // newest
  std::optional<uint64_t> swap_bytes;
};

struct ContainerSnapshot {
  std::string name;  // from the pod source; the container id where nothing better is known
  std::string id;    // runtime container id (64 hex)
  cgroup::Runtime runtime = cgroup::Runtime::kUnknown;
  std::optional<WallTime> start_time;
  std::optional<Sample> latest;      // last good read; may be older than this pass (see stale)
  bool stale = false;                // the last pass could not read it
  std::optional<WindowUsage> usage;  // absent until two samples (or start + one) exist
};

struct PodSnapshot {
  std::string uid;
  std::string name;        // from the pod source; the uid where unknown
  std::string namespace_;  // empty where unknown
  std::map<std::string, std::string> labels;
  std::string phase = "Running";
  cgroup::QosClass qos = cgroup::QosClass::kBestEffort;
  std::optional<WallTime> start_time;
  std::optional<Sample> latest;  // the pod cgroup itself (includes the sandbox)
  bool stale = false;
  std::optional<WindowUsage> usage;
  std::vector<ContainerSnapshot> containers;  // sorted by name, then id
};

struct NodeSnapshot {
  std::string name;
  std::optional<WallTime> start_time;  // boot time
  std::optional<Sample> latest;
  std::optional<WindowUsage> usage;
};

struct Snapshot {
  WallTime taken_at;  // wall time when the pass that produced it started
  std::chrono::nanoseconds interval{0};
  std::chrono::nanoseconds window{0};
  cgroup::Mode mode = cgroup::Mode::kV2;
  NodeSnapshot node;
  std::vector<PodSnapshot> pods;  // sorted by namespace, then name, then uid
  bool scrape_error = false;      // a read failed this pass (not counting cgroups that vanished)
  uint64_t passes = 0;            // passes completed since start; 0 means no data yet
};

using SnapshotPtr = std::shared_ptr<const Snapshot>;

}  // namespace nodemeter::api
