#include "agent/identity.h"

#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <utility>

#include "cgroup/reader.h"

namespace nodemeter::agent {

namespace {

using WallTime = std::chrono::system_clock::time_point;
using nlohmann::json;

// config.json is a few tens of KiB (the seccomp profile dominates); anything past this is not one.
constexpr size_t kMaxConfigBytes = 4 << 20;

WallTime to_wall(const struct timespec& ts) {
  return WallTime{std::chrono::duration_cast<WallTime::duration>(
      std::chrono::seconds{ts.tv_sec} + std::chrono::nanoseconds{ts.tv_nsec})};
}

std::optional<WallTime> mtime_of(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return to_wall(st.st_mtim);
}

// The annotations object of an OCI config.json, or an error for text that is not a JSON object.
struct Annotations {
  json object;  // null where the config has no annotations object
  std::string error;
};

Annotations annotations_of(std::string_view text) {
  Annotations out;
  json doc = json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded()) {
    out.error = "not valid JSON";
    return out;
  }
  if (!doc.is_object()) {
    out.error = "not a JSON object";
    return out;
  }
  const auto it = doc.find("annotations");
  if (it != doc.end() && it->is_object()) out.object = std::move(*it);
  return out;
}

std::string string_at(const json& object, const char* key) {
  if (!object.is_object()) return {};
  const auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

template <size_t N>
bool digits(std::string_view text, size_t pos, int& value) {
  if (pos + N > text.size()) return false;
  for (size_t i = pos; i < pos + N; ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
  }
  const auto [ptr, ec] = std::from_chars(text.data() + pos, text.data() + pos + N, value);
  return ec == std::errc{} && ptr == text.data() + pos + N;
}

}  // namespace

std::optional<WallTime> parse_rfc3339(std::string_view t) {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!digits<4>(t, 0, year) || t.size() < 20 || t[4] != '-' || !digits<2>(t, 5, month) ||
      t[7] != '-' || !digits<2>(t, 8, day) || (t[10] != 'T' && t[10] != 't') ||
      !digits<2>(t, 11, hour) || t[13] != ':' || !digits<2>(t, 14, minute) || t[16] != ':' ||
      !digits<2>(t, 17, second)) {
    return std::nullopt;
  }
  if (hour > 23 || minute > 59 || second > 60) return std::nullopt;
  const std::chrono::year_month_day date{std::chrono::year{year},
                                         std::chrono::month{static_cast<unsigned>(month)},
                                         std::chrono::day{static_cast<unsigned>(day)}};
  if (!date.ok()) return std::nullopt;
  // system_clock counts nanoseconds in 64 bits: 1677-09-21 to 2262-04-11. Whole years inside
  // that, with a day to spare for the offset; Go's zero time (year 1) and the like are no time.
  if (year < 1678 || year > 2261) return std::nullopt;

  size_t pos = 19;
  std::chrono::nanoseconds fraction{0};
  if (pos < t.size() && t[pos] == '.') {
    ++pos;
    const size_t begin = pos;
    int64_t nanos = 0;
    int scale = 0;
    while (pos < t.size() && t[pos] >= '0' && t[pos] <= '9') {
      if (scale < 9) {
        nanos = nanos * 10 + (t[pos] - '0');
        ++scale;
      }
      ++pos;
    }
    if (pos == begin) return std::nullopt;
    for (; scale < 9; ++scale)
      nanos *= 10;
    fraction = std::chrono::nanoseconds{nanos};
  }

  std::chrono::minutes offset{0};
  if (pos < t.size() && (t[pos] == 'Z' || t[pos] == 'z')) {
    ++pos;
  } else if (pos < t.size() && (t[pos] == '+' || t[pos] == '-')) {
    int oh = 0, om = 0;
    if (!digits<2>(t, pos + 1, oh) || pos + 3 >= t.size() || t[pos + 3] != ':' ||
        !digits<2>(t, pos + 4, om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset = std::chrono::hours{oh} + std::chrono::minutes{om};
    if (t[pos] == '-') offset = -offset;
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != t.size()) return std::nullopt;

  const auto local = std::chrono::sys_days{date} + std::chrono::hours{hour} +
                     std::chrono::minutes{minute} + std::chrono::seconds{second} + fraction;
  return std::chrono::time_point_cast<WallTime::duration>(local - offset);
}

ConfigParse parse_containerd_config(std::string_view text) {
  ConfigParse out;
  Annotations a = annotations_of(text);
  if (!a.error.empty()) {
    out.error = std::move(a.error);
    return out;
  }
  const std::string type = string_at(a.object, "io.kubernetes.cri.container-type");
  RuntimeRecord record;
  record.pod_name = string_at(a.object, "io.kubernetes.cri.sandbox-name");
  record.pod_namespace = string_at(a.object, "io.kubernetes.cri.sandbox-namespace");
  record.pod_uid = string_at(a.object, "io.kubernetes.cri.sandbox-uid");
  record.container_name = string_at(a.object, "io.kubernetes.cri.container-name");
  record.is_sandbox = type == "sandbox";
  if (type.empty() && record.pod_name.empty()) return out;  // not made through the CRI
  out.record = std::move(record);
  return out;
}

ConfigParse parse_crio_config(std::string_view text) {
  ConfigParse out;
  Annotations a = annotations_of(text);
  if (!a.error.empty()) {
    out.error = std::move(a.error);
    return out;
  }
  const std::string type = string_at(a.object, "io.kubernetes.cri-o.ContainerType");
  RuntimeRecord record;
  record.pod_name = string_at(a.object, "io.kubernetes.pod.name");
  record.pod_namespace = string_at(a.object, "io.kubernetes.pod.namespace");
  record.pod_uid = string_at(a.object, "io.kubernetes.pod.uid");
  record.container_name = string_at(a.object, "io.kubernetes.container.name");
  record.is_sandbox = type == "sandbox";
  if (type.empty() && record.pod_name.empty()) return out;
  record.created = parse_rfc3339(string_at(a.object, "io.kubernetes.cri-o.Created"));
  if (record.is_sandbox) {
    // The sandbox's labels are the pod's, plus the identity keys the kubelet and CRI-O add.
    const std::string labels_text = string_at(a.object, "io.kubernetes.cri-o.Labels");
    const json labels = json::parse(labels_text, nullptr, false);
    if (!labels.is_discarded() && labels.is_object()) {
      static const std::unordered_set<std::string_view> kOwnKeys = {
          "io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.pod.uid",
          "io.kubernetes.container.name"};
      for (const auto& [key, value] : labels.items()) {
        if (value.is_string() && !kOwnKeys.contains(key)) {
          record.pod_labels.emplace(key, value.get<std::string>());
        }
      }
    }
  }
  out.record = std::move(record);
  return out;
}

// ---------------------------------------------------------------------------------------------
// ChainedPodSource

ChainedPodSource::ChainedPodSource(std::vector<std::unique_ptr<PodSource>> sources)
    : sources_(std::move(sources)) {}

void ChainedPodSource::refresh(const cgroup::ScanResult& scan) {
  for (auto& source : sources_)
    source->refresh(scan);
}

std::optional<PodInfo> ChainedPodSource::pod(std::string_view pod_uid) const {
  std::optional<PodInfo> found;
  for (const auto& source : sources_) {
    if (found && found->start_time) break;
    auto info = source->pod(pod_uid);
    if (!info) continue;
    if (!found) {
      found = std::move(info);
    } else if (info->start_time) {
      found->start_time = info->start_time;
    }
  }
  return found;
}

std::optional<ContainerInfo> ChainedPodSource::container(std::string_view pod_uid,
                                                         std::string_view container_id) const {
  std::optional<ContainerInfo> found;
  for (const auto& source : sources_) {
    if (found && found->start_time) break;
    auto info = source->container(pod_uid, container_id);
    if (!info) continue;
    if (!found) {
      found = std::move(info);
    } else if (info->start_time) {
      found->start_time = info->start_time;
    }
  }
  return found;
}

std::string ChainedPodSource::name() const {
  std::string out = "chain(";
  for (size_t i = 0; i < sources_.size(); ++i) {
    if (i > 0) out += ',';
    out += sources_[i]->name();
  }
  out += ')';
  return out;
}

// ---------------------------------------------------------------------------------------------
// RuntimeStateSource

RuntimeStateSource::RuntimeStateSource(RuntimeStateOptions options, IdentityLog log)
    : options_(std::move(options)), log_(std::move(log)) {}

void RuntimeStateSource::log(const std::string& message) const {
  if (log_) log_(message);
}

std::optional<RuntimeStateSource::Cached> RuntimeStateSource::load_config(
    const std::filesystem::path& path, ConfigParse (*parse)(std::string_view)) {
  ++config_reads_;
  auto text = cgroup::read_file(path);
  if (!text &&
      (text.error().kind == cgroup::ReadErrorKind::kGone || text.error().errno_value == ENOTDIR)) {
    return std::nullopt;  // not this runtime's container: the next one is asked
  }
  Cached cached;  // an unusable file is cached as such, so it is logged and read once
  if (!text) {
    log("pod identity: cannot read " + path.string() + ": " + text.error().message);
    return cached;
  }
  if (text->size() > kMaxConfigBytes) {
    log("pod identity: ignoring " + path.string() + ": larger than " +
        std::to_string(kMaxConfigBytes) + " bytes");
    return cached;
  }
  ConfigParse parsed = parse(*text);
  if (!parsed.error.empty()) {
    log("pod identity: ignoring " + path.string() + ": " + parsed.error);
    return cached;
  }
  cached.record = std::move(parsed.record);
  return cached;
}

std::optional<RuntimeStateSource::Cached> RuntimeStateSource::load_containerd(
    const std::string& id) {
  if (options_.containerd_state_dir.empty()) return std::nullopt;
  const auto dir = options_.containerd_state_dir / id;
  auto cached = load_config(dir / "config.json", parse_containerd_config);
  if (cached && cached->record) {
    cached->start_time = mtime_of(dir / "init.pid");
    if (!cached->start_time) cached->start_time = mtime_of(dir / "config.json");
  }
  return cached;
}

std::optional<RuntimeStateSource::Cached> RuntimeStateSource::load_crio(const std::string& id) {
  if (options_.crio_state_dir.empty()) return std::nullopt;
  const auto path = options_.crio_state_dir / id / "userdata" / "config.json";
  auto cached = load_config(path, parse_crio_config);
  if (cached && cached->record) {
    cached->start_time = cached->record->created;
    if (!cached->start_time) cached->start_time = mtime_of(path);
  }
  return cached;
}

RuntimeStateSource::Cached RuntimeStateSource::load(const cgroup::ContainerCgroup& container) {
  // The cgroup's name says which runtime made it (systemd driver); plain ids try both.
  const bool crio_first = container.runtime == cgroup::Runtime::kCrio;
  auto first = crio_first ? load_crio(container.id) : load_containerd(container.id);
  if (first) return std::move(*first);
  auto second = crio_first ? load_containerd(container.id) : load_crio(container.id);
  if (second) return std::move(*second);
  Cached none;
  none.missing = true;
  return none;
}

void RuntimeStateSource::refresh(const cgroup::ScanResult& scan) {
  std::vector<int64_t> stamp;
  for (const auto* dir : {&options_.containerd_state_dir, &options_.crio_state_dir}) {
    struct stat st {};
    const bool present = !dir->empty() && ::stat(dir->c_str(), &st) == 0;
    stamp.insert(stamp.end(), {present ? static_cast<int64_t>(st.st_ino) : 0,
                               present ? st.st_mtim.tv_sec : 0, present ? st.st_mtim.tv_nsec : 0});
  }
  if (stamp != state_dirs_stamp_) {
    std::erase_if(containers_, [](const auto& entry) { return entry.second.missing; });
    state_dirs_stamp_ = std::move(stamp);
  }
  std::unordered_map<std::string, Cached> containers;
  containers.reserve(containers_.size());
  pods_.clear();
  for (const auto& pod : scan.pods) {
    const Cached* sandbox = nullptr;
    const Cached* any = nullptr;
    for (const auto& c : pod.containers) {
      auto old = containers_.find(c.id);
      auto [it, inserted] =
          containers.emplace(c.id, old != containers_.end() ? std::move(old->second) : load(c));
      const Cached& cached = it->second;
      if (!cached.record) continue;
      if (cached.record->is_sandbox && sandbox == nullptr) sandbox = &cached;
      if (any == nullptr) any = &cached;
    }
    const Cached* best = sandbox != nullptr ? sandbox : any;
    if (best == nullptr) continue;
    PodInfo info;
    info.uid = pod.uid;
    info.name = best->record->pod_name.empty() ? pod.uid : best->record->pod_name;
    info.namespace_ = best->record->pod_namespace;
    if (sandbox != nullptr) {
      info.labels = sandbox->record->pod_labels;
      info.start_time = sandbox->start_time;
    }
    pods_.emplace(pod.uid, std::move(info));
  }
  containers_ = std::move(containers);
}

std::optional<PodInfo> RuntimeStateSource::pod(std::string_view pod_uid) const {
  const auto it = pods_.find(std::string(pod_uid));
  if (it == pods_.end()) return std::nullopt;
  return it->second;
}

std::optional<ContainerInfo> RuntimeStateSource::container(std::string_view pod_uid,
                                                           std::string_view container_id) const {
  if (!pods_.contains(std::string(pod_uid))) return std::nullopt;
  const auto it = containers_.find(std::string(container_id));
  if (it == containers_.end() || !it->second.record) return std::nullopt;
  const RuntimeRecord& record = *it->second.record;
  ContainerInfo info;
  info.is_sandbox = record.is_sandbox;
  if (!record.container_name.empty()) {
    info.name = record.container_name;
  } else {
    // containerd names no sandbox; "POD" is what the kubelet and CRI-O call it.
    info.name = record.is_sandbox ? "POD" : std::string(container_id);
  }
  info.start_time = it->second.start_time;
  return info;
}

// ---------------------------------------------------------------------------------------------
// CgroupPathSource

CgroupPathSource::CgroupPathSource(std::filesystem::path hierarchy)
    : hierarchy_(std::move(hierarchy)) {}

void CgroupPathSource::refresh(const cgroup::ScanResult& scan) {
  const auto ctime = [this](const std::string& rel_path) -> std::optional<WallTime> {
    struct stat st {};
    if (::stat((hierarchy_ / rel_path).c_str(), &st) != 0) return std::nullopt;
    return to_wall(st.st_ctim);
  };
  // Reuses what is known for an unchanged inode; stats only new or recreated cgroups.
  const auto known = [&](std::unordered_map<std::string, Known>& before, const std::string& key,
                         const std::string& rel_path, uint64_t inode) {
    const auto it = before.find(key);
    if (it != before.end() && it->second.inode == inode && it->second.ctime) return it->second;
    return Known{inode, ctime(rel_path)};
  };
  std::unordered_map<std::string, Known> pods;
  std::unordered_map<std::string, Known> containers;
  for (const auto& pod : scan.pods) {
    pods.emplace(pod.uid, known(pods_, pod.uid, pod.rel_path, pod.inode));
    for (const auto& c : pod.containers) {
      std::string key = pod.uid + "/" + c.id;
      Known k = known(containers_, key, c.rel_path, c.inode);
      containers.emplace(std::move(key), k);
    }
  }
  pods_ = std::move(pods);
  containers_ = std::move(containers);
}

std::optional<PodInfo> CgroupPathSource::pod(std::string_view pod_uid) const {
  const auto it = pods_.find(std::string(pod_uid));
  if (it == pods_.end()) return std::nullopt;
  PodInfo info;
  info.uid = it->first;
  info.name = it->first;
  info.start_time = it->second.ctime;
  return info;
}

std::optional<ContainerInfo> CgroupPathSource::container(std::string_view pod_uid,
                                                         std::string_view container_id) const {
  std::string key;
  key.reserve(pod_uid.size() + 1 + container_id.size());
  key.append(pod_uid).append("/").append(container_id);
  const auto it = containers_.find(key);
  if (it == containers_.end()) return std::nullopt;
  ContainerInfo info;
  info.name = std::string(container_id);
  info.start_time = it->second.ctime;
  return info;
}

}  // namespace nodemeter::agent
