#include "api/summary.h"

#include "cgroup/types.h"

namespace nodemeter::api {
namespace {

// CPUStats: the sample's time, the rate over the window where one exists, the cumulative time.
Json cpu_stats(const Sample& sample, const std::optional<WindowUsage>& usage) {
  Json j;
  j["time"] = rfc3339(sample.time);
  if (usage) j["usageNanoCores"] = usage->nano_cores;
  j["usageCoreNanoSeconds"] = sample.cpu.cumulative_ns;
  return j;
}

// MemoryStats; availableBytes only under a real limit (the kubelet treats >= 2^62 as none).
Json memory_stats(const Sample& sample) {
  const cgroup::MemoryUsage& m = sample.memory;
  Json j;
  j["time"] = rfc3339(sample.time);
  if (m.limit_bytes && *m.limit_bytes < cgroup::kUnlimitedThreshold) {
    // The kubelet subtracts unsigned and could wrap; a working set over the limit reads as 0 here.
    j["availableBytes"] =
        *m.limit_bytes > m.working_set_bytes ? *m.limit_bytes - m.working_set_bytes : 0;
  }
  j["usageBytes"] = m.usage_bytes;
  j["workingSetBytes"] = m.working_set_bytes;
  if (m.rss_bytes) j["rssBytes"] = *m.rss_bytes;
  if (m.page_faults) j["pageFaults"] = *m.page_faults;
  if (m.major_page_faults) j["majorPageFaults"] = *m.major_page_faults;
  return j;
}

// SwapStats, present only where swap is accounted.
std::optional<Json> swap_stats(const Sample& sample) {
  const cgroup::MemoryUsage& m = sample.memory;
  if (!m.swap_bytes) return std::nullopt;
  Json j;
  j["time"] = rfc3339(sample.time);
  if (m.swap_limit_bytes && *m.swap_limit_bytes < cgroup::kUnlimitedThreshold) {
    j["swapAvailableBytes"] =
        *m.swap_limit_bytes > *m.swap_bytes ? *m.swap_limit_bytes - *m.swap_bytes : 0;
  }
  j["swapUsageBytes"] = *m.swap_bytes;
  return j;
}

}  // namespace

Json summary_json(const Snapshot& snap, bool /*only_cpu_and_memory*/) {
  Json node;
  node["nodeName"] = snap.node.name;
  node["startTime"] = go_time(snap.node.start_time);
  if (snap.node.latest) {
    node["cpu"] = cpu_stats(*snap.node.latest, snap.node.usage);
    node["memory"] = memory_stats(*snap.node.latest);
    if (auto swap = swap_stats(*snap.node.latest)) node["swap"] = std::move(*swap);
  }

  Json pods = Json::array();
  for (const PodSnapshot& pod : snap.pods) {
    Json containers = Json::array();
    for (const ContainerSnapshot& c : pod.containers) {
      if (!c.latest) continue;  // never read: nothing to report
      Json cj;
      cj["name"] = c.name;
      cj["startTime"] = go_time(c.start_time);
      cj["cpu"] = cpu_stats(*c.latest, c.usage);
      cj["memory"] = memory_stats(*c.latest);
      if (auto swap = swap_stats(*c.latest)) cj["swap"] = std::move(*swap);
      containers.push_back(std::move(cj));
    }
    if (!pod.latest && containers.empty()) continue;
    Json pj;
    pj["podRef"] = Json{{"name", pod.name}, {"namespace", pod.namespace_}, {"uid", pod.uid}};
    pj["startTime"] = go_time(pod.start_time);
    pj["containers"] = std::move(containers);
    if (pod.latest) {
      pj["cpu"] = cpu_stats(*pod.latest, pod.usage);
      pj["memory"] = memory_stats(*pod.latest);
      if (auto swap = swap_stats(*pod.latest)) pj["swap"] = std::move(*swap);
    }
    pods.push_back(std::move(pj));
  }

  Json j;
  j["node"] = std::move(node);
  j["pods"] = std::move(pods);
  return j;
}

bool is_summary_path(std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  return path == "/stats/summary" || path == "/stats/summary/";
}

Response handle_summary(const Request& req, const Snapshot& snap) {
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    return json_response(req, 405, to_go_json(status_no_route(405)));
  }
  const Target t = split_target(req.target());
  const bool only_cpu_and_memory = query_param(t.query, "only_cpu_and_memory") == "true";
  return json_response(req, 200, to_go_json_indented(summary_json(snap, only_cpu_and_memory), 1));
}

}  // namespace nodemeter::api
