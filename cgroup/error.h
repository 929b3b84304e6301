// Typed errors of the cgroup module. Parsers return ParseResult; readers return ReadResult,
// whose kind lets the collector decide in one place what is absence and what is an error.
#pragma once

#include <boost/system/result.hpp>
#include <string>

namespace nodemeter::cgroup {

struct ParseError {
  std::string message;  // what is wrong, e.g. "value is not a number"
  std::string line;     // the offending line, truncated to 120 bytes
};

enum class ReadErrorKind {
  kGone,         // ENOENT/ENODEV: the cgroup (or file) disappeared; absence, not failure
  kUnsupported,  // the kernel does not offer this file (e.g. PSI off); absence, not failure
  kIo,           // any other errno
  kParse,        // the file was read but its text is malformed
};

struct ReadError {
  ReadErrorKind kind = ReadErrorKind::kIo;
  std::string path;     // the file that failed
  std::string message;  // strerror text or the parse error's message and line
  int errno_value = 0;
};

const char* to_string(ReadErrorKind kind);
std::string describe(const ReadError& error);  // "<path>: <message>"

template <class T>
using ParseResult = boost::system::result<T, ParseError>;
template <class T>
using ReadResult = boost::system::result<T, ReadError>;

// boost::system::result::value() throws through this; we never call value() on an error.
[[noreturn]] void throw_exception_from_error(const ParseError& e, const boost::source_location&);
[[noreturn]] void throw_exception_from_error(const ReadError& e, const boost::source_location&);

}  // namespace nodemeter::cgroup
