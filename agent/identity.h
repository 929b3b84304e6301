// Pod identity: names, namespaces, labels and start times for the pod and container cgroups the
// scanner found, behind one interface. Sources, best first: the Kubernetes API (plugs in as another
// PodSource), the container runtime's state on disk (containerd, CRI-O), the cgroup path alone.
// ChainedPodSource asks them in that order, so the agent keeps serving when one fails.
// Sources are driven by the sampler thread only: refresh once per pass, then look up.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cgroup/scan.h"

namespace nodemeter::agent {

struct PodInfo {
  std::string uid;
  std::string name;        // the uid where the source knows no name
  std::string namespace_;  // empty where unknown
  std::map<std::string, std::string> labels;
  std::string phase = "Running";  // a pod with live cgroups runs unless a source knows better
  std::optional<std::chrono::system_clock::time_point> start_time;
};

struct ContainerInfo {
  std::string name;         // the container id where the source knows no name
  bool is_sandbox = false;  // the pod's pause container: counted in the pod, never listed
  std::optional<std::chrono::system_clock::time_point> start_time;
};

// Told once about each problem worth an operator's attention (an unreadable or garbage runtime
// state file), never about absence.
using IdentityLog = std::function<void(const std::string& message)>;

class PodSource {
 public:
  virtual ~PodSource() = default;
  // Called once per pass with what the scanner found, before any lookup of that pass. Sources
  // drop what they cached for pods and containers no longer present.
  virtual void refresh(const cgroup::ScanResult& scan) = 0;
  virtual std::optional<PodInfo> pod(std::string_view pod_uid) const = 0;
  virtual std::optional<ContainerInfo> container(std::string_view pod_uid,
                                                 std::string_view container_id) const = 0;
  virtual std::string name() const = 0;  // e.g. "runtime", for logs and self metrics
};

// Asks each source in order; the first that knows a pod or container names it. A start time the
// first source lacks is taken from the next source that has one.
class ChainedPodSource final : public PodSource {
 public:
  explicit ChainedPodSource(std::vector<std::unique_ptr<PodSource>> sources);
  void refresh(const cgroup::ScanResult& scan) override;
  std::optional<PodInfo> pod(std::string_view pod_uid) const override;
  std::optional<ContainerInfo> container(std::string_view pod_uid,
                                         std::string_view container_id) const override;
  std::string name() const override;  // "chain(runtime,cgroup)"

 private:
  std::vector<std::unique_ptr<PodSource>> sources_;
};

// What one container's OCI config.json says (pure parse of its annotations).
struct RuntimeRecord {
  std::string pod_uid;
  std::string pod_name;
  std::string pod_namespace;
  std::map<std::string, std::string> pod_labels;  // CRI-O sandboxes only; containerd keeps none
  std::string container_name;                     // empty for containerd sandboxes (named "POD")
  bool is_sandbox = false;
  std::optional<std::chrono::system_clock::time_point> created;  // CRI-O's Created annotation
};

// Parse results: an error text for text that is not a JSON object; an empty optional for a valid
// config.json without Kubernetes annotations (a container not made through the CRI).
struct ConfigParse {
  std::optional<RuntimeRecord> record;
  std::string error;  // non-empty: the text is not a JSON object
};
// containerd: io.kubernetes.cri.container-type (sandbox|container), .container-name,
// .sandbox-name, .sandbox-namespace, .sandbox-uid.
ConfigParse parse_containerd_config(std::string_view json);
// CRI-O: io.kubernetes.cri-o.ContainerType (sandbox|container), io.kubernetes.pod.name,
// io.kubernetes.pod.namespace, io.kubernetes.pod.uid, io.kubernetes.container.name ("POD" for the
// sandbox), pod labels from the sandbox's io.kubernetes.cri-o.Labels (less the kubelet's and
// CRI-O's own io.kubernetes.{pod.name,pod.namespace,pod.uid,container.name}), creation time from
// io.kubernetes.cri-o.Created.
ConfigParse parse_crio_config(std::string_view json);

// RFC 3339 with fractional seconds and a zone ("2022-01-07T11:33:26.50092793-06:00", "...Z").
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view text);

struct RuntimeStateOptions {
  std::filesystem::path containerd_state_dir;  // <dir>/<id>/config.json; empty: not used
  std::filesystem::path crio_state_dir;        // <dir>/<id>/userdata/config.json; empty: not used
};

// Names pods and containers from the runtime's state on disk. Each container id is read once, when
// first seen (the runtime writes config.json before it creates the cgroup), and its entry leaves
// the cache when the id leaves the scan; an id without any config.json is read again only when a
// state directory changes. A garbage or unreadable file is logged once and the container is
// left to the next source.
// Start times: containerd's <id>/init.pid mtime (written as the init process is created), else
// CRI-O's Created annotation, else the config.json mtime. A pod starts with its sandbox.
class RuntimeStateSource final : public PodSource {
 public:
  explicit RuntimeStateSource(RuntimeStateOptions options, IdentityLog log = {});
  void refresh(const cgroup::ScanResult& scan) override;
  std::optional<PodInfo> pod(std::string_view pod_uid) const override;
  std::optional<ContainerInfo> container(std::string_view pod_uid,
                                         std::string_view container_id) const override;
  std::string name() const override { return "runtime"; }

  size_t config_reads() const { return config_reads_; }  // config.json opens attempted (for tests)
  size_t cached_containers() const { return containers_.size(); }

 private:
  struct Cached {
    std::optional<RuntimeRecord> record;  // empty: nothing usable on disk for this id
    bool missing = false;  // no config.json at all (not a garbage one): worth another look later
    std::optional<std::chrono::system_clock::time_point> start_time;
  };
  Cached load(const cgroup::ContainerCgroup& container);
  // One config.json: nullopt where there is none; an unreadable or garbage one is logged and
  // cached without a record.
  std::optional<Cached> load_config(const std::filesystem::path& path,
                                    ConfigParse (*parse)(std::string_view));
  std::optional<Cached> load_containerd(const std::string& id);
  std::optional<Cached> load_crio(const std::string& id);
  void log(const std::string& message) const;

  RuntimeStateOptions options_;
  IdentityLog log_;
  size_t config_reads_ = 0;
  // The state directories' inode and mtime (zero where missing) at the last refresh. When they
  // change (a directory that vanished is back, a container was added) containers cached as
  // missing are read again, so names return after an outage of the runtime's state.
  std::vector<int64_t> state_dirs_stamp_;
  std::unordered_map<std::string, Cached> containers_;  // by container id
  std::unordered_map<std::string, PodInfo> pods_;       // by the scan's pod uid, rebuilt per pass
};

// Names a pod by its UID (namespace empty) and a container by its id; start times are the cgroup
// directories' change times (cgroupfs sets them at mkdir and never moves them). Never fails for a
// cgroup the scan found.
class CgroupPathSource final : public PodSource {
 public:
  // hierarchy: the primary hierarchy the scan walked (cgroup::Layout::primary()).
  explicit CgroupPathSource(std::filesystem::path hierarchy);
  void refresh(const cgroup::ScanResult& scan) override;
  std::optional<PodInfo> pod(std::string_view pod_uid) const override;
  std::optional<ContainerInfo> container(std::string_view pod_uid,
                                         std::string_view container_id) const override;
  std::string name() const override { return "cgroup"; }

 private:
  struct Known {
    uint64_t inode = 0;  // a recreated cgroup (new inode) is stat'ed again
    std::optional<std::chrono::system_clock::time_point> ctime;
  };

  std::filesystem::path hierarchy_;
  std::unordered_map<std::string, Known> pods_;        // by pod uid
  std::unordered_map<std::string, Known> containers_;  // by "<pod uid>/<container id>"
};

}  // namespace nodemeter::agent
