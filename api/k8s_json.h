// JSON as Kubernetes' Go servers write it: Go's encoding/json string escaping, RFC 3339 times
// (metav1.Time), Go duration strings (metav1.Duration), Go's %q quoting for error messages, and
// the metav1.Status bodies the API server answers errors with. Shared by every JSON renderer.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "api/server.h"
#include "api/snapshot.h"

namespace nodemeter::api {

// Objects keep insertion order: Go marshals struct fields in declaration order.
using Json = nlohmann::ordered_json;

// Compact, as the API server's serializer writes (json.Encoder.Encode, so a trailing newline).
std::string to_go_json(const Json& value);
// json.MarshalIndent(v, "", indent spaces), no trailing newline: one space is go-restful's
// pretty printing (the kubelet's endpoints), two the API server's.
std::string to_go_json_indented(const Json& value, int indent);
// A JSON string literal escaped as encoding/json does (HTML-safe: <, >, & as \u003c...).
std::string go_json_string(std::string_view s);

// metav1.Time: RFC 3339 in UTC with whole seconds ("2006-01-02T15:04:05Z").
std::string rfc3339(WallTime t);
// A metav1.Time as JSON: the string, or null for an unknown (zero) time.
Json go_time(const std::optional<WallTime>& t);
// time.Duration.String(): "0s", "1.5µs", "10ms", "10.043s", "1m30s", "1h0m0s", "-2s".
std::string go_duration(std::chrono::nanoseconds d);
// fmt's %q for a string: Go-syntax double-quoted with Go escapes.
std::string go_quote(std::string_view s);

// metav1.Status bodies, as k8s.io/apimachinery/pkg/api/errors builds them.
struct StatusDetails {
  std::string name;
  std::string group;
  std::string kind;
};
Json status_json(unsigned code, std::string_view reason, std::string_view message,
                 const std::optional<StatusDetails>& details);
// errors.NewNotFound(GroupResource{group, resource}, name).
Json status_not_found(std::string_view group, std::string_view resource, std::string_view name);
// errors.NewBadRequest(message).
Json status_bad_request(std::string_view message);
// NewGenericServerResponse for a path no handler serves (404) or a method a route lacks (405).
Json status_no_route(unsigned code);
// errors.NewNotAcceptableError for the media types the server can produce.
Json status_not_acceptable(std::string_view accepted);

// A response with Content-Type: application/json (always, whatever Accept says), the request's
// version and keep-alive. HEAD gets the GET body too: the server sends its length, not the bytes.
Response json_response(const Request& req, unsigned status, std::string body);

// The request target split into a percent-decoded path and its raw query.
struct Target {
  std::string path;
  std::string query;
};
Target split_target(std::string_view target);
// The first value of a query parameter, decoded as Go's url.ParseQuery does ('+' is a space);
// pairs that fail to decode are skipped, as Go drops them.
std::optional<std::string> query_param(std::string_view query, std::string_view key);

}  // namespace nodemeter::api
