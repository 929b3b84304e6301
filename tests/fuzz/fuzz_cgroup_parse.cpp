// Every cgroup file format parser (cgroup/parse.h) on the same bytes. Invariants beyond "no crash,
// no throw": errors carry at most 120 bytes of line; keys are non-empty views into the input;
// parse_single_value accepts exactly the texts an independent decimal reader accepts, with the
// same value; /proc/stat's total is the exact sum of its columns and busy never exceeds it.
#include <cmath>
#include <limits>

#include "cgroup/parse.h"
#include "fuzz_check.h"

namespace {

using namespace nodemeter::cgroup;
using nodemeter::fuzz::is_view_into;

template <class T>
void check_error(const ParseResult<T>& r) {
  if (!r) FUZZ_CHECK(r.error().line.size() <= 120, "error lines are truncated to 120 bytes");
}

// The reference: trailing " \t\r\n" trimmed, then 1..20 decimal digits fitting in 64 bits.
std::optional<uint64_t> reference_decimal(std::string_view text) {
  const auto end = text.find_last_not_of(" \t\r\n");
  if (end == std::string_view::npos) return std::nullopt;
  text = text.substr(0, end + 1);
  unsigned __int128 value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<unsigned>(c - '0');
    if (value > std::numeric_limits<uint64_t>::max()) return std::nullopt;
  }
  return static_cast<uint64_t>(value);
}

void check_psi_totals(const std::optional<PsiTotals>& t) {
  if (!t) return;
  for (double avg : {t->avg10, t->avg60, t->avg300}) {
    FUZZ_CHECK(std::isfinite(avg) && avg >= 0, "PSI averages are finite and non-negative");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = nodemeter::fuzz::as_text(data, size);

  const auto single = parse_single_value(text);
  check_error(single);
  const auto reference = reference_decimal(text);
  FUZZ_CHECK(single.has_value() == reference.has_value(),
             "parse_single_value accepts exactly one unsigned 64-bit decimal");
  if (single) FUZZ_CHECK(*single == *reference, "parse_single_value reads the decimal's value");

  const auto max_or = parse_max_or_value(text);
  check_error(max_or);
  if (max_or && *max_or) {
    FUZZ_CHECK(**max_or < kUnlimitedThreshold, "a limit at or past 2^62 reads as unlimited");
    FUZZ_CHECK(single && *single == **max_or, "a numeric limit is the file's value");
  }

  size_t lines = 1;
  for (char c : text)
    lines += c == '\n';

  size_t entries = 0;
  const auto flat = parse_flat_keyed(text, [&](std::string_view key, uint64_t) {
    ++entries;
    FUZZ_CHECK(!key.empty() && is_view_into(key, text), "flat keys are views into the text");
    FUZZ_CHECK(key.find('\n') == std::string_view::npos, "a key never spans lines");
  });
  check_error(flat);
  FUZZ_CHECK(entries <= lines, "at most one entry per line");

  for (uint64_t user_hz : {uint64_t{100}, uint64_t{1}, uint64_t{1000}}) {
    const auto cpuacct = parse_cpuacct_stat(text, user_hz);
    check_error(cpuacct);
    const auto stat = parse_proc_stat_cpu(text, user_hz);
    check_error(stat);
    if (stat) {
      unsigned __int128 sum = 0;
      for (uint64_t v : {stat->user_ns, stat->nice_ns, stat->system_ns, stat->idle_ns,
                         stat->iowait_ns, stat->irq_ns, stat->softirq_ns, stat->steal_ns}) {
        sum += v;
      }
      FUZZ_CHECK(sum == stat->total_ns, "the /proc/stat total is the sum of its columns");
      FUZZ_CHECK(stat->busy_ns <= stat->total_ns, "busy time never exceeds the total");
      FUZZ_CHECK(stat->busy_ns == stat->total_ns - stat->idle_ns - stat->iowait_ns,
                 "busy is the total less idle and iowait");
    }
  }
  FUZZ_CHECK(!parse_cpuacct_stat(text, 0) && !parse_proc_stat_cpu(text, 0),
             "USER_HZ 0 is refused, never divided by");

  const auto psi = parse_psi(text);
  check_error(psi);
  if (psi) {
    FUZZ_CHECK(psi->some.has_value(), "a parsed PSI file has a some line");
    check_psi_totals(psi->some);
    check_psi_totals(psi->full);
  }

  check_error(parse_meminfo(text));

  const auto nested = parse_nested_keyed(text, [&](std::string_view key, std::string_view subkey,
                                                   uint64_t) {
    FUZZ_CHECK(!key.empty() && is_view_into(key, text), "nested keys are views into the text");
    FUZZ_CHECK(key.find('=') == std::string_view::npos, "a nested key has no '='");
    FUZZ_CHECK(!subkey.empty() && is_view_into(subkey, text), "subkeys are views into the text");
  });
  check_error(nested);
  return 0;
}
