// labelSelector and fieldSelector parsing (api/selector.h). Invariants: requirements sorted by
// key with sorted, unique values; a selector printed back in canonical form (as apimachinery's
// String() prints it) parses to the same requirements; matching never crashes and an empty
// selector matches everything.
#include <algorithm>
#include <map>
#include <string>
#include <tuple>

#include "api/selector.h"
#include "fuzz_check.h"

namespace {

using namespace nodemeter::api;
using Op = LabelRequirement::Op;

std::string join_values(const std::vector<std::string>& values) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i)
    out += (i ? "," : "") + values[i];
  return out;
}

std::string print(const LabelRequirement& r) {
  const std::string first = r.values.empty() ? std::string() : r.values.front();
  switch (r.op) {
    case Op::kIn:
      return r.key + " in (" + join_values(r.values) + ")";
    case Op::kNotIn:
      return r.key + " notin (" + join_values(r.values) + ")";
    case Op::kEquals:
      return r.key + "=" + first;
    case Op::kDoubleEquals:
      return r.key + "==" + first;
    case Op::kNotEquals:
      return r.key + "!=" + first;
    case Op::kExists:
      return r.key;
    case Op::kDoesNotExist:
      return "!" + r.key;
    case Op::kGt:
      return r.key + ">" + first;
    case Op::kLt:
      return r.key + "<" + first;
  }
  return {};
}

// fields.EscapeValue.
std::string escape_field_value(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == ',' || c == '=') out += '\\';
    out += c;
  }
  return out;
}

bool same(const LabelRequirement& a, const LabelRequirement& b) {
  return a.key == b.key && a.op == b.op && a.values == b.values;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = nodemeter::fuzz::as_text(data, size);
  // Labels to match against: a few fixed ones and one made of the input itself.
  std::map<std::string, std::string> labels{{"app", "web"}, {"tier", "frontend"}, {"n", "10"}};
  labels[std::string(text.substr(0, 63))] = std::string(text.substr(0, 63));

  const auto label = parse_label_selector(text);
  if (const auto* sel = std::get_if<LabelSelector>(&label)) {
    const auto& reqs = sel->requirements();
    FUZZ_CHECK(std::is_sorted(reqs.begin(), reqs.end(),
                              [](const auto& a, const auto& b) { return a.key < b.key; }),
               "requirements are sorted by key");
    std::string printed;
    for (const auto& r : reqs) {
      FUZZ_CHECK(std::is_sorted(r.values.begin(), r.values.end()) &&
                     std::adjacent_find(r.values.begin(), r.values.end()) == r.values.end(),
                 "values are sorted and unique");
      printed += (printed.empty() ? "" : ",") + print(r);
    }
    sel->matches(labels);
    FUZZ_CHECK(!sel->empty() || sel->matches({}), "an empty selector matches everything");
    const auto again = parse_label_selector(printed);
    const auto* resel = std::get_if<LabelSelector>(&again);
    FUZZ_CHECK(resel != nullptr, "a selector printed in canonical form parses");
    FUZZ_CHECK(std::equal(reqs.begin(), reqs.end(), resel->requirements().begin(),
                          resel->requirements().end(), same),
               "a selector printed in canonical form parses to the same requirements");
  } else {
    FUZZ_CHECK(!std::get<SelectorError>(label).message.empty(), "an error says what is wrong");
  }

  const auto field = parse_field_selector(text);
  if (const auto* sel = std::get_if<FieldSelector>(&field)) {
    std::string printed;
    for (const auto& r : sel->requirements()) {
      FUZZ_CHECK(r.field == "metadata.name" || r.field == "metadata.namespace",
                 "only metadata.name and metadata.namespace are selectable");
      printed += (printed.empty() ? "" : ",") + r.field + (r.equals ? "=" : "!=") +
                 escape_field_value(r.value);
    }
    sel->matches(text, text);
    FUZZ_CHECK(!sel->empty() || sel->matches("", ""), "an empty selector matches everything");
    const auto again = parse_field_selector(printed);
    const auto* resel = std::get_if<FieldSelector>(&again);
    FUZZ_CHECK(resel != nullptr, "a field selector printed in canonical form parses");
    // The same requirements, in any order: the parser sorts the raw terms as Go's
    // fields.ParseSelector does, so "f==x,f=d" and its printed "f=x,f=d" order differently.
    auto key = [](const auto& r) { return std::make_tuple(r.field, r.value, r.equals); };
    std::vector<std::tuple<std::string, std::string, bool>> a, b;
    for (const auto& r : sel->requirements())
      a.push_back(key(r));
    for (const auto& r : resel->requirements())
      b.push_back(key(r));
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    FUZZ_CHECK(a == b,
               "a field selector printed in canonical form parses to the same requirements");
  } else {
    FUZZ_CHECK(!std::get<SelectorError>(field).message.empty(), "an error says what is wrong");
  }
  return 0;
}
