#include "agent/log.h"

#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>

namespace nodemeter::agent {
namespace {

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

int syslog_priority(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return 7;
    case LogLevel::kInfo:
      return 6;
    case LogLevel::kWarn:
      return 4;
    case LogLevel::kError:
      return 3;
  }
  return 6;
}

std::string now_rfc3339() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

bool needs_quotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20)
      return true;
  }
  return false;
}

std::string quote_value(std::string_view v) {
  // JSON string escaping is a valid logfmt quoting too.
  return nlohmann::json(std::string(v))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

Logger::Logger(LogFormat format, std::FILE* out, bool journal)
    : format_(format), out_(out), journal_(journal) {}

bool Logger::stderr_is_journal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (!js) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

std::string Logger::format(LogLevel level, std::string_view message, const LogFields& fields,
                           std::string_view timestamp) const {
  if (format_ == LogFormat::kJson) {
    nlohmann::ordered_json j;
    j["ts"] = timestamp;
    j["level"] = level_name(level);
    j["msg"] = message;
    for (const auto& [k, v] : fields)
      j[k] = v;
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string line = "ts=" + std::string(timestamp) + " level=" + level_name(level) +
                     " msg=" + quote_value(message);
  for (const auto& [k, v] : fields) {
    line += ' ';
    line += k;
    line += '=';
    line += needs_quotes(v) ? quote_value(v) : v;
  }
  return line;
}

void Logger::log(LogLevel level, std::string_view message, const LogFields& fields) {
  if (journal_) {
    // Structured fields: MESSAGE, PRIORITY and each field upper-cased as NODEMETER_<KEY>.
    std::vector<std::string> entries;
    entries.push_back("MESSAGE=" + std::string(message));
    entries.push_back("PRIORITY=" + std::to_string(syslog_priority(level)));
    for (const auto& [k, v] : fields) {
      std::string key = "NODEMETER_";
      for (char c : k)
        key += (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : (c == '-' ? '_' : c);
      entries.push_back(key + "=" + v);
    }
    std::vector<struct iovec> iov;
    for (auto& e : entries)
      iov.push_back({e.data(), e.size()});
    if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0) return;
  }
  const std::string line = format(level, message, fields, now_rfc3339());
  std::lock_guard lock(mu_);
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
}

}  // namespace nodemeter::agent
