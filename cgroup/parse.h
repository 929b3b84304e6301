// Parsers for the cgroup file formats: pure functions from the file's text to values.
// One parser per format, not per file. They never throw, never guess and never allocate per key:
// unknown keys are skipped, a malformed line is a ParseError carrying the line.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "cgroup/error.h"
#include "cgroup/types.h"

namespace nodemeter::cgroup {

// "12345\n": one unsigned decimal, optional trailing newline/spaces. Negative, empty, non-numeric,
// out of range (> 2^64-1) and trailing garbage are errors.
ParseResult<uint64_t> parse_single_value(std::string_view text);

// "max\n" or a number (memory.max, memory.swap.max, pids.max). Absent means "max".
// A number >= kUnlimitedThreshold also reads as absent (v1 "unlimited" is a huge number).
ParseResult<std::optional<uint64_t>> parse_max_or_value(std::string_view text);

// "key value\n" lines (cpu.stat, memory.stat, memory.events, cpuacct.stat, v1 cpu.stat).
// Calls on_entry(key, value) for each line; stops at the first malformed line and returns its
// error. Blank lines are skipped. The keys passed are views into text.
template <class OnEntry>
ParseResult<void> parse_flat_keyed(std::string_view text, OnEntry&& on_entry);

// One flat-keyed line: splits "key value" and parses value. Exposed for the template above.
ParseResult<void> parse_flat_keyed_line(std::string_view line, std::string_view& key,
                                        uint64_t& value);

// cpuacct.stat: "user <USER_HZ ticks>\nsystem <ticks>\n" -> nanoseconds, with the kernel's USER_HZ.
struct CpuacctStat {
  uint64_t user_ns = 0;
  uint64_t system_ns = 0;
};
ParseResult<CpuacctStat> parse_cpuacct_stat(std::string_view text, uint64_t user_hz = 100);

// PSI: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=... total=...\n".
// A file with only a "some" line (root cpu.pressure on older kernels) is valid.
ParseResult<Psi> parse_psi(std::string_view text);

// The aggregate "cpu " line of /proc/stat (USER_HZ ticks) in nanoseconds. Columns a kernel does
// not print (older kernels stop after idle, iowait, ...) read as 0. guest and guest_nice are
// already counted in user and nice, so they are not added again.
struct ProcStatCpu {
  uint64_t user_ns = 0;
  uint64_t nice_ns = 0;
  uint64_t system_ns = 0;
  uint64_t idle_ns = 0;
  uint64_t iowait_ns = 0;
  uint64_t irq_ns = 0;
  uint64_t softirq_ns = 0;
  uint64_t steal_ns = 0;
  uint64_t total_ns = 0;  // user + nice + system + idle + iowait + irq + softirq + steal
  uint64_t busy_ns = 0;   // total - idle - iowait: node CPU usage where the root has no cpu.stat
};
ParseResult<ProcStatCpu> parse_proc_stat_cpu(std::string_view text, uint64_t user_hz = 100);

// /proc/meminfo: "Key:   123 kB" lines, in bytes. Keys the kernel does not print stay absent;
// other keys are skipped.
struct Meminfo {
  std::optional<uint64_t> mem_total_bytes;
  std::optional<uint64_t> mem_free_bytes;
  std::optional<uint64_t> mem_available_bytes;
  std::optional<uint64_t> buffers_bytes;
  std::optional<uint64_t> cached_bytes;
  std::optional<uint64_t> active_file_bytes;    // Active(file)
  std::optional<uint64_t> inactive_file_bytes;  // Inactive(file)
  std::optional<uint64_t> swap_total_bytes;
  std::optional<uint64_t> swap_free_bytes;
};
ParseResult<Meminfo> parse_meminfo(std::string_view text);

// Nested keyed (io.stat, memory.numa_stat): "<key> k1=v1 k2=v2 ...". Calls on_entry(key, subkey,
// value) for each pair; stops at the first malformed line.
template <class OnEntry>
ParseResult<void> parse_nested_keyed(std::string_view text, OnEntry&& on_entry);

// Splits the next line off text (without '\n'); returns false when text is exhausted.
inline bool next_line(std::string_view& text, std::string_view& line) {
  if (text.empty()) return false;
  const auto nl = text.find('\n');
  if (nl == std::string_view::npos) {
    line = text;
    text = {};
  } else {
    line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
  }
  return true;
}

// Parses an unsigned decimal that must span all of token.
ParseResult<uint64_t> parse_u64_token(std::string_view token);

ParseError make_parse_error(std::string_view message, std::string_view line);

template <class OnEntry>
ParseResult<void> parse_flat_keyed(std::string_view text, OnEntry&& on_entry) {
  std::string_view line;
  while (next_line(text, line)) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    std::string_view key;
    uint64_t value = 0;
    auto r = parse_flat_keyed_line(line, key, value);
    if (!r) return r;
    on_entry(key, value);
  }
  return {};
}

// One nested-keyed line: calls on_pair(subkey, value) for each "k=v" after the leading key.
ParseResult<std::string_view> split_nested_key(std::string_view& line);
ParseResult<void> parse_nested_pair(std::string_view token, std::string_view& subkey,
                                    uint64_t& value);

template <class OnEntry>
ParseResult<void> parse_nested_keyed(std::string_view text, OnEntry&& on_entry) {
  std::string_view line;
  while (next_line(text, line)) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string_view full_line = line;
    auto key = split_nested_key(line);
    if (!key) return key.error();
    while (!line.empty()) {
      const auto sp = line.find(' ');
      const std::string_view token = line.substr(0, sp);
      line = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
      if (token.empty()) continue;
      std::string_view subkey;
      uint64_t value = 0;
      auto r = parse_nested_pair(token, subkey, value);
      if (!r) return make_parse_error(r.error().message, full_line);
      on_entry(*key, subkey, value);
    }
  }
  return {};
}

}  // namespace nodemeter::cgroup
