// The kubelet's /metrics/resource and cAdvisor's per-container families (/metrics/cadvisor),
// built from a snapshot at scrape time. No long-lived per-container metric objects exist, so a
// deleted pod's series disappear with it.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <functional>
#include <vector>

#include "api/snapshot.h"

namespace nodemeter::api {

// Families sorted by name and series by label values, as the kubelet's registry gathers them.
std::vector<prometheus::MetricFamily> resource_families(const Snapshot& snapshot);
std::vector<prometheus::MetricFamily> cadvisor_families(const Snapshot& snapshot);

using SnapshotProvider = std::function<SnapshotPtr()>;

// Collectables for a prometheus::Registry-style consumer; each Collect() reads the latest snapshot.
class ResourceCollector final : public prometheus::Collectable {
 public:
  explicit ResourceCollector(SnapshotProvider provider) : provider_(std::move(provider)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  SnapshotProvider provider_;
};

class CadvisorCollector final : public prometheus::Collectable {
 public:
  explicit CadvisorCollector(SnapshotProvider provider) : provider_(std::move(provider)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  SnapshotProvider provider_;
};

// Whether a container's latest sample may be exposed: read at least once, with CPU and working set
// above zero. metrics-server drops a whole pod for one container showing 0, so an unusable
// container shows no series at all (not even its start time).
bool exposable(const ContainerSnapshot& container);

}  // namespace nodemeter::api
