// labelSelector and fieldSelector: parsing, matching, and the API server's error messages.
#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <variant>

#include "api/selector.h"

using namespace nodemeter::api;
using Labels = std::map<std::string, std::string>;

namespace {

LabelSelector labels_ok(const std::string& text) {
  auto r = parse_label_selector(text);
  if (auto* e = std::get_if<SelectorError>(&r))
    FAIL("unexpected error for '" << text << "': " << e->message);
  return std::get<LabelSelector>(r);
}

std::string labels_error(const std::string& text) {
  auto r = parse_label_selector(text);
  if (std::holds_alternative<LabelSelector>(r)) FAIL("expected an error for '" << text << "'");
  return std::get<SelectorError>(r).message;
}

FieldSelector fields_ok(const std::string& text) {
  auto r = parse_field_selector(text);
  if (auto* e = std::get_if<SelectorError>(&r))
    FAIL("unexpected error for '" << text << "': " << e->message);
  return std::get<FieldSelector>(r);
}

std::string fields_error(const std::string& text) {
  auto r = parse_field_selector(text);
  if (std::holds_alternative<FieldSelector>(r)) FAIL("expected an error for '" << text << "'");
  return std::get<SelectorError>(r).message;
}

}  // namespace

TEST_CASE("label selectors match as labels.Parse selectors do", "[selector]") {
  const Labels web{{"app", "web"}, {"tier", "frontend"}};
  const Labels db{{"app", "db"}, {"env", "prod"}};
  const Labels none;
  struct Case {
    std::string selector;
    bool web, db, none;
  };
  const Case cases[] = {
      {"", true, true, true},
      {"   ", true, true, true},
      {"app=web", true, false, false},
      {"app==web", true, false, false},
      {"app!=web", false, true, true},
      {"app in (web,db)", true, true, false},
      {"app notin (web)", false, true, true},
      {"app", true, true, false},
      {"!app", false, false, true},
      {"!env", true, false, true},
      {"app,env=prod", false, true, false},
      {"  app = web ,  tier in ( frontend , backend )  ", true, false, false},
      {"env=", false, false, false},  // an absent key does not equal "" (Has is required)
      {"env in ()", false, false, false},
      {"app in (web,,db)", true, true, false},
      {"app=web,app=db", false, false, false},
      {"example.com/team!=x", true, true, true},
  };
  for (const auto& c : cases) {
    INFO(c.selector);
    const auto s = labels_ok(c.selector);
    CHECK(s.matches(web) == c.web);
    CHECK(s.matches(db) == c.db);
    CHECK(s.matches(none) == c.none);
  }
}

TEST_CASE("label selector keywords, integers and empty values", "[selector]") {
  const auto in_in = labels_ok("in in (in,notin)");
  CHECK(in_in.matches({{"in", "notin"}}));
  CHECK_FALSE(in_in.matches({{"in", "x"}}));

  const auto gt = labels_ok("n>5");
  CHECK(gt.matches({{"n", "6"}}));
  CHECK_FALSE(gt.matches({{"n", "5"}}));
  CHECK_FALSE(gt.matches({{"n", "x"}}));
  CHECK_FALSE(gt.matches({}));
  CHECK(labels_ok("n<10").matches({{"n", "2"}}));

  const auto empty_value = labels_ok("a=,b");
  CHECK(empty_value.matches({{"a", ""}, {"b", "1"}}));
  CHECK_FALSE(empty_value.matches({{"a", "1"}, {"b", "1"}}));

  const auto s = labels_ok("z=1,a=2");
  REQUIRE(s.requirements().size() == 2);
  CHECK(s.requirements()[0].key == "a");  // sorted by key, as labels.Parse does
}

TEST_CASE("malformed label selectors answer labels.Parse's messages", "[selector]") {
  CHECK(labels_error("a b") ==
        "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt");
  CHECK(labels_error("x in a") == "unable to parse requirement: found 'a' expected: '('");
  CHECK(labels_error("x in") == "unable to parse requirement: found '' expected: '('");
  CHECK(labels_error("x in (a b)") ==
        "unable to parse requirement: found 'b', expected: ',' or ')'");
  CHECK(labels_error("x in (a") == "unable to parse requirement: found '', expected: ',' or ')'");
  CHECK(labels_error("x in (=)") ==
        "unable to parse requirement: found '=', expected: ',', ')' or identifier");
  CHECK(labels_error("a=(b)") == "unable to parse requirement: found '(', expected: identifier");
  CHECK(labels_error("a=b,") == "found '', expected: identifier after ','");
  CHECK(labels_error(",a") == "found ',', expected: !, identifier, or 'end of string'");
  CHECK(labels_error("a=b c") == "found 'c', expected: ',' or 'end of string'");
  CHECK(labels_error("!a=b") == "found '=', expected: ',' or 'end of string'");
  CHECK(labels_error("!") == "unable to parse requirement: found '', expected: identifier");
  CHECK(labels_error("a_=b") ==
        "unable to parse requirement: <nil>: Invalid value: \"a_\": name part must consist of "
        "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
        "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')");
  CHECK(
      labels_error("a=b_") ==
      "unable to parse requirement: values[0][a]: Invalid value: \"b_\": a valid label must be "
      "an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
      "and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex "
      "used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')");
  CHECK(labels_error("Example.com/a") ==
        "unable to parse requirement: <nil>: Invalid value: \"Example.com/a\": prefix part a "
        "lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
        "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
        "used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')");
  CHECK(labels_error("a/b/c") ==
        "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a valid label key must "
        "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
        "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
        "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS "
        "subdomain prefix and '/' (e.g. 'example.com/MyName')");
  CHECK(labels_error(std::string(64, 'k')) ==
        "unable to parse requirement: <nil>: Invalid value: \"" + std::string(64, 'k') +
            "\": name part must be no more than 63 characters");
  CHECK(labels_error("a>b") ==
        "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' "
        "operators, the value must be an integer");
  const std::string value_rule =
      "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
      "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value', "
      " "
      "or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
  CHECK(labels_error("x in (b_,a_)") ==
        "unable to parse requirement: [values[0][x]: Invalid value: "
        "\"a_\": " +
            value_rule + ", values[1][x]: Invalid value: \"b_\": " + value_rule + "]");
}

TEST_CASE("field selectors on metadata.name and metadata.namespace", "[selector]") {
  CHECK(fields_ok("").matches("a", "b"));
  const auto name = fields_ok("metadata.name=web-1");
  CHECK(name.matches("web-1", "default"));
  CHECK_FALSE(name.matches("web-2", "default"));
  const auto ns = fields_ok("metadata.namespace!=kube-system");
  CHECK(ns.matches("x", "default"));
  CHECK_FALSE(ns.matches("x", "kube-system"));
  CHECK(ns.matches("node-1", ""));  // a node has no namespace: it reads as ""
  const auto both = fields_ok("metadata.name==a,metadata.namespace=b");
  CHECK(both.matches("a", "b"));
  CHECK_FALSE(both.matches("a", "c"));
  CHECK(fields_ok("metadata.name=a\\,b").matches("a,b", ""));
  CHECK(fields_ok("metadata.name=").matches("", ""));
  CHECK(fields_ok(",metadata.name=a,").matches("a", ""));
}

TEST_CASE("malformed field selectors answer the API server's messages", "[selector]") {
  CHECK(fields_error("spec.nodeName=x") ==
        "\"spec.nodeName\" is not a known field selector: only \"metadata.name\", "
        "\"metadata.namespace\"");
  CHECK(fields_error("metadata.name =x") ==
        "\"metadata.name \" is not a known field selector: only \"metadata.name\", "
        "\"metadata.namespace\"");
  CHECK(fields_error("foo") == "invalid selector: 'foo'; can't understand 'foo'");
  CHECK(fields_error("metadata.name=a,bar") ==
        "invalid selector: 'metadata.name=a,bar'; can't understand 'bar'");
  CHECK(fields_error("metadata.name=a=b") ==
        "invalid field selector: unescaped character in value: 61");
  CHECK(fields_error("metadata.name=a\\x") ==
        "invalid field selector: invalid escape sequence: \\x");
  CHECK(fields_error("metadata.name=a\\") == "invalid field selector: invalid escape sequence: \\");
}
