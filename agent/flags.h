// A small command-line flag parser shared by the subcommands: `--name value` and `--name=value`,
// repeatable flags, Go-style durations ("500ms", "5s", "1m30s"), and one-sentence errors naming
// the flag — the agent exits 2 with that sentence.
#pragma once

#include <boost/system/result.hpp>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace nodemeter::agent {

// Parses a Go duration: a sequence of decimal numbers with units ns, us, µs, ms, s, m, h.
boost::system::result<std::chrono::nanoseconds, std::string> parse_duration(std::string_view text);
// The inverse, for --help defaults and logs ("5s", "1m30s", "500ms").
std::string format_duration(std::chrono::nanoseconds d);

class FlagSet {
 public:
  explicit FlagSet(std::string command) : command_(std::move(command)) {}

  // Each setter receives the value and returns an error sentence fragment, or "" when it is fine.
  using Setter = std::function<std::string(std::string_view value)>;
  void value(std::string name, std::string value_name, std::string help, std::string default_text,
             Setter set);
  void boolean(std::string name, std::string help, std::function<void()> set);

  // Parses args (without the program and subcommand). The error is one sentence naming the flag.
  boost::system::result<void, std::string> parse(const std::vector<std::string>& args) const;
  std::string usage() const;

 private:
  struct Flag {
    std::string name;
    std::string value_name;  // empty for booleans
    std::string help;
    std::string default_text;
    Setter set;
    std::function<void()> set_bool;
  };
  std::string command_;
  std::vector<Flag> flags_;
};

// This machine's host name (a default for names and certificate SANs); "localhost" if unknown.
std::string host_name();

}  // namespace nodemeter::agent
