// Real cgroups and real processes for the real-kernel tests: a cgroup made in one or more
// hierarchies and removed again (tasks moved out first) by its destructor, and forked children that
// burn a known amount of CPU or hold a known amount of anonymous memory, killed and reaped by
// theirs. Everything is torn down on scope exit, also when an assertion throws.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace nodemeter::test_support {

namespace kernel_detail {

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// One write(2) of the whole value, as cgroupfs expects; returns 0 or the errno.
inline int write_value(const std::filesystem::path& path, const std::string& value) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  const ssize_t n = ::write(fd, value.data(), value.size());
  const int err = n < 0 ? errno : 0;
  ::close(fd);
  return err;
}

inline std::vector<pid_t> pids_in(const std::filesystem::path& dir) {
  std::vector<pid_t> pids;
  std::istringstream in(read_text(dir / "cgroup.procs"));
  for (long pid = 0; in >> pid;)
    pids.push_back(static_cast<pid_t>(pid));
  return pids;
}

}  // namespace kernel_detail

// Says why the kernel tests cannot run here and ends the process with 77 (CTest: skipped).
[[noreturn]] inline void skip_kernel_tests(const std::string& why) {
  std::fprintf(stderr, "SKIP: real-kernel cgroup tests need to create cgroups: %s\n", why.c_str());
  std::fflush(stderr);
  std::exit(77);
}

// A cgroup named `name` directly under each of the given hierarchy roots.
class RealCgroup {
 public:
  RealCgroup(std::vector<std::filesystem::path> hierarchies, std::string name)
      : hierarchies_(std::move(hierarchies)), name_(std::move(name)) {
    if (::geteuid() != 0) skip_kernel_tests("not running as root");
    for (const auto& h : hierarchies_) {
      if (!std::filesystem::exists(h / "cgroup.procs")) {
        remove_all_dirs();
        skip_kernel_tests(h.string() + " is not a mounted cgroup hierarchy");
      }
      if (::mkdir((h / name_).c_str(), 0755) != 0) {
        const int err = errno;
        remove_all_dirs();
        if (err == EACCES || err == EPERM || err == EROFS) {
          skip_kernel_tests("mkdir " + (h / name_).string() + ": " + std::strerror(err));
        }
        throw std::runtime_error("mkdir " + (h / name_).string() + ": " + std::strerror(err));
      }
      created_.push_back(true);
    }
  }
  ~RealCgroup() {
    try {
      remove_all_dirs();
    } catch (...) {
      // A destructor must not throw; what could not be removed is reported by remove_all_dirs.
    }
  }
  RealCgroup(const RealCgroup&) = delete;
  RealCgroup& operator=(const RealCgroup&) = delete;

  const std::string& name() const { return name_; }
  std::filesystem::path dir(size_t hierarchy) const { return hierarchies_.at(hierarchy) / name_; }

  // Puts a process into this cgroup in every hierarchy (cgroup.procs moves the whole process).
  void add_process(pid_t pid) const {
    for (size_t i = 0; i < hierarchies_.size(); ++i)
      write(i, "cgroup.procs", std::to_string(pid));
  }

  void write(size_t hierarchy, const std::string& file, const std::string& value) const {
    const auto path = dir(hierarchy) / file;
    if (const int err = kernel_detail::write_value(path, value)) {
      throw std::runtime_error("write " + value + " to " + path.string() + ": " +
                               std::strerror(err));
    }
  }

  uint64_t inode(size_t hierarchy) const {
    struct stat st {};
    if (::stat(dir(hierarchy).c_str(), &st) != 0) {
      throw std::runtime_error("stat " + dir(hierarchy).string() + ": " + std::strerror(errno));
    }
    return st.st_ino;
  }

  // rmdir in every hierarchy now (the cgroup must hold no tasks); the destructor tolerates it.
  void remove() {
    for (size_t i = 0; i < hierarchies_.size(); ++i) {
      if (::rmdir(dir(i).c_str()) != 0) {
        throw std::runtime_error("rmdir " + dir(i).string() + ": " + std::strerror(errno));
      }
    }
  }

  // mkdir again at the same paths: a new cgroup (new inode) where the old one was.
  void recreate() {
    for (size_t i = 0; i < hierarchies_.size(); ++i) {
      if (::mkdir(dir(i).c_str(), 0755) != 0) {
        throw std::runtime_error("mkdir " + dir(i).string() + ": " + std::strerror(errno));
      }
    }
  }

 private:
  // Moves any task still inside to the hierarchy root, then removes the directory; the kernel may
  // take a moment to let go of an exiting task, so rmdir is retried briefly.
  void remove_all_dirs() {
    for (size_t i = 0; i < created_.size(); ++i) {
      const auto d = dir(i);
      std::error_code ec;
      if (!std::filesystem::exists(d, ec)) continue;
      for (int attempt = 0; attempt < 100; ++attempt) {
        for (pid_t pid : kernel_detail::pids_in(d)) {
          kernel_detail::write_value(hierarchies_[i] / "cgroup.procs", std::to_string(pid));
        }
        if (::rmdir(d.c_str()) == 0 || errno == ENOENT) break;
        if (attempt == 99) {
          std::fprintf(stderr, "could not remove %s: %s\n", d.c_str(), std::strerror(errno));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }

  std::vector<std::filesystem::path> hierarchies_;
  std::string name_;
  std::vector<bool> created_;
};

// A unique cgroup name for this process and call.
inline std::string unique_cgroup_name(const std::string& what) {
  static int counter = 0;
  return "nodemeter-test-" + what + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(++counter);
}

// A forked child that waits for start() before doing its work, so that the parent can first put
// it into a cgroup: everything it then uses is charged there.
class Child {
 public:
  // Burns CPU until its own CPU clock (CLOCK_PROCESS_CPUTIME_ID) reaches cpu_seconds, then exits.
  static Child burner(double cpu_seconds) {
    return Child([cpu_seconds](int, int) {
      timespec ts{};
      const auto now = [&ts] {
        ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
      };
      volatile uint64_t sink = 0;
      while (now() < cpu_seconds) {
        for (uint64_t i = 0; i < 100000; ++i)
          sink = sink + i;
      }
      ::_exit(0);
    });
  }

  // Maps and touches `bytes` of private anonymous memory, says so, and holds it until killed.
  static Child allocator(size_t bytes) {
    return Child([bytes](int ready_fd, int go_fd) {
      void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) ::_exit(2);
      const long page = ::sysconf(_SC_PAGESIZE);
      for (size_t off = 0; off < bytes; off += static_cast<size_t>(page)) {
        static_cast<volatile char*>(p)[off] = 1;
      }
      if (::write(ready_fd, "r", 1) != 1) ::_exit(3);
      char c;
      while (::read(go_fd, &c, 1) != 0) {  // holds the memory until the parent goes away
      }
      ::_exit(0);
    });
  }

  Child(Child&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)),
        go_fd_(std::exchange(other.go_fd_, -1)),
        ready_fd_(std::exchange(other.ready_fd_, -1)) {}
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
    if (go_fd_ >= 0) ::close(go_fd_);
    if (ready_fd_ >= 0) ::close(ready_fd_);
  }

  pid_t pid() const { return pid_; }

  // Lets the child begin its work.
  void start() {
    if (::write(go_fd_, "g", 1) != 1) throw std::runtime_error("cannot start child");
  }

  // Blocks until an allocator has touched all its memory.
  void wait_ready() {
    char c = 0;
    ssize_t n;
    while ((n = ::read(ready_fd_, &c, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1) throw std::runtime_error("child died before it was ready");
  }

  // Waits for the child to exit and returns the CPU time (user + system) the kernel accounted to
  // it, from wait4's rusage.
  std::chrono::nanoseconds reap() {
    int status = 0;
    rusage ru{};
    pid_t r;
    while ((r = ::wait4(pid_, &status, 0, &ru)) < 0 && errno == EINTR) {
    }
    if (r != pid_) throw std::runtime_error("wait4 failed");
    pid_ = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error("child did not exit cleanly");
    }
    const auto tv_ns = [](const timeval& tv) {
      return std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec);
    };
    return std::chrono::duration_cast<std::chrono::nanoseconds>(tv_ns(ru.ru_utime) +
                                                                tv_ns(ru.ru_stime));
  }

 private:
  template <class Work>
  explicit Child(Work work) {
    int go[2];
    int ready[2];
    if (::pipe2(go, O_CLOEXEC) != 0 || ::pipe2(ready, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid_ == 0) {
      ::close(go[1]);
      ::close(ready[0]);
      char c;
      ssize_t n;
      while ((n = ::read(go[0], &c, 1)) < 0 && errno == EINTR) {
      }
      if (n != 1) ::_exit(1);
      work(ready[1], go[0]);
      ::_exit(0);
    }
    ::close(go[0]);
    ::close(ready[1]);
    go_fd_ = go[1];
    ready_fd_ = ready[0];
  }

  pid_t pid_ = -1;
  int go_fd_ = -1;
  int ready_fd_ = -1;
};

}  // namespace nodemeter::test_support
