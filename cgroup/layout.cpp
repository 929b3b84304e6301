#include "cgroup/layout.h"

#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <system_error>

#include "cgroup/parse.h"

namespace nodemeter::cgroup {
namespace fs = std::filesystem;

namespace {

bool is_octal_digit(char c) {
  return c >= '0' && c <= '7';
}

// proc(5) escapes space, tab, newline and backslash in mountinfo paths as \ooo. A backslash not
// followed by three octal digits is kept as it is.
std::string decode_octal_escapes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && is_octal_digit(s[i + 1]) && is_octal_digit(s[i + 2]) &&
        is_octal_digit(s[i + 3]) && s[i + 1] <= '3') {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
      continue;
    }
    out.push_back(s[i]);
  }
  return out;
}

// Splits a mountinfo line into its space-separated fields (the kernel separates them by one space).
std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  while (!line.empty()) {
    const auto sp = line.find(' ');
    if (sp != 0) fields.push_back(line.substr(0, sp));
    if (sp == std::string_view::npos) break;
    line.remove_prefix(sp + 1);
  }
  return fields;
}

enum class ReadStatus { kOk, kMissing, kError };

// Reads a whole (possibly size-0 procfs) file.
ReadStatus read_file(const fs::path& path, std::string& out, int& err) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err = errno;
    return err == ENOENT || err == ENOTDIR ? ReadStatus::kMissing : ReadStatus::kError;
  }
  std::array<char, 16384> buf;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      ::close(fd);
      return ReadStatus::kError;
    }
    if (n == 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return ReadStatus::kOk;
}

// True when path is base or lies under it (both lexically normal and absolute).
bool is_at_or_under(const fs::path& path, const fs::path& base) {
  auto p = path.begin();
  for (auto b = base.begin(); b != base.end(); ++b, ++p) {
    if (b->empty()) continue;  // a trailing separator in base
    if (p == path.end() || *p != *b) return false;
  }
  return true;
}

bool has_option(std::string_view options, std::string_view name) {
  while (!options.empty()) {
    const auto comma = options.find(',');
    if (options.substr(0, comma) == name) return true;
    if (comma == std::string_view::npos) break;
    options.remove_prefix(comma + 1);
  }
  return false;
}

// The v1 controllers nodemeter reads, and where each was found.
struct V1Controllers {
  fs::path cpu, cpuacct, memory, blkio, pids;

  bool any() const {
    return !cpu.empty() || !cpuacct.empty() || !memory.empty() || !blkio.empty() || !pids.empty();
  }
};

std::string root_prefix(const fs::path& cgroup_root) {
  return "--cgroup-root " + cgroup_root.string() + ": ";
}

std::string not_a_hierarchy(const fs::path& cgroup_root) {
  return root_prefix(cgroup_root) +
         "not a cgroup v1 or v2 hierarchy (no cgroup.controllers and no cpuacct/memory "
         "controller directories)";
}

boost::system::result<Layout, std::string> v1_layout(const fs::path& cgroup_root,
                                                     const V1Controllers& c, bool hybrid) {
  if (c.cpuacct.empty() || c.memory.empty()) {
    const char* missing = c.cpuacct.empty() && c.memory.empty() ? "cpuacct and memory controllers"
                          : c.cpuacct.empty()                   ? "cpuacct controller"
                                                                : "memory controller";
    return root_prefix(cgroup_root) + "cgroup v1 hierarchy without the " + missing;
  }
  Layout layout;
  layout.mode = hybrid ? Mode::kHybrid : Mode::kV1;
  layout.root = cgroup_root;
  layout.cpu = c.cpu;
  layout.cpuacct = c.cpuacct;
  layout.memory = c.memory;
  layout.blkio = c.blkio;
  layout.pids = c.pids;
  return layout;
}

Layout v2_layout(const fs::path& cgroup_root) {
  Layout layout;
  layout.mode = Mode::kV2;
  layout.root = cgroup_root;
  layout.cpu = layout.cpuacct = layout.memory = layout.blkio = layout.pids = cgroup_root;
  return layout;
}

// From mountinfo: the cgroup mounts at or under canonical_root. Returns nullopt when there are
// none (a plain directory), so the directory's files decide.
std::optional<boost::system::result<Layout, std::string>> layout_from_mounts(
    const fs::path& cgroup_root, const fs::path& canonical_root,
    const std::vector<MountInfo>& mounts) {
  // A later mount on the same point hides the earlier one.
  std::map<fs::path, const MountInfo*> visible;
  for (const MountInfo& m : mounts) {
    const fs::path point = fs::path(m.mount_point).lexically_normal();
    if (point.is_absolute() && is_at_or_under(point, canonical_root)) visible[point] = &m;
  }
  V1Controllers c;
  bool v1_root_mount[5] = {};  // whether each controller's chosen mount shows its whole hierarchy
  bool cgroup2_at_root = false, cgroup2_below = false, any_v1 = false;
  for (const auto& [point, m] : visible) {
    const fs::path rel = point.lexically_relative(canonical_root);
    const bool at_root = rel.empty() || rel == ".";
    if (m->fs_type == "cgroup2") {
      (at_root ? cgroup2_at_root : cgroup2_below) = true;
      continue;
    }
    if (m->fs_type != "cgroup") continue;
    any_v1 = true;
    const fs::path dir = at_root ? cgroup_root : cgroup_root / rel;
    // One hierarchy may be mounted twice (bind mounts); prefer the mount of its whole tree.
    const bool whole = m->root == "/";
    fs::path* slots[] = {&c.cpu, &c.cpuacct, &c.memory, &c.blkio, &c.pids};
    const char* names[] = {"cpu", "cpuacct", "memory", "blkio", "pids"};
    for (size_t i = 0; i < std::size(slots); ++i) {
      if (!has_option(m->super_options, names[i])) continue;
      if (slots[i]->empty() || (whole && !v1_root_mount[i])) {
        *slots[i] = dir;
        v1_root_mount[i] = whole;
      }
    }
  }
  if (cgroup2_at_root) return v2_layout(cgroup_root);
  if (!any_v1 && !cgroup2_below) return std::nullopt;
  if (!c.any()) return boost::system::result<Layout, std::string>(not_a_hierarchy(cgroup_root));
  return v1_layout(cgroup_root, c, cgroup2_below);
}

bool is_regular(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

// The first candidate directory under root (symlinks followed) holding one of the marker files.
// Co-mounted names come first, so that cpu and cpuacct share one directory when systemd's
// cpu -> cpu,cpuacct links exist beside it.
fs::path find_controller_dir(const fs::path& root, std::initializer_list<const char*> candidates,
                             std::initializer_list<const char*> markers) {
  for (const char* name : candidates) {
    const fs::path dir = root / name;
    if (!is_dir(dir)) continue;
    if (markers.size() == 0) return dir;
    for (const char* marker : markers) {
      if (is_regular(dir / marker)) return dir;
    }
  }
  return {};
}

boost::system::result<Layout, std::string> layout_from_directory(const fs::path& cgroup_root) {
  if (is_regular(cgroup_root / "cgroup.controllers")) return v2_layout(cgroup_root);
  V1Controllers c;
  c.cpuacct = find_controller_dir(cgroup_root, {"cpu,cpuacct", "cpuacct,cpu", "cpuacct"},
                                  {"cpuacct.usage", "cpuacct.stat"});
  c.memory = find_controller_dir(cgroup_root, {"memory"}, {"memory.usage_in_bytes", "memory.stat"});
  c.cpu = find_controller_dir(cgroup_root, {"cpu,cpuacct", "cpuacct,cpu", "cpu"},
                              {"cpu.shares", "cpu.stat", "cpu.cfs_period_us"});
  c.blkio = find_controller_dir(cgroup_root, {"blkio"}, {});
  c.pids = find_controller_dir(cgroup_root, {"pids"}, {});
  if (c.cpuacct.empty() && c.memory.empty()) return not_a_hierarchy(cgroup_root);
  const bool hybrid = is_regular(cgroup_root / "unified" / "cgroup.controllers");
  return v1_layout(cgroup_root, c, hybrid);
}

}  // namespace

const char* to_string(Mode mode) {
  switch (mode) {
    case Mode::kV1:
      return "v1";
    case Mode::kV2:
      return "v2";
    case Mode::kHybrid:
      return "hybrid";
  }
  return "v2";
}

ParseResult<std::vector<MountInfo>> parse_mountinfo(std::string_view text) {
  std::vector<MountInfo> mounts;
  std::string_view line;
  while (next_line(text, line)) {
    std::string_view trimmed = line;
    while (!trimmed.empty() && (trimmed.back() == '\r' || trimmed.back() == ' ')) {
      trimmed.remove_suffix(1);
    }
    if (trimmed.empty()) continue;
    const std::vector<std::string_view> fields = split_fields(trimmed);
    const auto sep = std::find(fields.begin(), fields.end(), std::string_view("-"));
    if (sep == fields.end()) return make_parse_error("mountinfo line has no ' - ' separator", line);
    // Before the separator: id, parent id, major:minor, root, mount point, options, optional
    // fields; after it: fs type, source, super options.
    if (sep - fields.begin() < 6) {
      return make_parse_error("mountinfo line has fewer than 6 fields before ' - '", line);
    }
    if (fields.end() - sep < 4) {
      return make_parse_error("mountinfo line has fewer than 3 fields after ' - '", line);
    }
    if (!parse_u64_token(fields[0]) || !parse_u64_token(fields[1])) {
      return make_parse_error("mountinfo mount id is not a number", line);
    }
    if (fields[2].find(':') == std::string_view::npos) {
      return make_parse_error("mountinfo device is not major:minor", line);
    }
    MountInfo m;
    m.root = decode_octal_escapes(fields[3]);
    m.mount_point = decode_octal_escapes(fields[4]);
    m.fs_type = decode_octal_escapes(sep[1]);
    m.super_options = decode_octal_escapes(sep[3]);
    mounts.push_back(std::move(m));
  }
  return mounts;
}

boost::system::result<Layout, std::string> detect_layout(const fs::path& cgroup_root,
                                                         const fs::path& proc_root) {
  std::error_code ec;
  const fs::file_status status = fs::status(cgroup_root, ec);
  if (ec || !fs::exists(status)) {
    return root_prefix(cgroup_root) + "no such directory";
  }
  if (!fs::is_directory(status)) return root_prefix(cgroup_root) + "not a directory";
  const fs::path canonical_root = fs::canonical(cgroup_root, ec);
  if (ec) return root_prefix(cgroup_root) + ec.message();

  const fs::path mountinfo_path = proc_root / "self" / "mountinfo";
  std::string text;
  int err = 0;
  switch (read_file(mountinfo_path, text, err)) {
    case ReadStatus::kMissing:
      break;
    case ReadStatus::kError:
      return "--proc-root " + proc_root.string() + ": " + mountinfo_path.string() + ": " +
             std::strerror(err);
    case ReadStatus::kOk: {
      auto mounts = parse_mountinfo(text);
      if (!mounts) {
        return "--proc-root " + proc_root.string() + ": " + mountinfo_path.string() + ": " +
               mounts.error().message + ": " + mounts.error().line;
      }
      if (auto layout = layout_from_mounts(cgroup_root, canonical_root, *mounts)) {
        return std::move(*layout);
      }
      break;
    }
  }
  return layout_from_directory(cgroup_root);
}

}  // namespace nodemeter::cgroup
