#include "api/node_view.h"

#include <algorithm>
#include <charconv>
#include <iterator>
#include <limits>
#include <tuple>

#include "api/k8s_json.h"

namespace nodemeter::api {
namespace {

constexpr int kVersion = 1;

// --- encoding ------------------------------------------------------------------------------------

template <class Int>
void append_int(std::string& out, Int v) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, ec == std::errc{} ? end : buf);
}

int64_t to_ns(WallTime t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

void append_key(std::string& out, std::string_view key) {
  out += '"';
  out += key;
  out += "\":";
}

void append_usage(std::string& out, const ResourceUsage& u) {
  out += "{\"cpu\":";
  append_int(out, u.cpu_nano_cores);
  out += ",\"memory\":";
  append_int(out, u.memory_bytes);
  if (u.swap_bytes) {
    out += ",\"swap\":";
    append_int(out, *u.swap_bytes);
  }
  out += '}';
}

void append_labels(std::string& out, const std::map<std::string, std::string>& labels) {
  if (labels.empty()) return;
  out += ",\"labels\":{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    out += go_json_string(k);
    out += ':';
    out += go_json_string(v);
  }
  out += '}';
}

void append_time_window(std::string& out, WallTime timestamp, std::chrono::nanoseconds window) {
  out += ",\"timestamp\":";
  append_int(out, to_ns(timestamp));
  out += ",\"window\":";
  append_int(out, window.count());
}

// --- parsing -------------------------------------------------------------------------------------
//
// A strict JSON reader written for this document: it reads straight into a MetricsView (no
// document tree: an aggregator parses a thousand of these per cycle), skips keys it does not
// know, and stops at the first problem with a sentence naming the place. Never throws.

enum class Kind { kObject, kArray, kString, kNumber, kBool, kNull, kEnd, kInvalid };

class Reader {
 public:
  explicit Reader(std::string_view text) : s_(text) {}

  const std::string& error() const { return error_; }
  bool failed() const { return !error_.empty(); }

  bool fail(std::string_view where, std::string_view what) {
    if (error_.empty()) error_ = "node view: " + std::string(where) + ": " + std::string(what);
    return false;
  }
  bool syntax(std::string_view what) {
    if (error_.empty()) {
      error_ = "node view: not JSON (byte " + std::to_string(pos_) + ": " + std::string(what) + ")";
    }
    return false;
  }

  // What the next value is, after whitespace.
  Kind peek() {
    skip_ws();
    if (pos_ >= s_.size()) return Kind::kEnd;
    switch (s_[pos_]) {
      case '{':
        return Kind::kObject;
      case '[':
        return Kind::kArray;
      case '"':
        return Kind::kString;
      case 't':
      case 'f':
        return Kind::kBool;
      case 'n':
        return Kind::kNull;
      default:
        return (s_[pos_] == '-' || (s_[pos_] >= '0' && s_[pos_] <= '9')) ? Kind::kNumber
                                                                         : Kind::kInvalid;
    }
  }

  bool at_end() {
    skip_ws();
    return pos_ >= s_.size();
  }

  // Iterates the members of an object: on_member(key) reads the value (or skips it).
  template <class F>
  bool object(F&& on_member) {
    if (!consume('{')) return syntax("expected '{'");
    if (consume_ws('}')) return true;
    std::string key;
    while (true) {
      if (peek() != Kind::kString) return syntax("expected a member name");
      if (!string(key)) return false;
      if (!consume_ws(':')) return syntax("expected ':'");
      if (!on_member(key)) return false;
      if (consume_ws(',')) continue;
      if (consume_ws('}')) return true;
      return syntax("expected ',' or '}'");
    }
  }

  // Iterates the elements of an array: on_element(index) reads the value.
  template <class F>
  bool array(F&& on_element) {
    if (!consume('[')) return syntax("expected '['");
    if (consume_ws(']')) return true;
    for (size_t i = 0;; ++i) {
      if (!on_element(i)) return false;
      if (consume_ws(',')) continue;
      if (consume_ws(']')) return true;
      return syntax("expected ',' or ']'");
    }
  }

  bool string(std::string& out) {
    skip_ws();
    if (!consume('"')) return syntax("expected a string");
    out.clear();
    while (true) {
      const size_t start = pos_;
      while (pos_ < s_.size()) {
        const auto c = static_cast<unsigned char>(s_[pos_]);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++pos_;
      }
      out.append(s_.data() + start, pos_ - start);
      if (pos_ >= s_.size()) return syntax("unterminated string");
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20) return syntax("control character in a string");
      if (c >= 0x80) {
        const size_t n = utf8_sequence(s_.substr(pos_));
        if (n == 0) return syntax("invalid UTF-8 in a string");
        out.append(s_.data() + pos_, n);
        pos_ += n;
        continue;
      }
      if (!escape(out)) return false;
    }
  }

  // An integer token; `text` is the whole number token, for messages.
  struct Number {
    std::string_view text;
    bool negative = false;
    bool integral = true;  // no fraction, no exponent
  };
  bool number(Number& out) {
    skip_ws();
    const size_t start = pos_;
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9') return syntax("invalid number");
    if (s_[pos_] == '0') {
      ++pos_;
      if (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        return syntax("invalid number (leading zero)");
      }
    } else {
      digits();
    }
    out.integral = true;
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (!digits()) return syntax("invalid number");
      out.integral = false;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (!digits()) return syntax("invalid number");
      out.integral = false;
    }
    out.text = s_.substr(start, pos_ - start);
    out.negative = out.text.front() == '-';
    return true;
  }

  // Skips any value; `text` (when given) receives its source text.
  bool skip(std::string_view* text = nullptr, int depth = 0) {
    if (depth > 64) return syntax("nested too deeply");
    const Kind kind = peek();
    const size_t start = pos_;
    bool ok = true;
    switch (kind) {
      case Kind::kObject:
        ok = object([&](const std::string&) { return skip(nullptr, depth + 1); });
        break;
      case Kind::kArray:
        ok = array([&](size_t) { return skip(nullptr, depth + 1); });
        break;
      case Kind::kString: {
        std::string ignored;
        ok = string(ignored);
        break;
      }
      case Kind::kNumber: {
        Number n;
        ok = number(n);
        break;
      }
      case Kind::kBool:
        ok = literal("true") || literal("false") || syntax("invalid literal");
        break;
      case Kind::kNull:
        ok = literal("null") || syntax("invalid literal");
        break;
      case Kind::kEnd:
        return syntax("unexpected end of input");
      case Kind::kInvalid:
        return syntax("unexpected character");
    }
    if (ok && text) *text = s_.substr(start, pos_ - start);
    return ok;
  }

  bool null() { return literal("null"); }

 private:
  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t'))
      ++pos_;
  }
  bool consume(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool consume_ws(char c) {
    skip_ws();
    return consume(c);
  }
  bool digits() {
    const size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9')
      ++pos_;
    return pos_ > start;
  }
  bool literal(std::string_view word) {
    skip_ws();
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  // The length of one valid UTF-8 sequence at the start of s, or 0.
  static size_t utf8_sequence(std::string_view s) {
    const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
    const auto cont = [&](size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
    const unsigned char c = b(0);
    if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
      if (!cont(1) || !cont(2)) return 0;
      if (c == 0xE0 && b(1) < 0xA0) return 0;   // overlong
      if (c == 0xED && b(1) >= 0xA0) return 0;  // surrogate
      return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
      if (!cont(1) || !cont(2) || !cont(3)) return 0;
      if (c == 0xF0 && b(1) < 0x90) return 0;   // overlong
      if (c == 0xF4 && b(1) >= 0x90) return 0;  // above U+10FFFF
      return 4;
    }
    return 0;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  bool hex4(uint32_t& out) {
    if (pos_ + 4 > s_.size()) return false;
    out = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      out <<= 4;
      if (c >= '0' && c <= '9') {
        out |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        out |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        out |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    return true;
  }

  // After a backslash.
  bool escape(std::string& out) {
    ++pos_;
    if (pos_ >= s_.size()) return syntax("unterminated string");
    const char c = s_[pos_++];
    switch (c) {
      case '"':
      case '\\':
      case '/':
        out += c;
        return true;
      case 'b':
        out += '\b';
        return true;
      case 'f':
        out += '\f';
        return true;
      case 'n':
        out += '\n';
        return true;
      case 'r':
        out += '\r';
        return true;
      case 't':
        out += '\t';
        return true;
      case 'u': {
        uint32_t cp = 0;
        if (!hex4(cp)) return syntax("invalid \\u escape");
        if (cp >= 0xDC00 && cp <= 0xDFFF) return syntax("lone low surrogate in a \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          uint32_t low = 0;
          if (!consume('\\') || !consume('u') || !hex4(low) || low < 0xDC00 || low > 0xDFFF) {
            return syntax("high surrogate without its low half in a \\u escape");
          }
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        append_utf8(out, cp);
        return true;
      }
      default:
        --pos_;  // at the character after the backslash
        return syntax("invalid escape in a string");
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
  std::string error_;
};

// Where a value sits in the document ("pods[3].containers[0].usage.cpu"), spelled out only for
// an error message.
struct Path {
  const Path* parent = nullptr;
  std::string_view key;  // a member's name; empty for an array element
  size_t index = 0;

  Path member(std::string_view name) const { return Path{this, name, 0}; }
  Path element(size_t i) const { return Path{this, {}, i}; }
  std::string str() const {
    std::string out = parent ? parent->str() : std::string();
    if (key.empty()) return out + "[" + std::to_string(index) + "]";
    return out.empty() ? std::string(key) : out + "." + std::string(key);
  }
};

// A vector kept per thread for reading one array into, empty when handed out.
template <class T>
std::vector<T>& scratch() {
  thread_local std::vector<T> items;
  items.clear();
  return items;
}

// The schema on top of the reader: each function reads one value at the current position.
class ViewReader {
 public:
  explicit ViewReader(std::string_view text) : r_(text) {}
  const std::string& error() const { return r_.error(); }
  bool fail(const Path& where, std::string_view what) { return r_.fail(where.str(), what); }

  bool read_document(MetricsView& view) {
    const Kind kind = r_.peek();
    if (kind != Kind::kObject) {
      if (kind == Kind::kEnd || kind == Kind::kInvalid) return r_.skip();  // the syntax error
      if (!r_.skip() || !r_.at_end()) return r_.syntax("trailing characters");
      return r_.fail("document", "not a JSON object");
    }
    bool have_version = false;
    const bool ok = r_.object([&](const std::string& key) {
      if (key == "version") {
        have_version = true;
        return version();
      }
      if (key == "nodes") {
        return optional_array(key, [&](size_t i) {
          NodeMetricsItem item;
          if (!node(item, Path{nullptr, "nodes"}.element(i))) return false;
          view.nodes.push_back(std::move(item));
          return true;
        });
      }
      if (key == "pods") {
        // Read into a vector kept by the thread, then moved into one of the exact size: a
        // vector grown by doubling leaves its smaller copies as holes between the pods' strings
        // (an aggregator reads a thousand views per cycle and keeps them).
        std::vector<PodMetricsItem>& pods = scratch<PodMetricsItem>();
        const bool pods_ok = optional_array(key, [&](size_t i) {
          pods.emplace_back();
          return pod(pods.back(), Path{nullptr, "pods"}.element(i));
        });
        if (!pods_ok) return false;
        view.pods.clear();
        view.pods.reserve(pods.size());
        std::move(pods.begin(), pods.end(), std::back_inserter(view.pods));
        pods.clear();
        return true;
      }
      if (key == "knownNodes") {
        return optional_array(key, [&](size_t i) {
          std::string name;
          if (!string(name, Path{nullptr, "knownNodes"}.element(i))) return false;
          view.known_nodes.insert(view.known_nodes.end(), std::move(name));
          return true;
        });
      }
      if (key == "knownPods") {
        return optional_array(key, [&](size_t i) {
          const Path root{nullptr, "knownPods"};
          const Path where = root.element(i);
          const char* what = "not a [namespace, name] pair of strings";
          if (const Kind k = r_.peek(); k != Kind::kArray) return typed_fail(k, where, what);
          std::pair<std::string, std::string> key_pair;
          size_t count = 0;
          const bool pair_ok = r_.array([&](size_t k) {
            count = k + 1;
            if (k > 1 || r_.peek() != Kind::kString) return fail(where, what);
            return r_.string(k == 0 ? key_pair.first : key_pair.second);
          });
          if (!pair_ok) return false;
          if (count != 2) return fail(where, what);
          view.known_pods.insert(view.known_pods.end(), std::move(key_pair));
          return true;
        });
      }
      return r_.skip();
    });
    if (!ok) return false;
    if (!r_.at_end()) return r_.syntax("trailing characters");
    if (!have_version) return r_.fail("version", "missing");
    return order(view);
  }

 private:
  bool version() {
    const Kind kind = r_.peek();
    std::string_view text;
    if (kind == Kind::kNumber) {
      Reader::Number n;
      if (!r_.number(n)) return false;
      if (n.integral && !n.negative && n.text == std::to_string(kVersion)) return true;
      text = n.text;
    } else if (!r_.skip(&text)) {
      return false;
    }
    return r_.fail("version", "unsupported " + std::string(text) + " (this build reads version " +
                                  std::to_string(kVersion) + ")");
  }

  template <class F>
  bool optional_array(std::string_view where, F&& element) {
    const Kind kind = r_.peek();
    if (kind == Kind::kNull) return r_.null();
    if (kind != Kind::kArray)
      return kind == Kind::kInvalid || kind == Kind::kEnd ? r_.skip()
                                                          : r_.fail(where, "not an array");
    return r_.array(element);
  }

  bool string(std::string& out, const Path& where) {
    const Kind kind = r_.peek();
    if (kind != Kind::kString) return typed_fail(kind, where, "not a string");
    return r_.string(out);
  }

  // A value of the wrong kind: a type error, or the syntax error where there is no value at all.
  bool typed_fail(Kind kind, const Path& where, std::string_view what) {
    if (kind == Kind::kInvalid || kind == Kind::kEnd) return r_.skip();
    return fail(where, what);
  }

  bool unsigned_value(uint64_t& out, const Path& where) {
    const Kind kind = r_.peek();
    if (kind != Kind::kNumber) return typed_fail(kind, where, "not an unsigned integer");
    Reader::Number n;
    if (!r_.number(n)) return false;
    if (!n.integral) return fail(where, "not an unsigned integer");
    if (n.negative) return fail(where, "negative");
    const auto [p, ec] = std::from_chars(n.text.data(), n.text.data() + n.text.size(), out);
    if (ec != std::errc{}) return fail(where, "not an unsigned integer");  // above 2^64 - 1
    return true;
  }

  bool signed_value(int64_t& out, const Path& where) {
    const Kind kind = r_.peek();
    if (kind != Kind::kNumber) return typed_fail(kind, where, "not an integer");
    Reader::Number n;
    if (!r_.number(n)) return false;
    if (!n.integral) return fail(where, "not an integer");
    const auto [p, ec] = std::from_chars(n.text.data(), n.text.data() + n.text.size(), out);
    if (ec == std::errc{}) return true;
    uint64_t u = 0;
    const auto [pu, ecu] = std::from_chars(n.text.data(), n.text.data() + n.text.size(), u);
    // Beyond int64 but within uint64: a number, only too large; beyond both: not an integer.
    return fail(where, ecu == std::errc{} ? "out of range" : "not an integer");
  }

  bool labels(std::map<std::string, std::string>& out, const Path& where) {
    const Kind kind = r_.peek();
    if (kind == Kind::kNull) return r_.null();
    if (kind != Kind::kObject) return typed_fail(kind, where, "not an object");
    return r_.object([&](const std::string& key) {
      std::string value;
      if (!string(value, where.member(key))) return false;
      out.insert_or_assign(out.end(), key, std::move(value));
      return true;
    });
  }

  bool usage(ResourceUsage& out, const Path& where) {
    const Kind kind = r_.peek();
    if (kind != Kind::kObject) return typed_fail(kind, where, "not an object");
    bool cpu = false;
    bool memory = false;
    const bool ok = r_.object([&](const std::string& key) {
      if (key == "cpu") {
        cpu = true;
        return unsigned_value(out.cpu_nano_cores, where.member("cpu"));
      }
      if (key == "memory") {
        memory = true;
        return unsigned_value(out.memory_bytes, where.member("memory"));
      }
      if (key == "swap") {
        if (r_.peek() == Kind::kNull) {
          out.swap_bytes.reset();
          return r_.null();
        }
        uint64_t swap = 0;
        if (!unsigned_value(swap, where.member("swap"))) return false;
        out.swap_bytes = swap;
        return true;
      }
      return r_.skip();
    });
    if (!ok) return false;
    if (!cpu) return fail(where.member("cpu"), "missing");
    if (!memory) return fail(where.member("memory"), "missing");
    return true;
  }

  // timestamp and window members, checked when the object ends.
  struct TimeWindow {
    bool have_timestamp = false;
    bool have_window = false;
    int64_t timestamp_ns = 0;
    int64_t window_ns = 0;
  };
  bool time_window_member(const std::string& key, TimeWindow& tw, const Path& where,
                          bool& handled) {
    handled = true;
    if (key == "timestamp") {
      tw.have_timestamp = true;
      return signed_value(tw.timestamp_ns, where.member("timestamp"));
    }
    if (key == "window") {
      tw.have_window = true;
      if (!signed_value(tw.window_ns, where.member("window"))) return false;
      if (tw.window_ns < 0) return fail(where.member("window"), "negative");
      return true;
    }
    handled = false;
    return true;
  }
  bool time_window_done(const TimeWindow& tw, const Path& where, WallTime& timestamp,
                        std::chrono::nanoseconds& window) {
    if (!tw.have_timestamp) return fail(where.member("timestamp"), "missing");
    if (!tw.have_window) return fail(where.member("window"), "missing");
    timestamp = WallTime(
        std::chrono::duration_cast<WallTime::duration>(std::chrono::nanoseconds{tw.timestamp_ns}));
    window = std::chrono::nanoseconds{tw.window_ns};
    return true;
  }

  bool name_field(std::string& out, bool& seen, const Path& where, bool allow_empty) {
    seen = true;
    if (!string(out, where)) return false;
    if (!allow_empty && out.empty()) return fail(where, "empty");
    return true;
  }

  bool node(NodeMetricsItem& item, const Path& where) {
    const Kind kind = r_.peek();
    if (kind != Kind::kObject) return typed_fail(kind, where, "not an object");
    bool name = false;
    bool have_usage = false;
    TimeWindow tw;
    const bool ok = r_.object([&](const std::string& key) {
      if (key == "name") return name_field(item.name, name, where.member("name"), false);
      if (key == "labels") return labels(item.labels, where.member("labels"));
      if (key == "usage") {
        have_usage = true;
        return usage(item.usage, where.member("usage"));
      }
      bool handled = false;
      if (!time_window_member(key, tw, where, handled)) return false;
      return handled || r_.skip();
    });
    if (!ok) return false;
    if (!name) return fail(where.member("name"), "missing");
    if (!time_window_done(tw, where, item.timestamp, item.window)) return false;
    if (!have_usage) return fail(where.member("usage"), "missing");
    return true;
  }

  bool pod(PodMetricsItem& item, const Path& where) {
    const Kind kind = r_.peek();
    if (kind != Kind::kObject) return typed_fail(kind, where, "not an object");
    bool namespace_ = false;
    bool name = false;
    bool containers = false;
    TimeWindow tw;
    const bool ok = r_.object([&](const std::string& key) {
      if (key == "namespace") {
        return name_field(item.namespace_, namespace_, where.member("namespace"), true);
      }
      if (key == "name") return name_field(item.name, name, where.member("name"), false);
      if (key == "labels") return labels(item.labels, where.member("labels"));
      if (key == "containers") {
        containers = true;
        const Path here = where.member("containers");
        const Kind k = r_.peek();
        if (k != Kind::kArray) return typed_fail(k, here, "not an array");
        std::vector<ContainerMetricsItem>& read = scratch<ContainerMetricsItem>();
        const bool read_ok = r_.array([&](size_t i) {
          read.emplace_back();
          return container(read.back(), here.element(i));
        });
        if (!read_ok) return false;
        item.containers.assign(std::make_move_iterator(read.begin()),
                               std::make_move_iterator(read.end()));
        read.clear();
        return true;
      }
      bool handled = false;
      if (!time_window_member(key, tw, where, handled)) return false;
      return handled || r_.skip();
    });
    if (!ok) return false;
    if (!namespace_) return fail(where.member("namespace"), "missing");
    if (!name) return fail(where.member("name"), "missing");
    if (!time_window_done(tw, where, item.timestamp, item.window)) return false;
    if (!containers) return fail(where.member("containers"), "missing");
    std::sort(item.containers.begin(), item.containers.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    for (size_t i = 1; i < item.containers.size(); ++i) {
      if (item.containers[i - 1].name == item.containers[i].name) {
        return fail(where.member("containers"),
                    "duplicate container \"" + item.containers[i].name + "\"");
      }
    }
    return true;
  }

  bool container(ContainerMetricsItem& c, const Path& where) {
    const Kind kind = r_.peek();
    if (kind != Kind::kObject) return typed_fail(kind, where, "not an object");
    bool name = false;
    bool have_usage = false;
    const bool ok = r_.object([&](const std::string& key) {
      if (key == "name") return name_field(c.name, name, where.member("name"), false);
      if (key == "usage") {
        have_usage = true;
        return usage(c.usage, where.member("usage"));
      }
      return r_.skip();
    });
    if (!ok) return false;
    if (!name) return fail(where.member("name"), "missing");
    if (!have_usage) return fail(where.member("usage"), "missing");
    return true;
  }

  bool order(MetricsView& view) {
    const auto by_name = [](const auto& a, const auto& b) { return a.name < b.name; };
    if (!std::is_sorted(view.nodes.begin(), view.nodes.end(), by_name)) {
      std::sort(view.nodes.begin(), view.nodes.end(), by_name);
    }
    for (size_t i = 1; i < view.nodes.size(); ++i) {
      if (view.nodes[i - 1].name == view.nodes[i].name) {
        return r_.fail("nodes", "duplicate node \"" + view.nodes[i].name + "\"");
      }
    }
    const auto key = [](const PodMetricsItem& p) { return std::tie(p.namespace_, p.name); };
    const auto by_key = [&](const auto& a, const auto& b) { return key(a) < key(b); };
    if (!std::is_sorted(view.pods.begin(), view.pods.end(), by_key)) {
      std::sort(view.pods.begin(), view.pods.end(), by_key);
    }
    for (size_t i = 1; i < view.pods.size(); ++i) {
      if (key(view.pods[i - 1]) == key(view.pods[i])) {
        return r_.fail(
            "pods", "duplicate pod \"" + view.pods[i].namespace_ + "/" + view.pods[i].name + "\"");
      }
    }
    return true;
  }

  Reader r_;
};

}  // namespace

std::string encode_node_view(const MetricsView& view) {
  std::string out;
  out.reserve(256 + 96 * view.known_pods.size() + 200 * view.pods.size());
  out += "{\"version\":";
  append_int(out, kVersion);
  out += ",\"nodes\":[";
  for (size_t i = 0; i < view.nodes.size(); ++i) {
    const NodeMetricsItem& n = view.nodes[i];
    if (i) out += ',';
    out += "{\"name\":";
    out += go_json_string(n.name);
    append_labels(out, n.labels);
    append_time_window(out, n.timestamp, n.window);
    out += ",\"usage\":";
    append_usage(out, n.usage);
    out += '}';
  }
  out += "],\"pods\":[";
  for (size_t i = 0; i < view.pods.size(); ++i) {
    const PodMetricsItem& p = view.pods[i];
    if (i) out += ',';
    out += "{\"namespace\":";
    out += go_json_string(p.namespace_);
    out += ",\"name\":";
    out += go_json_string(p.name);
    append_labels(out, p.labels);
    append_time_window(out, p.timestamp, p.window);
    out += ",\"containers\":[";
    for (size_t c = 0; c < p.containers.size(); ++c) {
      if (c) out += ',';
      out += "{\"name\":";
      out += go_json_string(p.containers[c].name);
      out += ",\"usage\":";
      append_usage(out, p.containers[c].usage);
      out += '}';
    }
    out += "]}";
  }
  out += "],";
  append_key(out, "knownNodes");
  out += '[';
  bool first = true;
  for (const auto& n : view.known_nodes) {
    if (!first) out += ',';
    first = false;
    out += go_json_string(n);
  }
  out += "],";
  append_key(out, "knownPods");
  out += '[';
  first = true;
  for (const auto& [ns, name] : view.known_pods) {
    if (!first) out += ',';
    first = false;
    out += '[';
    out += go_json_string(ns);
    out += ',';
    out += go_json_string(name);
    out += ']';
  }
  out += "]}";
  return out;
}

boost::system::result<MetricsView, std::string> parse_node_view(std::string_view text) {
  MetricsView view;
  ViewReader reader(text);
  if (!reader.read_document(view)) {
    return boost::system::result<MetricsView, std::string>(boost::system::in_place_error,
                                                           reader.error());
  }
  return view;
}

MergedView merge_views(std::vector<MetricsView>&& sources) {
  MergedView out;
  out.slices.resize(sources.size());

  struct NodeRef {
    NodeMetricsItem* item;
    uint32_t source;
  };
  struct PodRef {
    PodMetricsItem* item;
    uint32_t source;
  };
  size_t node_count = 0;
  size_t pod_count = 0;
  for (const auto& s : sources) {
    node_count += s.nodes.size();
    pod_count += s.pods.size();
  }
  std::vector<NodeRef> nodes;
  std::vector<PodRef> pods;
  nodes.reserve(node_count);
  pods.reserve(pod_count);
  for (uint32_t i = 0; i < sources.size(); ++i) {
    for (auto& n : sources[i].nodes)
      nodes.push_back({&n, i});
    for (auto& p : sources[i].pods)
      pods.push_back({&p, i});
  }
  // By key, then newest first, then source order: the first of each key wins.
  std::sort(nodes.begin(), nodes.end(), [](const NodeRef& a, const NodeRef& b) {
    if (a.item->name != b.item->name) return a.item->name < b.item->name;
    if (a.item->timestamp != b.item->timestamp) return a.item->timestamp > b.item->timestamp;
    return a.source < b.source;
  });
  std::sort(pods.begin(), pods.end(), [](const PodRef& a, const PodRef& b) {
    if (int c = a.item->namespace_.compare(b.item->namespace_); c != 0) return c < 0;
    if (int c = a.item->name.compare(b.item->name); c != 0) return c < 0;
    if (a.item->timestamp != b.item->timestamp) return a.item->timestamp > b.item->timestamp;
    return a.source < b.source;
  });
  out.view.nodes.reserve(nodes.size());
  for (const NodeRef& r : nodes) {
    if (!out.view.nodes.empty() && out.view.nodes.back().name == r.item->name) continue;
    out.slices[r.source].nodes.push_back(static_cast<uint32_t>(out.view.nodes.size()));
    out.view.nodes.push_back(std::move(*r.item));
  }
  out.view.pods.reserve(pods.size());
  for (const PodRef& r : pods) {
    if (!out.view.pods.empty() && out.view.pods.back().namespace_ == r.item->namespace_ &&
        out.view.pods.back().name == r.item->name) {
      continue;
    }
    out.slices[r.source].pods.push_back(static_cast<uint32_t>(out.view.pods.size()));
    out.view.pods.push_back(std::move(*r.item));
  }
  // The known sets keep only what is not listed: the Metrics API consults them only for a name
  // it does not list, and a 30000-pod cluster would otherwise hold every pod's name twice.
  const auto listed_node = [&](const std::string& name) {
    const auto it =
        std::lower_bound(out.view.nodes.begin(), out.view.nodes.end(), name,
                         [](const auto& n, const std::string& v) { return n.name < v; });
    return it != out.view.nodes.end() && it->name == name;
  };
  const auto listed_pod = [&](const std::pair<std::string, std::string>& key) {
    const auto it = std::lower_bound(out.view.pods.begin(), out.view.pods.end(), key,
                                     [](const auto& p, const auto& k) {
                                       if (int c = p.namespace_.compare(k.first); c != 0)
                                         return c < 0;
                                       return p.name < k.second;
                                     });
    return it != out.view.pods.end() && it->namespace_ == key.first && it->name == key.second;
  };
  for (uint32_t i = 0; i < sources.size(); ++i) {
    ViewSlice& slice = out.slices[i];
    for (auto it = sources[i].known_nodes.begin(); it != sources[i].known_nodes.end();) {
      auto node = sources[i].known_nodes.extract(it++);
      if (listed_node(node.value())) continue;
      const auto [pos, inserted, rest] = out.view.known_nodes.insert(std::move(node));
      slice.known_nodes.push_back(&*pos);
    }
    for (auto it = sources[i].known_pods.begin(); it != sources[i].known_pods.end();) {
      auto node = sources[i].known_pods.extract(it++);
      if (listed_pod(node.value())) continue;
      const auto [pos, inserted, rest] = out.view.known_pods.insert(std::move(node));
      slice.known_pods.push_back(&*pos);
    }
  }
  sources.clear();
  return out;
}

MetricsView extract_view(const MetricsView& merged, const ViewSlice& slice) {
  MetricsView out;
  out.nodes.reserve(slice.nodes.size());
  for (uint32_t i : slice.nodes)
    out.nodes.push_back(merged.nodes[i]);
  out.pods.reserve(slice.pods.size());
  for (uint32_t i : slice.pods)
    out.pods.push_back(merged.pods[i]);
  for (const auto* n : slice.known_nodes)
    out.known_nodes.insert(out.known_nodes.end(), *n);
  for (const auto* p : slice.known_pods)
    out.known_pods.insert(out.known_pods.end(), *p);
  return out;
}

}  // namespace nodemeter::api
