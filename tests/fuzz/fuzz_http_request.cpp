// The HTTP request path through the agent's real handler: the bytes go through Beast's request
// parser with the server's limits (16 KiB of head, 1 MiB of body; several pipelined requests per
// input), every complete request through AgentRoutes (and so handle_metrics_api, the Summary API
// and the expositions) on a fixed fixture snapshot. Invariants: every request gets a response with
// a valid status and a Content-Length equal to its body; JSON bodies parse; the self-metric route
// label is one of a bounded set; the response serializes.
#include <boost/asio/buffer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <set>

#include "agent/clock.h"
#include "agent/routes.h"
#include "agent/self_metrics.h"
#include "fuzz_check.h"

namespace {

namespace http = boost::beast::http;
using namespace std::chrono_literals;
using namespace nodemeter;

constexpr size_t kHeaderLimit = 16 * 1024;  // ServerOptions' defaults
constexpr size_t kBodyLimit = 1024 * 1024;

api::Sample sample(api::WallTime t, uint64_t cpu_ns, uint64_t working_set) {
  api::Sample s;
  s.time = t;
  s.cpu.cumulative_ns = cpu_ns;
  s.cpu.user_ns = cpu_ns / 2;
  s.cpu.system_ns = cpu_ns / 4;
  s.memory.usage_bytes = working_set + 4096;
  s.memory.working_set_bytes = working_set;
  s.memory.rss_bytes = working_set / 2;
  s.memory.limit_bytes = working_set * 4;
  return s;
}

api::WindowUsage usage(api::WallTime t, uint64_t nano_cores, uint64_t working_set) {
  return {t, 15'013'000'000ns, nano_cores, working_set, std::nullopt};
}

api::ContainerSnapshot container(std::string name, std::string id, api::WallTime t, uint64_t cpu,
                                 uint64_t ws) {
  api::ContainerSnapshot c;
  c.name = std::move(name);
  c.id = std::move(id);
  c.runtime = cgroup::Runtime::kContainerd;
  c.start_time = t - 3600s;
  c.latest = sample(t, cpu * 1000, ws);
  c.usage = usage(t, cpu, ws);
  return c;
}

// A node with three Running pods in two namespaces (labels for the selectors), one Pending pod,
// and one pod whose container is stale and has no window: what a real pass produces.
api::SnapshotPtr fixture_snapshot(api::WallTime t) {
  auto snap = std::make_shared<api::Snapshot>();
  snap->taken_at = t;
  snap->interval = 5s;
  snap->window = 15s;
  snap->mode = cgroup::Mode::kHybrid;
  snap->passes = 7;
  snap->node.name = "fuzz-node";
  snap->node.start_time = t - 86400s;
  snap->node.latest = sample(t, 123'456'789'000'000, 3ull << 30);
  snap->node.usage = usage(t, 1'234'567'891, 3ull << 30);
  const std::string id(64, 'a');
  auto pod = [&](std::string ns, std::string name, std::map<std::string, std::string> labels,
                 std::string uid_tail) {
    api::PodSnapshot p;
    p.uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2" + uid_tail;
    p.name = std::move(name);
    p.namespace_ = std::move(ns);
    p.labels = std::move(labels);
    p.qos = cgroup::QosClass::kBurstable;
    p.start_time = t - 7200s;
    p.latest = sample(t, 987'654'321'000, 200ull << 20);
    p.usage = usage(t, 487'558'164, 200ull << 20);
    return p;
  };
  auto web = pod("default", "web-1", {{"app", "web"}, {"tier", "frontend"}}, "e1f0");
  web.containers.push_back(container("nginx", std::string(64, 'b'), t, 5'000'000, 749'785'088));
  web.containers.push_back(container("shipper", std::string(64, 'c'), t, 2'000'000'000, 1048576));
  auto db = pod("prod", "db-0", {{"app", "db"}, {"tier", "backend"}}, "e1f1");
  db.qos = cgroup::QosClass::kGuaranteed;
  db.containers.push_back(container("postgres", std::string(64, 'd'), t, 0, 1500));
  auto pending = pod("default", "job-x", {{"app", "job"}}, "e1f2");
  pending.phase = "Pending";
  auto stale = pod("kube-system", "coredns-1", {{"k8s-app", "kube-dns"}}, "e1f3");
  auto c = container("coredns", std::string(64, 'e'), t - 60s, 1, 1);
  c.stale = true;
  c.usage.reset();
  stale.containers.push_back(c);
  snap->pods = {web, pending, stale, db};
  snap->scrape_error = true;
  return snap;
}

struct Agent {
  agent::FakeClock clock;
  agent::HealthState health;
  agent::SelfMetrics metrics{"0.1.0", cgroup::Mode::kHybrid, "/proc"};
  api::SnapshotPtr snapshot = fixture_snapshot(clock.wall());
  agent::AgentRoutes routes;

  Agent() {
    health.started_steady_ns = agent::steady_ns(clock.steady());
    clock.advance(20s);
    health.first_pass_steady_ns = agent::steady_ns(clock.steady()) - 16'000'000'000;
    health.last_pass_steady_ns = agent::steady_ns(clock.steady());
    routes.snapshot = [this] { return snapshot; };
    routes.metrics = &metrics;
    routes.clock = &clock;
    routes.health = &health;
    routes.interval = 5s;
    routes.window = 15s;
    routes.metrics_api.version = api::version_info("0.1.0");
  }
};

const std::set<std::string> kRouteLabels = {"/metrics/resource",
                                            "/metrics/cadvisor",
                                            "/metrics",
                                            "/healthz",
                                            "/livez",
                                            "/readyz",
                                            "/stats/summary",
                                            "/version",
                                            "/apis",
                                            "/apis/metrics.k8s.io",
                                            "other"};

void check_route_label(std::string_view target) {
  const std::string label = agent::route_pattern(target);
  if (kRouteLabels.contains(label)) return;
  for (const char* version : {"v1beta1", "v1"}) {
    const std::string base = std::string("/apis/metrics.k8s.io/") + version;
    for (const char* rest : {"", "/nodes", "/pods", "/nodes/{name}", "/namespaces/{namespace}/pods",
                             "/namespaces/{namespace}/pods/{name}"}) {
      if (label == base + rest) return;
    }
  }
  FUZZ_CHECK(false, "route labels are a bounded set");
}

void check_response(const api::Request& req, const api::Response& res) {
  FUZZ_CHECK(res.result_int() >= 100 && res.result_int() <= 599, "a valid status");
  const auto length = res.find(http::field::content_length);
  FUZZ_CHECK(length != res.end() && length->value() == std::to_string(res.body().size()),
             "Content-Length is the body's size");
  const std::string_view type = res[http::field::content_type];
  if (type.starts_with("application/json")) {
    FUZZ_CHECK(nlohmann::json::accept(res.body()), "a JSON body parses");
  }
  FUZZ_CHECK(!type.empty(), "every response says what it is");
  (void)req;
  // The server writes it with Beast's serializer: it must accept the message as it is.
  http::response_serializer<http::string_body> serializer(const_cast<api::Response&>(res));
  boost::beast::error_code ec;
  size_t written = 0;
  do {
    serializer.next(ec, [&](boost::beast::error_code&, const auto& buffers) {
      const size_t n = boost::asio::buffer_size(buffers);
      written += n;
      serializer.consume(n);
    });
  } while (!ec && !serializer.is_done());
  FUZZ_CHECK(!ec && written > res.body().size(), "the response serializes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Agent agent;
  boost::asio::const_buffer input(data, size);
  // Pipelined requests: parse one after another until the bytes run out or one fails, as a
  // keep-alive connection does.
  for (int requests = 0; input.size() > 0 && requests < 16; ++requests) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(kBodyLimit);
    parser.eager(true);
    boost::beast::error_code ec;
    while (input.size() > 0 && !parser.is_done()) {
      const size_t used = parser.put(input, ec);
      input += used;
      if (ec == http::error::need_more) {
        ec = {};
        if (used == 0) break;
        continue;
      }
      if (ec) break;
    }
    if (!ec && !parser.is_done()) parser.put_eof(ec);
    if (ec || !parser.is_done()) return 0;  // the server answers 400/413/431 or waits for more
    const api::Request request = parser.release();
    check_route_label(request.target());
    check_response(request, agent.routes(request));
  }
  return 0;
}
