// The aggregator at scale: one child process impersonates N agents (one api::Server on the
// loopback; agent i is the base URL http(s)://127.0.0.1:PORT/node-i, so every agent is its own
// client with its own connections and the server answers /node-i/metrics/view with that node's
// view of P pods), and this process runs the real Aggregator against them: one cycle is N real
// HTTP fetches and N node views parsed and merged. Reported per cycle: wall time, and this
// process's resident memory against the baseline taken before the first cycle (anonymous memory
// per pod is the figure the target is about; code pages touched for the first time are file
// memory). The child's memory is its own: the bodies it serves are not counted here.
//
//   nodemeter_aggregator_bench [--agents 1000] [--pods 30] [--cycles 5] [--scheme http|https]
//                              [--max-concurrent 64] [--json-out FILE]
#include <signal.h>
#include <sys/stat.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "agent/aggregator.h"
#include "agent/log.h"
#include "api/node_view.h"
#include "api/server.h"
#include "api/tls.h"

namespace {

using namespace nodemeter;
using namespace std::chrono_literals;
namespace http = boost::beast::http;

struct Options {
  int agents = 1000;
  int pods = 30;
  int cycles = 5;
  bool tls = false;
  size_t max_concurrent = 64;
  std::string json_out;  // also write the numbers as JSON to this file
};

std::optional<Options> parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto number = [&](auto& out) {
      if (i + 1 >= argc) return false;
      const std::string_view v = argv[++i];
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
      return ec == std::errc{} && p == v.data() + v.size() && out > 0;
    };
    if (a == "--agents") {
      if (!number(o.agents)) return std::nullopt;
    } else if (a == "--pods") {
      if (!number(o.pods)) return std::nullopt;
    } else if (a == "--cycles") {
      if (!number(o.cycles)) return std::nullopt;
    } else if (a == "--max-concurrent") {
      if (!number(o.max_concurrent)) return std::nullopt;
    } else if (a == "--scheme" && i + 1 < argc) {
      const std::string_view s = argv[++i];
      if (s != "http" && s != "https") return std::nullopt;
      o.tls = s == "https";
    } else if (a == "--json-out" && i + 1 < argc) {
      o.json_out = argv[++i];
    } else {
      return std::nullopt;
    }
  }
  return o;
}

// A node's view as a busy node's agent serves it: pods of 20 namespaces, Deployment-style names
// and labels, a third of them with a sidecar.
api::MetricsView node_view(int node, int pods) {
  static const char* const kApps[] = {"checkout", "cart",     "payments", "search",  "frontend",
                                      "catalog",  "shipping", "accounts", "reviews", "ads"};
  char name[32];
  std::snprintf(name, sizeof name, "node-%04d", node);
  const api::WallTime now{std::chrono::seconds{1'700'000'000}};
  api::MetricsView v;
  v.nodes.push_back(api::NodeMetricsItem{
      name,
      {},
      now + std::chrono::nanoseconds(node * 1'000'003LL),
      15'032'117'000ns,
      api::ResourceUsage{1'234'567'890ULL + static_cast<uint64_t>(node), 12ULL << 30, {}}});
  v.known_nodes.insert(name);
  for (int p = 0; p < pods; ++p) {
    const int n = node * pods + p;
    const std::string app = std::string(kApps[n % 10]) + "-service";
    char hash[16];
    std::snprintf(hash, sizeof hash, "%010x", static_cast<unsigned>(n * 2654435761u) & 0x3fffffffu);
    char suffix[8];
    std::snprintf(suffix, sizeof suffix, "%05x", static_cast<unsigned>(n * 40503u) & 0xfffffu);
    api::PodMetricsItem pod;
    pod.namespace_ = "team-" + std::to_string(n % 20);
    pod.name = app + "-" + hash + "-" + suffix;
    pod.labels = {{"app", app}, {"pod-template-hash", hash}, {"app.kubernetes.io/part-of", "shop"}};
    pod.timestamp = now + std::chrono::nanoseconds(n * 7919LL);
    pod.window = 15'011'000'000ns;
    pod.containers.push_back(api::ContainerMetricsItem{
        "app", api::ResourceUsage{5'000'000ULL + static_cast<uint64_t>(n), 200ULL << 20, {}}});
    if (n % 3 == 0) {
      pod.containers.push_back(api::ContainerMetricsItem{
          "istio-proxy", api::ResourceUsage{3'000'000ULL, 60ULL << 20, {}}});
    }
    v.known_pods.insert({pod.namespace_, pod.name});
    v.pods.push_back(std::move(pod));
  }
  std::sort(v.pods.begin(), v.pods.end(), [](const auto& a, const auto& b) {
    return std::tie(a.namespace_, a.name) < std::tie(b.namespace_, b.name);
  });
  return v;
}

// The child: serves every node's view from one port until killed. Writes the port to `fd`.
[[noreturn]] void serve_agents(const Options& o, const api::CertificatePair* pair, int fd) {
  std::map<std::string, std::string, std::less<>> bodies;
  size_t bytes = 0;
  for (int i = 0; i < o.agents; ++i) {
    char prefix[32];
    std::snprintf(prefix, sizeof prefix, "/node-%04d", i);
    std::string body = api::encode_node_view(node_view(i, o.pods));
    bytes += body.size();
    bodies.emplace(std::string(prefix) + std::string(api::kNodeViewPath), std::move(body));
  }
  boost::asio::io_context io;
  api::ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  options.gzip_min_bytes = SIZE_MAX;  // as the aggregator asks: no Accept-Encoding anyway
  if (pair) {
    const std::string dir = "/tmp/nodemeter-aggregator-bench-" + std::to_string(getpid());
    mkdir(dir.c_str(), 0700);
    std::ofstream(dir + "/tls.crt") << pair->cert_pem;
    std::ofstream(dir + "/tls.key") << pair->key_pem;
    api::ServerTlsOptions tls;
    tls.cert_file = dir + "/tls.crt";
    tls.key_file = dir + "/tls.key";
    auto context = api::make_server_tls(tls);
    unlink(tls.cert_file.c_str());
    unlink(tls.key_file.c_str());
    rmdir(dir.c_str());
    if (!context) {
      std::fprintf(stderr, "aggregator bench: %s\n", context.error().c_str());
      _exit(1);
    }
    options.tls = *context;
  }
  api::Server server(io, options, [&bodies](const api::Request& req) {
    const auto it = bodies.find(std::string_view(req.target()));
    api::Response res{it == bodies.end() ? http::status::not_found : http::status::ok,
                      req.version()};
    res.set(http::field::content_type, "application/json");
    if (it != bodies.end()) res.body() = it->second;
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    return res;
  });
  if (auto r = server.start(); !r) {
    std::fprintf(stderr, "aggregator bench: %s\n", r.error().c_str());
    _exit(1);
  }
  const unsigned port = server.local_endpoints().at(0).port();
  const std::string line = std::to_string(port) + " " + std::to_string(bytes) + "\n";
  if (write(fd, line.data(), line.size()) < 0) _exit(1);
  close(fd);
  io.run();
  _exit(0);
}

struct Memory {
  long heap_kib = 0;  // allocated and not freed, mmapped blocks included: the live data
  long rss_kib = 0;
  long anon_kib = 0;
  long hwm_kib = 0;
};

Memory memory() {
  Memory m;
#if defined(__GLIBC__)
  const struct mallinfo2 info = mallinfo2();
  m.heap_kib = static_cast<long>((info.uordblks + info.hblkhd) / 1024);
#endif
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    const auto value = [&line] {
      return std::strtol(line.c_str() + line.find(':') + 1, nullptr, 10);
    };
    if (line.starts_with("VmRSS:")) m.rss_kib = value();
    if (line.starts_with("RssAnon:")) m.anon_kib = value();
    if (line.starts_with("VmHWM:")) m.hwm_kib = value();
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  const auto parsed = parse_args(argc, argv);
  if (!parsed) {
    std::fprintf(stderr,
                 "usage: nodemeter_aggregator_bench [--agents N] [--pods P] [--cycles C] "
                 "[--scheme http|https] [--max-concurrent M] [--json-out FILE]\n");
    return 2;
  }
  const Options o = *parsed;
  std::optional<api::CertificatePair> pair;
  if (o.tls) {
    auto made = api::make_self_signed_pair({"127.0.0.1"});
    if (!made) {
      std::fprintf(stderr, "aggregator bench: %s\n", made.error().c_str());
      return 1;
    }
    pair = std::move(*made);
  }

  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return 1;
  const pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    close(pipe_fds[0]);
    serve_agents(o, pair ? &*pair : nullptr, pipe_fds[1]);
  }
  close(pipe_fds[1]);
  char buf[64] = {};
  ssize_t got = 0;
  for (ssize_t n; got < static_cast<ssize_t>(sizeof buf) - 1 &&
                  (n = read(pipe_fds[0], buf + got, sizeof buf - 1 - got)) > 0;)
    got += n;
  close(pipe_fds[0]);
  unsigned port = 0;
  unsigned long long served_bytes = 0;
  if (std::sscanf(buf, "%u %llu", &port, &served_bytes) != 2) {
    std::fprintf(stderr, "aggregator bench: the impersonating server did not start\n");
    waitpid(child, nullptr, 0);
    return 1;
  }

  std::vector<std::string> urls;
  urls.reserve(static_cast<size_t>(o.agents));
  for (int i = 0; i < o.agents; ++i) {
    char url[80];
    std::snprintf(url, sizeof url, "%s://127.0.0.1:%u/node-%04d", o.tls ? "https" : "http", port,
                  i);
    urls.emplace_back(url);
  }
  FILE* devnull = std::fopen("/dev/null", "w");
  agent::Logger log(agent::LogFormat::kText, devnull);
  boost::asio::io_context io;
  agent::AggregatorOptions options;
  options.max_concurrent = o.max_concurrent;
  options.agent_timeout = 10s;
  options.targets = [targets = agent::static_targets(urls)] { return targets; };
  if (pair) options.agent_tls.ca_pem = pair->cert_pem;
  int status = 0;
  {
    agent::Aggregator aggregator(io, options, log);
    const Memory base = memory();
    const size_t total_pods = static_cast<size_t>(o.agents) * static_cast<size_t>(o.pods);
    {
      std::printf(
          "aggregator against %d agents x %d pods (%zu pods, %.1f MiB of node views per "
          "cycle) over %s on the loopback, at most %zu fetches at once\n",
          o.agents, o.pods, total_pods, static_cast<double>(served_bytes) / (1 << 20),
          o.tls ? "HTTPS" : "HTTP", o.max_concurrent);
      std::printf(
          "baseline before the first cycle: VmRSS %ld KiB, RssAnon %ld KiB, heap in use %ld KiB\n"
          "d = growth since; HEAP/POD: live heap (mallinfo2) per pod, ANON/POD: resident\n\n",
          base.rss_kib, base.anon_kib, base.heap_kib);
      std::printf("%-6s %10s %6s %6s %8s %12s %12s %10s %10s %12s\n", "CYCLE", "WALL", "OK",
                  "NODES", "PODS", "dRSS", "dRssAnon", "HEAP/POD", "ANON/POD", "VmHWM");
    }
    std::string cycles_json;
    for (int c = 1; c <= o.cycles; ++c) {
      std::optional<agent::CycleReport> report;
      aggregator.run_cycle([&report](const agent::CycleReport& r) { report = r; });
      io.restart();
      while (!report)
        io.run_one();
      const Memory m = memory();
      const double anon_per_pod = static_cast<double>(m.anon_kib - base.anon_kib) * 1024.0 /
                                  static_cast<double>(total_pods);
      const double heap_per_pod = static_cast<double>(m.heap_kib - base.heap_kib) * 1024.0 /
                                  static_cast<double>(total_pods);
      const double wall_ms = std::chrono::duration<double, std::milli>(report->elapsed).count();
      if (report->ok != static_cast<size_t>(o.agents) || report->pods != total_pods) status = 1;
      {  // the same numbers for --json-out
        char item[400];
        std::snprintf(item, sizeof item,
                      "%s{\"cycle\":%d,\"wall_ms\":%.3f,\"ok\":%zu,\"failed\":%zu,\"nodes\":%zu,"
                      "\"pods\":%zu,\"rss_kib\":%ld,\"anon_kib\":%ld,\"hwm_kib\":%ld,"
                      "\"heap_kib\":%ld,\"anon_bytes_per_pod\":%.1f,\"heap_bytes_per_pod\":%.1f}",
                      c == 1 ? "" : ",", c, wall_ms, report->ok, report->failed, report->nodes,
                      report->pods, m.rss_kib, m.anon_kib, m.hwm_kib, m.heap_kib, anon_per_pod,
                      heap_per_pod);
        cycles_json += item;
        std::printf("%-6d %8.1f ms %6zu %6zu %8zu %8ld KiB %8ld KiB %8.0f B %8.0f B %8ld KiB\n", c,
                    wall_ms, report->ok, report->nodes, report->pods, m.rss_kib - base.rss_kib,
                    m.anon_kib - base.anon_kib, heap_per_pod, anon_per_pod, m.hwm_kib);
      }
    }
    if (!o.json_out.empty()) {
      std::FILE* out = std::fopen(o.json_out.c_str(), "w");
      if (!out) {
        std::fprintf(stderr, "aggregator bench: cannot write %s\n", o.json_out.c_str());
        status = 1;
      } else {
        std::fprintf(
            out,
            "{\"agents\":%d,\"pods_per_agent\":%d,\"scheme\":\"%s\",\"max_concurrent\":%zu,"
            "\"served_bytes_per_cycle\":%llu,\"base_rss_kib\":%ld,\"base_anon_kib\":%ld,"
            "\"cycles\":[%s]}\n",
            o.agents, o.pods, o.tls ? "https" : "http", o.max_concurrent, served_bytes,
            base.rss_kib, base.anon_kib, cycles_json.c_str());
        std::fclose(out);
      }
    }
    if (status != 0) {
      std::printf("\nnot every agent was served: the numbers above do not measure a full cycle\n");
    }
    aggregator.stop();
    io.restart();
    io.poll();
  }
  std::fclose(devnull);
  kill(child, SIGTERM);
  waitpid(child, nullptr, 0);
  return status;
}
