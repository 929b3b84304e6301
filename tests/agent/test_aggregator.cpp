// The aggregator's cycle against agents served over real HTTP(S) on the loopback (api::Server
// answering fixed node views): it converges, forgets a stopped agent's node after exactly three
// missed resolutions, keeps serving the others when some fail (counted and logged once per state
// change), sends its token, verifies agents' certificates against a CA, follows an agent that
// moved on its node, and never has more fetches in flight than the bound. Cycles are driven
// directly (run_cycle), so no test waits for a timer except the one about start().
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/aggregator.h"
#include "api/node_view.h"
#include "api/server.h"
#include "api/tls.h"

using namespace nodemeter;
using namespace nodemeter::agent;
using namespace std::chrono_literals;

namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;

const api::WallTime kT0{std::chrono::seconds{1'700'000'000}};

api::MetricsView view_of(const std::string& node, int pods, uint64_t cpu = 5'000'000) {
  api::MetricsView v;
  v.nodes.push_back(api::NodeMetricsItem{node, {}, kT0, 15s, api::ResourceUsage{cpu, 1 << 30, {}}});
  v.known_nodes.insert(node);
  for (int i = 0; i < pods; ++i) {
    api::PodMetricsItem p;
    p.namespace_ = "default";
    p.name = node + "-pod-" + std::to_string(i);
    p.labels = {{"app", "web"}, {"node", node}};
    p.timestamp = kT0;
    p.window = 15s;
    p.containers.push_back(api::ContainerMetricsItem{"app", api::ResourceUsage{cpu, 1 << 20, {}}});
    v.known_pods.insert({p.namespace_, p.name});
    v.pods.push_back(std::move(p));
  }
  v.known_pods.insert({"default", node + "-job"});  // a pod that exists but is not Running
  return v;
}

// An agent impersonation: an api::Server on its own thread answering GET /metrics/view with
// whatever the test sets (a view, a status, garbage), remembering what it was asked.
class FakeAgent {
 public:
  explicit FakeAgent(api::MetricsView view, std::shared_ptr<net::ssl::context> tls = nullptr)
      : body_(api::encode_node_view(view)), guard_(net::make_work_guard(io_)) {
    api::ServerOptions options;
    options.listen = {"127.0.0.1:0"};
    options.tls = std::move(tls);
    tls_ = options.tls != nullptr;
    server_ = std::make_unique<api::Server>(io_, options, [this](const api::Request& req) {
      std::lock_guard lock(mu_);
      ++requests_;
      authorization_ = std::string(req[http::field::authorization]);
      targets_.emplace_back(req.target());
      api::Response res{static_cast<http::status>(status_), req.version()};
      res.set(http::field::content_type, "application/json");
      res.body() = body_;
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      return res;
    });
    auto started = server_->start();
    REQUIRE(started.has_value());
    port_ = server_->local_endpoints().at(0).port();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FakeAgent() { stop(); }

  void stop() {
    if (!thread_.joinable()) return;
    guard_.reset();
    io_.stop();
    thread_.join();
    server_.reset();
  }

  std::string url() const {
    return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
  }
  void set(unsigned status, std::string body) {
    std::lock_guard lock(mu_);
    status_ = status;
    body_ = std::move(body);
  }
  void set_view(const api::MetricsView& v) { set(200, api::encode_node_view(v)); }
  int requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }
  std::string authorization() {
    std::lock_guard lock(mu_);
    return authorization_;
  }
  std::vector<std::string> targets() {
    std::lock_guard lock(mu_);
    return targets_;
  }

 private:
  std::mutex mu_;
  unsigned status_ = 200;
  std::string body_;
  int requests_ = 0;
  std::string authorization_;
  std::vector<std::string> targets_;
  net::io_context io_;
  net::executor_work_guard<net::io_context::executor_type> guard_;
  std::unique_ptr<api::Server> server_;
  bool tls_ = false;
  unsigned short port_ = 0;
  std::thread thread_;
};

// A Logger writing into a temporary file the test reads back.
class CapturedLog {
 public:
  CapturedLog() : file_(std::tmpfile()), log(LogFormat::kText, file_) {}
  ~CapturedLog() { std::fclose(file_); }
  std::string text() {
    std::fflush(file_);
    std::rewind(file_);
    std::string out;
    char buf[4096];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, file_)) > 0)
      out.append(buf, n);
    std::fseek(file_, 0, SEEK_END);
    return out;
  }
  int count(const std::string& needle) {
    const std::string t = text();
    int n = 0;
    for (size_t pos = t.find(needle); pos != std::string::npos; pos = t.find(needle, pos + 1))
      ++n;
    return n;
  }

 private:
  std::FILE* file_;

 public:
  Logger log;
};

// Runs one cycle to completion on the test's io_context.
CycleReport cycle(Aggregator& aggregator, net::io_context& io) {
  std::optional<CycleReport> report;
  aggregator.run_cycle([&](const CycleReport& r) { report = r; });
  io.restart();
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!report && std::chrono::steady_clock::now() < deadline)
    io.run_one_for(100ms);
  REQUIRE(report.has_value());
  return *report;
}

AggregatorOptions options_for(std::vector<std::string> urls) {
  AggregatorOptions o;
  o.agent_timeout =
      10000ms;  // generous: a loaded CI machine must not turn a live agent into a miss
  o.targets = [urls] { return static_targets(urls); };
  return o;
}

std::vector<std::string> node_names(const api::MetricsView& v) {
  std::vector<std::string> out;
  for (const auto& n : v.nodes)
    out.push_back(n.name);
  return out;
}

double metric_value(const std::string& exposition, const std::string& series) {
  const size_t pos = exposition.find("\n" + series + " ");
  if (pos == std::string::npos) return -1;
  return std::stod(exposition.substr(pos + series.size() + 2));
}

}  // namespace

TEST_CASE("aggregator: one cycle merges every agent's view into the cluster view") {
  FakeAgent a(view_of("node-a", 3));
  FakeAgent b(view_of("node-b", 2));
  FakeAgent c(view_of("node-c", 1));
  net::io_context io;
  CapturedLog log;
  AggregatorMetrics metrics("0.1.0");
  Aggregator aggregator(io, options_for({c.url(), a.url(), b.url()}), log.log, &metrics);
  CHECK(aggregator.view()->nodes.empty());
  CHECK(aggregator.cycles() == 0);

  const CycleReport r = cycle(aggregator, io);
  CHECK(r.agents == 3);
  CHECK(r.ok == 3);
  CHECK(r.failed == 0);
  CHECK(r.nodes == 3);
  CHECK(r.pods == 6);
  CHECK(aggregator.cycles() == 1);
  const auto view = aggregator.view();
  CHECK(node_names(*view) == std::vector<std::string>{"node-a", "node-b", "node-c"});
  REQUIRE(view->pods.size() == 6);
  CHECK(view->pods[0].name == "node-a-pod-0");
  CHECK(view->pods[5].name == "node-c-pod-0");
  // Known sets hold what is not listed: the finished job of each node.
  CHECK(view->known_pods ==
        std::set<std::pair<std::string, std::string>>{
            {"default", "node-a-job"}, {"default", "node-b-job"}, {"default", "node-c-job"}});
  CHECK(view->known_nodes.empty());
  CHECK(a.targets() == std::vector<std::string>{"/metrics/view"});

  // The cluster view answers the Metrics API for every node, as the agent does for one.
  api::Request req{http::verb::get, "/apis/metrics.k8s.io/v1beta1/nodes", 11};
  const api::Response res = api::handle_metrics_api(req, *view, {}, kT0);
  CHECK(res.result_int() == 200);
  CHECK(res.body().find("\"node-b\"") != std::string::npos);
  CHECK(res.body().find("\"node-c\"") != std::string::npos);

  const std::string m = metrics.render();
  CHECK(metric_value(m, "nodemeter_aggregator_agents{state=\"ok\"}") == 3);
  CHECK(metric_value(m, "nodemeter_aggregator_agents{state=\"failing\"}") == 0);
  CHECK(metric_value(m, "nodemeter_aggregator_nodes") == 3);
  CHECK(metric_value(m, "nodemeter_aggregator_pods") == 6);
  CHECK(metric_value(m, "nodemeter_aggregator_cycles_total") == 1);
  CHECK(metric_value(m, "nodemeter_aggregator_cycle_duration_seconds_count") == 1);

  // A second cycle sees new numbers and reuses the connections.
  a.set_view(view_of("node-a", 3, 7'000'000));
  cycle(aggregator, io);
  CHECK(aggregator.view()->nodes[0].usage.cpu_nano_cores == 7'000'000);
  CHECK(a.requests() == 2);
}

TEST_CASE(
    "aggregator: a stopped agent's node is served for two missed resolutions, gone at the third") {
  FakeAgent a(view_of("node-a", 2));
  auto b = std::make_unique<FakeAgent>(view_of("node-b", 2));
  const std::string b_url = b->url();
  net::io_context io;
  CapturedLog log;
  Aggregator aggregator(io, options_for({a.url(), b_url}), log.log);
  CHECK(cycle(aggregator, io).nodes == 2);

  b->stop();
  for (int miss = 1; miss <= 2; ++miss) {
    INFO("miss " << miss);
    const CycleReport r = cycle(aggregator, io);
    CHECK(r.ok == 1);
    CHECK(r.failed == 1);
    CHECK(r.forgotten == 0);
    CHECK(node_names(*aggregator.view()) == std::vector<std::string>{"node-a", "node-b"});
    CHECK(aggregator.view()->pods.size() == 4);  // node-b's last view, as it was
    CHECK(aggregator.view()->known_pods.size() == 2);
  }
  const CycleReport third = cycle(aggregator, io);
  CHECK(third.forgotten == 1);
  CHECK(node_names(*aggregator.view()) == std::vector<std::string>{"node-a"});
  CHECK(aggregator.view()->pods.size() == 2);
  CHECK(aggregator.view()->known_nodes.empty());
  CHECK(aggregator.view()->known_pods ==
        std::set<std::pair<std::string, std::string>>{{"default", "node-a-job"}});
  CHECK(log.count("node forgotten") == 1);
  CHECK(log.count("nodes=node-b") == 1);
  CHECK(log.count("agent failing") == 1);  // once per state change, not once per cycle
  cycle(aggregator, io);
  CHECK(log.count("node forgotten") == 1);
}

TEST_CASE(
    "aggregator: failing agents are counted and logged once per state change; the rest serve") {
  FakeAgent good(view_of("node-good", 2));
  FakeAgent error(view_of("node-500", 1));
  error.set(500, "internal error\nmore");
  FakeAgent garbage(view_of("node-garbage", 1));
  garbage.set(200, "{\"version\":1,\"nodes\":[{\"name\":\"x\"}]}");
  std::string refused_url;
  {
    FakeAgent gone(view_of("node-gone", 1));
    refused_url = gone.url();
  }  // stopped: its port refuses connections
  net::io_context io;
  CapturedLog log;
  AggregatorMetrics metrics("0.1.0");
  Aggregator aggregator(io, options_for({good.url(), error.url(), garbage.url(), refused_url}),
                        log.log, &metrics);
  for (int i = 0; i < 2; ++i) {
    const CycleReport r = cycle(aggregator, io);
    CHECK(r.agents == 4);
    CHECK(r.ok == 1);
    CHECK(r.failed == 3);
    CHECK(node_names(*aggregator.view()) == std::vector<std::string>{"node-good"});
  }
  std::string m = metrics.render();
  CHECK(metric_value(m, "nodemeter_aggregator_agents{state=\"ok\"}") == 1);
  CHECK(metric_value(m, "nodemeter_aggregator_agents{state=\"failing\"}") == 3);
  CHECK(metric_value(m, "nodemeter_aggregator_fetch_errors_total{reason=\"status\"}") == 2);
  CHECK(metric_value(m, "nodemeter_aggregator_fetch_errors_total{reason=\"parse\"}") == 2);
  CHECK(metric_value(m, "nodemeter_aggregator_fetch_errors_total{reason=\"transport\"}") == 2);
  CHECK(metric_value(m, "nodemeter_aggregator_fetch_errors_total{reason=\"client\"}") == 0);
  CHECK(log.count("agent failing") == 3);
  CHECK(log.count("HTTP 500") == 1);
  CHECK(log.count("internal error") == 1);
  CHECK(log.count("more") == 0);  // the first line of the body only
  CHECK(log.count("nodes[0].labels") + log.count("nodes[0].timestamp") == 1);

  error.set_view(view_of("node-500", 1));
  const CycleReport r = cycle(aggregator, io);
  CHECK(r.ok == 2);
  CHECK(log.count("agent recovered") == 1);
  CHECK(node_names(*aggregator.view()) == std::vector<std::string>{"node-500", "node-good"});
  m = metrics.render();
  CHECK(metric_value(m, "nodemeter_aggregator_agents{state=\"failing\"}") == 2);
}

TEST_CASE("aggregator: an agent URL that cannot be used is a client error, not a crash") {
  FakeAgent good(view_of("node-good", 1));
  net::io_context io;
  CapturedLog log;
  AggregatorMetrics metrics("0.1.0");
  Aggregator aggregator(io, options_for({good.url(), "ftp://nowhere"}), log.log, &metrics);
  const CycleReport r = cycle(aggregator, io);
  CHECK(r.ok == 1);
  CHECK(r.failed == 1);
  CHECK(metric_value(metrics.render(),
                     "nodemeter_aggregator_fetch_errors_total{reason=\"client\"}") == 1);
  CHECK(log.count("ftp://nowhere") >= 1);
}

TEST_CASE("aggregator: sends its bearer token, read again every cycle") {
  FakeAgent a(view_of("node-a", 1));
  net::io_context io;
  CapturedLog log;
  AggregatorOptions o = options_for({a.url()});
  int reads = 0;
  o.bearer_token = [&reads] { return "token-" + std::to_string(++reads); };
  Aggregator aggregator(io, o, log.log);
  cycle(aggregator, io);
  CHECK(a.authorization() == "Bearer token-1");
  cycle(aggregator, io);
  CHECK(a.authorization() == "Bearer token-2");

  FakeAgent b(view_of("node-b", 1));
  AggregatorOptions none = options_for({b.url()});
  none.bearer_token = [] { return std::string(); };
  Aggregator anonymous(io, none, log.log);
  cycle(anonymous, io);
  CHECK(b.requests() == 1);
  CHECK(b.authorization().empty());
}

TEST_CASE("aggregator: agents' certificates are verified against the CA given") {
  auto pair = api::make_self_signed_pair({"127.0.0.1"});
  REQUIRE(pair.has_value());
  api::ServerTlsOptions tls;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("nodemeter-aggregator-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tls.crt") << pair->cert_pem;
  std::ofstream(dir / "tls.key") << pair->key_pem;
  tls.cert_file = (dir / "tls.crt").string();
  tls.key_file = (dir / "tls.key").string();
  auto context = api::make_server_tls(tls);
  REQUIRE(context.has_value());
  FakeAgent agent(view_of("node-tls", 2), *context);
  REQUIRE(agent.url().starts_with("https://"));
  net::io_context io;
  CapturedLog log;

  SECTION("the agent's CA: served") {
    AggregatorOptions o = options_for({agent.url()});
    o.agent_tls.ca_pem = pair->cert_pem;
    Aggregator aggregator(io, o, log.log);
    const CycleReport r = cycle(aggregator, io);
    CHECK(r.ok == 1);
    CHECK(node_names(*aggregator.view()) == std::vector<std::string>{"node-tls"});
  }
  SECTION("another CA: refused, as a transport failure") {
    auto other = api::make_self_signed_pair({"127.0.0.1"});
    REQUIRE(other.has_value());
    AggregatorOptions o = options_for({agent.url()});
    o.agent_tls.ca_pem = other->cert_pem;
    AggregatorMetrics metrics("0.1.0");
    Aggregator aggregator(io, o, log.log, &metrics);
    const CycleReport r = cycle(aggregator, io);
    CHECK(r.ok == 0);
    CHECK(r.failed == 1);
    CHECK(aggregator.view()->nodes.empty());
    CHECK(metric_value(metrics.render(),
                       "nodemeter_aggregator_fetch_errors_total{reason=\"transport\"}") == 1);
    CHECK(agent.requests() == 0);
  }
  SECTION("insecure: served without verification") {
    AggregatorOptions o = options_for({agent.url()});
    o.agent_tls.insecure_skip_verify = true;
    Aggregator aggregator(io, o, log.log);
    CHECK(cycle(aggregator, io).ok == 1);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE(
    "aggregator: discovered agents are kept per node; a replaced agent pod continues its node") {
  FakeAgent old_pod(view_of("node-a", 2));
  FakeAgent new_pod(view_of("node-a", 3));
  FakeAgent other(view_of("node-b", 1));
  std::vector<AgentTarget> targets = {{"node-a", old_pod.url()}, {"node-b", other.url()}};
  net::io_context io;
  CapturedLog log;
  AggregatorOptions o;
  o.targets = [&targets] { return targets; };
  Aggregator aggregator(io, o, log.log);
  CHECK(cycle(aggregator, io).pods == 3);

  // The DaemonSet replaced node-a's agent: a new pod IP, the same node.
  targets = {{"node-a", new_pod.url()}, {"node-b", other.url()}};
  const CycleReport r = cycle(aggregator, io);
  CHECK(r.agents == 2);
  CHECK(r.ok == 2);
  CHECK(r.pods == 4);
  CHECK(new_pod.requests() == 1);
  CHECK(old_pod.requests() == 1);

  // node-b's agent disappears from discovery (node drained and deleted): its last view is kept
  // for two more resolutions, then forgotten.
  targets = {{"node-a", new_pod.url()}};
  CHECK(cycle(aggregator, io).nodes == 2);
  CHECK(cycle(aggregator, io).nodes == 2);
  const CycleReport gone = cycle(aggregator, io);
  CHECK(gone.forgotten == 1);
  CHECK(node_names(*aggregator.view()) == std::vector<std::string>{"node-a"});
  CHECK(other.requests() == 2);
}

namespace {

// A client that answers after a short delay, for counting fetches in flight.
class DelayedClient final : public kube::HttpClient {
 public:
  DelayedClient(net::io_context& io, std::string node, int& in_flight, int& peak)
      : io_(io), node_(std::move(node)), in_flight_(in_flight), peak_(peak) {}
  void request(kube::HttpRequest, std::function<void(kube::HttpResult)> done) override {
    peak_ = std::max(peak_, ++in_flight_);
    auto timer = std::make_shared<net::steady_timer>(io_, 2ms);
    timer->async_wait([this, timer, done = std::move(done)](boost::system::error_code) {
      --in_flight_;
      kube::HttpResponse res;
      res.status = 200;
      res.body = api::encode_node_view(view_of(node_, 1));
      done(std::move(res));
    });
  }
  std::shared_ptr<kube::StreamHandle> stream(kube::HttpRequest, kube::StreamCallbacks) override {
    return nullptr;
  }
  void shutdown() override {}
  size_t connections_opened() const override { return 0; }

 private:
  net::io_context& io_;
  std::string node_;
  int& in_flight_;
  int& peak_;
};

// A client that answers at once, inside request() itself.
class ImmediateClient final : public kube::HttpClient {
 public:
  explicit ImmediateClient(std::string node) : node_(std::move(node)) {}
  void request(kube::HttpRequest, std::function<void(kube::HttpResult)> done) override {
    kube::HttpResponse res;
    res.status = 200;
    res.body = api::encode_node_view(view_of(node_, 1));
    done(std::move(res));
  }
  std::shared_ptr<kube::StreamHandle> stream(kube::HttpRequest, kube::StreamCallbacks) override {
    return nullptr;
  }
  void shutdown() override {}
  size_t connections_opened() const override { return 0; }

 private:
  std::string node_;
};

}  // namespace

TEST_CASE("aggregator: never more fetches in flight than the bound") {
  net::io_context io;
  CapturedLog log;
  int in_flight = 0;
  int peak = 0;
  int created = 0;
  std::vector<std::string> urls;
  for (int i = 0; i < 100; ++i)
    urls.push_back("http://agent-" + std::to_string(i) + ":10261");
  AggregatorOptions o = options_for(urls);
  o.max_concurrent = 7;
  Aggregator aggregator(
      io, o, log.log, nullptr,
      [&](net::io_context& ctx, std::string_view url, const kube::TlsClientOptions&)
          -> boost::system::result<std::shared_ptr<kube::HttpClient>, std::string> {
        ++created;
        return std::make_shared<DelayedClient>(ctx, "node-" + std::string(url.substr(7)), in_flight,
                                               peak);
      });
  const CycleReport r = cycle(aggregator, io);
  CHECK(r.ok == 100);
  CHECK(r.nodes == 100);
  CHECK(peak == 7);
  CHECK(in_flight == 0);
  cycle(aggregator, io);
  CHECK(created == 100);  // one client per agent, kept across cycles
}

TEST_CASE("aggregator: a client that answers inside request() completes the cycle once") {
  net::io_context io;
  CapturedLog log;
  std::vector<std::string> urls = {"http://a:1", "http://b:1", "http://c:1"};
  AggregatorOptions o = options_for(urls);
  o.max_concurrent = 2;
  Aggregator aggregator(
      io, o, log.log, nullptr,
      [](net::io_context&, std::string_view url, const kube::TlsClientOptions&)
          -> boost::system::result<std::shared_ptr<kube::HttpClient>, std::string> {
        return std::make_shared<ImmediateClient>(std::string(url.substr(7, 1)));
      });
  int done = 0;
  aggregator.run_cycle([&](const CycleReport& r) {
    ++done;
    CHECK(r.ok == 3);
  });
  io.run();
  CHECK(done == 1);
  CHECK(node_names(*aggregator.view()) == std::vector<std::string>{"a", "b", "c"});
}

TEST_CASE("aggregator: start() cycles every resolution; live() turns false when cycles stop") {
  FakeAgent a(view_of("node-a", 1));
  net::io_context io;
  CapturedLog log;
  AggregatorOptions o = options_for({a.url()});
  o.resolution = 100ms;
  o.agent_timeout = 1000ms;
  Aggregator aggregator(io, o, log.log);
  aggregator.start();
  io.run_for(550ms);
  // Cycles at 0, 100, ..., 500 ms: six on a quiet machine; a busy one may skip ticks.
  CHECK(aggregator.cycles() >= 2);
  CHECK(aggregator.cycles() <= 6);
  CHECK(a.requests() >= static_cast<int>(aggregator.cycles()));
  CHECK(a.requests() <= static_cast<int>(aggregator.cycles()) + 1);
  const auto now = std::chrono::steady_clock::now();
  CHECK(aggregator.live(now));
  // 3 resolutions + one round of fetches at the agent timeout: 1.3 s.
  CHECK(aggregator.live(now + 1000ms));
  CHECK_FALSE(aggregator.live(now + 1500ms));
  aggregator.stop();
  io.restart();
  io.run_for(300ms);
  const uint64_t after = aggregator.cycles();
  io.restart();
  io.run_for(300ms);
  CHECK(aggregator.cycles() == after);
}
