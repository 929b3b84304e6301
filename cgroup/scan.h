// Finds the pod and container cgroups the kubelet and the container runtimes create, for the
// cgroupfs and systemd drivers, all QoS classes, and containerd, CRI-O and Docker leaves.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cgroup/layout.h"

namespace nodemeter::cgroup {

enum class QosClass { kGuaranteed, kBurstable, kBestEffort };
const char* to_string(QosClass qos);

enum class Runtime { kContainerd, kCrio, kDocker, kUnknown };
const char* to_string(Runtime runtime);

// What a cgroup path alone says about a cgroup (pure; fuzzed).
struct PathIdentity {
  std::string pod_uid;  // canonical: UUID with dashes, or the 32-hex static-pod UID as is
  QosClass qos = QosClass::kBestEffort;
  std::optional<std::string> container_id;  // 64-hex; absent for the pod cgroup itself
  Runtime runtime = Runtime::kUnknown;
};
// Accepts a path relative to a hierarchy root, e.g.
//   kubepods/burstable/pod<uid>/<64hex>
//   kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope
// Returns nullopt for anything that is not a pod or container cgroup, including crio-conmon-*
// scopes and deeper cgroups inside a container.
std::optional<PathIdentity> parse_cgroup_path(std::string_view rel_path);

struct ContainerCgroup {
  std::string id;  // 64-hex runtime container id (sandboxes included: identity decides)
  Runtime runtime = Runtime::kUnknown;
  std::string rel_path;  // relative to each hierarchy root; the same on every v1 controller
  uint64_t inode = 0;    // directory inode in the primary hierarchy: the cgroup's identity
};

struct PodCgroup {
  std::string uid;
  QosClass qos = QosClass::kBestEffort;
  std::string rel_path;
  uint64_t inode = 0;
  std::vector<ContainerCgroup> containers;  // sorted by id
};

struct ScanResult {
  std::vector<PodCgroup> pods;    // sorted by uid
  std::string kubepods_rel_path;  // "kubepods" or "kubepods.slice"; empty when none was found
};

// Walks the primary hierarchy. Directories that vanish during the walk are skipped silently.
ScanResult scan(const Layout& layout);

}  // namespace nodemeter::cgroup
