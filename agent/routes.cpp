#include "agent/routes.h"

#include <vector>

#include "api/exposition.h"
#include "api/node_view.h"
#include "api/resource_metrics.h"
#include "api/summary.h"

namespace nodemeter::agent {
namespace {

namespace http = boost::beast::http;

std::string_view path_of(std::string_view target) {
  return target.substr(0, target.find('?'));
}

bool has_query_flag(std::string_view target, std::string_view flag) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return false;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view kv = query.substr(0, amp);
    if (kv == flag || kv.substr(0, kv.find('=')) == flag) return true;
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return false;
}

}  // namespace

api::Response text_response(const api::Request& req, http::status status, std::string body,
                            std::string_view content_type) {
  api::Response res{status, req.version()};
  res.set(http::field::content_type, content_type);
  res.set(http::field::cache_control, "no-store");
  res.body() = std::move(body);
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  return res;
}

api::Response health_response(const api::Request& req, std::string_view endpoint,
                              const std::vector<HealthCheck>& checks) {
  bool all_ok = true;
  for (const auto& c : checks)
    all_ok = all_ok && c.ok;
  std::string body;
  if (has_query_flag(req.target(), "verbose") || !all_ok) {
    for (const auto& c : checks) {
      if (c.ok) {
        body += "[+]" + c.name + " ok" + (c.note.empty() ? "" : " (" + c.note + ")") + "\n";
      } else {
        body += "[-]" + c.name + " failed: " + c.reason + "\n";
      }
    }
    body += std::string(endpoint) + (all_ok ? " check passed\n" : " check failed\n");
  } else {
    body = "ok";
  }
  return text_response(req, all_ok ? http::status::ok : http::status::service_unavailable,
                       std::move(body));
}

int64_t steady_ns(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::string route_pattern(std::string_view target) {
  const std::string_view path = path_of(target);
  static const std::vector<std::string_view> literal{
      "/metrics/resource", "/metrics/cadvisor", "/metrics", "/healthz", "/livez",
      "/readyz",           "/stats/summary",    "/version", "/apis",    api::kNodeViewPath};
  for (auto l : literal) {
    if (path == l) return std::string(l);
  }
  constexpr std::string_view group = "/apis/metrics.k8s.io";
  if (path.substr(0, group.size()) != group) return "other";
  std::string_view rest = path.substr(group.size());
  if (rest.empty() || rest == "/") return std::string(group);
  std::vector<std::string_view> parts;
  while (!rest.empty()) {
    if (rest.front() == '/') rest.remove_prefix(1);
    const auto slash = rest.find('/');
    parts.push_back(rest.substr(0, slash));
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash);
  }
  if (parts.empty() || (parts[0] != "v1beta1" && parts[0] != "v1")) return "other";
  std::string out = std::string(group) + "/" + std::string(parts[0]);
  if (parts.size() == 1) return out;
  if (parts.size() == 2 && (parts[1] == "nodes" || parts[1] == "pods"))
    return out + "/" + std::string(parts[1]);
  if (parts.size() == 3 && parts[1] == "nodes") return out + "/nodes/{name}";
  if (parts.size() == 4 && parts[1] == "namespaces" && parts[3] == "pods")
    return out + "/namespaces/{namespace}/pods";
  if (parts.size() == 5 && parts[1] == "namespaces" && parts[3] == "pods") {
    return out + "/namespaces/{namespace}/pods/{name}";
  }
  return "other";
}

api::Response AgentRoutes::operator()(const api::Request& req) const {
  const std::string_view target = req.target();
  const std::string_view path = path_of(target);
  const auto now = clock->steady();

  if (path == "/healthz") return health_response(req, "healthz", {{"ping", true, ""}});
  if (path == "/livez") {
    const int64_t last = health->last_pass_steady_ns.load();
    const int64_t since = last != 0 ? last : health->started_steady_ns.load();
    const bool ok = steady_ns(now) - since <= (3 * interval).count();
    return health_response(req, "livez",
                           {{"ping", true, ""},
                            {"sampler", ok,
                             last != 0 ? "no collection pass finished within three intervals"
                                       : "the first collection pass has not finished"}});
  }
  if (path == "/readyz") {
    const int64_t first = health->first_pass_steady_ns.load();
    const bool sampled = first != 0;
    const bool filled = sampled && steady_ns(now) - first >= window.count() - interval.count() / 2;
    std::vector<HealthCheck> checks{
        {"sampler", sampled, "no collection pass has finished yet"},
        {"window", filled, "the first window of samples is not filled yet"}};
    if (pod_watch) {
      const PodWatchState w = pod_watch();
      std::string note;
      if (!w.synced) {
        note = "no list of this node's pods yet (" + w.last_error +
               "): names from the runtime's state";
      } else if (!w.healthy) {
        note = "API server unreachable (" + w.last_error +
               "): last known pods kept, new containers named from the runtime's state";
      }
      checks.push_back({"kubernetes-pods", true, "", std::move(note)});
    }
    return health_response(req, "readyz", checks);
  }

  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    auto res = text_response(req, http::status::method_not_allowed, "method not allowed\n");
    res.set(http::field::allow, "GET, HEAD");
    return res;
  }
  const api::SnapshotPtr snap = snapshot();
  if (path == "/metrics/resource" || path == "/metrics/cadvisor") {
    std::string body;
    if (!snap) {
      api::Snapshot empty;
      empty.scrape_error = true;
      api::GoTextSerializer::render(body, api::resource_families(empty));
    } else if (path == "/metrics/resource") {
      body = *resource_text->get(snap, [](const api::Snapshot& s) {
        std::string out;
        out.reserve(640 * (s.pods.size() + 4));
        api::GoTextSerializer::render(out, api::resource_families(s));
        return out;
      });
    } else {
      body = *cadvisor_text->get(snap, [](const api::Snapshot& s) {
        std::string out;
        api::GoTextSerializer::render(out, api::cadvisor_families(s));
        return out;
      });
    }
    return text_response(req, http::status::ok, std::move(body), api::kExpositionContentType);
  }
  if (path == "/metrics") {
    return text_response(req, http::status::ok, metrics ? metrics->render() : std::string(),
                         api::kExpositionContentType);
  }
  if (!snap)
    return text_response(req, http::status::service_unavailable,
                         "no collection pass has finished yet\n");
  if (api::is_summary_path(target)) return api::handle_summary(req, *snap);
  if (path == api::kNodeViewPath) {
    const auto view = metrics_view->get(snap, api::make_metrics_view);
    auto body = node_view_text->get(
        snap, [&view](const api::Snapshot&) { return api::encode_node_view(*view); });
    return text_response(req, http::status::ok, *body, api::kNodeViewContentType);
  }
  if (api::is_metrics_api_path(target)) {
    const auto view = metrics_view->get(snap, api::make_metrics_view);
    return api::handle_metrics_api(req, *view, metrics_api, clock->wall());
  }
  return text_response(req, http::status::not_found, "404 page not found\n");
}

}  // namespace nodemeter::agent
