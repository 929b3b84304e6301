#include "cgroup/error.h"

#include <stdexcept>

namespace nodemeter::cgroup {

const char* to_string(ReadErrorKind kind) {
  switch (kind) {
    case ReadErrorKind::kGone:
      return "gone";
    case ReadErrorKind::kUnsupported:
      return "unsupported";
    case ReadErrorKind::kIo:
      return "io";
    case ReadErrorKind::kParse:
      return "parse";
  }
  return "io";
}

std::string describe(const ReadError& error) {
  return error.path + ": " + error.message;
}

void throw_exception_from_error(const ParseError& e, const boost::source_location&) {
  throw std::runtime_error(e.message + ": " + e.line);
}

void throw_exception_from_error(const ReadError& e, const boost::source_location&) {
  throw std::runtime_error(describe(e));
}

}  // namespace nodemeter::cgroup
