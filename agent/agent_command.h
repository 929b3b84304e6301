// `nodemeter agent`: the node agent's command line and its life: first pass, serving, a pass every
// --interval on its own thread, systemd notifications, graceful shutdown on SIGTERM/SIGINT.
#pragma once

#include <boost/system/result.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "agent/log.h"
#include "agent/security.h"

namespace nodemeter::agent {

enum class PodSourceKind { kAuto, kKubernetes, kRuntime, kCgroup };

struct AgentOptions {
  std::filesystem::path cgroup_root = "/sys/fs/cgroup";
  std::filesystem::path proc_root = "/proc";
  std::string node_name;            // default: $NODE_NAME, then the host name
  std::vector<std::string> listen;  // default: 127.0.0.1:10261
  std::chrono::nanoseconds interval{std::chrono::seconds{5}};
  std::chrono::nanoseconds window{std::chrono::seconds{15}};
  PodSourceKind pod_source = PodSourceKind::kAuto;
  std::filesystem::path containerd_state_dir =
      "/run/containerd/io.containerd.runtime.v2.task/k8s.io";
  std::filesystem::path crio_state_dir = "/run/containers/storage/overlay-containers";
  LogFormat log_format = LogFormat::kText;
  size_t max_connections = 16384;
  std::filesystem::path kubeconfig;  // empty: in-cluster configuration, where present
  SecurityOptions security;
  bool show_help = false;
  bool show_version = false;
};

// Parses the agent's flags; the error is one sentence naming the flag. usage() gives --help.
boost::system::result<AgentOptions, std::string> parse_agent_options(
    const std::vector<std::string>& args);
std::string agent_usage();

// Runs the agent until SIGTERM/SIGINT; returns the process exit code.
int run_agent(const std::vector<std::string>& args);

}  // namespace nodemeter::agent
