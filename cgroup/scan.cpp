#include "cgroup/scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <span>
#include <tuple>
#include <utility>

namespace nodemeter::cgroup {

const char* to_string(QosClass qos) {
  switch (qos) {
    case QosClass::kGuaranteed:
      return "Guaranteed";
    case QosClass::kBurstable:
      return "Burstable";
    case QosClass::kBestEffort:
      return "BestEffort";
  }
  return "BestEffort";
}

const char* to_string(Runtime runtime) {
  switch (runtime) {
    case Runtime::kContainerd:
      return "containerd";
    case Runtime::kCrio:
      return "cri-o";
    case Runtime::kDocker:
      return "docker";
    case Runtime::kUnknown:
      return "unknown";
  }
  return "unknown";
}

namespace {

constexpr std::string_view kSlice = ".slice";
constexpr std::string_view kScope = ".scope";

bool is_lower_hex_digit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

bool is_lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), is_lower_hex_digit);
}

bool is_container_id(std::string_view s) {
  return s.size() == 64 && is_lower_hex(s);
}

// A pod UID as the kubelet writes it into a cgroup name: a UUID whose dashes are `sep` ('-' for
// cgroupfs, '_' for systemd, which reserves '-' for slice nesting), or the 32-hex UID the kubelet
// gives static pods. Returns the canonical form: dashes, or the 32 hex digits as they are.
std::optional<std::string> parse_pod_uid(std::string_view s, char sep) {
  if (s.size() == 32) {
    if (!is_lower_hex(s)) return std::nullopt;
    return std::string(s);
  }
  if (s.size() != 36) return std::nullopt;
  std::string uid(s);
  for (size_t i = 0; i < uid.size(); ++i) {
    const bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_position) {
      if (uid[i] != sep) return std::nullopt;
      uid[i] = '-';
    } else if (!is_lower_hex_digit(uid[i])) {
      return std::nullopt;
    }
  }
  return uid;
}

// "kubepods", or "<root>-kubepods" when the kubelet runs with --cgroup-root (systemd names).
bool is_kubepods_stem(std::string_view stem) {
  return stem == "kubepods" || stem.ends_with("-kubepods");
}

std::optional<std::string_view> slice_stem(std::string_view name) {
  if (!name.ends_with(kSlice) || name.size() == kSlice.size()) return std::nullopt;
  name.remove_suffix(kSlice.size());
  return name;
}

struct PodMatch {
  std::string uid;
  QosClass qos;
};

// Whether `name` is a pod cgroup given the segments above it (nearest last).
std::optional<PodMatch> match_pod(std::span<const std::string_view> parents,
                                  std::string_view name) {
  if (parents.empty()) return std::nullopt;
  const std::string_view parent = parents.back();
  const std::string_view grandparent =
      parents.size() >= 2 ? parents[parents.size() - 2] : std::string_view{};

  // cgroupfs driver: kubepods/pod<uid>, kubepods/{burstable,besteffort}/pod<uid>.
  if (name.starts_with("pod") && !name.ends_with(kSlice)) {
    auto uid = parse_pod_uid(name.substr(3), '-');
    if (!uid) return std::nullopt;
    if (parent == "kubepods") return PodMatch{std::move(*uid), QosClass::kGuaranteed};
    if (grandparent == "kubepods") {
      if (parent == "burstable") return PodMatch{std::move(*uid), QosClass::kBurstable};
      if (parent == "besteffort") return PodMatch{std::move(*uid), QosClass::kBestEffort};
    }
    return std::nullopt;
  }

  // systemd driver: every slice's name repeats its parent's: kubepods.slice/
  // kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice.
  const auto stem = slice_stem(name);
  const auto parent_stem = slice_stem(parent);
  if (!stem || !parent_stem) return std::nullopt;
  if (!stem->starts_with(*parent_stem) || stem->substr(parent_stem->size(), 4) != "-pod") {
    return std::nullopt;
  }
  auto uid = parse_pod_uid(stem->substr(parent_stem->size() + 4), '_');
  if (!uid) return std::nullopt;
  if (is_kubepods_stem(*parent_stem)) return PodMatch{std::move(*uid), QosClass::kGuaranteed};
  for (const auto& [suffix, qos] :
       {std::pair{std::string_view{"-burstable"}, QosClass::kBurstable},
        std::pair{std::string_view{"-besteffort"}, QosClass::kBestEffort}}) {
    if (!parent_stem->ends_with(suffix)) continue;
    const std::string_view base = parent_stem->substr(0, parent_stem->size() - suffix.size());
    const auto grandparent_stem = slice_stem(grandparent);
    if (is_kubepods_stem(base) && grandparent_stem && *grandparent_stem == base) {
      return PodMatch{std::move(*uid), qos};
    }
  }
  return std::nullopt;
}

struct ContainerMatch {
  std::string id;
  Runtime runtime;
};

// A container leaf inside a pod cgroup. systemd scopes name the runtime; cgroupfs leaves are the
// bare id (containerd, Docker) or crio-<id> (CRI-O's cgroupfs manager). conmon scopes and
// anything else are not containers.
std::optional<ContainerMatch> match_container(std::string_view name) {
  if (name.ends_with(kScope)) {
    name.remove_suffix(kScope.size());
    if (name.starts_with("crio-conmon-")) return std::nullopt;
    constexpr std::array<std::pair<std::string_view, Runtime>, 3> kPrefixes{{
        {"cri-containerd-", Runtime::kContainerd},
        {"crio-", Runtime::kCrio},
        {"docker-", Runtime::kDocker},
    }};
    for (const auto& [prefix, runtime] : kPrefixes) {
      if (name.starts_with(prefix) && is_container_id(name.substr(prefix.size()))) {
        return ContainerMatch{std::string(name.substr(prefix.size())), runtime};
      }
    }
    return std::nullopt;
  }
  if (is_container_id(name)) return ContainerMatch{std::string(name), Runtime::kUnknown};
  if (name.starts_with("crio-") && is_container_id(name.substr(5))) {
    return ContainerMatch{std::string(name.substr(5)), Runtime::kCrio};
  }
  return std::nullopt;
}

// Splits a relative path into segments; nullopt for an empty path or an empty segment ("a//b").
// Leading and trailing slashes are tolerated.
std::optional<std::vector<std::string_view>> split_path(std::string_view path) {
  while (path.starts_with('/'))
    path.remove_prefix(1);
  while (path.ends_with('/'))
    path.remove_suffix(1);
  if (path.empty()) return std::nullopt;
  std::vector<std::string_view> segments;
  while (true) {
    const auto slash = path.find('/');
    const std::string_view segment = path.substr(0, slash);
    if (segment.empty()) return std::nullopt;
    segments.push_back(segment);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return segments;
}

// An owned directory stream; the descriptor it was made from belongs to it.
class Dir {
 public:
  // Opens `name` relative to `parent_fd` (AT_FDCWD for an absolute or cwd-relative path) without
  // following a final symlink. Fails (empty) on any error: the walk skips what it cannot open.
  static Dir open(int parent_fd, const char* name) {
    const int fd = ::openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return Dir{nullptr};
    DIR* dir = ::fdopendir(fd);
    if (dir == nullptr) ::close(fd);
    return Dir{dir};
  }
  Dir(Dir&& other) noexcept : dir_(std::exchange(other.dir_, nullptr)) {}
  Dir& operator=(Dir&&) = delete;
  ~Dir() {
    if (dir_ != nullptr) ::closedir(dir_);
  }

  explicit operator bool() const { return dir_ != nullptr; }
  int fd() const { return ::dirfd(dir_); }
  uint64_t inode() const {
    struct stat st {};
    return ::fstat(fd(), &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
  }

  // Calls on_dir(name) for each entry that may be a directory ("." and ".." excluded). A read
  // error ends the listing: whatever vanished is simply not there this pass.
  template <class OnDir>
  void for_each_dir(OnDir&& on_dir) {
    while (const dirent* entry = ::readdir(dir_)) {
      if (entry->d_type != DT_DIR && entry->d_type != DT_UNKNOWN) continue;
      const std::string_view name = entry->d_name;
      if (name == "." || name == "..") continue;
      on_dir(name);
    }
  }

 private:
  explicit Dir(DIR* dir) : dir_(dir) {}
  DIR* dir_;
};

// The inode of the directory `name` in parent_fd, or 0 when it is gone or not a directory.
uint64_t dir_inode(int parent_fd, const std::string& name) {
  struct stat st {};
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return 0;
  if (!S_ISDIR(st.st_mode)) return 0;
  return static_cast<uint64_t>(st.st_ino);
}

std::string join(std::string_view a, std::string_view b) {
  std::string out;
  out.reserve(a.size() + 1 + b.size());
  out.append(a).append("/").append(b);
  return out;
}

// Finds the kubepods directory: at the root, or one level down where the kubelet runs with
// --cgroup-root (kubelet/kubepods, kubelet.slice/kubelet-kubepods.slice).
std::optional<std::pair<std::string, Dir>> find_kubepods(Dir& root) {
  for (const char* name : {"kubepods.slice", "kubepods"}) {
    if (Dir dir = Dir::open(root.fd(), name)) return std::pair{std::string(name), std::move(dir)};
  }
  std::optional<std::pair<std::string, Dir>> found;
  root.for_each_dir([&](std::string_view name) {
    if (found) return;
    const std::string parent(name);
    std::vector<std::string> candidates{"kubepods"};
    if (const auto stem = slice_stem(name))
      candidates.push_back(std::string(*stem) + "-kubepods.slice");
    Dir parent_dir = Dir::open(root.fd(), parent.c_str());
    if (!parent_dir) return;
    for (const auto& candidate : candidates) {
      if (Dir dir = Dir::open(parent_dir.fd(), candidate.c_str())) {
        found.emplace(join(parent, candidate), std::move(dir));
        return;
      }
    }
  });
  return found;
}

bool is_qos_dir(std::string_view kubepods_name, std::string_view name) {
  if (const auto stem = slice_stem(kubepods_name)) {
    if (!name.starts_with(*stem)) return false;
    const std::string_view rest = name.substr(stem->size());
    return rest == "-burstable.slice" || rest == "-besteffort.slice";
  }
  return name == "burstable" || name == "besteffort";
}

// Adds the pod cgroup `name` in parent (already known to parse as a pod) with its containers.
void add_pod(Dir& parent, std::string_view name, std::string rel_path, PodMatch pod,
             std::vector<PodCgroup>& pods) {
  const std::string name_str(name);
  Dir dir = Dir::open(parent.fd(), name_str.c_str());
  if (!dir) return;
  const uint64_t inode = dir.inode();
  if (inode == 0) return;
  PodCgroup out{std::move(pod.uid), pod.qos, std::move(rel_path), inode, {}};
  dir.for_each_dir([&](std::string_view child) {
    auto container = match_container(child);
    if (!container) return;
    const std::string child_str(child);
    const uint64_t child_inode = dir_inode(dir.fd(), child_str);
    if (child_inode == 0) return;
    out.containers.push_back(ContainerCgroup{std::move(container->id), container->runtime,
                                             join(out.rel_path, child), child_inode});
  });
  std::sort(out.containers.begin(), out.containers.end(), [](const auto& a, const auto& b) {
    return std::tie(a.id, a.rel_path) < std::tie(b.id, b.rel_path);
  });
  pods.push_back(std::move(out));
}

// Lists `dir` (at rel_path, whose segments are `segments`) for pod cgroups.
void collect_pods(Dir& dir, const std::string& rel_path, std::vector<std::string_view> segments,
                  std::vector<PodCgroup>& pods) {
  dir.for_each_dir([&](std::string_view name) {
    auto pod = match_pod(segments, name);
    if (!pod) return;
    add_pod(dir, name, join(rel_path, name), std::move(*pod), pods);
  });
}

}  // namespace

std::optional<PathIdentity> parse_cgroup_path(std::string_view rel_path) {
  const auto segments = split_path(rel_path);
  if (!segments) return std::nullopt;
  const std::span<const std::string_view> all(*segments);
  for (size_t i = 0; i < all.size(); ++i) {
    auto pod = match_pod(all.first(i), all[i]);
    if (!pod) continue;
    PathIdentity identity{std::move(pod->uid), pod->qos, std::nullopt, Runtime::kUnknown};
    const size_t below = all.size() - i - 1;
    if (below == 0) return identity;
    if (below > 1) return std::nullopt;  // deeper cgroups inside a container
    auto container = match_container(all.back());
    if (!container) return std::nullopt;
    identity.container_id = std::move(container->id);
    identity.runtime = container->runtime;
    return identity;
  }
  return std::nullopt;
}

ScanResult scan(const Layout& layout) {
  ScanResult result;
  Dir root = Dir::open(AT_FDCWD, layout.primary().c_str());
  if (!root) return result;
  auto kubepods = find_kubepods(root);
  if (!kubepods) return result;
  // Plain references, not a structured binding: the lambda below captures them, which clang
  // (the fuzz build) accepts for bindings only from version 16.
  const std::string& kubepods_rel = kubepods->first;
  Dir& kubepods_dir = kubepods->second;
  result.kubepods_rel_path = kubepods_rel;

  const auto kubepods_segments = split_path(kubepods_rel);
  if (!kubepods_segments) return result;
  const std::string_view kubepods_name = kubepods_segments->back();

  std::vector<std::string> qos_dirs;
  kubepods_dir.for_each_dir([&](std::string_view name) {
    if (auto pod = match_pod(*kubepods_segments, name)) {
      add_pod(kubepods_dir, name, join(kubepods_rel, name), std::move(*pod), result.pods);
    } else if (is_qos_dir(kubepods_name, name)) {
      qos_dirs.emplace_back(name);
    }
  });
  for (const auto& qos : qos_dirs) {
    Dir qos_dir = Dir::open(kubepods_dir.fd(), qos.c_str());
    if (!qos_dir) continue;
    auto segments = *kubepods_segments;
    segments.push_back(qos);
    collect_pods(qos_dir, join(kubepods_rel, qos), std::move(segments), result.pods);
  }

  std::sort(result.pods.begin(), result.pods.end(), [](const auto& a, const auto& b) {
    return std::tie(a.uid, a.rel_path) < std::tie(b.uid, b.rel_path);
  });
  return result;
}

}  // namespace nodemeter::cgroup
