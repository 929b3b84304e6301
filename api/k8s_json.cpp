#include "api/k8s_json.h"

#include <array>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace nodemeter::api {
namespace {

constexpr char kHex[] = "0123456789abcdef";

// Length of the valid UTF-8 sequence at s[i], or 0 where the bytes are not valid UTF-8
// (overlong forms, surrogates and code points past U+10FFFF included, as Go rejects them).
size_t utf8_length(std::string_view s, size_t i, uint32_t* code_point) {
  const auto c0 = static_cast<unsigned char>(s[i]);
  size_t n = 0;
  uint32_t cp = 0;
  uint32_t min = 0;
  if (c0 < 0x80) {
    *code_point = c0;
    return 1;
  } else if ((c0 & 0xE0) == 0xC0) {
    n = 2, cp = c0 & 0x1F, min = 0x80;
  } else if ((c0 & 0xF0) == 0xE0) {
    n = 3, cp = c0 & 0x0F, min = 0x800;
  } else if ((c0 & 0xF8) == 0xF0) {
    n = 4, cp = c0 & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  *code_point = cp;
  return n;
}

void append_u4(std::string& out, uint32_t v) {
  out += "\\u";
  for (int shift = 12; shift >= 0; shift -= 4)
    out += kHex[(v >> shift) & 0xF];
}

void write_value(std::string& out, const Json& v, int indent, int depth) {
  const auto newline = [&](int level) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(level * indent), ' ');
  };
  switch (v.type()) {
    case Json::value_t::object: {
      if (v.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      bool first = true;
      for (const auto& [key, item] : v.items()) {
        if (!first) out += ',';
        first = false;
        newline(depth + 1);
        out += go_json_string(key);
        out += indent < 0 ? ":" : ": ";
        write_value(out, item, indent, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    case Json::value_t::array: {
      if (v.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      bool first = true;
      for (const auto& item : v) {
        if (!first) out += ',';
        first = false;
        newline(depth + 1);
        write_value(out, item, indent, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Json::value_t::string:
      out += go_json_string(v.get_ref<const std::string&>());
      return;
    case Json::value_t::boolean:
      out += v.get<bool>() ? "true" : "false";
      return;
    case Json::value_t::number_unsigned:
      out += std::to_string(v.get<uint64_t>());
      return;
    case Json::value_t::number_integer:
      out += std::to_string(v.get<int64_t>());
      return;
    case Json::value_t::number_float: {
      // Go writes floats in the shortest form that reads back exactly, without an exponent
      // for the magnitudes metrics carry.
      std::array<char, 64> buf{};
      auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v.get<double>(),
                                     std::chars_format::fixed);
      out.append(buf.data(), ec == std::errc{} ? end : buf.data());
      return;
    }
    case Json::value_t::null:
    case Json::value_t::discarded:
    case Json::value_t::binary:
      out += "null";
      return;
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Go's url unescape; nullopt on a malformed escape.
std::optional<std::string> url_unescape(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hex_value(s[i + 1]);
      const int lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string go_json_string(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        case '<':
        case '>':
        case '&':
          append_u4(out, c);
          break;
        default:
          if (c < 0x20) {
            append_u4(out, c);
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    uint32_t cp = 0;
    const size_t n = utf8_length(s, i, &cp);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (cp == 0x2028 || cp == 0x2029) {
      append_u4(out, cp);
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  out += '"';
  return out;
}

std::string to_go_json(const Json& value) {
  std::string out;
  write_value(out, value, -1, 0);
  out += '\n';
  return out;
}

std::string to_go_json_indented(const Json& value, int indent) {
  std::string out;
  write_value(out, value, indent, 0);
  return out;
}

std::string rfc3339(WallTime t) {
  const auto secs = std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
  const auto days = std::chrono::floor<std::chrono::days>(std::chrono::seconds{secs});
  const std::chrono::year_month_day ymd{std::chrono::sys_days{days}};
  const int64_t rem = secs - std::chrono::seconds{days}.count();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(rem / 3600), static_cast<int>(rem / 60 % 60),
                static_cast<int>(rem % 60));
  return buf;
}

Json go_time(const std::optional<WallTime>& t) {
  if (!t) return Json(nullptr);
  return rfc3339(*t);
}

std::string go_duration(std::chrono::nanoseconds d) {
  // Port of time.Duration.format: built from the end.
  std::array<char, 32> buf{};
  size_t w = buf.size();
  const int64_t ns = d.count();
  const bool neg = ns < 0;
  uint64_t u = neg ? uint64_t{0} - static_cast<uint64_t>(ns) : static_cast<uint64_t>(ns);

  const auto fmt_frac = [&](uint64_t v, int prec) {
    bool print = false;
    for (int i = 0; i < prec; ++i) {
      const auto digit = static_cast<char>(v % 10);
      print = print || digit != 0;
      if (print) buf[--w] = static_cast<char>('0' + digit);
      v /= 10;
    }
    if (print) buf[--w] = '.';
    return v;
  };
  const auto fmt_int = [&](uint64_t v) {
    if (v == 0) {
      buf[--w] = '0';
      return;
    }
    while (v > 0) {
      buf[--w] = static_cast<char>('0' + v % 10);
      v /= 10;
    }
  };

  if (u < 1'000'000'000) {
    int prec = 0;
    buf[--w] = 's';
    if (u == 0) {
      buf[--w] = '0';
      return std::string(buf.data() + w, buf.size() - w);
    } else if (u < 1'000) {
      prec = 0;
      buf[--w] = 'n';
    } else if (u < 1'000'000) {
      prec = 3;
      buf[--w] = '\xB5';  // U+00B5 MICRO SIGN, as UTF-8 C2 B5
      buf[--w] = '\xC2';
    } else {
      prec = 6;
      buf[--w] = 'm';
    }
    u = fmt_frac(u, prec);
    fmt_int(u);
  } else {
    buf[--w] = 's';
    u = fmt_frac(u, 9);
    fmt_int(u % 60);
    u /= 60;
    if (u > 0) {
      buf[--w] = 'm';
      fmt_int(u % 60);
      u /= 60;
      if (u > 0) {
        buf[--w] = 'h';
        fmt_int(u);
      }
    }
  }
  if (neg) buf[--w] = '-';
  return std::string(buf.data() + w, buf.size() - w);
}

std::string go_quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    uint32_t cp = 0;
    const size_t n = utf8_length(s, i, &cp);
    if (n == 0) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
      ++i;
      continue;
    }
    if (n == 1) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\a':
          out += "\\a";
          break;
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\v':
          out += "\\v";
          break;
        default:
          if (c < 0x20 || c == 0x7F) {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 0xF];
          } else {
            out += static_cast<char>(c);
          }
      }
    } else if ((cp >= 0x80 && cp <= 0x9F) || cp == 0xAD || cp == 0x2028 || cp == 0x2029 ||
               cp == 0xFEFF) {
      append_u4(out, cp);  // not printable for strconv.IsPrint
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  out += '"';
  return out;
}

Json status_json(unsigned code, std::string_view reason, std::string_view message,
                 const std::optional<StatusDetails>& details) {
  Json j;
  j["kind"] = "Status";
  j["apiVersion"] = "v1";
  j["metadata"] = Json::object();
  j["status"] = "Failure";
  if (!message.empty()) j["message"] = std::string(message);
  if (!reason.empty()) j["reason"] = std::string(reason);
  if (details) {
    Json d = Json::object();
    if (!details->name.empty()) d["name"] = details->name;
    if (!details->group.empty()) d["group"] = details->group;
    if (!details->kind.empty()) d["kind"] = details->kind;
    j["details"] = std::move(d);
  }
  j["code"] = code;
  return j;
}

Json status_not_found(std::string_view group, std::string_view resource, std::string_view name) {
  std::string qualified(resource);
  if (!group.empty()) qualified += "." + std::string(group);
  return status_json(404, "NotFound", qualified + " " + go_quote(name) + " not found",
                     StatusDetails{std::string(name), std::string(group), std::string(resource)});
}

Json status_bad_request(std::string_view message) {
  return status_json(400, "BadRequest", message, std::nullopt);
}

Json status_no_route(unsigned code) {
  if (code == 405) {
    return status_json(405, "MethodNotAllowed",
                       "the server does not allow this method on the requested resource",
                       StatusDetails{});
  }
  return status_json(404, "NotFound", "the server could not find the requested resource",
                     StatusDetails{});
}

Json status_not_acceptable(std::string_view accepted) {
  return status_json(406, "NotAcceptable",
                     "only the following media types are accepted: " + std::string(accepted),
                     std::nullopt);
}

Response json_response(const Request& req, unsigned status, std::string body) {
  Response res{static_cast<http::status>(status), req.version()};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-cache, private");
  res.set("X-Content-Type-Options", "nosniff");
  if (status == 405) res.set(http::field::allow, "GET, HEAD");
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Target split_target(std::string_view target) {
  Target t;
  const size_t q = target.find('?');
  const std::string_view raw_path = target.substr(0, q);
  if (q != std::string_view::npos) t.query = std::string(target.substr(q + 1));
  auto decoded = url_unescape(raw_path, false);
  t.path = decoded ? std::move(*decoded) : std::string(raw_path);
  return t;
}

std::optional<std::string> query_param(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty() || pair.find(';') != std::string_view::npos) continue;
    const size_t eq = pair.find('=');
    auto k = url_unescape(pair.substr(0, eq), true);
    if (!k) continue;
    std::optional<std::string> v =
        eq == std::string_view::npos ? std::string{} : url_unescape(pair.substr(eq + 1), true);
    if (!v) continue;
    if (*k == key) return v;
  }
  return std::nullopt;
}

}  // namespace nodemeter::api
