// Every cgroup parser on verbatim kernel files (tests/fixtures/verbatim/), and the runtime-state
// parsers on the fixture trees' config.json files: bytes in, typed values out, no I/O timed.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "agent/identity.h"
#include "cgroup/layout.h"
#include "cgroup/parse.h"
#include "cgroup/scan.h"

namespace {

namespace cg = nodemeter::cgroup;

std::string source_file(const std::string& rel) {
  const std::filesystem::path path = std::filesystem::path(NODEMETER_SOURCE_DIR) / rel;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string verbatim(const std::string& name) {
  return source_file("tests/fixtures/verbatim/" + name);
}

// The first config.json of a fixture tree's runtime state directory.
std::string first_config(const std::string& tree, const std::string& runtime) {
  const auto dir =
      std::filesystem::path(NODEMETER_SOURCE_DIR) / "tests/fixtures/trees" / tree / runtime;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.path().filename() == "config.json") {
      return source_file(std::filesystem::relative(e.path(), NODEMETER_SOURCE_DIR).string());
    }
  }
  throw std::runtime_error("no config.json under " + dir.string());
}

void set_bytes(benchmark::State& state, const std::string& text) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

void BM_parse_single_value(benchmark::State& state, const char* file) {
  const std::string text = verbatim(file);
  for (auto _ : state) {
    auto v = cg::parse_single_value(text);
    benchmark::DoNotOptimize(v);
  }
  set_bytes(state, text);
}
BENCHMARK_CAPTURE(BM_parse_single_value, v1_cpuacct_usage, "v1-cpuacct.usage");
BENCHMARK_CAPTURE(BM_parse_single_value, v1_memory_usage_in_bytes, "v1-memory.usage_in_bytes");

void BM_parse_max_or_value(benchmark::State& state, const char* file) {
  const std::string text = verbatim(file);
  for (auto _ : state) {
    auto v = cg::parse_max_or_value(text);
    benchmark::DoNotOptimize(v);
  }
  set_bytes(state, text);
}
BENCHMARK_CAPTURE(BM_parse_max_or_value, v1_memory_limit_in_bytes, "v1-memory.limit_in_bytes");
BENCHMARK_CAPTURE(BM_parse_max_or_value, v2_memory_max, "v2-memory.max");
BENCHMARK_CAPTURE(BM_parse_max_or_value, v2_memory_swap_max, "v2-memory.swap.max");

// The flat-keyed format, every key looked at (as the reader's callbacks do).
void BM_parse_flat_keyed(benchmark::State& state, const char* file) {
  const std::string text = verbatim(file);
  for (auto _ : state) {
    uint64_t sum = 0;
    auto r = cg::parse_flat_keyed(
        text, [&](std::string_view key, uint64_t value) { sum += value + key.size(); });
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(sum);
  }
  set_bytes(state, text);
}
BENCHMARK_CAPTURE(BM_parse_flat_keyed, v1_cpu_stat, "v1-cpu.stat");
BENCHMARK_CAPTURE(BM_parse_flat_keyed, v1_memory_stat, "v1-memory.stat");
BENCHMARK_CAPTURE(BM_parse_flat_keyed, v1_memory_oom_control, "v1-memory.oom_control");
BENCHMARK_CAPTURE(BM_parse_flat_keyed, v2_cpu_stat, "v2-cpu.stat");
BENCHMARK_CAPTURE(BM_parse_flat_keyed, v2_memory_stat, "v2-memory.stat");
BENCHMARK_CAPTURE(BM_parse_flat_keyed, v2_memory_events, "v2-memory.events");

void BM_parse_cpuacct_stat(benchmark::State& state) {
  const std::string text = verbatim("v1-cpuacct.stat");
  for (auto _ : state) {
    auto v = cg::parse_cpuacct_stat(text);
    benchmark::DoNotOptimize(v);
  }
  set_bytes(state, text);
}
BENCHMARK(BM_parse_cpuacct_stat);

void BM_parse_psi(benchmark::State& state, const char* file) {
  const std::string text = verbatim(file);
  for (auto _ : state) {
    auto v = cg::parse_psi(text);
    benchmark::DoNotOptimize(v);
  }
  set_bytes(state, text);
}
BENCHMARK_CAPTURE(BM_parse_psi, v2_cpu_pressure, "v2-cpu.pressure");
BENCHMARK_CAPTURE(BM_parse_psi, v2_memory_pressure, "v2-memory.pressure");
BENCHMARK_CAPTURE(BM_parse_psi, v2_io_pressure, "v2-io.pressure");

void BM_parse_nested_keyed(benchmark::State& state, const char* file) {
  const std::string text = verbatim(file);
  for (auto _ : state) {
    uint64_t sum = 0;
    auto r = cg::parse_nested_keyed(
        text, [&](std::string_view key, std::string_view subkey, uint64_t value) {
          sum += value + key.size() + subkey.size();
        });
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(sum);
  }
  set_bytes(state, text);
}
BENCHMARK_CAPTURE(BM_parse_nested_keyed, v2_io_stat, "v2-io.stat");
BENCHMARK_CAPTURE(BM_parse_nested_keyed, v2_memory_numa_stat, "v2-memory.numa_stat");

void BM_parse_proc_stat_cpu(benchmark::State& state, const char* file) {
  const std::string text = verbatim(file);
  for (auto _ : state) {
    auto v = cg::parse_proc_stat_cpu(text);
    benchmark::DoNotOptimize(v);
  }
  set_bytes(state, text);
}
BENCHMARK_CAPTURE(BM_parse_proc_stat_cpu, v1_proc_stat, "v1-proc-stat");
BENCHMARK_CAPTURE(BM_parse_proc_stat_cpu, v2_proc_stat, "v2-proc-stat");

void BM_parse_meminfo(benchmark::State& state, const char* file) {
  const std::string text = verbatim(file);
  for (auto _ : state) {
    auto v = cg::parse_meminfo(text);
    benchmark::DoNotOptimize(v);
  }
  set_bytes(state, text);
}
BENCHMARK_CAPTURE(BM_parse_meminfo, v1_proc_meminfo, "v1-proc-meminfo");
BENCHMARK_CAPTURE(BM_parse_meminfo, v2_proc_meminfo, "v2-proc-meminfo");

void BM_parse_mountinfo(benchmark::State& state) {
  const std::string text = verbatim("v1-proc-self-mountinfo");
  for (auto _ : state) {
    auto v = cg::parse_mountinfo(text);
    benchmark::DoNotOptimize(v);
  }
  set_bytes(state, text);
}
BENCHMARK(BM_parse_mountinfo);

void BM_parse_cgroup_path(benchmark::State& state, const char* path) {
  const std::string text = path;
  for (auto _ : state) {
    auto v = cg::parse_cgroup_path(text);
    benchmark::DoNotOptimize(v);
  }
}
BENCHMARK_CAPTURE(BM_parse_cgroup_path, cgroupfs_container,
                  "kubepods/burstable/pod0b9e7d36-5b4a-4392-8180-7f6e5d4c3b2a/"
                  "412ca8474d8c9d1f3f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e");
BENCHMARK_CAPTURE(BM_parse_cgroup_path, systemd_container,
                  "kubepods.slice/kubepods-burstable.slice/"
                  "kubepods-burstable-pod0b9e7d36_5b4a_4392_8180_7f6e5d4c3b2a.slice/"
                  "cri-containerd-412ca8474d8c9d1f3f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e"
                  ".scope");

void BM_parse_containerd_config(benchmark::State& state) {
  const std::string text = first_config("v1-cgroupfs-containerd", "containerd");
  for (auto _ : state) {
    auto v = nodemeter::agent::parse_containerd_config(text);
    benchmark::DoNotOptimize(v);
  }
  set_bytes(state, text);
}
BENCHMARK(BM_parse_containerd_config);

void BM_parse_crio_config(benchmark::State& state) {
  const std::string text = first_config("v2-systemd-crio", "crio");
  for (auto _ : state) {
    auto v = nodemeter::agent::parse_crio_config(text);
    benchmark::DoNotOptimize(v);
  }
  set_bytes(state, text);
}
BENCHMARK(BM_parse_crio_config);

}  // namespace
