// cgroup path -> pod and container identity (cgroup/scan.h parse_cgroup_path). Invariants: a
// recognised pod UID is a dashed UUID or a 32-hex static-pod UID and a container id is 64 hex;
// the identity survives a round trip through the canonical cgroupfs and systemd paths the kubelet
// would have made for it.
#include <string>

#include "cgroup/scan.h"
#include "fuzz_check.h"

namespace {

using namespace nodemeter::cgroup;

bool is_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  }
  return true;
}

bool is_pod_uid(std::string_view uid) {
  if (uid.size() == 32) return is_hex(uid);
  if (uid.size() != 36) return false;
  for (size_t i = 0; i < uid.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? uid[i] != '-' : !is_hex(uid.substr(i, 1))) return false;
  }
  return true;
}

std::string qos_name(QosClass qos) {
  return qos == QosClass::kBurstable ? "burstable" : "besteffort";
}

std::string cgroupfs_path(const PathIdentity& id) {
  std::string path = "kubepods/";
  if (id.qos != QosClass::kGuaranteed) path += qos_name(id.qos) + "/";
  path += "pod" + id.pod_uid;
  if (id.container_id) path += "/" + *id.container_id;
  return path;
}

std::string systemd_path(const PathIdentity& id) {
  std::string uid = id.pod_uid;
  for (char& c : uid) {
    if (c == '-') c = '_';
  }
  std::string path = "kubepods.slice/";
  std::string prefix = "kubepods-";
  if (id.qos != QosClass::kGuaranteed) {
    prefix += qos_name(id.qos) + "-";
    path += "kubepods-" + qos_name(id.qos) + ".slice/";
  }
  path += prefix + "pod" + uid + ".slice";
  if (id.container_id) {
    const char* runtime = id.runtime == Runtime::kCrio     ? "crio-"
                          : id.runtime == Runtime::kDocker ? "docker-"
                                                           : "cri-containerd-";
    path += "/" + std::string(runtime) + *id.container_id + ".scope";
  }
  return path;
}

void check_same(const PathIdentity& a, const std::optional<PathIdentity>& b, bool same_runtime) {
  FUZZ_CHECK(b.has_value(), "the canonical path of an identity parses");
  FUZZ_CHECK(a.pod_uid == b->pod_uid && a.qos == b->qos && a.container_id == b->container_id,
             "the canonical path gives the same identity");
  if (same_runtime) FUZZ_CHECK(a.runtime == b->runtime, "the runtime survives the round trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto id = parse_cgroup_path(nodemeter::fuzz::as_text(data, size));
  if (!id) return 0;
  FUZZ_CHECK(is_pod_uid(id->pod_uid), "a pod UID is a dashed UUID or 32 hex digits");
  if (id->container_id) {
    FUZZ_CHECK(id->container_id->size() == 64 && is_hex(*id->container_id),
               "a container id is 64 hex digits");
  } else {
    FUZZ_CHECK(id->runtime == Runtime::kUnknown, "a pod cgroup has no runtime");
  }
  check_same(*id, parse_cgroup_path(cgroupfs_path(*id)), false);
  check_same(*id, parse_cgroup_path(systemd_path(*id)), id->runtime != Runtime::kUnknown);
  return 0;
}
