#include <catch2/catch.hpp>

#include "agent/agent_command.h"
#include "agent/flags.h"
#include "agent/routes.h"

using namespace std::chrono_literals;
using nodemeter::agent::format_duration;
using nodemeter::agent::parse_agent_options;
using nodemeter::agent::parse_duration;

TEST_CASE("durations parse as Go's time.ParseDuration", "[flags]") {
  CHECK(*parse_duration("500ms") == 500ms);
  CHECK(*parse_duration("5s") == 5s);
  CHECK(*parse_duration("1m") == 1min);
  CHECK(*parse_duration("1m30s") == 90s);
  CHECK(*parse_duration("1.5s") == 1500ms);
  CHECK(*parse_duration("2h") == 2h);
  CHECK(*parse_duration("250us") == 250us);
  CHECK(*parse_duration("0") == 0ns);
  for (const char* bad : {"", "5", "s", "5x", "-5s", "5s5", "1e3s", "999999999999h"}) {
    INFO(bad);
    auto r = parse_duration(bad);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().find("is not a duration") != std::string::npos);
  }
  CHECK(format_duration(5s) == "5s");
  CHECK(format_duration(90s) == "1m30s");
  CHECK(format_duration(500ms) == "500ms");
  CHECK(format_duration(10043ms) == "10.043s");
}

TEST_CASE("agent flags: defaults, forms and one-sentence errors", "[flags]") {
  auto o = parse_agent_options({"--node-name", "n1"});
  REQUIRE(o.has_value());
  CHECK(o->cgroup_root == "/sys/fs/cgroup");
  CHECK(o->proc_root == "/proc");
  CHECK(o->listen == std::vector<std::string>{"127.0.0.1:10261"});
  CHECK(o->interval == 5s);
  CHECK(o->window == 15s);
  CHECK(o->node_name == "n1");
  CHECK(o->max_connections == 16384);

  o = parse_agent_options({"--listen=[::1]:0", "--listen", "127.0.0.1:0", "--interval=1s",
                           "--window", "3s", "--pod-source=cgroup", "--log-format", "json",
                           "--node-name=x"});
  REQUIRE(o.has_value());
  CHECK(o->listen == std::vector<std::string>{"[::1]:0", "127.0.0.1:0"});
  CHECK(o->interval == 1s);
  CHECK(o->window == 3s);
  CHECK(o->pod_source == nodemeter::agent::PodSourceKind::kCgroup);
  CHECK(o->log_format == nodemeter::agent::LogFormat::kJson);

  struct Bad {
    std::vector<std::string> args;
    std::string names;
  };
  for (const auto& bad : std::vector<Bad>{{{"--bogus"}, "--bogus"},
                                          {{"--interval", "5"}, "--interval"},
                                          {{"--interval"}, "--interval"},
                                          {{"--window", "4s"}, "--window"},
                                          {{"--listen", "nonsense"}, "--listen"},
                                          {{"--listen", "127.0.0.1:99999"}, "--listen"},
                                          {{"--pod-source", "magic"}, "--pod-source"},
                                          {{"--log-format", "xml"}, "--log-format"},
                                          {{"--max-connections", "0"}, "--max-connections"},
                                          {{"positional"}, "positional"}}) {
    auto r = parse_agent_options(bad.args);
    INFO(bad.names);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().find(bad.names) != std::string::npos);
    CHECK(r.error().find('\n') == std::string::npos);
  }
}

TEST_CASE("self-metric route labels are bounded patterns", "[flags]") {
  using nodemeter::agent::route_pattern;
  CHECK(route_pattern("/metrics/resource?x=1") == "/metrics/resource");
  CHECK(route_pattern("/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods/coredns-1") ==
        "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}");
  CHECK(route_pattern("/apis/metrics.k8s.io/v1/nodes/n1") ==
        "/apis/metrics.k8s.io/v1/nodes/{name}");
  CHECK(route_pattern("/apis/metrics.k8s.io/v1/pods") == "/apis/metrics.k8s.io/v1/pods");
  CHECK(route_pattern("/random/path/123") == "other");
  CHECK(route_pattern("/apis/metrics.k8s.io/v9/nodes") == "other");
}
