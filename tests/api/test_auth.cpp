// Authentication and authorization: the attribute mappings (the kubelet's and the API server's),
// the review JSON both ways, request-header users, and the guard's answers, caching and
// coalescing with fake reviews and a fake clock. The guard is called directly; its replies are
// captured.
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "api/auth.h"

namespace {

using namespace nodemeter::api;
namespace http = boost::beast::http;
using namespace std::chrono_literals;

Request make_request(std::string_view target, http::verb method = http::verb::get,
                     std::vector<std::pair<std::string, std::string>> headers = {}) {
  Request request{method, target, 11};
  request.set(http::field::host, "node:10250");
  for (auto& [name, value] : headers)
    request.insert(name, value);
  return request;
}

Peer front_proxy(bool verified, std::string common_name = "front-proxy-client") {
  Peer peer;
  peer.address = boost::asio::ip::make_address("10.0.0.1");
  peer.tls = true;
  peer.client_cert = ClientCertificate{std::move(common_name), {}, verified};
  return peer;
}

std::string attrs_text(const Attributes& a) {
  std::string out = a.verb + " ";
  if (!a.resource_request) return out + "path " + a.path;
  out += a.group + "/" + a.version + " " + a.resource;
  if (!a.subresource.empty()) out += "/" + a.subresource;
  if (!a.namespace_name.empty()) out += " ns=" + a.namespace_name;
  if (!a.name.empty()) out += " name=" + a.name;
  return out;
}

const char* const kUnauthorized =
    "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
    "\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n";

// A TokenReview and a SubjectAccessReview played by the test: answers immediately from a table,
// or holds the callbacks to answer later.
struct FakeReviews {
  std::map<std::string, TokenResult> tokens;        // token → answer
  std::map<std::string, DecisionResult> decisions;  // user name → answer
  bool hold = false;
  int token_calls = 0;
  int decision_calls = 0;
  std::vector<std::pair<UserInfo, Attributes>> asked;
  std::deque<std::function<void()>> held;

  TokenAuthenticator authenticator() {
    return [this](const std::string& token, std::function<void(TokenResult)> done) {
      ++token_calls;
      auto it = tokens.find(token);
      TokenResult answer = it != tokens.end() ? it->second : TokenResult(std::optional<UserInfo>());
      if (hold) return held.push_back([answer, done] { done(answer); });
      done(answer);
    };
  }
  Authorizer authorizer() {
    return [this](const UserInfo& user, const Attributes& attributes,
                  std::function<void(DecisionResult)> done) {
      ++decision_calls;
      asked.emplace_back(user, attributes);
      auto it = decisions.find(user.name);
      DecisionResult answer = it != decisions.end() ? it->second : DecisionResult(Decision{});
      if (hold) return held.push_back([answer, done] { done(answer); });
      done(answer);
    };
  }
  void release_all() {
    while (!held.empty()) {
      auto next = std::move(held.front());
      held.pop_front();
      next();
    }
  }
};

UserInfo user(std::string name, std::vector<std::string> groups = {}) {
  UserInfo u;
  u.name = std::move(name);
  u.groups = std::move(groups);
  return u;
}

// Calls the guard and collects what it answered (synchronously or later).
struct Caller {
  explicit Caller(AsyncHandler h) : handler(std::move(h)) {}
  AsyncHandler handler;
  std::vector<Response> answers;
  std::mutex mu;

  void call(const Request& request, const Peer& peer = {}) {
    handler(request, peer, [this](Response response) {
      std::lock_guard lock(mu);
      answers.push_back(std::move(response));
    });
  }
  // Calls and expects one answer at once.
  Response get(const Request& request, const Peer& peer = {}) {
    const size_t before = answers.size();
    call(request, peer);
    REQUIRE(answers.size() == before + 1);
    return answers.back();
  }
};

Response served(const Request& request) {
  Response response{http::status::ok, request.version()};
  response.body() = "served " + std::string(request.target());
  return response;
}

struct FakeClock {
  std::chrono::steady_clock::time_point now{std::chrono::seconds(1000)};
  std::function<std::chrono::steady_clock::time_point()> fn() {
    return [this] { return now; };
  }
};

}  // namespace

TEST_CASE("kubelet attributes: subresource by path, verb by method, the node by name", "[auth]") {
  struct Row {
    http::verb method;
    const char* target;
    const char* expected;
  };
  const Row rows[] = {
      {http::verb::get, "/metrics", "get /v1 nodes/metrics name=node-a"},
      {http::verb::get, "/metrics/resource", "get /v1 nodes/metrics name=node-a"},
      {http::verb::get, "/metrics/cadvisor?x=1", "get /v1 nodes/metrics name=node-a"},
      {http::verb::get, "/metricsx", "get /v1 nodes/proxy name=node-a"},
      {http::verb::get, "/stats", "get /v1 nodes/stats name=node-a"},
      {http::verb::get, "/stats/summary", "get /v1 nodes/stats name=node-a"},
      {http::verb::head, "/stats/summary", "get /v1 nodes/stats name=node-a"},
      {http::verb::get, "/logs/", "get /v1 nodes/log name=node-a"},
      {http::verb::get, "/logs/syslog", "get /v1 nodes/log name=node-a"},
      {http::verb::get, "/spec/", "get /v1 nodes/spec name=node-a"},
      {http::verb::post, "/checkpoint/ns/pod/c", "create /v1 nodes/checkpoint name=node-a"},
      {http::verb::get, "/pods", "get /v1 nodes/proxy name=node-a"},
      {http::verb::get, "/", "get /v1 nodes/proxy name=node-a"},
      {http::verb::get, "/apis/metrics.k8s.io/v1beta1/nodes", "get /v1 nodes/proxy name=node-a"},
      {http::verb::put, "/metrics", "update /v1 nodes/metrics name=node-a"},
      {http::verb::patch, "/metrics", "patch /v1 nodes/metrics name=node-a"},
      {http::verb::delete_, "/metrics", "delete /v1 nodes/metrics name=node-a"},
      {http::verb::options, "/metrics", " /v1 nodes/metrics name=node-a"},
  };
  for (const Row& row : rows) {
    INFO(row.target);
    CHECK(attrs_text(kubelet_attributes(make_request(row.target, row.method), "node-a")) ==
          row.expected);
  }
  Attributes a = kubelet_attributes(make_request("/metrics/resource?x=1"), "node-a");
  CHECK(a.path == "/metrics/resource");
  CHECK(a.group.empty());
  CHECK(a.namespace_name.empty());
}

TEST_CASE("API request attributes as the API server's RequestInfoFactory reads them", "[auth]") {
  struct Row {
    const char* target;
    const char* expected;
  };
  const Row rows[] = {
      {"/apis/metrics.k8s.io/v1beta1/nodes", "list metrics.k8s.io/v1beta1 nodes"},
      {"/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=a%3Db",
       "list metrics.k8s.io/v1beta1 nodes"},
      {"/apis/metrics.k8s.io/v1beta1/nodes/node-a", "get metrics.k8s.io/v1beta1 nodes name=node-a"},
      {"/apis/metrics.k8s.io/v1/nodes/node-a", "get metrics.k8s.io/v1 nodes name=node-a"},
      {"/apis/metrics.k8s.io/v1beta1/pods", "list metrics.k8s.io/v1beta1 pods"},
      {"/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods",
       "list metrics.k8s.io/v1beta1 pods ns=kube-system"},
      {"/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods/coredns-1",
       "get metrics.k8s.io/v1beta1 pods ns=kube-system name=coredns-1"},
      {"/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb",
       "list metrics.k8s.io/v1beta1 pods ns=default name=web"},
      {"/apis/metrics.k8s.io/v1beta1/nodes?fieldSelector=metadata.name==n1,x=y",
       "list metrics.k8s.io/v1beta1 nodes name=n1"},
      {"/apis/metrics.k8s.io/v1beta1/nodes?fieldSelector=metadata.name%3D..",
       "list metrics.k8s.io/v1beta1 nodes"},
      {"/apis/metrics.k8s.io/v1beta1/nodes?watch=true", "watch metrics.k8s.io/v1beta1 nodes"},
      {"/apis/metrics.k8s.io/v1beta1/nodes?watch=false", "list metrics.k8s.io/v1beta1 nodes"},
      {"/apis/metrics.k8s.io/v1beta1/watch/nodes", "watch metrics.k8s.io/v1beta1 nodes"},
      {"/apis/metrics.k8s.io/v1beta1/namespaces/ns1",
       "get metrics.k8s.io/v1beta1 namespaces ns=ns1 name=ns1"},
      {"/apis/metrics.k8s.io/v1beta1/namespaces/ns1/status",
       "get metrics.k8s.io/v1beta1 namespaces/status ns=ns1 name=ns1"},
      {"/api/v1/nodes/n1/proxy/metrics", "get /v1 nodes/proxy name=n1"},
      {"/api/v1/namespaces/default/pods/web/log", "get /v1 pods/log ns=default name=web"},
      {"/apis", "get path /apis"},
      {"/apis/metrics.k8s.io", "get path /apis/metrics.k8s.io"},
      {"/apis/metrics.k8s.io/v1beta1", "get path /apis/metrics.k8s.io/v1beta1"},
      {"/apis/metrics.k8s.io/v1beta1/", "get path /apis/metrics.k8s.io/v1beta1/"},
      {"/api", "get path /api"},
      {"/api/v1", "get path /api/v1"},
      {"/version", "get path /version"},
      {"/openapi/v2", "get path /openapi/v2"},
      {"/openapi/v3/apis/metrics.k8s.io/v1beta1",
       "get path /openapi/v3/apis/metrics.k8s.io/v1beta1"},
      {"/metrics", "get path /metrics"},
  };
  for (const Row& row : rows) {
    INFO(row.target);
    CHECK(attrs_text(metrics_api_attributes(make_request(row.target))) == row.expected);
  }
  CHECK(attrs_text(api_request_attributes(make_request("/apis", http::verb::head))) ==
        "head path /apis");
  CHECK(attrs_text(api_request_attributes(
            make_request("/apis/metrics.k8s.io/v1beta1/nodes", http::verb::delete_))) ==
        "deletecollection metrics.k8s.io/v1beta1 nodes");
  CHECK(attrs_text(api_request_attributes(
            make_request("/apis/metrics.k8s.io/v1beta1/nodes/n1", http::verb::post))) ==
        "create metrics.k8s.io/v1beta1 nodes name=n1");
  // The path is percent-decoded, as Go's URL.Path.
  CHECK(metrics_api_attributes(make_request("/apis/metrics.k8s.io/v1beta1/nodes/a%2Db")).name ==
        "a-b");
}

TEST_CASE("TokenReview JSON both ways", "[auth]") {
  CHECK(token_review_request("abc.def", {}) ==
        "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\","
        "\"spec\":{\"token\":\"abc.def\"}}\n");
  CHECK(token_review_request("t", {"https://kubernetes.default.svc", "api"}) ==
        "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\","
        "\"spec\":{\"token\":\"t\",\"audiences\":[\"https://kubernetes.default.svc\",\"api\"]}}\n");

  // As the API server answers (201 Created, the spec echoed).
  const std::string authenticated = R"({
    "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
    "metadata": {"creationTimestamp": null},
    "spec": {"token": "abc.def"},
    "status": {
      "authenticated": true,
      "user": {
        "username": "system:serviceaccount:monitoring:prometheus",
        "uid": "5d2f1b0e-0000-4000-8000-000000000001",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:monitoring", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/pod-name": ["prometheus-0"],
                  "authentication.kubernetes.io/pod-uid": ["0e1c"]}
      },
      "audiences": ["https://kubernetes.default.svc.cluster.local"]
    }
  })";
  auto parsed = parse_token_review_response(authenticated);
  REQUIRE(parsed.has_value());
  REQUIRE(*parsed);
  const UserInfo& u = **parsed;
  CHECK(u.name == "system:serviceaccount:monitoring:prometheus");
  CHECK(u.uid == "5d2f1b0e-0000-4000-8000-000000000001");
  CHECK(u.groups == std::vector<std::string>{"system:serviceaccounts",
                                             "system:serviceaccounts:monitoring",
                                             "system:authenticated"});
  CHECK(u.extra.at("authentication.kubernetes.io/pod-name") ==
        std::vector<std::string>{"prometheus-0"});
  CHECK(u.extra.size() == 2);
  // Audiences asked for must be among those answered.
  CHECK(*parse_token_review_response(authenticated,
                                     {"https://kubernetes.default.svc.cluster.local"}));
  CHECK_FALSE(*parse_token_review_response(authenticated, {"other"}));

  auto rejected = parse_token_review_response(R"({"kind":"TokenReview","status":{"user":{}}})");
  REQUIRE(rejected.has_value());
  CHECK_FALSE(*rejected);
  auto failed = parse_token_review_response(
      R"({"status":{"authenticated":false,"error":"[invalid bearer token, token lookup failed]"}})");
  REQUIRE(failed.has_error());
  CHECK(failed.error() == "TokenReview: [invalid bearer token, token lookup failed]");
  CHECK(parse_token_review_response("<html>").error() ==
        "the TokenReview answer is not a JSON object");
  CHECK(parse_token_review_response("[1]").has_error());
}

TEST_CASE("SubjectAccessReview JSON both ways", "[auth]") {
  UserInfo u = user("system:serviceaccount:monitoring:prometheus",
                    {"system:serviceaccounts", "system:authenticated"});
  u.uid = "uid-1";
  u.extra["scopes"] = {"a", "b"};
  CHECK(subject_access_review_request(
            u, kubelet_attributes(make_request("/metrics/resource"), "node-a")) ==
        "{\"apiVersion\":\"authorization.k8s.io/v1\",\"kind\":\"SubjectAccessReview\","
        "\"spec\":{\"resourceAttributes\":{\"verb\":\"get\",\"version\":\"v1\","
        "\"resource\":\"nodes\",\"subresource\":\"metrics\",\"name\":\"node-a\"},"
        "\"user\":\"system:serviceaccount:monitoring:prometheus\","
        "\"groups\":[\"system:serviceaccounts\",\"system:authenticated\"],"
        "\"extra\":{\"scopes\":[\"a\",\"b\"]},\"uid\":\"uid-1\"}}\n");
  CHECK(subject_access_review_request(
            user("alice"), metrics_api_attributes(
                               make_request("/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods"))) ==
        "{\"apiVersion\":\"authorization.k8s.io/v1\",\"kind\":\"SubjectAccessReview\","
        "\"spec\":{\"resourceAttributes\":{\"namespace\":\"ns\",\"verb\":\"list\","
        "\"group\":\"metrics.k8s.io\",\"version\":\"v1beta1\",\"resource\":\"pods\"},"
        "\"user\":\"alice\"}}\n");
  CHECK(
      subject_access_review_request(user("alice"), metrics_api_attributes(make_request("/apis"))) ==
      "{\"apiVersion\":\"authorization.k8s.io/v1\",\"kind\":\"SubjectAccessReview\","
      "\"spec\":{\"nonResourceAttributes\":{\"path\":\"/apis\",\"verb\":\"get\"},"
      "\"user\":\"alice\"}}\n");

  CHECK(
      *parse_subject_access_review_response(
          R"({"kind":"SubjectAccessReview","status":{"allowed":true,"reason":"RBAC: allowed by ClusterRoleBinding \"x\""}})") ==
      Decision{true, false, "RBAC: allowed by ClusterRoleBinding \"x\""});
  CHECK(*parse_subject_access_review_response(R"({"status":{"allowed":false}})") == Decision{});
  CHECK(*parse_subject_access_review_response(
            R"({"status":{"allowed":false,"denied":true,"reason":"no"}})") ==
        Decision{false, true, "no"});
  CHECK(*parse_subject_access_review_response(R"({"spec":{}})") == Decision{});
  CHECK(parse_subject_access_review_response(R"({"status":{"allowed":true,"denied":true}})")
            .error() == "the SubjectAccessReview answered both allowed and denied");
  CHECK(parse_subject_access_review_response("").error() ==
        "the SubjectAccessReview answer is not a JSON object");
}

TEST_CASE("request-header users only behind a verified, allowed client certificate", "[auth]") {
  RequestHeaderOptions options;
  options.allowed_names = {"front-proxy-client", "aggregator"};
  Request request = make_request("/apis", http::verb::get,
                                 {{"X-Remote-User", "alice"},
                                  {"X-Remote-Group", "system:masters"},
                                  {"x-remote-group", "dev"},
                                  {"X-Remote-Group", ""},
                                  {"X-Remote-Extra-Scopes", "view"},
                                  {"X-Remote-Extra-Scopes", "edit"},
                                  {"X-Remote-Extra-Acme.com%2Fproject", "p1"},
                                  {"X-Remote-Extra-Bad%zzKey", "v"}});
  auto alice = request_header_user(request, front_proxy(true), options);
  REQUIRE(alice);
  CHECK(alice->name == "alice");
  CHECK(alice->groups == std::vector<std::string>{"system:masters", "dev"});
  CHECK(alice->extra ==
        std::map<std::string, std::vector<std::string>>{
            {"scopes", {"view", "edit"}}, {"acme.com/project", {"p1"}}, {"bad%zzkey", {"v"}}});
  CHECK_FALSE(request_header_user(request, front_proxy(false), options));
  CHECK_FALSE(request_header_user(request, front_proxy(true, "someone-else"), options));
  CHECK_FALSE(request_header_user(request, Peer{}, options));
  options.allowed_names.clear();
  CHECK(request_header_user(request, front_proxy(true, "someone-else"), options));

  // The first non-empty user header wins; configured names and prefixes replace the defaults.
  RequestHeaderOptions custom;
  custom.username_headers = {"X-User", "X-Remote-User"};
  custom.group_headers = {"X-Groups"};
  custom.extra_prefixes = {"X-Extra-", "X-More-"};
  Request other = make_request("/", http::verb::get,
                               {{"X-User", ""},
                                {"X-Remote-User", "bob"},
                                {"X-Remote-Group", "ignored"},
                                {"X-Groups", "g"},
                                {"x-extra-a", "1"},
                                {"X-MORE-A", "2"}});
  auto bob = request_header_user(other, front_proxy(true), custom);
  REQUIRE(bob);
  CHECK(bob->name == "bob");
  CHECK(bob->groups == std::vector<std::string>{"g"});
  CHECK(bob->extra.at("a") == std::vector<std::string>{"1", "2"});
  CHECK_FALSE(request_header_user(make_request("/"), front_proxy(true), custom));
}

TEST_CASE("bearer tokens as the API server reads the Authorization header", "[auth]") {
  auto token = [](std::string value) {
    return bearer_token(make_request("/", http::verb::get, {{"Authorization", value}}));
  };
  CHECK(token("Bearer abc") == "abc");
  CHECK(token("bearer abc") == "abc");
  CHECK(token("  Bearer abc  ") == "abc");
  CHECK(token("Bearer abc def") == "abc");
  CHECK(token("Bearer ") == std::nullopt);
  CHECK(token("Basic dXNlcjpwYXNz") == std::nullopt);
  CHECK(token("Bearer") == std::nullopt);
  CHECK(bearer_token(make_request("/")) == std::nullopt);
}

TEST_CASE("the guard: open paths, 401 without credentials, 200 or 403 by review", "[auth]") {
  FakeReviews reviews;
  reviews.tokens["good"] = std::optional<UserInfo>(user("system:serviceaccount:m:prom"));
  reviews.tokens["alice-token"] = std::optional<UserInfo>(user("alice"));
  reviews.decisions["system:serviceaccount:m:prom"] = Decision{true, false, ""};
  std::vector<std::string> outcomes;
  GuardOptions options;
  options.authenticate_token = reviews.authenticator();
  options.authorize = reviews.authorizer();
  options.attributes = [](const Request& r) { return kubelet_attributes(r, "node-a"); };
  options.style = RefusalStyle::kubelet;
  options.observe = [&](GuardOutcome o, std::string_view) { outcomes.emplace_back(to_string(o)); };
  Caller caller{guard(options, served)};

  for (const char* open : {"/healthz", "/livez", "/readyz", "/readyz?verbose", "/healthz/ping"}) {
    INFO(open);
    CHECK(caller.get(make_request(open)).body() == std::string("served ") + open);
  }
  CHECK(outcomes.empty());

  for (const char* closed : {"/metrics/resource", "/healthzx", "/", "/stats/summary"}) {
    INFO(closed);
    Response refused = caller.get(make_request(closed));
    CHECK(refused.result_int() == 401);
    CHECK(refused.body() == kUnauthorized);
    CHECK(refused[http::field::content_type] == "application/json");
  }
  CHECK(caller.get(make_request("/metrics", http::verb::get, {{"Authorization", "Basic x"}}))
            .result_int() == 401);

  Response ok = caller.get(
      make_request("/metrics/resource", http::verb::get, {{"Authorization", "Bearer good"}}));
  CHECK(ok.result_int() == 200);
  CHECK(ok.body() == "served /metrics/resource");
  REQUIRE(reviews.asked.size() == 1);
  CHECK(attrs_text(reviews.asked[0].second) == "get /v1 nodes/metrics name=node-a");

  Response invalid =
      caller.get(make_request("/metrics", http::verb::get, {{"Authorization", "Bearer bad"}}));
  CHECK(invalid.result_int() == 401);
  CHECK(invalid.body() == kUnauthorized);

  Response denied = caller.get(
      make_request("/stats/summary", http::verb::get, {{"Authorization", "Bearer alice-token"}}));
  CHECK(denied.result_int() == 403);
  CHECK(denied.body() ==
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
        "\"message\":\"Forbidden (user=alice, verb=get, resource=nodes, subresource=stats)\","
        "\"reason\":\"Forbidden\",\"code\":403}\n");
  CHECK(outcomes == std::vector<std::string>{
                        "unauthenticated", "unauthenticated", "unauthenticated", "unauthenticated",
                        "unauthenticated", "allowed", "unauthenticated", "forbidden"});
}

TEST_CASE("the guard's refusals in the API server's words", "[auth]") {
  FakeReviews reviews;
  reviews.tokens["t"] = std::optional<UserInfo>(user("alice"));
  reviews.decisions["alice"] = Decision{false, false, ""};
  GuardOptions options;
  options.authenticate_token = reviews.authenticator();
  options.authorize = reviews.authorizer();
  Caller caller{guard(options, served)};
  auto as_alice = [&](std::string target) {
    return caller.get(make_request(target, http::verb::get, {{"Authorization", "Bearer t"}}));
  };
  const std::string head =
      "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",";
  CHECK(as_alice("/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods/coredns").body() ==
        head +
            "\"message\":\"pods.metrics.k8s.io \\\"coredns\\\" is forbidden: User \\\"alice\\\" "
            "cannot get resource \\\"pods\\\" in API group \\\"metrics.k8s.io\\\" in the "
            "namespace \\\"kube-system\\\"\",\"reason\":\"Forbidden\",\"details\":{\"name\":"
            "\"coredns\",\"group\":\"metrics.k8s.io\",\"kind\":\"pods\"},\"code\":403}\n");
  CHECK(as_alice("/apis").body() ==
        head +
            "\"message\":\"forbidden: User \\\"alice\\\" cannot get path \\\"/apis\\\"\","
            "\"reason\":\"Forbidden\",\"details\":{},\"code\":403}\n");
  reviews.decisions["alice"] = Decision{false, true, "denied by <policy> & rule"};
  CHECK(as_alice("/apis/metrics.k8s.io/v1/nodes").body() ==
        head +
            "\"message\":\"nodes.metrics.k8s.io is forbidden: User \\\"alice\\\" cannot list "
            "resource \\\"nodes\\\" in API group \\\"metrics.k8s.io\\\" at the cluster scope: "
            "denied by \\u003cpolicy\\u003e \\u0026 rule\",\"reason\":\"Forbidden\","
            "\"details\":{\"group\":\"metrics.k8s.io\",\"kind\":\"nodes\"},\"code\":403}\n");
}

TEST_CASE("the guard keeps answers for their TTLs, never errors", "[auth]") {
  FakeReviews reviews;
  reviews.tokens["good"] = std::optional<UserInfo>(user("prom"));
  reviews.tokens["mallory"] = std::optional<UserInfo>(user("mallory"));
  reviews.decisions["prom"] = Decision{true, false, ""};
  FakeClock clock;
  GuardOptions options;
  options.authenticate_token = reviews.authenticator();
  options.authorize = reviews.authorizer();
  options.token_ttl = 120s;
  options.allowed_ttl = 300s;
  options.denied_ttl = 30s;
  options.now = clock.fn();
  Caller caller{guard(options, served)};
  auto get = [&](const char* token, const char* target = "/apis/metrics.k8s.io/v1beta1/nodes") {
    return caller
        .get(make_request(target, http::verb::get,
                          {{"Authorization", std::string("Bearer ") + token}}))
        .result_int();
  };

  for (int i = 0; i < 3; ++i)
    CHECK(get("good") == 200);
  CHECK(reviews.token_calls == 1);
  CHECK(reviews.decision_calls == 1);
  // Other attributes are another review; the token's answer is shared.
  CHECK(get("good", "/apis/metrics.k8s.io/v1beta1/pods") == 200);
  CHECK(reviews.token_calls == 1);
  CHECK(reviews.decision_calls == 2);

  clock.now += 119s;
  CHECK(get("good") == 200);
  CHECK(reviews.token_calls == 1);
  clock.now += 2s;  // 121 s: the token is reviewed again, the decision (300 s) still kept
  CHECK(get("good") == 200);
  CHECK(reviews.token_calls == 2);
  CHECK(reviews.decision_calls == 2);
  clock.now += 300s;
  CHECK(get("good") == 200);
  CHECK(reviews.decision_calls == 3);

  // Refusals are kept for the shorter TTL; an unknown token's "no" for the token TTL.
  CHECK(get("mallory") == 403);
  CHECK(get("mallory") == 403);
  CHECK(reviews.decision_calls == 4);
  clock.now += 31s;
  CHECK(get("mallory") == 403);
  CHECK(reviews.decision_calls == 5);
  CHECK(get("unknown") == 401);
  CHECK(get("unknown") == 401);
  const int calls = reviews.token_calls;
  clock.now += 121s;
  CHECK(get("unknown") == 401);
  CHECK(reviews.token_calls == calls + 1);

  // A failed review answers 401 / 500 and is asked again next time.
  reviews.tokens["flaky"] =
      TokenResult(boost::system::in_place_error, "TokenReview: connection refused");
  CHECK(get("flaky") == 401);
  CHECK(get("flaky") == 401);
  CHECK(reviews.token_calls == calls + 3);
  reviews.tokens["broken-authz"] = std::optional<UserInfo>(user("eve"));
  reviews.decisions["eve"] =
      DecisionResult(boost::system::in_place_error, "SubjectAccessReview: timeout");
  const int decisions = reviews.decision_calls;
  CHECK(get("broken-authz") == 500);
  CHECK(get("broken-authz") == 500);
  CHECK(reviews.decision_calls == decisions + 2);
}

TEST_CASE("the guard's review failures: 401 for authentication, 500 for authorization", "[auth]") {
  FakeReviews reviews;
  reviews.tokens["t"] = std::optional<UserInfo>(user("prom"));
  reviews.tokens["down"] = TokenResult(boost::system::in_place_error, "TokenReview: refused");
  reviews.decisions["prom"] = DecisionResult(boost::system::in_place_error,
                                             "SubjectAccessReview: the API server answered 500");
  std::vector<std::pair<std::string, std::string>> seen;
  for (RefusalStyle style : {RefusalStyle::kubelet, RefusalStyle::apiserver}) {
    GuardOptions options;
    options.authenticate_token = reviews.authenticator();
    options.authorize = reviews.authorizer();
    options.style = style;
    options.attributes = [](const Request& r) { return kubelet_attributes(r, "node-a"); };
    options.observe = [&](GuardOutcome o, std::string_view detail) {
      seen.emplace_back(to_string(o), detail);
    };
    Caller caller{guard(options, served)};
    Response down =
        caller.get(make_request("/metrics", http::verb::get, {{"Authorization", "Bearer down"}}));
    CHECK(down.result_int() == 401);
    CHECK(down.body() == kUnauthorized);
    Response error =
        caller.get(make_request("/metrics?x=1", http::verb::get, {{"Authorization", "Bearer t"}}));
    CHECK(error.result_int() == 500);
    const std::string message =
        style == RefusalStyle::kubelet
            ? "Authorization error (user=prom, verb=get, resource=nodes, subresource=metrics)"
            : "Internal Server Error: \\\"/metrics?x=1\\\": SubjectAccessReview: the API server "
              "answered 500";
    CHECK(error.body() ==
          "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
          "\"message\":\"" +
              message + "\",\"reason\":\"InternalError\",\"code\":500}\n");
  }
  CHECK(seen == std::vector<std::pair<std::string, std::string>>{
                    {"error", "TokenReview: refused"},
                    {"error", "SubjectAccessReview: the API server answered 500"},
                    {"error", "TokenReview: refused"},
                    {"error", "SubjectAccessReview: the API server answered 500"}});
}

TEST_CASE("the guard coalesces identical reviews in flight", "[auth]") {
  FakeReviews reviews;
  reviews.hold = true;
  reviews.tokens["t"] = std::optional<UserInfo>(user("prom"));
  reviews.decisions["prom"] = Decision{true, false, ""};
  GuardOptions options;
  options.authenticate_token = reviews.authenticator();
  options.authorize = reviews.authorizer();
  Caller caller{guard(options, served)};
  const Request request = make_request("/apis/metrics.k8s.io/v1beta1/nodes", http::verb::get,
                                       {{"Authorization", "Bearer t"}});
  for (int i = 0; i < 5; ++i)
    caller.call(request);
  CHECK(caller.answers.empty());
  CHECK(reviews.token_calls == 1);
  REQUIRE(reviews.held.size() == 1);
  auto token_answer = std::move(reviews.held.front());
  reviews.held.pop_front();
  token_answer();  // five requests now wait on one SubjectAccessReview
  CHECK(reviews.decision_calls == 1);
  CHECK(caller.answers.empty());
  reviews.release_all();
  REQUIRE(caller.answers.size() == 5);
  for (const Response& r : caller.answers)
    CHECK(r.body() == "served /apis/metrics.k8s.io/v1beta1/nodes");
}

TEST_CASE("the guard bounds its caches", "[auth]") {
  FakeReviews reviews;
  for (int i = 0; i < 4; ++i)
    reviews.tokens["t" + std::to_string(i)] = std::optional<UserInfo>(user("u"));
  GuardOptions options;
  options.authenticate_token = reviews.authenticator();
  options.cache_entries = 2;
  Caller caller{guard(options, served)};
  auto get = [&](int i) {
    return caller
        .get(make_request("/x", http::verb::get,
                          {{"Authorization", "Bearer t" + std::to_string(i)}}))
        .result_int();
  };
  CHECK(get(0) == 200);
  CHECK(get(1) == 200);
  CHECK(get(0) == 200);
  CHECK(reviews.token_calls == 2);
  CHECK(get(2) == 200);  // the oldest answer (t0) makes room
  CHECK(get(1) == 200);
  CHECK(reviews.token_calls == 3);
  CHECK(get(0) == 200);
  CHECK(reviews.token_calls == 4);
}

TEST_CASE("the guard with request-header users and without an authorizer", "[auth]") {
  FakeReviews reviews;
  reviews.tokens["t"] = std::optional<UserInfo>(user("token-user"));
  reviews.decisions["alice"] = Decision{true, false, ""};
  reviews.decisions["token-user"] = Decision{true, false, ""};
  GuardOptions options;
  options.request_header = RequestHeaderOptions{};
  options.request_header->allowed_names = {"front-proxy-client"};
  options.authenticate_token = reviews.authenticator();
  options.authorize = reviews.authorizer();
  Caller caller{guard(options, served)};
  const Request request = make_request("/apis/metrics.k8s.io/v1beta1/nodes", http::verb::get,
                                       {{"X-Remote-User", "alice"},
                                        {"X-Remote-Group", "system:authenticated"},
                                        {"X-Remote-Extra-Scopes", "s"},
                                        {"Authorization", "Bearer t"}});
  CHECK(caller.get(request, front_proxy(true)).result_int() == 200);
  REQUIRE(reviews.asked.size() == 1);
  UserInfo expected = user("alice", {"system:authenticated"});
  expected.extra["scopes"] = {"s"};
  CHECK(reviews.asked[0].first == expected);
  CHECK(reviews.token_calls == 0);  // the front proxy's user wins over the token
  // Without a trusted certificate the headers are ignored and the token counts.
  CHECK(caller.get(request, front_proxy(false)).result_int() == 200);
  CHECK(reviews.asked.back().first.name == "token-user");
  const Request headers_only = make_request("/apis/metrics.k8s.io/v1beta1/nodes", http::verb::get,
                                            {{"X-Remote-User", "alice"}});
  CHECK(caller.get(headers_only, front_proxy(false)).result_int() == 401);
  CHECK(caller.get(headers_only, front_proxy(true, "intruder")).result_int() == 401);

  // No authorizer: every authenticated user is served.
  GuardOptions open;
  open.request_header = RequestHeaderOptions{};
  Caller open_caller{guard(open, served)};
  CHECK(open_caller.get(headers_only, front_proxy(true, "anyone")).result_int() == 200);
  CHECK(open_caller.get(make_request("/x", http::verb::get, {{"Authorization", "Bearer t"}}))
            .result_int() == 401);  // tokens are not accepted without an authenticator
}

TEST_CASE("after a review the guard runs the handler on the server's executor", "[auth]") {
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::thread io_thread([&] { io.run(); });
  std::thread::id handler_thread;
  std::promise<Response> answered;
  GuardOptions options;
  options.executor = io.get_executor();
  std::thread reviewer;
  options.authenticate_token = [&](const std::string&, std::function<void(TokenResult)> done) {
    reviewer = std::thread([done] { done(std::optional<UserInfo>(user("u"))); });
  };
  AsyncHandler handler = guard(options, [&](const Request& r) {
    handler_thread = std::this_thread::get_id();
    return served(r);
  });
  const Request request = make_request("/x", http::verb::get, {{"Authorization", "Bearer t"}});
  handler(request, Peer{}, [&](Response r) { answered.set_value(std::move(r)); });
  auto future = answered.get_future();
  REQUIRE(future.wait_for(5s) == std::future_status::ready);
  CHECK(future.get().body() == "served /x");
  CHECK(handler_thread == io_thread.get_id());
  reviewer.join();
  work.reset();
  io_thread.join();
}

TEST_CASE("a throwing handler behind the guard answers 500; unguarded serves everyone", "[auth]") {
  GuardOptions options;
  options.open_paths = {"/boom"};
  Caller caller{guard(options, [](const Request&) -> Response { throw std::runtime_error("x"); })};
  CHECK(caller.get(make_request("/boom")).result_int() == 500);
  Caller everyone{unguarded(served)};
  CHECK(everyone.get(make_request("/metrics")).body() == "served /metrics");
}
