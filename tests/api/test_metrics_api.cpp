// The Metrics API: golden JSON for every path from a fixed snapshot and a fixed clock, the
// listing rules, selectors, Table output, discovery and the error statuses.
// NODEMETER_UPDATE_GOLDEN=1 rewrites tests/golden/api/*.json (then review the diff).
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "api/k8s_json.h"
#include "api/metrics_api.h"

using namespace nodemeter::api;
using namespace std::chrono_literals;

namespace {

const WallTime kT0{std::chrono::seconds{1'700'000'000}};  // 2023-11-14T22:13:20Z

std::filesystem::path golden_dir() {
  return std::filesystem::path(__FILE__).parent_path().parent_path() / "golden" / "api";
}

void check_golden(const std::string& name, const std::string& actual) {
  const auto path = golden_dir() / name;
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

Sample sample(WallTime t, uint64_t cpu_ns, uint64_t working_set) {
  Sample s;
  s.time = t;
  s.cpu.cumulative_ns = cpu_ns;
  s.memory.usage_bytes = working_set + 4096;
  s.memory.working_set_bytes = working_set;
  return s;
}

WindowUsage usage(WallTime ts, std::chrono::nanoseconds window, uint64_t nano_cores,
                  uint64_t working_set, std::optional<uint64_t> swap = std::nullopt) {
  return WindowUsage{ts, window, nano_cores, working_set, swap};
}

ContainerSnapshot container(std::string name, std::optional<WindowUsage> u, bool read = true) {
  ContainerSnapshot c;
  c.name = std::move(name);
  c.id = std::string(64, 'a');
  if (read)
    c.latest = sample(u ? u->timestamp : kT0 + 30s, 1'000'000, u ? u->working_set_bytes : 1);
  c.usage = u;
  return c;
}

PodSnapshot pod(std::string ns, std::string name, std::map<std::string, std::string> labels,
                std::vector<ContainerSnapshot> containers, std::string phase = "Running") {
  PodSnapshot p;
  p.uid = "uid-" + name;
  p.name = std::move(name);
  p.namespace_ = std::move(ns);
  p.labels = std::move(labels);
  p.phase = std::move(phase);
  p.containers = std::move(containers);
  return p;
}

// One node with every case the listing rules distinguish.
Snapshot fixture() {
  Snapshot s;
  s.taken_at = kT0 + 30s;
  s.interval = 10s;
  s.window = 30s;
  s.passes = 4;
  s.node.name = "node-1";
  s.node.start_time = kT0 - 86400s;
  s.node.latest = sample(kT0 + 30s, 123'456'789'000'000, 749'785'088);
  s.node.latest->memory.swap_bytes = 1'048'576;  // this node has swap: usage carries the key
  s.node.usage = usage(kT0 + 30s, 10'043ms, 487'558'164, 749'785'088, 1'048'576);

  auto coredns = container("coredns", usage(kT0 + 20s, 90s, 1'500'000, 12'582'912, 4096));
  coredns.stale = true;  // missed the last pass, but its window is younger than --window
  auto stale = container("x", usage(kT0 - 5s, 30s, 1'000'000, 1'048'576));
  stale.stale = true;  // its window is older than --window: the pod leaves the list

  s.pods = {
      pod("default", "db-0", {{"app", "db"}}, {container("postgres", std::nullopt)}),
      pod("default", "done-job", {}, {container("job", usage(kT0 + 30s, 30s, 1000, 2048))},
          "Succeeded"),
      pod("default", "web-1", {{"app", "web"}, {"tier", "frontend"}},
          {container("app", usage(kT0 + 30s, 30s, 5'000'000, 1500)),
           container("init", std::nullopt, /*read=*/false),
           container("sidecar", usage(kT0 + 29s, 29'500ms, 2'000'000'000, 1'048'576))}),
      pod("kube-system", "coredns-abc", {{"k8s-app", "kube-dns"}}, {coredns}),
      pod("monitoring", "stale-pod", {{"app", "stale"}}, {stale}),
      pod("other", "empty-pod", {}, {container("c", std::nullopt, /*read=*/false)}),
  };
  return s;
}

// A second node, as the aggregator merges it: not measured yet, one pod measured.
Snapshot second_node() {
  Snapshot s;
  s.taken_at = kT0 + 31s;
  s.window = 30s;
  s.node.name = "node-2";
  s.pods = {pod("default", "web-2", {{"app", "web"}},
                {container("app", usage(kT0 + 31s, 15s, 250'000'000, 3'221'225'472))})};
  return s;
}

const MetricsView& view() {
  static const MetricsView v = [] {
    MetricsView m = make_metrics_view(fixture());
    m.add(second_node());
    return m;
  }();
  return v;
}

MetricsApiOptions options() {
  MetricsApiOptions o;
  o.version.major = "0";
  o.version.minor = "1";
  o.version.git_version = "v0.1.0";
  o.version.compiler = "gcc";
  o.version.platform = "linux/amd64";
  return o;
}

constexpr const char* kKubectlTable =
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s."
    "io,application/json";

Response get(const std::string& target, const std::string& accept = "",
             http::verb method = http::verb::get,
             const std::string& user_agent = "kubectl/v1.32.0") {
  Request req{method, target, 11};
  if (!accept.empty()) req.set(http::field::accept, accept);
  req.set(http::field::user_agent, user_agent);
  return handle_metrics_api(req, view(), options(), kT0 + 45s);
}

void check(const std::string& target, unsigned status, const std::string& golden,
           const std::string& accept = "") {
  INFO(target);
  const Response res = get(target, accept);
  CHECK(res.result_int() == status);
  CHECK(res[http::field::content_type] == "application/json");
  check_golden(golden, res.body());
}

}  // namespace

TEST_CASE("listing follows metrics-server's rules", "[metricsapi]") {
  const MetricsView v = make_metrics_view(fixture());
  REQUIRE(v.nodes.size() == 1);
  CHECK(v.nodes[0].name == "node-1");
  CHECK(v.nodes[0].usage.swap_bytes == 1'048'576u);

  std::vector<std::string> listed;
  for (const auto& p : v.pods)
    listed.push_back(p.namespace_ + "/" + p.name);
  // db-0: a container without a window; done-job: not Running; stale-pod: window too old;
  // empty-pod: no container ever read.
  CHECK(listed == std::vector<std::string>{"default/web-1", "kube-system/coredns-abc"});

  const auto& web = v.pods[0];
  REQUIRE(web.containers.size() == 2);  // the exited init container does not hide the pod
  CHECK(web.containers[0].name == "app");
  CHECK(web.containers[1].name == "sidecar");
  CHECK(web.timestamp == kT0 + 29s);  // the container whose newest sample is oldest
  CHECK(web.window == 29'500ms);
  CHECK(v.known_pods.contains({"default", "db-0"}));
  CHECK(v.known_nodes.contains("node-1"));

  SECTION("a young container without a window hides its pod until it has one") {
    Snapshot s = fixture();
    s.pods[2].containers[0].usage.reset();
    const MetricsView young = make_metrics_view(s);
    REQUIRE(young.pods.size() == 1);
    CHECK(young.pods[0].name == "coredns-abc");
  }
  SECTION("merging snapshots keeps nodes and pods sorted") {
    const MetricsView& merged = view();
    REQUIRE(merged.nodes.size() == 1);  // node-2 has no window yet
    CHECK(merged.known_nodes.contains("node-2"));
    REQUIRE(merged.pods.size() == 3);
    CHECK(merged.pods[1].name == "web-2");
  }
}

TEST_CASE("discovery documents", "[metricsapi]") {
  check("/apis", 200, "apis.json");
  check("/apis/", 200, "apis.json");
  check("/apis", 406, "apis_aggregated_406.json",
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList");
  // With a fallback the legacy document is acceptable.
  check("/apis", 200, "apis.json",
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json");
  check("/apis/metrics.k8s.io", 200, "group.json");
  check("/apis/metrics.k8s.io/v1beta1", 200, "v1beta1_resources.json");
  check("/apis/metrics.k8s.io/v1beta1/", 200, "v1beta1_resources.json");
  check("/apis/metrics.k8s.io/v1", 200, "v1_resources.json");
  check("/version", 200, "version.json");
  check("/apis/metrics.k8s.io/v2/nodes", 404, "no_route.json");
  check("/apis/apps", 404, "no_route.json");
  check("/apis/metrics.k8s.io/v1beta1/namespaces/default/nodes", 404, "no_route.json");
}

TEST_CASE("node metrics", "[metricsapi]") {
  check("/apis/metrics.k8s.io/v1beta1/nodes", 200, "v1beta1_nodes.json");
  check("/apis/metrics.k8s.io/v1/nodes", 200, "v1_nodes.json");
  check("/apis/metrics.k8s.io/v1beta1/nodes/node-1", 200, "v1beta1_node.json");
  check("/apis/metrics.k8s.io/v1beta1/nodes/nope", 404, "node_not_found.json");
  check("/apis/metrics.k8s.io/v1beta1/nodes/node-2", 404, "nodemetrics_not_found.json");
  check("/apis/metrics.k8s.io/v1beta1/nodes?fieldSelector=metadata.name%21%3Dnode-1", 200,
        "nodes_empty.json");
  check("/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=kubernetes.io%2Fos%3Dlinux", 200,
        "nodes_empty.json");
}

TEST_CASE("pod metrics", "[metricsapi]") {
  check("/apis/metrics.k8s.io/v1beta1/pods", 200, "v1beta1_pods.json");
  check("/apis/metrics.k8s.io/v1/pods", 200, "v1_pods.json");
  check("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods", 200, "default_pods.json");
  check("/apis/metrics.k8s.io/v1beta1/namespaces/nowhere/pods", 200, "nowhere_pods.json");
  check("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web-1", 200, "pod_web-1.json");
  check("/apis/metrics.k8s.io/v1/namespaces/kube-system/pods/coredns-abc", 200,
        "v1_pod_coredns.json");
  check("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/db-0", 404,
        "podmetrics_not_found.json");
  check("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope", 404, "pod_not_found.json");
  // Unknown query parameters are ignored.
  CHECK(get("/apis/metrics.k8s.io/v1beta1/pods?limit=500&resourceVersion=0&timeout=32s").body() ==
        get("/apis/metrics.k8s.io/v1beta1/pods").body());
}

TEST_CASE("selectors filter server-side", "[metricsapi]") {
  check("/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Dweb", 200, "pods_app_web.json");
  check("/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app+in+%28web%2Cdb%29%2Ctier", 200,
        "pods_app_in_tier.json");
  check("/apis/metrics.k8s.io/v1beta1/pods?labelSelector=%21app", 200, "pods_no_app.json");
  check("/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=metadata.namespace%3Dkube-system", 200,
        "pods_kube_system.json");
  check("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-2",
        200, "pods_web-2.json");
  check("/apis/metrics.k8s.io/v1beta1/pods?labelSelector=a+b", 400, "bad_label_selector.json");
  check("/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=spec.nodeName%3Dnode-1", 400,
        "bad_field_selector.json");
  check("/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=a%3D%3C", 400,
        "bad_label_selector_escaped.json");
}

TEST_CASE("Table output for kubectl get", "[metricsapi]") {
  check("/apis/metrics.k8s.io/v1beta1/pods", 200, "table_pods.json", kKubectlTable);
  check("/apis/metrics.k8s.io/v1beta1/nodes", 200, "table_nodes.json", kKubectlTable);
  check("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web-1", 200, "table_pod.json",
        kKubectlTable);
  check("/apis/metrics.k8s.io/v1beta1/pods?includeObject=None", 200, "table_pods_none.json",
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io");
  check("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web-1?includeObject=Object", 200,
        "table_pod_object.json", kKubectlTable);
  check("/apis/metrics.k8s.io/v1beta1/namespaces/nowhere/pods", 200, "table_empty.json",
        kKubectlTable);
}

TEST_CASE("methods, HEAD, pretty printing and content type", "[metricsapi]") {
  const Response post = get("/apis/metrics.k8s.io/v1beta1/pods", "", http::verb::post);
  CHECK(post.result_int() == 405);
  CHECK(post[http::field::allow] == "GET, HEAD");
  check_golden("method_not_allowed.json", post.body());
  CHECK(get("/version", "", http::verb::delete_).result_int() == 405);
  CHECK(get("/nope", "", http::verb::post).result_int() == 404);

  const Response full = get("/apis/metrics.k8s.io/v1beta1/nodes");
  const Response head = get("/apis/metrics.k8s.io/v1beta1/nodes", "", http::verb::head);
  CHECK(head.result_int() == 200);  // the server sends the length of this body, not the bytes
  CHECK(head.body() == full.body());
  CHECK(head[http::field::content_length] == std::to_string(full.body().size()));

  // kubectl asks for protobuf first: the answer is JSON and says so.
  const Response proto =
      get("/apis/metrics.k8s.io/v1beta1/nodes", "application/vnd.kubernetes.protobuf, */*");
  CHECK(proto[http::field::content_type] == "application/json");
  CHECK(proto.body() == full.body());

  const Response curl =
      get("/apis/metrics.k8s.io/v1beta1/nodes/node-1", "", http::verb::get, "curl/8.5.0");
  check_golden("v1beta1_node_pretty.json", curl.body());
  CHECK(get("/apis/metrics.k8s.io/v1beta1/nodes/node-1?pretty=false", "", http::verb::get,
            "curl/8.5.0")
            .body() == get("/apis/metrics.k8s.io/v1beta1/nodes/node-1").body());
}

TEST_CASE("paths the handler claims", "[metricsapi]") {
  CHECK(is_metrics_api_path("/apis"));
  CHECK(is_metrics_api_path("/apis/metrics.k8s.io/v1beta1/pods?labelSelector=a"));
  CHECK(is_metrics_api_path("/version"));
  CHECK_FALSE(is_metrics_api_path("/metrics/resource"));
  CHECK_FALSE(is_metrics_api_path("/apiserver"));
  const VersionInfo v = version_info("0.1.0");
  CHECK(v.major == "0");
  CHECK(v.minor == "1");
  CHECK(v.git_version == "v0.1.0");
}

TEST_CASE("Go wire formats: durations, times, strings, queries", "[metricsapi]") {
  const std::vector<std::pair<std::chrono::nanoseconds, std::string>> durations = {
      {0ns, "0s"},
      {1ns, "1ns"},
      {1'500ns, "1.5\xC2\xB5s"},
      {10ms, "10ms"},
      {999'999'999ns, "999.999999ms"},
      {1'000'000'001ns, "1.000000001s"},
      {10'043ms, "10.043s"},
      {30s, "30s"},
      {60s, "1m0s"},
      {90s, "1m30s"},
      {3600s, "1h0m0s"},
      {3'723'500ms, "1h2m3.5s"},
      {-2s, "-2s"},
  };
  for (const auto& [d, want] : durations) {
    INFO(d.count());
    CHECK(go_duration(d) == want);
  }

  CHECK(rfc3339(kT0) == "2023-11-14T22:13:20Z");
  CHECK(rfc3339(kT0 + 999ms) == "2023-11-14T22:13:20Z");  // metav1.Time keeps whole seconds
  CHECK(rfc3339(WallTime{}) == "1970-01-01T00:00:00Z");
  CHECK(rfc3339(WallTime{std::chrono::seconds{951'825'600}}) == "2000-02-29T12:00:00Z");

  CHECK(go_json_string("a<b>&c") == "\"a\\u003cb\\u003e\\u0026c\"");
  CHECK(go_json_string("q\"\\\n\x01") == "\"q\\\"\\\\\\n\\u0001\"");
  CHECK(go_json_string("\xC2\xB5s") == "\"\xC2\xB5s\"");
  CHECK(go_json_string("bad\xff") == "\"bad\\ufffd\"");
  CHECK(go_json_string("\xE2\x80\xA8") == "\"\\u2028\"");
  CHECK(go_quote("a\"b") == "\"a\\\"b\"");
  CHECK(go_quote("\x01\xff") == "\"\\x01\\xff\"");

  CHECK(query_param("a=1&labelSelector=app%3Dweb&x", "labelSelector") == "app=web");
  CHECK(query_param("labelSelector=a+b", "labelSelector") == "a b");
  CHECK(query_param("labelSelector=%zz&labelSelector=ok", "labelSelector") == "ok");
  CHECK(query_param("fieldSelector=", "fieldSelector") == "");
  CHECK_FALSE(query_param("a=1", "labelSelector").has_value());
  CHECK(split_target("/apis/x%2Dy?a=%41").path == "/apis/x-y");
}

TEST_CASE("the swap key appears only where the node has swap", "[metricsapi]") {
  Snapshot s;
  s.taken_at = kT0 + 31s;
  s.window = 30s;
  s.node.name = "no-swap-node";
  s.node.latest = sample(kT0 + 31s, 1'000'000'000, 1'048'576);  // no swap_bytes: SwapTotal is 0
  s.node.usage = usage(kT0 + 31s, 15s, 1'000'000, 1'048'576, 0);
  // cgroup v1 memsw accounting reports swap 0 for containers even without swap.
  s.pods = {
      pod("default", "web", {}, {container("app", usage(kT0 + 31s, 15s, 250'000'000, 4096, 0))})};
  const MetricsView v = make_metrics_view(s);
  REQUIRE(v.nodes.size() == 1);
  CHECK_FALSE(v.nodes[0].usage.swap_bytes.has_value());
  REQUIRE(v.pods.size() == 1);
  CHECK_FALSE(v.pods[0].containers.at(0).usage.swap_bytes.has_value());
  s.node.latest->memory.swap_bytes = 0;  // swap configured, none in use: the key shows 0
  const MetricsView with = make_metrics_view(s);
  CHECK(with.pods[0].containers.at(0).usage.swap_bytes == 0u);
}
