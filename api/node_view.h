// One node's Metrics API view on the wire, between an agent (GET /metrics/view) and the
// aggregator, and the merge of many nodes' views into the cluster view the aggregator serves
// through handle_metrics_api: the same MetricsView type on both sides, so both serve the same
// bytes.
#pragma once

#include <boost/system/result.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/metrics_api.h"

namespace nodemeter::api {

inline constexpr std::string_view kNodeViewPath = "/metrics/view";
inline constexpr std::string_view kNodeViewContentType = "application/json";

// Compact JSON, lossless: timestamps and windows as integer nanoseconds, usage as integers, swap
// only where present, labels where not empty. Items in the view's order; deterministic.
//   {"version":1,"nodes":[{"name","labels","timestamp","window","usage":{"cpu","memory","swap"}}],
//    "pods":[{"namespace","name","labels","timestamp","window","containers":[{"name","usage"}]}],
//    "knownNodes":["…"],"knownPods":[["namespace","name"]]}
std::string encode_node_view(const MetricsView& view);

// The inverse. Never throws: anything that is not such a document (not JSON, a wrong type, a
// negative usage, an unknown version, a duplicate item) is one sentence naming the place. Items
// may come in any order; the result is in MetricsView's order.
boost::system::result<MetricsView, std::string> parse_node_view(std::string_view text);

// Which items of a merged view came from one source: indices into nodes and pods, and the
// source's elements of the known sets (pointers stay valid while that view lives, moves included).
struct ViewSlice {
  std::vector<uint32_t> nodes;
  std::vector<uint32_t> pods;
  std::vector<const std::string*> known_nodes;
  std::vector<const std::pair<std::string, std::string>*> known_pods;
};

struct MergedView {
  MetricsView view;
  std::vector<ViewSlice> slices;  // one per source, in the order given
};

// One view of many, in MetricsView's order. A node or pod that two sources list (a StatefulSet
// pod that moved to another node before the old node's view aged out) is taken from the source
// with the newer timestamp, the earlier source on a tie. The known sets are the union less what
// is listed: handle_metrics_api consults them only for names it does not list.
MergedView merge_views(std::vector<MetricsView>&& sources);

// The part of `merged` one slice describes, copied out: a source's view as it was merged (less
// the items another source won, and with known sets of only what it does not list).
MetricsView extract_view(const MetricsView& merged, const ViewSlice& slice);

}  // namespace nodemeter::api
