#include "api/metrics_api.h"

#include <algorithm>
#include <charconv>

#include "api/k8s_json.h"
#include "api/quantity.h"
#include "api/selector.h"

namespace nodemeter::api {
namespace {

constexpr std::string_view kGroup = "metrics.k8s.io";
constexpr std::string_view kVersions[] = {"v1beta1", "v1"};

bool usable(const ContainerSnapshot& c, const Snapshot& snap) {
  if (!c.usage) return false;
  // A container that could not be read keeps its last window until that is older than --window.
  if (c.stale && snap.taken_at - c.usage->timestamp > snap.window) return false;
  return true;
}

// The swap key appears only where the node has swap (kubectl top --show-swap reads it); cgroup v1
// reports swap 0 through memsw accounting even on nodes without any.
bool node_has_swap(const Snapshot& snap) {
  return snap.node.latest && snap.node.latest->memory.swap_bytes.has_value();
}

ResourceUsage usage_of(const WindowUsage& w, bool with_swap) {
  return ResourceUsage{w.nano_cores, w.working_set_bytes, with_swap ? w.swap_bytes : std::nullopt};
}

// --- request parsing ---------------------------------------------------------------------------

struct MediaRange {
  std::string type;
  std::map<std::string, std::string> params;
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

std::vector<MediaRange> parse_accept(std::string_view accept) {
  std::vector<MediaRange> out;
  while (!accept.empty()) {
    const size_t comma = accept.find(',');
    std::string_view entry = trim(accept.substr(0, comma));
    accept = comma == std::string_view::npos ? std::string_view{} : accept.substr(comma + 1);
    if (entry.empty()) continue;
    MediaRange range;
    const size_t semi = entry.find(';');
    range.type = std::string(trim(entry.substr(0, semi)));
    std::string_view params =
        semi == std::string_view::npos ? std::string_view{} : entry.substr(semi + 1);
    while (!params.empty()) {
      const size_t next = params.find(';');
      std::string_view param = trim(params.substr(0, next));
      params = next == std::string_view::npos ? std::string_view{} : params.substr(next + 1);
      const size_t eq = param.find('=');
      if (eq == std::string_view::npos) continue;
      range.params[std::string(trim(param.substr(0, eq)))] =
          std::string(trim(param.substr(eq + 1)));
    }
    out.push_back(std::move(range));
  }
  return out;
}

bool json_compatible(const MediaRange& r) {
  return r.type == "application/json" || r.type == "application/*" || r.type == "*/*";
}

// The meta.k8s.io version of the Table the client asks for first, if any.
std::optional<std::string> table_version(const std::vector<MediaRange>& accept) {
  for (const auto& r : accept) {
    if (!json_compatible(r)) continue;
    const auto as = r.params.find("as");
    if (as == r.params.end() || as->second != "Table") continue;
    const auto g = r.params.find("g");
    const auto v = r.params.find("v");
    if (g == r.params.end() || g->second != "meta.k8s.io" || v == r.params.end()) continue;
    if (v->second == "v1" || v->second == "v1beta1") return v->second;
  }
  return std::nullopt;
}

// metav1's isPrettyPrint: ?pretty=true, or a curl, Wget or browser user agent.
bool pretty_print(const Request& req, std::string_view query) {
  if (auto p = query_param(query, "pretty"); p && !p->empty()) {
    return *p == "1" || *p == "t" || *p == "T" || *p == "true" || *p == "TRUE" || *p == "True";
  }
  const std::string_view ua = req[http::field::user_agent];
  return ua.starts_with("curl") || ua.starts_with("Wget") || ua.starts_with("Mozilla/5.0");
}

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    const size_t slash = path.find('/');
    parts.push_back(path.substr(0, slash));
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash);
  }
  return parts;
}

// --- JSON objects ------------------------------------------------------------------------------

Json usage_json(const ResourceUsage& u) {
  Json j;  // a ResourceList map: Go sorts its keys, and cpu < memory < swap
  j["cpu"] = format_cpu_nanocores(u.cpu_nano_cores);
  j["memory"] = format_memory_bytes(u.memory_bytes);
  if (u.swap_bytes) j["swap"] = format_memory_bytes(*u.swap_bytes);
  return j;
}

Json metadata_json(std::string_view name, std::string_view namespace_,
                   const std::map<std::string, std::string>& labels, WallTime now) {
  Json m;
  m["name"] = std::string(name);
  if (!namespace_.empty()) m["namespace"] = std::string(namespace_);
  m["creationTimestamp"] = rfc3339(now);
  if (!labels.empty()) {
    Json l = Json::object();
    for (const auto& [k, v] : labels)
      l[k] = v;
    m["labels"] = std::move(l);
  }
  return m;
}

Json node_json(const NodeMetricsItem& n, const std::string* api_version, WallTime now) {
  Json j;
  if (api_version) {
    j["kind"] = "NodeMetrics";
    j["apiVersion"] = *api_version;
  }
  j["metadata"] = metadata_json(n.name, "", n.labels, now);
  j["timestamp"] = rfc3339(n.timestamp);
  j["window"] = go_duration(n.window);
  j["usage"] = usage_json(n.usage);
  return j;
}

Json pod_json(const PodMetricsItem& p, const std::string* api_version, WallTime now) {
  Json j;
  if (api_version) {
    j["kind"] = "PodMetrics";
    j["apiVersion"] = *api_version;
  }
  j["metadata"] = metadata_json(p.name, p.namespace_, p.labels, now);
  j["timestamp"] = rfc3339(p.timestamp);
  j["window"] = go_duration(p.window);
  Json containers = Json::array();
  for (const auto& c : p.containers) {
    Json cj;
    cj["name"] = c.name;
    cj["usage"] = usage_json(c.usage);
    containers.push_back(std::move(cj));
  }
  j["containers"] = std::move(containers);
  return j;
}

// metrics-server's addNodeMetricsToTable / addPodMetricsToTable after the API server's asTable:
// columns Name, one per usage key of the first item (sorted), Window; each row's object is
// PartialObjectMetadata unless ?includeObject says otherwise.
struct TableRowSource {
  std::string name;
  std::string namespace_;
  const std::map<std::string, std::string>* labels;
  ResourceUsage usage;  // pods: the sum over containers
  std::chrono::nanoseconds window;
  Json full_object;
};

Json table_json(const std::vector<TableRowSource>& rows, const std::string& table_version,
                std::string_view include_object, WallTime now) {
  Json j;
  j["kind"] = "Table";
  j["apiVersion"] = "meta.k8s.io/" + table_version;
  j["metadata"] = Json::object();
  if (rows.empty()) {
    j["columnDefinitions"] = nullptr;
    j["rows"] = nullptr;
    return j;
  }
  std::vector<std::string> names = {"cpu", "memory"};
  if (rows.front().usage.swap_bytes) names.push_back("swap");
  const auto column = [](std::string name, std::string format, std::string description) {
    Json c;
    c["name"] = std::move(name);
    c["type"] = "string";
    c["format"] = std::move(format);
    c["description"] = std::move(description);
    c["priority"] = 0;
    return c;
  };
  Json columns = Json::array();
  columns.push_back(column("Name", "name", "Name of the resource"));
  for (const auto& n : names)
    columns.push_back(column(n, "quantity", ""));
  columns.push_back(column("Window", "duration", ""));
  j["columnDefinitions"] = std::move(columns);

  Json out_rows = Json::array();
  for (const auto& r : rows) {
    Json cells = Json::array();
    cells.push_back(r.name);
    for (const auto& n : names) {
      if (n == "cpu") cells.push_back(format_cpu_nanocores(r.usage.cpu_nano_cores));
      if (n == "memory") cells.push_back(format_memory_bytes(r.usage.memory_bytes));
      if (n == "swap") cells.push_back(format_memory_bytes(r.usage.swap_bytes.value_or(0)));
    }
    cells.push_back(go_duration(r.window));
    Json row;
    row["cells"] = std::move(cells);
    if (include_object == "None") {
      row["object"] = nullptr;
    } else if (include_object == "Object") {
      row["object"] = r.full_object;
    } else {
      Json partial;
      partial["kind"] = "PartialObjectMetadata";
      partial["apiVersion"] = "meta.k8s.io/" + table_version;
      partial["metadata"] = metadata_json(r.name, r.namespace_, *r.labels, now);
      row["object"] = std::move(partial);
    }
    out_rows.push_back(std::move(row));
  }
  j["rows"] = std::move(out_rows);
  return j;
}

TableRowSource node_row(const NodeMetricsItem& n, const std::string& api_version, WallTime now) {
  return TableRowSource{n.name, "", &n.labels, n.usage, n.window, node_json(n, &api_version, now)};
}

TableRowSource pod_row(const PodMetricsItem& p, const std::string& api_version, WallTime now) {
  ResourceUsage sum;
  for (const auto& c : p.containers) {
    sum.cpu_nano_cores += c.usage.cpu_nano_cores;
    sum.memory_bytes += c.usage.memory_bytes;
    if (c.usage.swap_bytes) sum.swap_bytes = sum.swap_bytes.value_or(0) + *c.usage.swap_bytes;
  }
  return TableRowSource{p.name, p.namespace_, &p.labels,
                        sum,    p.window,     pod_json(p, &api_version, now)};
}

Json group_version_json(std::string_view version) {
  Json j;
  j["groupVersion"] = std::string(kGroup) + "/" + std::string(version);
  j["version"] = std::string(version);
  return j;
}

Json api_group_json(const MetricsApiOptions& options, bool with_type) {
  Json j;
  if (with_type) {
    j["kind"] = "APIGroup";
    j["apiVersion"] = "v1";
  }
  j["name"] = std::string(kGroup);
  Json versions = Json::array();
  versions.push_back(group_version_json(options.preferred_version));
  for (auto v : kVersions) {
    if (v != options.preferred_version) versions.push_back(group_version_json(v));
  }
  j["versions"] = std::move(versions);
  j["preferredVersion"] = group_version_json(options.preferred_version);
  return j;
}

Json api_resource_list_json(std::string_view version) {
  const auto resource = [](std::string name, bool namespaced, std::string kind) {
    Json r;
    r["name"] = std::move(name);
    r["singularName"] = "";
    r["namespaced"] = namespaced;
    r["kind"] = std::move(kind);
    r["verbs"] = Json::array({"get", "list"});
    return r;
  };
  Json j;
  j["kind"] = "APIResourceList";
  j["apiVersion"] = "v1";
  j["groupVersion"] = std::string(kGroup) + "/" + std::string(version);
  j["resources"] =
      Json::array({resource("nodes", false, "NodeMetrics"), resource("pods", true, "PodMetrics")});
  return j;
}

Json version_json(const VersionInfo& v) {
  Json j;
  j["major"] = v.major;
  j["minor"] = v.minor;
  j["gitVersion"] = v.git_version;
  j["gitCommit"] = v.git_commit;
  j["gitTreeState"] = v.git_tree_state;
  j["buildDate"] = v.build_date;
  j["goVersion"] = v.go_version;
  j["compiler"] = v.compiler;
  j["platform"] = v.platform;
  return j;
}

// --- the handler -------------------------------------------------------------------------------

class MetricsRequest {
 public:
  MetricsRequest(const Request& req, const MetricsView& view, const MetricsApiOptions& options,
                 WallTime now)
      : req_(req), view_(view), options_(options), now_(now) {
    const Target t = split_target(req.target());
    path_ = t.path;
    query_ = t.query;
    pretty_ = pretty_print(req, query_);
    accept_ = parse_accept(req[http::field::accept]);
  }

  Response serve() {
    const auto parts = split_path(path_);
    const bool get = req_.method() == http::verb::get || req_.method() == http::verb::head;
    const auto not_allowed = [&] { return send(405, status_no_route(405)); };

    if (parts.size() == 1 && parts[0] == "version") {
      if (!get) return not_allowed();
      // The API server writes version.Info with WriteRawJSON: always indented by two spaces.
      return json_response(req_, 200, to_go_json_indented(version_json(options_.version), 2));
    }
    if (parts.empty() || parts[0] != "apis") return send(404, status_no_route(404));
    if (parts.size() == 1) {
      if (!get) return not_allowed();
      return serve_group_list();
    }
    if (parts[1] != kGroup) return send(404, status_no_route(404));
    if (parts.size() == 2) {
      if (!get) return not_allowed();
      return send(200, api_group_json(options_, true));
    }
    const auto version = std::find(std::begin(kVersions), std::end(kVersions), parts[2]);
    if (version == std::end(kVersions)) return send(404, status_no_route(404));
    version_ = std::string(kGroup) + "/" + std::string(*version);
    const std::vector<std::string_view> rest(parts.begin() + 3, parts.end());

    if (rest.empty()) {
      if (!get) return not_allowed();
      return send(200, api_resource_list_json(*version));
    }
    if (rest[0] == "nodes" && rest.size() <= 2) {
      if (!get) return not_allowed();
      return rest.size() == 1 ? list_nodes() : get_node(rest[1]);
    }
    if (rest[0] == "pods" && rest.size() == 1) {
      if (!get) return not_allowed();
      return list_pods(std::nullopt);
    }
    if (rest[0] == "namespaces" && rest.size() >= 3 && rest.size() <= 4 && rest[2] == "pods") {
      if (!get) return not_allowed();
      return rest.size() == 3 ? list_pods(rest[1]) : get_pod(rest[1], rest[3]);
    }
    return send(404, status_no_route(404));
  }

 private:
  Response send(unsigned status, const Json& body) {
    return json_response(req_, status, pretty_ ? to_go_json_indented(body, 2) : to_go_json(body));
  }

  Response serve_group_list() {
    // Aggregated discovery (apidiscovery.k8s.io) is not served: answer 406 when the client
    // accepts nothing else, so the API server falls back to the legacy documents.
    bool wants_aggregated = false;
    bool accepts_plain = accept_.empty();
    for (const auto& r : accept_) {
      const auto g = r.params.find("g");
      if (g != r.params.end() && g->second == "apidiscovery.k8s.io") {
        wants_aggregated = true;
      } else if (json_compatible(r) && r.params.find("as") == r.params.end()) {
        accepts_plain = true;
      }
    }
    if (wants_aggregated && !accepts_plain) {
      return send(406, status_not_acceptable("application/json"));
    }
    Json j;
    j["kind"] = "APIGroupList";
    j["apiVersion"] = "v1";
    j["groups"] = Json::array({api_group_json(options_, false)});
    return send(200, j);
  }

  // Parses labelSelector then fieldSelector, as the API server decodes ListOptions.
  bool selectors(LabelSelector* labels, FieldSelector* fields, Response* error) {
    if (auto text = query_param(query_, "labelSelector")) {
      auto parsed = parse_label_selector(*text);
      if (auto* e = std::get_if<SelectorError>(&parsed)) {
        *error = send(400, status_bad_request(e->message));
        return false;
      }
      *labels = std::get<LabelSelector>(std::move(parsed));
    }
    if (auto text = query_param(query_, "fieldSelector")) {
      auto parsed = parse_field_selector(*text);
      if (auto* e = std::get_if<SelectorError>(&parsed)) {
        *error = send(400, status_bad_request(e->message));
        return false;
      }
      *fields = std::get<FieldSelector>(std::move(parsed));
    }
    return true;
  }

  Response list_nodes() {
    LabelSelector labels;
    FieldSelector fields;
    Response error;
    if (!selectors(&labels, &fields, &error)) return error;
    std::vector<const NodeMetricsItem*> items;
    for (const auto& n : view_.nodes) {
      if (labels.matches(n.labels) && fields.matches(n.name, "")) items.push_back(&n);
    }
    if (const auto table = table_version(accept_)) {
      std::vector<TableRowSource> rows;
      for (const auto* n : items)
        rows.push_back(node_row(*n, version_, now_));
      return send(200, table_json(rows, *table, include_object(), now_));
    }
    Json j;
    j["kind"] = "NodeMetricsList";
    j["apiVersion"] = version_;
    j["metadata"] = Json::object();
    Json arr = Json::array();
    for (const auto* n : items)
      arr.push_back(node_json(*n, nullptr, now_));
    j["items"] = std::move(arr);
    return send(200, j);
  }

  Response get_node(std::string_view name) {
    const auto it = std::find_if(view_.nodes.begin(), view_.nodes.end(),
                                 [&](const auto& n) { return n.name == name; });
    if (it == view_.nodes.end()) {
      if (view_.known_nodes.contains(std::string(name))) {
        return send(404, status_not_found(kGroup, "nodemetrics", name));
      }
      return send(404, status_not_found("", "node", name));
    }
    if (const auto table = table_version(accept_)) {
      return send(200, table_json({node_row(*it, version_, now_)}, *table, include_object(), now_));
    }
    return send(200, node_json(*it, &version_, now_));
  }

  Response list_pods(std::optional<std::string_view> namespace_) {
    LabelSelector labels;
    FieldSelector fields;
    Response error;
    if (!selectors(&labels, &fields, &error)) return error;
    std::vector<const PodMetricsItem*> items;
    for (const auto& p : view_.pods) {
      if (namespace_ && p.namespace_ != *namespace_) continue;
      if (labels.matches(p.labels) && fields.matches(p.name, p.namespace_)) items.push_back(&p);
    }
    if (const auto table = table_version(accept_)) {
      std::vector<TableRowSource> rows;
      for (const auto* p : items)
        rows.push_back(pod_row(*p, version_, now_));
      return send(200, table_json(rows, *table, include_object(), now_));
    }
    Json j;
    j["kind"] = "PodMetricsList";
    j["apiVersion"] = version_;
    j["metadata"] = Json::object();
    Json arr = Json::array();
    for (const auto* p : items)
      arr.push_back(pod_json(*p, nullptr, now_));
    j["items"] = std::move(arr);
    return send(200, j);
  }

  Response get_pod(std::string_view namespace_, std::string_view name) {
    const auto it = std::find_if(view_.pods.begin(), view_.pods.end(), [&](const auto& p) {
      return p.namespace_ == namespace_ && p.name == name;
    });
    if (it == view_.pods.end()) {
      if (view_.known_pods.contains({std::string(namespace_), std::string(name)})) {
        return send(404, status_not_found(kGroup, "podmetrics",
                                          std::string(namespace_) + "/" + std::string(name)));
      }
      return send(404, status_not_found("", "pods", name));
    }
    if (const auto table = table_version(accept_)) {
      return send(200, table_json({pod_row(*it, version_, now_)}, *table, include_object(), now_));
    }
    return send(200, pod_json(*it, &version_, now_));
  }

  std::string include_object() const {
    return query_param(query_, "includeObject").value_or("Metadata");
  }

  const Request& req_;
  const MetricsView& view_;
  const MetricsApiOptions& options_;
  WallTime now_;
  std::string path_;
  std::string query_;
  bool pretty_ = false;
  std::vector<MediaRange> accept_;
  std::string version_;  // "metrics.k8s.io/v1beta1"
};

}  // namespace

void MetricsView::add(const Snapshot& snap) {
  const NodeSnapshot& node = snap.node;
  if (!node.name.empty()) {
    known_nodes.insert(node.name);
    if (node.usage) {
      NodeMetricsItem item{node.name,
                           {},
                           node.usage->timestamp,
                           node.usage->window,
                           usage_of(*node.usage, node_has_swap(snap))};
      const auto pos =
          std::lower_bound(nodes.begin(), nodes.end(), item.name,
                           [](const auto& n, const std::string& name) { return n.name < name; });
      if (pos == nodes.end() || pos->name != item.name) nodes.insert(pos, std::move(item));
    }
  }
  for (const PodSnapshot& pod : snap.pods) {
    known_pods.insert({pod.namespace_, pod.name});
    if (pod.phase != "Running") continue;
    PodMetricsItem item{pod.name, pod.namespace_, pod.labels, {}, {}, {}};
    bool complete = true;
    const WindowUsage* earliest = nullptr;
    for (const ContainerSnapshot& c : pod.containers) {
      if (!c.latest) continue;  // never read: exited before the first pass, or not started
      if (!usable(c, snap)) {
        complete = false;
        break;
      }
      item.containers.push_back(
          ContainerMetricsItem{c.name, usage_of(*c.usage, node_has_swap(snap))});
      if (!earliest || c.usage->timestamp < earliest->timestamp) earliest = &*c.usage;
    }
    if (!complete || item.containers.empty()) continue;
    std::sort(item.containers.begin(), item.containers.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    item.timestamp = earliest->timestamp;
    item.window = earliest->window;
    const auto key = [](const PodMetricsItem& p) { return std::tie(p.namespace_, p.name); };
    const auto pos =
        std::lower_bound(pods.begin(), pods.end(), item,
                         [&](const auto& a, const auto& b) { return key(a) < key(b); });
    if (pos == pods.end() || key(*pos) != key(item)) pods.insert(pos, std::move(item));
  }
}

MetricsView make_metrics_view(const Snapshot& snap) {
  MetricsView view;
  view.add(snap);
  return view;
}

VersionInfo version_info(std::string_view semver) {
  VersionInfo v;
  const size_t dot1 = semver.find('.');
  const size_t dot2 = semver.find('.', dot1 == std::string_view::npos ? dot1 : dot1 + 1);
  v.major = std::string(semver.substr(0, dot1));
  if (dot1 != std::string_view::npos)
    v.minor = std::string(semver.substr(dot1 + 1, dot2 - dot1 - 1));
  v.git_version = "v" + std::string(semver);
#if defined(__clang__)
  v.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  v.compiler = "gcc " __VERSION__;
#endif
#if defined(__x86_64__)
  v.platform = "linux/amd64";
#elif defined(__aarch64__)
  v.platform = "linux/arm64";
#else
  v.platform = "linux/unknown";
#endif
  return v;
}

bool is_metrics_api_path(std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  return path == "/version" || path == "/version/" || path == "/apis" || path.starts_with("/apis/");
}

Response handle_metrics_api(const Request& req, const MetricsView& view,
                            const MetricsApiOptions& options, WallTime now) {
  return MetricsRequest(req, view, options, now).serve();
}

}  // namespace nodemeter::api
