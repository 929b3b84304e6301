// Pod identity from the Kubernetes API: the pods bound to this node as a PodInformer keeps them
// (names, namespaces, labels, phase, start times; container names and start times by container
// id). A pod or container the API does not know (yet) is left to the next source of the chain;
// while the API server is unreachable the informer's last known pods keep answering.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "agent/identity.h"
#include "kube/pods.h"

namespace nodemeter::agent {

class KubePodSource final : public PodSource {
 public:
  using PodsFunction = std::function<std::shared_ptr<const kube::PodMap>()>;
  using StatusFunction = std::function<kube::PodInformer::Status()>;

  // Reads the informer's pods once per pass; the informer is started and stopped by its owner.
  explicit KubePodSource(std::shared_ptr<kube::PodInformer> informer);
  // Any source of pod maps (tests); status defaults to synced and healthy.
  explicit KubePodSource(PodsFunction pods, StatusFunction status = {});

  void refresh(const cgroup::ScanResult& scan) override;
  std::optional<PodInfo> pod(std::string_view pod_uid) const override;
  std::optional<ContainerInfo> container(std::string_view pod_uid,
                                         std::string_view container_id) const override;
  std::string name() const override { return "kubernetes"; }

  // The informer's state, for /readyz?verbose and self metrics. Any thread.
  kube::PodInformer::Status status() const;

 private:
  struct ContainerRef {
    const kube::Pod* pod = nullptr;
    const kube::ContainerStatus* container = nullptr;
  };

  PodsFunction pods_;
  StatusFunction status_;
  std::shared_ptr<const kube::PodMap> snapshot_;              // the pass's pods
  std::unordered_map<std::string, ContainerRef> containers_;  // by container id, into snapshot_
};

}  // namespace nodemeter::agent
