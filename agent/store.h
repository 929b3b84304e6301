// The windowed store: a small ring of samples per cgroup identity, and CPU over the window as
// metrics-server computes it. Pure: it never reads a clock; every call is given steady (rates,
// ages) and wall (timestamps on the wire) times. Not thread-safe: the sampler owns it and publishes
// immutable snapshots built from it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "api/snapshot.h"

namespace nodemeter::agent {

using SteadyTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

// A cgroup's identity is its path plus its directory inode: a cgroup removed and recreated under
// the same path (a restarted container, a recreated pod) is a new identity with a fresh window.
// The node is the root: rel_path "" and the root directory's inode.
struct CgroupIdentity {
  std::string rel_path;
  uint64_t inode = 0;
  bool operator==(const CgroupIdentity&) const = default;
};

struct CgroupIdentityHash {
  size_t operator()(const CgroupIdentity& id) const noexcept {
    return std::hash<std::string>{}(id.rel_path) ^ (std::hash<uint64_t>{}(id.inode) * 31);
  }
};

// What the window needs of one sample. Cumulative CPU never decreases for one identity; where it
// does, the kernel counter was reset and a new window starts.
struct WindowPoint {
  SteadyTime steady;
  WallTime wall;
  uint64_t cumulative_cpu_ns = 0;
  uint64_t working_set_bytes = 0;
  std::optional<uint64_t> swap_bytes;
};

struct WindowParams {
  std::chrono::nanoseconds window{std::chrono::seconds{15}};
  // The sampling interval. The oldest point used may be up to window + interval/2 older than the
  // newest, so a pass that ran a little late does not shrink a 15 s window to 10 s.
  std::chrono::nanoseconds interval{std::chrono::seconds{5}};
  // A container measured from its start must have run at least this long: its start time is known
  // only to a few milliseconds (runtime state files, cgroup ctime), an error that would dominate a
  // shorter span. (metrics-server uses 10 s against the kubelet's second-granular start times.)
  std::chrono::nanoseconds fresh_min_age{std::chrono::seconds{1}};

  std::chrono::nanoseconds horizon() const { return window + interval / 2; }
};

// CPU in nanocores between two readings of one identity: (newer - older) cumulative ns per second.
// No value when the counter went down (reset or a different cgroup) or no steady time passed:
// never negative, never divided by zero. Truncates, as metrics-server does.
std::optional<uint64_t> cpu_nano_cores(uint64_t older_cumulative_ns, SteadyTime older,
                                       uint64_t newer_cumulative_ns, SteadyTime newer);

// Usage over the window from the points of one identity, oldest first (steady time strictly
// increasing). Rules, in order:
//  - Points before the last counter decrease belong to an earlier life of the counter: ignored.
//  - The reference is the oldest point within params.horizon() of the newest; CPU is the cumulative
//    difference over the steady difference, and `window` reports that difference.
//  - With no such point (one reading so far), a container that started less than a window before
//    the newest point and at least fresh_min_age before it is measured from its start, as
//    metrics-server does for fresh containers: the reference is (start, cumulative 0), the start
//    placed on the steady clock by the newest point's own wall/steady offset. Real readings win
//    over the start: a start time known late would inflate the rate.
//  - Otherwise no value.
// Memory and swap are the newest point's; the timestamp is the newest point's wall time.
std::optional<api::WindowUsage> window_usage(std::span<const WindowPoint> points,
                                             std::optional<WallTime> start_time,
                                             const WindowParams& params);

struct StoreOptions {
  WindowParams window;
  size_t max_points = 8;  // per identity; at least 2. Beyond it the ring is thinned evenly.
};

class Store {
 public:
  explicit Store(StoreOptions options = {});

  // A good read of one cgroup (pod, container or the node) this pass. Points not newer than the
  // newest stored one are ignored; a counter below the newest starts a new window.
  void record(const CgroupIdentity& id, SteadyTime steady, const api::Sample& sample);
  // The cgroup exists but could not be read this pass: it keeps its last good read and window
  // (marked stale) until that window's newest sample is older than the window.
  void mark_unreadable(const CgroupIdentity& id);
  // Ends a pass: identities neither recorded nor marked unreadable since the previous end_pass()
  // are gone and leave the store, so memory follows the live cgroups under any churn.
  void end_pass();

  // Usage over the window as of `now`; absent until two readings (or a start and one reading)
  // exist, and once the newest reading is older than the window.
  std::optional<api::WindowUsage> usage(const CgroupIdentity& id, SteadyTime now,
                                        std::optional<WallTime> start_time) const;
  const api::Sample* latest(const CgroupIdentity& id) const;  // last good read, or null
  bool stale(const CgroupIdentity& id) const;  // unreadable in the last pass that saw it
  bool contains(const CgroupIdentity& id) const;

  // Fill latest, stale and usage of a snapshot entry. Containers and pods are measured from
  // their start_time (set it before calling) when young; the node from its start_time (boot).
  void fill(const CgroupIdentity& id, SteadyTime now, api::ContainerSnapshot& container) const;
  void fill(const CgroupIdentity& id, SteadyTime now, api::PodSnapshot& pod) const;
  void fill(const CgroupIdentity& id, SteadyTime now, api::NodeSnapshot& node) const;

  size_t size() const { return entries_.size(); }
  size_t total_points() const;
  const StoreOptions& options() const { return options_; }

 private:
  struct Entry {
    std::vector<WindowPoint> points;  // oldest first
    std::optional<api::Sample> latest;
    uint64_t seen_pass = 0;
    bool stale = false;
    bool counter_reset = false;  // the counter went down once: its start no longer means 0
  };
  Entry& touch(const CgroupIdentity& id);
  void trim(Entry& entry) const;

  StoreOptions options_;
  uint64_t pass_ = 1;
  std::unordered_map<CgroupIdentity, Entry, CgroupIdentityHash> entries_;
};

}  // namespace nodemeter::agent
