#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cgroup/layout.h"
#include "cgroup/scan.h"
#include "support/fixture_tree.h"

namespace fs = std::filesystem;
using nodemeter::cgroup::Layout;
using nodemeter::cgroup::Mode;
using nodemeter::cgroup::parse_cgroup_path;
using nodemeter::cgroup::PathIdentity;
using nodemeter::cgroup::QosClass;
using nodemeter::cgroup::Runtime;
using nodemeter::cgroup::scan;
using nodemeter::cgroup::ScanResult;
using namespace nodemeter::testing;

namespace {

constexpr const char* kUid = "0b9e7d36-51c4-4f2a-8e63-a7d90c1b5f48";
constexpr const char* kUidSystemd = "0b9e7d36_51c4_4f2a_8e63_a7d90c1b5f48";
constexpr const char* kStaticUid = "5a8c1d9e0f2b4c6d8e0f1a2b3c4d5e6f";
constexpr const char* kId = "412ca847a34a4cf55dfffe9e909483f346776b7f1cf14b3ecbd8ce626b620d21";

std::string s(const char* a) {
  return a;
}

Layout v2_layout(const fs::path& root) {
  Layout layout;
  layout.mode = Mode::kV2;
  layout.root = layout.cpu = layout.cpuacct = layout.memory = root;
  return layout;
}

uint64_t inode_of(const fs::path& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

}  // namespace

TEST_CASE("to_string names QoS classes and runtimes", "[scan]") {
  CHECK(s(to_string(QosClass::kGuaranteed)) == "Guaranteed");
  CHECK(s(to_string(QosClass::kBurstable)) == "Burstable");
  CHECK(s(to_string(QosClass::kBestEffort)) == "BestEffort");
  CHECK(s(to_string(Runtime::kContainerd)) == "containerd");
  CHECK(s(to_string(Runtime::kCrio)) == "cri-o");
  CHECK(s(to_string(Runtime::kDocker)) == "docker");
  CHECK(s(to_string(Runtime::kUnknown)) == "unknown");
}

TEST_CASE("parse_cgroup_path recognises pods and containers of every driver and runtime",
          "[scan]") {
  struct Row {
    std::string path;
    std::string uid;
    QosClass qos;
    std::optional<std::string> id;
    Runtime runtime;
  };
  const std::string id = kId;
  const std::string uid = kUid;
  const std::string u_ = kUidSystemd;
  const std::string st = kStaticUid;
  const std::vector<Row> rows{
      // cgroupfs driver
      {"kubepods/burstable/pod" + uid, uid, QosClass::kBurstable, {}, Runtime::kUnknown},
      {"kubepods/besteffort/pod" + uid, uid, QosClass::kBestEffort, {}, Runtime::kUnknown},
      {"kubepods/pod" + uid, uid, QosClass::kGuaranteed, {}, Runtime::kUnknown},
      {"kubepods/burstable/pod" + uid + "/" + id, uid, QosClass::kBurstable, id, Runtime::kUnknown},
      {"kubepods/pod" + uid + "/" + id, uid, QosClass::kGuaranteed, id, Runtime::kUnknown},
      {"kubepods/besteffort/pod" + uid + "/crio-" + id, uid, QosClass::kBestEffort, id,
       Runtime::kCrio},
      {"/kubepods/burstable/pod" + st + "/" + id, st, QosClass::kBurstable, id, Runtime::kUnknown},
      // systemd driver
      {"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u_ + ".slice",
       uid,
       QosClass::kBurstable,
       {},
       Runtime::kUnknown},
      {"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u_ +
           ".slice/cri-containerd-" + id + ".scope",
       uid, QosClass::kBurstable, id, Runtime::kContainerd},
      {"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + u_ + ".slice/crio-" +
           id + ".scope",
       uid, QosClass::kBestEffort, id, Runtime::kCrio},
      {"kubepods.slice/kubepods-pod" + u_ + ".slice/docker-" + id + ".scope", uid,
       QosClass::kGuaranteed, id, Runtime::kDocker},
      {"kubepods.slice/kubepods-pod" + u_ + ".slice",
       uid,
       QosClass::kGuaranteed,
       {},
       Runtime::kUnknown},
      {"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + st +
           ".slice/cri-containerd-" + id + ".scope",
       st, QosClass::kBurstable, id, Runtime::kContainerd},
      {"/kubepods.slice/kubepods-pod" + st + ".slice/",
       st,
       QosClass::kGuaranteed,
       {},
       Runtime::kUnknown},
      // kubepods nested under --cgroup-root or another cgroup
      {"kubelet/kubepods/burstable/pod" + uid + "/" + id, uid, QosClass::kBurstable, id,
       Runtime::kUnknown},
      {"docker/" + id + "/kubepods/pod" + uid, uid, QosClass::kGuaranteed, {}, Runtime::kUnknown},
      {"kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
       "kubelet-kubepods-besteffort-pod" +
           u_ + ".slice/cri-containerd-" + id + ".scope",
       uid, QosClass::kBestEffort, id, Runtime::kContainerd},
      {"kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + u_ + ".slice",
       uid,
       QosClass::kGuaranteed,
       {},
       Runtime::kUnknown},
  };
  for (const auto& row : rows) {
    INFO(row.path);
    const auto got = parse_cgroup_path(row.path);
    REQUIRE(got.has_value());
    CHECK(got->pod_uid == row.uid);
    CHECK(got->qos == row.qos);
    CHECK(got->container_id == row.id);
    CHECK(got->runtime == row.runtime);
  }
}

TEST_CASE("parse_cgroup_path rejects what is not a pod or container cgroup", "[scan]") {
  const std::string id = kId;
  const std::string uid = kUid;
  const std::string u_ = kUidSystemd;
  const std::string systemd_pod =
      "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u_ + ".slice";
  const std::vector<std::string> rejected{
      "",
      "/",
      "//",
      "kubepods",
      "kubepods/burstable",
      "kubepods.slice",
      "kubepods.slice/kubepods-burstable.slice",
      "system.slice/containerd.service",
      // conmon, sandbox-less oddities and cgroups inside a container
      systemd_pod + "/crio-conmon-" + id + ".scope",
      "kubepods/burstable/pod" + uid + "/crio-conmon-" + id,
      "kubepods/burstable/pod" + uid + "/" + id + "/init",
      systemd_pod + "/cri-containerd-" + id + ".scope/sub",
      systemd_pod + "/cri-containerd-" + id,  // a scope without .scope
      systemd_pod + "/containerd-" + id + ".scope",
      systemd_pod + "/cri-containerd-.scope",
      // container ids: length, case, alphabet
      "kubepods/burstable/pod" + uid + "/" + id.substr(1),
      "kubepods/burstable/pod" + uid + "/" + id + "0",
      "kubepods/burstable/pod" + uid + "/" + "412CA847" + id.substr(8),
      "kubepods/burstable/pod" + uid + "/" + "g" + id.substr(1),
      // pod UIDs: case, length, dash positions, separator of the other driver
      "kubepods/burstable/pod0B9E7D36-51c4-4f2a-8e63-a7d90c1b5f48",
      "kubepods/burstable/pod0b9e7d36-51c4-4f2a-8e63-a7d90c1b5f4",
      "kubepods/burstable/pod0b9e7d36-51c4-4f2a-8e63-a7d90c1b5f481",
      "kubepods/burstable/pod0b9e7d3-651c4-4f2a-8e63-a7d90c1b5f48",
      "kubepods/burstable/pod" + u_,
      "kubepods/burstable/pod5a8c1d9e0f2b4c6d8e0f1a2b3c4d5e6",
      "kubepods/burstable/pod5A8C1D9E0F2B4C6D8E0F1A2B3C4D5E6F",
      "kubepods/burstable/pod",
      "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid + ".slice",
      // QoS and nesting that the kubelet never makes
      "kubepods/guaranteed/pod" + uid,
      "kubepods/burstable/besteffort/pod" + uid,
      "burstable/pod" + uid,
      "system.slice/pod" + uid,
      "pod" + uid,
      "kubepods//pod" + uid,
      "kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod" + u_ + ".slice",
      "kubepods.slice/kubepods-burstable/kubepods-burstable-pod" + u_ + ".slice",
      "kubepods.slice/kubepods-guaranteed.slice/kubepods-guaranteed-pod" + u_ + ".slice",
      "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u_,
      "other.slice/other-burstable.slice/other-burstable-pod" + u_ + ".slice",
      "kubepods.slice/kubepods-pod" + u_ + ".scope",
  };
  for (const auto& path : rejected) {
    INFO(path);
    CHECK_FALSE(parse_cgroup_path(path).has_value());
  }
}

namespace {

struct FixtureCase {
  const char* name;
  Mode mode;
  Runtime runtime;
  const char* kubepods;
  // The v1 directory holding cpuacct files, relative to the fixture's cgroup/ ("" on v2).
  const char* cpuacct_dir;
};

const FixtureCase kFixtures[] = {
    {"v1-cgroupfs-containerd", Mode::kV1, Runtime::kUnknown, "kubepods", "cpuacct"},
    {"v1-systemd-containerd", Mode::kV1, Runtime::kContainerd, "kubepods.slice", "cpu,cpuacct"},
    {"v2-systemd-containerd", Mode::kV2, Runtime::kContainerd, "kubepods.slice", ""},
    {"v2-systemd-crio", Mode::kV2, Runtime::kCrio, "kubepods.slice", ""},
    {"v2-cgroupfs-docker", Mode::kV2, Runtime::kUnknown, "kubepods", ""},
    {"hybrid", Mode::kHybrid, Runtime::kContainerd, "kubelet.slice/kubelet-kubepods.slice",
     "cpuacct"},
};

QosClass qos_from(const std::string& name) {
  if (name == "guaranteed") return QosClass::kGuaranteed;
  if (name == "burstable") return QosClass::kBurstable;
  REQUIRE(name == "besteffort");
  return QosClass::kBestEffort;
}

}  // namespace

TEST_CASE("detect_layout gives each fixture tree its mode", "[scan]") {
  for (const auto& fixture : kFixtures) {
    INFO(fixture.name);
    const fs::path dir = fixture_path(fixture.name);
    const auto layout = nodemeter::cgroup::detect_layout(dir / "cgroup", dir / "proc");
    REQUIRE(layout.has_value());
    CHECK(layout->mode == fixture.mode);
    if (fixture.mode == Mode::kV2) {
      CHECK(layout->primary() == dir / "cgroup");
    } else {
      CHECK(layout->primary() == dir / "cgroup" / "memory");
      CHECK(layout->cpuacct == dir / "cgroup" / fixture.cpuacct_dir);
    }
  }
}

TEST_CASE("scan finds exactly the pods and containers of every fixture tree", "[scan]") {
  for (const auto& fixture : kFixtures) {
    INFO(fixture.name);
    const fs::path dir = fixture_path(fixture.name);
    const auto layout = nodemeter::cgroup::detect_layout(dir / "cgroup", dir / "proc");
    REQUIRE(layout.has_value());
    const ScanResult result = scan(*layout);
    const auto expected = nlohmann::json::parse(read_text(dir / "expected.json"));

    CHECK(result.kubepods_rel_path == fixture.kubepods);
    CHECK(result.kubepods_rel_path == expected["kubepods"].get<std::string>());
    // Every fixture node runs the same four pods: one per QoS class plus a static pod.
    REQUIRE(result.pods.size() == 4);
    REQUIRE(result.pods.size() == expected["pods"].size());
    std::multiset<QosClass> classes;
    size_t static_pods = 0;
    for (size_t i = 0; i < result.pods.size(); ++i) {
      const auto& pod = result.pods[i];
      const auto& want = expected["pods"][i];
      INFO(pod.rel_path);
      if (i > 0) CHECK(result.pods[i - 1].uid < pod.uid);
      CHECK(pod.uid == want["uid"].get<std::string>());
      CHECK(pod.qos == qos_from(want["qos"].get<std::string>()));
      CHECK(pod.rel_path == want["rel_path"].get<std::string>());
      CHECK(pod.inode == inode_of(layout->primary() / pod.rel_path));
      classes.insert(pod.qos);
      if (pod.uid.size() == 32) ++static_pods;
      // A sandbox plus one or two containers; conmon scopes are not among them.
      REQUIRE(pod.containers.size() == want["containers"].size());
      CHECK((pod.containers.size() == 2 || pod.containers.size() == 3));
      for (size_t j = 0; j < pod.containers.size(); ++j) {
        const auto& container = pod.containers[j];
        const auto& want_container = want["containers"][j];
        if (j > 0) CHECK(pod.containers[j - 1].id < container.id);
        CHECK(container.id == want_container["id"].get<std::string>());
        CHECK(container.rel_path == want_container["rel_path"].get<std::string>());
        CHECK(container.runtime == fixture.runtime);
        CHECK(container.rel_path.find("conmon") == std::string::npos);
        CHECK(container.inode == inode_of(layout->primary() / container.rel_path));
        CHECK(container.inode != pod.inode);
        // The same relative path names the cgroup in every hierarchy.
        CHECK(fs::is_directory(layout->cpuacct / container.rel_path));
        CHECK(fs::is_directory(layout->cpu / container.rel_path));
        // What scan found agrees with what the path alone says.
        const auto identity = parse_cgroup_path(container.rel_path);
        REQUIRE(identity.has_value());
        CHECK(identity->pod_uid == pod.uid);
        CHECK(identity->container_id == container.id);
      }
    }
    CHECK(classes.count(QosClass::kGuaranteed) == 1);
    CHECK(classes.count(QosClass::kBurstable) == 2);
    CHECK(classes.count(QosClass::kBestEffort) == 1);
    CHECK(static_pods == 1);
  }
}

TEST_CASE("scan of the CRI-O fixture, spelled out", "[scan]") {
  // Independent of expected.json: the uids and ids as they appear in the tree's directory names.
  const fs::path dir = fixture_path("v2-systemd-crio");
  const ScanResult result = scan(v2_layout(dir / "cgroup"));
  REQUIRE(result.pods.size() == 4);
  CHECK(result.pods[0].uid == "009ef7af-695e-4018-a90d-98bec29cb312");
  CHECK(result.pods[0].qos == QosClass::kBestEffort);
  CHECK(result.pods[1].uid == "89796af0-668f-4d96-8b8d-46bc1a3b15e7");
  CHECK(result.pods[1].qos == QosClass::kGuaranteed);
  CHECK(result.pods[1].rel_path ==
        "kubepods.slice/kubepods-pod89796af0_668f_4d96_8b8d_46bc1a3b15e7.slice");
  CHECK(result.pods[2].uid == "96555ed045fc1047e820f72c34cc7d6b");
  CHECK(result.pods[2].qos == QosClass::kBurstable);
  CHECK(result.pods[3].uid == "af736a28-b0bf-49b9-a62f-ad22534b0292");
  CHECK(result.pods[3].qos == QosClass::kBurstable);
  REQUIRE(result.pods[3].containers.size() == 3);
  CHECK(result.pods[0].containers[0].id ==
        "111ee416b195299a391e309ffb39307758decae039aca8c2c1d2958bdff0c85a");
  CHECK(result.pods[0].containers[0].rel_path ==
        "kubepods.slice/kubepods-besteffort.slice/"
        "kubepods-besteffort-pod009ef7af_695e_4018_a90d_98bec29cb312.slice/"
        "crio-111ee416b195299a391e309ffb39307758decae039aca8c2c1d2958bdff0c85a.scope");
  // The conmon scopes are there on disk, beside the containers, and left out.
  size_t conmon = 0;
  for (const auto& entry : fs::directory_iterator(dir / "cgroup" / result.pods[3].rel_path)) {
    if (entry.path().filename().string().starts_with("crio-conmon-")) ++conmon;
  }
  CHECK(conmon == 3);
}

TEST_CASE("scan without kubepods or without a root gives an empty result", "[scan]") {
  TempDir tmp;
  fs::create_directories(tmp / "system.slice" / "containerd.service");
  fs::create_directories(tmp / "user.slice");
  auto result = scan(v2_layout(tmp.path()));
  CHECK(result.pods.empty());
  CHECK(result.kubepods_rel_path.empty());

  result = scan(v2_layout(tmp / "does-not-exist"));
  CHECK(result.pods.empty());
  CHECK(result.kubepods_rel_path.empty());

  // kubepods present but empty.
  fs::create_directories(tmp / "kubepods.slice");
  result = scan(v2_layout(tmp.path()));
  CHECK(result.pods.empty());
  CHECK(result.kubepods_rel_path == "kubepods.slice");
}

TEST_CASE("scan skips entries that are not pod or container directories", "[scan]") {
  TempDir tmp;
  const fs::path root = tmp.path();
  const std::string id = kId;
  const std::string pod = pod_rel_path(Driver::kCgroupfs, QosClass::kBurstable, kUid);
  make_cgroup({root}, pod + "/" + id);
  make_cgroup({root}, pod + "/" + id + "/nested-inside-container");
  make_cgroup({root}, pod + "/crio-conmon-" + id);
  make_cgroup({root}, pod + "/not-a-container");
  make_cgroup({root}, "kubepods/system");  // neither a QoS class nor a pod
  make_cgroup({root}, "kubepods/burstable/pod-not-a-uid");
  // A regular file named like a container, a FIFO named like one, and a file named like a pod.
  const std::string id2(64, 'b');
  const std::string id3(64, 'c');
  write_file(root / pod / id2, "");
  REQUIRE(::mkfifo((root / pod / id3).c_str(), 0600) == 0);
  write_file(root / "kubepods" / "besteffort" / ("pod" + std::string(kStaticUid)), "");
  // A symlink named like a pod, pointing at a real pod directory elsewhere: not followed.
  make_cgroup({root}, "elsewhere/pod/" + std::string(64, 'd'));
  fs::create_directory_symlink(
      root / "elsewhere" / "pod",
      root / "kubepods" / "besteffort" / "pod11111111-2222-4333-8444-555555555555");

  const auto result = scan(v2_layout(root));
  CHECK(result.kubepods_rel_path == "kubepods");
  REQUIRE(result.pods.size() == 1);
  CHECK(result.pods[0].uid == kUid);
  CHECK(result.pods[0].rel_path == pod);
  REQUIRE(result.pods[0].containers.size() == 1);
  CHECK(result.pods[0].containers[0].id == id);
  CHECK(result.pods[0].containers[0].runtime == Runtime::kUnknown);
}

TEST_CASE("scan finds kubepods under --cgroup-root and sorts pods and containers", "[scan]") {
  TempDir tmp;
  const fs::path root = tmp.path();
  // v1: the memory hierarchy is walked; cpu and cpuacct hold the same paths.
  const std::vector<std::string> uids{"ffffffff-0000-4000-8000-000000000000",
                                      "00000000-ffff-4fff-8fff-ffffffffffff",
                                      "0123456789abcdef0123456789abcdef"};
  const std::vector<QosClass> classes{QosClass::kBestEffort, QosClass::kGuaranteed,
                                      QosClass::kBurstable};
  for (size_t i = 0; i < uids.size(); ++i) {
    const auto pod = pod_rel_path(Driver::kCgroupfs, classes[i], uids[i], "kubelet");
    for (char c : {'e', '1', '9'}) {
      make_cgroup(
          {root / "memory", root / "cpu", root / "cpuacct"},
          pod + "/" + container_dir_name(Driver::kCgroupfs, Runtime::kCrio, std::string(64, c)));
    }
  }
  Layout layout;
  layout.mode = Mode::kV1;
  layout.root = root;
  layout.memory = root / "memory";
  layout.cpu = root / "cpu";
  layout.cpuacct = root / "cpuacct";
  const auto result = scan(layout);
  CHECK(result.kubepods_rel_path == "kubelet/kubepods");
  REQUIRE(result.pods.size() == 3);
  CHECK(result.pods[0].uid == uids[1]);
  CHECK(result.pods[0].qos == QosClass::kGuaranteed);
  CHECK(result.pods[0].rel_path == "kubelet/kubepods/pod" + uids[1]);
  CHECK(result.pods[1].uid == uids[2]);
  CHECK(result.pods[1].qos == QosClass::kBurstable);
  CHECK(result.pods[2].uid == uids[0]);
  CHECK(result.pods[2].qos == QosClass::kBestEffort);
  for (const auto& pod : result.pods) {
    REQUIRE(pod.containers.size() == 3);
    CHECK(pod.containers[0].id == std::string(64, '1'));
    CHECK(pod.containers[1].id == std::string(64, '9'));
    CHECK(pod.containers[2].id == std::string(64, 'e'));
    for (const auto& container : pod.containers) {
      CHECK(container.runtime == Runtime::kCrio);
      CHECK(container.rel_path == pod.rel_path + "/crio-" + container.id);
    }
  }

  // The systemd spelling of the same, and a driver-agnostic builder round trip.
  TempDir tmp2;
  const auto pod = pod_rel_path(Driver::kSystemd, QosClass::kBurstable, kStaticUid, "kubelet");
  CHECK(pod ==
        "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
        "kubelet-kubepods-burstable-pod5a8c1d9e0f2b4c6d8e0f1a2b3c4d5e6f.slice");
  make_cgroup({tmp2.path()},
              pod + "/" + container_dir_name(Driver::kSystemd, Runtime::kDocker, kId));
  const auto result2 = scan(v2_layout(tmp2.path()));
  CHECK(result2.kubepods_rel_path == "kubelet.slice/kubelet-kubepods.slice");
  REQUIRE(result2.pods.size() == 1);
  CHECK(result2.pods[0].uid == kStaticUid);
  REQUIRE(result2.pods[0].containers.size() == 1);
  CHECK(result2.pods[0].containers[0].runtime == Runtime::kDocker);
}

TEST_CASE("a recreated container cgroup has a new identity", "[scan]") {
  TempDir tmp;
  copy_tree(fixture_path("v2-systemd-containerd") / "cgroup", tmp / "cgroup");
  const Layout layout = v2_layout(tmp / "cgroup");
  const auto before = scan(layout);
  REQUIRE_FALSE(before.pods.empty());
  REQUIRE_FALSE(before.pods[0].containers.empty());
  const auto& old = before.pods[0].containers[0];
  const fs::path dir = layout.root / old.rel_path;

  // As the runtime does: the old cgroup goes, a new one with the same name comes. Making the new
  // one before the old one goes keeps the file system from handing back the same inode number.
  const fs::path fresh = dir.parent_path() / "fresh";
  fs::create_directory(fresh);
  fs::remove_all(dir);
  fs::rename(fresh, dir);

  const auto after = scan(layout);
  REQUIRE(after.pods.size() == before.pods.size());
  REQUIRE(after.pods[0].containers.size() == before.pods[0].containers.size());
  const auto& now = after.pods[0].containers[0];
  CHECK(now.id == old.id);
  CHECK(now.rel_path == old.rel_path);
  CHECK(now.inode != old.inode);
  CHECK(now.inode == inode_of(dir));
  // Everything else keeps its identity.
  CHECK(after.pods[0].inode == before.pods[0].inode);
  CHECK(after.pods[0].containers[1].inode == before.pods[0].containers[1].inode);
}

TEST_CASE("scan tolerates cgroups vanishing and appearing while it walks", "[scan]") {
  TempDir tmp;
  const fs::path root = tmp.path();
  const std::string stable_uid = "aaaaaaaa-0000-4000-8000-000000000000";
  const std::string churn_uid = "bbbbbbbb-0000-4000-8000-000000000000";
  const auto stable = pod_rel_path(Driver::kSystemd, QosClass::kBurstable, stable_uid);
  const auto churn = pod_rel_path(Driver::kSystemd, QosClass::kBestEffort, churn_uid);
  make_cgroup({root},
              stable + "/" +
                  container_dir_name(Driver::kSystemd, Runtime::kContainerd, std::string(64, 'a')));
  make_cgroup({root}, churn);

  std::atomic<bool> stop{false};
  std::thread churner([&] {
    std::error_code ec;
    for (unsigned n = 0; !stop.load(); ++n) {
      const std::string id(64, "0123456789abcdef"[n % 16]);
      const fs::path container =
          root / churn / container_dir_name(Driver::kSystemd, Runtime::kContainerd, id);
      fs::create_directories(container, ec);
      fs::remove(container, ec);
      if (n % 8 == 0) {
        fs::remove_all(root / churn, ec);
        fs::create_directories(root / churn, ec);
      }
    }
  });
  size_t scans = 0;
  bool ok = true;
  for (; scans < 400 && ok; ++scans) {
    const auto result = scan(v2_layout(root));
    bool saw_stable = false;
    for (const auto& pod : result.pods) {
      ok = ok && pod.inode != 0 && (pod.uid == stable_uid || pod.uid == churn_uid);
      for (const auto& container : pod.containers)
        ok = ok && container.inode != 0;
      if (pod.uid == stable_uid) saw_stable = pod.containers.size() == 1;
    }
    ok = ok && saw_stable;
  }
  stop = true;
  churner.join();
  CHECK(ok);
  CHECK(scans == 400);
}

TEST_CASE("parse_cgroup_path on mutated paths returns only well-formed identities", "[scan]") {
  const std::string id = kId;
  const std::vector<std::string> seeds{
      "kubepods/burstable/pod" + std::string(kUid) + "/" + id,
      "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + std::string(kUidSystemd) +
          ".slice/crio-" + id + ".scope",
      "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + std::string(kStaticUid) +
          ".slice/cri-containerd-" + id + ".scope",
  };
  const std::string alphabet = "/-_.0123456789abcdefABCDEFpodsliceubrx";
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&state](uint64_t bound) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state % bound;
  };
  size_t accepted = 0;
  for (int i = 0; i < 30000; ++i) {
    std::string path = seeds[next(seeds.size())];
    for (uint64_t edits = 1 + next(3); edits > 0; --edits) {
      const size_t at = next(path.size() + 1);
      switch (next(3)) {
        case 0:
          if (at < path.size()) path[at] = alphabet[next(alphabet.size())];
          break;
        case 1:
          path.insert(path.begin() + static_cast<ptrdiff_t>(at), alphabet[next(alphabet.size())]);
          break;
        default:
          if (at < path.size()) path.erase(at, 1);
      }
    }
    const auto got = parse_cgroup_path(path);
    if (!got) continue;
    ++accepted;
    INFO(path);
    const auto& uid = got->pod_uid;
    REQUIRE((uid.size() == 32 || uid.size() == 36));
    for (size_t k = 0; k < uid.size(); ++k) {
      const bool dash = uid.size() == 36 && (k == 8 || k == 13 || k == 18 || k == 23);
      REQUIRE((dash ? uid[k] == '-' : std::isxdigit(uid[k]) && !std::isupper(uid[k])));
    }
    if (got->container_id) {
      REQUIRE(got->container_id->size() == 64);
      REQUIRE(got->container_id->find_first_not_of("0123456789abcdef") == std::string::npos);
      REQUIRE(path.find(*got->container_id) != std::string::npos);
    }
  }
  // Some edits keep a path valid (a changed hex digit); most do not.
  CHECK(accepted > 100);
  CHECK(accepted < 30000);
}
