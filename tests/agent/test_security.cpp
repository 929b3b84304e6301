// The security flags of both commands, their validation, the reviews posted through a fake API
// client, the request-header ConfigMap, and make_security's TLS and guard end to end.
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "agent/security.h"
#include "api/tls.h"
#include "tests/api/tls_test_certs.h"

namespace {

using namespace nodemeter;
using namespace nodemeter::agent;
namespace http = boost::beast::http;
using namespace std::chrono_literals;

// Answers requests from a function, at once, and remembers them.
class FakeApiClient : public kube::ApiClient {
 public:
  std::function<kube::HttpResult(const kube::HttpRequest&)> answer;
  std::vector<kube::HttpRequest> requests;

  void request(kube::HttpRequest request, std::function<void(kube::HttpResult)> done) override {
    requests.push_back(request);
    done(answer(requests.back()));
  }
  std::shared_ptr<kube::StreamHandle> stream(kube::HttpRequest, kube::StreamCallbacks) override {
    return nullptr;
  }
  void shutdown() override {}
  const kube::KubeConfig& config() const override { return config_; }
  std::string bearer_token() override { return config_.token; }

 private:
  kube::KubeConfig config_;
};

kube::HttpResult answer(unsigned status, std::string body) {
  kube::HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

api::Request make_request(std::string_view target,
                          std::vector<std::pair<std::string, std::string>> headers = {}) {
  api::Request request{http::verb::get, target, 11};
  request.set(http::field::host, "node");
  for (auto& [name, value] : headers)
    request.insert(name, value);
  return request;
}

api::Response served(const api::Request& request) {
  api::Response response{http::status::ok, 11};
  response.body() = "served " + std::string(request.target());
  return response;
}

// Runs the wrapped handler and returns its (synchronous, with the fake API) answer.
api::Response call(const api::AsyncHandler& handler, const api::Request& request,
                   const api::Peer& peer = {}) {
  std::optional<api::Response> out;
  handler(request, peer, [&](api::Response r) { out = std::move(r); });
  REQUIRE(out);
  return *out;
}

boost::system::result<void, std::string> parse(FlagSet& flags, std::vector<std::string> args) {
  return flags.parse(args);
}

struct TempDir {
  TempDir() {
    char pattern[] = "/tmp/nodemeter-security-XXXXXX";
    path = ::mkdtemp(pattern);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::string file = (path / name).string();
    std::ofstream(file) << text;
    return file;
  }
  std::filesystem::path path;
};

const char* const kReviewedToken = R"({"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1",
  "status":{"authenticated":true,"user":{"username":"system:serviceaccount:monitoring:prometheus",
  "groups":["system:serviceaccounts","system:authenticated"]}}})";

}  // namespace

TEST_CASE("the agent's security flags", "[security]") {
  SecurityOptions o;
  FlagSet flags("agent");
  add_agent_security_flags(flags, o);
  CHECK(o.role == SecurityRole::agent);
  CHECK(o.tls_min_version == "1.2");
  CHECK(o.token_cache_ttl == 2min);
  CHECK(o.authorized_cache_ttl == 5min);
  CHECK(o.unauthorized_cache_ttl == 30s);
  REQUIRE(parse(flags, {"--tls-cert-file=/c.pem", "--tls-private-key-file", "/k.pem",
                        "--tls-min-version=VersionTLS13", "--authorization=always-allow",
                        "--authentication-token-webhook", "--insecure-http",
                        "--authentication-token-webhook-cache-ttl=10s",
                        "--authorization-webhook-cache-authorized-ttl=1m",
                        "--authorization-webhook-cache-unauthorized-ttl=5s"}));
  CHECK(o.tls_cert_file == "/c.pem");
  CHECK(o.tls_private_key_file == "/k.pem");
  CHECK(o.tls_min_version == "1.3");
  CHECK(o.authorization == AuthorizationMode::always_allow);
  CHECK(o.authentication_token_webhook);
  CHECK(o.insecure_http);
  CHECK(o.token_cache_ttl == 10s);
  CHECK(o.authorized_cache_ttl == 1min);
  CHECK(o.unauthorized_cache_ttl == 5s);
  REQUIRE(parse(flags, {"--tls-self-signed", "--authorization", "webhook"}));
  CHECK(o.tls_self_signed);
  CHECK(o.authorization == AuthorizationMode::webhook);

  CHECK(parse(flags, {"--tls-min-version=1.1"}).error() ==
        "nodemeter agent: --tls-min-version: TLS version \"1.1\" is not one of 1.2, 1.3 (or "
        "VersionTLS12, VersionTLS13)");
  CHECK(parse(flags, {"--authorization=rbac"}).error() ==
        "nodemeter agent: --authorization: \"rbac\" is not webhook or always-allow");
  CHECK(parse(flags, {"--requestheader-client-ca-file=/x"}).error() ==
        "nodemeter agent: unknown flag --requestheader-client-ca-file (see --help)");
  CHECK(flags.usage().find("--authorization webhook|always-allow") != std::string::npos);
}

TEST_CASE("the aggregator's security flags", "[security]") {
  SecurityOptions o;
  FlagSet flags("aggregator");
  add_aggregator_security_flags(flags, o);
  CHECK(o.role == SecurityRole::aggregator);
  CHECK(o.token_cache_ttl == 10s);
  CHECK(o.authorized_cache_ttl == 10s);
  CHECK(o.unauthorized_cache_ttl == 10s);
  REQUIRE(parse(flags, {"--requestheader-client-ca-file=/front-proxy-ca.crt",
                        "--requestheader-allowed-names=front-proxy-client, aggregator",
                        "--requestheader-allowed-names=third",
                        "--requestheader-username-headers=X-Remote-User",
                        "--requestheader-group-headers=X-Remote-Group",
                        "--requestheader-extra-headers-prefix=X-Remote-Extra-,X-Extra-"}));
  CHECK(o.requestheader_client_ca_file == "/front-proxy-ca.crt");
  CHECK(o.requestheader_allowed_names ==
        std::vector<std::string>{"front-proxy-client", "aggregator", "third"});
  CHECK(o.requestheader_username_headers == std::vector<std::string>{"X-Remote-User"});
  CHECK(o.requestheader_extra_headers_prefix ==
        std::vector<std::string>{"X-Remote-Extra-", "X-Extra-"});
  CHECK(parse(flags, {"--tls-self-signed"}).error() ==
        "nodemeter aggregator: unknown flag --tls-self-signed (see --help)");
  CHECK(parse(flags, {"--insecure-http"}).error() ==
        "nodemeter aggregator: unknown flag --insecure-http (see --help)");
}

TEST_CASE("validation: plain HTTP stays on loopback unless asked", "[security]") {
  auto validate = [](std::vector<std::string> listen, auto setup, bool have_api = false) {
    SecurityOptions o;
    FlagSet flags("agent");
    add_agent_security_flags(flags, o);
    setup(o);
    auto r = validate_security(o, listen, have_api);
    return std::pair{r ? std::string() : r.error(), o};
  };
  auto nothing = [](SecurityOptions&) {};
  CHECK(validate({"127.0.0.1:10261", "[::1]:10261", "127.3.4.5:1"}, nothing).first.empty());
  CHECK(validate({"127.0.0.1:10261"}, nothing).second.authorization ==
        AuthorizationMode::always_allow);
  CHECK(validate({"127.0.0.1:10261", "0.0.0.0:10261"}, nothing).first ==
        "nodemeter agent: --listen 0.0.0.0:10261 would serve plain HTTP beyond loopback: give "
        "--tls-cert-file and --tls-private-key-file, or --tls-self-signed, or --insecure-http if "
        "that is meant");
  CHECK(validate({":10261"}, nothing).first.starts_with("nodemeter agent: --listen :10261 would"));
  CHECK(validate({"10.1.2.3:10261"}, nothing)
            .first.starts_with("nodemeter agent: --listen 10.1.2.3:10261 would serve plain HTTP"));
  CHECK(validate({"[::ffff:127.0.0.1]:1"}, nothing).first.empty());
  CHECK(validate({"0.0.0.0:10261"}, [](SecurityOptions& o) {
          o.insecure_http = true;
        }).first.empty());
  CHECK(validate({"nonsense"}, nothing).first ==
        "nodemeter agent: --listen nonsense: expected host:port, [IPv6]:port or :port");

  // TLS anywhere; its default authorization is webhook, which needs the API.
  auto self_signed = [](SecurityOptions& o) { o.tls_self_signed = true; };
  CHECK(validate({"0.0.0.0:10250"}, self_signed).first ==
        "nodemeter agent: --authorization=webhook (the default with TLS) needs the Kubernetes API "
        "(in-cluster configuration or --kubeconfig); without one, give "
        "--authorization=always-allow");
  auto with_api = validate({"0.0.0.0:10250"}, self_signed, true);
  CHECK(with_api.first.empty());
  CHECK(with_api.second.authorization == AuthorizationMode::webhook);
  CHECK(validate({"0.0.0.0:10250"}, [](SecurityOptions& o) {
          o.tls_self_signed = true;
          o.authorization = AuthorizationMode::always_allow;
        }).first.empty());
  CHECK(validate({"127.0.0.1:1"},
                 [](SecurityOptions& o) { o.authorization = AuthorizationMode::webhook; })
            .first ==
        "nodemeter agent: --authorization=webhook needs the Kubernetes API (in-cluster "
        "configuration or --kubeconfig); without one, give --authorization=always-allow");
  CHECK(validate({"127.0.0.1:1"}, [](SecurityOptions& o) { o.authentication_token_webhook = true; })
            .first ==
        "nodemeter agent: --authentication-token-webhook needs the Kubernetes API (in-cluster "
        "configuration or --kubeconfig)");
  CHECK(validate({"127.0.0.1:1"}, [](SecurityOptions& o) { o.tls_cert_file = "/c"; }).first ==
        "nodemeter agent: --tls-cert-file needs --tls-private-key-file");
  CHECK(validate({"127.0.0.1:1"}, [](SecurityOptions& o) {
          o.tls_private_key_file = "/k";
        }).first == "nodemeter agent: --tls-private-key-file needs --tls-cert-file");
  CHECK(validate({"127.0.0.1:1"}, [](SecurityOptions& o) {
          o.tls_cert_file = "/c";
          o.tls_private_key_file = "/k";
          o.tls_self_signed = true;
        }).first == "nodemeter agent: --tls-self-signed and --tls-cert-file exclude each other");

  SecurityOptions aggregator;
  FlagSet flags("aggregator");
  add_aggregator_security_flags(flags, aggregator);
  CHECK(validate_security(aggregator, {"0.0.0.0:443"}, true));
  CHECK(aggregator.authorization == AuthorizationMode::webhook);
  aggregator.authorization = AuthorizationMode::always_allow;
  CHECK(validate_security(aggregator, {"0.0.0.0:443"}, false).error() ==
        "nodemeter aggregator: --requestheader-client-ca-file is needed without the Kubernetes "
        "API to read kube-system/extension-apiserver-authentication from");
  aggregator.requestheader_client_ca_file = "/ca.crt";
  CHECK(validate_security(aggregator, {"0.0.0.0:443"}, false));
}

TEST_CASE("bound endpoints follow the same plain-HTTP rule", "[security]") {
  using boost::asio::ip::make_address;
  using boost::asio::ip::tcp;
  SecurityOptions o;
  CHECK(check_plain_http_endpoints(
      o, {tcp::endpoint(make_address("127.0.0.1"), 80), tcp::endpoint(make_address("::1"), 80)}));
  CHECK(check_plain_http_endpoints(o, {tcp::endpoint(make_address("::"), 10261)}).error() ==
        "nodemeter agent: the socket on [::]:10261 would serve plain HTTP beyond loopback: give "
        "--tls-cert-file and --tls-private-key-file, or --tls-self-signed, or --insecure-http if "
        "that is meant");
  o.tls_self_signed = true;
  CHECK(check_plain_http_endpoints(o, {tcp::endpoint(make_address("::"), 10261)}));
}

TEST_CASE("the request-header ConfigMap as kube-apiserver writes it", "[security]") {
  const std::string body = R"({
    "apiVersion": "v1", "kind": "ConfigMap",
    "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
    "data": {
      "client-ca-file": "-----BEGIN CERTIFICATE-----\nclient\n-----END CERTIFICATE-----\n",
      "requestheader-allowed-names": "[\"front-proxy-client\"]",
      "requestheader-client-ca-file": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
      "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]",
      "requestheader-group-headers": "[\"X-Remote-Group\"]",
      "requestheader-username-headers": "[\"X-Remote-User\"]"
    }
  })";
  auto config = parse_request_header_configmap(body);
  REQUIRE(config.has_value());
  CHECK(config->client_ca_pem == "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
  CHECK(config->allowed_names == std::vector<std::string>{"front-proxy-client"});
  CHECK(config->username_headers == std::vector<std::string>{"X-Remote-User"});
  CHECK(config->group_headers == std::vector<std::string>{"X-Remote-Group"});
  CHECK(config->extra_prefixes == std::vector<std::string>{"X-Remote-Extra-"});

  auto empty = parse_request_header_configmap(R"({"data":{"requestheader-allowed-names":"[]"}})");
  REQUIRE(empty.has_value());
  CHECK(empty->client_ca_pem.empty());
  CHECK(empty->allowed_names.empty());
  CHECK(
      parse_request_header_configmap(R"({"data":{"requestheader-group-headers":"X-G"}})").error() ==
      "ConfigMap kube-system/extension-apiserver-authentication: requestheader-group-headers is "
      "not a JSON list: X-G");
  CHECK(parse_request_header_configmap("{").has_error());

  auto api = std::make_shared<FakeApiClient>();
  std::optional<boost::system::result<RequestHeaderConfig, std::string>> got;
  auto fetch = [&] {
    got.reset();
    fetch_request_header_config(api, [&](auto r) { got = std::move(r); });
    REQUIRE(got);
    return *got;
  };
  api->answer = [&](const kube::HttpRequest&) { return answer(200, body); };
  CHECK(fetch()->allowed_names == std::vector<std::string>{"front-proxy-client"});
  CHECK(api->requests.back().method == http::verb::get);
  CHECK(api->requests.back().target ==
        "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication");
  api->answer = [&](const kube::HttpRequest&) {
    return answer(
        403,
        R"({"kind":"Status","message":"configmaps \"extension-apiserver-authentication\" is forbidden: User \"system:serviceaccount:x:y\" cannot get resource"})");
  };
  CHECK(fetch().error() ==
        "reading ConfigMap kube-system/extension-apiserver-authentication is forbidden: bind the "
        "Role extension-apiserver-authentication-reader in kube-system to this service account "
        "(the API server answered 403: configmaps \"extension-apiserver-authentication\" is "
        "forbidden: User \"system:serviceaccount:x:y\" cannot get resource)");
  api->answer = [&](const kube::HttpRequest&) { return answer(404, "{}"); };
  CHECK(fetch().error() ==
        "ConfigMap kube-system/extension-apiserver-authentication does not exist (the API server "
        "has no front proxy configured)");
  api->answer = [&](const kube::HttpRequest&) {
    return kube::HttpResult(boost::system::in_place_error,
                            std::string("https://10.96.0.1:443: connection refused"));
  };
  CHECK(fetch().error() ==
        "reading ConfigMap kube-system/extension-apiserver-authentication: https://10.96.0.1:443: "
        "connection refused");
}

TEST_CASE("reviews posted through the API client", "[security]") {
  auto api = std::make_shared<FakeApiClient>();
  unsigned status = 201;
  std::string token_body = kReviewedToken;
  std::string decision_body = R"({"status":{"allowed":false,"denied":true,"reason":"nope"}})";
  api->answer = [&](const kube::HttpRequest& r) {
    return answer(status,
                  r.target.find("tokenreviews") != std::string::npos ? token_body : decision_body);
  };

  auto authenticate = token_review_authenticator(api, {}, 3s);
  std::optional<api::TokenResult> token;
  authenticate("abc", [&](api::TokenResult r) { token = std::move(r); });
  REQUIRE(token);
  REQUIRE(token->has_value());
  REQUIRE(**token);
  CHECK((**token)->name == "system:serviceaccount:monitoring:prometheus");
  const kube::HttpRequest& sent = api->requests.back();
  CHECK(sent.method == http::verb::post);
  CHECK(sent.target == "/apis/authentication.k8s.io/v1/tokenreviews");
  CHECK(sent.body == api::token_review_request("abc", {}));
  CHECK(sent.timeout == 3s);
  CHECK(sent.headers ==
        std::vector<std::pair<std::string, std::string>>{{"Content-Type", "application/json"}});

  auto authorize = subject_access_review_authorizer(api);
  api::UserInfo user;
  user.name = "alice";
  const api::Attributes attributes =
      api::metrics_api_attributes(make_request("/apis/metrics.k8s.io/v1beta1/nodes"));
  std::optional<api::DecisionResult> decision;
  authorize(user, attributes, [&](api::DecisionResult r) { decision = std::move(r); });
  REQUIRE(decision);
  CHECK(**decision == api::Decision{false, true, "nope"});
  CHECK(api->requests.back().target == "/apis/authorization.k8s.io/v1/subjectaccessreviews");
  CHECK(api->requests.back().body == api::subject_access_review_request(user, attributes));

  // The API server refusing the review itself, and no answer at all, are errors.
  status = 403;
  token_body =
      R"({"kind":"Status","message":"tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:kube-system:nodemeter\" cannot create resource \"tokenreviews\""})";
  authenticate("abc", [&](api::TokenResult r) { token = std::move(r); });
  CHECK(token->error() ==
        "TokenReview: the API server answered 403: tokenreviews.authentication.k8s.io is "
        "forbidden: User \"system:serviceaccount:kube-system:nodemeter\" cannot create resource "
        "\"tokenreviews\"");
  decision_body = "<html>";
  status = 500;
  authorize(user, attributes, [&](api::DecisionResult r) { decision = std::move(r); });
  CHECK(decision->error() == "SubjectAccessReview: the API server answered 500");
  api->answer = [](const kube::HttpRequest&) {
    return kube::HttpResult(boost::system::in_place_error,
                            std::string("https://10.96.0.1:443: timed out after 10s"));
  };
  authorize(user, attributes, [&](api::DecisionResult r) { decision = std::move(r); });
  CHECK(decision->error() == "SubjectAccessReview: https://10.96.0.1:443: timed out after 10s");
}

TEST_CASE("make_security: an agent on loopback without authentication", "[security]") {
  boost::asio::io_context io;
  SecurityOptions o;
  FlagSet flags("agent");
  add_agent_security_flags(flags, o);
  REQUIRE(validate_security(o, {"127.0.0.1:10261"}, false));
  auto setup = make_security(o, io, nullptr, nullptr);
  REQUIRE(setup.has_value());
  CHECK_FALSE(setup->tls);
  CHECK(setup->summary == "plain HTTP, no authentication (--authorization=always-allow)");
  CHECK(call(setup->wrap(served), make_request("/metrics/resource")).body() ==
        "served /metrics/resource");
}

TEST_CASE("make_security: an agent with TLS checks tokens and nodes/metrics as the kubelet",
          "[security]") {
  boost::asio::io_context io;
  SecurityOptions o;
  FlagSet flags("agent");
  add_agent_security_flags(flags, o);
  REQUIRE(parse(flags, {"--tls-self-signed", "--tls-min-version=1.3"}));
  o.tls_hosts = {"node-a", "10.0.0.7"};
  REQUIRE(validate_security(o, {"0.0.0.0:10250"}, true));

  auto api = std::make_shared<FakeApiClient>();
  std::vector<std::string> asked;
  api->answer = [&](const kube::HttpRequest& r) {
    asked.push_back(r.target);
    if (r.target.find("tokenreviews") != std::string::npos) {
      return r.body.find("\"good\"") != std::string::npos
                 ? answer(201, kReviewedToken)
                 : answer(201, R"({"status":{"authenticated":false}})");
    }
    // RBAC as the DaemonSet's ClusterRole grants it: nodes/metrics and nodes/stats, get.
    const bool allowed = r.body.find("\"subresource\":\"metrics\"") != std::string::npos ||
                         r.body.find("\"subresource\":\"stats\"") != std::string::npos;
    return answer(201, allowed ? R"({"status":{"allowed":true}})" : R"({"status":{}})");
  };
  std::vector<std::string> outcomes;
  auto setup = make_security(
      o, io, api, [](const api::Request& r) { return api::kubelet_attributes(r, "node-a"); }, {},
      [&](api::GuardOutcome outcome, std::string_view) {
        outcomes.emplace_back(api::to_string(outcome));
      });
  REQUIRE(setup.has_value());
  REQUIRE(setup->tls);
  CHECK(SSL_CTX_get_min_proto_version(setup->tls->native_handle()) == TLS1_3_VERSION);
  CHECK(setup->summary ==
        "HTTPS (self-signed, TLS 1.3+), bearer tokens by TokenReview (kept 2m0s), authorization "
        "by SubjectAccessReview (kept 5m0s allowed, 30s refused)");
  auto pem = api::served_certificate_pem(*setup->tls);
  CHECK_FALSE(pem.empty());

  // The handler runs through io's executor after a review: run it to deliver.
  auto handler = setup->wrap(served);
  auto get = [&](std::string target, std::string token) {
    std::optional<api::Response> out;
    std::vector<std::pair<std::string, std::string>> headers;
    if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
    // As the server does, the request outlives the reply.
    const api::Request request = make_request(target, headers);
    handler(request, api::Peer{}, [&](api::Response r) { out = std::move(r); });
    io.restart();
    io.run();
    REQUIRE(out);
    return *out;
  };
  CHECK(get("/healthz", "").result_int() == 200);
  CHECK(get("/metrics/resource", "").result_int() == 401);
  CHECK(get("/metrics/resource", "bad").result_int() == 401);
  CHECK(get("/metrics/resource", "good").body() == "served /metrics/resource");
  CHECK(get("/stats/summary", "good").result_int() == 200);
  auto proxy = get("/pods", "good");
  CHECK(proxy.result_int() == 403);
  CHECK(proxy.body() ==
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
        "\"message\":\"Forbidden (user=system:serviceaccount:monitoring:prometheus, verb=get, "
        "resource=nodes, subresource=proxy)\",\"reason\":\"Forbidden\",\"code\":403}\n");
  CHECK(outcomes == std::vector<std::string>{"unauthenticated", "unauthenticated", "allowed",
                                             "allowed", "forbidden"});
  // One TokenReview for "bad", one for "good" (kept), one SubjectAccessReview per subresource.
  CHECK(asked == std::vector<std::string>{"/apis/authentication.k8s.io/v1/tokenreviews",
                                          "/apis/authentication.k8s.io/v1/tokenreviews",
                                          "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                          "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                          "/apis/authorization.k8s.io/v1/subjectaccessreviews"});
}

TEST_CASE("make_security: the aggregator's front proxy from the flag or the ConfigMap",
          "[security]") {
  boost::asio::io_context io;
  TempDir dir;
  test::TestCa front_proxy_ca("front-proxy-ca");
  const std::string ca_file = dir.write("front-proxy-ca.crt", front_proxy_ca.cert_pem());

  auto api = std::make_shared<FakeApiClient>();
  api->answer = [](const kube::HttpRequest& r) {
    if (r.target.find("tokenreviews") != std::string::npos) return answer(201, kReviewedToken);
    return answer(201, r.body.find("\"user\":\"alice\"") != std::string::npos
                           ? R"({"status":{"allowed":true}})"
                           : R"({"status":{"allowed":false}})");
  };
  SecurityOptions o;
  FlagSet flags("aggregator");
  add_aggregator_security_flags(flags, o);
  REQUIRE(parse(flags, {"--requestheader-client-ca-file", ca_file,
                        "--requestheader-allowed-names=front-proxy-client"}));
  REQUIRE(validate_security(o, {":443"}, true));
  auto setup = make_security(o, io, api, api::metrics_api_attributes);
  REQUIRE(setup.has_value());
  REQUIRE(setup->tls);
  CHECK(setup->summary ==
        "HTTPS (self-signed, TLS 1.2+), request-header users behind the front-proxy CA (" +
            ca_file +
            ", names front-proxy-client), bearer tokens by TokenReview (kept 10s), "
            "authorization by SubjectAccessReview (kept 10s allowed, 10s refused)");
  // The context asks for client certificates signed by the front-proxy CA.
  STACK_OF(X509_NAME)* names = SSL_CTX_get_client_CA_list(setup->tls->native_handle());
  REQUIRE(names != nullptr);
  CHECK(sk_X509_NAME_num(names) == 1);

  api::Peer proxy;
  proxy.tls = true;
  proxy.client_cert = api::ClientCertificate{"front-proxy-client", {}, true};
  auto handler = setup->wrap(served);
  auto run = [&](const api::Request& request, const api::Peer& peer) {
    std::optional<api::Response> out;
    handler(request, peer, [&](api::Response r) { out = std::move(r); });
    io.restart();
    io.run();
    REQUIRE(out);
    return *out;
  };
  CHECK(run(make_request("/apis/metrics.k8s.io/v1beta1/nodes", {{"X-Remote-User", "alice"}}), proxy)
            .result_int() == 200);
  auto bob =
      run(make_request("/apis/metrics.k8s.io/v1beta1/nodes", {{"X-Remote-User", "bob"}}), proxy);
  CHECK(bob.result_int() == 403);
  CHECK(bob.body().find("nodes.metrics.k8s.io is forbidden: User \\\"bob\\\" cannot list") !=
        std::string::npos);
  CHECK(run(make_request("/apis", {{"X-Remote-User", "alice"}}), api::Peer{}).result_int() == 401);
  // Discovery needs authentication too; health does not.
  CHECK(run(make_request("/apis/metrics.k8s.io/v1beta1"), api::Peer{}).result_int() == 401);
  CHECK(run(make_request("/readyz"), api::Peer{}).result_int() == 200);

  // Without the flag the ConfigMap's CA and names are used; without either, an error.
  SecurityOptions from_cluster;
  FlagSet cluster_flags("aggregator");
  add_aggregator_security_flags(cluster_flags, from_cluster);
  REQUIRE(validate_security(from_cluster, {":443"}, true));
  RequestHeaderConfig config;
  config.client_ca_pem = front_proxy_ca.cert_pem();
  config.allowed_names = {"front-proxy-client"};
  auto configured = make_security(from_cluster, io, api, api::metrics_api_attributes, config);
  REQUIRE(configured.has_value());
  CHECK(configured->summary.find("(from the ConfigMap, names front-proxy-client)") !=
        std::string::npos);
  auto missing =
      make_security(from_cluster, io, api, api::metrics_api_attributes, RequestHeaderConfig{});
  CHECK(missing.error() ==
        "nodemeter aggregator: no request-header CA: give --requestheader-client-ca-file (the "
        "ConfigMap kube-system/extension-apiserver-authentication has no "
        "requestheader-client-ca-file)");
  from_cluster.requestheader_client_ca_file = (dir.path / "absent.crt").string();
  CHECK(make_security(from_cluster, io, api, api::metrics_api_attributes).error() ==
        "nodemeter aggregator: --requestheader-client-ca-file " +
            from_cluster.requestheader_client_ca_file + ": No such file or directory");
  from_cluster.requestheader_client_ca_file = ca_file;
  from_cluster.tls_cert_file = (dir.path / "absent.pem").string();
  from_cluster.tls_private_key_file = (dir.path / "absent.key").string();
  CHECK(make_security(from_cluster, io, api, api::metrics_api_attributes).error() ==
        "nodemeter aggregator: TLS certificate file " + from_cluster.tls_cert_file +
            ": No such file or directory");
}
