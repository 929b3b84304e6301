// The Metrics API (metrics.k8s.io v1beta1 and v1) as metrics-server serves it through the API
// server's aggregation layer: NodeMetrics and PodMetrics objects and lists, server-side label and
// field selectors, Table output for kubectl get, discovery documents, /version, and Status errors.
// A pure function of a request and a MetricsView; the view is built from one snapshot (the agent)
// or from many (the aggregator), so both serve the same bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/server.h"
#include "api/snapshot.h"

namespace nodemeter::api {

struct ResourceUsage {
  uint64_t cpu_nano_cores = 0;
  uint64_t memory_bytes = 0;           // working set
  std::optional<uint64_t> swap_bytes;  // present where the node has swap accounting
};

struct NodeMetricsItem {
  std::string name;
  std::map<std::string, std::string> labels;
  WallTime timestamp;
  std::chrono::nanoseconds window{0};
  ResourceUsage usage;
};

struct ContainerMetricsItem {
  std::string name;
  ResourceUsage usage;
};

struct PodMetricsItem {
  std::string name;
  std::string namespace_;
  std::map<std::string, std::string> labels;
  WallTime timestamp;  // of the container whose newest sample is oldest, as metrics-server picks
  std::chrono::nanoseconds window{0};
  std::vector<ContainerMetricsItem> containers;  // sorted by name
};

// What the Metrics API can answer. Objects that exist but have no metrics yet are remembered by
// name: a get of one answers podmetrics/nodemetrics NotFound, an unknown name the core one.
struct MetricsView {
  std::vector<NodeMetricsItem> nodes;  // sorted by name
  std::vector<PodMetricsItem> pods;    // sorted by namespace, then name
  std::set<std::string> known_nodes;
  std::set<std::pair<std::string, std::string>> known_pods;  // (namespace, name)

  // Adds one node's snapshot, keeping the order. Listing rules, as metrics-server's:
  // - the node is listed once it has a window;
  // - only Running pods; every container that has been read (has a sample) must have a window
  //   whose newest sample is no older than the snapshot's --window when the container could not
  //   be read in the last pass; containers never read (exited init containers, not started yet)
  //   are skipped and do not hide their pod; a pod with no measured container is not listed.
  void add(const Snapshot& snap);
};

MetricsView make_metrics_view(const Snapshot& snap);

// version.Info, as /version answers it.
struct VersionInfo {
  std::string major;
  std::string minor;
  std::string git_version;  // "v0.1.0"
  std::string git_commit;
  std::string git_tree_state;
  std::string build_date;
  std::string go_version;
  std::string compiler;
  std::string platform;  // "linux/amd64"
};
// From a semantic version ("0.1.0"), with this build's compiler and platform.
VersionInfo version_info(std::string_view semver);

struct MetricsApiOptions {
  std::string preferred_version = "v1beta1";  // of the group; both v1beta1 and v1 are served
  VersionInfo version;
};

// True for the paths handle_metrics_api serves: /apis, /apis/..., /version.
bool is_metrics_api_path(std::string_view target);

// Answers GET and HEAD (405 otherwise); `now` is each object's creationTimestamp, as
// metrics-server stamps objects when it serves them.
Response handle_metrics_api(const Request& req, const MetricsView& view,
                            const MetricsApiOptions& options, WallTime now);

}  // namespace nodemeter::api
