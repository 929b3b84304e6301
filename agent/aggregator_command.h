// `nodemeter aggregator`: the cluster-wide Metrics API behind the v1beta1/v1 metrics.k8s.io
// APIService. Finds the agents (--agents URLs, or pods by --agent-namespace and
// --agent-selector through the Kubernetes API), collects their node views every --resolution and
// serves the merged view over HTTPS with request-header authentication and SubjectAccessReview.
#pragma once

#include <boost/system/result.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "agent/aggregator.h"
#include "agent/log.h"
#include "agent/security.h"
#include "api/metrics_api.h"
#include "api/server.h"

namespace nodemeter::agent {

struct AggregatorCommandOptions {
  std::vector<std::string> listen;  // default: :10443
  std::chrono::nanoseconds resolution{std::chrono::seconds{15}};
  std::vector<std::string> agents;  // static agent base URLs
  std::string agent_namespace;      // default: the service account's namespace
  std::string agent_selector;       // label selector of the agent pods
  std::string agent_port = "10261";
  std::string agent_scheme = "https";
  std::chrono::milliseconds agent_timeout{5000};
  size_t agent_max_concurrent = 64;
  std::string agent_ca_file;
  bool agent_insecure_skip_tls_verify = false;
  std::string kubeconfig;
  LogFormat log_format = LogFormat::kText;
  SecurityOptions security;
  bool show_help = false;
  bool show_version = false;
};

// Parses the flags and checks them together; the error is one sentence naming the flag.
boost::system::result<AggregatorCommandOptions, std::string> parse_aggregator_options(
    const std::vector<std::string>& args);
std::string aggregator_usage();

// The aggregator's HTTP surface, before authentication: /healthz, /livez, /readyz (ready after
// the first cycle), /metrics (its own metrics), and the Metrics API from the latest cluster view.
struct AggregatorRoutes {
  const Aggregator* aggregator = nullptr;
  const AggregatorMetrics* metrics = nullptr;
  api::MetricsApiOptions metrics_api;
  api::Response operator()(const api::Request& request) const;
};

// Runs the aggregator until SIGTERM/SIGINT; returns the process exit code.
int run_aggregator(const std::vector<std::string>& args);

}  // namespace nodemeter::agent
