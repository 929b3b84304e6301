// The kubelet Summary API: golden JSON from a fixed snapshot, availableBytes only under a limit,
// swap only where accounted, and the request handling.
// NODEMETER_UPDATE_GOLDEN=1 rewrites tests/golden/api/*.json (then review the diff).
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "api/summary.h"

using namespace nodemeter::api;
using namespace std::chrono_literals;

namespace {

const WallTime kT0{std::chrono::seconds{1'700'000'000}};

void check_summary_golden(const std::string& name, const std::string& actual) {
  const auto path =
      std::filesystem::path(__FILE__).parent_path().parent_path() / "golden" / "api" / name;
  const char* update = std::getenv("NODEMETER_UPDATE_GOLDEN");
  if (update && std::string(update) == "1") {
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << actual;
    return;
  }
  std::ifstream in(path, std::ios::binary);
  INFO("golden file " << path << " (NODEMETER_UPDATE_GOLDEN=1 writes it)");
  REQUIRE(in.good());
  std::stringstream expected;
  expected << in.rdbuf();
  CHECK(actual == expected.str());
}

Sample read_at(WallTime t, uint64_t cpu_ns, uint64_t usage, uint64_t working_set) {
  Sample s;
  s.time = t;
  s.cpu.cumulative_ns = cpu_ns;
  s.memory.usage_bytes = usage;
  s.memory.working_set_bytes = working_set;
  s.memory.rss_bytes = working_set / 2;
  s.memory.page_faults = 4242;
  s.memory.major_page_faults = 7;
  return s;
}

Snapshot summary_fixture() {
  Snapshot s;
  s.taken_at = kT0 + 30s;
  s.window = 30s;
  s.node.name = "node-1";
  s.node.start_time = kT0 - 86400s;
  s.node.latest = read_at(kT0 + 30s, 123'456'789'000'000, 3'000'000'000, 2'000'000'000);
  s.node.latest->memory.limit_bytes = 8'589'934'592;  // capacity
  s.node.latest->memory.swap_bytes = 1'048'576;
  s.node.latest->memory.swap_limit_bytes = 2'147'483'648;
  s.node.usage = WindowUsage{kT0 + 30s, 10s, 487'558'164, 2'000'000'000, 1'048'576};

  PodSnapshot web;
  web.uid = "0f9c3c8e-3f2a-4c39-9a49-7a5b0e0d1c11";
  web.name = "web-1";
  web.namespace_ = "default";
  web.start_time = kT0 - 3600s;
  web.latest = read_at(kT0 + 30s, 9'000'000'000, 80'000'000, 60'000'000);
  web.latest->memory.limit_bytes = 268'435'456;
  web.usage = WindowUsage{kT0 + 30s, 30s, 5'000'000, 60'000'000, std::nullopt};
  ContainerSnapshot app;
  app.name = "app";
  app.start_time = kT0 - 3500s;
  app.latest = read_at(kT0 + 30s, 8'000'000'000, 70'000'000, 50'000'000);
  app.latest->memory.limit_bytes = nodemeter::cgroup::kUnlimitedThreshold;  // reads as unlimited
  app.usage = WindowUsage{kT0 + 30s, 30s, 4'000'000, 50'000'000, std::nullopt};
  ContainerSnapshot init;  // exited: never read
  init.name = "init";
  ContainerSnapshot young;  // one sample so far: no rate yet
  young.name = "sidecar";
  young.latest = read_at(kT0 + 30s, 10'000'000, 1'000'000, 900'000);
  young.latest->memory.page_faults.reset();
  young.latest->memory.major_page_faults.reset();
  young.latest->memory.rss_bytes.reset();
  web.containers = {app, init, young};

  PodSnapshot unnamed;  // no pod source: the uid stands for the name, no namespace
  unnamed.uid = "8b1e6a52c6b84a3f9d1f0f7e2a3c4d5e";
  unnamed.name = unnamed.uid;
  unnamed.qos = nodemeter::cgroup::QosClass::kBestEffort;
  unnamed.latest = read_at(kT0 + 30s, 1'000, 4096, 4096);
  unnamed.latest->memory.swap_bytes = 0;

  PodSnapshot gone;  // nothing read: not reported
  gone.uid = "gone";
  gone.name = "gone";
  gone.namespace_ = "default";

  s.pods = {web, unnamed, gone};
  return s;
}

Response request(const std::string& target, http::verb method = http::verb::get) {
  Request req{method, target, 11};
  return handle_summary(req, summary_fixture());
}

}  // namespace

TEST_CASE("summary golden files", "[summary]") {
  const Response full = request("/stats/summary");
  CHECK(full.result_int() == 200);
  CHECK(full[http::field::content_type] == "application/json");
  check_summary_golden("summary.json", full.body());

  // nodemeter has none of the network/fs/volume stats only_cpu_and_memory leaves out.
  const Response only = request("/stats/summary?only_cpu_and_memory=true");
  CHECK(only.result_int() == 200);
  check_summary_golden("summary_only_cpu_and_memory.json", only.body());
  CHECK(only.body() == full.body());
}

TEST_CASE("summary fields follow the kubelet's types", "[summary]") {
  const Json j = summary_json(summary_fixture(), true);
  const Json& node = j["node"];
  CHECK(node["nodeName"] == "node-1");
  CHECK(node["startTime"] == "2023-11-13T22:13:20Z");
  CHECK(node["cpu"]["usageNanoCores"] == 487'558'164u);
  CHECK(node["cpu"]["usageCoreNanoSeconds"] == 123'456'789'000'000u);
  CHECK(node["memory"]["availableBytes"] == 8'589'934'592u - 2'000'000'000u);
  CHECK(node["swap"]["swapUsageBytes"] == 1'048'576u);
  CHECK(node["swap"]["swapAvailableBytes"] == 2'147'483'648u - 1'048'576u);
  CHECK_FALSE(node.contains("systemContainers"));

  REQUIRE(j["pods"].size() == 2);
  const Json& web = j["pods"][0];
  CHECK(web["podRef"]["uid"] == "0f9c3c8e-3f2a-4c39-9a49-7a5b0e0d1c11");
  CHECK(web["memory"]["availableBytes"] == 268'435'456u - 60'000'000u);
  REQUIRE(web["containers"].size() == 2);  // the exited init container is not reported
  const Json& app = web["containers"][0];
  CHECK_FALSE(app["memory"].contains("availableBytes"));  // limit >= 2^62: unlimited
  CHECK_FALSE(app.contains("swap"));
  const Json& young = web["containers"][1];
  CHECK_FALSE(young["cpu"].contains("usageNanoCores"));
  CHECK(young["cpu"]["usageCoreNanoSeconds"] == 10'000'000u);
  CHECK_FALSE(young["memory"].contains("rssBytes"));

  const Json& unnamed = j["pods"][1];
  CHECK(unnamed["podRef"]["namespace"] == "");
  CHECK(unnamed["startTime"].is_null());  // metav1.Time's zero value
  CHECK(unnamed["containers"].empty());
  CHECK(unnamed["swap"]["swapUsageBytes"] == 0u);
  CHECK_FALSE(unnamed["swap"].contains("swapAvailableBytes"));
}

TEST_CASE("summary request handling", "[summary]") {
  CHECK(is_summary_path("/stats/summary"));
  CHECK(is_summary_path("/stats/summary?only_cpu_and_memory=true"));
  CHECK_FALSE(is_summary_path("/stats/summaryx"));
  const Response post = request("/stats/summary", http::verb::post);
  CHECK(post.result_int() == 405);
  CHECK(post[http::field::content_type] == "application/json");
  const Response head = request("/stats/summary", http::verb::head);
  CHECK(head.result_int() == 200);
  CHECK(head.body() == request("/stats/summary").body());  // the server strips it for HEAD
  CHECK(head[http::field::content_length] ==
        std::to_string(request("/stats/summary").body().size()));
}
