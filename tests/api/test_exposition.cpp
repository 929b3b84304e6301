#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "api/exposition.h"

using nodemeter::api::format_go_float;
using nodemeter::api::GoTextSerializer;

TEST_CASE("floats are written as Go's strconv.FormatFloat(f, 'g', -1, 64)", "[exposition]") {
  // Expected strings are what Go prints for the same float64 values.
  CHECK(format_go_float(10) == "10");
  CHECK(format_go_float(0) == "0");
  CHECK(format_go_float(1) == "1");
  CHECK(format_go_float(0.580116) == "0.580116");
  CHECK(format_go_float(1.6243962483020916e+09) == "1.6243962483020916e+09");
  CHECK(format_go_float(1e6) == "1e+06");
  CHECK(format_go_float(123456) == "123456");
  CHECK(format_go_float(999999) == "999999");
  CHECK(format_go_float(1234567) == "1.234567e+06");
  CHECK(format_go_float(749785088) == "7.49785088e+08");
  CHECK(format_go_float(0.0001) == "0.0001");
  CHECK(format_go_float(0.00001) == "1e-05");
  CHECK(format_go_float(0.1 + 0.2) == "0.30000000000000004");
  CHECK(format_go_float(-2.5) == "-2.5");
  CHECK(format_go_float(0.005) == "0.005");
  CHECK(format_go_float(5e-324) == "5e-324");
  CHECK(format_go_float(std::numeric_limits<double>::max()) == "1.7976931348623157e+308");
  CHECK(format_go_float(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(format_go_float(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(format_go_float(std::nan("")) == "NaN");
  CHECK(format_go_float(18446744073709551615.0) == "1.8446744073709552e+19");
}

TEST_CASE("the text format matches the kubelet's bytes", "[exposition]") {
  using prometheus::ClientMetric;
  using prometheus::MetricFamily;
  using prometheus::MetricType;
  MetricFamily counter{"node_cpu_usage_seconds_total",
                       "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
                       MetricType::Counter,
                       {}};
  ClientMetric m;
  m.counter.value = 10;
  m.timestamp_ms = 1624396278302;
  counter.metric.push_back(m);
  MetricFamily gauge{"container_start_time_seconds",
                     "[STABLE] Start time of the container since unix epoch in seconds",
                     MetricType::Gauge,
                     {}};
  ClientMetric g;
  g.label = {{"container", "app"}, {"namespace", "default"}, {"pod", "web-\"1\"\n\\"}};
  g.gauge.value = 1.6243962483020916e+09;
  gauge.metric.push_back(g);
  MetricFamily empty{"empty_family", "has no series", MetricType::Gauge, {}};
  std::string out;
  GoTextSerializer::render(out, {counter, empty, gauge});
  CHECK(out ==
        "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in "
        "core-seconds\n"
        "# TYPE node_cpu_usage_seconds_total counter\n"
        "node_cpu_usage_seconds_total 10 1624396278302\n"
        "# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch "
        "in seconds\n"
        "# TYPE container_start_time_seconds gauge\n"
        "container_start_time_seconds{container=\"app\",namespace=\"default\",pod=\"web-"
        "\\\"1\\\"\\n\\\\\"} "
        "1.6243962483020916e+09\n");
}

TEST_CASE("histograms carry le last and +Inf", "[exposition]") {
  using prometheus::ClientMetric;
  ClientMetric m;
  m.label = {{"file", "memory.stat"}};
  m.histogram.sample_count = 3;
  m.histogram.sample_sum = 0.5;
  m.histogram.bucket = {{1, 0.005}, {3, std::numeric_limits<double>::infinity()}};
  prometheus::MetricFamily h{"read_seconds", "help\\text", prometheus::MetricType::Histogram, {m}};
  std::string out;
  GoTextSerializer::render(out, {h});
  CHECK(out ==
        "# HELP read_seconds help\\\\text\n"
        "# TYPE read_seconds histogram\n"
        "read_seconds_bucket{file=\"memory.stat\",le=\"0.005\"} 1\n"
        "read_seconds_bucket{file=\"memory.stat\",le=\"+Inf\"} 3\n"
        "read_seconds_sum{file=\"memory.stat\"} 0.5\n"
        "read_seconds_count{file=\"memory.stat\"} 3\n");
}
