#include "api/auth.h"

#include <openssl/evp.h>

#include <algorithm>
#include <boost/asio/dispatch.hpp>
#include <boost/beast/core/string.hpp>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <utility>

#include "api/k8s_json.h"

namespace nodemeter::api {

namespace {

using SteadyClock = std::chrono::steady_clock;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Go's url.PathUnescape; nullopt for a malformed escape.
std::optional<std::string> path_unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = hex_digit(s[i + 1]);
    const int lo = hex_digit(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::string method_verb(http::verb method) {
  switch (method) {
    case http::verb::post:
      return "create";
    case http::verb::get:
    case http::verb::head:
      return "get";
    case http::verb::put:
      return "update";
    case http::verb::patch:
      return "patch";
    case http::verb::delete_:
      return "delete";
    default:
      return "";
  }
}

// The kubelet's isSubpath: `path` is `prefix` (without a trailing slash) or below it.
bool is_subpath(std::string_view path, std::string_view prefix) {
  if (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
  return path == prefix ||
         (path.starts_with(prefix) && path.size() > prefix.size() && path[prefix.size()] == '/');
}

std::vector<std::string_view> split_path(std::string_view path) {
  while (!path.empty() && path.front() == '/')
    path.remove_prefix(1);
  while (!path.empty() && path.back() == '/')
    path.remove_suffix(1);
  std::vector<std::string_view> parts;
  if (path.empty()) return parts;
  for (;;) {
    const size_t slash = path.find('/');
    parts.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

// Go's bool conversion of a query value (metav1 ListOptions): "0", "f", "false" are false.
bool query_true(std::string_view value) {
  const std::string v = lower(value);
  return v != "0" && v != "f" && v != "false";
}

// fields.Selector.RequiresExactMatch("metadata.name") for a selector of comma-separated terms.
std::optional<std::string> exact_name(std::string_view selector) {
  while (!selector.empty()) {
    const size_t comma = selector.find(',');
    std::string_view term = selector.substr(0, comma);
    selector = comma == std::string_view::npos ? std::string_view{} : selector.substr(comma + 1);
    for (std::string_view op : {"==", "="}) {
      const std::string prefix = "metadata.name" + std::string(op);
      if (term.starts_with(prefix)) return std::string(term.substr(prefix.size()));
    }
  }
  return std::nullopt;
}

// path.IsValidPathSegmentName.
bool valid_path_segment(std::string_view name) {
  return name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('%') == std::string_view::npos;
}

std::vector<std::string> string_list(const Json& value) {
  std::vector<std::string> out;
  if (!value.is_array()) return out;
  for (const Json& item : value) {
    if (item.is_string()) out.push_back(item.get<std::string>());
  }
  return out;
}

std::string string_field(const Json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool bool_field(const Json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_boolean() && it->get<bool>();
}

std::optional<Json> parse_object(std::string_view body) {
  Json doc = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return std::nullopt;
  return doc;
}

// Go's encoding/json leaves out empty fields tagged omitempty; these are.
void set_if(Json& object, const char* key, const std::string& value) {
  if (!value.empty()) object[key] = value;
}

std::string sha256(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest), length);
}

// Answers of one kind of review: kept for a TTL chosen by the answer, bounded (the oldest goes
// first), and shared by everyone who asks while a review for the same key is in flight.
template <class Value>
class ReviewCache : public std::enable_shared_from_this<ReviewCache<Value>> {
 public:
  using Result = boost::system::result<Value, std::string>;
  using Done = std::function<void(const Result&)>;
  using Start = std::function<void(std::function<void(Result)>)>;
  using Ttl = std::function<SteadyClock::duration(const Result&)>;

  ReviewCache(size_t capacity, Ttl ttl, std::function<SteadyClock::time_point()> now)
      : capacity_(capacity), ttl_(std::move(ttl)), now_(std::move(now)) {}

  // A fresh answer calls done at once; otherwise done waits for the review in flight for key,
  // or for one begun with start.
  void get(const std::string& key, Done done, const Start& start) {
    {
      std::unique_lock lock(mu_);
      if (auto it = entries_.find(key); it != entries_.end()) {
        if (it->second.expires > now_()) {
          Result result = it->second.result;
          lock.unlock();
          done(result);
          return;
        }
        erase(it);
      }
      auto [waiting, first] = pending_.try_emplace(key);
      waiting->second.push_back(std::move(done));
      if (!first) return;
    }
    start([self = this->shared_from_this(), key](Result result) {
      self->complete(key, std::move(result));
    });
  }

 private:
  struct Entry {
    Result result;
    SteadyClock::time_point expires;
    typename std::list<std::string>::iterator order;
  };

  void complete(const std::string& key, Result result) {
    std::vector<Done> waiters;
    {
      std::lock_guard lock(mu_);
      if (auto it = pending_.find(key); it != pending_.end()) {
        waiters = std::move(it->second);
        pending_.erase(it);
      }
      const SteadyClock::duration ttl = ttl_(result);
      if (ttl > SteadyClock::duration::zero() && capacity_ > 0) store(key, result, now_() + ttl);
    }
    for (Done& waiter : waiters)
      waiter(result);
  }

  void store(const std::string& key, const Result& result, SteadyClock::time_point expires) {
    if (auto it = entries_.find(key); it != entries_.end()) erase(it);
    while (entries_.size() >= capacity_)
      erase(entries_.find(order_.front()));
    order_.push_back(key);
    entries_.emplace(key, Entry{result, expires, std::prev(order_.end())});
  }

  void erase(typename std::unordered_map<std::string, Entry>::iterator it) {
    order_.erase(it->second.order);
    entries_.erase(it);
  }

  const size_t capacity_;
  const Ttl ttl_;
  const std::function<SteadyClock::time_point()> now_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> order_;  // keys, oldest answer first
  std::unordered_map<std::string, std::vector<Done>> pending_;
};

Response call_inner(const Handler& inner, const Request& request) {
  try {
    return inner(request);
  } catch (...) {
    Response response{http::status::internal_server_error, request.version()};
    response.set(http::field::content_type, "text/plain; charset=utf-8");
    response.body() = "internal server error\n";
    response.prepare_payload();
    return response;
  }
}

// The API server's responsewriters sanitizer: nothing in an error reads as HTML.
std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '&') {
      out += "&amp;";
    } else if (c == '<') {
      out += "&lt;";
    } else if (c == '>') {
      out += "&gt;";
    } else {
      out += c;
    }
  }
  return out;
}

std::string kubelet_summary(const UserInfo& user, const Attributes& a) {
  return "(user=" + user.name + ", verb=" + a.verb + ", resource=" + a.resource +
         ", subresource=" + a.subresource + ")";
}

Response unauthorized(const Request& request) {
  return json_response(request, 401,
                       to_go_json(status_json(401, "Unauthorized", "Unauthorized", std::nullopt)));
}

Response forbidden(RefusalStyle style, const Request& request, const UserInfo& user,
                   const Attributes& a, const std::string& reason) {
  if (style == RefusalStyle::kubelet) {
    return json_response(
        request, 403,
        to_go_json(
            status_json(403, "Forbidden", "Forbidden " + kubelet_summary(user, a), std::nullopt)));
  }
  // responsewriters.Forbidden through errors.NewForbidden.
  std::string message;
  if (!a.resource_request) {
    message = "User " + go_quote(user.name) + " cannot " + a.verb + " path " + go_quote(a.path);
  } else {
    std::string resource = a.resource;
    if (!a.subresource.empty()) resource += "/" + a.subresource;
    message = "User " + go_quote(user.name) + " cannot " + a.verb + " resource " +
              go_quote(resource) + " in API group " + go_quote(a.group);
    message += a.namespace_name.empty() ? " at the cluster scope"
                                        : " in the namespace " + go_quote(a.namespace_name);
  }
  message = sanitize(message);
  if (!reason.empty()) message += ": " + reason;
  std::string qualified = a.resource;
  if (!a.group.empty()) qualified += "." + a.group;
  std::string text;
  if (!a.resource_request || a.resource.empty()) {
    text = "forbidden: " + message;
  } else if (a.name.empty()) {
    text = qualified + " is forbidden: " + message;
  } else {
    text = qualified + " " + go_quote(a.name) + " is forbidden: " + message;
  }
  StatusDetails details;
  if (a.resource_request) details = {a.name, a.group, a.resource};
  return json_response(request, 403, to_go_json(status_json(403, "Forbidden", text, details)));
}

Response authorization_error(RefusalStyle style, const Request& request, const UserInfo& user,
                             const Attributes& a, const std::string& error) {
  const std::string message =
      style == RefusalStyle::kubelet
          ? "Authorization error " + kubelet_summary(user, a)
          : sanitize("Internal Server Error: " + go_quote(request.target()) + ": " + error);
  return json_response(request, 500,
                       to_go_json(status_json(500, "InternalError", message, std::nullopt)));
}

bool is_open(const std::set<std::string>& open_paths, std::string_view path) {
  for (const std::string& open : open_paths) {
    if (is_subpath(path, open)) return true;
  }
  return false;
}

struct GuardState {
  GuardOptions options;
  Handler inner;
  std::shared_ptr<ReviewCache<std::optional<UserInfo>>> tokens;
  std::shared_ptr<ReviewCache<Decision>> decisions;

  void observe(GuardOutcome outcome, std::string_view detail = {}) const {
    if (options.observe) options.observe(outcome, detail);
  }

  // Runs inner where Handlers run (the server's thread) and replies.
  void serve(const std::shared_ptr<GuardState>& self, const Request& request,
             const Reply& reply) const {
    auto run = [self, &request, reply] { reply(call_inner(self->inner, request)); };
    if (options.executor) {
      boost::asio::dispatch(options.executor, std::move(run));
    } else {
      run();
    }
  }

  void authorize(const std::shared_ptr<GuardState>& self, const Request& request, UserInfo user,
                 Reply reply) const {
    if (!options.authorize) {
      observe(GuardOutcome::allowed);
      return serve(self, request, reply);
    }
    Attributes attributes = options.attributes ? options.attributes(request) : Attributes{};
    const std::string key = subject_access_review_request(user, attributes);
    decisions->get(
        key,
        [self, &request, reply, user, attributes](const DecisionResult& decision) {
          if (!decision) {
            self->observe(GuardOutcome::error, decision.error());
            return reply(authorization_error(self->options.style, request, user, attributes,
                                             decision.error()));
          }
          if (!decision->allowed) {
            self->observe(GuardOutcome::forbidden);
            return reply(
                forbidden(self->options.style, request, user, attributes, decision->reason));
          }
          self->observe(GuardOutcome::allowed);
          self->serve(self, request, reply);
        },
        [self, user, attributes](std::function<void(DecisionResult)> done) {
          self->options.authorize(user, attributes, std::move(done));
        });
  }
};

}  // namespace

Attributes kubelet_attributes(const Request& request, std::string_view node_name) {
  Attributes a;
  a.verb = request.method() == http::verb::head ? "get" : method_verb(request.method());
  a.resource_request = true;
  a.version = "v1";
  a.resource = "nodes";
  a.name = std::string(node_name);
  a.path = split_target(request.target()).path;
  if (is_subpath(a.path, "/stats/")) {
    a.subresource = "stats";
  } else if (is_subpath(a.path, "/metrics")) {
    a.subresource = "metrics";
  } else if (is_subpath(a.path, "/logs/")) {
    a.subresource = "log";  // as pods/log
  } else if (is_subpath(a.path, "/spec/")) {
    a.subresource = "spec";
  } else if (is_subpath(a.path, "/checkpoint/")) {
    a.subresource = "checkpoint";
  } else {
    a.subresource = "proxy";
  }
  return a;
}

Attributes api_request_attributes(const Request& request) {
  const Target target = split_target(request.target());
  Attributes a;
  a.path = target.path;
  a.verb = lower(std::string_view(request.method_string()));
  std::vector<std::string_view> parts = split_path(target.path);
  if (parts.size() < 3 || (parts[0] != "api" && parts[0] != "apis")) return a;
  const bool groupless = parts[0] == "api";
  std::span<const std::string_view> rest(parts);
  rest = rest.subspan(1);
  if (!groupless) {
    if (rest.size() < 3) return a;  // /apis/{group}/{version}: discovery, not a resource
    a.group = std::string(rest[0]);
    rest = rest.subspan(1);
  }
  a.resource_request = true;
  a.version = std::string(rest[0]);
  rest = rest.subspan(1);

  bool special = false;
  if (rest[0] == "watch" || rest[0] == "proxy") {
    if (rest.size() < 2) return a;  // the API server refuses these; nothing more to read
    a.verb = std::string(rest[0]);
    special = true;
    rest = rest.subspan(1);
  } else {
    a.verb = method_verb(request.method());
  }

  if (rest[0] == "namespaces") {
    if (rest.size() > 1) {
      a.namespace_name = std::string(rest[1]);
      if (rest.size() > 2 && rest[2] != "status" && rest[2] != "finalize") rest = rest.subspan(2);
    }
  }
  if (rest.size() >= 3 && !(special && a.verb == "proxy")) a.subresource = std::string(rest[2]);
  if (rest.size() >= 2) a.name = std::string(rest[1]);
  if (!rest.empty()) a.resource = std::string(rest[0]);

  if (a.name.empty() && a.verb == "get") {
    const auto watch = query_param(target.query, "watch");
    a.verb = watch && query_true(*watch) ? "watch" : "list";
    if (auto selector = query_param(target.query, "fieldSelector")) {
      if (auto name = exact_name(*selector); name && valid_path_segment(*name)) a.name = *name;
    }
  }
  if (a.name.empty() && a.verb == "delete") a.verb = "deletecollection";
  return a;
}

std::string token_review_request(std::string_view token,
                                 const std::vector<std::string>& audiences) {
  Json spec;
  spec["token"] = std::string(token);
  if (!audiences.empty()) spec["audiences"] = audiences;
  Json review;
  review["apiVersion"] = "authentication.k8s.io/v1";
  review["kind"] = "TokenReview";
  review["spec"] = std::move(spec);
  return to_go_json(review);
}

boost::system::result<std::optional<UserInfo>, std::string> parse_token_review_response(
    std::string_view body, const std::vector<std::string>& audiences) {
  using Result = boost::system::result<std::optional<UserInfo>, std::string>;
  auto doc = parse_object(body);
  if (!doc)
    return Result(boost::system::in_place_error, "the TokenReview answer is not a JSON object");
  auto status_it = doc->find("status");
  if (status_it == doc->end() || !status_it->is_object()) return std::optional<UserInfo>();
  const Json& status = *status_it;
  if (!bool_field(status, "authenticated")) {
    std::string error = string_field(status, "error");
    if (!error.empty()) return Result(boost::system::in_place_error, "TokenReview: " + error);
    return std::optional<UserInfo>();
  }
  if (!audiences.empty()) {
    auto answered = string_list(status.value("audiences", Json()));
    bool shared = false;
    for (const std::string& want : audiences) {
      shared = shared || std::find(answered.begin(), answered.end(), want) != answered.end();
    }
    if (!shared) return std::optional<UserInfo>();
  }
  UserInfo user;
  if (auto u = status.find("user"); u != status.end() && u->is_object()) {
    user.name = string_field(*u, "username");
    user.uid = string_field(*u, "uid");
    user.groups = string_list(u->value("groups", Json()));
    if (auto extra = u->find("extra"); extra != u->end() && extra->is_object()) {
      for (auto it = extra->begin(); it != extra->end(); ++it)
        user.extra[it.key()] = string_list(it.value());
    }
  }
  return std::optional<UserInfo>(std::move(user));
}

std::string subject_access_review_request(const UserInfo& user, const Attributes& a) {
  Json spec;
  if (a.resource_request) {
    Json resource;
    set_if(resource, "namespace", a.namespace_name);
    set_if(resource, "verb", a.verb);
    set_if(resource, "group", a.group);
    set_if(resource, "version", a.version);
    set_if(resource, "resource", a.resource);
    set_if(resource, "subresource", a.subresource);
    set_if(resource, "name", a.name);
    spec["resourceAttributes"] = resource.is_null() ? Json::object() : std::move(resource);
  } else {
    Json non_resource;
    set_if(non_resource, "path", a.path);
    set_if(non_resource, "verb", a.verb);
    spec["nonResourceAttributes"] =
        non_resource.is_null() ? Json::object() : std::move(non_resource);
  }
  set_if(spec, "user", user.name);
  if (!user.groups.empty()) spec["groups"] = user.groups;
  if (!user.extra.empty()) {
    Json extra = Json::object();
    for (const auto& [key, values] : user.extra)
      extra[key] = values;
    spec["extra"] = std::move(extra);
  }
  set_if(spec, "uid", user.uid);
  Json review;
  review["apiVersion"] = "authorization.k8s.io/v1";
  review["kind"] = "SubjectAccessReview";
  review["spec"] = std::move(spec);
  return to_go_json(review);
}

boost::system::result<Decision, std::string> parse_subject_access_review_response(
    std::string_view body) {
  auto doc = parse_object(body);
  if (!doc) return std::string("the SubjectAccessReview answer is not a JSON object");
  Decision decision;
  if (auto status = doc->find("status"); status != doc->end() && status->is_object()) {
    decision.allowed = bool_field(*status, "allowed");
    decision.denied = bool_field(*status, "denied");
    decision.reason = string_field(*status, "reason");
  }
  if (decision.allowed && decision.denied) {
    return std::string("the SubjectAccessReview answered both allowed and denied");
  }
  return decision;
}

std::optional<UserInfo> request_header_user(const Request& request, const Peer& peer,
                                            const RequestHeaderOptions& options) {
  if (!peer.client_cert || !peer.client_cert->verified) return std::nullopt;
  if (!options.allowed_names.empty() &&
      std::find(options.allowed_names.begin(), options.allowed_names.end(),
                peer.client_cert->common_name) == options.allowed_names.end()) {
    return std::nullopt;
  }
  UserInfo user;
  for (const std::string& header : options.username_headers) {
    auto it = request.find(header);
    if (it != request.end() && !it->value().empty()) {
      user.name = std::string(it->value());
      break;
    }
  }
  if (user.name.empty()) return std::nullopt;
  for (const std::string& header : options.group_headers) {
    auto [it, end] = request.equal_range(header);
    for (; it != end; ++it) {
      if (!it->value().empty()) user.groups.emplace_back(it->value());
    }
  }
  for (const std::string& prefix : options.extra_prefixes) {
    const std::string lower_prefix = lower(prefix);
    for (const auto& field : request) {
      const std::string name = lower(std::string_view(field.name_string()));
      if (!name.starts_with(lower_prefix)) continue;
      const std::string encoded = name.substr(lower_prefix.size());
      // Kept as it came when it is not valid percent-encoding, as the API server does.
      std::string key = path_unescape(encoded).value_or(encoded);
      user.extra[key].emplace_back(field.value());
    }
  }
  return user;
}

std::optional<std::string> bearer_token(const Request& request) {
  auto it = request.find(http::field::authorization);
  if (it == request.end()) return std::nullopt;
  std::string_view value = it->value();
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
    value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
    value.remove_suffix(1);
  const size_t space = value.find(' ');
  if (space == std::string_view::npos || lower(value.substr(0, space)) != "bearer") {
    return std::nullopt;
  }
  std::string_view token = value.substr(space + 1);
  token = token.substr(0, token.find(' '));
  if (token.empty()) return std::nullopt;
  return std::string(token);
}

std::string_view to_string(GuardOutcome outcome) {
  switch (outcome) {
    case GuardOutcome::allowed:
      return "allowed";
    case GuardOutcome::unauthenticated:
      return "unauthenticated";
    case GuardOutcome::forbidden:
      return "forbidden";
    case GuardOutcome::error:
      return "error";
  }
  return "error";
}

AsyncHandler guard(GuardOptions options, Handler inner) {
  auto state = std::make_shared<GuardState>();
  if (!options.now) options.now = [] { return SteadyClock::now(); };
  const auto token_ttl = options.token_ttl;
  const auto allowed_ttl = options.allowed_ttl;
  const auto denied_ttl = options.denied_ttl;
  state->tokens = std::make_shared<ReviewCache<std::optional<UserInfo>>>(
      options.cache_entries,
      [token_ttl](const TokenResult& r) {
        return r ? SteadyClock::duration(token_ttl) : SteadyClock::duration::zero();
      },
      options.now);
  state->decisions = std::make_shared<ReviewCache<Decision>>(
      options.cache_entries,
      [allowed_ttl, denied_ttl](const DecisionResult& r) {
        if (!r) return SteadyClock::duration::zero();
        return SteadyClock::duration(r->allowed ? allowed_ttl : denied_ttl);
      },
      options.now);
  state->options = std::move(options);
  state->inner = std::move(inner);

  return [state](const Request& request, const Peer& peer, Reply reply) {
    const GuardOptions& o = state->options;
    if (is_open(o.open_paths, split_target(request.target()).path)) {
      return reply(call_inner(state->inner, request));
    }
    if (o.request_header) {
      if (auto user = request_header_user(request, peer, *o.request_header)) {
        return state->authorize(state, request, std::move(*user), std::move(reply));
      }
    }
    auto token = bearer_token(request);
    if (!token || !o.authenticate_token) {
      state->observe(GuardOutcome::unauthenticated);
      return reply(unauthorized(request));
    }
    // Keyed by a digest: the cache holds no usable token.
    const std::string key = sha256(*token);
    state->tokens->get(
        key,
        [state, &request, reply](const TokenResult& result) {
          if (!result) {
            state->observe(GuardOutcome::error, result.error());
            return reply(unauthorized(request));
          }
          if (!*result) {
            state->observe(GuardOutcome::unauthenticated);
            return reply(unauthorized(request));
          }
          state->authorize(state, request, **result, reply);
        },
        [state, token = std::move(*token)](std::function<void(TokenResult)> done) {
          state->options.authenticate_token(token, std::move(done));
        });
  };
}

AsyncHandler unguarded(Handler inner) {
  return [inner = std::move(inner)](const Request& request, const Peer&, Reply reply) {
    reply(call_inner(inner, request));
  };
}

}  // namespace nodemeter::api
