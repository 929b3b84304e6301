// Structured logs: logfmt-style text or JSON lines to stderr, or the systemd journal with
// structured fields when $JOURNAL_STREAM says stderr is the journal. Thread-safe.
#pragma once

#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nodemeter::agent {

enum class LogFormat { kText, kJson };
enum class LogLevel { kDebug, kInfo, kWarn, kError };

using LogFields = std::vector<std::pair<std::string, std::string>>;

class Logger {
 public:
  // journal: send to the systemd journal instead of writing to `out`.
  explicit Logger(LogFormat format = LogFormat::kText, std::FILE* out = stderr,
                  bool journal = false);
  // Picks the journal when $JOURNAL_STREAM matches stderr's device and inode, as systemd documents.
  static bool stderr_is_journal();

  void log(LogLevel level, std::string_view message, const LogFields& fields = {});
  void info(std::string_view message, const LogFields& fields = {}) {
    log(LogLevel::kInfo, message, fields);
  }
  void warn(std::string_view message, const LogFields& fields = {}) {
    log(LogLevel::kWarn, message, fields);
  }
  void error(std::string_view message, const LogFields& fields = {}) {
    log(LogLevel::kError, message, fields);
  }

  // Formats one line without writing it (tests).
  std::string format(LogLevel level, std::string_view message, const LogFields& fields,
                     std::string_view timestamp) const;

 private:
  LogFormat format_;
  std::FILE* out_;
  bool journal_;
  std::mutex mu_;
};

}  // namespace nodemeter::agent
