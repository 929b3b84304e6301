#include "api/selector.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <set>

#include "api/k8s_json.h"

namespace nodemeter::api {
namespace {

// --- validation (k8s.io/apimachinery/pkg/api/validate/content) -----------------------------

constexpr std::string_view kLabelKeyFmt = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
constexpr std::string_view kLabelKeyErrMsg =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character";
constexpr std::string_view kLabelValueFmt = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
constexpr std::string_view kLabelValueErrMsg =
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character";
constexpr std::string_view kDns1123SubdomainFmt =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
constexpr std::string_view kDns1123SubdomainErrMsg =
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character";

std::string regex_error(std::string_view msg, std::string_view fmt,
                        std::initializer_list<std::string_view> examples) {
  std::string out(msg);
  out += " (e.g. ";
  bool first = true;
  for (auto e : examples) {
    if (!first) out += " or ";
    first = false;
    out += "'" + std::string(e) + "', ";
  }
  out += "regex used for validation is '" + std::string(fmt) + "')";
  return out;
}

std::string max_len_error(size_t n) {
  return "must be no more than " + std::to_string(n) + " characters";
}

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool is_valid_label_key_name(std::string_view s) {
  if (s.empty() || !is_alnum(s.front()) || !is_alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return is_alnum(c) || c == '-' || c == '_' || c == '.'; });
}

bool is_dns1123_subdomain(std::string_view s) {
  size_t start = 0;
  while (true) {
    const size_t dot = s.find('.', start);
    const std::string_view label =
        s.substr(start, dot == std::string_view::npos ? dot : dot - start);
    const auto lower_alnum = [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    };
    if (label.empty() || !lower_alnum(label.front()) || !lower_alnum(label.back())) return false;
    if (!std::all_of(label.begin(), label.end(),
                     [&](char c) { return lower_alnum(c) || c == '-'; })) {
      return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

std::vector<std::string> label_key_errors(std::string_view value) {
  std::vector<std::string> errs;
  std::string_view name = value;
  if (const size_t slash = value.find('/'); slash != std::string_view::npos) {
    const std::string_view prefix = value.substr(0, slash);
    name = value.substr(slash + 1);
    if (name.find('/') != std::string_view::npos) {
      errs.push_back("a valid label key " +
                     regex_error(kLabelKeyErrMsg, kLabelKeyFmt, {"MyName", "my.name", "123-abc"}) +
                     " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')");
      return errs;
    }
    if (prefix.empty()) {
      errs.push_back("prefix part must be non-empty");
    } else {
      if (prefix.size() > 253) errs.push_back("prefix part " + max_len_error(253));
      if (!is_dns1123_subdomain(prefix)) {
        errs.push_back("prefix part " +
                       regex_error(kDns1123SubdomainErrMsg, kDns1123SubdomainFmt, {"example.com"}));
      }
    }
  }
  if (name.empty()) {
    errs.push_back("name part must be non-empty");
  } else if (name.size() > 63) {
    errs.push_back("name part " + max_len_error(63));
  }
  if (!is_valid_label_key_name(name)) {
    errs.push_back("name part " +
                   regex_error(kLabelKeyErrMsg, kLabelKeyFmt, {"MyName", "my.name", "123-abc"}));
  }
  return errs;
}

std::vector<std::string> label_value_errors(std::string_view value) {
  std::vector<std::string> errs;
  if (value.size() > 63) errs.push_back(max_len_error(63));
  if (!value.empty() && !is_valid_label_key_name(value)) {
    errs.push_back(
        regex_error(kLabelValueErrMsg, kLabelValueFmt, {"MyValue", "my_value", "12345"}));
  }
  return errs;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += sep;
    out += parts[i];
  }
  return out;
}

// field.Invalid(path, value, detail).Error()
std::string field_invalid(std::string_view path, std::string_view value, std::string_view detail) {
  return std::string(path) + ": Invalid value: " + go_quote(value) + ": " + std::string(detail);
}

// strconv.ParseInt(s, 10, 64)
std::optional<int64_t> parse_int64(std::string_view s) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty() || s.front() == '+') return std::nullopt;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// --- lexer (labels.Lexer) --------------------------------------------------------------------

enum class Token {
  kError,
  kEndOfString,
  kClosedPar,
  kComma,
  kDoesNotExist,
  kDoubleEquals,
  kEquals,
  kGreaterThan,
  kIdentifier,
  kIn,
  kLessThan,
  kNotEquals,
  kNotIn,
  kOpenPar,
};

std::optional<Token> literal_token(std::string_view s) {
  if (s == ")") return Token::kClosedPar;
  if (s == ",") return Token::kComma;
  if (s == "!") return Token::kDoesNotExist;
  if (s == "==") return Token::kDoubleEquals;
  if (s == "=") return Token::kEquals;
  if (s == ">") return Token::kGreaterThan;
  if (s == "in") return Token::kIn;
  if (s == "<") return Token::kLessThan;
  if (s == "!=") return Token::kNotEquals;
  if (s == "notin") return Token::kNotIn;
  if (s == "(") return Token::kOpenPar;
  return std::nullopt;
}

bool is_whitespace(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool is_special_symbol(char c) {
  switch (c) {
    case '=':
    case '!':
    case '(':
    case ')':
    case ',':
    case '>':
    case '<':
      return true;
  }
  return false;
}

struct ScannedItem {
  Token tok;
  std::string literal;
};

class Lexer {
 public:
  explicit Lexer(std::string_view s) : s_(s) {}

  ScannedItem lex() {
    const char ch = skip_whitespace(read());
    if (ch == 0) return {Token::kEndOfString, ""};
    unread();
    return is_special_symbol(ch) ? scan_special_symbol() : scan_id_or_keyword();
  }

 private:
  // Like Go's Lexer.read: 0 at the end (and for a NUL byte, which therefore ends the input).
  char read() {
    if (pos_ < s_.size()) return s_[pos_++];
    ++pos_;
    return 0;
  }
  void unread() { --pos_; }
  char skip_whitespace(char ch) {
    while (is_whitespace(ch))
      ch = read();
    return ch;
  }
  ScannedItem scan_id_or_keyword() {
    std::string buffer;
    while (true) {
      const char ch = read();
      if (ch == 0) break;
      if (is_special_symbol(ch) || is_whitespace(ch)) {
        unread();
        break;
      }
      buffer += ch;
    }
    if (auto tok = literal_token(buffer)) return {*tok, buffer};
    return {Token::kIdentifier, buffer};
  }
  ScannedItem scan_special_symbol() {
    std::optional<ScannedItem> last;
    std::string buffer;
    while (true) {
      const char ch = read();
      if (ch == 0) break;
      if (!is_special_symbol(ch)) {
        unread();
        break;
      }
      buffer += ch;
      if (auto tok = literal_token(buffer)) {
        last = ScannedItem{*tok, buffer};
      } else if (last) {
        unread();
        break;
      }
    }
    if (!last) return {Token::kError, "error expected: keyword found '" + buffer + "'"};
    return *last;
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

// --- parser (labels.Parser) ------------------------------------------------------------------

struct LabelSelectorParser {
  enum class Context { kKeyAndOperator, kValues };
  using Op = LabelRequirement::Op;

  std::vector<ScannedItem> items;
  size_t position = 0;
  std::string error;

  const ScannedItem& at(size_t i) const {
    static const ScannedItem kEnd{Token::kEndOfString, ""};
    return i < items.size() ? items[i] : kEnd;
  }
  static Token in_context(Token tok, Context ctx) {
    if (ctx == Context::kValues && (tok == Token::kIn || tok == Token::kNotIn)) {
      return Token::kIdentifier;
    }
    return tok;
  }
  std::pair<Token, std::string> lookahead(Context ctx) const {
    const auto& item = at(position);
    return {in_context(item.tok, ctx), item.literal};
  }
  std::pair<Token, std::string> consume(Context ctx) {
    const auto& item = at(position++);
    return {in_context(item.tok, ctx), item.literal};
  }

  bool fail(std::string message) {
    error = std::move(message);
    return false;
  }

  // labels.Parser.parse
  bool parse(std::string_view text, LabelSelector* out) {
    Lexer lexer(text);
    while (true) {
      items.push_back(lexer.lex());
      if (items.back().tok == Token::kEndOfString) break;
    }
    while (true) {
      auto [tok, lit] = lookahead(Context::kValues);
      switch (tok) {
        case Token::kIdentifier:
        case Token::kDoesNotExist: {
          LabelRequirement r;
          if (!parse_requirement(&r)) return fail("unable to parse requirement: " + error);
          out->requirements_.push_back(std::move(r));
          auto [t, l] = consume(Context::kValues);
          if (t == Token::kEndOfString) return true;
          if (t == Token::kComma) {
            auto [t2, l2] = lookahead(Context::kValues);
            if (t2 != Token::kIdentifier && t2 != Token::kDoesNotExist) {
              return fail("found '" + l2 + "', expected: identifier after ','");
            }
            break;
          }
          return fail("found '" + l + "', expected: ',' or 'end of string'");
        }
        case Token::kEndOfString:
          return true;
        default:
          return fail("found '" + lit + "', expected: !, identifier, or 'end of string'");
      }
    }
  }

  bool parse_requirement(LabelRequirement* r) {
    std::optional<Op> op;
    if (!parse_key_and_infer_operator(&r->key, &op)) return false;
    if (op == Op::kExists || op == Op::kDoesNotExist) {
      r->op = *op;
      return true;
    }
    if (!parse_operator(&r->op)) return false;
    std::set<std::string> values;
    switch (r->op) {
      case Op::kIn:
      case Op::kNotIn:
        if (!parse_values(&values)) return false;
        break;
      default:
        if (!parse_exact_value(&values)) return false;
    }
    r->values.assign(values.begin(), values.end());
    return new_requirement(*r);
  }

  bool parse_key_and_infer_operator(std::string* key, std::optional<Op>* op) {
    auto [tok, literal] = consume(Context::kValues);
    if (tok == Token::kDoesNotExist) {
      *op = Op::kDoesNotExist;
      std::tie(tok, literal) = consume(Context::kValues);
    }
    if (tok != Token::kIdentifier) return fail("found '" + literal + "', expected: identifier");
    if (auto errs = label_key_errors(literal); !errs.empty()) {
      return fail(field_invalid("<nil>", literal, join(errs, "; ")));
    }
    auto [next, ignored] = lookahead(Context::kValues);
    if ((next == Token::kEndOfString || next == Token::kComma) && *op != Op::kDoesNotExist) {
      *op = Op::kExists;
    }
    *key = std::move(literal);
    return true;
  }

  bool parse_operator(Op* op) {
    auto [tok, lit] = consume(Context::kKeyAndOperator);
    switch (tok) {
      case Token::kIn:
        *op = Op::kIn;
        return true;
      case Token::kEquals:
        *op = Op::kEquals;
        return true;
      case Token::kDoubleEquals:
        *op = Op::kDoubleEquals;
        return true;
      case Token::kGreaterThan:
        *op = Op::kGt;
        return true;
      case Token::kLessThan:
        *op = Op::kLt;
        return true;
      case Token::kNotIn:
        *op = Op::kNotIn;
        return true;
      case Token::kNotEquals:
        *op = Op::kNotEquals;
        return true;
      default:
        return fail("found '" + lit + "', expected: in, notin, =, ==, !=, gt, lt");
    }
  }

  bool parse_values(std::set<std::string>* values) {
    auto [tok, lit] = consume(Context::kValues);
    if (tok != Token::kOpenPar) return fail("found '" + lit + "' expected: '('");
    std::tie(tok, lit) = lookahead(Context::kValues);
    switch (tok) {
      case Token::kIdentifier:
      case Token::kComma:
        if (!parse_identifiers_list(values)) return false;
        if (consume(Context::kValues).first != Token::kClosedPar) {
          return fail("found '" + lit + "', expected: ')'");
        }
        return true;
      case Token::kClosedPar:
        consume(Context::kValues);
        values->insert("");
        return true;
      default:
        return fail("found '" + lit + "', expected: ',', ')' or identifier");
    }
  }

  bool parse_identifiers_list(std::set<std::string>* values) {
    while (true) {
      auto [tok, lit] = consume(Context::kValues);
      switch (tok) {
        case Token::kIdentifier: {
          values->insert(lit);
          auto [tok2, lit2] = lookahead(Context::kValues);
          if (tok2 == Token::kComma) continue;
          if (tok2 == Token::kClosedPar) return true;
          return fail("found '" + lit2 + "', expected: ',' or ')'");
        }
        case Token::kComma: {
          if (values->empty()) values->insert("");
          auto [tok2, ignored] = lookahead(Context::kValues);
          if (tok2 == Token::kClosedPar) {
            values->insert("");
            return true;
          }
          if (tok2 == Token::kComma) {
            consume(Context::kValues);
            values->insert("");
          }
          break;
        }
        default:
          return fail("found '" + lit + "', expected: ',', or identifier");
      }
    }
  }

  bool parse_exact_value(std::set<std::string>* values) {
    auto [next, ignored] = lookahead(Context::kValues);
    if (next == Token::kEndOfString || next == Token::kComma) {
      values->insert("");
      return true;
    }
    auto [tok, lit] = consume(Context::kValues);
    if (tok == Token::kIdentifier) {
      values->insert(lit);
      return true;
    }
    return fail("found '" + lit + "', expected: identifier");
  }

  // labels.NewRequirement's checks that can fail after parsing, aggregated as
  // utilerrors.NewAggregate prints them: one message alone, several as "[a, b]".
  bool new_requirement(const LabelRequirement& r) {
    std::vector<std::string> errs;
    const auto add = [&](std::string msg) {
      if (std::find(errs.begin(), errs.end(), msg) == errs.end()) errs.push_back(std::move(msg));
    };
    if (r.op == Op::kGt || r.op == Op::kLt) {
      for (size_t i = 0; i < r.values.size(); ++i) {
        if (!parse_int64(r.values[i])) {
          add(field_invalid("values[" + std::to_string(i) + "]", r.values[i],
                            "for 'Gt', 'Lt' operators, the value must be an integer"));
        }
      }
    }
    for (size_t i = 0; i < r.values.size(); ++i) {
      if (auto v = label_value_errors(r.values[i]); !v.empty()) {
        add(field_invalid("values[" + std::to_string(i) + "][" + r.key + "]", r.values[i],
                          join(v, "; ")));
      }
    }
    if (errs.empty()) return true;
    if (errs.size() == 1) return fail(errs.front());
    return fail("[" + join(errs, ", ") + "]");
  }
};

std::variant<LabelSelector, SelectorError> parse_label_selector(std::string_view text) {
  LabelSelectorParser parser;
  LabelSelector selector;
  if (!parser.parse(text, &selector)) return SelectorError{parser.error};
  std::stable_sort(selector.requirements_.begin(), selector.requirements_.end(),
                   [](const auto& a, const auto& b) { return a.key < b.key; });
  return selector;
}

bool LabelSelector::matches(const std::map<std::string, std::string>& labels) const {
  using Op = LabelRequirement::Op;
  for (const auto& r : requirements_) {
    const auto it = labels.find(r.key);
    const bool has = it != labels.end();
    const auto has_value = [&] {
      return has && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
    };
    bool ok = false;
    switch (r.op) {
      case Op::kIn:
      case Op::kEquals:
      case Op::kDoubleEquals:
        ok = has_value();
        break;
      case Op::kNotIn:
      case Op::kNotEquals:
        ok = !has_value();
        break;
      case Op::kExists:
        ok = has;
        break;
      case Op::kDoesNotExist:
        ok = !has;
        break;
      case Op::kGt:
      case Op::kLt: {
        if (!has || r.values.size() != 1) break;
        const auto label_value = parse_int64(it->second);
        const auto bound = parse_int64(r.values.front());
        if (!label_value || !bound) break;
        ok = r.op == Op::kGt ? *label_value > *bound : *label_value < *bound;
        break;
      }
    }
    if (!ok) return false;
  }
  return true;
}

// --- field selectors (fields.ParseSelector) --------------------------------------------------

namespace {

std::vector<std::string_view> split_terms(std::string_view s) {
  std::vector<std::string_view> terms;
  if (s.empty()) return terms;
  size_t start = 0;
  bool in_slash = false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (in_slash) {
      in_slash = false;
    } else if (s[i] == '\\') {
      in_slash = true;
    } else if (s[i] == ',') {
      terms.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  terms.push_back(s.substr(start));
  return terms;
}

// fields.UnescapeValue; the error names the offending sequence or the code point of the rune.
std::optional<std::string> unescape_field_value(std::string_view s, std::string* error) {
  std::string v;
  bool in_slash = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_slash) {
      if (c == '\\' || c == ',' || c == '=') {
        v += c;
        in_slash = false;
        continue;
      }
      size_t n = 1;
      const auto b = static_cast<unsigned char>(c);
      if (b >= 0xC0) n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
      *error = "invalid field selector: invalid escape sequence: \\" +
               std::string(s.substr(i, std::min(n, s.size() - i)));
      return std::nullopt;
    }
    if (c == '\\') {
      in_slash = true;
    } else if (c == ',' || c == '=') {
      *error = "invalid field selector: unescaped character in value: " +
               std::to_string(static_cast<int>(c));
      return std::nullopt;
    } else {
      v += c;
    }
  }
  if (in_slash) {
    *error = "invalid field selector: invalid escape sequence: \\";
    return std::nullopt;
  }
  return v;
}

}  // namespace

std::variant<FieldSelector, SelectorError> parse_field_selector(std::string_view text) {
  auto parts = split_terms(text);
  std::sort(parts.begin(), parts.end());
  FieldSelector selector;
  for (const auto part : parts) {
    if (part.empty()) continue;
    // splitTerm: the first position where "!=", "==" or "=" starts, tried in that order.
    size_t pos = std::string_view::npos;
    std::string_view op;
    for (size_t i = 0; i < part.size() && pos == std::string_view::npos; ++i) {
      for (std::string_view candidate : {"!=", "==", "="}) {
        if (part.substr(i).starts_with(candidate)) {
          pos = i;
          op = candidate;
          break;
        }
      }
    }
    if (pos == std::string_view::npos) {
      return SelectorError{"invalid selector: '" + std::string(text) + "'; can't understand '" +
                           std::string(part) + "'"};
    }
    std::string error;
    auto value = unescape_field_value(part.substr(pos + op.size()), &error);
    if (!value) return SelectorError{error};
    selector.requirements_.push_back(
        FieldRequirement{std::string(part.substr(0, pos)), std::move(*value), op != "!="});
  }
  // Transform with runtime.DefaultMetaV1FieldSelectorConversion, in the parsed order.
  for (const auto& r : selector.requirements_) {
    if (r.field != "metadata.name" && r.field != "metadata.namespace") {
      return SelectorError{go_quote(r.field) +
                           " is not a known field selector: only \"metadata.name\", "
                           "\"metadata.namespace\""};
    }
  }
  return selector;
}

bool FieldSelector::matches(std::string_view name, std::string_view namespace_) const {
  for (const auto& r : requirements_) {
    const std::string_view actual = r.field == "metadata.name" ? name : namespace_;
    if ((actual == r.value) != r.equals) return false;
  }
  return true;
}

}  // namespace nodemeter::api
