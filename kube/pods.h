// Pods as the Kubernetes API describes them, reduced to what nodemeter needs (identity, labels,
// phase, start times, container ids), and a PodInformer: the client-go list-then-watch loop
// that keeps an up-to-date map of the pods matching a selector, readable from any thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kube/api_client.h"

namespace nodemeter::kube {

using WallTime = std::chrono::system_clock::time_point;

struct ContainerStatus {
  std::string name;
  std::string container_id;  // without the "containerd://", "cri-o://", "docker://" prefix
  std::string runtime;       // "containerd", "cri-o", "docker"; empty before the container runs
  std::optional<WallTime> started_at;  // state.running.startedAt, else state.terminated.startedAt
  bool ready = false;
  int64_t restart_count = 0;
};

struct Pod {
  std::string uid;
  std::string name;
  std::string namespace_;
  std::string node_name;
  std::string phase;  // "Pending", "Running", "Succeeded", "Failed", "Unknown"; empty if absent
  std::string pod_ip;
  std::map<std::string, std::string> labels;
  std::optional<WallTime> creation_timestamp;
  std::optional<WallTime> start_time;  // status.startTime: when the kubelet acknowledged the pod
  // containerStatuses, then initContainerStatuses, then ephemeralContainerStatuses.
  std::vector<ContainerStatus> containers;
  std::string resource_version;
};

using PodMap = std::map<std::string /*uid*/, Pod>;

// A Pod object (a list item or a watch event's object). Never throws; the error names what is
// missing or mistyped (a pod without metadata.uid is an error).
boost::system::result<Pod, std::string> parse_pod(const nlohmann::json& object);

// "2024-03-01T10:20:30Z", "2024-03-01T10:20:30.123456Z", "...+02:00": RFC 3339 as the API
// server writes metav1.Time and metav1.MicroTime.
std::optional<WallTime> parse_kube_time(std::string_view text);

// Percent-encodes a query parameter value (RFC 3986 unreserved characters kept).
std::string url_encode(std::string_view value);

struct PodWatchOptions {
  std::string namespace_;                          // empty: all namespaces
  std::string label_selector;                      // "app=nodemeter,tier!=x"; empty: none
  std::string field_selector;                      // "spec.nodeName=node-1"; empty: none
  size_t page_size = 500;                          // list limit; paged with continue tokens
  std::chrono::milliseconds list_timeout{60'000};  // each list page
  // Each watch asks the server to end it after a random time in this range (client-go's 5-10
  // minutes), spreading re-watches of many agents. The stream also ends after this long plus
  // watch_silence_grace without a byte (a dead connection the kernel has not noticed).
  std::chrono::seconds watch_timeout_min{300};
  std::chrono::seconds watch_timeout_max{600};
  std::chrono::milliseconds watch_silence_grace{30'000};
  std::chrono::milliseconds backoff_min{500};
  std::chrono::milliseconds backoff_max{30'000};
};

// Told once per change of state (first sync, lost contact, contact again), never per retry.
using KubeLog = std::function<void(const std::string& message)>;

class PodInformer {
 public:
  struct Status {
    bool synced = false;   // a complete list arrived at least once (pods() is meaningful)
    bool healthy = false;  // the last exchange with the API server succeeded
    std::string last_error;
    uint64_t lists = 0;         // complete lists (all pages)
    uint64_t watches = 0;       // watches the server accepted
    uint64_t relists_gone = 0;  // lists because a resource version expired (410 Gone)
    uint64_t errors = 0;        // failed lists and watches (transport errors and bad statuses)
    uint64_t events = 0;        // watch events applied (bookmarks included)
    std::optional<WallTime> last_success;
    std::string resource_version;
    size_t pods = 0;
  };

  PodInformer(boost::asio::io_context& io, std::shared_ptr<ApiClient> api, PodWatchOptions options,
              KubeLog log = {});
  // Stops; callbacks already running finish first when called from another thread.
  ~PodInformer();
  PodInformer(const PodInformer&) = delete;
  PodInformer& operator=(const PodInformer&) = delete;

  // Lists, then watches, until stop(). Callable once; from any thread.
  void start();
  // Ends the watch and any retry; pods() keeps the last state. From any thread.
  void stop();

  // The current pods by UID: an immutable map replaced as a whole on each change. Any thread.
  std::shared_ptr<const PodMap> pods() const;
  Status status() const;
  // Called on the io thread after each change of pods() (a list, an applied event).
  void on_change(std::function<void()> callback);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace nodemeter::kube
