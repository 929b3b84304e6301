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
#include "agent/kube_pod_source.h"
#include "agent/published.h"
#include "agent/routes.h"
#include "agent/sampler.h"
#include "agent/self_metrics.h"
#include "agent/stop_signals.h"
#include "api/server.h"
#include "cgroup/layout.h"
#include "kube/api_client.h"
#include "kube/pods.h"

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
  f.value("pod-source", "auto|kubernetes|runtime|cgroup",
          "where pod and container names come from: kubernetes watches this node's pods (then "
          "runtime state, then the cgroup path, while the API is unreachable); auto is kubernetes "
          "where --kubeconfig or in-cluster configuration is present, else runtime",
          "auto", [&o](std::string_view v) {
            if (v == "auto") {
              o.pod_source = PodSourceKind::kAuto;
            } else if (v == "runtime") {
              o.pod_source = PodSourceKind::kRuntime;
            } else if (v == "cgroup") {
              o.pod_source = PodSourceKind::kCgroup;
            } else if (v == "kubernetes") {
              o.pod_source = PodSourceKind::kKubernetes;
            } else {
              return "\"" + std::string(v) + "\" is not one of auto, kubernetes, runtime, cgroup";
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
  f.value("kubeconfig", "PATH",
          "kubeconfig for the API server (pod watch, TokenReview, SubjectAccessReview)",
          "in-cluster configuration where present", [&o](std::string_view v) {
            if (v.empty()) return std::string("must not be empty");
            o.kubeconfig = v;
            return std::string();
          });
  add_agent_security_flags(f, o.security);
  f.boolean("version", "print the version and exit", [&o] { o.show_version = true; });
  f.boolean("help", "print this help and exit", [&o] { o.show_help = true; });
  return f;
}

// Sources best first: the API watch (where there is one), the runtime's state, the cgroup path.
std::unique_ptr<PodSource> make_pod_source(const AgentOptions& o, const cgroup::Layout& layout,
                                           const std::shared_ptr<kube::PodInformer>& informer,
                                           Logger& log) {
  std::vector<std::unique_ptr<PodSource>> sources;
  if (informer) sources.push_back(std::make_unique<KubePodSource>(informer));
  if (o.pod_source != PodSourceKind::kCgroup) {
    sources.push_back(std::make_unique<RuntimeStateSource>(
        RuntimeStateOptions{o.containerd_state_dir, o.crio_state_dir},
        [&log](const std::string& message) { log.warn(message); }));
  }
  sources.push_back(std::make_unique<CgroupPathSource>(layout.primary()));
  return std::make_unique<ChainedPodSource>(std::move(sources));
}

std::string sampler_source_name(bool watching, PodSourceKind kind) {
  std::string out = watching ? "kubernetes," : "";
  if (kind != PodSourceKind::kCgroup) out += "runtime,";
  return out + "cgroup";
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

  std::string no_cluster;
  auto config = kube::load_config(o.kubeconfig, &no_cluster);
  if (!config) {
    std::fprintf(stderr, "nodemeter agent: --kubeconfig: %s\n", config.error().c_str());
    return 2;
  }
  if (o.pod_source == PodSourceKind::kKubernetes && !*config) {
    std::fprintf(stderr,
                 "nodemeter agent: --pod-source=kubernetes needs --kubeconfig or in-cluster "
                 "configuration (%s)\n",
                 no_cluster.c_str());
    return 2;
  }
  if (auto r = validate_security(o.security, o.listen, config->has_value()); !r) {
    std::fprintf(stderr, "%s\n", r.error().c_str());
    return 2;
  }

  boost::asio::io_context io;
  std::shared_ptr<kube::ApiClient> api;
  if (*config) {
    auto client = kube::ApiClient::create(io, **config);
    if (!client) {
      std::fprintf(stderr, "nodemeter agent: %s: %s\n", (*config)->description.c_str(),
                   client.error().c_str());
      return 2;
    }
    api = *client;
  }
  std::shared_ptr<kube::PodInformer> informer;
  if (api && (o.pod_source == PodSourceKind::kKubernetes || o.pod_source == PodSourceKind::kAuto)) {
    kube::PodWatchOptions watch;
    watch.field_selector = "spec.nodeName=" + o.node_name;
    informer = std::make_shared<kube::PodInformer>(
        io, api, watch, [&log](const std::string& message) { log.info(message); });
    informer->start();
    // Give the first list a moment, so that the first pass already has the pods' names.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{2};
    while (!informer->status().synced && std::chrono::steady_clock::now() < deadline)
      io.run_one_until(deadline);
  }

  // Kept cgroup descriptors (four or so per container) and connections both need descriptors:
  // take what the hard limit allows before the first pass, not only when the server starts.
  api::raise_descriptor_limit(uint64_t{1} << 20);
  SystemClock clock;
  SelfMetrics metrics(NODEMETER_VERSION, layout->mode, o.proc_root);
  if (informer) {
    metrics.add_collector([informer] {
      return informer_families("nodemeter_kubernetes_pods_watch", informer->status());
    });
  }
  Sampler sampler(*layout, o.proc_root, make_pod_source(o, *layout, informer, log),
                  SamplerOptions{o.node_name, o.interval, o.window}, clock, log, &metrics);
  HealthState health;
  health.started_steady_ns = steady_ns(clock.steady());
  Published<api::Snapshot> current;

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

  // A self-signed certificate names this node, as the kubelet's does.
  o.security.tls_hosts = {o.node_name, host_name(), "localhost", "127.0.0.1", "::1"};
  if (const char* ip = std::getenv("POD_IP"); ip && *ip) o.security.tls_hosts.emplace_back(ip);
  auto security = make_security(
      o.security, io, api,
      [node = o.node_name](const api::Request& r) { return api::kubelet_attributes(r, node); },
      std::nullopt,
      [&metrics, &log](api::GuardOutcome outcome, std::string_view detail) {
        metrics.count_guard_outcome(api::to_string(outcome));
        if (outcome == api::GuardOutcome::error) {
          log.warn("a review failed", {{"error", std::string(detail)}});
        }
      });
  if (!security) {
    std::fprintf(stderr, "%s\n", security.error().c_str());
    return 2;
  }
  server_options.tls = security->tls;

  AgentRoutes routes;
  routes.snapshot = [&current] { return current.load(); };
  routes.metrics = &metrics;
  routes.clock = &clock;
  routes.health = &health;
  routes.interval = o.interval;
  routes.window = o.window;
  routes.metrics_api.version = api::version_info(NODEMETER_VERSION);
  if (informer) {
    routes.pod_watch = [informer] {
      const auto st = informer->status();
      return PodWatchState{st.synced, st.healthy, st.last_error};
    };
  }
  api::Server server(
      io, server_options, security->wrap(routes),
      [&metrics](std::string_view path, unsigned code, std::chrono::nanoseconds elapsed) {
        metrics.observe_request(route_pattern(path), code, elapsed);
      });
  if (auto r = server.start(); !r) {
    std::fprintf(stderr, "nodemeter agent: %s\n", r.error().c_str());
    return 1;
  }
  if (auto r = check_plain_http_endpoints(o.security, server.local_endpoints()); !r) {
    std::fprintf(stderr, "%s\n", r.error().c_str());
    return 2;
  }
  log.info("serving", {{"listen", api::format_endpoints(server.local_endpoints())},
                       {"node", o.node_name},
                       {"cgroup_mode", cgroup::to_string(layout->mode)},
                       {"cgroup_root", o.cgroup_root.string()},
                       {"interval", format_duration(o.interval)},
                       {"window", format_duration(o.window)},
                       {"pod_source", sampler_source_name(informer != nullptr, o.pod_source)},
                       {"kubernetes", *config ? (*config)->description : "none: " + no_cluster},
                       {"security", security->summary}});

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
  // Under a systemd watchdog, ping at half its period from the sampling thread too, so a long
  // --interval is no reason for a restart; a pass that hangs still blocks the pings.
  boost::asio::steady_timer watchdog(sampler_io);
  uint64_t watchdog_usec = 0;
  std::function<void()> ping;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
    const auto period = std::chrono::microseconds{watchdog_usec / 2};
    ping = [&watchdog, &ping, period] {
      watchdog.expires_after(period);
      watchdog.async_wait([&ping](boost::system::error_code ec) {
        if (ec) return;
        sd_notify(0, "WATCHDOG=1");
        ping();
      });
    };
    ping();
  }
  std::thread sampler_thread([&sampler_io] { sampler_io.run(); });
  sd_notify(0, "READY=1");

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int signo) {
    if (ec) return;
    log.info("shutting down", {{"signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"}});
    sd_notify(0, "STOPPING=1");
    boost::asio::post(sampler_io, [&] {
      timer.cancel();
      watchdog.cancel();
    });
    if (informer) informer->stop();
    if (api) api->shutdown();
    server.shutdown(std::chrono::seconds{5}, [&io] { io.stop(); });
  });
  io.run();
  sampler_io.stop();
  sampler_thread.join();
  ignore_stop_signals(signals);
  log.info("stopped");
  return 0;
}

}  // namespace nodemeter::agent
