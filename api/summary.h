// The kubelet's Summary API (/stats/summary, k8s.io/kubelet/pkg/apis/stats/v1alpha1) for this
// node: node, pod and container CPU and memory (and swap where accounted), as older
// metrics-server releases and other tools read it. A pure function of a request and a snapshot.
#pragma once

#include <string_view>

#include "api/k8s_json.h"
#include "api/server.h"
#include "api/snapshot.h"

namespace nodemeter::api {

// The Summary document. The kubelet adds network, filesystem, volume, rlimit and process stats
// unless only_cpu_and_memory is set; nodemeter reads none of those, so both forms carry the same
// fields, and systemContainers is omitted (the kubelet omits it too when it knows none).
Json summary_json(const Snapshot& snap, bool only_cpu_and_memory);

// True for /stats/summary (with or without a query).
bool is_summary_path(std::string_view target);

// GET and HEAD of /stats/summary[?only_cpu_and_memory=true]; JSON indented as the kubelet's
// go-restful writes it. Other methods answer 405.
Response handle_summary(const Request& req, const Snapshot& snap);

}  // namespace nodemeter::api
