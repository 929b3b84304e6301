// The format parsers on verbatim kernel text (v1 from this machine kind, v2 from a real 6.1 kernel)
// and on every kind of bad input: each returns a value or a typed error, never throws.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "cgroup/parse.h"

using namespace nodemeter::cgroup;
using namespace std::string_literals;

namespace {

constexpr uint64_t kU64Max = 18446744073709551615u;
const std::string kU64MaxText = "18446744073709551615";
const std::string kU64OverText = "18446744073709551616";  // 2^64
const std::string kMiB(1 << 20, '7');                     // a 1 MiB run of digits

std::string verbatim(const std::string& name) {
  const char* dir = std::getenv("NODEMETER_SOURCE_DIR");
  INFO("NODEMETER_SOURCE_DIR must point at the source tree (CTest sets it)");
  REQUIRE(dir != nullptr);
  const std::string path = std::string(dir) + "/tests/fixtures/verbatim/" + name;
  std::ifstream in(path, std::ios::binary);
  INFO(path);
  REQUIRE(in.good());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::map<std::string, uint64_t> flat(std::string_view text) {
  std::map<std::string, uint64_t> entries;
  auto r =
      parse_flat_keyed(text, [&](std::string_view k, uint64_t v) { entries[std::string(k)] = v; });
  REQUIRE(r.has_value());
  return entries;
}

template <class T>
void check_error(const ParseResult<T>& r, const std::string& message, const std::string& line) {
  REQUIRE(r.has_error());
  CHECK(r.error().message == message);
  CHECK(r.error().line == line);
}

}  // namespace

TEST_CASE("make_parse_error keeps the message and truncates the line to 120 bytes", "[parse]") {
  const std::string long_line(1000, 'x');
  const ParseError e = make_parse_error("value is not a number", long_line);
  CHECK(e.message == "value is not a number");
  CHECK(e.line == std::string(120, 'x'));
  CHECK(make_parse_error("m", "short").line == "short");
  CHECK(make_parse_error("m", std::string_view("a\0b", 3)).line == std::string("a\0b", 3));
}

TEST_CASE("parse_u64_token accepts exactly one unsigned decimal", "[parse]") {
  CHECK(*parse_u64_token("0") == 0);
  CHECK(*parse_u64_token("007") == 7);
  CHECK(*parse_u64_token(kU64MaxText) == kU64Max);
  check_error(parse_u64_token(""), "empty value", "");
  check_error(parse_u64_token("-1"), "negative value", "-1");
  check_error(parse_u64_token("+1"), "value is not a number", "+1");
  check_error(parse_u64_token(" 1"), "value is not a number", " 1");
  check_error(parse_u64_token("1 "), "trailing characters after value", "1 ");
  check_error(parse_u64_token("0x10"), "trailing characters after value", "0x10");
  check_error(parse_u64_token(kU64OverText), "value out of range", kU64OverText);
}

TEST_CASE("parse_single_value reads verbatim v1 and v2 files", "[parse]") {
  CHECK(*parse_single_value(verbatim("v1-cpuacct.usage")) == 71841425744u);
  CHECK(*parse_single_value(verbatim("v1-memory.usage_in_bytes")) == 303501312u);
  CHECK(*parse_single_value(verbatim("v1-memory.limit_in_bytes")) == 9223372036854771712u);
  CHECK(*parse_single_value(verbatim("v2-memory.max")) == 16777216u);
}

TEST_CASE("parse_single_value on bad input returns typed errors", "[parse]") {
  CHECK(*parse_single_value("42") == 42);        // missing newline
  CHECK(*parse_single_value("42\r\n") == 42);    // CRLF
  CHECK(*parse_single_value("42  \n\n") == 42);  // trailing blanks
  CHECK(*parse_single_value(kU64MaxText + "\n") == kU64Max);
  check_error(parse_single_value(""), "empty value", "");
  check_error(parse_single_value("\n"), "empty value", "");
  check_error(parse_single_value("-5\n"), "negative value", "-5");
  check_error(parse_single_value("abc\n"), "value is not a number", "abc");
  check_error(parse_single_value("max\n"), "value is not a number", "max");
  check_error(parse_single_value(" 42\n"), "value is not a number", " 42");
  check_error(parse_single_value("12abc\n"), "trailing characters after value", "12abc");
  check_error(parse_single_value("1 2\n"), "trailing characters after value", "1 2");
  check_error(parse_single_value("1\n2\n"), "trailing characters after value", "1");
  check_error(parse_single_value("4.5\n"), "trailing characters after value", "4.5");
  check_error(parse_single_value(kU64OverText + "\n"), "value out of range", kU64OverText);
  check_error(parse_single_value("12\0"s
                                 "34\n"),
              "trailing characters after value",
              "12\0"s
              "34");
  check_error(parse_single_value(kMiB + "\n"), "value out of range", kMiB.substr(0, 120));
  check_error(parse_single_value(std::string(1 << 20, 'z')), "value is not a number",
              std::string(120, 'z'));
  check_error(parse_single_value("\xff\xfe\x01"), "value is not a number", "\xff\xfe\x01");
}

TEST_CASE("parse_max_or_value reads max, numbers and v1's huge unlimited", "[parse]") {
  CHECK(*parse_max_or_value(verbatim("v2-memory.max")) == std::optional<uint64_t>(16777216));
  CHECK_FALSE(parse_max_or_value(verbatim("v2-memory.swap.max"))->has_value());
  CHECK_FALSE(parse_max_or_value(verbatim("v1-memory.limit_in_bytes"))->has_value());
  CHECK_FALSE(parse_max_or_value("max")->has_value());
  CHECK_FALSE(parse_max_or_value("max\r\n")->has_value());
  CHECK_FALSE(parse_max_or_value(kU64MaxText)->has_value());
  CHECK_FALSE(parse_max_or_value(std::to_string(kUnlimitedThreshold))->has_value());
  CHECK(*parse_max_or_value(std::to_string(kUnlimitedThreshold - 1)) ==
        std::optional<uint64_t>(kUnlimitedThreshold - 1));
  CHECK(*parse_max_or_value("0\n") == std::optional<uint64_t>(0));
  check_error(parse_max_or_value(""), "empty value", "");
  check_error(parse_max_or_value("maximum\n"), "value is not a number", "maximum");
  check_error(parse_max_or_value("MAX\n"), "value is not a number", "MAX");
  check_error(parse_max_or_value("-1\n"), "negative value", "-1");
  check_error(parse_max_or_value(kU64OverText), "value out of range", kU64OverText);
  check_error(parse_max_or_value("max\0"s), "value is not a number", "max\0"s);
}

TEST_CASE("parse_flat_keyed reads verbatim v2 cpu.stat, memory.stat and memory.events", "[parse]") {
  const auto cpu = flat(verbatim("v2-cpu.stat"));
  CHECK(cpu.size() == 8);
  CHECK(cpu.at("usage_usec") == 1538516);
  CHECK(cpu.at("user_usec") == 1534631);
  CHECK(cpu.at("system_usec") == 3885);
  CHECK(cpu.at("nr_periods") == 32);
  CHECK(cpu.at("nr_throttled") == 28);
  CHECK(cpu.at("throttled_usec") == 1335186);
  CHECK(cpu.at("burst_usec") == 0);

  const auto mem = flat(verbatim("v2-memory.stat"));
  CHECK(mem.size() == 51);
  CHECK(mem.at("anon") == 15740928);
  CHECK(mem.at("file") == 0);
  CHECK(mem.at("inactive_file") == 0);
  CHECK(mem.at("inactive_anon") == 15736832);
  CHECK(mem.at("anon_thp") == 6291456);
  CHECK(mem.at("pgfault") == 2607);
  CHECK(mem.at("pgmajfault") == 8);
  CHECK(mem.at("thp_collapse_alloc") == 0);

  const auto events = flat(verbatim("v2-memory.events"));
  CHECK(events == std::map<std::string, uint64_t>{{"low", 0},
                                                  {"high", 0},
                                                  {"max", 35},
                                                  {"oom", 1},
                                                  {"oom_kill", 1},
                                                  {"oom_group_kill", 0}});
}

TEST_CASE("parse_flat_keyed reads verbatim v1 cpu.stat, memory.stat and memory.oom_control",
          "[parse]") {
  CHECK(flat(verbatim("v1-cpu.stat")) == std::map<std::string, uint64_t>{{"nr_periods", 0},
                                                                         {"nr_throttled", 0},
                                                                         {"throttled_time", 0},
                                                                         {"nr_bursts", 0},
                                                                         {"burst_time", 0}});
  const auto mem = flat(verbatim("v1-memory.stat"));
  CHECK(mem.size() == 42);
  CHECK(mem.at("cache") == 12943360);
  CHECK(mem.at("total_cache") == 296554496);
  CHECK(mem.at("total_rss") == 7139328);
  CHECK(mem.at("total_inactive_file") == 162799616);
  CHECK(mem.at("total_swap") == 0);
  CHECK(mem.at("total_pgfault") == 1743494);
  CHECK(mem.at("total_pgmajfault") == 954);
  CHECK(mem.at("hierarchical_memory_limit") == 9223372036854771712u);
  CHECK(mem.at("total_unevictable") == 11624448);

  CHECK(
      flat(verbatim("v1-memory.oom_control")) ==
      std::map<std::string, uint64_t>{{"oom_kill_disable", 0}, {"under_oom", 0}, {"oom_kill", 0}});
}

TEST_CASE("parse_flat_keyed on bad input stops at the malformed line", "[parse]") {
  CHECK(flat("").empty());
  CHECK(flat("\n\n").empty());
  CHECK(flat("a 1") == std::map<std::string, uint64_t>{{"a", 1}});  // missing newline
  CHECK(flat("a 1\r\nb 2\r\n") == std::map<std::string, uint64_t>{{"a", 1}, {"b", 2}});
  CHECK(flat("a 1\n\n \t\nb 2\n") == std::map<std::string, uint64_t>{{"a", 1}, {"b", 2}});
  CHECK(flat("a  3\n") == std::map<std::string, uint64_t>{{"a", 3}});
  CHECK(flat("b " + kU64MaxText + "\n") == std::map<std::string, uint64_t>{{"b", kU64Max}});
  // A 1 MiB key is still one line with a value; only the error line is ever truncated.
  const std::string long_key(1 << 20, 'k');
  CHECK(flat(long_key + " 5\n") == std::map<std::string, uint64_t>{{long_key, 5}});

  std::vector<std::string> seen;
  auto run = [&](std::string_view text) {
    seen.clear();
    return parse_flat_keyed(text, [&](std::string_view k, uint64_t) { seen.emplace_back(k); });
  };
  check_error(run("a 1\nb x\nc 3\n"), "value is not a number", "b x");
  CHECK(seen == std::vector<std::string>{"a"});
  check_error(run("key\n"), "line has no value", "key");
  check_error(run("key \n"), "line has no value", "key ");
  check_error(run(" 5\n"), "line has no key", " 5");
  check_error(run("user -1\n"), "negative value", "user -1");
  check_error(run("user 1 2\n"), "trailing characters after value", "user 1 2");
  check_error(run("user 1.5\n"), "trailing characters after value", "user 1.5");
  check_error(run("a " + kU64OverText + "\n"), "value out of range", "a " + kU64OverText);
  check_error(run("a 1\0\n"s), "trailing characters after value", "a 1\0"s);
  check_error(run("usage_usec"), "line has no value", "usage_usec");  // truncated file
  check_error(run(std::string(1 << 20, 'g')), "line has no value", std::string(120, 'g'));
  check_error(run("k " + kMiB), "value out of range", ("k " + kMiB).substr(0, 120));
  check_error(run("\x01\x02 \x03"), "value is not a number", "\x01\x02 \x03");
  CHECK(seen.empty());
}

TEST_CASE("parse_flat_keyed_line splits key and value", "[parse]") {
  std::string_view key;
  uint64_t value = 0;
  REQUIRE(parse_flat_keyed_line("total_rss 7139328", key, value).has_value());
  CHECK(key == "total_rss");
  CHECK(value == 7139328);
  REQUIRE(parse_flat_keyed_line("nr_periods 32\r", key, value).has_value());
  CHECK(key == "nr_periods");
  CHECK(value == 32);
  check_error(parse_flat_keyed_line("", key, value), "line has no value", "");
}

TEST_CASE("parse_cpuacct_stat converts USER_HZ ticks to nanoseconds", "[parse]") {
  const auto stat = parse_cpuacct_stat(verbatim("v1-cpuacct.stat"));
  REQUIRE(stat.has_value());
  CHECK(stat->user_ns == 34'550'000'000u);    // 3455 ticks at 100 Hz
  CHECK(stat->system_ns == 37'280'000'000u);  // 3728 ticks
  const auto hz250 = parse_cpuacct_stat("user 3\nsystem 250\n", 250);
  REQUIRE(hz250.has_value());
  CHECK(hz250->user_ns == 12'000'000u);
  CHECK(hz250->system_ns == 1'000'000'000u);
  const auto hz1024 = parse_cpuacct_stat("user 1024\nsystem 1\n", 1024);
  REQUIRE(hz1024.has_value());
  CHECK(hz1024->user_ns == 1'000'000'000u);
  CHECK(hz1024->system_ns == 976'562u);  // 1/1024 s, truncated
  CHECK(parse_cpuacct_stat("system 2\r\nuser 1\r\nextra 9\r\n")->user_ns == 10'000'000u);
  // The largest tick count that fits in nanoseconds at 100 Hz.
  CHECK(parse_cpuacct_stat("user 1844674407370\nsystem 0")->user_ns == 18'446'744'073'700'000'000u);
}

TEST_CASE("parse_cpuacct_stat on bad input returns typed errors", "[parse]") {
  check_error(parse_cpuacct_stat(""), "cpuacct.stat has no user line", "");
  check_error(parse_cpuacct_stat("user 5\n"), "cpuacct.stat has no system line", "user 5");
  check_error(parse_cpuacct_stat("user 5\nsys"), "line has no value", "sys");
  check_error(parse_cpuacct_stat("user -5\nsystem 1\n"), "negative value", "user -5");
  check_error(parse_cpuacct_stat("user five\nsystem 1\n"), "value is not a number", "user five");
  check_error(parse_cpuacct_stat("garbage\n"), "line has no value", "garbage");
  check_error(parse_cpuacct_stat("user " + kU64MaxText + "\nsystem 1\n"),
              "value out of range in nanoseconds", "user " + kU64MaxText);
  check_error(parse_cpuacct_stat("user " + kU64OverText + "\nsystem 1\n"), "value out of range",
              "user " + kU64OverText);
  check_error(parse_cpuacct_stat("user 1\nsystem 1\n", 0), "USER_HZ must be positive", "user 1");
  check_error(parse_cpuacct_stat("user 1\0\nsystem 1\n"s), "trailing characters after value",
              "user 1\0"s);
}

TEST_CASE("parse_psi reads verbatim v2 pressure files", "[parse]") {
  const auto cpu = parse_psi(verbatim("v2-cpu.pressure"));
  REQUIRE(cpu.has_value());
  REQUIRE(cpu->some.has_value());
  CHECK(cpu->some->avg10 == Approx(14.42));
  CHECK(cpu->some->avg60 == Approx(2.88));
  CHECK(cpu->some->avg300 == Approx(0.61));
  CHECK(cpu->some->total_usec == 2156111);
  REQUIRE(cpu->full.has_value());
  CHECK(cpu->full->avg10 == 0.0);
  CHECK(cpu->full->total_usec == 0);

  const auto mem = parse_psi(verbatim("v2-memory.pressure"));
  REQUIRE(mem.has_value());
  CHECK(mem->some->avg10 == Approx(0.51));
  CHECK(mem->some->avg60 == Approx(0.09));
  CHECK(mem->some->avg300 == Approx(0.02));
  CHECK(mem->some->total_usec == 70055);
  REQUIRE(mem->full.has_value());
  CHECK(mem->full->avg10 == Approx(0.18));
  CHECK(mem->full->avg60 == Approx(0.03));
  CHECK(mem->full->avg300 == 0.0);
  CHECK(mem->full->total_usec == 39629);

  const auto io = parse_psi(verbatim("v2-io.pressure"));
  REQUIRE(io.has_value());
  CHECK(io->some->total_usec == 7330);
  CHECK(io->full->total_usec == 0);
}

TEST_CASE("parse_psi accepts some-only files, CRLF and unknown fields", "[parse]") {
  const auto some_only = parse_psi("some avg10=1.50 avg60=2.25 avg300=100.00 total=42\n");
  REQUIRE(some_only.has_value());
  CHECK(some_only->some->avg10 == 1.5);
  CHECK(some_only->some->avg60 == 2.25);
  CHECK(some_only->some->avg300 == 100.0);
  CHECK(some_only->some->total_usec == 42);
  CHECK_FALSE(some_only->full.has_value());

  const auto extra = parse_psi(
      "some avg10=0.00 avg60=0.00 avg300=0.00 total=1 avg900=7.00 future=x\r\n"
      "full avg10=0.00 avg60=0.00 avg300=0.00 total=" +
      kU64MaxText + "\r\nnewkind whatever\n");
  REQUIRE(extra.has_value());
  CHECK(extra->some->total_usec == 1);
  CHECK(extra->full->total_usec == kU64Max);

  const auto reordered = parse_psi(
      "full avg10=3 avg60=0 avg300=0 total=9\nsome total=8 avg300=12.5 avg60=0.5 avg10=0");
  REQUIRE(reordered.has_value());
  CHECK(reordered->some->total_usec == 8);
  CHECK(reordered->some->avg300 == 12.5);
  CHECK(reordered->full->avg10 == 3.0);
}

TEST_CASE("parse_psi on bad input returns typed errors", "[parse]") {
  const std::string full_line = "full avg10=0.00 avg60=0.00 avg300=0.00 total=0";
  check_error(parse_psi(""), "PSI has no some line", "");
  check_error(parse_psi(full_line + "\n"), "PSI has no some line", full_line);
  check_error(parse_psi("garbage\n"), "PSI has no some line", "garbage");
  check_error(parse_psi("some\n"), "PSI line lacks avg10, avg60, avg300 or total", "some");
  check_error(parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00"),  // truncated
              "PSI line lacks avg10, avg60, avg300 or total",
              "some avg10=0.00 avg60=0.00 avg300=0.00");
  check_error(parse_psi("some avg10 avg60=0 avg300=0 total=0"), "PSI field is not key=value",
              "some avg10 avg60=0 avg300=0 total=0");
  check_error(parse_psi("some =1 avg10=0 avg60=0 avg300=0 total=0"), "PSI field is not key=value",
              "some =1 avg10=0 avg60=0 avg300=0 total=0");
  check_error(parse_psi("some avg10=x avg60=0 avg300=0 total=0"), "value is not a number",
              "some avg10=x avg60=0 avg300=0 total=0");
  check_error(parse_psi("some avg10= avg60=0 avg300=0 total=0"), "empty value",
              "some avg10= avg60=0 avg300=0 total=0");
  check_error(parse_psi("some avg10=-1.00 avg60=0 avg300=0 total=0"), "negative value",
              "some avg10=-1.00 avg60=0 avg300=0 total=0");
  check_error(parse_psi("some avg10=nan avg60=0 avg300=0 total=0"), "value is not a number",
              "some avg10=nan avg60=0 avg300=0 total=0");
  check_error(parse_psi("some avg10=inf avg60=0 avg300=0 total=0"), "value is not a number",
              "some avg10=inf avg60=0 avg300=0 total=0");
  check_error(parse_psi("some avg10=1e5 avg60=0 avg300=0 total=0"),
              "trailing characters after value", "some avg10=1e5 avg60=0 avg300=0 total=0");
  check_error(parse_psi("some avg10=0 avg60=0 avg300=0 total=-3"), "negative value",
              "some avg10=0 avg60=0 avg300=0 total=-3");
  check_error(parse_psi("some avg10=0 avg60=0 avg300=0 total=1.5"),
              "trailing characters after value", "some avg10=0 avg60=0 avg300=0 total=1.5");
  check_error(parse_psi("some avg10=0 avg60=0 avg300=0 total=" + kU64OverText),
              "value out of range", "some avg10=0 avg60=0 avg300=0 total=" + kU64OverText);
  check_error(parse_psi("some avg10=0 avg60=0 avg300=0 total=1\nsome avg10=0 avg60=0 avg300=0 "
                        "total=2\n"),
              "duplicate PSI line", "some avg10=0 avg60=0 avg300=0 total=2");
  check_error(parse_psi("some avg10=0 avg60=0 avg300=0 total=1\0\n"s),
              "trailing characters after value", "some avg10=0 avg60=0 avg300=0 total=1\0"s);
  const std::string huge = "some avg10=" + kMiB + " avg60=0 avg300=0 total=0";
  check_error(parse_psi(huge), "value out of range", huge.substr(0, 120));
}

TEST_CASE("parse_nested_keyed reads verbatim io.stat and memory.numa_stat", "[parse]") {
  std::vector<std::tuple<std::string, std::string, uint64_t>> io;
  auto r = parse_nested_keyed(verbatim("v2-io.stat"),
                              [&](std::string_view key, std::string_view subkey, uint64_t value) {
                                io.emplace_back(std::string(key), std::string(subkey), value);
                              });
  REQUIRE(r.has_value());
  // Devices with no I/O print "1:0 " with nothing after the key.
  CHECK(io ==
        std::vector<std::tuple<std::string, std::string, uint64_t>>{{"7:0", "rbytes", 30408704},
                                                                    {"7:0", "wbytes", 12582912},
                                                                    {"7:0", "rios", 29},
                                                                    {"7:0", "wios", 17},
                                                                    {"7:0", "dbytes", 0},
                                                                    {"7:0", "dios", 0}});

  std::map<std::string, uint64_t> numa;
  r = parse_nested_keyed(verbatim("v2-memory.numa_stat"),
                         [&](std::string_view key, std::string_view subkey, uint64_t value) {
                           CHECK(subkey == "N0");
                           numa[std::string(key)] = value;
                         });
  REQUIRE(r.has_value());
  CHECK(numa.size() == 27);
  CHECK(numa.at("anon") == 15740928);
  CHECK(numa.at("inactive_anon") == 15736832);
  CHECK(numa.at("slab_unreclaimable") == 4400);
}

TEST_CASE("parse_nested_keyed on bad input stops at the malformed line", "[parse]") {
  size_t pairs = 0;
  auto run = [&](std::string_view text) {
    pairs = 0;
    return parse_nested_keyed(text, [&](std::string_view, std::string_view, uint64_t) { ++pairs; });
  };
  REQUIRE(run("").has_value());
  CHECK(pairs == 0);
  REQUIRE(run("8:0 rbytes=1 wbytes=" + kU64MaxText + "\r\n8:16  rios=3\n\n").has_value());
  CHECK(pairs == 3);
  REQUIRE(run("8:0 rbytes=1").has_value());  // missing newline
  CHECK(pairs == 1);
  check_error(run("8:0 rbytes=1\n8:16 rbytes\n"), "field is not key=value", "8:16 rbytes");
  CHECK(pairs == 1);
  check_error(run("8:0 =5\n"), "field is not key=value", "8:0 =5");
  check_error(run("8:0 rbytes=-1\n"), "negative value", "8:0 rbytes=-1");
  check_error(run("8:0 rbytes=x\n"), "value is not a number", "8:0 rbytes=x");
  check_error(run("8:0 rbytes=\n"), "empty value", "8:0 rbytes=");
  check_error(run("8:0 rbytes=" + kU64OverText + "\n"), "value out of range",
              "8:0 rbytes=" + kU64OverText);
  check_error(run(" rbytes=1\n"), "line has no key", " rbytes=1");
  check_error(run("total=4159 N0=4159\n"), "line has no key", "total=4159 N0=4159");
  check_error(run("8:0 rbytes=1\0\n"s), "trailing characters after value", "8:0 rbytes=1\0"s);
  const std::string huge = "8:0 rbytes=" + kMiB;
  check_error(run(huge), "value out of range", huge.substr(0, 120));
}

TEST_CASE("split_nested_key and parse_nested_pair", "[parse]") {
  std::string_view line = "8:0 rbytes=1 wbytes=2\r";
  auto key = split_nested_key(line);
  REQUIRE(key.has_value());
  CHECK(*key == "8:0");
  CHECK(line == "rbytes=1 wbytes=2");
  line = "1:0 ";
  CHECK(*split_nested_key(line) == "1:0");
  CHECK(line.empty());
  line = "";
  check_error(split_nested_key(line), "line has no key", "");

  std::string_view subkey;
  uint64_t value = 0;
  REQUIRE(parse_nested_pair("wios=17", subkey, value).has_value());
  CHECK(subkey == "wios");
  CHECK(value == 17);
  check_error(parse_nested_pair("wios", subkey, value), "field is not key=value", "wios");
  check_error(parse_nested_pair("wios=1=2", subkey, value), "trailing characters after value",
              "wios=1=2");
}

TEST_CASE("parse_proc_stat_cpu reads the aggregate cpu line of verbatim /proc/stat", "[parse]") {
  // v1 machine: "cpu  3331 0 3409 51561 2497 0 186 662 0 0"
  const auto v1 = parse_proc_stat_cpu(verbatim("v1-proc-stat"));
  REQUIRE(v1.has_value());
  CHECK(v1->user_ns == 33'310'000'000u);
  CHECK(v1->nice_ns == 0);
  CHECK(v1->system_ns == 34'090'000'000u);
  CHECK(v1->idle_ns == 515'610'000'000u);
  CHECK(v1->iowait_ns == 24'970'000'000u);
  CHECK(v1->irq_ns == 0);
  CHECK(v1->softirq_ns == 1'860'000'000u);
  CHECK(v1->steal_ns == 6'620'000'000u);
  CHECK(v1->total_ns == 616'460'000'000u);
  CHECK(v1->busy_ns == 75'880'000'000u);

  // v2 kernel: "cpu  176 0 387 671 0 0 2 0 0 0"
  const auto v2 = parse_proc_stat_cpu(verbatim("v2-proc-stat"));
  REQUIRE(v2.has_value());
  CHECK(v2->user_ns == 1'760'000'000u);
  CHECK(v2->system_ns == 3'870'000'000u);
  CHECK(v2->idle_ns == 6'710'000'000u);
  CHECK(v2->softirq_ns == 20'000'000u);
  CHECK(v2->total_ns == 12'360'000'000u);
  CHECK(v2->busy_ns == 5'650'000'000u);

  const auto hz1000 = parse_proc_stat_cpu("cpu  1 2 3 4 5 6 7 8 9 10\n", 1000);
  REQUIRE(hz1000.has_value());
  CHECK(hz1000->total_ns == 36'000'000u);  // guest and guest_nice are inside user and nice
  CHECK(hz1000->busy_ns == 27'000'000u);
}

TEST_CASE("parse_proc_stat_cpu on old kernels and bad input", "[parse]") {
  const auto old = parse_proc_stat_cpu("cpu 10 20 30 40\r\ncpu0 10 20 30 40\r\n");
  REQUIRE(old.has_value());
  CHECK(old->iowait_ns == 0);
  CHECK(old->steal_ns == 0);
  CHECK(old->total_ns == 1'000'000'000u);
  CHECK(old->busy_ns == 600'000'000u);
  CHECK(parse_proc_stat_cpu("intr 1 2\ncpu  1 0 0 1 0 0 0 0")->busy_ns == 10'000'000u);

  check_error(parse_proc_stat_cpu(""), "no aggregate cpu line", "");
  check_error(parse_proc_stat_cpu("garbage\n"), "no aggregate cpu line", "");
  check_error(parse_proc_stat_cpu("cpu0 1 2 3 4\n"), "no aggregate cpu line", "");
  check_error(parse_proc_stat_cpu("cpu 1 2 3\n"), "cpu line has fewer than 4 columns", "cpu 1 2 3");
  check_error(parse_proc_stat_cpu("cpu  1 x 3 4\n"), "value is not a number", "cpu  1 x 3 4");
  check_error(parse_proc_stat_cpu("cpu  1 -2 3 4\n"), "negative value", "cpu  1 -2 3 4");
  check_error(parse_proc_stat_cpu("cpu  1 2 3 4 5 6 7 8 9 x\n"), "value is not a number",
              "cpu  1 2 3 4 5 6 7 8 9 x");
  check_error(parse_proc_stat_cpu("cpu  " + kU64MaxText + " 0 0 0\n"),
              "value out of range in nanoseconds", "cpu  " + kU64MaxText + " 0 0 0");
  check_error(parse_proc_stat_cpu("cpu  " + kU64OverText + " 0 0 0\n"), "value out of range",
              "cpu  " + kU64OverText + " 0 0 0");
  // Each column fits in nanoseconds, their sum does not.
  check_error(parse_proc_stat_cpu("cpu  1000000000000 1000000000000 0 0\n"),
              "cpu total out of range", "cpu  1000000000000 1000000000000 0 0");
  check_error(parse_proc_stat_cpu("cpu 1 2 3 4\n", 0), "USER_HZ must be positive", "cpu 1 2 3 4");
  check_error(parse_proc_stat_cpu("cpu  1 2 3 4\0\n"s), "trailing characters after value",
              "cpu  1 2 3 4\0"s);
  const std::string huge = "cpu  " + kMiB + " 0 0 0";
  check_error(parse_proc_stat_cpu(huge), "value out of range", huge.substr(0, 120));
}

TEST_CASE("parse_meminfo reads verbatim /proc/meminfo in bytes", "[parse]") {
  const auto v1 = parse_meminfo(verbatim("v1-proc-meminfo"));
  REQUIRE(v1.has_value());
  CHECK(v1->mem_total_bytes == 24684092ull * 1024);
  CHECK(v1->mem_free_bytes == 24208900ull * 1024);
  CHECK(v1->mem_available_bytes == 24330804ull * 1024);
  CHECK(v1->buffers_bytes == 9060ull * 1024);
  CHECK(v1->cached_bytes == 280484ull * 1024);
  CHECK(v1->active_file_bytes == 121748ull * 1024);
  CHECK(v1->inactive_file_bytes == 158936ull * 1024);
  CHECK(v1->swap_total_bytes == 0u);
  CHECK(v1->swap_free_bytes == 0u);

  const auto v2 = parse_meminfo(verbatim("v2-proc-meminfo"));
  REQUIRE(v2.has_value());
  CHECK(v2->mem_total_bytes == 983496ull * 1024);
  CHECK(v2->mem_available_bytes == 707568ull * 1024);
  CHECK(v2->active_file_bytes == 0u);
  CHECK(v2->inactive_file_bytes == 29700ull * 1024);
  CHECK(v2->swap_total_bytes == 65532ull * 1024);
  CHECK(v2->swap_free_bytes == 56060ull * 1024);
}

TEST_CASE("parse_meminfo on partial and bad input", "[parse]") {
  const auto empty = parse_meminfo("");
  REQUIRE(empty.has_value());
  CHECK_FALSE(empty->mem_total_bytes.has_value());
  CHECK_FALSE(empty->swap_free_bytes.has_value());

  const auto partial = parse_meminfo("MemTotal:  2 kB\r\nHugePages_Total:   0\r\nWeird: junk!\n");
  REQUIRE(partial.has_value());
  CHECK(partial->mem_total_bytes == 2048u);
  CHECK_FALSE(partial->mem_available_bytes.has_value());
  CHECK(parse_meminfo("MemFree: 5")->mem_free_bytes == 5u);  // no unit: bytes
  CHECK(parse_meminfo("SwapFree: 18014398509481983 kB")->swap_free_bytes ==
        18014398509481983ull * 1024);
  CHECK(parse_meminfo("Cached: " + kU64MaxText)->cached_bytes == kU64Max);

  check_error(parse_meminfo("garbage\n"), "line has no key", "garbage");
  check_error(parse_meminfo(": 5 kB\n"), "line has no key", ": 5 kB");
  check_error(parse_meminfo("MemTotal:\n"), "line has no value", "MemTotal:");
  check_error(parse_meminfo("MemTotal:   -1 kB\n"), "negative value", "MemTotal:   -1 kB");
  check_error(parse_meminfo("MemTotal:   lots kB\n"), "value is not a number",
              "MemTotal:   lots kB");
  check_error(parse_meminfo("MemTotal:   5 MB\n"), "unknown unit", "MemTotal:   5 MB");
  check_error(parse_meminfo("MemTotal:   5 kB x\n"), "trailing characters after value",
              "MemTotal:   5 kB x");
  check_error(parse_meminfo("MemTotal: " + kU64MaxText + " kB\n"), "value out of range in bytes",
              "MemTotal: " + kU64MaxText + " kB");
  check_error(parse_meminfo("MemTotal: " + kU64OverText + " kB\n"), "value out of range",
              "MemTotal: " + kU64OverText + " kB");
  check_error(parse_meminfo("MemTotal: 5\0 kB\n"s), "trailing characters after value",
              "MemTotal: 5\0 kB"s);
  check_error(parse_meminfo(std::string(1 << 20, 'm')), "line has no key", std::string(120, 'm'));
}

TEST_CASE("no parser throws on random bytes", "[parse]") {
  // Inputs built from the characters that matter to the formats, so that many reach deep paths.
  const std::string alphabet = "0123456789 \n\r\t=:-.,maxsomefullavg10total\0kBcpu"s;
  std::mt19937 rng(20240601);
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::uniform_int_distribution<size_t> length(0, 200);
  size_t errors = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string text(length(rng), ' ');
    for (char& c : text)
      c = alphabet[pick(rng)];
    CHECK_NOTHROW(errors += !parse_single_value(text));
    CHECK_NOTHROW(errors += !parse_max_or_value(text));
    CHECK_NOTHROW(errors += !parse_flat_keyed(text, [](std::string_view, uint64_t) {}));
    CHECK_NOTHROW(errors += !parse_cpuacct_stat(text));
    CHECK_NOTHROW(errors += !parse_psi(text));
    CHECK_NOTHROW(errors +=
                  !parse_nested_keyed(text, [](std::string_view, std::string_view, uint64_t) {}));
    CHECK_NOTHROW(errors += !parse_proc_stat_cpu(text));
    CHECK_NOTHROW(errors += !parse_meminfo(text));
  }
  CHECK(errors > 0);  // the inputs really were bad, mostly
}
