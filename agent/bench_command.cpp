#include "agent/bench_command.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string_view>
#include <thread>

#include "agent/clock.h"
#include "agent/flags.h"
#include "agent/identity.h"
#include "agent/log.h"
#include "agent/sampler.h"
#include "cgroup/layout.h"
#include "cgroup/parse.h"
#include "cgroup/reader.h"
#include "cgroup/scan.h"

namespace nodemeter::agent {

namespace fs = std::filesystem;
using cgroup::FileKind;
using SteadyClock = std::chrono::steady_clock;

namespace {

// ---- interruption -----------------------------------------------------------------------------

// Set by SIGINT/SIGTERM while the bench runs; every loop checks it and the clean-up runs.
volatile sig_atomic_t g_signal = 0;

extern "C" void on_bench_signal(int signo) {
  if (g_signal == 0) g_signal = signo;
}

bool interrupted() {
  return g_signal != 0;
}

// Installs the flag-setting handler for SIGINT and SIGTERM; restores the previous ones on exit.
class SignalGuard {
 public:
  SignalGuard() {
    g_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_bench_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a blocking waitpid returns EINTR and sees the flag
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalGuard() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// ---- progress -----------------------------------------------------------------------------------

// Progress on stderr once a run has taken longer than a second: one rewritten line on a terminal,
// at most a line a second otherwise.
class Progress {
 public:
  explicit Progress(std::FILE* err) : err_(err), tty_(::isatty(::fileno(err)) == 1) {}
  ~Progress() { finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void update(const std::string& what) {
    const int64_t now_ns = (SteadyClock::now() - start_).count();
    constexpr int64_t kSecond = 1'000'000'000;
    if (now_ns < kSecond) return;
    if (tty_) {
      std::fprintf(err_, "\r\033[Knodemeter bench: %s", what.c_str());
      shown_ = true;
    } else if (now_ns - last_line_ns_ >= kSecond) {
      std::fprintf(err_, "nodemeter bench: %s\n", what.c_str());
      last_line_ns_ = now_ns;
    }
    std::fflush(err_);
  }
  void finish() {
    if (shown_) std::fputs("\r\033[K", err_);
    shown_ = false;
    std::fflush(err_);
  }

 private:
  std::FILE* err_;
  bool tty_;
  bool shown_ = false;
  SteadyClock::time_point start_ = SteadyClock::now();
  int64_t last_line_ns_ = 0;  // since start_
};

// ---- small file helpers -------------------------------------------------------------------------

constexpr size_t kReadBuffer = 64 * 1024;

// Reads from the current offset to the end; a short read ends a cgroupfs file. Bytes or -errno.
ssize_t read_to_end(int fd, char* buf, size_t cap) {
  size_t total = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf + total, cap - total);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    total += static_cast<size_t>(n);
    if (n == 0 || total < cap) return static_cast<ssize_t>(total);
    total = 0;  // larger than the buffer: keep reading, the size is not what is measured
  }
}

// The same through pread from offset 0, as the agent re-reads a kept descriptor.
ssize_t pread_to_end(int fd, char* buf, size_t cap) {
  size_t total = 0;
  off_t offset = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buf + total, cap - total, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    total += static_cast<size_t>(n);
    offset += n;
    if (n == 0 || total < cap) return static_cast<ssize_t>(total);
    total = 0;
  }
}

int open_read(const std::string& path, int flags = O_RDONLY | O_CLOEXEC) {
  for (;;) {
    const int fd = ::open(path.c_str(), flags);
    if (fd >= 0 || errno != EINTR) return fd;
  }
}

// One write(2) of the whole value, as cgroupfs expects; 0 or the errno.
int write_value(const std::string& path, std::string_view value) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  const ssize_t n = ::write(fd, value.data(), value.size());
  const int err = n < 0 ? errno : 0;
  ::close(fd);
  return err;
}

std::string read_small(const std::string& path) {
  std::string out;
  const int fd = open_read(path);
  if (fd < 0) return out;
  std::array<char, 4096> buf;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string join(const std::string& dir, std::string_view rel) {
  std::string out = dir;
  if (!rel.empty()) {
    if (out.empty() || out.back() != '/') out += '/';
    out += rel;
  }
  return out;
}

// Raises the soft descriptor limit to the hard one: kept descriptors are what is measured.
size_t raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  return rl.rlim_cur == RLIM_INFINITY ? size_t{1} << 20 : static_cast<size_t>(rl.rlim_cur);
}

// Directories under root (root itself as ""), relative to root; vanished ones are skipped.
void walk_dirs(const std::string& root, const std::string& rel, std::vector<std::string>& out) {
  out.push_back(rel);
  DIR* d = ::opendir(join(root, rel).c_str());
  if (d == nullptr) return;
  std::vector<std::string> children;
  while (dirent* e = ::readdir(d)) {
    const std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    bool is_dir = e->d_type == DT_DIR;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st {};
      is_dir =
          ::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
    }
    if (is_dir) children.emplace_back(rel.empty() ? std::string(name) : rel + "/" + e->d_name);
  }
  ::closedir(d);
  std::sort(children.begin(), children.end());
  for (const auto& c : children)
    walk_dirs(root, c, out);
}

// ---- what is measured -----------------------------------------------------------------------

// The file kinds the bench knows, in table order; memory.current / memory.usage_in_bytes is one
// kind whose name depends on the mode.
constexpr std::array<FileKind, 9> kBenchKinds{
    FileKind::kCpuStat,     FileKind::kCpuacctUsage,   FileKind::kCpuacctStat,
    FileKind::kMemoryUsage, FileKind::kMemoryStat,     FileKind::kMemoryEvents,
    FileKind::kCpuPressure, FileKind::kMemoryPressure, FileKind::kIoPressure};

// The files every collection pass needs (issue 3): the floor a pass is held against.
std::vector<FileKind> floor_kinds(bool v2) {
  if (v2) {
    return {FileKind::kCpuStat, FileKind::kMemoryUsage, FileKind::kMemoryStat,
            FileKind::kMemoryEvents};
  }
  return {FileKind::kCpuacctUsage, FileKind::kCpuacctStat, FileKind::kCpuStat,
          FileKind::kMemoryUsage, FileKind::kMemoryStat};
}

// The hierarchy directory holding a kind's files; empty when that controller is not mounted.
std::string hierarchy_of(const cgroup::Layout& layout, FileKind kind) {
  fs::path dir;
  if (layout.is_v2()) {
    dir = layout.root;
  } else if (kind == FileKind::kCpuacctUsage || kind == FileKind::kCpuacctStat) {
    dir = layout.cpuacct;
  } else if (kind == FileKind::kCpuStat) {
    dir = layout.cpu;
  } else {
    dir = layout.memory;
  }
  std::string s = dir.string();
  while (s.size() > 1 && s.back() == '/')
    s.pop_back();
  return s;
}

struct CellFile {
  std::string dir;   // the cgroup directory
  std::string path;  // dir + "/" + name
};

// Reads one file kind with one method, iterations (or duration) times round-robin over files.
class CellRunner {
 public:
  CellRunner(size_t fd_budget, Progress& progress)
      : fd_budget_(fd_budget), progress_(progress), buf_(kReadBuffer) {}

  FileResult run(const std::string& name, const std::vector<CellFile>& files, ReadMethod method,
                 size_t iterations, std::optional<std::chrono::nanoseconds> duration) {
    FileResult r;
    r.file = name;
    r.method = method;
    std::vector<uint64_t> samples;
    samples.reserve(duration ? 4096 : iterations);

    // Kept descriptors (files, or directories for openat) are opened and read once, untimed.
    std::vector<int> fds;
    std::vector<const CellFile*> used;
    const size_t limit =
        method == ReadMethod::kOpenReadClose ? files.size() : std::min(files.size(), fd_budget_);
    for (size_t i = 0; i < limit && !interrupted(); ++i) {
      const CellFile& f = files[i];
      if (method == ReadMethod::kPread) {
        const int fd = open_read(f.path);
        if (fd < 0) continue;
        if (pread_to_end(fd, buf_.data(), buf_.size()) < 0) {
          ::close(fd);
          continue;
        }
        fds.push_back(fd);
      } else if (method == ReadMethod::kOpenat) {
        const int fd = open_read(f.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) continue;
        fds.push_back(fd);
      }
      used.push_back(&f);
    }
    r.cgroups = used.size();
    const auto start = SteadyClock::now();
    const auto deadline = duration ? start + *duration : SteadyClock::time_point::max();
    for (size_t i = 0; !used.empty() && !interrupted(); ++i) {
      if (duration ? SteadyClock::now() >= deadline : i >= iterations) break;
      const size_t k = i % used.size();
      ssize_t n = 0;
      const auto t0 = SteadyClock::now();
      switch (method) {
        case ReadMethod::kOpenReadClose: {
          const int fd = open_read(used[k]->path);
          n = fd < 0 ? -errno : read_to_end(fd, buf_.data(), buf_.size());
          if (fd >= 0) ::close(fd);
          break;
        }
        case ReadMethod::kOpenat: {
          int fd;
          do {
            fd = ::openat(fds[k], name.c_str(), O_RDONLY | O_CLOEXEC);
          } while (fd < 0 && errno == EINTR);
          n = fd < 0 ? -errno : read_to_end(fd, buf_.data(), buf_.size());
          if (fd >= 0) ::close(fd);
          break;
        }
        case ReadMethod::kPread:
          n = pread_to_end(fds[k], buf_.data(), buf_.size());
          break;
      }
      const auto t1 = SteadyClock::now();
      if (n < 0) {
        ++r.errors;
      } else {
        samples.push_back(static_cast<uint64_t>((t1 - t0).count()));
      }
      if ((i & 1023) == 1023) {
        progress_.update(name + " " + to_string(method) + ": " + std::to_string(i + 1) + " reads");
      }
    }
    for (int fd : fds)
      ::close(fd);
    r.latency = summarize(samples);
    return r;
  }

 private:
  size_t fd_budget_;
  Progress& progress_;
  std::vector<char> buf_;
};

// ---- the pass and its floor -------------------------------------------------------------------

// The floor: the files every pass needs, read over the same cgroups without parsing.
class Floor {
 public:
  Floor(const cgroup::Layout& layout, const std::vector<std::string>& rel_paths)
      : buf_(kReadBuffer) {
    for (FileKind kind : floor_kinds(layout.is_v2())) {
      const std::string dir = hierarchy_of(layout, kind);
      const char* name = cgroup::file_name(kind, layout.mode);
      names_.emplace_back(name);
      if (dir.empty()) continue;
      for (const auto& rel : rel_paths) {
        const std::string cg = join(dir, rel);
        const std::string path = cg + "/" + name;
        if (::access(path.c_str(), R_OK) != 0) continue;
        files_.push_back({cg, path, name_index(name)});
      }
    }
  }
  ~Floor() { close_all(); }
  Floor(const Floor&) = delete;
  Floor& operator=(const Floor&) = delete;

  const std::vector<std::string>& names() const { return names_; }
  size_t files() const { return files_.size(); }

  // Opens what a method keeps (file descriptors for pread, directories for openat), untimed.
  void prepare(ReadMethod method) {
    close_all();
    method_ = method;
    if (method == ReadMethod::kOpenReadClose) return;
    std::map<std::string, int> dir_fds;
    for (auto& f : files_) {
      if (method == ReadMethod::kPread) {
        f.fd = open_read(f.path);
        if (f.fd >= 0) pread_to_end(f.fd, buf_.data(), buf_.size());
        continue;
      }
      auto [it, fresh] = dir_fds.emplace(f.dir, -1);
      if (fresh) it->second = open_read(f.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      f.fd = it->second;
      if (fresh && it->second >= 0) dir_fds_.push_back(it->second);
    }
  }

  // One pass over every file; its duration.
  uint64_t pass() {
    const auto t0 = SteadyClock::now();
    for (auto& f : files_) {
      switch (method_) {
        case ReadMethod::kPread:
          if (f.fd >= 0) pread_to_end(f.fd, buf_.data(), buf_.size());
          break;
        case ReadMethod::kOpenat:
          if (f.fd >= 0) {
            const int fd = ::openat(f.fd, names_[f.name].c_str(), O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
              read_to_end(fd, buf_.data(), buf_.size());
              ::close(fd);
            }
          }
          break;
        case ReadMethod::kOpenReadClose: {
          const int fd = open_read(f.path);
          if (fd >= 0) {
            read_to_end(fd, buf_.data(), buf_.size());
            ::close(fd);
          }
          break;
        }
      }
    }
    return static_cast<uint64_t>((SteadyClock::now() - t0).count());
  }

  void close_all() {
    for (auto& f : files_) {
      if (method_ == ReadMethod::kPread && f.fd >= 0) ::close(f.fd);
      f.fd = -1;
    }
    for (int fd : dir_fds_)
      ::close(fd);
    dir_fds_.clear();
  }

 private:
  struct File {
    std::string dir;
    std::string path;
    size_t name = 0;
    int fd = -1;
  };
  size_t name_index(const std::string& name) const {
    return static_cast<size_t>(std::find(names_.begin(), names_.end(), name) - names_.begin());
  }

  std::vector<std::string> names_;
  std::vector<File> files_;
  std::vector<int> dir_fds_;
  ReadMethod method_ = ReadMethod::kOpenReadClose;
  std::vector<char> buf_;
};

// CPU time (user + system) this process has used, in nanoseconds.
uint64_t process_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

std::unique_ptr<PodSource> bench_pod_source(const BenchOptions& o, const cgroup::Layout& layout) {
  std::vector<std::unique_ptr<PodSource>> sources;
  sources.push_back(std::make_unique<RuntimeStateSource>(
      RuntimeStateOptions{o.containerd_state_dir, o.crio_state_dir}));
  sources.push_back(std::make_unique<CgroupPathSource>(layout.primary()));
  return std::make_unique<ChainedPodSource>(std::move(sources));
}

// The agent's pass (as `nodemeter agent` runs it, default pod sources) against the floor, both
// over the pod and container cgroups the agent reads, interleaved so that both see the same host.
std::optional<PassResult> measure_pass(const BenchOptions& o, const cgroup::Layout& layout,
                                       size_t fd_limit, Progress& progress, std::FILE* err) {
  PassResult r;
  r.passes = o.passes;
  // The cgroups a pass reads: pods and their non-sandbox containers, as the sampler picks them.
  const cgroup::ScanResult scan = cgroup::scan(layout);
  auto naming = bench_pod_source(o, layout);
  naming->refresh(scan);
  std::vector<std::string> rel_paths;
  for (const auto& pod : scan.pods) {
    rel_paths.push_back(pod.rel_path);
    ++r.pods;
    for (const auto& c : pod.containers) {
      auto info = naming->container(pod.uid, c.id);
      if (info && info->is_sandbox) continue;
      rel_paths.push_back(c.rel_path);
      ++r.containers;
    }
  }
  r.cgroups = rel_paths.size();

  Floor floor(layout, rel_paths);
  r.floor_files = floor.names();
  // The sampler keeps about as many descriptors as the floor, and both are open at once.
  const size_t needed = 2 * floor.files() + 256;
  if (needed > fd_limit) {
    std::fprintf(err,
                 "nodemeter bench: the pass over %zu cgroups needs about %zu descriptors but the "
                 "limit is %zu; raise it (ulimit -n) to time the pass.\n",
                 r.cgroups, needed, fd_limit);
    return std::nullopt;
  }

  std::FILE* devnull = std::fopen("/dev/null", "w");
  Logger log(LogFormat::kText, devnull != nullptr ? devnull : stderr);
  SystemClock clock;
  std::vector<uint64_t> pass_ns, cpu_ns, floor_ns;
  {
    Sampler sampler(layout, o.proc_root, bench_pod_source(o, layout),
                    SamplerOptions{"nodemeter-bench"}, clock, log);
    sampler.run_pass();  // opens the descriptors and reads limits, as an agent's first pass
    floor.prepare(ReadMethod::kPread);
    for (size_t i = 0; i < o.passes && !interrupted(); ++i) {
      progress.update("collection pass " + std::to_string(i + 1) + "/" + std::to_string(o.passes));
      const auto time_pass = [&] {
        const uint64_t c0 = process_cpu_ns();
        const auto t0 = SteadyClock::now();
        api::SnapshotPtr snap = sampler.run_pass();
        pass_ns.push_back(static_cast<uint64_t>((SteadyClock::now() - t0).count()));
        cpu_ns.push_back(process_cpu_ns() - c0);
      };
      // Alternate the order so neither side always runs on caches the other warmed.
      if (i % 2 == 0) {
        floor_ns.push_back(floor.pass());
        time_pass();
      } else {
        time_pass();
        floor_ns.push_back(floor.pass());
      }
    }
  }
  if (devnull != nullptr) std::fclose(devnull);
  if (interrupted()) return std::nullopt;

  r.median_ns = median(pass_ns);
  r.cpu_median_ns = median(cpu_ns);
  if (!pass_ns.empty()) {
    r.min_ns = *std::min_element(pass_ns.begin(), pass_ns.end());
    r.max_ns = *std::max_element(pass_ns.begin(), pass_ns.end());
  }
  if (floor.files() > 0) {
    r.floor_pread_ns = median(floor_ns);
    // The reopening floors, for comparison: the same files, the same number of passes.
    std::vector<uint64_t> openat_ns, open_ns;
    floor.prepare(ReadMethod::kOpenat);
    floor.pass();
    for (size_t i = 0; i < o.passes && !interrupted(); ++i) {
      progress.update("floor pass " + std::to_string(i + 1) + "/" + std::to_string(o.passes));
      openat_ns.push_back(floor.pass());
    }
    floor.prepare(ReadMethod::kOpenReadClose);
    floor.pass();
    for (size_t i = 0; i < o.passes && !interrupted(); ++i) {
      open_ns.push_back(floor.pass());
    }
    floor.close_all();
    if (interrupted()) return std::nullopt;
    r.floor_openat_ns = median(openat_ns);
    r.floor_open_read_close_ns = median(open_ns);
    if (*r.floor_pread_ns > 0) {
      r.ratio = static_cast<double>(r.median_ns) / static_cast<double>(*r.floor_pread_ns);
    }
  }
  return r;
}

// ---- synthetic cgroups ------------------------------------------------------------------------

bool is_cgroupfs(const std::string& dir, bool v2) {
  struct statfs st {};
  if (::statfs(dir.c_str(), &st) != 0) return false;
  const auto magic = static_cast<uint64_t>(st.f_type);
  return v2 ? magic == CGROUP2_SUPER_MAGIC : magic == CGROUP_SUPER_MAGIC;
}

bool process_exists(pid_t pid) {
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

// Removes one cgroup directory: tasks still inside go to the hierarchy root first; the kernel may
// take a moment to let go of a killed task, so rmdir is retried for up to three seconds.
bool remove_cgroup(const std::string& dir, const std::string& hierarchy_root) {
  for (int attempt = 0; attempt < 150; ++attempt) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return true;
    if (errno != EBUSY) return false;
    std::string procs = read_small(dir + "/cgroup.procs");
    std::string_view rest = procs;
    while (!rest.empty()) {
      const auto nl = rest.find('\n');
      const std::string_view pid = rest.substr(0, nl);
      if (!pid.empty()) write_value(hierarchy_root + "/cgroup.procs", pid);
      if (nl == std::string_view::npos) break;
      rest.remove_prefix(nl + 1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  return false;
}

// Removes dir and every cgroup below it, deepest first.
void remove_cgroup_tree(const std::string& hierarchy_root, const std::string& rel) {
  std::vector<std::string> dirs;
  walk_dirs(hierarchy_root, rel, dirs);
  std::sort(dirs.begin(), dirs.end(), [](const std::string& a, const std::string& b) {
    return std::count(a.begin(), a.end(), '/') > std::count(b.begin(), b.end(), '/');
  });
  for (const auto& d : dirs)
    remove_cgroup(join(hierarchy_root, d), hierarchy_root);
}

std::string random_hex(std::mt19937_64& rng, size_t digits) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(digits, '0');
  for (auto& c : s)
    c = kHex[rng() & 15];
  return s;
}

std::string random_uuid(std::mt19937_64& rng) {
  std::string s = random_hex(rng, 32);
  s[12] = '4';
  return s.substr(0, 8) + "-" + s.substr(8, 4) + "-" + s.substr(12, 4) + "-" + s.substr(16, 4) +
         "-" + s.substr(20);
}

// N container cgroups laid out like a node under a parent of its own (so that nothing else's
// kubepods is touched):
// <hierarchy>/nodemeter-bench-<pid>/kubepods/{burstable,besteffort}/pod<uid>/<id> (Guaranteed pods
// directly under kubepods), two containers per pod, in each of the v1 cpu, cpuacct and memory
// hierarchies, or under the v2 root with cpu and memory enabled down the tree. Busy processes sit
// in some containers. Everything is removed by cleanup() or the destructor.
class SyntheticNode {
 public:
  SyntheticNode(const cgroup::Layout& host, std::filesystem::path proc_root)
      : host_(host), proc_root_(std::move(proc_root)) {}
  ~SyntheticNode() { cleanup(); }
  SyntheticNode(const SyntheticNode&) = delete;
  SyntheticNode& operator=(const SyntheticNode&) = delete;

  // Builds the tree; an error is one sentence. An interruption stops it early (no error).
  boost::system::result<void, std::string> create(size_t containers, size_t burners,
                                                  Progress& progress) {
    using Result = boost::system::result<void, std::string>;
    if (::geteuid() != 0) {
      return Result(boost::system::in_place_error,
                    "nodemeter bench: --create needs root, to make cgroups under " +
                        host_.root.string() + ".");
    }
    const bool v2 = host_.is_v2();
    for (const fs::path* dir : {&host_.cpu, &host_.cpuacct, &host_.memory}) {
      const std::string d = dir->string();
      if (d.empty()) continue;
      if (std::find(hierarchies_.begin(), hierarchies_.end(), d) == hierarchies_.end()) {
        hierarchies_.push_back(d);
      }
    }
    for (const auto& h : hierarchies_) {
      if (!is_cgroupfs(h, v2)) {
        return Result(boost::system::in_place_error,
                      "nodemeter bench: --create needs a mounted cgroup file system, and " + h +
                          " is not one.");
      }
    }
    remove_stale_trees();
    if (v2) {
      if (auto r = enable_v2_controllers(); !r) return r;
    }

    parent_ = "nodemeter-bench-" + std::to_string(::getpid());
    std::mt19937_64 rng(static_cast<uint64_t>(::getpid()) * 0x9e3779b97f4a7c15ULL ^
                        static_cast<uint64_t>(SteadyClock::now().time_since_epoch().count()));
    const auto made = [&](const std::string& rel, bool inner) -> Result {
      for (const auto& h : hierarchies_) {
        const std::string dir = join(h, rel);
        if (::mkdir(dir.c_str(), 0755) != 0) {
          const int e = errno;
          return Result(
              boost::system::in_place_error,
              "nodemeter bench: cannot create the cgroup " + dir + ": " + std::strerror(e) + ".");
        }
        created_.push_back(dir);
        if (v2 && inner) {
          if (const int e = write_value(dir + "/cgroup.subtree_control", subtree_); e != 0) {
            return Result(boost::system::in_place_error,
                          "nodemeter bench: cannot enable controllers in " + dir + ": " +
                              std::strerror(e) + ".");
          }
        }
      }
      return {};
    };
    const std::string kubepods = parent_ + "/kubepods";
    for (const std::string& rel :
         {parent_, kubepods, kubepods + "/burstable", kubepods + "/besteffort"}) {
      if (auto r = made(rel, true); !r) return r;
    }
    const size_t pods = (containers + 1) / 2;
    for (size_t p = 0; p < pods && !interrupted(); ++p) {
      // A node's mix: half Burstable, a quarter BestEffort, a quarter Guaranteed.
      const std::string qos = p % 4 == 3 ? "" : p % 4 == 2 ? "/besteffort" : "/burstable";
      const std::string pod = kubepods + qos + "/pod" + random_uuid(rng);
      if (auto r = made(pod, true); !r) return r;
      ++pods_;
      for (size_t c = 0; c < 2 && containers_.size() < containers; ++c) {
        const std::string rel = pod + "/" + random_hex(rng, 64);
        if (auto r = made(rel, false); !r) return r;
        containers_.push_back(rel);
      }
      if (p % 50 == 49) {
        progress.update("created " + std::to_string(containers_.size()) + "/" +
                        std::to_string(containers) + " container cgroups");
      }
    }
    if (interrupted()) return {};
    if (auto r = seed_usage(progress); !r) return r;
    for (size_t k = 0; k < burners && !interrupted(); ++k) {
      if (auto r = start_burner(containers_[k * containers_.size() / burners]); !r) return r;
    }
    return {};
  }

  // The tree as the agent's reader and scanner see it: every hierarchy directory is the parent.
  cgroup::Layout layout() const {
    cgroup::Layout l;
    l.mode = host_.mode;
    const auto under = [&](const fs::path& h) { return h.empty() ? h : h / parent_; };
    l.cpu = under(host_.cpu);
    l.cpuacct = under(host_.cpuacct);
    l.memory = under(host_.memory);
    l.root = host_.is_v2() ? under(host_.root) : l.memory;
    return l;
  }

  // A directory that a separate process (`nodemeter agent --cgroup-root`) reads as this tree: the
  // v2 parent itself, or on v1 a temporary directory with each controller's parent bind-mounted
  // under its host name ("cpu", "cpuacct" or "cpu,cpuacct", "memory"), as /sys/fs/cgroup holds
  // the hierarchies. The mounts live in a mount namespace of this process and its children only,
  // so nothing outlives them, whatever ends the bench.
  boost::system::result<std::string, std::string> cgroup_root() {
    using Result = boost::system::result<std::string, std::string>;
    if (host_.is_v2())
      return Result(boost::system::in_place_value, join(host_.root.string(), parent_));
    if (!link_dir_.empty()) return Result(boost::system::in_place_value, link_dir_);
    const auto error = [](const std::string& what) {
      return Result(boost::system::in_place_error,
                    "nodemeter bench: cannot " + what + ": " + std::strerror(errno) + ".");
    };
    if (::unshare(CLONE_NEWNS) != 0) return error("make a mount namespace");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      return error("make the mounts of its namespace private");
    }
    std::string pattern = (fs::temp_directory_path() / "nodemeter-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) return error("create a temporary directory");
    link_dir_ = pattern;
    for (const auto& h : hierarchies_) {
      const std::string target = link_dir_ + "/" + fs::path(h).filename().string();
      if (::mkdir(target.c_str(), 0755) != 0) return error("create " + target);
      mounts_.push_back(target);
      if (::mount(join(h, parent_).c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
        return error("bind-mount " + join(h, parent_) + " on " + target);
      }
    }
    return Result(boost::system::in_place_value, link_dir_);
  }
  const std::string& parent() const { return parent_; }
  size_t pods() const { return pods_; }
  size_t containers() const { return containers_.size(); }
  const std::vector<pid_t>& burner_pids() const { return burners_; }
  std::vector<std::string> parent_dirs() const {
    std::vector<std::string> out;
    for (const auto& h : hierarchies_)
      out.push_back(join(h, parent_));
    return out;
  }

  // Kills the burners, removes every cgroup made (deepest first) and the link directory, and
  // turns off the v2 root controllers it turned on. Safe to call twice.
  void cleanup() {
    for (pid_t pid : burners_) {
      ::kill(pid, SIGKILL);
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
    burners_.clear();
    if (!shm_dir_.empty()) {
      std::error_code ec;
      fs::remove_all(shm_dir_, ec);
      shm_dir_.clear();
    }
    for (const auto& target : mounts_) {
      ::umount2(target.c_str(), MNT_DETACH);
      ::rmdir(target.c_str());
    }
    mounts_.clear();
    if (!link_dir_.empty()) ::rmdir(link_dir_.c_str());
    link_dir_.clear();
    for (auto it = created_.rbegin(); it != created_.rend(); ++it) {
      const std::string& dir = *it;
      std::string root;
      for (const auto& h : hierarchies_) {
        const bool under =
            dir.size() > h.size() && dir.compare(0, h.size(), h) == 0 && dir[h.size()] == '/';
        if (under && root.size() < h.size()) root = h;
      }
      remove_cgroup(dir, root);
    }
    created_.clear();
    if (!enabled_at_root_.empty()) {
      write_value(host_.root.string() + "/cgroup.subtree_control", enabled_at_root_);
      enabled_at_root_.clear();
    }
  }

 private:
  // Gives every container a little usage, as a running container has: consumers of
  // /metrics/resource drop a pod whose containers show zero CPU or memory, so idle cgroups would
  // be left out of every rendering. The bench moves itself into each container briefly, spins a
  // few microseconds (charged to its CPU counters) and writes 16 KiB to a tmpfs file (page cache
  // charged to its memory cgroup until cleanup removes the file), then moves back.
  boost::system::result<void, std::string> seed_usage(Progress& progress) {
    using Result = boost::system::result<void, std::string>;
    const std::string shm = "/dev/shm/" + parent_;
    if (::mkdir(shm.c_str(), 0700) != 0) {
      return Result(boost::system::in_place_error, "nodemeter bench: cannot create " + shm +
                                                       " (tmpfs memory to charge to the "
                                                       "containers): " +
                                                       std::strerror(errno) + ".");
    }
    shm_dir_ = shm;
    // Where this process is now, per hierarchy, to come back to.
    std::vector<std::string> home;
    const std::string self = read_small("/proc/self/cgroup");
    for (const auto& h : hierarchies_) {
      std::string controller = host_.is_v2()                 ? ""
                               : h == host_.memory.string()  ? "memory"
                               : h == host_.cpuacct.string() ? "cpuacct"
                                                             : "cpu";
      std::string back = h;
      std::string_view rest = self, line;
      while (cgroup::next_line(rest, line)) {
        const auto a = line.find(':');
        const auto b = line.find(':', a + 1);
        if (a == std::string_view::npos || b == std::string_view::npos) continue;
        const std::string_view controllers = line.substr(a + 1, b - a - 1);
        bool match = controller.empty() ? line.substr(0, a) == "0" : false;
        for (std::string_view list = controllers; !match && !list.empty();) {
          const auto comma = list.find(',');
          match = list.substr(0, comma) == controller;
          list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
        }
        if (match) back = join(h, line.substr(b + 2));
      }
      home.push_back(back);
    }
    const std::string pid = std::to_string(::getpid());
    const std::string page(16 * 1024, 'x');
    for (size_t i = 0; i < containers_.size() && !interrupted(); ++i) {
      for (const auto& h : hierarchies_) {
        const std::string procs = join(h, containers_[i]) + "/cgroup.procs";
        if (const int e = write_value(procs, pid); e != 0) {
          return Result(boost::system::in_place_error, "nodemeter bench: cannot move itself into " +
                                                           procs + ": " + std::strerror(e) + ".");
        }
      }
      const auto until = SteadyClock::now() + std::chrono::microseconds{20};
      while (SteadyClock::now() < until) {
      }
      const std::string file = shm_dir_ + "/" + std::to_string(i);
      const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      const bool written =
          fd >= 0 && ::write(fd, page.data(), page.size()) == static_cast<ssize_t>(page.size());
      if (fd >= 0) ::close(fd);
      for (size_t k = 0; k < hierarchies_.size(); ++k) {
        if (write_value(home[k] + "/cgroup.procs", pid) != 0) {
          write_value(hierarchies_[k] + "/cgroup.procs", pid);
        }
      }
      if (!written) {
        return Result(boost::system::in_place_error,
                      "nodemeter bench: cannot write " + file + ": " + std::strerror(errno) + ".");
      }
      if (i % 100 == 99) {
        progress.update("gave " + std::to_string(i + 1) + "/" + std::to_string(containers_.size()) +
                        " containers some usage");
      }
    }
    return {};
  }

  // Trees of earlier runs that were killed before they could clean up (their process is gone).
  void remove_stale_trees() {
    for (const auto& h : hierarchies_) {
      DIR* d = ::opendir(h.c_str());
      if (d == nullptr) continue;
      std::vector<std::string> stale;
      while (dirent* e = ::readdir(d)) {
        const std::string_view name = e->d_name;
        constexpr std::string_view kPrefix = "nodemeter-bench-";
        if (!name.starts_with(kPrefix)) continue;
        const std::string_view digits = name.substr(kPrefix.size());
        pid_t pid = 0;
        const auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
        if (ec != std::errc{} || p != digits.data() + digits.size() || pid <= 0) continue;
        if (!process_exists(pid)) stale.emplace_back(name);
      }
      ::closedir(d);
      for (const auto& s : stale)
        remove_cgroup_tree(h, s);
    }
    // Their tmpfs files too.
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/dev/shm", ec)) {
      const std::string name = e.path().filename().string();
      constexpr std::string_view kPrefix = "nodemeter-bench-";
      if (!name.starts_with(kPrefix)) continue;
      pid_t pid = 0;
      const char* first = name.data() + kPrefix.size();
      const auto [p, err] = std::from_chars(first, name.data() + name.size(), pid);
      if (err == std::errc{} && p == name.data() + name.size() && pid > 0 && !process_exists(pid)) {
        std::error_code rm;
        fs::remove_all(e.path(), rm);
      }
    }
  }

  boost::system::result<void, std::string> enable_v2_controllers() {
    using Result = boost::system::result<void, std::string>;
    const std::string root = host_.root.string();
    const std::string available = " " + read_small(root + "/cgroup.controllers") + " ";
    const std::string enabled = " " + read_small(root + "/cgroup.subtree_control") + " ";
    const auto has = [](const std::string& list, const char* c) {
      for (size_t pos = list.find(c); pos != std::string::npos; pos = list.find(c, pos + 1)) {
        const char before = list[pos - 1];
        const char after = list[pos + std::strlen(c)];
        if ((before == ' ' || before == '\n') && (after == ' ' || after == '\n')) return true;
      }
      return false;
    };
    if (!has(available, "cpu") || !has(available, "memory")) {
      return Result(boost::system::in_place_error,
                    "nodemeter bench: --create needs the cpu and memory controllers, and the "
                    "cgroup v2 root " +
                        root + " does not offer them.");
    }
    std::string add, undo;
    for (const char* c : {"cpu", "memory", "io"}) {
      if (!has(available, c)) continue;
      subtree_ += std::string(subtree_.empty() ? "" : " ") + "+" + c;
      if (!has(enabled, c)) {
        add += std::string(add.empty() ? "" : " ") + "+" + c;
        undo += std::string(undo.empty() ? "" : " ") + "-" + c;
      }
    }
    if (!add.empty()) {
      if (const int e = write_value(root + "/cgroup.subtree_control", add); e != 0) {
        return Result(boost::system::in_place_error,
                      "nodemeter bench: cannot enable " + add + " in " + root +
                          "/cgroup.subtree_control: " + std::strerror(e) + ".");
      }
      enabled_at_root_ = undo;
    }
    return {};
  }

  boost::system::result<void, std::string> start_burner(const std::string& rel) {
    using Result = boost::system::result<void, std::string>;
    std::fflush(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      return Result(
          boost::system::in_place_error,
          std::string("nodemeter bench: cannot start a burner: ") + std::strerror(errno) + ".");
    }
    if (pid == 0) {
      // Dies with the bench, whatever ends it; Ctrl-C at a terminal ends it directly.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(0);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      volatile uint64_t sink = 0;
      for (;;)
        sink = sink + 1;
    }
    burners_.push_back(pid);
    const std::string value = std::to_string(pid);
    for (const auto& h : hierarchies_) {
      const std::string procs = join(h, rel) + "/cgroup.procs";
      if (const int e = write_value(procs, value); e != 0) {
        return Result(boost::system::in_place_error, "nodemeter bench: cannot move a burner into " +
                                                         procs + ": " + std::strerror(e) + ".");
      }
    }
    return {};
  }

  cgroup::Layout host_;
  std::filesystem::path proc_root_;
  std::vector<std::string> hierarchies_;
  std::vector<std::string> created_;  // cgroup directories, in creation order
  std::vector<std::string> containers_;
  std::vector<pid_t> burners_;
  std::vector<std::string> mounts_;  // bind mounts under link_dir_ (v1, for a command)
  std::string shm_dir_;              // the tmpfs files charged to the containers
  std::string link_dir_;
  std::string cgroup_root_;
  std::string parent_;
  std::string subtree_;          // "+cpu +memory +io": enabled in every inner cgroup (v2)
  std::string enabled_at_root_;  // "-cpu ...": what cleanup turns off again at the v2 root
  size_t pods_ = 0;
};

// Runs the command after "--" while the synthetic cgroups exist; its exit status, or 128+signal.
int run_command(const std::vector<std::string>& command, SyntheticNode& node,
                const std::string& mode, std::FILE* err) {
  auto root = node.cgroup_root();
  if (!root) {
    std::fprintf(err, "%s\n", root.error().c_str());
    return 1;
  }
  std::string parents, pids;
  for (const auto& p : node.parent_dirs())
    parents += (parents.empty() ? "" : ":") + p;
  for (pid_t pid : node.burner_pids())
    pids += (pids.empty() ? "" : " ") + std::to_string(pid);
  ::setenv("NODEMETER_BENCH_CGROUP_ROOT", root->c_str(), 1);
  ::setenv("NODEMETER_BENCH_PARENT_DIRS", parents.c_str(), 1);
  ::setenv("NODEMETER_BENCH_MODE", mode.c_str(), 1);
  ::setenv("NODEMETER_BENCH_PODS", std::to_string(node.pods()).c_str(), 1);
  ::setenv("NODEMETER_BENCH_CONTAINERS", std::to_string(node.containers()).c_str(), 1);
  ::setenv("NODEMETER_BENCH_BURNER_PIDS", pids.c_str(), 1);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::fprintf(err, "nodemeter bench: cannot run %s: %s.\n", command[0].c_str(),
                 std::strerror(errno));
    return 1;
  }
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : command)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "nodemeter bench: cannot run %s: %s.\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  bool forwarded = false;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, 0);
    if (r == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return 128 + WTERMSIG(status);
    }
    if (r < 0 && errno != EINTR) return 1;
    if (interrupted() && !forwarded) {
      ::kill(pid, SIGTERM);
      forwarded = true;
    }
  }
}

// ---- flags --------------------------------------------------------------------------------------

std::string parse_count(std::string_view v, size_t& out, bool allow_zero) {
  size_t n = 0;
  const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc{} || p != v.data() + v.size() || (!allow_zero && n == 0)) {
    return "\"" + std::string(v) + "\" is not a " + (allow_zero ? "number" : "positive number");
  }
  out = n;
  return {};
}

constexpr const char* kJsonHelp = R"(
Output: an aligned table on stdout, or with --json one JSON object:
  version            nodemeter's version
  cgroup_root        the --cgroup-root measured
  mode               "v1", "v2" or "hybrid"
  scope              "all" (every cgroup under the hierarchies) or "pods" (--pods-only)
  cgroups            distinct cgroups measured
  iterations         timed reads per file kind and method (null with --duration)
  duration_ns        time per file kind and method with --duration (else null)
  created            null, or {containers, pods, burners, parent} for --create
  files              one entry per file kind present and read method:
                       file, method ("open+read+close", "openat", "pread"), cgroups (that have
                       the file), reads (timed), errors, p50_ns, p90_ns, p99_ns, max_ns
  pass               null (--passes 0), or the agent's collection pass over the pod and container
                     cgroups: pods, containers, cgroups, passes, median_ns, min_ns, max_ns (wall
                     time of the agent's pass: scan, read, parse, store, snapshot), cpu_median_ns
                     (its CPU time, user + system), floor_files (the files every pass needs),
                     floor_median_ns {pread, openat, open+read+close} (those files read over the
                     same cgroups without parsing; null without pods), ratio (median_ns / the
                     pread floor; null without pods)
  interrupted        true when SIGINT/SIGTERM cut the run short
Exit status: 0; 1 when it cannot run here (no cgroups, no permission); 2 for a bad flag;
128 + the signal when interrupted (after removing everything --create made).
)";

FlagSet bench_flags(BenchOptions& o, bool& iterations_given) {
  FlagSet f("bench");
  f.value("cgroup-root", "PATH", "cgroup file system root", "/sys/fs/cgroup",
          [&o](std::string_view v) {
            o.cgroup_root = v;
            return std::string();
          });
  f.value("proc-root", "PATH", "proc file system root", "/proc", [&o](std::string_view v) {
    o.proc_root = v;
    return std::string();
  });
  f.boolean("pods-only",
            "measure only the pod and container cgroups the agent finds (default: every cgroup)",
            [&o] { o.pods_only = true; });
  f.value("iterations", "N",
          "timed reads per file kind and method, round-robin over the cgroups; 0 skips", "2000",
          [&o, &iterations_given](std::string_view v) {
            iterations_given = true;
            return parse_count(v, o.iterations, true);
          });
  f.value("duration", "DURATION", "read each file kind with each method for this long instead", "",
          [&o](std::string_view v) {
            auto d = parse_duration(v);
            if (!d) return d.error();
            if (d->count() <= 0) return std::string("must be positive");
            o.duration = *d;
            return std::string();
          });
  f.value("passes", "N", "collection passes (and floor passes) to take the median of; 0 skips",
          "20", [&o](std::string_view v) { return parse_count(v, o.passes, true); });
  f.value("create", "N",
          "first build N synthetic container cgroups laid out like a node (root only); removed "
          "at exit, Ctrl-C and errors included",
          "", [&o](std::string_view v) { return parse_count(v, o.create, false); });
  f.value("burners", "K", "with --create: K busy processes in some of the containers", "0",
          [&o](std::string_view v) { return parse_count(v, o.burners, true); });
  f.value("containerd-state-dir", "PATH",
          "containerd's task state directory (pod and container names, as for the agent)",
          "/run/containerd/io.containerd.runtime.v2.task/k8s.io", [&o](std::string_view v) {
            o.containerd_state_dir = v;
            return std::string();
          });
  f.value("crio-state-dir", "PATH", "CRI-O's container state directory",
          "/run/containers/storage/overlay-containers", [&o](std::string_view v) {
            o.crio_state_dir = v;
            return std::string();
          });
  f.boolean("json", "print one JSON object instead of the table", [&o] { o.json = true; });
  f.boolean("help", "print this help and exit", [&o] { o.show_help = true; });
  return f;
}

// ---- output -------------------------------------------------------------------------------------

std::string format_latency(uint64_t ns) {
  char buf[32];
  const double us = static_cast<double>(ns) / 1000.0;
  if (us < 10) {
    std::snprintf(buf, sizeof buf, "%.2fus", us);
  } else if (us < 1000) {
    std::snprintf(buf, sizeof buf, "%.1fus", us);
  } else {
    std::snprintf(buf, sizeof buf, "%.2fms", us / 1000.0);
  }
  return buf;
}

std::string format_ms(uint64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f ms", static_cast<double>(ns) / 1e6);
  return buf;
}

std::string format_ratio(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fx", r);
  return buf;
}

std::string pad(std::string s, size_t width, bool right) {
  if (s.size() >= width) return s;
  return right ? std::string(width - s.size(), ' ') + s : s + std::string(width - s.size(), ' ');
}

}  // namespace

const char* to_string(ReadMethod method) {
  switch (method) {
    case ReadMethod::kOpenReadClose:
      return "open+read+close";
    case ReadMethod::kOpenat:
      return "openat";
    case ReadMethod::kPread:
      return "pread";
  }
  return "pread";
}

uint64_t percentile(const std::vector<uint64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(q * static_cast<double>(sorted.size()));
  const size_t i = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(i, sorted.size() - 1)];
}

LatencyStats summarize(std::vector<uint64_t>& samples_ns) {
  LatencyStats s;
  if (samples_ns.empty()) return s;
  std::sort(samples_ns.begin(), samples_ns.end());
  s.reads = samples_ns.size();
  s.p50_ns = percentile(samples_ns, 0.50);
  s.p90_ns = percentile(samples_ns, 0.90);
  s.p99_ns = percentile(samples_ns, 0.99);
  s.max_ns = samples_ns.back();
  return s;
}

uint64_t median(std::vector<uint64_t> values) {
  if (values.empty()) return 0;
  const size_t mid = (values.size() - 1) / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<ptrdiff_t>(mid), values.end());
  return values[mid];
}

std::string bench_usage() {
  BenchOptions o;
  bool given = false;
  std::string usage = bench_flags(o, given).usage();
  const std::string head = "Usage: nodemeter bench [flags]";
  usage.replace(
      0, head.size(),
      "Usage: nodemeter bench [flags] [-- COMMAND [ARGS...]]\n\n"
      "Measures how long reading cgroup files takes on this host, per file kind and read\n"
      "method (open+read+close; openat on a kept directory descriptor; a kept descriptor\n"
      "re-read with pread at offset 0), and the agent's whole collection pass against the\n"
      "pread floor. With --create, a COMMAND after -- runs while the synthetic cgroups\n"
      "exist, with NODEMETER_BENCH_CGROUP_ROOT (a --cgroup-root for them),\n"
      "NODEMETER_BENCH_PARENT_DIRS, NODEMETER_BENCH_MODE, NODEMETER_BENCH_PODS,\n"
      "NODEMETER_BENCH_CONTAINERS and NODEMETER_BENCH_BURNER_PIDS in its environment.");
  return usage + kJsonHelp;
}

boost::system::result<BenchOptions, std::string> parse_bench_options(
    const std::vector<std::string>& args) {
  using Result = boost::system::result<BenchOptions, std::string>;
  BenchOptions o;
  bool iterations_given = false;
  auto flags = bench_flags(o, iterations_given);
  std::vector<std::string> own(args.begin(), std::find(args.begin(), args.end(), "--"));
  if (own.size() < args.size())
    o.command.assign(args.begin() + static_cast<ptrdiff_t>(own.size()) + 1, args.end());
  if (auto r = flags.parse(own); !r) return Result(boost::system::in_place_error, r.error());
  if (o.show_help) return o;
  const auto error = [](std::string s) {
    return Result(boost::system::in_place_error, std::move(s));
  };
  if (iterations_given && o.duration) {
    return error("nodemeter bench: --iterations and --duration exclude each other; give one.");
  }
  if (o.burners > 0 && o.create == 0) {
    return error("nodemeter bench: --burners needs --create (burners run in synthetic cgroups).");
  }
  if (o.burners > o.create) {
    return error("nodemeter bench: --burners " + std::to_string(o.burners) + " exceeds --create " +
                 std::to_string(o.create) + " (at most one burner per container).");
  }
  if (args.size() > own.size() && o.command.empty()) {
    return error("nodemeter bench: -- must be followed by a command to run.");
  }
  if (!o.command.empty() && o.create == 0) {
    return error(
        "nodemeter bench: a command after -- needs --create (it runs while the "
        "synthetic cgroups exist).");
  }
  return o;
}

std::string render_bench_table(const BenchReport& r) {
  std::string out = "cgroup " + r.mode + " at " + r.cgroup_root + "; " + std::to_string(r.cgroups) +
                    " cgroups measured (" +
                    (r.scope == "pods" ? "pod and container cgroups" : "all cgroups") + ")";
  if (r.created) {
    out += "; synthetic node " + r.created->parent + ": " + std::to_string(r.created->containers) +
           " containers in " + std::to_string(r.created->pods) + " pods, " +
           std::to_string(r.created->burners) + " burners";
  }
  out += "\n";
  if (!r.files.empty()) {
    out += "\nlatency of one read, per file kind and read method (";
    out += r.duration ? format_duration(*r.duration) + " each"
                      : std::to_string(r.iterations.value_or(0)) + " reads each";
    out += ", round-robin over the cgroups that have the file)\n\n";
    const std::array<size_t, 8> w{24, 16, 8, 8, 10, 10, 10, 10};
    const std::array<const char*, 8> head{"FILE", "METHOD", "CGROUPS", "READS",
                                          "P50",  "P90",    "P99",     "MAX"};
    for (size_t i = 0; i < head.size(); ++i)
      out += pad(head[i], w[i], i >= 2);
    out += "\n";
    size_t errors = 0;
    for (const auto& f : r.files) {
      out += pad(f.file, w[0], false);
      out += pad(to_string(f.method), w[1], false);
      out += pad(std::to_string(f.cgroups), w[2], true);
      out += pad(std::to_string(f.latency.reads), w[3], true);
      out += pad(format_latency(f.latency.p50_ns), w[4], true);
      out += pad(format_latency(f.latency.p90_ns), w[5], true);
      out += pad(format_latency(f.latency.p99_ns), w[6], true);
      out += pad(format_latency(f.latency.max_ns), w[7], true);
      out += "\n";
      errors += f.errors;
    }
    if (errors > 0) {
      out += std::to_string(errors) + " reads failed (cgroups that vanished mid-run, say)\n";
    }
  }
  if (r.pass) {
    const PassResult& p = *r.pass;
    out += "\ncollection pass over " + std::to_string(p.pods) + " pods + " +
           std::to_string(p.containers) + " containers (" + std::to_string(p.cgroups) +
           " cgroups; median of " + std::to_string(p.passes) + " passes)\n";
    const auto row = [&](const std::string& what, uint64_t ns) {
      out += "  " + pad(what, 58, false) + pad(format_ms(ns), 12, true);
      if (p.floor_pread_ns && *p.floor_pread_ns > 0) {
        out += pad(format_ratio(static_cast<double>(ns) / static_cast<double>(*p.floor_pread_ns)),
                   9, true);
      }
      out += "\n";
    };
    row("nodemeter agent pass (scan, read, parse, store, snapshot)", p.median_ns);
    out += "  " + pad("  of which CPU time (user + system)", 58, false) +
           pad(format_ms(p.cpu_median_ns), 12, true) + "\n";
    if (p.floor_pread_ns) {
      row("floor: kept descriptors re-read with pread, no parsing", *p.floor_pread_ns);
      row("floor: openat on kept directory descriptors + read", *p.floor_openat_ns);
      row("floor: open + read + close", *p.floor_open_read_close_ns);
      std::string files;
      for (const auto& f : p.floor_files)
        files += (files.empty() ? "" : " ") + f;
      out += "  floor files: " + files + "\n";
    } else {
      out +=
          "  no pod or container cgroups here: the pass read the node only, and there is no "
          "floor to hold it against\n";
    }
    if (p.ratio) {
      out += "  pass / pread floor: " + format_ratio(*p.ratio) +
             " (target <= 1.30x: " + (*p.ratio <= 1.3 ? "met" : "not met") + ")\n";
    }
  }
  if (r.interrupted) out += "\ninterrupted: the numbers above are partial\n";
  return out;
}

nlohmann::ordered_json bench_json(const BenchReport& r) {
  using nlohmann::ordered_json;
  ordered_json j;
  j["version"] = r.version;
  j["cgroup_root"] = r.cgroup_root;
  j["mode"] = r.mode;
  j["scope"] = r.scope;
  j["cgroups"] = r.cgroups;
  j["iterations"] = r.iterations ? ordered_json(*r.iterations) : ordered_json(nullptr);
  j["duration_ns"] = r.duration ? ordered_json(r.duration->count()) : ordered_json(nullptr);
  if (r.created) {
    j["created"] = {{"containers", r.created->containers},
                    {"pods", r.created->pods},
                    {"burners", r.created->burners},
                    {"parent", r.created->parent}};
  } else {
    j["created"] = nullptr;
  }
  j["files"] = ordered_json::array();
  for (const auto& f : r.files) {
    j["files"].push_back({{"file", f.file},
                          {"method", to_string(f.method)},
                          {"cgroups", f.cgroups},
                          {"reads", f.latency.reads},
                          {"errors", f.errors},
                          {"p50_ns", f.latency.p50_ns},
                          {"p90_ns", f.latency.p90_ns},
                          {"p99_ns", f.latency.p99_ns},
                          {"max_ns", f.latency.max_ns}});
  }
  if (r.pass) {
    const PassResult& p = *r.pass;
    ordered_json pass{
        {"pods", p.pods},     {"containers", p.containers}, {"cgroups", p.cgroups},
        {"passes", p.passes}, {"median_ns", p.median_ns},   {"cpu_median_ns", p.cpu_median_ns},
        {"min_ns", p.min_ns}, {"max_ns", p.max_ns},         {"floor_files", p.floor_files}};
    if (p.floor_pread_ns) {
      pass["floor_median_ns"] = {{"pread", *p.floor_pread_ns},
                                 {"openat", *p.floor_openat_ns},
                                 {"open+read+close", *p.floor_open_read_close_ns}};
    } else {
      pass["floor_median_ns"] = nullptr;
    }
    pass["ratio"] = p.ratio ? ordered_json(*p.ratio) : ordered_json(nullptr);
    j["pass"] = std::move(pass);
  } else {
    j["pass"] = nullptr;
  }
  j["interrupted"] = r.interrupted;
  return j;
}

int run_bench(const std::vector<std::string>& args, std::FILE* out, std::FILE* err) {
  auto parsed = parse_bench_options(args);
  if (!parsed) {
    std::fprintf(err, "%s\n", parsed.error().c_str());
    return 2;
  }
  const BenchOptions o = std::move(*parsed);
  if (o.show_help) {
    std::fputs(bench_usage().c_str(), out);
    return 0;
  }

  auto host = cgroup::detect_layout(o.cgroup_root, o.proc_root);
  if (!host) {
    std::fprintf(err, "nodemeter bench: no cgroups to measure: %s.\n", host.error().c_str());
    return 1;
  }
  const size_t fd_limit = raise_fd_limit();
  SignalGuard signals;
  Progress progress(err);

  BenchReport report;
  report.version = NODEMETER_VERSION;
  report.cgroup_root = o.cgroup_root.string();
  report.mode = cgroup::to_string(host->mode);
  report.scope = o.pods_only ? "pods" : "all";
  if (o.duration) {
    report.duration = o.duration;
  } else {
    report.iterations = o.iterations;
  }

  // The tree measured: the host's, or the synthetic node's.
  std::unique_ptr<SyntheticNode> node;
  cgroup::Layout layout = *host;
  const auto fail = [&](const std::string& sentence) {
    progress.finish();
    if (node) node->cleanup();
    std::fprintf(err, "%s\n", sentence.c_str());
    return 1;
  };
  const auto interrupted_exit = [&] {
    progress.finish();
    if (node) node->cleanup();
    std::fprintf(err, "nodemeter bench: interrupted; everything it made is removed.\n");
    return 128 + static_cast<int>(g_signal);
  };
  if (o.create > 0) {
    node = std::make_unique<SyntheticNode>(*host, o.proc_root);
    if (auto r = node->create(o.create, o.burners, progress); !r) return fail(r.error());
    if (interrupted()) return interrupted_exit();
    layout = node->layout();
    report.created =
        CreatedInfo{node->containers(), node->pods(), node->burner_pids().size(), node->parent()};
  }

  // The cgroups measured, per hierarchy directory, as paths relative to it.
  std::map<std::string, std::vector<std::string>> rel_by_hierarchy;
  std::vector<std::string> pod_rels;
  if (o.pods_only) {
    const cgroup::ScanResult scan = cgroup::scan(layout);
    for (const auto& pod : scan.pods) {
      pod_rels.push_back(pod.rel_path);
      for (const auto& c : pod.containers)
        pod_rels.push_back(c.rel_path);
    }
    if (pod_rels.empty()) {
      return fail("nodemeter bench: --pods-only found no pod or container cgroups under " +
                  layout.primary().string() + ".");
    }
  }
  std::set<std::string> distinct;
  struct KindFiles {
    std::string name;
    std::vector<CellFile> files;
  };
  std::vector<KindFiles> kinds;
  for (FileKind kind : kBenchKinds) {
    const std::string dir = hierarchy_of(layout, kind);
    if (dir.empty()) continue;
    auto [it, fresh] = rel_by_hierarchy.try_emplace(dir);
    if (fresh) {
      if (o.pods_only) {
        it->second = pod_rels;
      } else {
        walk_dirs(dir, "", it->second);
      }
    }
    KindFiles k{cgroup::file_name(kind, layout.mode), {}};
    for (const auto& rel : it->second) {
      CellFile f{join(dir, rel), ""};
      f.path = f.dir + "/" + k.name;
      if (::access(f.path.c_str(), R_OK) != 0) continue;
      distinct.insert(rel);
      k.files.push_back(std::move(f));
    }
    if (!k.files.empty()) kinds.push_back(std::move(k));
  }
  report.cgroups = distinct.size();
  if (kinds.empty()) {
    return fail("nodemeter bench: no cgroup files to read under " + layout.root.string() +
                " (none of cpu.stat, cpuacct.usage, memory.stat, ... is there).");
  }
  if (o.create > 0) report.cgroup_root = o.cgroup_root.string();

  if (o.iterations > 0 || o.duration) {
    CellRunner cells(fd_limit > 512 ? fd_limit - 256 : fd_limit / 2, progress);
    const std::array<ReadMethod, 3> methods{ReadMethod::kOpenReadClose, ReadMethod::kOpenat,
                                            ReadMethod::kPread};
    for (const auto& k : kinds) {
      for (ReadMethod m : methods) {
        if (interrupted()) break;
        progress.update(k.name + " " + to_string(m));
        report.files.push_back(cells.run(k.name, k.files, m, o.iterations, o.duration));
      }
    }
  }
  if (interrupted()) return interrupted_exit();
  if (o.passes > 0) report.pass = measure_pass(o, layout, fd_limit, progress, err);
  if (interrupted()) return interrupted_exit();
  progress.finish();

  if (o.json) {
    std::fprintf(out, "%s\n", bench_json(report).dump(2).c_str());
  } else {
    std::fputs(render_bench_table(report).c_str(), out);
  }
  std::fflush(out);

  int status = 0;
  if (!o.command.empty() && node) {
    status = run_command(o.command, *node, report.mode, err);
    if (interrupted()) return interrupted_exit();
  }
  if (node) node->cleanup();
  return status;
}

int run_bench(const std::vector<std::string>& args) {
  return run_bench(args, stdout, stderr);
}

}  // namespace nodemeter::agent
