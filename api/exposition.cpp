#include "api/exposition.h"

#include <charconv>
#include <cmath>
#include <ostream>

namespace nodemeter::api {
namespace {

void append_u64(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

void append_i64(std::string& out, int64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

// HELP text: backslash and newline escaped. Label values: also the double quote.
void append_escaped(std::string& out, std::string_view s, bool quote) {
  for (char c : s) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '"':
        if (quote) {
          out += "\\\"";
        } else {
          out += c;
        }
        break;
      default:
        out += c;
    }
  }
}

void append_labels(std::string& out, const std::vector<prometheus::ClientMetric::Label>& labels,
                   std::string_view extra_name = {}, double extra_value = 0) {
  if (labels.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  for (const auto& l : labels) {
    if (!first) out += ',';
    first = false;
    out += l.name;
    out += "=\"";
    append_escaped(out, l.value, true);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!first) out += ',';
    out += extra_name;
    out += "=\"";
    append_go_float(out, extra_value);
    out += '"';
  }
  out += '}';
}

void append_sample(std::string& out, std::string_view name, std::string_view suffix,
                   const prometheus::ClientMetric& m, double value,
                   std::string_view extra_name = {}, double extra_value = 0) {
  out += name;
  out += suffix;
  append_labels(out, m.label, extra_name, extra_value);
  out += ' ';
  append_go_float(out, value);
  if (m.timestamp_ms != 0) {
    out += ' ';
    append_i64(out, m.timestamp_ms);
  }
  out += '\n';
}

const char* type_name(prometheus::MetricType t) {
  switch (t) {
    case prometheus::MetricType::Counter:
      return "counter";
    case prometheus::MetricType::Gauge:
      return "gauge";
    case prometheus::MetricType::Summary:
      return "summary";
    case prometheus::MetricType::Histogram:
      return "histogram";
    case prometheus::MetricType::Untyped:
      return "untyped";
  }
  return "untyped";
}

}  // namespace

void append_go_float(std::string& out, double f) {
  if (std::isnan(f)) {
    out += "NaN";
    return;
  }
  if (std::isinf(f)) {
    out += f > 0 ? "+Inf" : "-Inf";
    return;
  }
  if (f == 0) {
    out += std::signbit(f) ? "-0" : "0";
    return;
  }
  // Shortest round-trip digits in scientific form, e.g. "1.6243962483020916e+09".
  char sci[40];
  auto [end, ec] = std::to_chars(sci, sci + sizeof sci, f, std::chars_format::scientific);
  std::string_view s(sci, static_cast<size_t>(end - sci));
  bool negative = false;
  if (s.front() == '-') {
    negative = true;
    s.remove_prefix(1);
  }
  const auto e_pos = s.find('e');
  const std::string_view mantissa = s.substr(0, e_pos);
  int exp = 0;
  {
    std::string_view es = s.substr(e_pos + 1);
    if (!es.empty() && es.front() == '+') es.remove_prefix(1);
    std::from_chars(es.data(), es.data() + es.size(), exp);
  }
  char digits[32];  // all significant digits, no point (at most 17)
  size_t n = 0;
  for (char c : mantissa) {
    if (c != '.' && n < sizeof digits) digits[n++] = c;
  }
  const std::string_view d(digits, n);
  if (negative) out += '-';
  // Go's 'g' with the shortest precision: %e when exp < -4 || exp >= 6, else %f.
  if (exp < -4 || exp >= 6) {
    out += d[0];
    if (n > 1) {
      out += '.';
      out.append(d.substr(1));
    }
    out += 'e';
    out += exp < 0 ? '-' : '+';
    const int a = exp < 0 ? -exp : exp;
    if (a < 10) out += '0';
    append_u64(out, static_cast<uint64_t>(a));
    return;
  }
  if (exp < 0) {
    out += "0.";
    out.append(static_cast<size_t>(-exp - 1), '0');
    out.append(d);
    return;
  }
  const size_t int_digits = static_cast<size_t>(exp) + 1;
  if (n <= int_digits) {
    out.append(d);
    out.append(int_digits - n, '0');
  } else {
    out.append(d.substr(0, int_digits));
    out += '.';
    out.append(d.substr(int_digits));
  }
}

std::string format_go_float(double f) {
  std::string s;
  append_go_float(s, f);
  return s;
}

void GoTextSerializer::render(std::string& out,
                              const std::vector<prometheus::MetricFamily>& families) {
  for (const auto& family : families) {
    if (family.metric.empty()) continue;
    out += "# HELP ";
    out += family.name;
    out += ' ';
    append_escaped(out, family.help, false);
    out += "\n# TYPE ";
    out += family.name;
    out += ' ';
    out += type_name(family.type);
    out += '\n';
    for (const auto& m : family.metric) {
      switch (family.type) {
        case prometheus::MetricType::Counter:
          append_sample(out, family.name, "", m, m.counter.value);
          break;
        case prometheus::MetricType::Gauge:
          append_sample(out, family.name, "", m, m.gauge.value);
          break;
        case prometheus::MetricType::Untyped:
          append_sample(out, family.name, "", m, m.untyped.value);
          break;
        case prometheus::MetricType::Summary:
          for (const auto& q : m.summary.quantile) {
            append_sample(out, family.name, "", m, q.value, "quantile", q.quantile);
          }
          append_sample(out, family.name, "_sum", m, m.summary.sample_sum);
          append_sample(out, family.name, "_count", m, static_cast<double>(m.summary.sample_count));
          break;
        case prometheus::MetricType::Histogram:
          for (const auto& b : m.histogram.bucket) {
            append_sample(out, family.name, "_bucket", m, static_cast<double>(b.cumulative_count),
                          "le", b.upper_bound);
          }
          append_sample(out, family.name, "_sum", m, m.histogram.sample_sum);
          append_sample(out, family.name, "_count", m,
                        static_cast<double>(m.histogram.sample_count));
          break;
      }
    }
  }
}

void GoTextSerializer::Serialize(std::ostream& out,
                                 const std::vector<prometheus::MetricFamily>& families) const {
  std::string s;
  render(s, families);
  out << s;
}

}  // namespace nodemeter::api
