// Test helpers for cgroup trees on disk: a temp directory removed on scope exit, copies of the
// checked-in fixture trees (tests/fixtures/trees/<name>/), in-place rewrites of cgroup files, and
// the paths the kubelet and the runtimes give pod and container cgroups, for edge cases.
// Helpers throw std::runtime_error on failure: a broken fixture must fail the test, loudly.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

#include "cgroup/scan.h"

namespace nodemeter::testing {

namespace fs = std::filesystem;

// A fresh directory under /tmp, removed with everything in it when the object goes.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "nodemeter-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp: " + std::string(std::strerror(errno)));
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  fs::path operator/(const fs::path& rel) const { return path_ / rel; }

 private:
  fs::path path_;
};

// tests/fixtures/trees/<name> in the source tree (NODEMETER_SOURCE_DIR is set by CTest).
inline fs::path fixture_path(std::string_view name) {
  const char* source = std::getenv("NODEMETER_SOURCE_DIR");
  if (source == nullptr || *source == '\0') {
    throw std::runtime_error("NODEMETER_SOURCE_DIR is not set; run the tests through ctest");
  }
  fs::path path = fs::path(source) / "tests" / "fixtures" / "trees" / fs::path(name);
  if (!fs::is_directory(path)) throw std::runtime_error("no fixture tree " + path.string());
  return path;
}

// Copies the tree at src to dst (created as needed), for tests that change files.
inline void copy_tree(const fs::path& src, const fs::path& dst) {
  fs::create_directories(dst);
  fs::copy(src, dst, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
}

// Writes text to path. An existing file is truncated and rewritten IN PLACE (same inode), never
// replaced by a rename: a descriptor kept open on it sees the new text, as on cgroupfs.
// A missing file is created (parent directories included).
inline void write_file(const fs::path& path, std::string_view text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    fs::create_directories(path.parent_path());
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  }
  if (fd < 0) throw std::runtime_error("open " + path.string() + ": " + std::strerror(errno));
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw std::runtime_error("write " + path.string() + ": " + std::strerror(err));
    }
    text.remove_prefix(static_cast<size_t>(n));
  }
  ::close(fd);
}

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// ---- Where the kubelet and the runtimes put pods and containers -----------------------------

enum class Driver { kCgroupfs, kSystemd };

// The kubepods cgroup: "kubepods" / "kubepods.slice", or under --cgroup-root (e.g. "kubelet":
// "kubelet/kubepods" / "kubelet.slice/kubelet-kubepods.slice").
inline std::string kubepods_rel_path(Driver driver, std::string_view cgroup_root = {}) {
  const std::string root(cgroup_root);
  if (driver == Driver::kCgroupfs) return root.empty() ? "kubepods" : root + "/kubepods";
  return root.empty() ? "kubepods.slice" : root + ".slice/" + root + "-kubepods.slice";
}

// The pod cgroup the kubelet creates. uid is canonical (dashes, or 32 hex for static pods).
inline std::string pod_rel_path(Driver driver, cgroup::QosClass qos, std::string_view uid,
                                std::string_view cgroup_root = {}) {
  const std::string kubepods = kubepods_rel_path(driver, cgroup_root);
  const char* qos_name = qos == cgroup::QosClass::kBurstable ? "burstable" : "besteffort";
  if (driver == Driver::kCgroupfs) {
    const std::string parent =
        qos == cgroup::QosClass::kGuaranteed ? kubepods : kubepods + "/" + qos_name;
    return parent + "/pod" + std::string(uid);
  }
  std::string escaped(uid);
  for (char& c : escaped) {
    if (c == '-') c = '_';
  }
  const std::string last = fs::path(kubepods).filename().string();  // "<stem>.slice"
  const std::string stem = last.substr(0, last.size() - std::string_view(".slice").size());
  if (qos == cgroup::QosClass::kGuaranteed) {
    return kubepods + "/" + stem + "-pod" + escaped + ".slice";
  }
  const std::string qos_stem = stem + "-" + qos_name;
  return kubepods + "/" + qos_stem + ".slice/" + qos_stem + "-pod" + escaped + ".slice";
}

// The name of a container's cgroup inside its pod cgroup: <prefix>-<id>.scope under systemd,
// the bare id under cgroupfs (crio-<id> for CRI-O).
inline std::string container_dir_name(Driver driver, cgroup::Runtime runtime, std::string_view id) {
  std::string prefix;
  switch (runtime) {
    case cgroup::Runtime::kContainerd:
      prefix = driver == Driver::kSystemd ? "cri-containerd-" : "";
      break;
    case cgroup::Runtime::kCrio:
      prefix = "crio-";
      break;
    case cgroup::Runtime::kDocker:
      prefix = driver == Driver::kSystemd ? "docker-" : "";
      break;
    case cgroup::Runtime::kUnknown:
      break;
  }
  return prefix + std::string(id) + (driver == Driver::kSystemd ? ".scope" : "");
}

// Creates the cgroup directory rel under every hierarchy root given (e.g. {root} on v2, or
// {root/"cpu", root/"cpuacct", root/"memory"} on v1) and returns its path under the first.
inline fs::path make_cgroup(std::initializer_list<fs::path> hierarchies, std::string_view rel) {
  fs::path first;
  for (const auto& hierarchy : hierarchies) {
    const fs::path dir = hierarchy / fs::path(rel);
    fs::create_directories(dir);
    if (first.empty()) first = dir;
  }
  return first;
}

}  // namespace nodemeter::testing
