// The Prometheus text exposition format (0.0.4) byte for byte as the kubelet's Go client writes it:
// floats in strconv.FormatFloat(f, 'g', -1, 64) form (shortest round-trip digits, exponent form
// from 1e+06 up and below 1e-04), label values escaped as Go does, families and series in the order
// given. Plugs into prometheus-cpp as a Serializer over its MetricFamily data model.
#pragma once

#include <prometheus/metric_family.h>
#include <prometheus/serializer.h>

#include <string>
#include <string_view>
#include <vector>

namespace nodemeter::api {

// Appends f as Go's strconv.FormatFloat(f, 'g', -1, 64) does ("+Inf", "-Inf", "NaN" as expfmt).
void append_go_float(std::string& out, double f);
std::string format_go_float(double f);

class GoTextSerializer final : public prometheus::Serializer {
 public:
  using prometheus::Serializer::Serialize;
  void Serialize(std::ostream& out,
                 const std::vector<prometheus::MetricFamily>& families) const override;
  // Appends the exposition of families to out; families without series are left out, as the Go
  // registry does.
  static void render(std::string& out, const std::vector<prometheus::MetricFamily>& families);
};

inline constexpr std::string_view kExpositionContentType =
    "text/plain; version=0.0.4; charset=utf-8";

}  // namespace nodemeter::api
