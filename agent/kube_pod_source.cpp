#include "agent/kube_pod_source.h"

namespace nodemeter::agent {

KubePodSource::KubePodSource(std::shared_ptr<kube::PodInformer> informer)
    : pods_([informer] { return informer->pods(); }),
      status_([informer] { return informer->status(); }) {}

KubePodSource::KubePodSource(PodsFunction pods, StatusFunction status)
    : pods_(std::move(pods)), status_(std::move(status)) {}

void KubePodSource::refresh(const cgroup::ScanResult&) {
  auto snapshot = pods_();
  if (snapshot == snapshot_ && snapshot_) return;  // unchanged since the last pass
  snapshot_ = std::move(snapshot);
  containers_.clear();
  if (!snapshot_) return;
  for (const auto& [uid, pod] : *snapshot_) {
    for (const auto& container : pod.containers) {
      if (!container.container_id.empty()) {
        containers_[container.container_id] = ContainerRef{&pod, &container};
      }
    }
  }
}

std::optional<PodInfo> KubePodSource::pod(std::string_view pod_uid) const {
  if (!snapshot_) return std::nullopt;
  auto it = snapshot_->find(std::string(pod_uid));
  if (it == snapshot_->end()) return std::nullopt;
  const kube::Pod& pod = it->second;
  PodInfo info;
  info.uid = pod.uid;
  info.name = pod.name.empty() ? pod.uid : pod.name;
  info.namespace_ = pod.namespace_;
  info.labels = pod.labels;
  if (!pod.phase.empty()) info.phase = pod.phase;
  info.start_time = pod.start_time ? pod.start_time : pod.creation_timestamp;
  return info;
}

std::optional<ContainerInfo> KubePodSource::container(std::string_view pod_uid,
                                                      std::string_view container_id) const {
  auto it = containers_.find(std::string(container_id));
  if (it == containers_.end() || it->second.pod->uid != pod_uid) return std::nullopt;
  const kube::ContainerStatus& status = *it->second.container;
  ContainerInfo info;
  info.name = status.name.empty() ? status.container_id : status.name;
  info.start_time = status.started_at;
  return info;
}

kube::PodInformer::Status KubePodSource::status() const {
  if (status_) return status_();
  kube::PodInformer::Status status;
  status.synced = true;
  status.healthy = true;
  status.pods = snapshot_ ? snapshot_->size() : 0;
  return status;
}

}  // namespace nodemeter::agent
