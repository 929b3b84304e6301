// Reads CPU, memory and pressure of many cgroups per pass, fast: each file kind is read across all
// cgroups in turn, through descriptors kept open and re-read with pread(fd, ..., 0), which returns
// fresh values on cgroupfs. Descriptors of cgroups that disappear or are recreated (new inode) are
// dropped. No clock, no threads: the caller decides when a pass happens and what to tolerate.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cgroup/error.h"
#include "cgroup/layout.h"
#include "cgroup/types.h"

namespace nodemeter::cgroup {

// Every file the reader may read; file_name() gives the name used in self-metric labels.
enum class FileKind : uint8_t {
  kCpuacctUsage,       // v1 cpuacct.usage
  kCpuacctStat,        // v1 cpuacct.stat
  kCpuStat,            // v1 and v2 cpu.stat
  kMemoryUsage,        // v1 memory.usage_in_bytes, v2 memory.current
  kMemoryStat,         // memory.stat
  kMemoryEvents,       // v2 memory.events
  kMemoryOomControl,   // v1 memory.oom_control
  kMemoryFailcnt,      // v1 memory.failcnt
  kMemoryLimit,        // v1 memory.limit_in_bytes, v2 memory.max
  kMemorySwapCurrent,  // v2 memory.swap.current
  kMemorySwapLimit,    // v1 memory.memsw.limit_in_bytes, v2 memory.swap.max
  kCpuPressure,        // v2 cpu.pressure
  kMemoryPressure,     // v2 memory.pressure
  kIoPressure,         // v2 io.pressure
  kProcStat,           // <proc>/stat (node CPU where the root has no cpu.stat)
  kProcMeminfo,        // <proc>/meminfo (node memory where the root has no memory.stat)
};
inline constexpr size_t kFileKindCount = 16;
// The file's name on this layout, e.g. "memory.current" on v2, "memory.usage_in_bytes" on v1.
const char* file_name(FileKind kind, Mode mode);

struct CgroupTarget {
  std::string rel_path;  // relative to each hierarchy root
  uint64_t inode = 0;    // identity; a different inode than last pass means a new cgroup
};

struct ReadOptions {
  bool pressure = true;  // read PSI files on v2
  bool limits = true;    // read limit files (they rarely change; callers may read them less often)
};

struct CgroupSample {
  ReadResult<CpuUsage> cpu{ReadError{}};
  ReadResult<MemoryUsage> memory{ReadError{}};
  Pressure pressure;  // each part absent where unsupported or unreadable
  // Non-fatal errors met while reading optional parts (pressure, limits, events). A gone cgroup
  // shows as cpu/memory errors of kind kGone.
  std::vector<ReadError> errors;
};

struct NodeSample {
  ReadResult<CpuUsage> cpu{ReadError{}};
  ReadResult<MemoryUsage> memory{ReadError{}};  // limit_bytes = MemTotal; swap from /proc/meminfo
  Pressure pressure;
  std::vector<ReadError> errors;
};

// Told about every file read, for self metrics. elapsed covers open (if any) + read + parse.
class ReadObserver {
 public:
  virtual ~ReadObserver() = default;
  virtual void on_file_read(FileKind kind, std::chrono::nanoseconds elapsed,
                            const ReadError* error) = 0;
};

class CgroupReader {
 public:
  CgroupReader(Layout layout, std::filesystem::path proc_root, ReadObserver* observer = nullptr);
  ~CgroupReader();
  CgroupReader(const CgroupReader&) = delete;
  CgroupReader& operator=(const CgroupReader&) = delete;

  // One sample per target, in the order given. Closes the descriptors of cgroups not in targets.
  std::vector<CgroupSample> read(std::span<const CgroupTarget> targets, const ReadOptions& options);

  // The node: v1 root cpuacct.usage and usage - total_inactive_file; v2 root cpu.stat and
  // memory.stat (anon + file - inactive_file), /proc/stat and /proc/meminfo where those are absent.
  NodeSample read_node(const ReadOptions& options);

  size_t open_descriptors() const;
  const Layout& layout() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads a whole small file (open + read + close); for one-off reads such as limits at start.
ReadResult<std::string> read_file(const std::filesystem::path& path);

// Maps an errno to an error kind: ENOENT, ENODEV, ESRCH -> kGone; EOPNOTSUPP -> kUnsupported.
ReadErrorKind classify_errno(int err);

}  // namespace nodemeter::cgroup
