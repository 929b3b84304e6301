// Typed values read from cgroup files: what one cgroup or the node consumed.
// Units are in the names; optional fields are absent where the kernel or the layout lacks them.
#pragma once

#include <cstdint>
#include <optional>

namespace nodemeter::cgroup {

// Limits at or above this read as unlimited, as the kubelet treats them (v1 prints 2^63-1
// page-rounded).
inline constexpr uint64_t kUnlimitedThreshold = uint64_t{1} << 62;

struct CpuUsage {
  uint64_t cumulative_ns = 0;  // cumulative; never decreases for one cgroup identity
  std::optional<uint64_t> user_ns;
  std::optional<uint64_t> system_ns;
  std::optional<uint64_t> periods;            // CFS enforcement periods elapsed
  std::optional<uint64_t> throttled_periods;  // periods in which the cgroup was throttled
  std::optional<uint64_t> throttled_ns;       // total time throttled
};

struct MemoryUsage {
  uint64_t usage_bytes = 0;
  uint64_t working_set_bytes = 0;  // usage - inactive file, floored at 0 (see working_set_bytes())
  std::optional<uint64_t> rss_bytes;    // v1 total_rss, v2 anon
  std::optional<uint64_t> cache_bytes;  // v1 total_cache, v2 file
  std::optional<uint64_t> swap_bytes;   // v1 total_swap, v2 memory.swap.current
  std::optional<uint64_t> page_faults;
  std::optional<uint64_t> major_page_faults;
  std::optional<uint64_t> oom_kills;
  std::optional<uint64_t> failcnt;           // v1 memory.failcnt only
  std::optional<uint64_t> limit_bytes;       // absent: unlimited
  std::optional<uint64_t> swap_limit_bytes;  // absent: unlimited or no swap accounting
};

struct PsiTotals {
  double avg10 = 0;
  double avg60 = 0;
  double avg300 = 0;
  uint64_t total_usec = 0;  // cumulative stall time
};

struct Psi {
  std::optional<PsiTotals> some;
  std::optional<PsiTotals> full;  // absent in the root cpu.pressure of older kernels
};

struct Pressure {
  std::optional<Psi> cpu;
  std::optional<Psi> memory;
  std::optional<Psi> io;
};

// The one place the working set is computed, as the kubelet and cAdvisor do.
constexpr uint64_t working_set_bytes(uint64_t usage_bytes, uint64_t inactive_file_bytes) {
  return usage_bytes > inactive_file_bytes ? usage_bytes - inactive_file_bytes : 0;
}

}  // namespace nodemeter::cgroup
