// The reader under descriptor exhaustion (found by tests/e2e/faults.py: with RLIMIT_NOFILE below
// what the kept descriptors need, the reader took every descriptor and the agent could neither
// create its event loop nor accept a connection). It must leave descriptors for the rest of the
// process, keep reading every cgroup, and keep descriptors again once the limit has grown.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "cgroup/layout.h"
#include "cgroup/reader.h"
#include "cgroup/scan.h"
#include "support/fixture_tree.h"

namespace fs = std::filesystem;
using namespace nodemeter::cgroup;
using nodemeter::testing::TempDir;

namespace {

size_t open_fds() {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    (void)e;
    ++n;
  }
  return n - 1;  // the iterator's own descriptor
}

// Restores the soft limit when the test ends, whatever happens.
struct SoftLimit {
  rlimit saved{};
  SoftLimit() { REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0); }
  ~SoftLimit() { ::setrlimit(RLIMIT_NOFILE, &saved); }
  void set(rlim_t soft) {
    rlimit l = saved;
    l.rlim_cur = soft;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &l) == 0);
  }
};

}  // namespace

TEST_CASE("reader: out of descriptors, it keeps fewer and still reads every cgroup", "[reader]") {
  TempDir dir;
  nodemeter::testing::copy_tree(nodemeter::testing::fixture_path("v1-cgroupfs-containerd"),
                                dir.path());
  // 40 more containers beside one of the fixture's, each a copy of its files.
  const auto layout = detect_layout(dir / "cgroup", dir / "proc");
  REQUIRE(layout.has_value());
  const ScanResult before = scan(*layout);
  REQUIRE(!before.pods.empty());
  const PodCgroup& pod = before.pods.front();
  REQUIRE(!pod.containers.empty());
  const std::string& model = pod.containers.front().rel_path;
  for (int i = 0; i < 40; ++i) {
    char id[65];
    std::snprintf(id, sizeof id, "%064x", 0xabc000 + i);
    for (const char* ctrl : {"cpu", "cpuacct", "memory"}) {
      fs::copy(dir / "cgroup" / ctrl / model, dir / "cgroup" / ctrl / pod.rel_path / id,
               fs::copy_options::recursive);
    }
  }
  std::vector<CgroupTarget> targets;
  for (const auto& p : scan(*layout).pods) {
    targets.push_back({p.rel_path, p.inode});
    for (const auto& c : p.containers)
      targets.push_back({c.rel_path, c.inode});
  }
  REQUIRE(targets.size() > 50);

  CgroupReader reader(*layout, dir / "proc");
  const ReadOptions options{.pressure = false, .limits = false};
  SoftLimit limit;
  // Room for about 60 descriptors beyond what the process holds: the five kept per v1 cgroup
  // would need some 250.
  limit.set(open_fds() + 60);

  for (int pass = 0; pass < 3; ++pass) {
    const auto samples = reader.read(targets, options);
    size_t good = 0;
    for (const auto& s : samples)
      good += s.cpu.has_value() && s.memory.has_value() ? 1 : 0;
    INFO("pass " << pass);
    CHECK(good == targets.size());
    // What it keeps leaves room: the rest of the process can still open files.
    CHECK(reader.open_descriptors() <= 30);
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    if (fd >= 0) ::close(fd);
  }

  // The limit grows (the agent raises it): descriptors are kept again for every file.
  limit.set(limit.saved.rlim_cur);
  reader.read(targets, options);
  CHECK(reader.open_descriptors() > 200);
}
