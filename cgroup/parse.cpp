#include "cgroup/parse.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <system_error>

namespace nodemeter::cgroup {
namespace {

constexpr size_t kMaxErrorLineBytes = 120;
constexpr uint64_t kNsPerSecond = 1'000'000'000;

// Trailing whitespace the kernel prints (and a stray CR from a CRLF file) is not part of a value.
std::string_view trim_trailing(std::string_view s) {
  const auto end = s.find_last_not_of(" \t\r\n");
  return end == std::string_view::npos ? std::string_view{} : s.substr(0, end + 1);
}

std::string_view first_line(std::string_view text) {
  return text.substr(0, text.find('\n'));
}

// Splits the next space-separated token off s, skipping runs of spaces; empty when s is exhausted.
std::string_view next_token(std::string_view& s) {
  const auto start = s.find_first_not_of(' ');
  if (start == std::string_view::npos) {
    s = {};
    return {};
  }
  s.remove_prefix(start);
  const auto sp = s.find(' ');
  const std::string_view token = s.substr(0, sp);
  s = sp == std::string_view::npos ? std::string_view{} : s.substr(sp);
  return token;
}

// Re-labels a token-level error with the whole line it came from.
ParseError with_line(const ParseError& e, std::string_view line) {
  return make_parse_error(e.message, line);
}

// ticks of 1/user_hz s -> ns; false on overflow.
bool ticks_to_ns(uint64_t ticks, uint64_t user_hz, uint64_t& ns) {
  const unsigned __int128 wide = static_cast<unsigned __int128>(ticks) * kNsPerSecond / user_hz;
  if (wide > std::numeric_limits<uint64_t>::max()) return false;
  ns = static_cast<uint64_t>(wide);
  return true;
}

ParseResult<double> parse_double_token(std::string_view token) {
  if (token.empty()) return make_parse_error("empty value", token);
  if (token.front() == '-') return make_parse_error("negative value", token);
  double value = 0;
  const auto [ptr, ec] =
      std::from_chars(token.data(), token.data() + token.size(), value, std::chars_format::fixed);
  if (ec == std::errc::result_out_of_range) return make_parse_error("value out of range", token);
  if (ec != std::errc{} || !std::isfinite(value)) {
    return make_parse_error("value is not a number", token);
  }
  if (ptr != token.data() + token.size()) {
    return make_parse_error("trailing characters after value", token);
  }
  return value;
}

}  // namespace

ParseError make_parse_error(std::string_view message, std::string_view line) {
  return ParseError{std::string(message), std::string(line.substr(0, kMaxErrorLineBytes))};
}

ParseResult<uint64_t> parse_u64_token(std::string_view token) {
  if (token.empty()) return make_parse_error("empty value", token);
  if (token.front() == '-') return make_parse_error("negative value", token);
  uint64_t value = 0;
  const auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
  if (ec == std::errc::result_out_of_range) return make_parse_error("value out of range", token);
  if (ec != std::errc{}) return make_parse_error("value is not a number", token);
  if (ptr != token.data() + token.size()) {
    return make_parse_error("trailing characters after value", token);
  }
  return value;
}

ParseResult<uint64_t> parse_single_value(std::string_view text) {
  const std::string_view value = trim_trailing(text);
  auto r = parse_u64_token(value);
  if (!r) return with_line(r.error(), first_line(text));
  return *r;
}

ParseResult<std::optional<uint64_t>> parse_max_or_value(std::string_view text) {
  if (trim_trailing(text) == "max") return std::optional<uint64_t>{};
  auto r = parse_single_value(text);
  if (!r) return r.error();
  if (*r >= kUnlimitedThreshold) return std::optional<uint64_t>{};
  return std::optional<uint64_t>{*r};
}

ParseResult<void> parse_flat_keyed_line(std::string_view line, std::string_view& key,
                                        uint64_t& value) {
  const std::string_view trimmed = trim_trailing(line);
  const auto sp = trimmed.find(' ');
  if (sp == 0) return make_parse_error("line has no key", line);
  if (sp == std::string_view::npos) return make_parse_error("line has no value", line);
  std::string_view rest = trimmed.substr(sp);
  const std::string_view token = next_token(rest);
  if (!rest.empty()) return make_parse_error("trailing characters after value", line);
  auto r = parse_u64_token(token);
  if (!r) return with_line(r.error(), line);
  key = trimmed.substr(0, sp);
  value = *r;
  return {};
}

ParseResult<CpuacctStat> parse_cpuacct_stat(std::string_view text, uint64_t user_hz) {
  if (user_hz == 0) return make_parse_error("USER_HZ must be positive", first_line(text));
  std::optional<uint64_t> user_ticks;
  std::optional<uint64_t> system_ticks;
  auto r = parse_flat_keyed(text, [&](std::string_view key, uint64_t value) {
    if (key == "user") {
      user_ticks = value;
    } else if (key == "system") {
      system_ticks = value;
    }
  });
  if (!r) return r.error();
  if (!user_ticks || !system_ticks) {
    return make_parse_error(
        !user_ticks ? "cpuacct.stat has no user line" : "cpuacct.stat has no system line",
        first_line(text));
  }
  CpuacctStat stat;
  if (!ticks_to_ns(*user_ticks, user_hz, stat.user_ns) ||
      !ticks_to_ns(*system_ticks, user_hz, stat.system_ns)) {
    return make_parse_error("value out of range in nanoseconds", first_line(text));
  }
  return stat;
}

ParseResult<Psi> parse_psi(std::string_view text) {
  Psi psi;
  std::string_view rest_of_text = text;
  std::string_view line;
  while (next_line(rest_of_text, line)) {
    std::string_view rest = trim_trailing(line);
    const std::string_view kind = next_token(rest);
    if (kind.empty()) continue;
    std::optional<PsiTotals>* slot = nullptr;
    if (kind == "some") {
      slot = &psi.some;
    } else if (kind == "full") {
      slot = &psi.full;
    } else {
      continue;  // a line kind this kernel ABI does not define yet
    }
    if (slot->has_value()) return make_parse_error("duplicate PSI line", line);
    PsiTotals totals;
    bool has_avg10 = false, has_avg60 = false, has_avg300 = false, has_total = false;
    for (std::string_view token = next_token(rest); !token.empty(); token = next_token(rest)) {
      const auto eq = token.find('=');
      if (eq == std::string_view::npos || eq == 0) {
        return make_parse_error("PSI field is not key=value", line);
      }
      const std::string_view name = token.substr(0, eq);
      const std::string_view value = token.substr(eq + 1);
      double* avg = nullptr;
      if (name == "avg10") {
        avg = &totals.avg10;
        has_avg10 = true;
      } else if (name == "avg60") {
        avg = &totals.avg60;
        has_avg60 = true;
      } else if (name == "avg300") {
        avg = &totals.avg300;
        has_avg300 = true;
      } else if (name == "total") {
        auto r = parse_u64_token(value);
        if (!r) return with_line(r.error(), line);
        totals.total_usec = *r;
        has_total = true;
        continue;
      } else {
        continue;  // unknown fields are skipped
      }
      auto r = parse_double_token(value);
      if (!r) return with_line(r.error(), line);
      *avg = *r;
    }
    if (!has_avg10 || !has_avg60 || !has_avg300 || !has_total) {
      return make_parse_error("PSI line lacks avg10, avg60, avg300 or total", line);
    }
    *slot = totals;
  }
  if (!psi.some) return make_parse_error("PSI has no some line", first_line(text));
  return psi;
}

ParseResult<std::string_view> split_nested_key(std::string_view& line) {
  const std::string_view trimmed = trim_trailing(line);
  const auto sp = trimmed.find(' ');
  const std::string_view key = trimmed.substr(0, sp);
  if (key.empty() || key.find('=') != std::string_view::npos) {
    return make_parse_error("line has no key", line);
  }
  line = sp == std::string_view::npos ? std::string_view{} : trimmed.substr(sp + 1);
  return key;
}

ParseResult<void> parse_nested_pair(std::string_view token, std::string_view& subkey,
                                    uint64_t& value) {
  const auto eq = token.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return make_parse_error("field is not key=value", token);
  }
  auto r = parse_u64_token(token.substr(eq + 1));
  if (!r) return with_line(r.error(), token);
  subkey = token.substr(0, eq);
  value = *r;
  return {};
}

ParseResult<ProcStatCpu> parse_proc_stat_cpu(std::string_view text, uint64_t user_hz) {
  if (user_hz == 0) return make_parse_error("USER_HZ must be positive", first_line(text));
  std::string_view line;
  while (next_line(text, line)) {
    if (!line.starts_with("cpu ")) continue;
    std::string_view rest = trim_trailing(line.substr(4));
    ProcStatCpu cpu;
    uint64_t* const columns[] = {&cpu.user_ns,   &cpu.nice_ns, &cpu.system_ns,  &cpu.idle_ns,
                                 &cpu.iowait_ns, &cpu.irq_ns,  &cpu.softirq_ns, &cpu.steal_ns};
    size_t count = 0;
    // Columns past steal (guest, guest_nice) are validated but not used.
    for (std::string_view token = next_token(rest); !token.empty(); token = next_token(rest)) {
      auto r = parse_u64_token(token);
      if (!r) return with_line(r.error(), line);
      if (count < std::size(columns) && !ticks_to_ns(*r, user_hz, *columns[count])) {
        return make_parse_error("value out of range in nanoseconds", line);
      }
      ++count;
    }
    if (count < 4) return make_parse_error("cpu line has fewer than 4 columns", line);
    uint64_t total = 0;
    for (const uint64_t* column : columns) {
      if (__builtin_add_overflow(total, *column, &total)) {
        return make_parse_error("cpu total out of range", line);
      }
    }
    cpu.total_ns = total;
    cpu.busy_ns = total - cpu.idle_ns - cpu.iowait_ns;
    return cpu;
  }
  return make_parse_error("no aggregate cpu line", {});
}

ParseResult<Meminfo> parse_meminfo(std::string_view text) {
  Meminfo info;
  std::string_view line;
  while (next_line(text, line)) {
    const std::string_view trimmed = trim_trailing(line);
    if (trimmed.find_first_not_of(' ') == std::string_view::npos) continue;
    const auto colon = trimmed.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return make_parse_error("line has no key", line);
    }
    const std::string_view key = trimmed.substr(0, colon);
    std::optional<uint64_t>* slot = nullptr;
    if (key == "MemTotal") {
      slot = &info.mem_total_bytes;
    } else if (key == "MemFree") {
      slot = &info.mem_free_bytes;
    } else if (key == "MemAvailable") {
      slot = &info.mem_available_bytes;
    } else if (key == "Buffers") {
      slot = &info.buffers_bytes;
    } else if (key == "Cached") {
      slot = &info.cached_bytes;
    } else if (key == "Active(file)") {
      slot = &info.active_file_bytes;
    } else if (key == "Inactive(file)") {
      slot = &info.inactive_file_bytes;
    } else if (key == "SwapTotal") {
      slot = &info.swap_total_bytes;
    } else if (key == "SwapFree") {
      slot = &info.swap_free_bytes;
    } else {
      continue;
    }
    std::string_view rest = trimmed.substr(colon + 1);
    const std::string_view number = next_token(rest);
    const std::string_view unit = next_token(rest);
    if (number.empty()) return make_parse_error("line has no value", line);
    if (!rest.empty() && !next_token(rest).empty()) {
      return make_parse_error("trailing characters after value", line);
    }
    auto r = parse_u64_token(number);
    if (!r) return with_line(r.error(), line);
    uint64_t bytes = *r;
    if (unit == "kB") {
      if (__builtin_mul_overflow(bytes, uint64_t{1024}, &bytes)) {
        return make_parse_error("value out of range in bytes", line);
      }
    } else if (!unit.empty()) {
      return make_parse_error("unknown unit", line);
    }
    *slot = bytes;
  }
  return info;
}

}  // namespace nodemeter::cgroup
