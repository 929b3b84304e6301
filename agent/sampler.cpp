#include "agent/sampler.h"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <tuple>

#include "cgroup/parse.h"
#include "cgroup/scan.h"

namespace nodemeter::agent {

std::optional<api::WallTime> read_boot_time(const std::filesystem::path& proc_root) {
  auto text = cgroup::read_file(proc_root / "stat");
  if (!text) return std::nullopt;
  std::string_view rest = *text, line;
  while (cgroup::next_line(rest, line)) {
    if (line.substr(0, 6) != "btime ") continue;
    line.remove_prefix(6);
    int64_t secs = 0;
    if (std::from_chars(line.data(), line.data() + line.size(), secs).ec != std::errc{})
      return std::nullopt;
    return api::WallTime{std::chrono::seconds{secs}};
  }
  return std::nullopt;
}

Sampler::Sampler(cgroup::Layout layout, std::filesystem::path proc_root,
                 std::unique_ptr<PodSource> source, SamplerOptions options, const Clock& clock,
                 Logger& log, SelfMetrics* metrics)
    : layout_(std::move(layout)),
      proc_root_(std::move(proc_root)),
      source_(std::move(source)),
      options_(std::move(options)),
      clock_(clock),
      log_(log),
      metrics_(metrics),
      reader_(layout_, proc_root_, metrics),
      store_(StoreOptions{WindowParams{options_.window, options_.interval}}) {
  boot_time_ = read_boot_time(proc_root_);
  struct stat st {};
  if (::stat(layout_.primary().c_str(), &st) == 0) root_inode_ = st.st_ino;
}

void Sampler::report(const cgroup::ReadError& error, bool& scrape_error) {
  using cgroup::ReadErrorKind;
  if (error.kind == ReadErrorKind::kGone || error.kind == ReadErrorKind::kUnsupported) return;
  scrape_error = true;
  failing_now_.insert(error.path);
  if (failing_paths_.insert(error.path).second) {
    log_.warn("cannot read cgroup file; serving everything else",
              {{"path", error.path},
               {"reason", cgroup::to_string(error.kind)},
               {"error", error.message}});
  }
}

namespace {

// Limits and the counters read with them are not read every pass: keep the last known values.
void carry_over(cgroup::MemoryUsage& now, const cgroup::MemoryUsage& before) {
  if (!now.limit_bytes) now.limit_bytes = before.limit_bytes;
  if (!now.swap_limit_bytes) now.swap_limit_bytes = before.swap_limit_bytes;
  if (!now.failcnt) now.failcnt = before.failcnt;
  if (!now.oom_kills) now.oom_kills = before.oom_kills;
}

}  // namespace

api::SnapshotPtr Sampler::run_pass() {
  const auto steady_start = clock_.steady();
  const auto wall_start = clock_.wall();
  failing_now_.clear();
  bool scrape_error = false;

  const cgroup::ScanResult scan = cgroup::scan(layout_);
  source_->refresh(scan);

  // Pod cgroups give pod totals (sandbox included); sandbox cgroups themselves are not read.
  // Each container is named once per pass: the infos, in scan order, serve the snapshot below.
  std::vector<cgroup::CgroupTarget> targets;
  std::vector<std::optional<ContainerInfo>> container_infos;
  for (const auto& pod : scan.pods) {
    targets.push_back({pod.rel_path, pod.inode});
    for (const auto& c : pod.containers) {
      container_infos.push_back(source_->container(pod.uid, c.id));
      const auto& info = container_infos.back();
      if (info && info->is_sandbox) continue;
      targets.push_back({c.rel_path, c.inode});
    }
  }

  const bool read_limits = options_.limits_every <= 1 || passes_ % options_.limits_every == 0;
  const cgroup::ReadOptions read_options{options_.pressure && layout_.is_v2(), read_limits};
  std::vector<cgroup::CgroupSample> samples = reader_.read(targets, read_options);
  cgroup::NodeSample node = reader_.read_node(read_options);
  // One timestamp per pass, taken when the reads are done: CPU and memory of a cgroup share it.
  const auto steady_read = clock_.steady();
  const auto wall_read = clock_.wall();

  for (size_t i = 0; i < targets.size(); ++i) {
    const CgroupIdentity id{targets[i].rel_path, targets[i].inode};
    cgroup::CgroupSample& s = samples[i];
    for (const auto& e : s.errors)
      report(e, scrape_error);
    if (s.cpu && s.memory) {
      api::Sample sample{wall_read, *s.cpu, *s.memory, s.pressure};
      if (!read_limits) {
        if (const api::Sample* before = store_.latest(id))
          carry_over(sample.memory, before->memory);
      }
      store_.record(id, steady_read, sample);
      continue;
    }
    const cgroup::ReadError& e = !s.cpu ? s.cpu.error() : s.memory.error();
    if (e.kind == cgroup::ReadErrorKind::kGone) continue;  // vanished mid-pass: leaves the store
    report(e, scrape_error);
    store_.mark_unreadable(id);
  }

  const CgroupIdentity node_id{"", root_inode_};
  for (const auto& e : node.errors)
    report(e, scrape_error);
  if (node.cpu && node.memory) {
    api::Sample sample{wall_read, *node.cpu, *node.memory, node.pressure};
    if (!read_limits) {
      if (const api::Sample* before = store_.latest(node_id))
        carry_over(sample.memory, before->memory);
    }
    store_.record(node_id, steady_read, sample);
  } else {
    if (!node.cpu) report(node.cpu.error(), scrape_error);
    if (!node.memory) report(node.memory.error(), scrape_error);
    store_.mark_unreadable(node_id);
  }
  store_.end_pass();
  failing_paths_ = failing_now_;

  auto snap = std::make_shared<api::Snapshot>();
  snap->taken_at = wall_start;
  snap->interval = options_.interval;
  snap->window = options_.window;
  snap->mode = layout_.mode;
  snap->scrape_error = scrape_error;
  snap->passes = ++passes_;
  snap->node.name = options_.node_name;
  snap->node.start_time = boot_time_;
  store_.fill(node_id, steady_read, snap->node);

  size_t container_count = 0;
  size_t next_info = 0;
  snap->pods.reserve(scan.pods.size());
  for (const auto& pod : scan.pods) {
    api::PodSnapshot p;
    p.uid = pod.uid;
    p.qos = pod.qos;
    if (auto info = source_->pod(pod.uid)) {
      p.name = std::move(info->name);
      p.namespace_ = std::move(info->namespace_);
      p.labels = std::move(info->labels);
      p.phase = std::move(info->phase);
      p.start_time = info->start_time;
    } else {
      p.name = pod.uid;
    }
    store_.fill({pod.rel_path, pod.inode}, steady_read, p);
    for (const auto& c : pod.containers) {
      auto& info = container_infos[next_info++];
      if (info && info->is_sandbox) continue;
      api::ContainerSnapshot cs;
      cs.id = c.id;
      cs.runtime = c.runtime;
      cs.name = info ? std::move(info->name) : c.id;
      if (info) cs.start_time = info->start_time;
      store_.fill({c.rel_path, c.inode}, steady_read, cs);
      p.containers.push_back(std::move(cs));
    }
    std::sort(p.containers.begin(), p.containers.end(), [](const auto& a, const auto& b) {
      return std::tie(a.name, a.id) < std::tie(b.name, b.id);
    });
    container_count += p.containers.size();
    snap->pods.push_back(std::move(p));
  }
  std::sort(snap->pods.begin(), snap->pods.end(), [](const auto& a, const auto& b) {
    return std::tie(a.namespace_, a.name, a.uid) < std::tie(b.namespace_, b.name, b.uid);
  });

  if (metrics_)
    metrics_->observe_pass(clock_.steady() - steady_start, snap->pods.size(), container_count);
  return snap;
}

}  // namespace nodemeter::agent
