// Golden files for /metrics/resource and /metrics/cadvisor: a fixture tree and a fake clock in,
// exact bytes out. NODEMETER_UPDATE_GOLDEN=1 rewrites the goldens deliberately.
#include <fcntl.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agent/clock.h"
#include "agent/identity.h"
#include "agent/log.h"
#include "agent/sampler.h"
#include "api/exposition.h"
#include "api/resource_metrics.h"
#include "cgroup/layout.h"
#include "cgroup/parse.h"
#include "support/fixture_tree.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nodemeter::testing::TempDir;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path golden_dir() {
  return fs::path(std::getenv("NODEMETER_SOURCE_DIR")) / "tests/golden/agent";
}

void compare_golden(const std::string& name, const std::string& actual) {
  const fs::path path = golden_dir() / name;
  if (const char* u = std::getenv("NODEMETER_UPDATE_GOLDEN"); u && std::string(u) == "1") {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << actual;
    WARN("rewrote " << path.string());
    return;
  }
  REQUIRE(fs::exists(path));
  const std::string expected = slurp(path);
  INFO("golden " << path.string() << " (NODEMETER_UPDATE_GOLDEN=1 regenerates)");
  CHECK(actual == expected);
}

// Container start times come from the runtime's state files' times: pin them.
void pin_state_times(const fs::path& root) {
  const struct timespec t[2] = {{1'700'000'000, 250'000'000}, {1'700'000'000, 250'000'000}};
  for (const char* dir : {"containerd", "crio"}) {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root / dir, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      ::utimensat(AT_FDCWD, it->path().c_str(), t, 0);
    }
  }
}

// Moves every CPU counter forward by 1 % of itself (in place: kept descriptors see it), so a
// parent's counter still is the sum of its children's.
void advance_cpu(const fs::path& cgroup_root) {
  for (auto& e : fs::recursive_directory_iterator(cgroup_root)) {
    const std::string name = e.path().filename().string();
    if (name == "cpuacct.usage") {
      const uint64_t v = std::stoull(slurp(e.path()));
      nodemeter::testing::write_file(e.path(), std::to_string(v + v / 100) + "\n");
    } else if (name == "cpu.stat") {
      std::string out, line;
      std::istringstream in(slurp(e.path()));
      while (std::getline(in, line)) {
        const auto sp = line.find(' ');
        const std::string key = line.substr(0, sp);
        if (key == "usage_usec" || key == "user_usec") {
          const uint64_t v = std::stoull(line.substr(sp + 1));
          line = key + " " + std::to_string(v + v / 100);
        }
        out += line + "\n";
      }
      nodemeter::testing::write_file(e.path(), out);
    }
  }
}

// Whether a cri-containerd-<id>.scope belongs to a pod sandbox (sandboxes are not read).
bool is_sandbox(const fs::path& root, const std::string& scope) {
  const std::string id = scope.substr(std::string("cri-containerd-").size(), 64);
  const auto j =
      nlohmann::json::parse(slurp(root / "containerd" / id / "config.json"), nullptr, false);
  return j.is_object() &&
         j["annotations"].value("io.kubernetes.cri.container-type", "") == "sandbox";
}

struct Fixture {
  TempDir dir;
  nodemeter::agent::FakeClock clock;
  std::FILE* devnull = std::fopen("/dev/null", "w");
  nodemeter::agent::Logger log{nodemeter::agent::LogFormat::kText, devnull};
  std::unique_ptr<nodemeter::agent::Sampler> sampler;

  explicit Fixture(const std::string& tree) {
    nodemeter::testing::copy_tree(nodemeter::testing::fixture_path(tree), dir.path());
    pin_state_times(dir.path());
    auto layout = nodemeter::cgroup::detect_layout(dir / "cgroup", dir / "proc");
    REQUIRE(layout.has_value());
    std::vector<std::unique_ptr<nodemeter::agent::PodSource>> sources;
    sources.push_back(std::make_unique<nodemeter::agent::RuntimeStateSource>(
        nodemeter::agent::RuntimeStateOptions{dir / "containerd", dir / "crio"}));
    sources.push_back(std::make_unique<nodemeter::agent::CgroupPathSource>(layout->primary()));
    sampler = std::make_unique<nodemeter::agent::Sampler>(
        *layout, dir / "proc",
        std::make_unique<nodemeter::agent::ChainedPodSource>(std::move(sources)),
        nodemeter::agent::SamplerOptions{"fixture-node", 5s, 15s}, clock, log);
  }
  ~Fixture() { std::fclose(devnull); }

  nodemeter::api::SnapshotPtr two_passes() {
    sampler->run_pass();
    clock.advance(5s);
    advance_cpu(dir / "cgroup");
    return sampler->run_pass();
  }
};

std::string render_resource(const nodemeter::api::Snapshot& s) {
  std::string out;
  nodemeter::api::GoTextSerializer::render(out, nodemeter::api::resource_families(s));
  return out;
}

std::string render_cadvisor(const nodemeter::api::Snapshot& s) {
  std::string out;
  nodemeter::api::GoTextSerializer::render(out, nodemeter::api::cadvisor_families(s));
  return out;
}

}  // namespace

TEST_CASE("golden /metrics/resource and /metrics/cadvisor for every layout", "[golden]") {
  // The Docker tree has no runtime state: its start times are cgroup change times, which a copy
  // cannot pin, so it is checked structurally below instead.
  for (const std::string tree : {"v1-cgroupfs-containerd", "v1-systemd-containerd",
                                 "v2-systemd-containerd", "v2-systemd-crio", "hybrid"}) {
    SECTION(tree) {
      Fixture f(tree);
      auto snap = f.two_passes();
      REQUIRE(snap);
      CHECK_FALSE(snap->scrape_error);
      CHECK_FALSE(snap->pods.empty());
      compare_golden(tree + ".resource.txt", render_resource(*snap));
      compare_golden(tree + ".cadvisor.txt", render_cadvisor(*snap));
    }
  }
}

TEST_CASE("a Docker node without runtime state is served from cgroup paths", "[golden]") {
  Fixture f("v2-cgroupfs-docker");
  auto snap = f.two_passes();
  const std::string text = render_resource(*snap);
  CHECK_FALSE(snap->scrape_error);
  CHECK(text.find("container_cpu_usage_seconds_total{container=\"") != std::string::npos);
  CHECK(text.find("container_start_time_seconds{") != std::string::npos);
  CHECK(text.find("resource_scrape_error 0\n") != std::string::npos);
  for (const auto& pod : snap->pods) {
    CHECK(pod.name == pod.uid);  // named by UID: nothing better is known
    for (const auto& c : pod.containers)
      CHECK(c.name == c.id);
  }
}

TEST_CASE("golden failure: one garbage file raises resource_scrape_error, the rest is served",
          "[golden]") {
  Fixture f("v2-systemd-containerd");
  f.sampler->run_pass();
  // Break one container's memory.stat and take another away between the passes.
  fs::path broken, gone;
  for (auto& e : fs::recursive_directory_iterator(f.dir / "cgroup")) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.rfind("cri-containerd-", 0) == 0 &&
        !is_sandbox(f.dir.path(), name)) {
      if (broken.empty()) {
        broken = e.path();
      } else if (gone.empty() && e.path().parent_path() != broken.parent_path()) {
        gone = e.path();
      }
    }
  }
  REQUIRE_FALSE(broken.empty());
  REQUIRE_FALSE(gone.empty());
  nodemeter::testing::write_file(broken / "memory.stat", "anon 12\nfile garbage\n");
  fs::remove_all(gone);
  f.clock.advance(5s);
  advance_cpu(f.dir / "cgroup");
  auto snap = f.sampler->run_pass();
  CHECK(snap->scrape_error);
  const std::string text = render_resource(*snap);
  CHECK(text.find("resource_scrape_error 1\n") != std::string::npos);
  compare_golden("failure.resource.txt", text);
}
