#include "agent/security.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "api/tls.h"

namespace nodemeter::agent {

namespace {

namespace http = boost::beast::http;
using Json = nlohmann::json;

std::string command_name(const SecurityOptions& o) {
  return o.role == SecurityRole::agent ? "nodemeter agent" : "nodemeter aggregator";
}

// A failed result<T, std::string> for any T (also where T could be built from a string).
struct Failure {
  std::string message;
  template <class T>
  operator boost::system::result<T, std::string>() && {
    return boost::system::result<T, std::string>(boost::system::in_place_error, std::move(message));
  }
};

// Comma-separated values appended to `list` (pflag's StringSlice: repeatable, and "a,b" is two).
FlagSet::Setter append_list(std::vector<std::string>& list) {
  return [&list](std::string_view value) -> std::string {
    while (!value.empty()) {
      const size_t comma = value.find(',');
      std::string_view item = value.substr(0, comma);
      while (!item.empty() && item.front() == ' ')
        item.remove_prefix(1);
      while (!item.empty() && item.back() == ' ')
        item.remove_suffix(1);
      if (!item.empty()) list.emplace_back(item);
      if (comma == std::string_view::npos) break;
      value.remove_prefix(comma + 1);
    }
    return "";
  };
}

FlagSet::Setter set_duration(std::chrono::milliseconds& out) {
  return [&out](std::string_view value) -> std::string {
    auto d = parse_duration(value);
    if (!d) return d.error();
    out = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
    return "";
  };
}

FlagSet::Setter set_string(std::string& out) {
  return [&out](std::string_view value) -> std::string {
    out = std::string(value);
    return "";
  };
}

void add_common_tls_flags(FlagSet& f, SecurityOptions& o, std::string_view without_pair) {
  f.value("tls-cert-file", "FILE",
          "PEM certificate chain to serve HTTPS with, leaf first; " + std::string(without_pair), "",
          set_string(o.tls_cert_file));
  f.value("tls-private-key-file", "FILE", "PEM private key of --tls-cert-file", "",
          set_string(o.tls_private_key_file));
  f.value("tls-min-version", "VERSION",
          "lowest TLS version accepted: 1.2 or 1.3 (VersionTLS12 or VersionTLS13 too)", "1.2",
          [&o](std::string_view value) -> std::string {
            auto version = api::parse_tls_version(value);
            if (!version) return version.error();
            o.tls_min_version = *version;
            return "";
          });
}

void add_authorization_flags(FlagSet& f, SecurityOptions& o, std::string default_text) {
  f.value("authorization", "webhook|always-allow",
          "webhook: every request is authorized with a SubjectAccessReview; always-allow: every "
          "authenticated request (every request, without authentication) is served",
          std::move(default_text), [&o](std::string_view value) -> std::string {
            if (value == "webhook" || value == "Webhook") {
              o.authorization = AuthorizationMode::webhook;
            } else if (value == "always-allow" || value == "AlwaysAllow") {
              o.authorization = AuthorizationMode::always_allow;
            } else {
              return "\"" + std::string(value) + "\" is not webhook or always-allow";
            }
            return "";
          });
}

void add_cache_flags(FlagSet& f, SecurityOptions& o) {
  f.value("authentication-token-webhook-cache-ttl", "DURATION",
          "how long TokenReview answers are kept", format_duration(o.token_cache_ttl),
          set_duration(o.token_cache_ttl));
  f.value("authorization-webhook-cache-authorized-ttl", "DURATION",
          "how long allowing SubjectAccessReview answers are kept",
          format_duration(o.authorized_cache_ttl), set_duration(o.authorized_cache_ttl));
  f.value("authorization-webhook-cache-unauthorized-ttl", "DURATION",
          "how long refusing SubjectAccessReview answers are kept",
          format_duration(o.unauthorized_cache_ttl), set_duration(o.unauthorized_cache_ttl));
}

bool is_loopback(const boost::asio::ip::address& address) {
  if (address.is_v4()) return (address.to_v4().to_uint() >> 24) == 127;
  const auto v6 = address.to_v6();
  if (v6.is_loopback()) return true;
  return v6.is_v4_mapped() &&
         (boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).to_uint() >> 24) == 127;
}

std::string plain_http_refusal(const SecurityOptions& o, const std::string& where) {
  return command_name(o) + ": " + where +
         " would serve plain HTTP beyond loopback: give --tls-cert-file and "
         "--tls-private-key-file, or --tls-self-signed, or --insecure-http if that is meant";
}

boost::system::result<std::string, std::string> read_text(const std::string& path,
                                                          std::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Failure{"--" + std::string(flag) + " " + path + ": " + std::strerror(errno)};
  std::ostringstream text;
  text << in.rdbuf();
  return boost::system::result<std::string, std::string>(boost::system::in_place_value, text.str());
}

// "the API server answered 403: <its Status message>".
std::string describe_answer(const kube::HttpResponse& response) {
  std::string out = "the API server answered " + std::to_string(response.status);
  Json status = Json::parse(response.body, nullptr, false);
  if (status.is_object()) {
    auto message = status.find("message");
    if (message != status.end() && message->is_string()) {
      out += ": " + message->get<std::string>();
    }
  }
  return out;
}

kube::HttpRequest post_json(std::string target, std::string body,
                            std::chrono::milliseconds timeout) {
  kube::HttpRequest request;
  request.method = http::verb::post;
  request.target = std::move(target);
  request.headers = {{"Content-Type", "application/json"}};
  request.body = std::move(body);
  request.timeout = timeout;
  return request;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) {
    if (!out.empty()) out += ",";
    out += item;
  }
  return out;
}

}  // namespace

void add_agent_security_flags(FlagSet& f, SecurityOptions& o) {
  o.role = SecurityRole::agent;
  add_common_tls_flags(f, o, "with --tls-private-key-file, the agent serves HTTPS");
  f.boolean("tls-self-signed", "serve HTTPS with a self-signed certificate made at start",
            [&o] { o.tls_self_signed = true; });
  f.boolean("insecure-http",
            "allow plain HTTP on non-loopback addresses (without TLS, only loopback is served)",
            [&o] { o.insecure_http = true; });
  add_authorization_flags(f, o, "webhook with TLS, always-allow on plain HTTP");
  f.boolean("authentication-token-webhook",
            "check bearer tokens with a TokenReview also under --authorization=always-allow "
            "(webhook authorization always does)",
            [&o] { o.authentication_token_webhook = true; });
  o.token_cache_ttl = std::chrono::minutes(2);
  o.authorized_cache_ttl = std::chrono::minutes(5);
  o.unauthorized_cache_ttl = std::chrono::seconds(30);
  add_cache_flags(f, o);
}

void add_aggregator_security_flags(FlagSet& f, SecurityOptions& o) {
  o.role = SecurityRole::aggregator;
  add_common_tls_flags(f, o, "without a pair, the aggregator makes a self-signed one at start");
  f.value("requestheader-client-ca-file", "FILE",
          "CA bundle that signs kube-apiserver's front-proxy client certificate; the user in "
          "request headers is trusted only behind it",
          "from ConfigMap kube-system/extension-apiserver-authentication",
          set_string(o.requestheader_client_ca_file));
  f.value("requestheader-allowed-names", "NAMES",
          "common names allowed for the front-proxy client certificate; comma-separated, "
          "repeatable; empty: any name the CA signed",
          "", append_list(o.requestheader_allowed_names));
  f.value("requestheader-username-headers", "HEADERS",
          "request headers to read the user name from, first non-empty wins", "X-Remote-User",
          append_list(o.requestheader_username_headers));
  f.value("requestheader-group-headers", "HEADERS", "request headers to read the groups from",
          "X-Remote-Group", append_list(o.requestheader_group_headers));
  f.value("requestheader-extra-headers-prefix", "PREFIXES",
          "request header prefixes for the user's extra attributes", "X-Remote-Extra-",
          append_list(o.requestheader_extra_headers_prefix));
  add_authorization_flags(f, o, "webhook");
  o.token_cache_ttl = std::chrono::seconds(10);
  o.authorized_cache_ttl = std::chrono::seconds(10);
  o.unauthorized_cache_ttl = std::chrono::seconds(10);
  add_cache_flags(f, o);
}

bool serves_tls(const SecurityOptions& o) {
  return o.role == SecurityRole::aggregator || !o.tls_cert_file.empty() ||
         !o.tls_private_key_file.empty() || o.tls_self_signed;
}

boost::system::result<void, std::string> validate_security(SecurityOptions& o,
                                                           const std::vector<std::string>& listen,
                                                           bool have_api) {
  const std::string who = command_name(o) + ": ";
  auto version = api::parse_tls_version(o.tls_min_version);
  if (!version) return who + "--tls-min-version: " + version.error();
  o.tls_min_version = *version;
  if (o.tls_cert_file.empty() && !o.tls_private_key_file.empty()) {
    return who + "--tls-private-key-file needs --tls-cert-file";
  }
  if (!o.tls_cert_file.empty() && o.tls_private_key_file.empty()) {
    return who + "--tls-cert-file needs --tls-private-key-file";
  }
  if (o.tls_self_signed && !o.tls_cert_file.empty()) {
    return who + "--tls-self-signed and --tls-cert-file exclude each other";
  }
  if (!serves_tls(o) && !o.insecure_http) {
    for (const std::string& value : listen) {
      auto endpoint = api::parse_listen_address(value);
      if (!endpoint) return who + endpoint.error();
      if (!is_loopback(endpoint->address())) return plain_http_refusal(o, "--listen " + value);
    }
  }
  const bool defaulted = !o.authorization;
  if (defaulted) {
    o.authorization = serves_tls(o) ? AuthorizationMode::webhook : AuthorizationMode::always_allow;
  }
  if (!have_api) {
    const std::string no_api =
        " needs the Kubernetes API (in-cluster configuration or --kubeconfig)";
    if (*o.authorization == AuthorizationMode::webhook) {
      return who + "--authorization=webhook" + (defaulted ? " (the default with TLS)" : "") +
             no_api + "; without one, give --authorization=always-allow";
    }
    if (o.authentication_token_webhook) return who + "--authentication-token-webhook" + no_api;
    if (o.role == SecurityRole::aggregator && o.requestheader_client_ca_file.empty()) {
      return who +
             "--requestheader-client-ca-file is needed without the Kubernetes API to read "
             "kube-system/extension-apiserver-authentication from";
    }
  }
  return {};
}

boost::system::result<void, std::string> check_plain_http_endpoints(
    const SecurityOptions& o, const std::vector<boost::asio::ip::tcp::endpoint>& endpoints) {
  if (serves_tls(o) || o.insecure_http) return {};
  for (const auto& endpoint : endpoints) {
    if (is_loopback(endpoint.address())) continue;
    const std::string address = endpoint.address().is_v6()
                                    ? "[" + endpoint.address().to_string() + "]"
                                    : endpoint.address().to_string();
    return plain_http_refusal(o,
                              "the socket on " + address + ":" + std::to_string(endpoint.port()));
  }
  return {};
}

boost::system::result<RequestHeaderConfig, std::string> parse_request_header_configmap(
    std::string_view body) {
  const std::string name = "ConfigMap kube-system/extension-apiserver-authentication";
  Json doc = Json::parse(body.begin(), body.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return Failure{name + " is not a JSON object"};
  RequestHeaderConfig config;
  auto data = doc.find("data");
  if (data == doc.end() || !data->is_object()) return config;
  auto text = [&](const char* key) -> std::string {
    auto it = data->find(key);
    return it != data->end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  config.client_ca_pem = text("requestheader-client-ca-file");
  for (auto [key, list] :
       {std::pair{"requestheader-allowed-names", &config.allowed_names},
        std::pair{"requestheader-username-headers", &config.username_headers},
        std::pair{"requestheader-group-headers", &config.group_headers},
        std::pair{"requestheader-extra-headers-prefix", &config.extra_prefixes}}) {
    const std::string value = text(key);
    if (value.empty()) continue;
    Json items = Json::parse(value, nullptr, false);
    if (items.is_discarded() || !items.is_array()) {
      return Failure{name + ": " + key + " is not a JSON list: " + value};
    }
    for (const Json& item : items) {
      if (!item.is_string()) return Failure{name + ": " + key + " holds a non-string: " + value};
      list->push_back(item.get<std::string>());
    }
  }
  return config;
}

void fetch_request_header_config(
    const std::shared_ptr<kube::ApiClient>& api,
    std::function<void(boost::system::result<RequestHeaderConfig, std::string>)> done) {
  kube::HttpRequest request;
  request.target = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication";
  api->request(std::move(request), [done = std::move(done)](kube::HttpResult result) {
    const std::string name = "ConfigMap kube-system/extension-apiserver-authentication";
    if (!result) return done(Failure{"reading " + name + ": " + result.error()});
    if (result->status == 404) {
      return done(Failure{name + " does not exist (the API server has no front proxy configured)"});
    }
    if (result->status == 403) {
      return done(Failure{"reading " + name +
                          " is forbidden: bind the Role extension-apiserver-authentication-reader "
                          "in kube-system to this service account (" +
                          describe_answer(*result) + ")"});
    }
    if (result->status != 200)
      return done(Failure{"reading " + name + ": " + describe_answer(*result)});
    done(parse_request_header_configmap(result->body));
  });
}

api::TokenAuthenticator token_review_authenticator(std::shared_ptr<kube::ApiClient> client,
                                                   std::vector<std::string> audiences,
                                                   std::chrono::milliseconds timeout) {
  return [client = std::move(client), audiences = std::move(audiences), timeout](
             const std::string& token, std::function<void(api::TokenResult)> done) {
    client->request(post_json("/apis/authentication.k8s.io/v1/tokenreviews",
                              api::token_review_request(token, audiences), timeout),
                    [audiences, done = std::move(done)](kube::HttpResult result) {
                      if (!result) return done(Failure{"TokenReview: " + result.error()});
                      if (result->status != 200 && result->status != 201) {
                        return done(Failure{"TokenReview: " + describe_answer(*result)});
                      }
                      done(api::parse_token_review_response(result->body, audiences));
                    });
  };
}

api::Authorizer subject_access_review_authorizer(std::shared_ptr<kube::ApiClient> client,
                                                 std::chrono::milliseconds timeout) {
  return [client = std::move(client), timeout](const api::UserInfo& user,
                                               const api::Attributes& attributes,
                                               std::function<void(api::DecisionResult)> done) {
    client->request(post_json("/apis/authorization.k8s.io/v1/subjectaccessreviews",
                              api::subject_access_review_request(user, attributes), timeout),
                    [done = std::move(done)](kube::HttpResult result) {
                      if (!result) return done(Failure{"SubjectAccessReview: " + result.error()});
                      if (result->status != 200 && result->status != 201) {
                        return done(Failure{"SubjectAccessReview: " + describe_answer(*result)});
                      }
                      done(api::parse_subject_access_review_response(result->body));
                    });
  };
}

boost::system::result<SecuritySetup, std::string> make_security(
    const SecurityOptions& o, boost::asio::io_context& io, std::shared_ptr<kube::ApiClient> client,
    api::AttributeMapper attributes, const std::optional<RequestHeaderConfig>& from_cluster,
    std::function<void(api::GuardOutcome, std::string_view)> observe) {
  const std::string who = command_name(o) + ": ";
  const AuthorizationMode mode = o.authorization.value_or(
      serves_tls(o) ? AuthorizationMode::webhook : AuthorizationMode::always_allow);
  SecuritySetup setup;
  std::vector<std::string> parts;

  // The front proxy's CA and headers: flags first, then the ConfigMap, then the defaults.
  std::optional<api::RequestHeaderOptions> request_header;
  std::string request_header_ca;
  if (o.role == SecurityRole::aggregator) {
    RequestHeaderConfig cluster = from_cluster.value_or(RequestHeaderConfig{});
    if (!o.requestheader_client_ca_file.empty()) {
      auto pem = read_text(o.requestheader_client_ca_file, "requestheader-client-ca-file");
      if (!pem) return Failure{who + pem.error()};
      request_header_ca = std::move(*pem);
    } else if (!cluster.client_ca_pem.empty()) {
      request_header_ca = cluster.client_ca_pem;
    } else {
      return Failure{who +
                     "no request-header CA: give --requestheader-client-ca-file (the ConfigMap "
                     "kube-system/extension-apiserver-authentication has no "
                     "requestheader-client-ca-file)"};
    }
    api::RequestHeaderOptions rh;
    auto pick = [](const std::vector<std::string>& flag, const std::vector<std::string>& configmap,
                   std::vector<std::string>& out) {
      if (!flag.empty()) {
        out = flag;
      } else if (!configmap.empty()) {
        out = configmap;
      }
    };
    pick(o.requestheader_allowed_names, cluster.allowed_names, rh.allowed_names);
    pick(o.requestheader_username_headers, cluster.username_headers, rh.username_headers);
    pick(o.requestheader_group_headers, cluster.group_headers, rh.group_headers);
    pick(o.requestheader_extra_headers_prefix, cluster.extra_prefixes, rh.extra_prefixes);
    parts.push_back(
        "request-header users behind the front-proxy CA (" +
        std::string(o.requestheader_client_ca_file.empty() ? "from the ConfigMap"
                                                           : o.requestheader_client_ca_file) +
        (rh.allowed_names.empty() ? ", any name" : ", names " + join(rh.allowed_names)) + ")");
    request_header = std::move(rh);
  }

  std::string transport = "plain HTTP";
  if (serves_tls(o)) {
    api::ServerTlsOptions tls;
    tls.cert_file = o.tls_cert_file;
    tls.key_file = o.tls_private_key_file;
    tls.self_signed = o.tls_cert_file.empty();
    tls.self_signed_hosts = o.tls_hosts;
    tls.min_version = o.tls_min_version;
    tls.client_ca_pem = request_header_ca;
    auto context = api::make_server_tls(tls);
    if (!context) return Failure{who + context.error()};
    setup.tls = std::move(*context);
    transport = "HTTPS (" +
                (o.tls_cert_file.empty() ? std::string("self-signed") : o.tls_cert_file) +
                ", TLS " + o.tls_min_version + "+)";
  }

  const bool check_tokens =
      client && (o.role == SecurityRole::aggregator || mode == AuthorizationMode::webhook ||
                 o.authentication_token_webhook);
  if ((mode == AuthorizationMode::webhook || o.authentication_token_webhook) && !client) {
    return Failure{who + "webhook authentication and authorization need the Kubernetes API"};
  }
  if (check_tokens) {
    parts.push_back("bearer tokens by TokenReview (kept " + format_duration(o.token_cache_ttl) +
                    ")");
  }
  if (mode == AuthorizationMode::webhook) {
    parts.push_back("authorization by SubjectAccessReview (kept " +
                    format_duration(o.authorized_cache_ttl) + " allowed, " +
                    format_duration(o.unauthorized_cache_ttl) + " refused)");
  }

  if (!check_tokens && !request_header && mode == AuthorizationMode::always_allow) {
    setup.wrap = [](api::Handler inner) { return api::unguarded(std::move(inner)); };
    setup.summary = transport + ", no authentication (--authorization=always-allow)";
    return setup;
  }

  api::GuardOptions guard;
  guard.request_header = request_header;
  if (check_tokens) guard.authenticate_token = token_review_authenticator(client);
  if (mode == AuthorizationMode::webhook)
    guard.authorize = subject_access_review_authorizer(client);
  guard.attributes = std::move(attributes);
  guard.style =
      o.role == SecurityRole::agent ? api::RefusalStyle::kubelet : api::RefusalStyle::apiserver;
  guard.token_ttl = o.token_cache_ttl;
  guard.allowed_ttl = o.authorized_cache_ttl;
  guard.denied_ttl = o.unauthorized_cache_ttl;
  guard.executor = io.get_executor();
  guard.observe = std::move(observe);
  setup.wrap = [guard = std::move(guard)](api::Handler inner) {
    return api::guard(guard, std::move(inner));
  };
  setup.summary = transport;
  for (const std::string& part : parts)
    setup.summary += ", " + part;
  return setup;
}

}  // namespace nodemeter::agent
