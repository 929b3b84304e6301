// The scanner and the reader over files captured from a real pure cgroup v2 kernel (Debian 12's
// 6.1, booted by tests/vm): every value the reader returns is checked against the kernel's own
// text, parsed here independently, so fixture formats and reality cannot drift apart.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>

#include "cgroup/reader.h"
#include "cgroup/scan.h"
#include "support/fixture_tree.h"

namespace fs = std::filesystem;
using namespace nodemeter::cgroup;

namespace {

fs::path captured(const std::string& snapshot) {
  return fs::path(std::getenv("NODEMETER_SOURCE_DIR")) / "tests/fixtures/captured-v2" / snapshot;
}

std::map<std::string, uint64_t> keyed(const fs::path& file) {
  std::map<std::string, uint64_t> out;
  std::istringstream in(nodemeter::testing::read_text(file));
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value)
    out[key] = value;
  return out;
}

uint64_t single(const fs::path& file) {
  return std::stoull(nodemeter::testing::read_text(file));
}

Layout v2_layout(const fs::path& root) {
  Layout l;
  l.mode = Mode::kV2;
  l.root = l.cpu = l.cpuacct = l.memory = l.blkio = l.pids = root;
  return l;
}

}  // namespace

TEST_CASE("captured v2: scan finds the VM's pods and containers", "[captured]") {
  const auto result = scan(v2_layout(captured("t0")));
  CHECK(result.kubepods_rel_path == "kubepods.slice");
  std::map<std::string, QosClass> pods;
  size_t containers = 0;
  for (const auto& p : result.pods) {
    pods[p.uid] = p.qos;
    containers += p.containers.size();
    for (const auto& c : p.containers)
      CHECK(c.runtime == Runtime::kContainerd);
  }
  CHECK(pods.at("0b9e7d36-51c4-4f2a-8e63-a7d90c1b5f48") == QosClass::kBurstable);
  CHECK(pods.at("9f8e7d6c-5b4a-4392-8180-7f6e5d4c3b2a") == QosClass::kGuaranteed);
  CHECK(pods.at("6a1f0c52-3d8e-4b7a-9c21-5e0f8d4b2a17") == QosClass::kBurstable);
  CHECK(containers >= 6);
}

TEST_CASE("captured v2: the reader returns exactly what the kernel wrote", "[captured]") {
  for (const std::string snapshot : {"t0", "t1"}) {
    SECTION(snapshot) {
      const fs::path root = captured(snapshot);
      const Layout layout = v2_layout(root);
      const auto result = scan(layout);
      std::vector<CgroupTarget> targets;
      for (const auto& p : result.pods) {
        targets.push_back({p.rel_path, p.inode});
        for (const auto& c : p.containers)
          targets.push_back({c.rel_path, c.inode});
      }
      REQUIRE(targets.size() >= 9);
      CgroupReader reader(layout, root / "no-proc");
      const auto samples = reader.read(targets, ReadOptions{true, true});
      REQUIRE(samples.size() == targets.size());
      bool saw_throttling = false, saw_swap = false, saw_oom = false;
      for (size_t i = 0; i < targets.size(); ++i) {
        const fs::path dir = root / targets[i].rel_path;
        INFO(targets[i].rel_path);
        if (!fs::exists(dir / "cpu.stat")) {
          // The capture kept only this pod's containers: its own files are missing, which the
          // reader must report, never turn into zeros.
          CHECK_FALSE(samples[i].cpu.has_value());
          continue;
        }
        REQUIRE(samples[i].cpu.has_value());
        REQUIRE(samples[i].memory.has_value());
        const auto cpu_stat = keyed(dir / "cpu.stat");
        const auto memory_stat = keyed(dir / "memory.stat");
        const CpuUsage& cpu = *samples[i].cpu;
        const MemoryUsage& mem = *samples[i].memory;
        CHECK(cpu.cumulative_ns == cpu_stat.at("usage_usec") * 1000);
        CHECK(cpu.user_ns == cpu_stat.at("user_usec") * 1000);
        CHECK(cpu.system_ns == cpu_stat.at("system_usec") * 1000);
        CHECK(cpu.throttled_periods == cpu_stat.at("nr_throttled"));
        CHECK(cpu.throttled_ns == cpu_stat.at("throttled_usec") * 1000);
        saw_throttling = saw_throttling || cpu_stat.at("nr_throttled") > 0;
        const uint64_t current = single(dir / "memory.current");
        CHECK(mem.usage_bytes == current);
        CHECK(mem.working_set_bytes == working_set_bytes(current, memory_stat.at("inactive_file")));
        CHECK(mem.rss_bytes == memory_stat.at("anon"));
        CHECK(mem.cache_bytes == memory_stat.at("file"));
        CHECK(mem.page_faults == memory_stat.at("pgfault"));
        CHECK(mem.major_page_faults == memory_stat.at("pgmajfault"));
        CHECK(mem.swap_bytes == single(dir / "memory.swap.current"));
        saw_swap = saw_swap || mem.swap_bytes.value_or(0) > 0;
        CHECK(mem.oom_kills == keyed(dir / "memory.events").at("oom_kill"));
        saw_oom = saw_oom || mem.oom_kills.value_or(0) > 0;
        const std::string max = nodemeter::testing::read_text(dir / "memory.max");
        if (max.rfind("max", 0) == 0) {
          CHECK_FALSE(mem.limit_bytes.has_value());
        } else {
          CHECK(mem.limit_bytes == std::stoull(max));
        }
        REQUIRE(samples[i].pressure.cpu.has_value());
        REQUIRE(samples[i].pressure.memory.has_value());
        REQUIRE(samples[i].pressure.io.has_value());
        CHECK(samples[i].pressure.memory->full.has_value());
      }
      // The VM ran a throttled burner, a container pushed into swap and an OOM kill.
      CHECK(saw_throttling);
      CHECK(saw_swap);
      CHECK(saw_oom);
    }
  }
}
