// labelSelector and fieldSelector as the API server parses and applies them: a port of
// apimachinery's labels.Parse (set-based and equality requirements, key and value validation)
// and fields.ParseSelector with the default metav1 field conversion (metadata.name and
// metadata.namespace only). Errors carry the API server's exact messages; parsers never throw.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace nodemeter::api {

struct SelectorError {
  std::string message;  // the API server's wording, sent as a 400 Status message
};

struct LabelRequirement {
  enum class Op {
    kIn,
    kNotIn,
    kEquals,
    kDoubleEquals,
    kNotEquals,
    kExists,
    kDoesNotExist,
    kGt,
    kLt
  };
  std::string key;
  Op op = Op::kExists;
  std::vector<std::string> values;  // sorted, unique
};

class LabelSelector {
 public:
  // An empty selector matches everything.
  bool empty() const { return requirements_.empty(); }
  bool matches(const std::map<std::string, std::string>& labels) const;
  const std::vector<LabelRequirement>& requirements() const { return requirements_; }

 private:
  friend struct LabelSelectorParser;
  friend std::variant<LabelSelector, SelectorError> parse_label_selector(std::string_view text);
  std::vector<LabelRequirement> requirements_;  // sorted by key
};

// labels.Parse.
std::variant<LabelSelector, SelectorError> parse_label_selector(std::string_view text);

struct FieldRequirement {
  std::string field;  // "metadata.name" or "metadata.namespace"
  std::string value;
  bool equals = true;  // false for !=
};

class FieldSelector {
 public:
  bool empty() const { return requirements_.empty(); }
  // Fields an object lacks read as "" (fields.Set.Get): a node has no namespace.
  bool matches(std::string_view name, std::string_view namespace_) const;
  const std::vector<FieldRequirement>& requirements() const { return requirements_; }

 private:
  friend std::variant<FieldSelector, SelectorError> parse_field_selector(std::string_view text);
  std::vector<FieldRequirement> requirements_;
};

// fields.ParseSelector, then DefaultMetaV1FieldSelectorConversion on every term.
std::variant<FieldSelector, SelectorError> parse_field_selector(std::string_view text);

}  // namespace nodemeter::api
