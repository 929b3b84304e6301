// Regressions from tests/fuzz and tests/e2e/faults.py for pod identity.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "agent/identity.h"
#include "support/fixture_tree.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nodemeter::agent::parse_rfc3339;
using nodemeter::testing::TempDir;

TEST_CASE("parse_rfc3339: times system_clock cannot hold are no time", "[identity][fuzz]") {
  // fuzz_runtime_config: year 0000 overflowed the nanosecond count (signed overflow, UBSan).
  CHECK_FALSE(parse_rfc3339("0000-01-01T00:00:00+23:59").has_value());
  CHECK_FALSE(parse_rfc3339("0001-01-01T00:00:00Z").has_value());  // Go's zero time
  CHECK_FALSE(parse_rfc3339("9999-12-31T23:59:59.999999999-23:59").has_value());
  CHECK_FALSE(parse_rfc3339("1677-12-31T23:59:59Z").has_value());
  CHECK_FALSE(parse_rfc3339("2262-01-01T00:00:00Z").has_value());
  const auto low = parse_rfc3339("1678-01-01T00:00:00+23:59");
  const auto high = parse_rfc3339("2261-12-31T23:59:59.999999999-23:59");
  REQUIRE(low.has_value());
  REQUIRE(high.has_value());
  CHECK(*low < *high);
  CHECK(parse_rfc3339("2022-01-07T17:33:26Z").has_value());
}

namespace {

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

std::string containerd_config(const std::string& type, const std::string& name) {
  return R"({"annotations": {"io.kubernetes.cri.container-type": ")" + type +
         R"(", "io.kubernetes.cri.container-name": ")" + name +
         R"(", "io.kubernetes.cri.sandbox-name": "web-1", "io.kubernetes.cri.sandbox-namespace": "default",
         "io.kubernetes.cri.sandbox-uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"}})";
}

}  // namespace

TEST_CASE("runtime state: names return after the state directory vanished and came back",
          "[identity]") {
  // tests/e2e/faults.py: a container first seen while the state was gone stayed unnamed for good.
  TempDir dir;
  const fs::path state = dir / "containerd";
  const std::string sandbox_id(64, 'a');
  const std::string app_id(64, 'b');
  nodemeter::agent::RuntimeStateSource source({state, {}});
  nodemeter::cgroup::ScanResult scan;
  nodemeter::cgroup::PodCgroup pod;
  pod.uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
  pod.containers = {{sandbox_id, nodemeter::cgroup::Runtime::kUnknown, "", 1},
                    {app_id, nodemeter::cgroup::Runtime::kUnknown, "", 2}};
  scan.pods = {pod};

  // The state directory is missing while the pod's cgroups appear.
  source.refresh(scan);
  CHECK_FALSE(source.pod(pod.uid).has_value());
  CHECK_FALSE(source.container(pod.uid, app_id).has_value());
  source.refresh(scan);
  const size_t reads = source.config_reads();
  source.refresh(scan);
  CHECK(source.config_reads() == reads);  // nothing changed on disk: no new reads

  // It comes back, holding the containers' configs.
  write(state / sandbox_id / "config.json", containerd_config("sandbox", ""));
  write(state / app_id / "config.json", containerd_config("container", "app"));
  source.refresh(scan);
  REQUIRE(source.pod(pod.uid).has_value());
  CHECK(source.pod(pod.uid)->name == "web-1");
  REQUIRE(source.container(pod.uid, app_id).has_value());
  CHECK(source.container(pod.uid, app_id)->name == "app");

  // A garbage config is read (and logged) once, not again when the directory changes.
  const std::string bad_id(64, 'c');
  write(state / bad_id / "config.json", "{garbage");
  scan.pods[0].containers.push_back({bad_id, nodemeter::cgroup::Runtime::kUnknown, "", 3});
  source.refresh(scan);
  const size_t after_bad = source.config_reads();
  write(state / std::string(64, 'd') / "config.json", containerd_config("container", "other"));
  source.refresh(scan);
  CHECK(source.config_reads() == after_bad);
}
