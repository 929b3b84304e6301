#include "agent/agent_command.h"

#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include "agent/flags.h"
#include "agent/identity.h"
#include "agent/routes.h"
#include "agent/sampler.h"
#include "agent/self_metrics.h"
#include "api/server.h"
#include "cgroup/layout.h"

namespace nodemeter::agent {
namespace {

FlagSet agent_flags(AgentOptions& o) {
  FlagSet f("agent");
  f.value("cgroup-root", "PATH", "cgroup file system root", "/sys/fs/cgroup",
          [&o](std::string_view v) {
            o.cgroup_root = v;
            return std::string();
          });
  f.value("proc-root", "PATH", "proc file system root", "/proc", [&o](std::string_view v) {
    o.proc_root = v;
    return std::string();
  });
  f.value("node-name", "NAME", "this node's name", "$NODE_NAME, then the host name",
          [&o](std::string_view v) {
            if (v.empty()) return std::string("must not be empty");
            o.node_name = v;
            return std::string();
          });
  f.value("listen", "ADDR:PORT", "address to serve on; repeatable; [::1]:10261 for IPv6",
          "127.0.0.1:10261", [&o](std::string_view v) {
            auto ep = api::parse_listen_address(std::string(v));
            if (!ep) return ep.error();
            o.listen.emplace_back(v);
            return std::string();
          });
  f.value("interval", "DURATION", "time between collection passes", "5s", [&o](std::string_view v) {
    auto d = parse_duration(v);
    if (!d) return d.error();
    if (*d < std::chrono::milliseconds{100}) return std::string("must be at least 100ms");
    o.interval = *d;
    return std::string();
  });
  f.value("window", "DURATION", "span over which CPU rates are computed; at least two intervals",
          "15s", [&o](std::string_view v) {
            auto d = parse_duration(v);
            if (!d) return d.error();
            o.window = *d;
            return std::string();
          });
  f.value("pod-source", "auto|runtime|cgroup", "where pod and container names come from", "auto",
          [&o](std::string_view v) {
            if (v == "auto") {
              o.pod_source = PodSourceKind::kAuto;
            } else if (v == "runtime") {
              o.pod_source = PodSourceKind::kRuntime;
            } else if (v == "cgroup") {
              o.pod_source = PodSourceKind::kCgroup;
            } else if (v == "kubernetes") {
              return std::string(
                  "the Kubernetes API pod source is not part of this version; use auto, runtime or "
                  "cgroup");
            } else {
              return "\"" + std::string(v) + "\" is not one of auto, runtime, cgroup";
            }
            return std::string();
          });
  f.value("containerd-state-dir", "PATH",
          "containerd's task state directory for the k8s.io namespace",
          "/run/containerd/io.containerd.runtime.v2.task/k8s.io", [&o](std::string_view v) {
            o.containerd_state_dir = v;
            return std::string();
          });
  f.value("crio-state-dir", "PATH", "CRI-O's container state directory",
          "/run/containers/storage/overlay-containers", [&o](std::string_view v) {
            o.crio_state_dir = v;
            return std::string();
          });
  f.value("log-format", "text|json",
          "log line format (the journal gets structured fields under systemd)", "text",
          [&o](std::string_view v) {
            if (v == "text") {
              o.log_format = LogFormat::kText;
            } else if (v == "json") {
              o.log_format = LogFormat::kJson;
            } else {
              return "\"" + std::string(v) + "\" is not one of text, json";
            }
            return std::string();
          });
  f.value("max-connections", "N",
          "connections held at once; past it the least recently active idle one is closed", "16384",
          [&o](std::string_view v) {
            size_t n = 0;
            auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
            if (ec != std::errc{} || p != v.data() + v.size() || n == 0) {
              return "\"" + std::string(v) + "\" is not a positive number";
            }
            o.max_connections = n;
            return std::string();
          });
  f.boolean("version", "print the version and exit", [&o] { o.show_version = true; });
  f.boolean("help", "print this help and exit", [&o] { o.show_help = true; });
  return f;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

std::unique_ptr<PodSource> make_pod_source(const AgentOptions& o, const cgroup::Layout& layout,
                                           Logger& log) {
  std::vector<std::unique_ptr<PodSource>> sources;
  if (o.pod_source == PodSourceKind::kAuto || o.pod_source == PodSourceKind::kRuntime) {
    sources.push_back(std::make_unique<RuntimeStateSource>(
        RuntimeStateOptions{o.containerd_state_dir, o.crio_state_dir},
        [&log](const std::string& message) { log.warn(message); }));
  }
  sources.push_back(std::make_unique<CgroupPathSource>(layout.primary()));
  return std::make_unique<ChainedPodSource>(std::move(sources));
}

}  // namespace

std::string agent_usage() {
  AgentOptions o;
  return agent_flags(o).usage();
}

boost::system::result<AgentOptions, std::string> parse_agent_options(
    const std::vector<std::string>& args) {
  AgentOptions o;
  auto flags = agent_flags(o);
  using Result = boost::system::result<AgentOptions, std::string>;
  if (auto r = flags.parse(args); !r) return Result(boost::system::in_place_error, r.error());
  if (o.window < 2 * o.interval) {
    return Result(boost::system::in_place_error,
                  "nodemeter agent: --window " + format_duration(o.window) +
                      " must be at least two intervals (--interval " + format_duration(o.interval) +
                      ")");
  }
  if (o.listen.empty()) o.listen.push_back("127.0.0.1:10261");
  if (o.node_name.empty()) {
    const char* env = std::getenv("NODE_NAME");
    o.node_name = env && *env ? env : host_name();
  }
  return o;
}

int run_agent(const std::vector<std::string>& args) {
  auto parsed = parse_agent_options(args);
  if (!parsed) {
    std::fprintf(stderr, "%s\n", parsed.error().c_str());
    return 2;
  }
  AgentOptions o = std::move(*parsed);
  if (o.show_help) {
    std::fputs(agent_usage().c_str(), stdout);
    return 0;
  }
  if (o.show_version) {
    std::printf("nodemeter %s\n", NODEMETER_VERSION);
    return 0;
  }

  Logger log(o.log_format, stderr, Logger::stderr_is_journal());
  auto layout = cgroup::detect_layout(o.cgroup_root, o.proc_root);
  if (!layout) {
    std::fprintf(stderr, "nodemeter agent: %s\n", layout.error().c_str());
    return 2;
  }

  SystemClock clock;
  SelfMetrics metrics(NODEMETER_VERSION, layout->mode, o.proc_root);
  Sampler sampler(*layout, o.proc_root, make_pod_source(o, *layout, log),
                  SamplerOptions{o.node_name, o.interval, o.window}, clock, log, &metrics);
  HealthState health;
  health.started_steady_ns = steady_ns(clock.steady());
  std::atomic<std::shared_ptr<const api::Snapshot>> current;

  auto publish = [&](api::SnapshotPtr snap) {
    const auto now = steady_ns(clock.steady());
    if (health.first_pass_steady_ns.load() == 0) health.first_pass_steady_ns = now;
    health.last_pass_steady_ns = now;
    char status[160];
    std::snprintf(status, sizeof status, "STATUS=tracking %zu pods on %s (cgroup %s)",
                  snap->pods.size(), o.node_name.c_str(), cgroup::to_string(layout->mode));
    sd_notify(0, status);
    sd_notify(0, "WATCHDOG=1");
    current.store(std::move(snap));
  };
  publish(sampler.run_pass());  // the first scrape already has data

  boost::asio::io_context io;
  api::ServerOptions server_options;
  server_options.listen = o.listen;
  server_options.max_connections = o.max_connections;
  // systemd socket activation: sockets handed over replace the default address.
  const int inherited = sd_listen_fds(1);
  for (int i = 0; i < inherited; ++i)
    server_options.inherited_fds.push_back(SD_LISTEN_FDS_START + i);
  if (inherited > 0 && std::none_of(args.begin(), args.end(), [](const std::string& a) {
        return a == "--listen" || a.rfind("--listen=", 0) == 0;
      }))
    server_options.listen.clear();

  AgentRoutes routes;
  routes.snapshot = [&current] { return current.load(); };
  routes.metrics = &metrics;
  routes.clock = &clock;
  routes.health = &health;
  routes.interval = o.interval;
  routes.window = o.window;
  routes.metrics_api.version = api::version_info(NODEMETER_VERSION);
  api::Server server(
      io, server_options, routes,
      [&metrics](std::string_view path, unsigned code, std::chrono::nanoseconds elapsed) {
        metrics.observe_request(route_pattern(path), code, elapsed);
      });
  if (auto r = server.start(); !r) {
    std::fprintf(stderr, "nodemeter agent: %s\n", r.error().c_str());
    return 1;
  }
  std::string where;
  for (const auto& ep : server.local_endpoints()) {
    if (!where.empty()) where += ",";
    where +=
        (ep.address().is_v6() ? "[" + ep.address().to_string() + "]" : ep.address().to_string()) +
        ":" + std::to_string(ep.port());
  }
  log.info("serving", {{"listen", where},
                       {"node", o.node_name},
                       {"cgroup_mode", cgroup::to_string(layout->mode)},
                       {"cgroup_root", o.cgroup_root.string()},
                       {"interval", format_duration(o.interval)},
                       {"window", format_duration(o.window)}});

  // The sampling loop on its own thread: one pass per interval on a steady grid, never two at once
  // (a pass that overruns skips the ticks it missed).
  boost::asio::io_context sampler_io;
  boost::asio::steady_timer timer(sampler_io);
  auto next = std::chrono::steady_clock::now() + o.interval;
  std::function<void()> schedule = [&] {
    timer.expires_at(next);
    timer.async_wait([&](boost::system::error_code ec) {
      if (ec) return;
      publish(sampler.run_pass());
      const auto now = std::chrono::steady_clock::now();
      next += o.interval;
      while (next <= now)
        next += o.interval;
      schedule();
    });
  };
  schedule();
  std::thread sampler_thread([&sampler_io] { sampler_io.run(); });
  sd_notify(0, "READY=1");

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int signo) {
    if (ec) return;
    log.info("shutting down", {{"signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"}});
    sd_notify(0, "STOPPING=1");
    boost::asio::post(sampler_io, [&] { timer.cancel(); });
    server.shutdown(std::chrono::seconds{5}, [&io] { io.stop(); });
  });
  io.run();
  sampler_io.stop();
  sampler_thread.join();
  log.info("stopped");
  return 0;
}

}  // namespace nodemeter::agent
