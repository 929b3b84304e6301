#include "cgroup/reader.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "cgroup/parse.h"

namespace nodemeter::cgroup {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t idx(FileKind kind) {
  return static_cast<size_t>(kind);
}

// A file kind's descriptor for one cgroup. `absent` remembers, for this cgroup identity, that an
// optional file does not exist (or the kernel refuses it), so it is not tried again every pass.
struct Slot {
  int fd = -1;
  bool absent = false;

  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  void reset() {
    close();
    absent = false;
  }
};

// Which result a file kind feeds.
enum class Part : uint8_t { kCpu, kMemory, kPressure };

Part part_of(FileKind kind) {
  switch (kind) {
    case FileKind::kCpuacctUsage:
    case FileKind::kCpuacctStat:
    case FileKind::kCpuStat:
    case FileKind::kProcStat:
      return Part::kCpu;
    case FileKind::kCpuPressure:
    case FileKind::kMemoryPressure:
    case FileKind::kIoPressure:
      return Part::kPressure;
    default:
      return Part::kMemory;
  }
}

// The files without which a cgroup's CPU or memory cannot be reported; any other file only adds
// optional fields and its failures go to CgroupSample::errors.
bool required(FileKind kind, bool v2) {
  switch (kind) {
    case FileKind::kCpuacctUsage:
      return !v2;
    case FileKind::kCpuStat:
      return v2;
    case FileKind::kMemoryUsage:
    case FileKind::kMemoryStat:
      return true;
    default:
      return false;
  }
}

std::string errno_message(int err) {
  return std::strerror(err);
}

ReadError make_errno_error(int err, std::string_view path) {
  return ReadError{classify_errno(err), std::string(path), errno_message(err), err};
}

ReadError make_parse_read_error(const ParseError& pe, std::string_view path) {
  std::string message = pe.message;
  if (!pe.line.empty()) {
    message += " in line \"";
    message += pe.line;
    message += '"';
  }
  return ReadError{ReadErrorKind::kParse, std::string(path), std::move(message), 0};
}

// Reads the whole file behind fd from offset 0 into buf, which grows as needed and is reused.
// Every file read here (cgroupfs/kernfs, /proc/stat, /proc/meminfo, /proc/pressure/*) is produced
// as one seq_file record, so a short read means end of file. Returns the size or -errno.
ssize_t pread_whole(int fd, std::string& buf) {
  if (buf.size() < 4096) buf.resize(4096);
  size_t total = 0;
  for (;;) {
    const ssize_t n =
        ::pread(fd, buf.data() + total, buf.size() - total, static_cast<off_t>(total));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    total += static_cast<size_t>(n);
    if (n == 0 || total < buf.size()) return static_cast<ssize_t>(total);
    buf.resize(buf.size() * 2);
  }
}

bool dir_exists(std::string_view file_path) {
  const auto slash = file_path.rfind('/');
  const std::string dir(slash == std::string_view::npos ? std::string_view(".")
                        : slash == 0                    ? std::string_view("/")
                                                        : file_path.substr(0, slash));
  struct stat st {};
  return ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Opens path read-only. A missing file in a directory that exists is "not offered here"
// (kUnsupported); a missing directory means the cgroup is gone.
int open_file(const std::string& path, ReadError& error) {
  for (;;) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) return fd;
    const int err = errno;
    if (err == EINTR) continue;
    error = make_errno_error(err, path);
    if (err == ENOENT && dir_exists(path)) {
      error.kind = ReadErrorKind::kUnsupported;
      error.message = "file does not exist";
    }
    return -1;
  }
}

bool checked_usec_to_ns(uint64_t usec, uint64_t& ns) {
  if (usec > std::numeric_limits<uint64_t>::max() / 1000) return false;
  ns = usec * 1000;
  return true;
}

ParseResult<void> usec_field(std::optional<uint64_t> usec, std::string_view key,
                             std::optional<uint64_t>& out_ns) {
  if (!usec) return {};
  uint64_t ns = 0;
  if (!checked_usec_to_ns(*usec, ns)) {
    return make_parse_error(std::string(key) + " out of range in nanoseconds",
                            std::string(key) + " " + std::to_string(*usec));
  }
  out_ns = ns;
  return {};
}

// cpu.stat of v1 (the cpu controller's bandwidth statistics) or v2 (usage and bandwidth).
ParseResult<void> apply_cpu_stat(std::string_view text, bool v2, CpuUsage& cpu) {
  std::optional<uint64_t> usage_usec, user_usec, system_usec, nr_periods, nr_throttled,
      throttled_usec, throttled_time;
  auto r = parse_flat_keyed(text, [&](std::string_view key, uint64_t value) {
    if (key == "usage_usec") {
      usage_usec = value;
    } else if (key == "user_usec") {
      user_usec = value;
    } else if (key == "system_usec") {
      system_usec = value;
    } else if (key == "nr_periods") {
      nr_periods = value;
    } else if (key == "nr_throttled") {
      nr_throttled = value;
    } else if (key == "throttled_usec") {
      throttled_usec = value;
    } else if (key == "throttled_time") {
      throttled_time = value;
    }
  });
  if (!r) return r;
  cpu.periods = nr_periods;
  cpu.throttled_periods = nr_throttled;
  if (!v2) {
    cpu.throttled_ns = throttled_time;
    return {};
  }
  if (!usage_usec) return make_parse_error("no usage_usec in cpu.stat", "");
  std::optional<uint64_t> usage_ns;
  if (auto u = usec_field(usage_usec, "usage_usec", usage_ns); !u) return u;
  cpu.cumulative_ns = *usage_ns;
  if (auto u = usec_field(user_usec, "user_usec", cpu.user_ns); !u) return u;
  if (auto u = usec_field(system_usec, "system_usec", cpu.system_ns); !u) return u;
  return usec_field(throttled_usec, "throttled_usec", cpu.throttled_ns);
}

// The memory.stat fields a sample needs; v1 hierarchical totals, v2 the cgroup's own (recursive)
// ones.
struct MemoryStat {
  std::optional<uint64_t> inactive_file;
  std::optional<uint64_t> rss;    // v1 total_rss, v2 anon
  std::optional<uint64_t> cache;  // v1 total_cache, v2 file
  std::optional<uint64_t> swap;   // v1 total_swap
  std::optional<uint64_t> pgfault;
  std::optional<uint64_t> pgmajfault;
};

ParseResult<void> parse_memory_stat(std::string_view text, bool v2, MemoryStat& out) {
  out = MemoryStat{};
  if (v2) {
    return parse_flat_keyed(text, [&](std::string_view key, uint64_t value) {
      if (key == "anon") {
        out.rss = value;
      } else if (key == "file") {
        out.cache = value;
      } else if (key == "inactive_file") {
        out.inactive_file = value;
      } else if (key == "pgfault") {
        out.pgfault = value;
      } else if (key == "pgmajfault") {
        out.pgmajfault = value;
      }
    });
  }
  return parse_flat_keyed(text, [&](std::string_view key, uint64_t value) {
    if (!key.starts_with("total_")) return;
    key.remove_prefix(6);
    if (key == "inactive_file") {
      out.inactive_file = value;
    } else if (key == "rss") {
      out.rss = value;
    } else if (key == "cache") {
      out.cache = value;
    } else if (key == "swap") {
      out.swap = value;
    } else if (key == "pgfault") {
      out.pgfault = value;
    } else if (key == "pgmajfault") {
      out.pgmajfault = value;
    }
  });
}

// Reads one key of a flat-keyed file (memory.events, memory.oom_control).
ParseResult<std::optional<uint64_t>> flat_key(std::string_view text, std::string_view wanted) {
  std::optional<uint64_t> found;
  auto r = parse_flat_keyed(text, [&](std::string_view key, uint64_t value) {
    if (key == wanted) found = value;
  });
  if (!r) return r.error();
  return found;
}

// Where each kind's per-cgroup file lives: its hierarchy directory, and a small index telling
// hierarchies apart (v1 controllers may or may not be co-mounted).
struct Hierarchy {
  std::string dir;
  uint8_t index = 0;
};

}  // namespace

const char* file_name(FileKind kind, Mode mode) {
  const bool v2 = mode == Mode::kV2;
  switch (kind) {
    case FileKind::kCpuacctUsage:
      return "cpuacct.usage";
    case FileKind::kCpuacctStat:
      return "cpuacct.stat";
    case FileKind::kCpuStat:
      return "cpu.stat";
    case FileKind::kMemoryUsage:
      return v2 ? "memory.current" : "memory.usage_in_bytes";
    case FileKind::kMemoryStat:
      return "memory.stat";
    case FileKind::kMemoryEvents:
      return "memory.events";
    case FileKind::kMemoryOomControl:
      return "memory.oom_control";
    case FileKind::kMemoryFailcnt:
      return "memory.failcnt";
    case FileKind::kMemoryLimit:
      return v2 ? "memory.max" : "memory.limit_in_bytes";
    case FileKind::kMemorySwapCurrent:
      return "memory.swap.current";
    case FileKind::kMemorySwapLimit:
      return v2 ? "memory.swap.max" : "memory.memsw.limit_in_bytes";
    case FileKind::kCpuPressure:
      return "cpu.pressure";
    case FileKind::kMemoryPressure:
      return "memory.pressure";
    case FileKind::kIoPressure:
      return "io.pressure";
    case FileKind::kProcStat:
      return "stat";
    case FileKind::kProcMeminfo:
      return "meminfo";
  }
  return "unknown";
}

ReadErrorKind classify_errno(int err) {
  switch (err) {
    case ENOENT:
    case ENODEV:
    case ESRCH:
      return ReadErrorKind::kGone;
    case EOPNOTSUPP:
      return ReadErrorKind::kUnsupported;
    default:
      return ReadErrorKind::kIo;
  }
}

ReadResult<std::string> read_file(const std::filesystem::path& path) {
  const std::string p = path.string();
  int fd = -1;
  for (;;) {
    fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0 || errno != EINTR) break;
  }
  if (fd < 0) return make_errno_error(errno, p);
  std::string buf;
  const ssize_t n = pread_whole(fd, buf);
  ::close(fd);
  if (n < 0) return make_errno_error(static_cast<int>(-n), p);
  buf.resize(static_cast<size_t>(n));
  return buf;
}

struct CgroupReader::Impl {
  // Descriptors kept for one cgroup identity (rel_path + inode).
  struct Entry {
    uint64_t inode = 0;
    uint64_t generation = 0;
    std::array<Slot, kFileKindCount> slots;

    void close_hierarchy(const std::array<Hierarchy, kFileKindCount>& hier, uint8_t index) {
      for (size_t k = 0; k < kFileKindCount; ++k) {
        if (hier[k].index == index) slots[k].reset();
      }
    }
  };

  // One target's values while a pass is under way.
  struct Pass {
    const CgroupTarget* target = nullptr;
    Entry* entry = nullptr;
    uint8_t gone = 0;  // bit per hierarchy index found gone this pass
    CpuUsage cpu;
    std::optional<ReadError> cpu_error;
    MemoryUsage memory;
    std::optional<ReadError> memory_error;
    std::optional<uint64_t> inactive_file;
    std::optional<uint64_t> memsw_limit;  // v1 memory + swap limit
    Pressure pressure;
    std::vector<ReadError> errors;
  };

  // The node's files, kept open across passes. Paths are fixed at construction.
  struct NodeFile {
    FileKind kind;
    std::string path;
    Slot slot;
  };

  Layout layout;
  std::filesystem::path proc_root;
  ReadObserver* observer;
  bool v2;
  uint64_t user_hz;
  std::array<Hierarchy, kFileKindCount> hier;
  std::unordered_map<std::string, Entry> entries;
  uint64_t generation = 0;
  std::vector<Pass> passes;
  std::string buf;       // file contents, reused by every read
  std::string path_buf;  // path being opened, reused
  std::array<NodeFile, 14> node_files;
  size_t kept = 0;  // descriptors kept in entries (counted at a pass's start, then as opened)
  size_t keep_budget = std::numeric_limits<size_t>::max();
  rlim_t budget_soft_limit = 0;  // RLIMIT_NOFILE's soft limit when the budget was set

  enum NodeIndex : size_t {
    kNodeCpuacctUsage,
    kNodeCpuacctStat,
    kNodeCpuStat,
    kNodeProcStat,
    kNodeMemoryUsage,
    kNodeMemoryStat,
    kNodeMeminfo,
    kNodeRootPsi,  // 3 entries: cpu, memory, io
    kNodeProcPsi = kNodeRootPsi + 3,
  };

  Impl(Layout l, std::filesystem::path proc_dir, ReadObserver* obs)
      : layout(std::move(l)), proc_root(std::move(proc_dir)), observer(obs), v2(layout.is_v2()) {
    const long hz = ::sysconf(_SC_CLK_TCK);
    user_hz = hz > 0 ? static_cast<uint64_t>(hz) : 100;
    std::vector<std::string> distinct;
    for (size_t k = 0; k < kFileKindCount; ++k) {
      const auto kind = static_cast<FileKind>(k);
      std::string dir;
      if (kind == FileKind::kProcStat || kind == FileKind::kProcMeminfo) {
        dir = proc_root.string();
      } else if (v2) {
        dir = layout.root.string();
      } else if (kind == FileKind::kCpuacctUsage || kind == FileKind::kCpuacctStat) {
        dir = layout.cpuacct.string();
      } else if (kind == FileKind::kCpuStat) {
        dir = layout.cpu.string();
      } else {
        dir = layout.memory.string();
      }
      while (dir.size() > 1 && dir.back() == '/')
        dir.pop_back();
      size_t i = 0;
      while (i < distinct.size() && distinct[i] != dir)
        ++i;
      if (i == distinct.size()) distinct.push_back(dir);
      hier[k] = Hierarchy{std::move(dir), static_cast<uint8_t>(i)};
    }

    // An empty path: the controller is not mounted.
    const auto at = [&](FileKind kind) {
      const std::string& dir = hier[idx(kind)].dir;
      return dir.empty() ? std::string() : dir + "/" + file_name(kind, layout.mode);
    };
    const std::string proc = proc_root.string();
    node_files[kNodeCpuacctUsage] = {FileKind::kCpuacctUsage, at(FileKind::kCpuacctUsage), {}};
    node_files[kNodeCpuacctStat] = {FileKind::kCpuacctStat, at(FileKind::kCpuacctStat), {}};
    node_files[kNodeCpuStat] = {FileKind::kCpuStat, at(FileKind::kCpuStat), {}};
    node_files[kNodeProcStat] = {FileKind::kProcStat, proc + "/stat", {}};
    node_files[kNodeMemoryUsage] = {FileKind::kMemoryUsage, at(FileKind::kMemoryUsage), {}};
    node_files[kNodeMemoryStat] = {FileKind::kMemoryStat, at(FileKind::kMemoryStat), {}};
    node_files[kNodeMeminfo] = {FileKind::kProcMeminfo, proc + "/meminfo", {}};
    const std::array<FileKind, 3> psi{FileKind::kCpuPressure, FileKind::kMemoryPressure,
                                      FileKind::kIoPressure};
    const std::array<const char*, 3> proc_psi{"/pressure/cpu", "/pressure/memory", "/pressure/io"};
    for (size_t i = 0; i < 3; ++i) {
      node_files[kNodeRootPsi + i] = {psi[i], at(psi[i]), {}};
      node_files[kNodeProcPsi + i] = {psi[i], proc + proc_psi[i], {}};
    }
  }

  ~Impl() {
    for (auto& [path, entry] : entries) {
      for (auto& slot : entry.slots)
        slot.close();
    }
    for (auto& f : node_files)
      f.slot.close();
  }

  // --- fetching bytes --------------------------------------------------------------------

  const std::string& target_path(const CgroupTarget& target, FileKind kind) {
    path_buf = hier[idx(kind)].dir;
    if (!target.rel_path.empty()) {
      if (target.rel_path.front() != '/') path_buf += '/';
      path_buf += target.rel_path;
      while (path_buf.size() > 1 && path_buf.back() == '/')
        path_buf.pop_back();
    }
    path_buf += '/';
    path_buf += file_name(kind, layout.mode);
    return path_buf;
  }

  // Reads through a kept descriptor, opening it first if needed. On success the text is buf[0, n).
  // Past the descriptor budget the file is opened, read and closed instead.
  std::optional<size_t> fetch_kept(Slot& slot, const std::string& path, ReadError& error) {
    if (slot.fd < 0) {
      if (kept >= keep_budget) return fetch_once(path, error);
      slot.fd = open_file(path, error);
      if (slot.fd < 0) {
        if (error.errno_value != EMFILE && error.errno_value != ENFILE) return std::nullopt;
        shed_kept_descriptors();
        return fetch_once(path, error);
      }
      ++kept;
    }
    const ssize_t n = pread_whole(slot.fd, buf);
    if (n < 0) {
      error = make_errno_error(static_cast<int>(-n), path);
      slot.close();
      return std::nullopt;
    }
    return static_cast<size_t>(n);
  }

  // open + read + close, for files that rarely change.
  std::optional<size_t> fetch_once(const std::string& path, ReadError& error) {
    Slot slot;
    slot.fd = open_file(path, error);
    if (slot.fd < 0) return std::nullopt;
    const ssize_t n = pread_whole(slot.fd, buf);
    slot.close();
    if (n < 0) {
      error = make_errno_error(static_cast<int>(-n), path);
      return std::nullopt;
    }
    return static_cast<size_t>(n);
  }

  // Kept descriptors must not take the whole RLIMIT_NOFILE: the server, the runtime state reader
  // and /proc need some too. When an open fails for lack of descriptors, every kept one is closed
  // and from then on at most half of what was held is kept (reads past it open, read and close);
  // the budget is lifted once the soft limit has grown (the agent raises it).
  void shed_kept_descriptors() {
    keep_budget = kept / 2;
    rlimit limit{};
    budget_soft_limit = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 ? limit.rlim_cur : 0;
    for (auto& [path, entry] : entries) {
      for (auto& slot : entry.slots)
        slot.close();  // `absent` stays: a missing file is still missing
    }
    kept = 0;
  }

  // At the start of each pass: count what is kept; lift the budget if the limit has grown since.
  void recount_kept_descriptors() {
    kept = open_descriptors();
    if (keep_budget == std::numeric_limits<size_t>::max()) return;
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur > budget_soft_limit) {
      keep_budget = std::numeric_limits<size_t>::max();
    }
  }

  Clock::time_point start_timer() const { return observer ? Clock::now() : Clock::time_point{}; }
  void report(FileKind kind, Clock::time_point start, const ReadError* error) const {
    if (observer) observer->on_file_read(kind, Clock::now() - start, error);
  }

  // --- per-target passes -----------------------------------------------------------------

  // Parses text of one kind into the pass; a ParseError comes back unchanged.
  ParseResult<void> apply(FileKind kind, std::string_view text, Pass& p) {
    switch (kind) {
      case FileKind::kCpuacctUsage: {
        auto v = parse_single_value(text);
        if (!v) return v.error();
        p.cpu.cumulative_ns = *v;
        return {};
      }
      case FileKind::kCpuacctStat: {
        auto v = parse_cpuacct_stat(text, user_hz);
        if (!v) return v.error();
        p.cpu.user_ns = v->user_ns;
        p.cpu.system_ns = v->system_ns;
        return {};
      }
      case FileKind::kCpuStat:
        return apply_cpu_stat(text, v2, p.cpu);
      case FileKind::kMemoryUsage: {
        auto v = parse_single_value(text);
        if (!v) return v.error();
        p.memory.usage_bytes = *v;
        return {};
      }
      case FileKind::kMemoryStat: {
        MemoryStat stat;
        auto r = parse_memory_stat(text, v2, stat);
        if (!r) return r;
        p.inactive_file = stat.inactive_file;
        p.memory.rss_bytes = stat.rss;
        p.memory.cache_bytes = stat.cache;
        if (!v2) p.memory.swap_bytes = stat.swap;
        p.memory.page_faults = stat.pgfault;
        p.memory.major_page_faults = stat.pgmajfault;
        return {};
      }
      case FileKind::kMemoryEvents:
      case FileKind::kMemoryOomControl: {
        auto v = flat_key(text, "oom_kill");
        if (!v) return v.error();
        p.memory.oom_kills = *v;
        return {};
      }
      case FileKind::kMemoryFailcnt: {
        auto v = parse_single_value(text);
        if (!v) return v.error();
        p.memory.failcnt = *v;
        return {};
      }
      case FileKind::kMemoryLimit: {
        auto v = parse_max_or_value(text);
        if (!v) return v.error();
        p.memory.limit_bytes = *v;
        return {};
      }
      case FileKind::kMemorySwapCurrent: {
        auto v = parse_single_value(text);
        if (!v) return v.error();
        p.memory.swap_bytes = *v;
        return {};
      }
      case FileKind::kMemorySwapLimit: {
        auto v = parse_max_or_value(text);
        if (!v) return v.error();
        if (v2) {
          p.memory.swap_limit_bytes = *v;
        } else {
          p.memsw_limit = *v;
        }
        return {};
      }
      case FileKind::kCpuPressure:
      case FileKind::kMemoryPressure:
      case FileKind::kIoPressure: {
        auto v = parse_psi(text);
        if (!v) return v.error();
        auto& slot = kind == FileKind::kCpuPressure      ? p.pressure.cpu
                     : kind == FileKind::kMemoryPressure ? p.pressure.memory
                                                         : p.pressure.io;
        slot = *v;
        return {};
      }
      case FileKind::kProcStat:
      case FileKind::kProcMeminfo:
        break;
    }
    return make_parse_error("not a per-cgroup file", file_name(kind, layout.mode));
  }

  std::optional<ReadError>* result_error(FileKind kind, Pass& p) {
    switch (part_of(kind)) {
      case Part::kCpu:
        return &p.cpu_error;
      case Part::kMemory:
        return &p.memory_error;
      case Part::kPressure:
        break;
    }
    return nullptr;
  }

  void mark_gone(FileKind kind, Pass& p, ReadError error) {
    const uint8_t h = hier[idx(kind)].index;
    p.gone |= static_cast<uint8_t>(1u << h);
    p.entry->close_hierarchy(hier, h);
    const FileKind cpu_primary = v2 ? FileKind::kCpuStat : FileKind::kCpuacctUsage;
    if (hier[idx(cpu_primary)].index == h && !p.cpu_error) p.cpu_error = error;
    if (hier[idx(FileKind::kMemoryUsage)].index == h && !p.memory_error) {
      p.memory_error = std::move(error);
    }
  }

  // Reads one file kind for every target of the pass.
  void read_kind(FileKind kind, bool kept) {
    const bool is_required = required(kind, v2);
    const uint8_t h_bit = static_cast<uint8_t>(1u << hier[idx(kind)].index);
    const bool no_dir = hier[idx(kind)].dir.empty();
    for (Pass& p : passes) {
      if (p.gone & h_bit) continue;
      auto* result_err = result_error(kind, p);
      if (result_err && *result_err) continue;  // this part already failed; nothing to add
      Slot& slot = p.entry->slots[idx(kind)];
      if (slot.absent) continue;

      const auto start = start_timer();
      ReadError error;
      bool ok = false;
      std::optional<size_t> n;
      if (no_dir) {
        error = ReadError{ReadErrorKind::kUnsupported, target_path(*p.target, kind),
                          "controller not mounted", 0};
      } else if (kept && slot.fd >= 0) {
        // The common case: no path is built unless something fails.
        const ssize_t r = pread_whole(slot.fd, buf);
        if (r >= 0) {
          n = static_cast<size_t>(r);
        } else {
          error = make_errno_error(static_cast<int>(-r), target_path(*p.target, kind));
          slot.close();
        }
      } else {
        const std::string& path = target_path(*p.target, kind);
        n = kept ? fetch_kept(slot, path, error) : fetch_once(path, error);
      }
      if (n) {
        auto r = apply(kind, std::string_view(buf.data(), *n), p);
        if (r) {
          ok = true;
        } else {
          error = make_parse_read_error(r.error(), target_path(*p.target, kind));
        }
      }
      report(kind, start, ok ? nullptr : &error);
      if (ok) continue;

      switch (error.kind) {
        case ReadErrorKind::kGone:
          mark_gone(kind, p, std::move(error));
          break;
        case ReadErrorKind::kUnsupported:
          if (is_required) {
            *result_err = std::move(error);
          } else {
            slot.reset();
            slot.absent = true;
          }
          break;
        case ReadErrorKind::kIo:
        case ReadErrorKind::kParse:
          if (is_required) {
            *result_err = std::move(error);
          } else {
            p.errors.push_back(std::move(error));
          }
          break;
      }
    }
  }

  std::vector<CgroupSample> read(std::span<const CgroupTarget> targets,
                                 const ReadOptions& options) {
    ++generation;
    recount_kept_descriptors();
    passes.clear();
    passes.resize(targets.size());
    for (size_t i = 0; i < targets.size(); ++i) {
      const CgroupTarget& t = targets[i];
      Entry& e = entries[t.rel_path];
      if (e.generation != 0 && e.inode != t.inode) {
        for (auto& slot : e.slots)
          slot.reset();  // a new cgroup at the same path
      }
      e.inode = t.inode;
      e.generation = generation;
      passes[i].target = &t;
      passes[i].entry = &e;
    }

    if (v2) {
      read_kind(FileKind::kCpuStat, true);
      read_kind(FileKind::kMemoryUsage, true);
      read_kind(FileKind::kMemoryStat, true);
      read_kind(FileKind::kMemoryEvents, true);
      read_kind(FileKind::kMemorySwapCurrent, true);
      for (FileKind kind :
           {FileKind::kCpuPressure, FileKind::kMemoryPressure, FileKind::kIoPressure}) {
        if (options.pressure) {
          read_kind(kind, true);
        } else {
          for (Pass& p : passes)
            p.entry->slots[idx(kind)].close();
        }
      }
      if (options.limits) {
        read_kind(FileKind::kMemoryLimit, false);
        read_kind(FileKind::kMemorySwapLimit, false);
      }
    } else {
      read_kind(FileKind::kCpuacctUsage, true);
      read_kind(FileKind::kCpuacctStat, true);
      read_kind(FileKind::kCpuStat, true);
      read_kind(FileKind::kMemoryUsage, true);
      read_kind(FileKind::kMemoryStat, true);
      if (options.limits) {
        read_kind(FileKind::kMemoryLimit, false);
        read_kind(FileKind::kMemorySwapLimit, false);
        read_kind(FileKind::kMemoryFailcnt, false);
        read_kind(FileKind::kMemoryOomControl, false);
      }
    }

    // A cgroup gone from the hierarchy that identifies it is gone as a whole: both parts say so,
    // and every descriptor it held is closed (also those of v1 hierarchies not read this pass).
    const uint8_t primary_bit = static_cast<uint8_t>(1u << hier[idx(FileKind::kMemoryUsage)].index);
    std::vector<CgroupSample> samples(passes.size());
    for (size_t i = 0; i < passes.size(); ++i) {
      Pass& p = passes[i];
      CgroupSample& s = samples[i];
      if ((p.gone & primary_bit) && p.memory_error) {
        for (auto& slot : p.entry->slots)
          slot.reset();
        if (!p.cpu_error || p.cpu_error->kind != ReadErrorKind::kGone)
          p.cpu_error = *p.memory_error;
      }
      if (p.cpu_error) {
        s.cpu = std::move(*p.cpu_error);
      } else {
        s.cpu = p.cpu;
      }
      if (p.memory_error) {
        s.memory = std::move(*p.memory_error);
      } else {
        MemoryUsage& m = p.memory;
        m.working_set_bytes = working_set_bytes(m.usage_bytes, p.inactive_file.value_or(0));
        if (!v2 && p.memsw_limit && m.limit_bytes) {
          m.swap_limit_bytes =
              *p.memsw_limit > *m.limit_bytes ? *p.memsw_limit - *m.limit_bytes : 0;
        }
        s.memory = m;
      }
      s.pressure = p.pressure;
      s.errors = std::move(p.errors);
    }
    passes.clear();

    for (auto it = entries.begin(); it != entries.end();) {
      if (it->second.generation != generation) {
        for (auto& slot : it->second.slots)
          slot.close();
        it = entries.erase(it);
      } else {
        ++it;
      }
    }
    return samples;
  }

  // --- the node --------------------------------------------------------------------------

  // Reads one node file and hands its text to parse; returns the error, if any.
  template <class Parse>
  std::optional<ReadError> read_node_file(NodeFile& f, Parse&& parse) {
    const auto start = start_timer();
    ReadError error;
    std::optional<ReadError> result;
    if (f.path.empty()) {
      result = ReadError{ReadErrorKind::kUnsupported, file_name(f.kind, layout.mode),
                         "controller not mounted", 0};
    } else if (auto n = fetch_kept(f.slot, f.path, error)) {
      ParseResult<void> r = parse(std::string_view(buf.data(), *n));
      if (!r) result = make_parse_read_error(r.error(), f.path);
    } else {
      result = std::move(error);
    }
    report(f.kind, start, result ? &*result : nullptr);
    return result;
  }

  // An optional node file: absence is silent, other failures go to errors.
  template <class Parse>
  bool read_optional_node_file(NodeFile& f, std::vector<ReadError>& errors, Parse&& parse) {
    if (f.slot.absent) return false;
    auto err = read_node_file(f, parse);
    if (!err) return true;
    if (err->kind == ReadErrorKind::kGone || err->kind == ReadErrorKind::kUnsupported) {
      f.slot.reset();
      f.slot.absent = true;
    } else {
      errors.push_back(std::move(*err));
    }
    return false;
  }

  NodeSample read_node(const ReadOptions& options) {
    NodeSample s;

    std::optional<Meminfo> meminfo;
    if (auto err = read_node_file(node_files[kNodeMeminfo], [&](std::string_view text) {
          auto m = parse_meminfo(text);
          if (!m) return ParseResult<void>(m.error());
          meminfo = *m;
          return ParseResult<void>();
        })) {
      s.errors.push_back(std::move(*err));
    }

    if (v2) {
      read_node_cpu_v2(s);
      read_node_memory_v2(s, meminfo);
    } else {
      read_node_cpu_v1(s);
      read_node_memory_v1(s);
    }

    if (s.memory && meminfo) {
      s.memory->limit_bytes = meminfo->mem_total_bytes;
      s.memory->swap_bytes.reset();
      const uint64_t swap_total = meminfo->swap_total_bytes.value_or(0);
      if (swap_total > 0 && meminfo->swap_free_bytes) {
        const uint64_t swap_free = *meminfo->swap_free_bytes;
        s.memory->swap_bytes = swap_total > swap_free ? swap_total - swap_free : 0;
      }
    }

    if (options.pressure) read_node_pressure(s);
    return s;
  }

  void read_node_cpu_v1(NodeSample& s) {
    CpuUsage cpu;
    if (auto err = read_node_file(node_files[kNodeCpuacctUsage], [&](std::string_view text) {
          auto v = parse_single_value(text);
          if (!v) return ParseResult<void>(v.error());
          cpu.cumulative_ns = *v;
          return ParseResult<void>();
        })) {
      s.cpu = std::move(*err);
      return;
    }
    read_optional_node_file(node_files[kNodeCpuacctStat], s.errors, [&](std::string_view text) {
      auto v = parse_cpuacct_stat(text, user_hz);
      if (!v) return ParseResult<void>(v.error());
      cpu.user_ns = v->user_ns;
      cpu.system_ns = v->system_ns;
      return ParseResult<void>();
    });
    read_optional_node_file(node_files[kNodeCpuStat], s.errors, [&](std::string_view text) {
      return apply_cpu_stat(text, false, cpu);
    });
    s.cpu = cpu;
  }

  void read_node_cpu_v2(NodeSample& s) {
    CpuUsage cpu;
    NodeFile& stat = node_files[kNodeCpuStat];
    if (!stat.slot.absent) {
      auto err = read_node_file(
          stat, [&](std::string_view text) { return apply_cpu_stat(text, true, cpu); });
      if (!err) {
        s.cpu = cpu;
        return;
      }
      if (err->kind != ReadErrorKind::kUnsupported && err->kind != ReadErrorKind::kGone) {
        s.cpu = std::move(*err);
        return;
      }
      stat.slot.reset();
      stat.slot.absent = true;  // kernels without a root cpu.stat: /proc/stat from now on
    }
    if (auto err = read_node_file(node_files[kNodeProcStat], [&](std::string_view text) {
          auto v = parse_proc_stat_cpu(text, user_hz);
          if (!v) return ParseResult<void>(v.error());
          // Busy time (all but idle and iowait), as a cgroup's usage counts it.
          cpu.cumulative_ns = v->busy_ns;
          cpu.user_ns = v->user_ns + v->nice_ns;
          cpu.system_ns = v->system_ns + v->irq_ns + v->softirq_ns;
          return ParseResult<void>();
        })) {
      s.cpu = std::move(*err);
      return;
    }
    s.cpu = cpu;
  }

  void read_node_memory_v1(NodeSample& s) {
    MemoryUsage m;
    if (auto err = read_node_file(node_files[kNodeMemoryUsage], [&](std::string_view text) {
          auto v = parse_single_value(text);
          if (!v) return ParseResult<void>(v.error());
          m.usage_bytes = *v;
          return ParseResult<void>();
        })) {
      s.memory = std::move(*err);
      return;
    }
    MemoryStat stat;
    if (auto err = read_node_file(node_files[kNodeMemoryStat], [&](std::string_view text) {
          return parse_memory_stat(text, false, stat);
        })) {
      s.memory = std::move(*err);
      return;
    }
    m.working_set_bytes = working_set_bytes(m.usage_bytes, stat.inactive_file.value_or(0));
    m.rss_bytes = stat.rss;
    m.cache_bytes = stat.cache;
    m.page_faults = stat.pgfault;
    m.major_page_faults = stat.pgmajfault;
    s.memory = m;
  }

  void read_node_memory_v2(NodeSample& s, const std::optional<Meminfo>& meminfo) {
    NodeFile& stat_file = node_files[kNodeMemoryStat];
    if (!stat_file.slot.absent) {
      MemoryStat stat;
      auto err = read_node_file(stat_file, [&](std::string_view text) {
        auto r = parse_memory_stat(text, true, stat);
        if (r && (!stat.rss || !stat.cache)) {
          return ParseResult<void>(make_parse_error("no anon or file in memory.stat", ""));
        }
        return r;
      });
      if (!err) {
        // The v2 root has no memory.current: usage is what its memory.stat charges to the LRUs.
        MemoryUsage m;
        m.usage_bytes = *stat.rss + *stat.cache;
        m.working_set_bytes = working_set_bytes(m.usage_bytes, stat.inactive_file.value_or(0));
        m.rss_bytes = stat.rss;
        m.cache_bytes = stat.cache;
        m.page_faults = stat.pgfault;
        m.major_page_faults = stat.pgmajfault;
        s.memory = m;
        return;
      }
      if (err->kind != ReadErrorKind::kUnsupported && err->kind != ReadErrorKind::kGone) {
        s.memory = std::move(*err);
        return;
      }
      stat_file.slot.reset();
      stat_file.slot.absent = true;
    }
    if (!meminfo || !meminfo->mem_total_bytes || !meminfo->mem_free_bytes) {
      s.memory = ReadError{meminfo ? ReadErrorKind::kParse : ReadErrorKind::kIo,
                           node_files[kNodeMeminfo].path,
                           meminfo ? "no MemTotal or MemFree (and no root memory.stat)"
                                   : "unreadable (and no root memory.stat)",
                           0};
      return;
    }
    s.memory = meminfo_to_memory(*meminfo);
  }

  // Without a root memory.stat (no memory controller), the same definitions applied to the global
  // counters: usage is everything not free (MemTotal - MemFree, page cache included, as a cgroup's
  // usage is), and the working set is that usage less the inactive page cache (Inactive(file)).
  // MemTotal - MemAvailable would subtract reclaimable cache twice. RSS is not derivable exactly
  // from the fields read, so it stays absent; cache is Buffers + Cached.
  static MemoryUsage meminfo_to_memory(const Meminfo& mi) {
    MemoryUsage m;
    m.usage_bytes =
        *mi.mem_total_bytes > *mi.mem_free_bytes ? *mi.mem_total_bytes - *mi.mem_free_bytes : 0;
    m.working_set_bytes = working_set_bytes(m.usage_bytes, mi.inactive_file_bytes.value_or(0));
    if (mi.buffers_bytes && mi.cached_bytes) m.cache_bytes = *mi.buffers_bytes + *mi.cached_bytes;
    return m;
  }

  void read_node_pressure(NodeSample& s) {
    std::array<std::optional<Psi>*, 3> out{&s.pressure.cpu, &s.pressure.memory, &s.pressure.io};
    for (size_t i = 0; i < 3; ++i) {
      const auto parse = [&](std::string_view text) {
        auto v = parse_psi(text);
        if (!v) return ParseResult<void>(v.error());
        *out[i] = *v;
        return ParseResult<void>();
      };
      // The v2 root's files first; v1 has none, and /proc/pressure is the same system-wide data.
      if (v2 && read_optional_node_file(node_files[kNodeRootPsi + i], s.errors, parse)) continue;
      read_optional_node_file(node_files[kNodeProcPsi + i], s.errors, parse);
    }
  }

  size_t open_descriptors() const {
    size_t n = 0;
    for (const auto& [path, entry] : entries) {
      for (const auto& slot : entry.slots)
        n += slot.fd >= 0 ? 1 : 0;
    }
    for (const auto& f : node_files)
      n += f.slot.fd >= 0 ? 1 : 0;
    return n;
  }
};

CgroupReader::CgroupReader(Layout layout, std::filesystem::path proc_root, ReadObserver* observer)
    : impl_(std::make_unique<Impl>(std::move(layout), std::move(proc_root), observer)) {}

CgroupReader::~CgroupReader() = default;

std::vector<CgroupSample> CgroupReader::read(std::span<const CgroupTarget> targets,
                                             const ReadOptions& options) {
  return impl_->read(targets, options);
}

NodeSample CgroupReader::read_node(const ReadOptions& options) {
  return impl_->read_node(options);
}

size_t CgroupReader::open_descriptors() const {
  return impl_->open_descriptors();
}

const Layout& CgroupReader::layout() const {
  return impl_->layout;
}

}  // namespace nodemeter::cgroup
