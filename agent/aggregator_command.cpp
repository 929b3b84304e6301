#include "agent/aggregator_command.h"

#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "agent/flags.h"
#include "agent/routes.h"
#include "agent/stop_signals.h"
#include "api/auth.h"
#include "api/exposition.h"
#include "api/k8s_json.h"
#include "kube/api_client.h"
#include "kube/pods.h"

namespace nodemeter::agent {
namespace {

namespace http = boost::beast::http;

constexpr std::string_view kCommand = "nodemeter aggregator";

FlagSet aggregator_flags(AggregatorCommandOptions& o) {
  FlagSet f("aggregator");
  f.value("listen", "ADDR:PORT", "address to serve the Metrics API on (HTTPS); repeatable",
          ":10443", [&o](std::string_view v) {
            auto ep = api::parse_listen_address(std::string(v));
            if (!ep) return ep.error();
            o.listen.emplace_back(v);
            return std::string();
          });
  f.value("resolution", "DURATION", "time between two collections of every agent's node view",
          "15s", [&o](std::string_view v) {
            auto d = parse_duration(v);
            if (!d) return d.error();
            if (*d < std::chrono::milliseconds{100}) return std::string("must be at least 100ms");
            o.resolution = *d;
            return std::string();
          });
  f.value("agents", "URLS",
          "agent base URLs (https://10.0.0.5:10261), comma-separated and repeatable; for bare "
          "hosts and tests, instead of --agent-selector",
          "", [&o](std::string_view v) {
            while (!v.empty()) {
              const size_t comma = v.find(',');
              std::string_view url = v.substr(0, comma);
              while (!url.empty() && url.front() == ' ')
                url.remove_prefix(1);
              while (!url.empty() && url.back() == ' ')
                url.remove_suffix(1);
              if (!url.empty()) {
                auto parsed = kube::parse_base_url(url);
                if (!parsed) return parsed.error();
                o.agents.emplace_back(url);
              }
              if (comma == std::string_view::npos) break;
              v.remove_prefix(comma + 1);
            }
            return std::string();
          });
  f.value("agent-namespace", "NAMESPACE", "namespace of the agent pods",
          "the service account's namespace", [&o](std::string_view v) {
            if (v.empty()) return std::string("must not be empty");
            o.agent_namespace = v;
            return std::string();
          });
  f.value("agent-selector", "SELECTOR",
          "label selector of the agent pods (app.kubernetes.io/name=nodemeter-agent); found "
          "through the Kubernetes API",
          "", [&o](std::string_view v) {
            if (v.empty()) return std::string("must not be empty");
            o.agent_selector = v;
            return std::string();
          });
  f.value("agent-port", "PORT", "port the agent pods serve on", "10261", [&o](std::string_view v) {
    unsigned port = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), port);
    if (ec != std::errc{} || p != v.data() + v.size() || port == 0 || port > 65535) {
      return "\"" + std::string(v) + "\" is not a port";
    }
    o.agent_port = std::string(v);
    return std::string();
  });
  f.value("agent-scheme", "https|http", "how to reach the agent pods", "https",
          [&o](std::string_view v) {
            if (v != "https" && v != "http") {
              return "\"" + std::string(v) + "\" is not https or http";
            }
            o.agent_scheme = std::string(v);
            return std::string();
          });
  f.value("agent-timeout", "DURATION", "deadline of one fetch of an agent's node view", "5s",
          [&o](std::string_view v) {
            auto d = parse_duration(v);
            if (!d) return d.error();
            if (*d < std::chrono::milliseconds{1}) return std::string("must be at least 1ms");
            o.agent_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
            return std::string();
          });
  f.value("agent-max-concurrent", "N", "fetches in flight at once", "64", [&o](std::string_view v) {
    size_t n = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc{} || p != v.data() + v.size() || n == 0) {
      return "\"" + std::string(v) + "\" is not a positive number";
    }
    o.agent_max_concurrent = n;
    return std::string();
  });
  f.value("agent-ca-file", "FILE",
          "PEM bundle the agents' serving certificates must chain to; default: the system's", "",
          [&o](std::string_view v) {
            o.agent_ca_file = v;
            return std::string();
          });
  f.boolean("agent-insecure-skip-tls-verify",
            "do not verify the agents' certificates (self-signed agents without a CA)",
            [&o] { o.agent_insecure_skip_tls_verify = true; });
  f.value("kubeconfig", "FILE",
          "kubeconfig to reach the Kubernetes API with; default: in-cluster configuration", "",
          [&o](std::string_view v) {
            o.kubeconfig = v;
            return std::string();
          });
  f.value("log-format", "text|json", "log line format", "text", [&o](std::string_view v) {
    if (v == "text") {
      o.log_format = LogFormat::kText;
    } else if (v == "json") {
      o.log_format = LogFormat::kJson;
    } else {
      return "\"" + std::string(v) + "\" is not one of text, json";
    }
    return std::string();
  });
  add_aggregator_security_flags(f, o.security);
  f.boolean("version", "print the version and exit", [&o] { o.show_version = true; });
  f.boolean("help", "print this help and exit", [&o] { o.show_help = true; });
  return f;
}

using Failure = boost::system::result<AggregatorCommandOptions, std::string>;

// The agent pods the informer lists, as targets: Running, with a pod IP, one per node.
std::function<std::vector<AgentTarget>()> discovered_targets(
    std::shared_ptr<kube::PodInformer> informer, std::string scheme, std::string port) {
  return [informer = std::move(informer), scheme = std::move(scheme), port = std::move(port)] {
    std::vector<AgentTarget> out;
    const auto pods = informer->pods();
    if (!pods) return out;
    for (const auto& [uid, pod] : *pods) {
      if (pod.phase != "Running" || pod.pod_ip.empty() || pod.node_name.empty()) continue;
      const bool v6 = pod.pod_ip.find(':') != std::string::npos;
      out.push_back(AgentTarget{
          pod.node_name, scheme + "://" + (v6 ? "[" + pod.pod_ip + "]" : pod.pod_ip) + ":" + port});
    }
    return out;
  };
}

std::string read_namespace_file() {
  std::ifstream in(kube::InClusterPaths{}.namespace_file);
  std::string ns;
  std::getline(in, ns);
  return ns;
}

}  // namespace

std::string aggregator_usage() {
  AggregatorCommandOptions o;
  return aggregator_flags(o).usage();
}

boost::system::result<AggregatorCommandOptions, std::string> parse_aggregator_options(
    const std::vector<std::string>& args) {
  AggregatorCommandOptions o;
  auto flags = aggregator_flags(o);
  if (auto r = flags.parse(args); !r) return Failure(boost::system::in_place_error, r.error());
  if (o.show_help || o.show_version) return o;
  const std::string who = std::string(kCommand) + ": ";
  if (!o.agents.empty() && !o.agent_selector.empty()) {
    return Failure(boost::system::in_place_error,
                   who + "--agents and --agent-selector exclude each other");
  }
  if (o.agents.empty() && o.agent_selector.empty()) {
    return Failure(boost::system::in_place_error,
                   who +
                       "give the agents: --agent-selector (with --agent-namespace) to find them "
                       "as pods, or --agents with their URLs");
  }
  if (!o.agent_namespace.empty() && o.agent_selector.empty()) {
    return Failure(boost::system::in_place_error, who + "--agent-namespace needs --agent-selector");
  }
  if (o.agent_insecure_skip_tls_verify && !o.agent_ca_file.empty()) {
    return Failure(boost::system::in_place_error,
                   who + "--agent-ca-file and --agent-insecure-skip-tls-verify exclude each other");
  }
  if (o.listen.empty()) o.listen.push_back(":10443");
  return o;
}

api::Response AggregatorRoutes::operator()(const api::Request& req) const {
  const std::string_view target = req.target();
  const std::string_view path = target.substr(0, target.find('?'));
  if (path == "/healthz") return health_response(req, "healthz", {{"ping", true, ""}});
  if (path == "/livez") {
    return health_response(req, "livez",
                           {{"ping", true, ""},
                            {"collector", aggregator->live(std::chrono::steady_clock::now()),
                             "no collection cycle finished in time"}});
  }
  if (path == "/readyz") {
    return health_response(
        req, "readyz",
        {{"ping", true, ""},
         {"collector", aggregator->cycles() > 0, "the first collection cycle has not finished"}});
  }
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    auto res = text_response(req, http::status::method_not_allowed, "method not allowed\n");
    res.set(http::field::allow, "GET, HEAD");
    return res;
  }
  if (path == "/metrics") {
    return text_response(req, http::status::ok, metrics ? metrics->render() : std::string(),
                         api::kExpositionContentType);
  }
  if (api::is_metrics_api_path(target)) {
    const auto view = aggregator->view();
    return api::handle_metrics_api(req, *view, metrics_api, std::chrono::system_clock::now());
  }
  return api::json_response(req, 404, api::to_go_json(api::status_no_route(404)));
}

int run_aggregator(const std::vector<std::string>& args) {
  auto parsed = parse_aggregator_options(args);
  if (!parsed) {
    std::fprintf(stderr, "%s\n", parsed.error().c_str());
    return 2;
  }
  AggregatorCommandOptions o = std::move(*parsed);
  if (o.show_help) {
    std::fputs(aggregator_usage().c_str(), stdout);
    return 0;
  }
  if (o.show_version) {
    std::printf("nodemeter %s\n", NODEMETER_VERSION);
    return 0;
  }
  const std::string who = std::string(kCommand) + ": ";
  Logger log(o.log_format, stderr, Logger::stderr_is_journal());

  // The Kubernetes API: --kubeconfig, else in-cluster when it is there.
  auto loaded = kube::load_config(o.kubeconfig);
  if (!loaded) {
    std::fprintf(stderr, "%s--kubeconfig %s: %s\n", who.c_str(), o.kubeconfig.c_str(),
                 loaded.error().c_str());
    return 2;
  }
  const std::optional<kube::KubeConfig> kube_config = std::move(*loaded);
  if (!o.agent_selector.empty() && !kube_config) {
    std::fprintf(stderr,
                 "%s--agent-selector needs the Kubernetes API (in-cluster configuration or "
                 "--kubeconfig)\n",
                 who.c_str());
    return 2;
  }
  if (auto valid = validate_security(o.security, o.listen, kube_config.has_value()); !valid) {
    std::fprintf(stderr, "%s\n", valid.error().c_str());
    return 2;
  }
  if (o.security.tls_hosts.empty()) {
    o.security.tls_hosts = {host_name(), "localhost", "127.0.0.1", "::1"};
    if (const char* ip = std::getenv("POD_IP"); ip && *ip) o.security.tls_hosts.emplace_back(ip);
  }

  boost::asio::io_context io;  // the server, the reviews and the pod watch
  std::shared_ptr<kube::ApiClient> api_client;
  if (kube_config) {
    auto created = kube::ApiClient::create(io, *kube_config);
    if (!created) {
      std::fprintf(stderr, "%sKubernetes API %s: %s\n", who.c_str(),
                   kube_config->description.c_str(), created.error().c_str());
      return 2;
    }
    api_client = std::move(*created);
  }

  // The front proxy's CA and headers from the cluster when no flag gives them.
  std::optional<RequestHeaderConfig> from_cluster;
  if (api_client && o.security.requestheader_client_ca_file.empty()) {
    std::optional<boost::system::result<RequestHeaderConfig, std::string>> fetched;
    fetch_request_header_config(api_client, [&fetched](auto r) { fetched = std::move(r); });
    while (!fetched && io.run_one() > 0) {
    }
    io.restart();
    if (!fetched || !*fetched) {
      std::fprintf(stderr, "%s%s\n", who.c_str(),
                   fetched ? fetched->error().c_str() : "the ConfigMap read did not finish");
      return 1;
    }
    from_cluster = std::move(**fetched);
  }

  AggregatorMetrics metrics(NODEMETER_VERSION);
  auto security =
      make_security(o.security, io, api_client, api::metrics_api_attributes, from_cluster);
  if (!security) {
    std::fprintf(stderr, "%s\n", security.error().c_str());
    return 2;
  }

  // Where the agents are.
  AggregatorOptions agg;
  agg.resolution = o.resolution;
  agg.agent_timeout = o.agent_timeout;
  agg.max_concurrent = o.agent_max_concurrent;
  agg.agent_tls.ca_file = o.agent_ca_file;
  agg.agent_tls.insecure_skip_verify = o.agent_insecure_skip_tls_verify;
  agg.user_agent = "nodemeter-aggregator/" + std::string(NODEMETER_VERSION);
  if (api_client) agg.bearer_token = [api_client] { return api_client->bearer_token(); };
  std::shared_ptr<kube::PodInformer> informer;
  std::string agents_description;
  if (!o.agents.empty()) {
    agg.targets = [targets = static_targets(o.agents)] { return targets; };
    agents_description = std::to_string(o.agents.size()) + " agents from --agents";
  } else {
    if (o.agent_namespace.empty()) o.agent_namespace = read_namespace_file();
    if (o.agent_namespace.empty()) {
      std::fprintf(stderr,
                   "%s--agent-namespace is needed outside a pod (no service account namespace)\n",
                   who.c_str());
      return 2;
    }
    kube::PodWatchOptions watch;
    watch.namespace_ = o.agent_namespace;
    watch.label_selector = o.agent_selector;
    informer = std::make_shared<kube::PodInformer>(io, api_client, watch,
                                                   [&log](const std::string& m) { log.warn(m); });
    agg.targets = discovered_targets(informer, o.agent_scheme, o.agent_port);
    agents_description = "agent pods in namespace " + o.agent_namespace + " matching " +
                         o.agent_selector + ", port " + o.agent_port;
  }

  // The collection loop on its own thread: merging a large cluster must not hold up requests.
  boost::asio::io_context aggregator_io;
  auto aggregator_work = boost::asio::make_work_guard(aggregator_io);
  Aggregator aggregator(aggregator_io, agg, log, &metrics);

  AggregatorRoutes routes;
  routes.aggregator = &aggregator;
  routes.metrics = &metrics;
  routes.metrics_api.version = api::version_info(NODEMETER_VERSION);
  api::ServerOptions server_options;
  server_options.listen = o.listen;
  server_options.tls = security->tls;
  api::Server server(
      io, server_options, security->wrap(routes),
      [&metrics](std::string_view path, unsigned code, std::chrono::nanoseconds elapsed) {
        metrics.observe_request(route_pattern(path), code, elapsed);
      });
  if (auto r = server.start(); !r) {
    std::fprintf(stderr, "%s%s\n", who.c_str(), r.error().c_str());
    return 1;
  }
  std::string agent_tls = "verified against the system's CAs";
  if (o.agent_insecure_skip_tls_verify) {
    agent_tls = "NOT verified (--agent-insecure-skip-tls-verify)";
  } else if (!o.agent_ca_file.empty()) {
    agent_tls = "verified against " + o.agent_ca_file;
  }
  log.info("serving", {{"listen", api::format_endpoints(server.local_endpoints())},
                       {"security", security->summary},
                       {"agents", agents_description},
                       {"agent_tls", agent_tls},
                       {"kubernetes", kube_config ? kube_config->description : "none"},
                       {"resolution", format_duration(o.resolution)},
                       {"agent_timeout", format_duration(o.agent_timeout)}});

  // With discovery, the first cycle waits for the first complete list of agent pods: an empty
  // cluster view is not served as if it were the cluster's.
  if (informer) {
    auto started = std::make_shared<bool>(false);
    informer->on_change([&, started] {
      if (*started || !informer->status().synced) return;
      *started = true;
      boost::asio::post(aggregator_io, [&aggregator] { aggregator.start(); });
    });
    informer->start();
  } else {
    boost::asio::post(aggregator_io, [&aggregator] { aggregator.start(); });
  }
  std::thread aggregator_thread([&aggregator_io] { aggregator_io.run(); });

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int signo) {
    if (ec) return;
    log.info("shutting down", {{"signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"}});
    aggregator.stop();
    if (informer) informer->stop();
    server.shutdown(std::chrono::seconds{5}, [&io] { io.stop(); });
  });
  io.run();
  aggregator_work.reset();
  aggregator_io.stop();
  aggregator_thread.join();
  if (api_client) api_client->shutdown();
  ignore_stop_signals(signals);
  log.info("stopped");
  return 0;
}

}  // namespace nodemeter::agent
