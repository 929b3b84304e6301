// Who is asking, and may they: Kubernetes authentication (bearer tokens checked by a
// TokenReview, kube-apiserver's front-proxy user in request headers behind a verified client
// certificate) and authorization (a SubjectAccessReview of the request's attributes), wrapped
// around a Handler the way the kubelet and aggregated API servers do it. The reviews themselves
// are functions supplied by the caller (agent/security.h posts them to the API server); this
// module builds and reads their JSON, caches and coalesces their answers, and writes the refusals.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "api/server.h"

namespace nodemeter::api {

// authentication.k8s.io/v1 UserInfo.
struct UserInfo {
  std::string name;
  std::string uid;
  std::vector<std::string> groups;
  std::map<std::string, std::vector<std::string>> extra;
  bool operator==(const UserInfo&) const = default;
};

// What a request asks to do, as authorization.k8s.io/v1 ResourceAttributes (resource_request) or
// NonResourceAttributes (path and verb).
struct Attributes {
  std::string verb;
  bool resource_request = false;
  std::string group;
  std::string version;
  std::string resource;
  std::string subresource;
  std::string namespace_name;
  std::string name;
  std::string path;  // the request's decoded path, for both kinds
  bool operator==(const Attributes&) const = default;
};

// A SubjectAccessReview's answer. Neither allowed nor denied is "no opinion": refused too.
struct Decision {
  bool allowed = false;
  bool denied = false;
  std::string reason;
  bool operator==(const Decision&) const = default;
};

// The kubelet's mapping (pkg/kubelet/server/auth.go): resource nodes, name the node, subresource
// stats for /stats and below, metrics for /metrics and below, log for /logs, spec for /spec,
// checkpoint for /checkpoint, proxy for anything else; verb from the method (POST create, GET get,
// PUT update, PATCH patch, DELETE delete). HEAD is get here (the kubelet leaves it empty, which no
// role allows, while this server answers HEAD exactly as GET).
Attributes kubelet_attributes(const Request& request, std::string_view node_name);

// k8s.io/apiserver's RequestInfoFactory for prefixes /api (groupless) and /apis: resource requests
// with list/watch for collections and namespaced paths, non-resource requests (lowercase method
// as the verb) for everything else, such as /apis, /apis/metrics.k8s.io, /version, /openapi/v2.
Attributes api_request_attributes(const Request& request);
// The Metrics API's requests (/apis/metrics.k8s.io/{v1beta1,v1}/nodes, .../namespaces/ns/pods/p,
// discovery) are API requests like any other.
inline Attributes metrics_api_attributes(const Request& request) {
  return api_request_attributes(request);
}

// The JSON bodies of the reviews, as the API server takes and answers them.
std::string token_review_request(std::string_view token, const std::vector<std::string>& audiences);
// The user when status.authenticated, nullopt when not (or, with audiences asked for, when the
// answer names none of them). status.error without authentication, or malformed JSON, is an error.
boost::system::result<std::optional<UserInfo>, std::string> parse_token_review_response(
    std::string_view body, const std::vector<std::string>& audiences = {});
std::string subject_access_review_request(const UserInfo& user, const Attributes& attributes);
// Malformed JSON or both allowed and denied is an error.
boost::system::result<Decision, std::string> parse_subject_access_review_response(
    std::string_view body);

using TokenResult = boost::system::result<std::optional<UserInfo>, std::string>;
using DecisionResult = boost::system::result<Decision, std::string>;
// Review a bearer token / the user's attributes; call back exactly once, from any thread.
using TokenAuthenticator =
    std::function<void(const std::string& token, std::function<void(TokenResult)> done)>;
using Authorizer = std::function<void(const UserInfo& user, const Attributes& attributes,
                                      std::function<void(DecisionResult)> done)>;
using AttributeMapper = std::function<Attributes(const Request&)>;

// kube-apiserver's front proxy: the user in headers, trusted only from a client certificate that
// verified against the request-header CA (the TLS context's client CA) and, when allowed_names is
// not empty, whose CN is one of them.
struct RequestHeaderOptions {
  std::vector<std::string> allowed_names;
  std::vector<std::string> username_headers{"X-Remote-User"};
  std::vector<std::string> group_headers{"X-Remote-Group"};
  std::vector<std::string> extra_prefixes{"X-Remote-Extra-"};
};
// As k8s.io/apiserver's requestheader authenticator: the first non-empty username header, every
// non-empty value of the group headers, and extra keys from the header names after the prefix,
// lower-cased and percent-decoded. nullopt when the peer is not trusted or no username is given.
std::optional<UserInfo> request_header_user(const Request& request, const Peer& peer,
                                            const RequestHeaderOptions& options);
// The bearer token of an `Authorization: Bearer …` header, as the API server reads it.
std::optional<std::string> bearer_token(const Request& request);

enum class GuardOutcome { allowed, unauthenticated, forbidden, error };
std::string_view to_string(GuardOutcome outcome);

// How refusals read: the kubelet's messages ("Forbidden (user=…, verb=…, resource=…,
// subresource=…)") or the API server's ("nodes.metrics.k8s.io is forbidden: User "…" cannot list
// resource "nodes" in API group "metrics.k8s.io" at the cluster scope"). Both as Status JSON.
enum class RefusalStyle { kubelet, apiserver };

struct GuardOptions {
  // Served without authentication, with anything below them ("/readyz/ping") and any query.
  std::set<std::string> open_paths{"/healthz", "/livez", "/readyz"};
  std::optional<RequestHeaderOptions> request_header;
  TokenAuthenticator authenticate_token;  // empty: bearer tokens are not accepted
  Authorizer authorize;                   // empty: every authenticated user is allowed
  AttributeMapper attributes = api_request_attributes;
  RefusalStyle style = RefusalStyle::apiserver;
  // Answers are kept this long (the kubelet's defaults; an aggregated API server keeps each 10 s).
  // Errors are never kept.
  std::chrono::milliseconds token_ttl{std::chrono::minutes(2)};  // authenticated or not
  std::chrono::milliseconds allowed_ttl{std::chrono::minutes(5)};
  std::chrono::milliseconds denied_ttl{std::chrono::seconds(30)};
  size_t cache_entries = 4096;  // per cache; the oldest answer goes first when full
  // Where `inner` runs after a review answered: dispatched there (the server's io_context, so that
  // inner runs on the server's thread as a Handler expects). Empty: on the review's thread.
  boost::asio::any_io_executor executor;
  // Once per guarded request, for self metrics and logs; detail is the review's error, if any.
  std::function<void(GuardOutcome, std::string_view detail)> observe;
  std::function<std::chrono::steady_clock::time_point()> now;  // empty: the steady clock
};

// Open paths go straight to inner. Otherwise: the request-header user, else the bearer token's
// TokenReview; neither → 401, an invalid token or a failed review → 401 (as the kubelet and the
// API server answer). Then the SubjectAccessReview: denied or no opinion → 403, a failed review
// → 500. Refusals are Status JSON. Concurrent identical reviews share one call.
AsyncHandler guard(GuardOptions options, Handler inner);

// The whole handler without authentication, for plain-HTTP bare hosts.
AsyncHandler unguarded(Handler inner);

}  // namespace nodemeter::api
