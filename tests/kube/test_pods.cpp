// Pod objects as the API server writes them → kube::Pod, times, query encoding.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "kube/pods.h"

namespace {

using namespace nodemeter::kube;
using json = nlohmann::json;
using namespace std::chrono;

WallTime at(int y, unsigned mo, unsigned d, int h, int mi, int s) {
  return sys_days(year(y) / month(mo) / day(d)) + hours(h) + minutes(mi) + seconds(s);
}

// Trimmed from `kubectl get pod -o json` of a kind cluster (containerd).
const char* kPod = R"({
  "apiVersion": "v1", "kind": "Pod",
  "metadata": {
    "creationTimestamp": "2024-05-06T07:08:09Z",
    "labels": {"app": "web", "pod-template-hash": "5d4f8c"},
    "name": "web-5d4f8c-abcde", "namespace": "shop", "resourceVersion": "48213",
    "uid": "0f3c2a4e-1b2c-4d5e-8f90-123456789abc"
  },
  "spec": {"nodeName": "kind-worker", "containers": [{"name": "nginx"}]},
  "status": {
    "phase": "Running", "podIP": "10.244.1.7", "startTime": "2024-05-06T07:08:10Z",
    "containerStatuses": [{
      "containerID": "containerd://4a1b2c3d4e5f",
      "name": "nginx", "ready": true, "restartCount": 2,
      "state": {"running": {"startedAt": "2024-05-06T07:08:12Z"}}
    }, {
      "containerID": "cri-o://99aa",
      "name": "sidecar", "ready": false, "restartCount": 0,
      "state": {"terminated": {"exitCode": 1, "startedAt": "2024-05-06T07:08:13.250Z",
                               "finishedAt": "2024-05-06T07:09:00Z"}}
    }, {
      "name": "waiting", "ready": false, "restartCount": 0,
      "state": {"waiting": {"reason": "ContainerCreating"}}
    }],
    "initContainerStatuses": [{
      "containerID": "docker://1111", "name": "init", "ready": false, "restartCount": 0,
      "state": {"terminated": {"startedAt": "2024-05-06T07:08:11Z"}}
    }],
    "ephemeralContainerStatuses": [{
      "containerID": "containerd://eeee", "name": "debugger", "ready": false, "restartCount": 0,
      "state": {"running": {"startedAt": "2024-05-06T08:00:00Z"}}
    }]
  }
})";

}  // namespace

TEST_CASE("parse_pod reads identity, status and every kind of container status", "[pods]") {
  auto pod = parse_pod(json::parse(kPod));
  INFO((pod ? std::string() : pod.error()));
  REQUIRE(pod.has_value());
  CHECK(pod->uid == "0f3c2a4e-1b2c-4d5e-8f90-123456789abc");
  CHECK(pod->name == "web-5d4f8c-abcde");
  CHECK(pod->namespace_ == "shop");
  CHECK(pod->node_name == "kind-worker");
  CHECK(pod->phase == "Running");
  CHECK(pod->pod_ip == "10.244.1.7");
  CHECK(pod->resource_version == "48213");
  CHECK(pod->labels ==
        std::map<std::string, std::string>{{"app", "web"}, {"pod-template-hash", "5d4f8c"}});
  CHECK(pod->creation_timestamp == at(2024, 5, 6, 7, 8, 9));
  CHECK(pod->start_time == at(2024, 5, 6, 7, 8, 10));
  REQUIRE(pod->containers.size() == 5);

  const auto& nginx = pod->containers[0];
  CHECK(nginx.name == "nginx");
  CHECK(nginx.container_id == "4a1b2c3d4e5f");
  CHECK(nginx.runtime == "containerd");
  CHECK(nginx.ready);
  CHECK(nginx.restart_count == 2);
  CHECK(nginx.started_at == at(2024, 5, 6, 7, 8, 12));

  const auto& sidecar = pod->containers[1];
  CHECK(sidecar.container_id == "99aa");
  CHECK(sidecar.runtime == "cri-o");
  CHECK_FALSE(sidecar.ready);
  CHECK(sidecar.started_at == at(2024, 5, 6, 7, 8, 13) + milliseconds(250));

  const auto& waiting = pod->containers[2];
  CHECK(waiting.container_id.empty());
  CHECK(waiting.runtime.empty());
  CHECK_FALSE(waiting.started_at.has_value());

  CHECK(pod->containers[3].name == "init");
  CHECK(pod->containers[3].container_id == "1111");
  CHECK(pod->containers[3].runtime == "docker");
  CHECK(pod->containers[4].name == "debugger");
  CHECK(pod->containers[4].container_id == "eeee");
}

TEST_CASE("parse_pod never throws on garbage and names what is missing", "[pods]") {
  CHECK(parse_pod(json::array()).error() == "a pod is not a JSON object");
  CHECK(parse_pod(json::parse(R"({"metadata": {"name": "x"}})")).error() ==
        "pod \"x\" has no metadata.uid");
  CHECK(parse_pod(json::parse(R"({"metadata": {"name": 5, "uid": 7}})")).error() ==
        "pod \"\" has no metadata.uid");
  // Wrong types everywhere else are ignored, not thrown.
  auto odd = parse_pod(json::parse(R"({
    "metadata": {"uid": "u", "labels": {"a": 1, "b": "c"}, "creationTimestamp": 12},
    "spec": [], "status": {"phase": 3, "startTime": "yesterday",
      "containerStatuses": [5, {"name": "c", "containerID": 9, "ready": "yes",
                                "restartCount": "many", "state": {"running": []}}],
      "initContainerStatuses": {"not": "a list"}}})"));
  REQUIRE(odd.has_value());
  CHECK(odd->uid == "u");
  CHECK(odd->labels == std::map<std::string, std::string>{{"b", "c"}});
  CHECK_FALSE(odd->creation_timestamp.has_value());
  CHECK_FALSE(odd->start_time.has_value());
  CHECK(odd->phase.empty());
  REQUIRE(odd->containers.size() == 1);
  CHECK(odd->containers[0].name == "c");
  CHECK(odd->containers[0].container_id.empty());
  CHECK_FALSE(odd->containers[0].ready);
  CHECK(odd->containers[0].restart_count == 0);
}

TEST_CASE("Kubernetes times: RFC 3339 with fractions and offsets", "[pods]") {
  CHECK(parse_kube_time("2024-05-06T07:08:09Z") == at(2024, 5, 6, 7, 8, 9));
  CHECK(parse_kube_time("2024-05-06T07:08:09.123456Z") ==
        at(2024, 5, 6, 7, 8, 9) + microseconds(123456));
  CHECK(parse_kube_time("2024-05-06T09:08:09+02:00") == at(2024, 5, 6, 7, 8, 9));
  CHECK(parse_kube_time("2024-05-06T07:00:09-00:30") == at(2024, 5, 6, 7, 30, 9));
  CHECK(parse_kube_time("2024-02-29T00:00:00Z") == at(2024, 2, 29, 0, 0, 0));
  CHECK_FALSE(parse_kube_time("2023-02-29T00:00:00Z").has_value());
  CHECK_FALSE(parse_kube_time("2024-05-06 07:08:09Z").has_value());
  CHECK_FALSE(parse_kube_time("2024-05-06T07:08:09").has_value());
  CHECK_FALSE(parse_kube_time("2024-05-06T07:08:09.Z").has_value());
  CHECK_FALSE(parse_kube_time("2024-05-06T24:08:09Z").has_value());
  CHECK_FALSE(parse_kube_time("2024-05-06T07:08:09+0200").has_value());
  CHECK_FALSE(parse_kube_time("2024-05-06T07:08:09Zjunk").has_value());
  CHECK_FALSE(parse_kube_time("").has_value());
}

TEST_CASE("query values are percent-encoded", "[pods]") {
  CHECK(url_encode("spec.nodeName=node-1") == "spec.nodeName%3Dnode-1");
  CHECK(url_encode("app in (a,b),tier!=x") == "app%20in%20%28a%2Cb%29%2Ctier%21%3Dx");
  CHECK(url_encode("A-z_0.9~") == "A-z_0.9~");
}
