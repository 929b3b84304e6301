// How the agent and the aggregator protect what they serve: HTTPS from a certificate pair or a
// self-signed one, plain HTTP only on loopback unless asked for, and Kubernetes authentication
// and authorization (api/auth.h) with the reviews posted to the API server. A command registers
// the flags, validates them once it knows its listen addresses and whether it has an API client,
// and wraps its routes with what make_security returns.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/flags.h"
#include "api/auth.h"
#include "api/server.h"
#include "kube/api_client.h"

namespace nodemeter::agent {

enum class SecurityRole { agent, aggregator };
enum class AuthorizationMode { always_allow, webhook };

struct SecurityOptions {
  SecurityRole role = SecurityRole::agent;  // set by add_*_security_flags
  std::string tls_cert_file;
  std::string tls_private_key_file;
  bool tls_self_signed = false;  // the agent's switch; the aggregator self-signs without a pair
  std::vector<std::string> tls_hosts;  // SANs of a self-signed certificate; the command's choice
  std::string tls_min_version = "1.2";
  bool insecure_http = false;  // agent: plain HTTP on a non-loopback address, on purpose
  // Unset: webhook for the aggregator and for an agent serving TLS, always-allow for an agent on
  // plain HTTP. validate_security fills it in.
  std::optional<AuthorizationMode> authorization;
  // Agent: bearer tokens checked by TokenReview even with --authorization=always-allow (webhook
  // authorization always checks them). The aggregator checks tokens whenever it has the API.
  bool authentication_token_webhook = false;
  std::chrono::milliseconds token_cache_ttl{std::chrono::minutes(2)};
  std::chrono::milliseconds authorized_cache_ttl{std::chrono::minutes(5)};
  std::chrono::milliseconds unauthorized_cache_ttl{std::chrono::seconds(30)};
  // Aggregator: kube-apiserver's front proxy. Empty lists: the ConfigMap's, else the defaults.
  std::string requestheader_client_ca_file;
  std::vector<std::string> requestheader_allowed_names;
  std::vector<std::string> requestheader_username_headers;
  std::vector<std::string> requestheader_group_headers;
  std::vector<std::string> requestheader_extra_headers_prefix;
};

// The agent's flags, named as the kubelet's: --tls-cert-file, --tls-private-key-file,
// --tls-self-signed, --tls-min-version, --insecure-http, --authorization,
// --authentication-token-webhook and the three review cache TTLs (kubelet defaults 2m, 5m, 30s).
void add_agent_security_flags(FlagSet& flags, SecurityOptions& options);
// The aggregator's, named as an aggregated API server's: --tls-cert-file, --tls-private-key-file,
// --tls-min-version, --requestheader-client-ca-file, --requestheader-allowed-names,
// --requestheader-username-headers, --requestheader-group-headers,
// --requestheader-extra-headers-prefix, --authorization and the cache TTLs (10s each).
void add_aggregator_security_flags(FlagSet& flags, SecurityOptions& options);

// Whether the command serves HTTPS: always for the aggregator; with a pair or --tls-self-signed
// for the agent.
bool serves_tls(const SecurityOptions& options);

// Checks the flags together and resolves the authorization default. `listen` are the --listen
// values; `have_api` whether the command has a Kubernetes API client. The error is one sentence
// naming the flag, starting "nodemeter agent: " or "nodemeter aggregator: ".
boost::system::result<void, std::string> validate_security(SecurityOptions& options,
                                                           const std::vector<std::string>& listen,
                                                           bool have_api);
// The same plain-HTTP rule for bound endpoints (sockets handed over by systemd, known only after
// Server::start).
boost::system::result<void, std::string> check_plain_http_endpoints(
    const SecurityOptions& options, const std::vector<boost::asio::ip::tcp::endpoint>& endpoints);

// kube-system/extension-apiserver-authentication, the request-header part.
struct RequestHeaderConfig {
  std::string client_ca_pem;  // requestheader-client-ca-file (the bundle itself)
  std::vector<std::string> allowed_names;
  std::vector<std::string> username_headers;
  std::vector<std::string> group_headers;
  std::vector<std::string> extra_prefixes;
};
// Reads the ConfigMap's JSON (data values are PEM and JSON lists of strings).
boost::system::result<RequestHeaderConfig, std::string> parse_request_header_configmap(
    std::string_view body);
// GET /api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication. The error
// names the ConfigMap and, for 403, the role that grants reading it.
void fetch_request_header_config(
    const std::shared_ptr<kube::ApiClient>& api,
    std::function<void(boost::system::result<RequestHeaderConfig, std::string>)> done);

// Reviews posted to the API server (POST /apis/authentication.k8s.io/v1/tokenreviews and
// /apis/authorization.k8s.io/v1/subjectaccessreviews); a transport failure or an unexpected
// status is an error naming the review.
api::TokenAuthenticator token_review_authenticator(
    std::shared_ptr<kube::ApiClient> api, std::vector<std::string> audiences = {},
    std::chrono::milliseconds timeout = std::chrono::seconds(10));
api::Authorizer subject_access_review_authorizer(
    std::shared_ptr<kube::ApiClient> api,
    std::chrono::milliseconds timeout = std::chrono::seconds(10));

struct SecuritySetup {
  std::shared_ptr<boost::asio::ssl::context> tls;  // for ServerOptions::tls; null: plain HTTP
  // Wraps the command's routes into what the Server takes.
  std::function<api::AsyncHandler(api::Handler)> wrap;
  std::string summary;  // one line for the startup log
};

// Builds TLS and the guard from validated options. `io` runs the server (routes are dispatched
// there after a review); `api` may be null where validate_security allowed it; `attributes` maps
// a request for authorization (the agent: kubelet_attributes bound to its node name; the
// aggregator: api::metrics_api_attributes); `from_cluster` is the ConfigMap's request-header
// configuration, used when --requestheader-client-ca-file is not given; `observe` is told every
// guarded request's outcome.
boost::system::result<SecuritySetup, std::string> make_security(
    const SecurityOptions& options, boost::asio::io_context& io,
    std::shared_ptr<kube::ApiClient> api, api::AttributeMapper attributes,
    const std::optional<RequestHeaderConfig>& from_cluster = std::nullopt,
    std::function<void(api::GuardOutcome, std::string_view detail)> observe = {});

}  // namespace nodemeter::agent
