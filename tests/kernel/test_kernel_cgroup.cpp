// The reader against the real kernel: real cgroups made on this host (v1 cpu, cpuacct and memory
// hierarchies, and the cgroup2 tree), real processes burning CPU and holding anonymous memory in
// them, and the reader's numbers checked against what the processes did. Removal while the reader
// holds descriptors, and recreation at the same path, are checked on the real cgroupfs too.
// Everything made here is removed again, also when a check fails.
#include <catch2/catch.hpp>

#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cgroup/layout.h"
#include "cgroup/reader.h"
#include "support/kernel_cgroup.h"

using namespace nodemeter::cgroup;
using nodemeter::test_support::Child;
using nodemeter::test_support::RealCgroup;
using nodemeter::test_support::skip_kernel_tests;
using nodemeter::test_support::unique_cgroup_name;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

const fs::path kCgroupRoot = "/sys/fs/cgroup";
const fs::path kProcRoot = "/proc";
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kCgroup2Magic = 0x63677270;

Layout host_layout() {
  auto layout = detect_layout(kCgroupRoot, kProcRoot);
  if (!layout)
    skip_kernel_tests("no cgroup layout at " + kCgroupRoot.string() + ": " + layout.error());
  return *layout;
}

Layout v1_layout() {
  Layout layout = host_layout();
  if (layout.is_v2()) skip_kernel_tests("this host has no cgroup v1 hierarchies");
  return layout;
}

// The cgroup2 tree: the root on a v2 host, unified/ on a hybrid one.
Layout v2_layout() {
  const Layout host = host_layout();
  Layout layout;
  layout.mode = Mode::kV2;
  layout.root = host.is_v2() ? kCgroupRoot : kCgroupRoot / "unified";
  struct statfs fs_info {};
  if (::statfs(layout.root.c_str(), &fs_info) != 0 ||
      static_cast<uint64_t>(fs_info.f_type) != kCgroup2Magic) {
    skip_kernel_tests(layout.root.string() + " is not a cgroup2 mount");
  }
  layout.cpu = layout.cpuacct = layout.memory = layout.root;
  return layout;
}

// The distinct v1 hierarchy directories a test cgroup must exist in, and where each part is.
struct V1Hierarchies {
  std::vector<fs::path> dirs;
  size_t cpu = 0;
  size_t cpuacct = 0;
  size_t memory = 0;
};

V1Hierarchies v1_hierarchies(const Layout& layout) {
  V1Hierarchies h;
  const auto index_of = [&](const fs::path& dir) {
    const auto it = std::find(h.dirs.begin(), h.dirs.end(), dir);
    if (it != h.dirs.end()) return static_cast<size_t>(it - h.dirs.begin());
    h.dirs.push_back(dir);
    return h.dirs.size() - 1;
  };
  h.cpuacct = index_of(layout.cpuacct);
  h.cpu = index_of(layout.cpu);
  h.memory = index_of(layout.memory);
  return h;
}

const CgroupSample& only(const std::vector<CgroupSample>& samples) {
  REQUIRE(samples.size() == 1);
  return samples[0];
}

double relative_error(double got, double want) {
  return std::abs(got - want) / want;
}

uint64_t meminfo_bytes(const std::string& key) {
  std::ifstream in(kProcRoot / "meminfo");
  std::string name;
  uint64_t kib = 0;
  std::string unit;
  while (in >> name >> kib) {
    if (name == key + ":") return kib * 1024;
    std::getline(in, unit);
  }
  FAIL("no " << key << " in /proc/meminfo");
  return 0;
}

// Burns cpu_seconds of CPU in cg and returns what the kernel accounted to the process.
std::chrono::nanoseconds burn_in(const RealCgroup& cg, double cpu_seconds) {
  Child burner = Child::burner(cpu_seconds);
  cg.add_process(burner.pid());
  burner.start();
  return burner.reap();
}

}  // namespace

TEST_CASE("real cgroups: v1 CPU of a burner in a real cgroup, and the node's", "[kernel]") {
  const Layout layout = v1_layout();
  const V1Hierarchies h = v1_hierarchies(layout);
  RealCgroup cg(h.dirs, unique_cgroup_name("cpu"));
  CgroupReader reader(layout, kProcRoot);
  const std::vector<CgroupTarget> targets{{cg.name(), cg.inode(h.memory)}};
  const ReadOptions options;

  const auto before = only(reader.read(targets, options));
  REQUIRE(before.cpu.has_value());
  const NodeSample node_before = reader.read_node(options);
  REQUIRE(node_before.cpu.has_value());

  const auto burned = burn_in(cg, 1.0);
  const auto after = only(reader.read(targets, options));
  const NodeSample node_after = reader.read_node(options);

  REQUIRE(after.cpu.has_value());
  CHECK(after.errors.empty());
  const double burned_ns = static_cast<double>(burned.count());
  const double got_ns = static_cast<double>(after.cpu->cumulative_ns - before.cpu->cumulative_ns);
  INFO("burned " << burned_ns / 1e9 << " s, cgroup reports " << got_ns / 1e9 << " s");
  CHECK(burned >= 1s);
  CHECK(relative_error(got_ns, burned_ns) <= 0.10);
  // cpuacct.stat is in USER_HZ ticks: the same time, coarser.
  REQUIRE(after.cpu->user_ns.has_value());
  REQUIRE(after.cpu->system_ns.has_value());
  const double split_ns = static_cast<double>(*after.cpu->user_ns + *after.cpu->system_ns);
  INFO("user + system " << split_ns / 1e9 << " s");
  CHECK(relative_error(split_ns, burned_ns) <= 0.10);
  CHECK(after.cpu->periods == 0u);  // no quota set
  CHECK(after.cpu->throttled_periods == 0u);

  // The node saw at least that CPU go by.
  REQUIRE(node_after.cpu.has_value());
  const double node_ns =
      static_cast<double>(node_after.cpu->cumulative_ns - node_before.cpu->cumulative_ns);
  INFO("node CPU went up by " << node_ns / 1e9 << " s");
  CHECK(node_ns >= 0.9 * burned_ns);
  REQUIRE(node_after.memory.has_value());
  CHECK(node_after.memory->working_set_bytes > 0);
  CHECK(node_after.memory->working_set_bytes <= node_after.memory->usage_bytes);
  CHECK(node_after.memory->limit_bytes == meminfo_bytes("MemTotal"));
}

TEST_CASE("real cgroups: v1 throttling of a burner under a CFS quota", "[kernel]") {
  const Layout layout = v1_layout();
  const V1Hierarchies h = v1_hierarchies(layout);
  RealCgroup cg(h.dirs, unique_cgroup_name("quota"));
  cg.write(h.cpu, "cpu.cfs_period_us", "100000");
  cg.write(h.cpu, "cpu.cfs_quota_us", "10000");  // a tenth of a core
  CgroupReader reader(layout, kProcRoot);
  const std::vector<CgroupTarget> targets{{cg.name(), cg.inode(h.memory)}};

  const auto burned = burn_in(cg, 0.3);
  const auto s = only(reader.read(targets, ReadOptions{}));
  REQUIRE(s.cpu.has_value());
  const double burned_ns = static_cast<double>(burned.count());
  INFO("burned " << burned_ns / 1e9 << " s, cgroup reports " << s.cpu->cumulative_ns / 1e9);
  CHECK(relative_error(static_cast<double>(s.cpu->cumulative_ns), burned_ns) <= 0.10);
  // 0.3 s at 10 ms per 100 ms period takes about 30 periods, nearly all of them throttled.
  REQUIRE(s.cpu->periods.has_value());
  CHECK(*s.cpu->periods >= 20);
  REQUIRE(s.cpu->throttled_periods.has_value());
  CHECK(*s.cpu->throttled_periods >= 10);
  CHECK(*s.cpu->throttled_periods <= *s.cpu->periods);
  REQUIRE(s.cpu->throttled_ns.has_value());
  CHECK(*s.cpu->throttled_ns > 0);
}

TEST_CASE("real cgroups: v1 working set of an allocator, and its limits", "[kernel]") {
  const Layout layout = v1_layout();
  const V1Hierarchies h = v1_hierarchies(layout);
  RealCgroup cg(h.dirs, unique_cgroup_name("mem"));
  cg.write(h.memory, "memory.limit_in_bytes", std::to_string(256 * kMiB));
  const bool memsw = fs::exists(cg.dir(h.memory) / "memory.memsw.limit_in_bytes");
  if (memsw) cg.write(h.memory, "memory.memsw.limit_in_bytes", std::to_string(384 * kMiB));
  CgroupReader reader(layout, kProcRoot);
  const std::vector<CgroupTarget> targets{{cg.name(), cg.inode(h.memory)}};

  const uint64_t allocated = 64 * kMiB;
  Child allocator = Child::allocator(allocated);
  cg.add_process(allocator.pid());
  allocator.start();
  allocator.wait_ready();

  const auto s = only(reader.read(targets, ReadOptions{}));
  REQUIRE(s.memory.has_value());
  CHECK(s.errors.empty());
  const auto& m = *s.memory;
  INFO("allocated " << allocated << ", usage " << m.usage_bytes << ", working set "
                    << m.working_set_bytes << ", rss " << m.rss_bytes.value_or(0));
  CHECK(relative_error(static_cast<double>(m.working_set_bytes), allocated) <= 0.05);
  REQUIRE(m.rss_bytes.has_value());
  CHECK(relative_error(static_cast<double>(*m.rss_bytes), allocated) <= 0.05);
  CHECK(m.working_set_bytes <= m.usage_bytes);
  CHECK(m.page_faults > 0u);
  CHECK(m.limit_bytes == 256 * kMiB);
  if (memsw) CHECK(m.swap_limit_bytes == 128 * kMiB);
  CHECK(m.failcnt == 0u);
  CHECK(m.oom_kills == 0u);
}

TEST_CASE("real cgroups: v1 cgroup removed while descriptors are held, then recreated",
          "[kernel]") {
  const Layout layout = v1_layout();
  const V1Hierarchies h = v1_hierarchies(layout);
  RealCgroup cg(h.dirs, unique_cgroup_name("gone"));
  CgroupReader reader(layout, kProcRoot);
  const ReadOptions options{.pressure = true, .limits = false};
  const uint64_t old_inode = cg.inode(h.memory);
  std::vector<CgroupTarget> targets{{cg.name(), old_inode}};

  burn_in(cg, 0.05);
  const auto first = only(reader.read(targets, options));
  REQUIRE(first.cpu.has_value());
  REQUIRE(first.memory.has_value());
  CHECK(first.cpu->cumulative_ns > 0);
  // cpuacct.usage, cpuacct.stat, cpu.stat, memory.usage_in_bytes, memory.stat
  CHECK(reader.open_descriptors() == 5);

  cg.remove();
  const auto gone = only(reader.read(targets, options));
  REQUIRE(gone.cpu.has_error());
  CHECK(gone.cpu.error().kind == ReadErrorKind::kGone);
  CHECK(gone.cpu.error().errno_value == ENODEV);  // a kept descriptor of a removed cgroup
  REQUIRE(gone.memory.has_error());
  CHECK(gone.memory.error().kind == ReadErrorKind::kGone);
  CHECK(gone.errors.empty());
  CHECK(reader.open_descriptors() == 0);

  cg.recreate();
  const uint64_t new_inode = cg.inode(h.memory);
  CHECK(new_inode != old_inode);
  targets[0].inode = new_inode;
  const auto fresh = only(reader.read(targets, options));
  REQUIRE(fresh.cpu.has_value());
  REQUIRE(fresh.memory.has_value());
  CHECK(fresh.cpu->cumulative_ns < first.cpu->cumulative_ns);  // a new cgroup starts over
  CHECK(reader.open_descriptors() == 5);
}

TEST_CASE("real cgroups: cgroup2 CPU of a burner, pressure, and removal", "[kernel]") {
  const Layout layout = v2_layout();
  RealCgroup cg({layout.root}, unique_cgroup_name("v2"));
  CgroupReader reader(layout, kProcRoot);
  const ReadOptions options{.pressure = true, .limits = false};
  std::vector<CgroupTarget> targets{{cg.name(), cg.inode(0)}};

  const auto before = only(reader.read(targets, options));
  INFO("cpu.stat: " << (before.cpu ? "read" : describe(before.cpu.error())));
  REQUIRE(before.cpu.has_value());  // cpu.stat with usage_usec is a core file of every cgroup
  const auto burned = burn_in(cg, 1.0);
  const auto after = only(reader.read(targets, options));
  REQUIRE(after.cpu.has_value());
  const double burned_ns = static_cast<double>(burned.count());
  const double got_ns = static_cast<double>(after.cpu->cumulative_ns - before.cpu->cumulative_ns);
  INFO("burned " << burned_ns / 1e9 << " s, cgroup reports " << got_ns / 1e9 << " s");
  CHECK(relative_error(got_ns, burned_ns) <= 0.10);
  REQUIRE(after.cpu->user_ns.has_value());
  REQUIRE(after.cpu->system_ns.has_value());
  CHECK(relative_error(static_cast<double>(*after.cpu->user_ns + *after.cpu->system_ns),
                       static_cast<double>(after.cpu->cumulative_ns)) <= 0.02);

  // What this kernel offers in a cgroup with no controllers enabled decides what must be read.
  const fs::path dir = cg.dir(0);
  CHECK(after.pressure.cpu.has_value() == fs::exists(dir / "cpu.pressure"));
  if (after.pressure.cpu) CHECK(after.pressure.cpu->some.has_value());
  CHECK(after.pressure.memory.has_value() == fs::exists(dir / "memory.pressure"));
  CHECK(after.pressure.io.has_value() == fs::exists(dir / "io.pressure"));
  if (fs::exists(dir / "memory.current")) {
    CHECK(after.memory.has_value());
  } else {
    REQUIRE(after.memory.has_error());
    CHECK(after.memory.error().kind == ReadErrorKind::kUnsupported);  // no memory controller here
    WARN("no memory controller in " << layout.root << ": memory checked on v1 only");
  }
  CHECK(after.errors.empty());
  const size_t held = reader.open_descriptors();
  CHECK(held >= 1);

  cg.remove();
  const auto gone = only(reader.read(targets, options));
  REQUIRE(gone.cpu.has_error());
  CHECK(gone.cpu.error().kind == ReadErrorKind::kGone);
  CHECK(gone.cpu.error().errno_value == ENODEV);
  CHECK(reader.open_descriptors() == 0);

  cg.recreate();
  CHECK(cg.inode(0) != targets[0].inode);
  targets[0].inode = cg.inode(0);
  const auto fresh = only(reader.read(targets, options));
  REQUIRE(fresh.cpu.has_value());
  CHECK(fresh.cpu->cumulative_ns < after.cpu->cumulative_ns);
  CHECK(reader.open_descriptors() == held);
}

TEST_CASE("real cgroups: the node on this host", "[kernel]") {
  const Layout layout = host_layout();
  CgroupReader reader(layout, kProcRoot);
  const NodeSample n = reader.read_node(ReadOptions{});
  CHECK(n.errors.empty());
  REQUIRE(n.cpu.has_value());
  CHECK(n.cpu->cumulative_ns > 0);
  REQUIRE(n.memory.has_value());
  CHECK(n.memory->usage_bytes > 0);
  CHECK(n.memory->working_set_bytes > 0);
  CHECK(n.memory->working_set_bytes <= n.memory->usage_bytes);
  CHECK(n.memory->limit_bytes == meminfo_bytes("MemTotal"));
  CHECK(n.memory->usage_bytes <= meminfo_bytes("MemTotal"));
  const bool swap = meminfo_bytes("SwapTotal") > 0;
  CHECK(n.memory->swap_bytes.has_value() == swap);
  CHECK(n.pressure.cpu.has_value() == fs::exists(kProcRoot / "pressure" / "cpu"));
  CHECK(n.pressure.memory.has_value() == fs::exists(kProcRoot / "pressure" / "memory"));
}
