#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/time.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/identity.h"
#include "support/fixture_tree.h"

namespace nodemeter::agent {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using WallTime = std::chrono::system_clock::time_point;

using testing::TempDir;
using testing::write_file;

void set_mtime(const fs::path& path, WallTime when) {
  const auto since_epoch = when.time_since_epoch();
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  const auto usecs = std::chrono::duration_cast<std::chrono::microseconds>(since_epoch - secs);
  struct timeval times[2];
  for (auto& t : times) {
    t.tv_sec = secs.count();
    t.tv_usec = usecs.count();
  }
  REQUIRE(::utimes(path.c_str(), times) == 0);
}

std::string id_of(char c) {
  return std::string(64, c);
}

const std::string kPodUid = "0f3c9a47-2b1e-4a6e-9d8c-51c2a0e6f7b1";
const std::string kSandboxId = id_of('a');
const std::string kAppId = id_of('b');
const std::string kSidecarId = id_of('c');

// An OCI runtime spec as containerd's CRI plugin writes it, trimmed of the long parts that do not
// matter here (the capability and seccomp lists).
std::string containerd_config(const std::string& type, const std::string& container_name) {
  std::string annotations = R"("io.kubernetes.cri.container-type": ")" + type + R"(",
      "io.kubernetes.cri.sandbox-id": ")" +
                            kSandboxId + R"(",
      "io.kubernetes.cri.sandbox-log-directory": "/var/log/pods/shop_web-7d9c5b_)" +
                            kPodUid + R"(",
      "io.kubernetes.cri.sandbox-name": "web-7d9c5b",
      "io.kubernetes.cri.sandbox-namespace": "shop",
      "io.kubernetes.cri.sandbox-uid": ")" +
                            kPodUid + R"(")";
  if (!container_name.empty()) {
    annotations += R"(,
      "io.kubernetes.cri.container-name": ")" +
                   container_name + R"(",
      "io.kubernetes.cri.image-name": "registry.k8s.io/e2e-test-images/agnhost:2.45")";
  }
  return R"({
  "ociVersion": "1.1.0",
  "process": {
    "user": {"uid": 65535, "gid": 65535, "additionalGids": [65535]},
    "args": ["/pause"],
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "cwd": "/",
    "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]},
    "noNewPrivileges": true,
    "oomScoreAdj": -998
  },
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "web-7d9c5b",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev/shm", "type": "bind", "source": "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/)" +
         kSandboxId + R"(/shm", "options": ["rbind", "ro"]}
  ],
  "annotations": {
      )" +
         annotations + R"(
  },
  "linux": {
    "resources": {"devices": [{"allow": false, "access": "rwm"}], "cpu": {"shares": 2}},
    "cgroupsPath": "/kubepods/besteffort/pod)" +
         kPodUid + R"(/)" + kSandboxId + R"(",
    "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
    "maskedPaths": ["/proc/acpi", "/proc/kcore"],
    "readonlyPaths": ["/proc/bus", "/proc/fs"]
  }
})";
}

// An OCI runtime spec as CRI-O writes it to overlay-containers/<id>/userdata/config.json.
std::string crio_config(const std::string& type, const std::string& container_name,
                        const std::string& labels_json, const std::string& created) {
  return R"({
  "ociVersion": "1.0.2-dev",
  "process": {"user": {"uid": 0, "gid": 0}, "args": ["/pause"], "cwd": "/"},
  "root": {"path": "/var/lib/containers/storage/overlay/3130d8ab/merged", "readonly": true},
  "hostname": "web-7d9c5b",
  "annotations": {
    "io.kubernetes.cri-o.CgroupParent": "kubepods-burstable-pod0f3c9a47_2b1e_4a6e_9d8c_51c2a0e6f7b1.slice",
    "io.kubernetes.pod.name": "web-7d9c5b",
    "io.kubernetes.pod.namespace": "shop",
    "io.kubernetes.pod.uid": ")" +
         kPodUid + R"(",
    "io.kubernetes.container.name": ")" +
         container_name + R"(",
    "io.kubernetes.cri-o.ContainerType": ")" +
         type + R"(",
    "io.kubernetes.cri-o.ContainerName": "k8s_)" +
         container_name + R"(_web-7d9c5b_shop_)" + kPodUid + R"(_0",
    "io.kubernetes.cri-o.Created": ")" +
         created + R"(",
    "io.kubernetes.cri-o.KubeName": "web-7d9c5b",
    "io.kubernetes.cri-o.Namespace": "shop",
    "io.kubernetes.cri-o.SandboxID": ")" +
         kSandboxId + R"(",
    "io.kubernetes.cri-o.Labels": )" +
         labels_json + R"(,
    "io.kubernetes.cri-o.Metadata": "{\"Name\":\"web-7d9c5b\",\"UID\":\")" +
         kPodUid + R"(\",\"Namespace\":\"shop\",\"Attempt\":0}",
    "io.container.manager": "cri-o",
    "kubernetes.io/config.source": "api"
  },
  "linux": {
    "cgroupsPath": "kubepods-burstable-pod0f3c9a47_2b1e_4a6e_9d8c_51c2a0e6f7b1.slice:crio:)" +
         kSandboxId + R"(",
    "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/9abac4ae"}]
  }
})";
}

const std::string kCrioSandboxLabels =
    R"("{\"app\":\"web\",\"io.kubernetes.container.name\":\"POD\",\"io.kubernetes.pod.name\":\"web-7d9c5b\",\"io.kubernetes.pod.namespace\":\"shop\",\"io.kubernetes.pod.uid\":\")" +
    kPodUid + R"(\",\"pod-template-hash\":\"7d9c5b\"}")";
const std::string kCrioContainerLabels =
    R"("{\"io.kubernetes.container.name\":\"app\",\"io.kubernetes.pod.name\":\"web-7d9c5b\",\"io.kubernetes.pod.namespace\":\"shop\",\"io.kubernetes.pod.uid\":\")" +
    kPodUid + R"(\"}")";

cgroup::ScanResult scan_of(std::vector<std::string> ids,
                           cgroup::Runtime runtime = cgroup::Runtime::kUnknown) {
  cgroup::ScanResult scan;
  scan.kubepods_rel_path = "kubepods";
  cgroup::PodCgroup pod;
  pod.uid = kPodUid;
  pod.qos = cgroup::QosClass::kBurstable;
  pod.rel_path = "kubepods/burstable/pod" + kPodUid;
  pod.inode = 100;
  uint64_t inode = 200;
  for (auto& id : ids) {
    cgroup::ContainerCgroup c;
    c.id = id;
    c.runtime = runtime;
    c.rel_path = pod.rel_path + "/" + id;
    c.inode = inode++;
    pod.containers.push_back(c);
  }
  scan.pods.push_back(pod);
  return scan;
}

struct Logged {
  std::vector<std::string> lines;
  IdentityLog sink() {
    return [this](const std::string& line) { lines.push_back(line); };
  }
};

// A fixed source for chain tests.
class FixedSource final : public PodSource {
 public:
  FixedSource(std::string name, std::optional<PodInfo> pod, std::optional<ContainerInfo> container)
      : name_(std::move(name)), pod_(std::move(pod)), container_(std::move(container)) {}
  void refresh(const cgroup::ScanResult&) override { ++refreshes; }
  std::optional<PodInfo> pod(std::string_view) const override { return pod_; }
  std::optional<ContainerInfo> container(std::string_view, std::string_view) const override {
    return container_;
  }
  std::string name() const override { return name_; }
  int refreshes = 0;

 private:
  std::string name_;
  std::optional<PodInfo> pod_;
  std::optional<ContainerInfo> container_;
};

}  // namespace

TEST_CASE("parse_rfc3339 reads CRI-O's Created times", "[identity]") {
  const WallTime base{std::chrono::seconds{1641576806}};  // 2022-01-07T17:33:26Z
  CHECK(parse_rfc3339("2022-01-07T17:33:26Z") == base);
  CHECK(parse_rfc3339("2022-01-07T11:33:26.50092793-06:00") == base + 500'927'930ns);
  CHECK(parse_rfc3339("2022-01-07T19:03:26.5+01:30") == base + 500ms);
  CHECK(parse_rfc3339("2006-01-02T15:04:05.999999999Z") ==
        WallTime{std::chrono::seconds{1136214245}} + 999'999'999ns);
  CHECK_FALSE(parse_rfc3339("").has_value());
  CHECK_FALSE(parse_rfc3339("2022-01-07 17:33:26Z").has_value());
  CHECK_FALSE(parse_rfc3339("2022-02-30T17:33:26Z").has_value());
  CHECK_FALSE(parse_rfc3339("2022-01-07T17:33:26").has_value());
  CHECK_FALSE(parse_rfc3339("2022-01-07T17:33:26.Z").has_value());
  CHECK_FALSE(parse_rfc3339("2022-01-07T17:33:26Zjunk").has_value());
  CHECK_FALSE(parse_rfc3339("2022-01-07T17:33:26+0100").has_value());
}

TEST_CASE("parse_containerd_config reads the CRI annotations", "[identity]") {
  const auto app = parse_containerd_config(containerd_config("container", "app"));
  CHECK(app.error.empty());
  REQUIRE(app.record);
  CHECK(app.record->pod_name == "web-7d9c5b");
  CHECK(app.record->pod_namespace == "shop");
  CHECK(app.record->pod_uid == kPodUid);
  CHECK(app.record->container_name == "app");
  CHECK_FALSE(app.record->is_sandbox);
  CHECK(app.record->pod_labels.empty());

  const auto sandbox = parse_containerd_config(containerd_config("sandbox", ""));
  REQUIRE(sandbox.record);
  CHECK(sandbox.record->is_sandbox);
  CHECK(sandbox.record->container_name.empty());

  const auto plain = parse_containerd_config(R"({"ociVersion":"1.1.0","process":{"args":["sh"]}})");
  CHECK(plain.error.empty());
  CHECK_FALSE(plain.record.has_value());

  CHECK_FALSE(parse_containerd_config("{\"annotations\": {").error.empty());
  CHECK_FALSE(parse_containerd_config("[1,2]").error.empty());
  CHECK_FALSE(parse_containerd_config("").error.empty());
  // Wrong types are not names.
  const auto odd = parse_containerd_config(
      R"({"annotations":{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-name":7}})");
  REQUIRE(odd.record);
  CHECK(odd.record->pod_name.empty());
}

TEST_CASE("parse_crio_config reads CRI-O's annotations and the sandbox's pod labels",
          "[identity]") {
  const auto sandbox = parse_crio_config(
      crio_config("sandbox", "POD", kCrioSandboxLabels, "2022-01-07T11:33:26.50092793-06:00"));
  CHECK(sandbox.error.empty());
  REQUIRE(sandbox.record);
  CHECK(sandbox.record->is_sandbox);
  CHECK(sandbox.record->pod_name == "web-7d9c5b");
  CHECK(sandbox.record->pod_namespace == "shop");
  CHECK(sandbox.record->pod_uid == kPodUid);
  CHECK(sandbox.record->container_name == "POD");
  CHECK(sandbox.record->pod_labels ==
        std::map<std::string, std::string>{{"app", "web"}, {"pod-template-hash", "7d9c5b"}});
  REQUIRE(sandbox.record->created);
  CHECK(*sandbox.record->created == WallTime{std::chrono::seconds{1641576806}} + 500'927'930ns);

  const auto app = parse_crio_config(
      crio_config("container", "app", kCrioContainerLabels, "2022-01-07T11:33:28Z"));
  REQUIRE(app.record);
  CHECK_FALSE(app.record->is_sandbox);
  CHECK(app.record->container_name == "app");
  CHECK(app.record->pod_labels.empty());

  // Garbage inside the Labels string is not fatal: no labels.
  const auto bad_labels =
      parse_crio_config(crio_config("sandbox", "POD", R"("{not json")", "also not a time"));
  REQUIRE(bad_labels.record);
  CHECK(bad_labels.record->pod_labels.empty());
  CHECK_FALSE(bad_labels.record->created.has_value());

  CHECK_FALSE(parse_crio_config("\x01\x02garbage").error.empty());
}

TEST_CASE("RuntimeStateSource names containerd pods and containers", "[identity]") {
  TempDir tmp;
  const fs::path state = tmp.path() / "containerd";
  write_file(state / kSandboxId / "config.json", containerd_config("sandbox", ""));
  write_file(state / kAppId / "config.json", containerd_config("container", "app"));
  write_file(state / kSidecarId / "config.json", containerd_config("container", "sidecar"));
  const WallTime sandbox_start{std::chrono::seconds{1'700'000'100}};
  const WallTime app_start{std::chrono::seconds{1'700'000'105}};
  write_file(state / kSandboxId / "init.pid", "4242");
  set_mtime(state / kSandboxId / "init.pid", sandbox_start);
  write_file(state / kAppId / "init.pid", "4243");
  set_mtime(state / kAppId / "init.pid", app_start);
  // The sidecar has no init.pid (not started yet): its config.json's mtime stands in.
  const WallTime sidecar_config{std::chrono::seconds{1'700'000'107}};
  set_mtime(state / kSidecarId / "config.json", sidecar_config);

  Logged logged;
  RuntimeStateSource source({state, tmp.path() / "no-crio"}, logged.sink());
  CHECK(source.name() == "runtime");
  source.refresh(scan_of({kSandboxId, kAppId, kSidecarId}, cgroup::Runtime::kContainerd));

  const auto pod = source.pod(kPodUid);
  REQUIRE(pod);
  CHECK(pod->uid == kPodUid);
  CHECK(pod->name == "web-7d9c5b");
  CHECK(pod->namespace_ == "shop");
  CHECK(pod->phase == "Running");
  CHECK(pod->labels.empty());
  CHECK(pod->start_time == sandbox_start);

  const auto sandbox = source.container(kPodUid, kSandboxId);
  REQUIRE(sandbox);
  CHECK(sandbox->is_sandbox);
  CHECK(sandbox->name == "POD");
  CHECK(sandbox->start_time == sandbox_start);

  const auto app = source.container(kPodUid, kAppId);
  REQUIRE(app);
  CHECK(app->name == "app");
  CHECK_FALSE(app->is_sandbox);
  CHECK(app->start_time == app_start);

  const auto sidecar = source.container(kPodUid, kSidecarId);
  REQUIRE(sidecar);
  CHECK(sidecar->name == "sidecar");
  CHECK(sidecar->start_time == sidecar_config);

  CHECK_FALSE(source.container(kPodUid, id_of('d')).has_value());
  CHECK_FALSE(source.container("other-pod", kAppId).has_value());
  CHECK_FALSE(source.pod("other-pod").has_value());
  CHECK(logged.lines.empty());
}

TEST_CASE("RuntimeStateSource names CRI-O pods, with labels from the sandbox", "[identity]") {
  TempDir tmp;
  const fs::path state = tmp.path() / "overlay-containers";
  write_file(state / kSandboxId / "userdata" / "config.json",
             crio_config("sandbox", "POD", kCrioSandboxLabels, "2022-01-07T11:33:26.5-06:00"));
  write_file(state / kAppId / "userdata" / "config.json",
             crio_config("container", "app", kCrioContainerLabels, "2022-01-07T17:33:30Z"));

  Logged logged;
  RuntimeStateSource source({tmp.path() / "no-containerd", state}, logged.sink());
  source.refresh(scan_of({kSandboxId, kAppId}, cgroup::Runtime::kCrio));

  const auto pod = source.pod(kPodUid);
  REQUIRE(pod);
  CHECK(pod->name == "web-7d9c5b");
  CHECK(pod->namespace_ == "shop");
  CHECK(pod->labels ==
        std::map<std::string, std::string>{{"app", "web"}, {"pod-template-hash", "7d9c5b"}});
  CHECK(pod->start_time == WallTime{std::chrono::seconds{1641576806}} + 500ms);

  const auto sandbox = source.container(kPodUid, kSandboxId);
  REQUIRE(sandbox);
  CHECK(sandbox->is_sandbox);
  CHECK(sandbox->name == "POD");

  const auto app = source.container(kPodUid, kAppId);
  REQUIRE(app);
  CHECK_FALSE(app->is_sandbox);
  CHECK(app->name == "app");
  CHECK(app->start_time == WallTime{std::chrono::seconds{1641576810}});
  CHECK(logged.lines.empty());
}

TEST_CASE("RuntimeStateSource finds a container in either runtime's directory", "[identity]") {
  // The cgroupfs driver names container cgroups by bare id: the runtime is unknown.
  TempDir tmp;
  const fs::path containerd = tmp.path() / "containerd";
  const fs::path crio = tmp.path() / "crio";
  write_file(crio / kAppId / "userdata" / "config.json",
             crio_config("container", "app", kCrioContainerLabels, "2022-01-07T17:33:30Z"));
  RuntimeStateSource source({containerd, crio});
  source.refresh(scan_of({kAppId}));
  const auto app = source.container(kPodUid, kAppId);
  REQUIRE(app);
  CHECK(app->name == "app");
  // No sandbox record: the pod is named from its container and has no start time of its own.
  const auto pod = source.pod(kPodUid);
  REQUIRE(pod);
  CHECK(pod->name == "web-7d9c5b");
  CHECK_FALSE(pod->start_time.has_value());
}

TEST_CASE("RuntimeStateSource reads each id once and forgets ids that leave", "[identity]") {
  TempDir tmp;
  const fs::path state = tmp.path() / "containerd";
  write_file(state / kSandboxId / "config.json", containerd_config("sandbox", ""));
  write_file(state / kAppId / "config.json", containerd_config("container", "app"));
  RuntimeStateSource source({state, {}});

  source.refresh(scan_of({kSandboxId, kAppId}));
  CHECK(source.config_reads() == 2);
  CHECK(source.cached_containers() == 2);

  // A second pass does not re-read: the files can even be gone.
  fs::remove_all(state / kAppId);
  source.refresh(scan_of({kSandboxId, kAppId}));
  CHECK(source.config_reads() == 2);
  REQUIRE(source.container(kPodUid, kAppId));
  CHECK(source.container(kPodUid, kAppId)->name == "app");

  // The container leaves the scan: its cache entry goes with it.
  source.refresh(scan_of({kSandboxId}));
  CHECK(source.cached_containers() == 1);
  CHECK_FALSE(source.container(kPodUid, kAppId).has_value());

  // A new id is read when first seen.
  write_file(state / kSidecarId / "config.json", containerd_config("container", "sidecar"));
  source.refresh(scan_of({kSandboxId, kSidecarId}));
  CHECK(source.config_reads() == 3);
  REQUIRE(source.container(kPodUid, kSidecarId));
  CHECK(source.container(kPodUid, kSidecarId)->name == "sidecar");

  // The whole pod leaves.
  source.refresh(cgroup::ScanResult{});
  CHECK(source.cached_containers() == 0);
  CHECK_FALSE(source.pod(kPodUid).has_value());
}

TEST_CASE("RuntimeStateSource logs a garbage config.json once and knows nothing of it",
          "[identity]") {
  TempDir tmp;
  const fs::path state = tmp.path() / "containerd";
  write_file(state / kSandboxId / "config.json", "{\"ociVersion\": \"1.1.0\", \"annotations\": {");
  write_file(state / kAppId / "config.json", containerd_config("container", "app"));
  Logged logged;
  RuntimeStateSource source({state, {}}, logged.sink());
  for (int pass = 0; pass < 3; ++pass)
    source.refresh(scan_of({kSandboxId, kAppId}));
  REQUIRE(logged.lines.size() == 1);
  CHECK(logged.lines[0].find((state / kSandboxId / "config.json").string()) != std::string::npos);
  CHECK(logged.lines[0].find("not valid JSON") != std::string::npos);
  CHECK_FALSE(source.container(kPodUid, kSandboxId).has_value());
  // The good container still names the pod.
  REQUIRE(source.pod(kPodUid));
  CHECK(source.pod(kPodUid)->name == "web-7d9c5b");
  CHECK(source.container(kPodUid, kAppId)->name == "app");
}

TEST_CASE("RuntimeStateSource logs an unreadable config.json once", "[identity]") {
  TempDir tmp;
  const fs::path state = tmp.path() / "containerd";
  // A directory where the file should be: open succeeds, read fails with EISDIR.
  fs::create_directories(state / kAppId / "config.json");
  Logged logged;
  RuntimeStateSource source({state, {}}, logged.sink());
  source.refresh(scan_of({kAppId}));
  source.refresh(scan_of({kAppId}));
  REQUIRE(logged.lines.size() == 1);
  CHECK(logged.lines[0].find("cannot read") != std::string::npos);
  CHECK_FALSE(source.container(kPodUid, kAppId).has_value());
  CHECK_FALSE(source.pod(kPodUid).has_value());
}

TEST_CASE("RuntimeStateSource with missing state directories knows nothing and logs nothing",
          "[identity]") {
  TempDir tmp;
  Logged logged;
  RuntimeStateSource source({tmp.path() / "absent-containerd", tmp.path() / "absent-crio"},
                            logged.sink());
  source.refresh(scan_of({kSandboxId, kAppId}));
  CHECK_FALSE(source.pod(kPodUid).has_value());
  CHECK_FALSE(source.container(kPodUid, kAppId).has_value());
  CHECK(logged.lines.empty());
  // Absence is cached too: a second pass does not look again.
  const size_t reads = source.config_reads();
  source.refresh(scan_of({kSandboxId, kAppId}));
  CHECK(source.config_reads() == reads);
}

TEST_CASE("CgroupPathSource names by uid and id, with cgroup change times", "[identity]") {
  TempDir tmp;
  const cgroup::ScanResult scan = scan_of({kSandboxId, kAppId});
  fs::create_directories(tmp.path() / scan.pods[0].containers[0].rel_path);
  fs::create_directories(tmp.path() / scan.pods[0].containers[1].rel_path);
  struct stat st {};
  REQUIRE(::stat((tmp.path() / scan.pods[0].containers[1].rel_path).c_str(), &st) == 0);
  const WallTime app_ctime{std::chrono::duration_cast<WallTime::duration>(
      std::chrono::seconds{st.st_ctim.tv_sec} + std::chrono::nanoseconds{st.st_ctim.tv_nsec})};

  CgroupPathSource source(tmp.path());
  CHECK(source.name() == "cgroup");
  source.refresh(scan);
  const auto pod = source.pod(kPodUid);
  REQUIRE(pod);
  CHECK(pod->uid == kPodUid);
  CHECK(pod->name == kPodUid);
  CHECK(pod->namespace_.empty());
  CHECK(pod->start_time.has_value());
  const auto app = source.container(kPodUid, kAppId);
  REQUIRE(app);
  CHECK(app->name == kAppId);
  CHECK_FALSE(app->is_sandbox);
  CHECK(app->start_time == app_ctime);
  CHECK_FALSE(source.container(kPodUid, id_of('e')).has_value());

  // A cgroup that vanished between scan and stat is still named, without a start time.
  const cgroup::ScanResult vanished = scan_of({kSidecarId});
  source.refresh(vanished);
  const auto sidecar = source.container(kPodUid, kSidecarId);
  REQUIRE(sidecar);
  CHECK_FALSE(sidecar->start_time.has_value());
  CHECK_FALSE(source.container(kPodUid, kAppId).has_value());
}

TEST_CASE("ChainedPodSource asks in order and fills a missing start time", "[identity]") {
  const WallTime t1{std::chrono::seconds{1000}};
  const WallTime t2{std::chrono::seconds{2000}};
  PodInfo named;
  named.uid = "u";
  named.name = "web";
  named.namespace_ = "shop";
  named.labels = {{"app", "web"}};
  PodInfo bare;
  bare.uid = "u";
  bare.name = "u";
  bare.start_time = t2;
  ContainerInfo app{"app", false, std::nullopt};
  ContainerInfo by_id{"bbbb", false, t2};

  std::vector<std::unique_ptr<PodSource>> sources;
  auto* kube = new FixedSource("kubernetes", std::nullopt, std::nullopt);
  sources.emplace_back(kube);
  sources.emplace_back(new FixedSource("runtime", named, app));
  sources.emplace_back(new FixedSource("cgroup", bare, by_id));
  ChainedPodSource chain(std::move(sources));
  CHECK(chain.name() == "chain(kubernetes,runtime,cgroup)");

  chain.refresh(cgroup::ScanResult{});
  CHECK(kube->refreshes == 1);

  const auto pod = chain.pod("u");
  REQUIRE(pod);
  CHECK(pod->name == "web");
  CHECK(pod->namespace_ == "shop");
  CHECK(pod->labels.at("app") == "web");
  CHECK(pod->start_time == t2);  // from the cgroup source: the runtime had none
  const auto c = chain.container("u", "bbbb");
  REQUIRE(c);
  CHECK(c->name == "app");
  CHECK(c->start_time == t2);

  // A start time from the first source that knows one is kept.
  std::vector<std::unique_ptr<PodSource>> timed;
  PodInfo named_timed = named;
  named_timed.start_time = t1;
  timed.emplace_back(new FixedSource("runtime", named_timed, ContainerInfo{"app", false, t1}));
  timed.emplace_back(new FixedSource("cgroup", bare, by_id));
  ChainedPodSource chain2(std::move(timed));
  CHECK(chain2.pod("u")->start_time == t1);
  CHECK(chain2.container("u", "bbbb")->start_time == t1);

  ChainedPodSource empty({});
  CHECK_FALSE(empty.pod("u").has_value());
  CHECK(empty.name() == "chain()");
}

TEST_CASE("A garbage runtime file falls back to the cgroup path in a chain", "[identity]") {
  TempDir tmp;
  const fs::path state = tmp.path() / "containerd";
  const fs::path hierarchy = tmp.path() / "cgroup";
  write_file(state / kAppId / "config.json", "this is not json");
  const cgroup::ScanResult scan = scan_of({kAppId});
  fs::create_directories(hierarchy / scan.pods[0].containers[0].rel_path);

  Logged logged;
  std::vector<std::unique_ptr<PodSource>> sources;
  sources.push_back(
      std::make_unique<RuntimeStateSource>(RuntimeStateOptions{state, {}}, logged.sink()));
  sources.push_back(std::make_unique<CgroupPathSource>(hierarchy));
  ChainedPodSource chain(std::move(sources));
  chain.refresh(scan);
  chain.refresh(scan);

  CHECK(logged.lines.size() == 1);
  const auto pod = chain.pod(kPodUid);
  REQUIRE(pod);
  CHECK(pod->name == kPodUid);
  CHECK(pod->namespace_.empty());
  CHECK(pod->start_time.has_value());
  const auto app = chain.container(kPodUid, kAppId);
  REQUIRE(app);
  CHECK(app->name == kAppId);
  CHECK(app->start_time.has_value());
}

TEST_CASE("Runtime state of every fixture tree names what expected.json lists", "[identity]") {
  for (const char* tree :
       {"v1-cgroupfs-containerd", "v1-systemd-containerd", "v2-systemd-containerd",
        "v2-systemd-crio", "hybrid", "v2-cgroupfs-docker"}) {
    INFO("tree " << tree);
    const fs::path root = testing::fixture_path(tree);
    const auto expected = nlohmann::json::parse(testing::read_text(root / "expected.json"));
    const std::string runtime = expected.at("runtime").get<std::string>();
    const cgroup::Runtime kind = runtime == "crio"         ? cgroup::Runtime::kCrio
                                 : runtime == "containerd" ? cgroup::Runtime::kContainerd
                                                           : cgroup::Runtime::kDocker;
    // The scan as the scanner reports it, from the tree's own description.
    cgroup::ScanResult scan;
    scan.kubepods_rel_path = expected.at("kubepods").get<std::string>();
    for (const auto& p : expected.at("pods")) {
      cgroup::PodCgroup pod;
      pod.uid = p.at("uid").get<std::string>();
      pod.rel_path = p.at("rel_path").get<std::string>();
      for (const auto& c : p.at("containers")) {
        cgroup::ContainerCgroup container;
        container.id = c.at("id").get<std::string>();
        container.rel_path = c.at("rel_path").get<std::string>();
        container.runtime = kind;
        pod.containers.push_back(container);
      }
      scan.pods.push_back(pod);
    }
    REQUIRE(scan.pods.size() == 4);

    Logged logged;
    std::vector<std::unique_ptr<PodSource>> sources;
    sources.push_back(std::make_unique<RuntimeStateSource>(
        RuntimeStateOptions{root / "containerd", root / "crio"}, logged.sink()));
    // Where the scan walks: the memory hierarchy on v1, the root on v2.
    const fs::path hierarchy =
        fs::is_directory(root / "cgroup" / "memory") ? root / "cgroup" / "memory" : root / "cgroup";
    sources.push_back(std::make_unique<CgroupPathSource>(hierarchy));
    ChainedPodSource chain(std::move(sources));
    chain.refresh(scan);
    CHECK(logged.lines.empty());

    const bool has_state = runtime != "docker";
    for (const auto& p : expected.at("pods")) {
      const std::string uid = p.at("uid").get<std::string>();
      const auto pod = chain.pod(uid);
      REQUIRE(pod);
      CHECK(pod->uid == uid);
      CHECK(pod->start_time.has_value());
      if (has_state) {
        CHECK(pod->name == p.at("name").get<std::string>());
        CHECK(pod->namespace_ == p.at("namespace").get<std::string>());
      } else {
        CHECK(pod->name == uid);  // Docker keeps no OCI state here: named by the cgroup path
        CHECK(pod->namespace_.empty());
      }
      for (const auto& c : p.at("containers")) {
        const std::string id = c.at("id").get<std::string>();
        const auto container = chain.container(uid, id);
        REQUIRE(container);
        CHECK(container->start_time.has_value());
        if (has_state) {
          CHECK(container->is_sandbox == c.at("sandbox").get<bool>());
          CHECK(container->name == c.at("name").get<std::string>());
        } else {
          CHECK(container->name == id);
        }
      }
    }
  }
}

}  // namespace nodemeter::agent
