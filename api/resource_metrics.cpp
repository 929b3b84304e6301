#include "api/resource_metrics.h"

#include <algorithm>
#include <chrono>
#include <string_view>
#include <tuple>

namespace nodemeter::api {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

constexpr double kNsPerSecond = 1e9;

int64_t to_ms(WallTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

double to_seconds(WallTime t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

MetricFamily family(std::string name, std::string help, MetricType type) {
  return MetricFamily{std::move(name), std::move(help), type, {}};
}

ClientMetric metric(std::vector<ClientMetric::Label> labels, MetricType type, double value,
                    int64_t timestamp_ms) {
  ClientMetric m;
  m.label = std::move(labels);
  switch (type) {
    case MetricType::Counter:
      m.counter.value = value;
      break;
    default:
      m.gauge.value = value;
      break;
  }
  m.timestamp_ms = timestamp_ms;
  return m;
}

// Read at least once, with CPU and working set above zero (see exposable()).
bool has_usable_sample(const std::optional<Sample>& s) {
  return s && s->cpu.cumulative_ns > 0 && s->memory.working_set_bytes > 0;
}

struct ContainerRow {
  std::string_view container;
  std::string_view namespace_;
  std::string_view pod;
  const ContainerSnapshot* snap;
};

struct PodRow {
  std::string_view namespace_;
  std::string_view pod;
  const PodSnapshot* snap;
};

// Rows in the order the kubelet's registry emits them: by label values, labels sorted by name.
std::vector<ContainerRow> container_rows(const Snapshot& s) {
  std::vector<ContainerRow> rows;
  for (const auto& pod : s.pods) {
    for (const auto& c : pod.containers) {
      if (exposable(c)) rows.push_back({c.name, pod.namespace_, pod.name, &c});
    }
  }
  std::sort(rows.begin(), rows.end(), [](const ContainerRow& a, const ContainerRow& b) {
    return std::tie(a.container, a.namespace_, a.pod) < std::tie(b.container, b.namespace_, b.pod);
  });
  return rows;
}

std::vector<PodRow> pod_rows(const Snapshot& s) {
  std::vector<PodRow> rows;
  for (const auto& pod : s.pods) {
    if (has_usable_sample(pod.latest)) {
      rows.push_back({pod.namespace_, pod.name, &pod});
    }
  }
  std::sort(rows.begin(), rows.end(), [](const PodRow& a, const PodRow& b) {
    return std::tie(a.namespace_, a.pod) < std::tie(b.namespace_, b.pod);
  });
  return rows;
}

std::vector<ClientMetric::Label> container_labels(const ContainerRow& r) {
  return {{"container", std::string(r.container)},
          {"namespace", std::string(r.namespace_)},
          {"pod", std::string(r.pod)}};
}

std::vector<ClientMetric::Label> pod_labels(const PodRow& r) {
  return {{"namespace", std::string(r.namespace_)}, {"pod", std::string(r.pod)}};
}

}  // namespace

bool exposable(const ContainerSnapshot& c) {
  return has_usable_sample(c.latest);
}

std::vector<MetricFamily> resource_families(const Snapshot& s) {
  auto container_cpu =
      family("container_cpu_usage_seconds_total",
             "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
             MetricType::Counter);
  auto container_mem =
      family("container_memory_working_set_bytes",
             "[STABLE] Current working set of the container in bytes", MetricType::Gauge);
  auto container_start =
      family("container_start_time_seconds",
             "[STABLE] Start time of the container since unix epoch in seconds", MetricType::Gauge);
  auto container_swap_limit = family("container_swap_limit_bytes",
                                     "[ALPHA] Current amount of the container swap limit in bytes. "
                                     "Reported only on non-windows systems",
                                     MetricType::Gauge);
  auto container_swap = family("container_swap_usage_bytes",
                               "[ALPHA] Current amount of the container swap usage in bytes. "
                               "Reported only on non-windows systems",
                               MetricType::Gauge);
  auto node_cpu = family("node_cpu_usage_seconds_total",
                         "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
                         MetricType::Counter);
  auto node_mem = family("node_memory_working_set_bytes",
                         "[STABLE] Current working set of the node in bytes", MetricType::Gauge);
  auto node_swap = family(
      "node_swap_usage_bytes",
      "[ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems",
      MetricType::Gauge);
  auto pod_cpu = family("pod_cpu_usage_seconds_total",
                        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
                        MetricType::Counter);
  auto pod_mem = family("pod_memory_working_set_bytes",
                        "[STABLE] Current working set of the pod in bytes", MetricType::Gauge);
  auto pod_swap = family(
      "pod_swap_usage_bytes",
      "[ALPHA] Current amount of the pod swap usage in bytes. Reported only on non-windows systems",
      MetricType::Gauge);
  auto scrape_error =
      family("resource_scrape_error",
             "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
             MetricType::Gauge);

  for (const auto& r : container_rows(s)) {
    const Sample& sample = *r.snap->latest;
    const int64_t ts = to_ms(sample.time);
    container_cpu.metric.push_back(
        metric(container_labels(r), MetricType::Counter,
               static_cast<double>(sample.cpu.cumulative_ns) / kNsPerSecond, ts));
    container_mem.metric.push_back(metric(container_labels(r), MetricType::Gauge,
                                          static_cast<double>(sample.memory.working_set_bytes),
                                          ts));
    if (r.snap->start_time) {
      container_start.metric.push_back(
          metric(container_labels(r), MetricType::Gauge, to_seconds(*r.snap->start_time), 0));
    }
    if (sample.memory.swap_bytes) {
      container_swap.metric.push_back(metric(container_labels(r), MetricType::Gauge,
                                             static_cast<double>(*sample.memory.swap_bytes), ts));
    }
    if (sample.memory.swap_limit_bytes) {
      container_swap_limit.metric.push_back(
          metric(container_labels(r), MetricType::Gauge,
                 static_cast<double>(*sample.memory.swap_limit_bytes), ts));
    }
  }
  if (s.node.latest) {
    const Sample& sample = *s.node.latest;
    const int64_t ts = to_ms(sample.time);
    if (sample.cpu.cumulative_ns > 0) {
      node_cpu.metric.push_back(metric({}, MetricType::Counter,
                                       static_cast<double>(sample.cpu.cumulative_ns) / kNsPerSecond,
                                       ts));
    }
    if (sample.memory.working_set_bytes > 0) {
      node_mem.metric.push_back(
          metric({}, MetricType::Gauge, static_cast<double>(sample.memory.working_set_bytes), ts));
    }
    if (sample.memory.swap_bytes) {
      node_swap.metric.push_back(
          metric({}, MetricType::Gauge, static_cast<double>(*sample.memory.swap_bytes), ts));
    }
  }
  for (const auto& r : pod_rows(s)) {
    const Sample& sample = *r.snap->latest;
    const int64_t ts = to_ms(sample.time);
    pod_cpu.metric.push_back(metric(pod_labels(r), MetricType::Counter,
                                    static_cast<double>(sample.cpu.cumulative_ns) / kNsPerSecond,
                                    ts));
    pod_mem.metric.push_back(metric(pod_labels(r), MetricType::Gauge,
                                    static_cast<double>(sample.memory.working_set_bytes), ts));
    if (sample.memory.swap_bytes) {
      pod_swap.metric.push_back(metric(pod_labels(r), MetricType::Gauge,
                                       static_cast<double>(*sample.memory.swap_bytes), ts));
    }
  }
  scrape_error.metric.push_back(metric({}, MetricType::Gauge, s.scrape_error ? 1 : 0, 0));

  std::vector<MetricFamily> out;
  out.reserve(12);
  for (auto* f :
       {&container_cpu, &container_mem, &container_start, &container_swap_limit, &container_swap,
        &node_cpu, &node_mem, &node_swap, &pod_cpu, &pod_mem, &pod_swap, &scrape_error}) {
    out.push_back(std::move(*f));
  }
  return out;
}

namespace {

// cAdvisor's names and HELP texts; labels container, namespace, pod. Pod cgroups appear with
// container="" as cAdvisor shows them.
struct CadvisorFamilies {
  MetricFamily cpu_user =
      family("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.",
             MetricType::Counter);
  MetricFamily cpu_system =
      family("container_cpu_system_seconds_total",
             "Cumulative system cpu time consumed in seconds.", MetricType::Counter);
  MetricFamily cfs_periods =
      family("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.",
             MetricType::Counter);
  MetricFamily cfs_throttled_periods =
      family("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.",
             MetricType::Counter);
  MetricFamily cfs_throttled_seconds =
      family("container_cpu_cfs_throttled_seconds_total",
             "Total time duration the container has been throttled.", MetricType::Counter);
  MetricFamily cpu_usage = family("container_cpu_usage_seconds_total",
                                  "Cumulative cpu time consumed in seconds.", MetricType::Counter);
  MetricFamily mem_cache =
      family("container_memory_cache", "Number of bytes of page cache memory.", MetricType::Gauge);
  MetricFamily mem_failcnt =
      family("container_memory_failcnt", "Number of memory usage hits limits", MetricType::Counter);
  MetricFamily mem_rss = family("container_memory_rss", "Size of RSS in bytes.", MetricType::Gauge);
  MetricFamily mem_swap =
      family("container_memory_swap", "Container swap usage in bytes.", MetricType::Gauge);
  MetricFamily mem_usage = family(
      "container_memory_usage_bytes",
      "Current memory usage in bytes, including all memory regardless of when it was accessed",
      MetricType::Gauge);
  MetricFamily mem_ws = family("container_memory_working_set_bytes",
                               "Current working set in bytes.", MetricType::Gauge);
  MetricFamily oom =
      family("container_oom_events_total",
             "Count of out of memory events observed for the container", MetricType::Counter);
  MetricFamily cpu_stalled = family(
      "container_pressure_cpu_stalled_seconds_total",
      "Total time duration no tasks in the container could make progress due to CPU congestion.",
      MetricType::Counter);
  MetricFamily cpu_waiting =
      family("container_pressure_cpu_waiting_seconds_total",
             "Total time duration tasks in the container have waited due to CPU congestion.",
             MetricType::Counter);
  MetricFamily io_stalled = family(
      "container_pressure_io_stalled_seconds_total",
      "Total time duration no tasks in the container could make progress due to IO congestion.",
      MetricType::Counter);
  MetricFamily io_waiting =
      family("container_pressure_io_waiting_seconds_total",
             "Total time duration tasks in the container have waited due to IO congestion.",
             MetricType::Counter);
  MetricFamily memory_stalled = family(
      "container_pressure_memory_stalled_seconds_total",
      "Total time duration no tasks in the container could make progress due to memory congestion.",
      MetricType::Counter);
  MetricFamily memory_waiting =
      family("container_pressure_memory_waiting_seconds_total",
             "Total time duration tasks in the container have waited due to memory congestion.",
             MetricType::Counter);

  void add(const std::vector<ClientMetric::Label>& labels, const Sample& s) {
    const int64_t ts = to_ms(s.time);
    auto put = [&](MetricFamily& f, double v) {
      f.metric.push_back(metric(labels, f.type, v, ts));
    };
    auto put_opt = [&](MetricFamily& f, const std::optional<uint64_t>& v, double scale = 1) {
      if (v) put(f, static_cast<double>(*v) / scale);
    };
    put_opt(cpu_user, s.cpu.user_ns, kNsPerSecond);
    put_opt(cpu_system, s.cpu.system_ns, kNsPerSecond);
    put_opt(cfs_periods, s.cpu.periods);
    put_opt(cfs_throttled_periods, s.cpu.throttled_periods);
    put_opt(cfs_throttled_seconds, s.cpu.throttled_ns, kNsPerSecond);
    put(cpu_usage, static_cast<double>(s.cpu.cumulative_ns) / kNsPerSecond);
    put_opt(mem_cache, s.memory.cache_bytes);
    put_opt(mem_failcnt, s.memory.failcnt);
    put_opt(mem_rss, s.memory.rss_bytes);
    put_opt(mem_swap, s.memory.swap_bytes);
    put(mem_usage, static_cast<double>(s.memory.usage_bytes));
    put(mem_ws, static_cast<double>(s.memory.working_set_bytes));
    put_opt(oom, s.memory.oom_kills);
    auto psi = [&](const std::optional<cgroup::Psi>& p, MetricFamily& waiting,
                   MetricFamily& stalled) {
      if (!p) return;
      if (p->some) put(waiting, static_cast<double>(p->some->total_usec) / 1e6);
      if (p->full) put(stalled, static_cast<double>(p->full->total_usec) / 1e6);
    };
    psi(s.pressure.cpu, cpu_waiting, cpu_stalled);
    psi(s.pressure.io, io_waiting, io_stalled);
    psi(s.pressure.memory, memory_waiting, memory_stalled);
  }

  std::vector<MetricFamily> take() {
    std::vector<MetricFamily> out;
    for (auto* f :
         {&cpu_system, &cpu_user, &cfs_periods, &cfs_throttled_periods, &cfs_throttled_seconds,
          &cpu_usage, &mem_cache, &mem_failcnt, &mem_rss, &mem_swap, &mem_usage, &mem_ws, &oom,
          &cpu_stalled, &cpu_waiting, &io_stalled, &io_waiting, &memory_stalled, &memory_waiting}) {
      out.push_back(std::move(*f));
    }
    std::sort(out.begin(), out.end(),
              [](const MetricFamily& a, const MetricFamily& b) { return a.name < b.name; });
    return out;
  }
};

}  // namespace

std::vector<MetricFamily> cadvisor_families(const Snapshot& s) {
  struct Row {
    std::string_view container, namespace_, pod;
    const Sample* sample;
  };
  std::vector<Row> rows;
  for (const auto& pod : s.pods) {
    if (pod.latest) rows.push_back({"", pod.namespace_, pod.name, &*pod.latest});
    for (const auto& c : pod.containers) {
      if (exposable(c)) rows.push_back({c.name, pod.namespace_, pod.name, &*c.latest});
    }
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return std::tie(a.container, a.namespace_, a.pod) < std::tie(b.container, b.namespace_, b.pod);
  });
  CadvisorFamilies f;
  for (const auto& r : rows) {
    f.add({{"container", std::string(r.container)},
           {"namespace", std::string(r.namespace_)},
           {"pod", std::string(r.pod)}},
          *r.sample);
  }
  return f.take();
}

std::vector<MetricFamily> ResourceCollector::Collect() const {
  auto snap = provider_();
  if (!snap) {
    Snapshot empty;
    empty.scrape_error = true;
    return resource_families(empty);
  }
  return resource_families(*snap);
}

std::vector<MetricFamily> CadvisorCollector::Collect() const {
  auto snap = provider_();
  return snap ? cadvisor_families(*snap) : std::vector<MetricFamily>{};
}

}  // namespace nodemeter::api
