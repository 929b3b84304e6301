// nodemeter: one binary, three commands (agent, aggregator, bench); see README.md.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "agent/agent_command.h"
#include "agent/aggregator_command.h"
#include "agent/bench_command.h"

namespace {

constexpr std::string_view kUsage =
    "Usage: nodemeter <command> [flags]\n"
    "\n"
    "Commands:\n"
    "  agent       sample this node's cgroups and serve its metrics (kubelet /metrics/resource,\n"
    "              cAdvisor, metrics.k8s.io, /stats/summary)\n"
    "  aggregator  collect every agent's node view and serve the cluster-wide Metrics API\n"
    "              (metrics.k8s.io behind the APIService, for kubectl top and the HPA)\n"
    "  bench       measure cgroup read latency per file kind and read method, and the cost of\n"
    "              one collection pass, on this host (or on --create N synthetic cgroups)\n"
    "\n"
    "Run 'nodemeter <command> --help' for a command's flags; 'nodemeter --version' for the "
    "version.\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage.data(), args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version" || args[0] == "version") {
    std::printf("nodemeter %s\n", NODEMETER_VERSION);
    return 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  if (command == "agent") return nodemeter::agent::run_agent(args);
  if (command == "aggregator") return nodemeter::agent::run_aggregator(args);
  if (command == "bench") return nodemeter::agent::run_bench(args);
  std::fprintf(stderr, "nodemeter: unknown command \"%s\" (see nodemeter --help)\n",
               command.c_str());
  return 2;
}
