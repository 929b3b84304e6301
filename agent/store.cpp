#include "agent/store.h"

#include <algorithm>
#include <limits>

namespace nodemeter::agent {

namespace {

constexpr uint64_t kNanosPerSecond = 1'000'000'000;

}  // namespace

std::optional<uint64_t> cpu_nano_cores(uint64_t older_cumulative_ns, SteadyTime older,
                                       uint64_t newer_cumulative_ns, SteadyTime newer) {
  if (newer_cumulative_ns < older_cumulative_ns) return std::nullopt;
  const auto elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(newer - older).count();
  if (elapsed <= 0) return std::nullopt;
  // Exact in 128 bits: the cumulative difference (ns) times 1e9 overflows 64 bits after ~18 s of
  // one core's time.
  const unsigned __int128 scaled =
      static_cast<unsigned __int128>(newer_cumulative_ns - older_cumulative_ns) * kNanosPerSecond;
  const unsigned __int128 rate = scaled / static_cast<unsigned __int128>(elapsed);
  if (rate > std::numeric_limits<uint64_t>::max()) return std::numeric_limits<uint64_t>::max();
  return static_cast<uint64_t>(rate);
}

std::optional<api::WindowUsage> window_usage(std::span<const WindowPoint> points,
                                             std::optional<WallTime> start_time,
                                             const WindowParams& params) {
  if (points.empty()) return std::nullopt;
  const WindowPoint& newest = points.back();

  // Walk back from the newest while the counter does not go down and the point is within the
  // horizon; the last point so reached is the reference.
  const WindowPoint* reference = nullptr;
  bool counter_went_down = false;
  for (size_t i = points.size() - 1; i-- > 0;) {
    const WindowPoint& older = points[i];
    const WindowPoint& newer = points[i + 1];
    if (older.cumulative_cpu_ns > newer.cumulative_cpu_ns) {
      counter_went_down = true;
      break;
    }
    if (older.steady >= newer.steady) break;  // out of order: nothing older is trustworthy
    if (newest.steady - older.steady > params.horizon()) break;
    reference = &older;
  }

  api::WindowUsage usage;
  usage.timestamp = newest.wall;
  usage.working_set_bytes = newest.working_set_bytes;
  usage.swap_bytes = newest.swap_bytes;

  if (reference != nullptr) {
    const auto rate = cpu_nano_cores(reference->cumulative_cpu_ns, reference->steady,
                                     newest.cumulative_cpu_ns, newest.steady);
    if (!rate) return std::nullopt;
    usage.nano_cores = *rate;
    usage.window =
        std::chrono::duration_cast<std::chrono::nanoseconds>(newest.steady - reference->steady);
    return usage;
  }

  // One reading: measure a young container from its start, where the start is credible.
  if (!start_time || counter_went_down) return std::nullopt;
  const auto age = std::chrono::duration_cast<std::chrono::nanoseconds>(newest.wall - *start_time);
  if (age < params.fresh_min_age || age >= params.window ||
      age <= std::chrono::nanoseconds::zero()) {
    return std::nullopt;
  }
  const SteadyTime start_steady = newest.steady - age;
  const auto rate = cpu_nano_cores(0, start_steady, newest.cumulative_cpu_ns, newest.steady);
  if (!rate) return std::nullopt;
  usage.nano_cores = *rate;
  usage.window = age;
  return usage;
}

Store::Store(StoreOptions options) : options_(options) {
  options_.max_points = std::max<size_t>(options_.max_points, 2);
}

Store::Entry& Store::touch(const CgroupIdentity& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) it = entries_.emplace(id, Entry{}).first;
  it->second.seen_pass = pass_;
  return it->second;
}

void Store::record(const CgroupIdentity& id, SteadyTime steady, const api::Sample& sample) {
  Entry& entry = touch(id);
  entry.stale = false;
  WindowPoint point{steady, sample.time, sample.cpu.cumulative_ns, sample.memory.working_set_bytes,
                    sample.memory.swap_bytes};
  if (!entry.points.empty()) {
    const WindowPoint& newest = entry.points.back();
    if (steady <= newest.steady) return;  // a repeat or out of order: the stored one stands
    if (point.cumulative_cpu_ns < newest.cumulative_cpu_ns) {
      entry.points.clear();
      entry.counter_reset = true;
    }
  }
  entry.points.push_back(point);
  entry.latest = sample;
  trim(entry);
}

void Store::trim(Entry& entry) const {
  auto& points = entry.points;
  const SteadyTime newest = points.back().steady;
  const auto horizon = options_.window.horizon();
  const auto first_kept = std::find_if(points.begin(), points.end(), [&](const WindowPoint& p) {
    return newest - p.steady <= horizon;
  });
  points.erase(points.begin(), first_kept);
  // Over the cap (a window of many intervals): drop the interior point whose removal leaves the
  // smallest gap, so the remaining points stay spread over the window and the oldest survives.
  while (points.size() > options_.max_points) {
    size_t drop = 1;
    auto best_gap = points[2].steady - points[0].steady;
    for (size_t i = 2; i + 1 < points.size(); ++i) {
      const auto gap = points[i + 1].steady - points[i - 1].steady;
      if (gap < best_gap) {
        best_gap = gap;
        drop = i;
      }
    }
    points.erase(points.begin() + static_cast<std::ptrdiff_t>(drop));
  }
}

void Store::mark_unreadable(const CgroupIdentity& id) {
  touch(id).stale = true;
}

void Store::end_pass() {
  std::erase_if(entries_, [this](const auto& item) { return item.second.seen_pass != pass_; });
  ++pass_;
}

std::optional<api::WindowUsage> Store::usage(const CgroupIdentity& id, SteadyTime now,
                                             std::optional<WallTime> start_time) const {
  const auto it = entries_.find(id);
  if (it == entries_.end() || it->second.points.empty()) return std::nullopt;
  const Entry& entry = it->second;
  if (now - entry.points.back().steady > options_.window.window) return std::nullopt;
  return window_usage(entry.points, entry.counter_reset ? std::nullopt : start_time,
                      options_.window);
}

const api::Sample* Store::latest(const CgroupIdentity& id) const {
  const auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.latest) return nullptr;
  return &*it->second.latest;
}

bool Store::stale(const CgroupIdentity& id) const {
  const auto it = entries_.find(id);
  return it != entries_.end() && it->second.stale;
}

bool Store::contains(const CgroupIdentity& id) const {
  return entries_.contains(id);
}

size_t Store::total_points() const {
  size_t total = 0;
  for (const auto& [id, entry] : entries_)
    total += entry.points.size();
  return total;
}

void Store::fill(const CgroupIdentity& id, SteadyTime now,
                 api::ContainerSnapshot& container) const {
  const api::Sample* sample = latest(id);
  container.latest = sample ? std::optional<api::Sample>(*sample) : std::nullopt;
  container.stale = stale(id);
  container.usage = usage(id, now, container.start_time);
}

void Store::fill(const CgroupIdentity& id, SteadyTime now, api::PodSnapshot& pod) const {
  const api::Sample* sample = latest(id);
  pod.latest = sample ? std::optional<api::Sample>(*sample) : std::nullopt;
  pod.stale = stale(id);
  pod.usage = usage(id, now, pod.start_time);
}

void Store::fill(const CgroupIdentity& id, SteadyTime now, api::NodeSnapshot& node) const {
  const api::Sample* sample = latest(id);
  node.latest = sample ? std::optional<api::Sample>(*sample) : std::nullopt;
  node.usage = usage(id, now, node.start_time);
}

}  // namespace nodemeter::agent
