// Where this host's cgroups live: the mode (v1, v2 or hybrid) and, for v1, each controller's
// mount point. Works on a real /sys/fs/cgroup (from mountinfo) and on a plain directory laid out
// like one (detected by its files), which is how tests and fixture roots work.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "cgroup/error.h"

namespace nodemeter::cgroup {

enum class Mode {
  kV1,      // every controller on its own (or a co-mounted) cgroup v1 hierarchy
  kV2,      // the unified hierarchy only
  kHybrid,  // v1 controllers plus an empty cgroup2 at unified/; read as v1
};
const char* to_string(Mode mode);

struct Layout {
  Mode mode = Mode::kV2;
  std::filesystem::path root;  // --cgroup-root as given
  // The hierarchy directory holding each controller's files. On v2 all of them are `root`.
  // On v1 they are the mount points (e.g. root/cpu,cpuacct and root/memory); co-mounted
  // controllers share one directory.
  std::filesystem::path cpu;
  std::filesystem::path cpuacct;
  std::filesystem::path memory;
  std::filesystem::path blkio;  // empty when absent
  std::filesystem::path pids;   // empty when absent

  bool is_v2() const { return mode == Mode::kV2; }
  // The hierarchy the scanner walks and whose directory inodes identify cgroups.
  const std::filesystem::path& primary() const { return is_v2() ? root : memory; }
};

// One line of /proc/<pid>/mountinfo (proc(5)).
struct MountInfo {
  std::string mount_point;    // field 5, octal escapes (\040) decoded
  std::string root;           // field 4: the root of the mount within its filesystem
  std::string fs_type;        // after " - "
  std::string super_options;  // e.g. "rw,cpu,cpuacct" — v1 controllers are listed here
};
ParseResult<std::vector<MountInfo>> parse_mountinfo(std::string_view text);

// Decides the layout of cgroup_root. Mount points come from <proc_root>/self/mountinfo where it
// lists cgroup mounts under cgroup_root; otherwise the directory's own files decide:
//   cgroup.controllers at the root                  -> v2
//   controller directories (cpu, cpuacct or cpu,cpuacct, memory) -> v1; with unified/ -> hybrid
// A root that holds neither is an error whose message names the path.
boost::system::result<Layout, std::string> detect_layout(const std::filesystem::path& cgroup_root,
                                                         const std::filesystem::path& proc_root);

}  // namespace nodemeter::cgroup
