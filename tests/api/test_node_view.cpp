// The node view on the wire (agent → aggregator): exact bytes of a small view, lossless round
// trips of generated views (labels, swap, windows, escapes), errors for garbage and truncation,
// and the merge of many nodes' views into the cluster view with per-source slices.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <random>
#include <string>
#include <tuple>

#include "api/node_view.h"

using namespace nodemeter::api;
using namespace std::chrono_literals;

namespace {

const WallTime kT0{std::chrono::seconds{1'700'000'000}};

bool same_usage(const ResourceUsage& a, const ResourceUsage& b) {
  return a.cpu_nano_cores == b.cpu_nano_cores && a.memory_bytes == b.memory_bytes &&
         a.swap_bytes == b.swap_bytes;
}

// Field by field, so that a lossy encoding cannot hide behind a lossy comparison.
void require_same(const MetricsView& a, const MetricsView& b) {
  REQUIRE(a.nodes.size() == b.nodes.size());
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    INFO("node " << i);
    CHECK(a.nodes[i].name == b.nodes[i].name);
    CHECK(a.nodes[i].labels == b.nodes[i].labels);
    CHECK(a.nodes[i].timestamp == b.nodes[i].timestamp);
    CHECK(a.nodes[i].window == b.nodes[i].window);
    CHECK(same_usage(a.nodes[i].usage, b.nodes[i].usage));
  }
  REQUIRE(a.pods.size() == b.pods.size());
  for (size_t i = 0; i < a.pods.size(); ++i) {
    INFO("pod " << i);
    const auto& p = a.pods[i];
    const auto& q = b.pods[i];
    CHECK(p.namespace_ == q.namespace_);
    CHECK(p.name == q.name);
    CHECK(p.labels == q.labels);
    CHECK(p.timestamp == q.timestamp);
    CHECK(p.window == q.window);
    REQUIRE(p.containers.size() == q.containers.size());
    for (size_t c = 0; c < p.containers.size(); ++c) {
      CHECK(p.containers[c].name == q.containers[c].name);
      CHECK(same_usage(p.containers[c].usage, q.containers[c].usage));
    }
  }
  CHECK(a.known_nodes == b.known_nodes);
  CHECK(a.known_pods == b.known_pods);
}

PodMetricsItem pod(std::string ns, std::string name, WallTime ts, uint64_t cpu,
                   std::vector<std::string> containers = {"app"}) {
  PodMetricsItem p;
  p.namespace_ = std::move(ns);
  p.name = std::move(name);
  p.timestamp = ts;
  p.window = 15s;
  for (auto& c : containers)
    p.containers.push_back(ContainerMetricsItem{std::move(c), ResourceUsage{cpu, 1 << 20, {}}});
  return p;
}

MetricsView node_view(std::string node, std::vector<PodMetricsItem> pods, WallTime ts = kT0) {
  MetricsView v;
  v.nodes.push_back(NodeMetricsItem{node, {}, ts, 10s, ResourceUsage{1'000'000, 2 << 20, {}}});
  v.known_nodes.insert(node);
  for (auto& p : pods) {
    v.known_pods.insert({p.namespace_, p.name});
    v.pods.push_back(std::move(p));
  }
  std::sort(v.pods.begin(), v.pods.end(), [](auto& a, auto& b) {
    return std::tie(a.namespace_, a.name) < std::tie(b.namespace_, b.name);
  });
  return v;
}

// A random but valid view: names with escapes and multi-byte characters, optional swap, labels,
// timestamps to the nanosecond, a few known-only pods (not Running) and nodes without a window.
MetricsView random_view(std::mt19937_64& rng) {
  const auto pick = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n)(rng); };
  static const std::vector<std::string> pieces = {
      "web", "db",   "a-b", "x.y", "q\"uote", "back\\slash", "tab\t", "<&>",
      "ünï", "日本", "0",   "zz9", "kube",    "line\nend",   "\x01",  "emoji\xF0\x9F\x98\x80"};
  const auto name = [&] {
    std::string s = pieces[pick(pieces.size() - 1)];
    for (uint64_t i = pick(2); i > 0; --i)
      s += "-" + pieces[pick(pieces.size() - 1)];
    return s;
  };
  const auto usage = [&] {
    ResourceUsage u{pick(UINT64_MAX), pick(UINT64_MAX), {}};
    if (pick(1)) u.swap_bytes = pick(1) ? pick(UINT64_MAX) : 0;
    return u;
  };
  const auto labels = [&] {
    std::map<std::string, std::string> l;
    for (uint64_t i = pick(3); i > 0; --i)
      l[name()] = pick(3) ? name() : "";
    return l;
  };
  const auto when = [&] { return kT0 + std::chrono::nanoseconds(pick(int64_t{1} << 50)); };
  MetricsView v;
  for (uint64_t i = pick(3); i > 0; --i) {
    NodeMetricsItem n{"node-" + name(), labels(), when(),
                      std::chrono::nanoseconds(pick(60'000'000'000)), usage()};
    v.known_nodes.insert(n.name);
    if (std::none_of(v.nodes.begin(), v.nodes.end(), [&](auto& x) { return x.name == n.name; }))
      v.nodes.push_back(std::move(n));
  }
  v.known_nodes.insert("node-without-window");
  for (uint64_t i = pick(40); i > 0; --i) {
    PodMetricsItem p;
    p.namespace_ = pick(5) ? name() : "";
    p.name = name() + "-" + std::to_string(i);
    p.labels = labels();
    p.timestamp = when();
    p.window = std::chrono::nanoseconds(pick(60'000'000'000));
    for (uint64_t c = pick(3) + 1; c > 0; --c)
      p.containers.push_back(ContainerMetricsItem{name() + std::to_string(c), usage()});
    std::sort(p.containers.begin(), p.containers.end(),
              [](auto& a, auto& b) { return a.name < b.name; });
    v.known_pods.insert({p.namespace_, p.name});
    v.pods.push_back(std::move(p));
  }
  for (uint64_t i = pick(3); i > 0; --i)
    v.known_pods.insert({"pending", name() + "-not-running-" + std::to_string(i)});
  std::sort(v.nodes.begin(), v.nodes.end(), [](auto& a, auto& b) { return a.name < b.name; });
  std::sort(v.pods.begin(), v.pods.end(), [](auto& a, auto& b) {
    return std::tie(a.namespace_, a.name) < std::tie(b.namespace_, b.name);
  });
  return v;
}

std::string parse_error(std::string_view text) {
  const auto r = parse_node_view(text);
  REQUIRE_FALSE(r.has_value());
  return r.error();
}

}  // namespace

TEST_CASE("node view: exact bytes of a small view") {
  MetricsView v = node_view("node-1", {pod("default", "web", kT0 + 123ns, 5'000'000, {"app"})});
  v.nodes[0].labels = {{"kubernetes.io/os", "linux"}};
  v.nodes[0].usage.swap_bytes = 4096;
  v.pods[0].labels = {{"app", "web"}};
  v.known_pods.insert({"default", "job-done"});
  CHECK(encode_node_view(v) ==
        R"({"version":1,"nodes":[{"name":"node-1","labels":{"kubernetes.io/os":"linux"},)"
        R"("timestamp":1700000000000000000,"window":10000000000,)"
        R"("usage":{"cpu":1000000,"memory":2097152,"swap":4096}}],)"
        R"("pods":[{"namespace":"default","name":"web","labels":{"app":"web"},)"
        R"("timestamp":1700000000000000123,"window":15000000000,)"
        R"("containers":[{"name":"app","usage":{"cpu":5000000,"memory":1048576}}]}],)"
        R"("knownNodes":["node-1"],"knownPods":[["default","job-done"],["default","web"]]})");
}

TEST_CASE("node view: an empty view round-trips") {
  const MetricsView empty;
  CHECK(encode_node_view(empty) ==
        R"({"version":1,"nodes":[],"pods":[],"knownNodes":[],"knownPods":[]})");
  auto parsed = parse_node_view(encode_node_view(empty));
  REQUIRE(parsed.has_value());
  require_same(*parsed, empty);
}

TEST_CASE("node view: generated views round-trip losslessly") {
  std::mt19937_64 rng(20240601);
  for (int round = 0; round < 200; ++round) {
    INFO("round " << round);
    const MetricsView v = random_view(rng);
    const std::string text = encode_node_view(v);
    auto parsed = parse_node_view(text);
    INFO(text);
    REQUIRE(parsed.has_value());
    require_same(*parsed, v);
    CHECK(encode_node_view(*parsed) == text);
  }
}

TEST_CASE("node view: timestamps before the epoch and zero swap survive") {
  MetricsView v = node_view("n", {pod("ns", "p", WallTime{} - 1500ms, 0)});
  v.pods[0].containers[0].usage.swap_bytes = 0;
  auto parsed = parse_node_view(encode_node_view(v));
  REQUIRE(parsed.has_value());
  CHECK(parsed->pods[0].timestamp == WallTime{} - 1500ms);
  REQUIRE(parsed->pods[0].containers[0].usage.swap_bytes.has_value());
  CHECK(*parsed->pods[0].containers[0].usage.swap_bytes == 0);
  CHECK_FALSE(parsed->nodes[0].usage.swap_bytes.has_value());
}

TEST_CASE("node view: items in any order come back sorted") {
  const std::string text =
      R"({"version":1,"nodes":[{"name":"b","timestamp":1,"window":2,"usage":{"cpu":1,"memory":2}},)"
      R"({"name":"a","timestamp":1,"window":2,"usage":{"cpu":1,"memory":2}}],)"
      R"("pods":[{"namespace":"z","name":"a","timestamp":1,"window":2,"containers":[)"
      R"({"name":"side","usage":{"cpu":1,"memory":2}},{"name":"app","usage":{"cpu":3,"memory":4}}]},)"
      R"({"namespace":"a","name":"z","timestamp":1,"window":2,"containers":[]}]})";
  auto v = parse_node_view(text);
  REQUIRE(v.has_value());
  REQUIRE(v->nodes.size() == 2);
  CHECK(v->nodes[0].name == "a");
  REQUIRE(v->pods.size() == 2);
  CHECK(v->pods[0].namespace_ == "a");
  CHECK(v->pods[1].containers[0].name == "app");
  CHECK(v->pods[1].containers[0].usage.cpu_nano_cores == 3);
  CHECK(v->known_pods.empty());  // absent arrays are empty, not an error
}

TEST_CASE("node view: garbage is a clear error, never an exception") {
  CHECK(parse_error("").starts_with("node view: not JSON"));
  CHECK(parse_error("{\"version\":1,").find("byte") != std::string::npos);
  CHECK(parse_error("null") == "node view: document: not a JSON object");
  CHECK(parse_error("[]") == "node view: document: not a JSON object");
  CHECK(parse_error("{}") == "node view: version: missing");
  CHECK(parse_error(R"({"version":2})") ==
        "node view: version: unsupported 2 (this build reads version 1)");
  CHECK(parse_error(R"({"version":"1"})") ==
        "node view: version: unsupported \"1\" (this build reads version 1)");
  CHECK(parse_error(R"({"version":1,"nodes":{}})") == "node view: nodes: not an array");
  CHECK(parse_error(R"({"version":1,"nodes":[1]})") == "node view: nodes[0]: not an object");
  CHECK(parse_error(R"({"version":1,"nodes":[{"name":"","timestamp":1,"window":1,)"
                    R"("usage":{"cpu":1,"memory":1}}]})") == "node view: nodes[0].name: empty");
  CHECK(parse_error(R"({"version":1,"nodes":[{"name":"n","timestamp":"now","window":1,)"
                    R"("usage":{"cpu":1,"memory":1}}]})") ==
        "node view: nodes[0].timestamp: not an integer");
  CHECK(parse_error(R"({"version":1,"nodes":[{"name":"n","timestamp":1,"window":-1,)"
                    R"("usage":{"cpu":1,"memory":1}}]})") ==
        "node view: nodes[0].window: negative");
  CHECK(parse_error(R"({"version":1,"nodes":[{"name":"n","timestamp":18446744073709551615,)"
                    R"("window":1,"usage":{"cpu":1,"memory":1}}]})") ==
        "node view: nodes[0].timestamp: out of range");
  CHECK(parse_error(R"({"version":1,"nodes":[{"name":"n","timestamp":1,"window":1,)"
                    R"("usage":{"cpu":-5,"memory":1}}]})") ==
        "node view: nodes[0].usage.cpu: negative");
  CHECK(parse_error(R"({"version":1,"nodes":[{"name":"n","timestamp":1,"window":1,)"
                    R"("usage":{"cpu":1.5,"memory":1}}]})") ==
        "node view: nodes[0].usage.cpu: not an unsigned integer");
  CHECK(parse_error(R"({"version":1,"nodes":[{"name":"n","timestamp":1,"window":1,)"
                    R"("usage":{"cpu":1}}]})") == "node view: nodes[0].usage.memory: missing");
  CHECK(parse_error(R"({"version":1,"pods":[{"namespace":"d","name":"p","timestamp":1,)"
                    R"("window":1,"labels":{"a":1},"containers":[]}]})") ==
        "node view: pods[0].labels.a: not a string");
  CHECK(parse_error(R"({"version":1,"pods":[{"namespace":"d","name":"p","timestamp":1,)"
                    R"("window":1}]})") == "node view: pods[0].containers: missing");
  CHECK(parse_error(R"({"version":1,"pods":[{"namespace":"d","name":"p","timestamp":1,)"
                    R"("window":1,"containers":[{"name":"c","usage":{"cpu":1,"memory":1,)"
                    R"("swap":true}}]}]})") ==
        "node view: pods[0].containers[0].usage.swap: not an unsigned integer");
  CHECK(parse_error(R"({"version":1,"pods":[{"namespace":"d","name":"p","timestamp":1,)"
                    R"("window":1,"containers":[{"name":"c","usage":{"cpu":1,"memory":1}},)"
                    R"({"name":"c","usage":{"cpu":1,"memory":1}}]}]})") ==
        "node view: pods[0].containers: duplicate container \"c\"");
  CHECK(parse_error(R"({"version":1,"pods":[)"
                    R"({"namespace":"d","name":"p","timestamp":1,"window":1,"containers":[]},)"
                    R"({"namespace":"d","name":"p","timestamp":2,"window":1,"containers":[]}]})") ==
        "node view: pods: duplicate pod \"d/p\"");
  CHECK(parse_error(R"({"version":1,"knownPods":[["a"]]})") ==
        "node view: knownPods[0]: not a [namespace, name] pair of strings");
  CHECK(parse_error(R"({"version":1,"knownNodes":[7]})") ==
        "node view: knownNodes[0]: not a string");
}

TEST_CASE("node view: any JSON spelling of the document reads the same") {
  // Escapes, whitespace, members in another order, unknown members (skipped however nested),
  // nulls for optional members, a repeated member (the last wins, as in Go and nlohmann).
  const std::string text =
      " {\n \"future\": {\"a\": [1, 2.5e3, -0.5, true, false, null, {}]},\n"
      " \"pods\" : [ {\"containers\": [{\"usage\": {\"memory\": 2, \"cpu\": 1,"
      " \"swap\": null, \"gpu\": 9}, \"name\": \"c\\u00e9\"}],"
      " \"window\": 5, \"timestamp\": -7, \"labels\": null,"
      " \"name\": \"p\\/\\\"q\\\"\\ud83d\\ude00\", \"namespace\": \"\"} ],"
      " \"nodes\": null, \"version\": 1, \"knownNodes\": [\"x\", \"x\"],"
      " \"knownPods\": [[\"a\", \"b\"]], \"knownNodes\": [\"y\"] }\r\n";
  auto v = parse_node_view(text);
  INFO(text);
  REQUIRE(v.has_value());
  CHECK(v->nodes.empty());
  REQUIRE(v->pods.size() == 1);
  CHECK(v->pods[0].name == "p/\"q\"\xF0\x9F\x98\x80");
  CHECK(v->pods[0].namespace_.empty());
  CHECK(v->pods[0].timestamp == WallTime{} - 7ns);
  CHECK(v->pods[0].window == 5ns);
  REQUIRE(v->pods[0].containers.size() == 1);
  CHECK(v->pods[0].containers[0].name == "c\xC3\xA9");
  CHECK(v->pods[0].containers[0].usage.cpu_nano_cores == 1);
  CHECK(v->pods[0].containers[0].usage.memory_bytes == 2);
  CHECK_FALSE(v->pods[0].containers[0].usage.swap_bytes.has_value());
  CHECK(v->known_nodes == std::set<std::string>{"x", "y"});
  CHECK(v->known_pods == std::set<std::pair<std::string, std::string>>{{"a", "b"}});
}

TEST_CASE("node view: malformed JSON is named with its byte offset") {
  CHECK(parse_error("{\"version\":1} x") == "node view: not JSON (byte 14: trailing characters)");
  CHECK(parse_error("{\"version\":1,}") == "node view: not JSON (byte 13: expected a member name)");
  CHECK(parse_error("{\"version\":01}") ==
        "node view: not JSON (byte 12: invalid number (leading zero))");
  CHECK(parse_error("{\"version\":1,\"x\":tru}") ==
        "node view: not JSON (byte 17: invalid literal)");
  CHECK(parse_error("{\"version\":1,\"x\":\"a\\q\"}") ==
        "node view: not JSON (byte 20: invalid escape in a string)");
  CHECK(parse_error("{\"version\":1,\"x\":\"\\udc00\"}") ==
        "node view: not JSON (byte 24: lone low surrogate in a \\u escape)");
  CHECK(parse_error("{\"version\":1,\"x\":\"\\ud800x\"}") ==
        "node view: not JSON (byte 24: high surrogate without its low half in a \\u escape)");
  CHECK(parse_error("{\"version\":1,\"x\":\"\xC3\x28\"}") ==
        "node view: not JSON (byte 18: invalid UTF-8 in a string)");
  CHECK(parse_error("{\"version\":1,\"x\":\"a\nb\"}") ==
        "node view: not JSON (byte 19: control character in a string)");
  CHECK(parse_error("{\"version\":1,\"x\":1.}") == "node view: not JSON (byte 19: invalid number)");
  CHECK(parse_error("{\"version\":1,\"x\":-}") == "node view: not JSON (byte 18: invalid number)");
  CHECK(parse_error("garbage").starts_with("node view: not JSON (byte 0:"));
  CHECK(parse_error("\"just a string\"") == "node view: document: not a JSON object");
  CHECK(parse_error("{\"version\":1,\"nodes\":[1 2]}").starts_with("node view: nodes[0]:"));
  std::string deep = "{\"version\":1,\"x\":";
  for (int i = 0; i < 100; ++i)
    deep += "[";
  CHECK(parse_error(deep).find("nested too deeply") != std::string::npos);
  CHECK(parse_error(R"({"version":1,"knownPods":[[]]})") ==
        "node view: knownPods[0]: not a [namespace, name] pair of strings");
  CHECK(parse_error(R"({"version":1,"knownPods":[["a","b","c"]]})") ==
        "node view: knownPods[0]: not a [namespace, name] pair of strings");
  CHECK(parse_error(R"({"version":1,"nodes":[{"name":"n","timestamp":1,"window":1,)"
                    R"("usage":{"cpu":18446744073709551616,"memory":1}}]})") ==
        "node view: nodes[0].usage.cpu: not an unsigned integer");
  CHECK(parse_error(
            R"({"version":1,"nodes":[{"name":"n","timestamp":1,"usage":{"cpu":1,"memory":1}}]})") ==
        "node view: nodes[0].window: missing");
  CHECK(parse_error(
            R"({"version":1,"pods":[{"name":"p","timestamp":1,"window":1,"containers":[]}]})") ==
        "node view: pods[0].namespace: missing");
}

TEST_CASE("node view: every truncation of a valid document is an error") {
  std::mt19937_64 rng(7);
  const std::string text = encode_node_view(random_view(rng));
  for (size_t n = 0; n + 1 < text.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    CHECK_FALSE(parse_node_view(std::string_view(text).substr(0, n)).has_value());
  }
}

TEST_CASE("node view: random bytes and mutations never throw") {
  std::mt19937_64 rng(99);
  const std::string text = encode_node_view(random_view(rng));
  for (int i = 0; i < 2000; ++i) {
    std::string mutated = text;
    for (int k = 0; k < 3; ++k) {
      mutated[rng() % mutated.size()] = static_cast<char>(rng() % 256);
    }
    CHECK_NOTHROW(parse_node_view(mutated));
  }
}

TEST_CASE("node view: merge keeps MetricsView's order and remembers each source's slice") {
  std::vector<MetricsView> sources;
  sources.push_back(node_view(
      "node-b", {pod("kube-system", "proxy-b", kT0, 10), pod("default", "web-2", kT0, 20)}));
  sources.push_back(node_view(
      "node-a", {pod("default", "web-1", kT0, 30), pod("kube-system", "proxy-a", kT0, 40)}));
  sources.back().known_pods.insert({"default", "done-job"});  // exists, not Running
  sources.push_back(MetricsView{});                           // an agent with nothing to say yet
  sources.back().known_nodes.insert("node-c");                // a node without a window yet
  MergedView merged = merge_views(std::move(sources));
  const MetricsView& v = merged.view;
  REQUIRE(v.nodes.size() == 2);
  CHECK(v.nodes[0].name == "node-a");
  CHECK(v.nodes[1].name == "node-b");
  REQUIRE(v.pods.size() == 4);
  CHECK(v.pods[0].name == "web-1");
  CHECK(v.pods[1].name == "web-2");
  CHECK(v.pods[2].name == "proxy-a");
  CHECK(v.pods[3].name == "proxy-b");
  // Known sets hold what is not listed.
  CHECK(v.known_nodes == std::set<std::string>{"node-c"});
  CHECK(v.known_pods == std::set<std::pair<std::string, std::string>>{{"default", "done-job"}});

  REQUIRE(merged.slices.size() == 3);
  CHECK(merged.slices[0].nodes == std::vector<uint32_t>{1});
  CHECK(merged.slices[0].pods == std::vector<uint32_t>{1, 3});
  CHECK(merged.slices[1].pods == std::vector<uint32_t>{0, 2});
  REQUIRE(merged.slices[1].known_pods.size() == 1);
  CHECK(merged.slices[1].known_pods[0]->second == "done-job");
  CHECK(merged.slices[0].known_pods.empty());
  CHECK(merged.slices[2].nodes.empty());
  CHECK(merged.slices[2].pods.empty());
  REQUIRE(merged.slices[2].known_nodes.size() == 1);
  CHECK(*merged.slices[2].known_nodes[0] == "node-c");

  // A slice copied out is the source's view again, and merging the copies gives the same view.
  const MetricsView b = extract_view(v, merged.slices[0]);
  MetricsView expected_b = node_view(
      "node-b", {pod("kube-system", "proxy-b", kT0, 10), pod("default", "web-2", kT0, 20)});
  expected_b.known_nodes.clear();
  expected_b.known_pods.clear();
  require_same(b, expected_b);
  const MetricsView a = extract_view(v, merged.slices[1]);
  CHECK(a.pods.size() == 2);
  CHECK(a.known_pods == std::set<std::pair<std::string, std::string>>{{"default", "done-job"}});
  std::vector<MetricsView> again;
  for (const auto& s : merged.slices)
    again.push_back(extract_view(v, s));
  require_same(merge_views(std::move(again)).view, v);
}

TEST_CASE("node view: a pod two nodes report is taken from the newer view") {
  // web-0 of a StatefulSet moved from node-a to node-b; node-a's last view still lists it.
  std::vector<MetricsView> sources;
  sources.push_back(node_view("node-a", {pod("default", "web-0", kT0, 111)}));
  sources.push_back(node_view("node-b", {pod("default", "web-0", kT0 + 30s, 222)}));
  sources.push_back(node_view("node-b", {}, kT0 - 1s));  // an older copy of node-b: loses
  MergedView merged = merge_views(std::move(sources));
  REQUIRE(merged.view.pods.size() == 1);
  CHECK(merged.view.pods[0].containers[0].usage.cpu_nano_cores == 222);
  CHECK(merged.slices[0].pods.empty());
  CHECK(merged.slices[1].pods == std::vector<uint32_t>{0});
  REQUIRE(merged.view.nodes.size() == 2);
  CHECK(merged.view.nodes[1].name == "node-b");
  CHECK(merged.view.nodes[1].timestamp == kT0);
  CHECK(merged.slices[0].nodes == std::vector<uint32_t>{0});
  CHECK(merged.slices[1].nodes == std::vector<uint32_t>{1});
  CHECK(merged.slices[2].nodes.empty());
  // Listed, so in no known set.
  CHECK(merged.view.known_pods.empty());
  CHECK(merged.view.known_nodes.empty());
  CHECK(merged.slices[0].known_pods.empty());
}

TEST_CASE("node view: a merged view serves the Metrics API for every node") {
  std::vector<MetricsView> sources;
  sources.push_back(node_view("node-a", {pod("default", "web-1", kT0, 5'000'000)}));
  sources.push_back(node_view("node-b", {pod("default", "web-2", kT0, 2'000'000'000)}));
  const MetricsView v = merge_views(std::move(sources)).view;
  Request req{http::verb::get, "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods", 11};
  const Response res = handle_metrics_api(req, v, MetricsApiOptions{}, kT0);
  CHECK(res.result_int() == 200);
  CHECK(res.body().find("\"web-1\"") != std::string::npos);
  CHECK(res.body().find("\"cpu\":\"5m\"") != std::string::npos);
  CHECK(res.body().find("\"web-2\"") != std::string::npos);
  CHECK(res.body().find("\"cpu\":\"2\"") != std::string::npos);

  // Known but not listed: podmetrics NotFound; unknown: the core pods NotFound.
  std::vector<MetricsView> with_job;
  with_job.push_back(node_view("node-a", {pod("default", "web-1", kT0, 5'000'000)}));
  with_job.back().known_pods.insert({"default", "done-job"});
  const MetricsView j = merge_views(std::move(with_job)).view;
  Request known{http::verb::get, "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/done-job",
                11};
  const Response known_res = handle_metrics_api(known, j, MetricsApiOptions{}, kT0);
  CHECK(known_res.result_int() == 404);
  CHECK(known_res.body().find("podmetrics.metrics.k8s.io") != std::string::npos);
  Request listed{http::verb::get, "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web-1", 11};
  CHECK(handle_metrics_api(listed, j, MetricsApiOptions{}, kT0).result_int() == 200);
  Request unknown{http::verb::get, "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope", 11};
  const Response unknown_res = handle_metrics_api(unknown, j, MetricsApiOptions{}, kT0);
  CHECK(unknown_res.result_int() == 404);
  CHECK(unknown_res.body().find("podmetrics") == std::string::npos);
}
