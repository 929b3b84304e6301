// `nodemeter bench`: argument errors, the JSON it documents (run over fixture trees), the table,
// and the statistics behind them. Latencies are never asserted against absolute times.
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agent/bench_command.h"
#include "cgroup/layout.h"
#include "cgroup/scan.h"
#include "support/fixture_tree.h"

namespace {

namespace fs = std::filesystem;
using nodemeter::agent::run_bench;

struct Run {
  int status = -1;
  std::string out;
  std::string err;
};

std::string slurp(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
    s.append(buf, n);
  std::fclose(f);
  return s;
}

Run bench(const std::vector<std::string>& args) {
  std::FILE* out = std::tmpfile();
  std::FILE* err = std::tmpfile();
  REQUIRE(out != nullptr);
  REQUIRE(err != nullptr);
  Run r;
  r.status = run_bench(args, out, err);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

size_t count_lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

// Directories under dir (dir included) that hold a file called name.
size_t dirs_with(const fs::path& dir, const std::string& name) {
  size_t n = fs::exists(dir / name) ? 1 : 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_directory() && !e.is_symlink() && fs::exists(e.path() / name)) ++n;
  }
  return n;
}

std::vector<std::string> fixture_args(const std::string& tree, std::vector<std::string> more) {
  const fs::path root = nodemeter::testing::fixture_path(tree);
  std::vector<std::string> args{
      "--cgroup-root",          (root / "cgroup").string(), "--proc-root",
      (root / "proc").string(), "--containerd-state-dir",   (root / "containerd").string(),
      "--crio-state-dir",       (root / "crio").string()};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

const nlohmann::json* find_file(const nlohmann::json& j, const std::string& file,
                                const std::string& method) {
  for (const auto& f : j.at("files")) {
    if (f.at("file") == file && f.at("method") == method) return &f;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("bench: a bad flag or value exits 2 with one sentence naming it", "[bench]") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases{
      {{"--iterations", "many"}, "--iterations"},
      {{"--iterations"}, "--iterations"},
      {{"--passes", "-1"}, "--passes"},
      {{"--create", "0"}, "--create"},
      {{"--create", "ten"}, "--create"},
      {{"--burners", "2"}, "--burners"},
      {{"--create", "2", "--burners", "3"}, "--burners"},
      {{"--iterations", "5", "--duration", "1s"}, "--duration"},
      {{"--duration", "soon"}, "--duration"},
      {{"--frobnicate"}, "--frobnicate"},
      {{"positional"}, "positional"},
      {{"--create", "2", "--"}, "--"},
      {{"--", "true"}, "--create"},
      {{"--json=maybe"}, "--json"},
  };
  for (const auto& [args, named] : cases) {
    INFO("args: " << args.front() << (args.size() > 1 ? " " + args[1] : ""));
    const Run r = bench(args);
    CHECK(r.status == 2);
    CHECK(r.out.empty());
    CHECK(count_lines(r.err) == 1);
    CHECK(r.err.find(named) != std::string::npos);
    CHECK(r.err.rfind("nodemeter bench: ", 0) == 0);
  }
}

TEST_CASE("bench: --help documents the flags and every JSON field", "[bench]") {
  const Run r = bench({"--help"});
  REQUIRE(r.status == 0);
  for (const char* word : {"--cgroup-root",
                           "--proc-root",
                           "--pods-only",
                           "--iterations",
                           "--duration",
                           "--passes",
                           "--create",
                           "--burners",
                           "--json",
                           "cgroup_root",
                           "mode",
                           "scope",
                           "cgroups",
                           "iterations",
                           "duration_ns",
                           "created",
                           "files",
                           "method",
                           "reads",
                           "errors",
                           "p50_ns",
                           "p90_ns",
                           "p99_ns",
                           "max_ns",
                           "pass",
                           "median_ns",
                           "cpu_median_ns",
                           "floor_files",
                           "floor_median_ns",
                           "ratio",
                           "interrupted",
                           "NODEMETER_BENCH_CGROUP_ROOT"}) {
    INFO(word);
    CHECK(r.out.find(word) != std::string::npos);
  }
}

TEST_CASE("bench: without cgroups it says so in one sentence and exits 1", "[bench]") {
  nodemeter::testing::TempDir empty;
  const Run r = bench({"--cgroup-root", empty.path().string(), "--iterations", "3"});
  CHECK(r.status == 1);
  CHECK(r.out.empty());
  CHECK(count_lines(r.err) == 1);
  CHECK(r.err.find(empty.path().string()) != std::string::npos);
}

TEST_CASE("bench: --create refuses a tree that is not a mounted cgroup file system", "[bench]") {
  nodemeter::testing::TempDir dir;
  nodemeter::testing::copy_tree(nodemeter::testing::fixture_path("hybrid"), dir.path());
  const auto before = std::distance(fs::recursive_directory_iterator(dir.path()),
                                    fs::recursive_directory_iterator());
  const Run r = bench({"--cgroup-root", (dir / "cgroup").string(), "--proc-root",
                       (dir / "proc").string(), "--create", "4", "--burners", "1"});
  CHECK(r.status == 1);
  CHECK(count_lines(r.err) == 1);
  if (::geteuid() == 0) {
    CHECK(r.err.find("is not one") != std::string::npos);
  } else {
    CHECK(r.err.find("needs root") != std::string::npos);
  }
  // Nothing was made in the tree.
  const auto after = std::distance(fs::recursive_directory_iterator(dir.path()),
                                   fs::recursive_directory_iterator());
  CHECK(after == before);
}

TEST_CASE("bench: --json over a v1 (hybrid) fixture tree has the documented fields", "[bench]") {
  const Run r = bench(fixture_args("hybrid", {"--iterations", "7", "--passes", "3", "--json"}));
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  const fs::path cg = nodemeter::testing::fixture_path("hybrid") / "cgroup";

  CHECK(j.at("version").is_string());
  CHECK(j.at("cgroup_root") == cg.string());
  CHECK(j.at("mode") == "hybrid");
  CHECK(j.at("scope") == "all");
  CHECK(j.at("iterations") == 7);
  CHECK(j.at("duration_ns").is_null());
  CHECK(j.at("created").is_null());
  CHECK(j.at("interrupted") == false);
  CHECK(j.at("cgroups") == dirs_with(cg / "memory", "memory.stat"));

  // Exactly the v1 kinds present, each with the three methods, in this order.
  const std::vector<std::pair<std::string, fs::path>> kinds{
      {"cpu.stat", cg / "cpu"},
      {"cpuacct.usage", cg / "cpuacct"},
      {"cpuacct.stat", cg / "cpuacct"},
      {"memory.usage_in_bytes", cg / "memory"},
      {"memory.stat", cg / "memory"}};
  REQUIRE(j.at("files").size() == kinds.size() * 3);
  size_t i = 0;
  for (const auto& [file, hierarchy] : kinds) {
    for (const char* method : {"open+read+close", "openat", "pread"}) {
      const auto& f = j.at("files").at(i++);
      INFO(file << " " << method);
      CHECK(f.at("file") == file);
      CHECK(f.at("method") == method);
      CHECK(f.at("cgroups") == dirs_with(hierarchy, file));
      CHECK(f.at("reads") == 7);
      CHECK(f.at("errors") == 0);
      const uint64_t p50 = f.at("p50_ns"), p90 = f.at("p90_ns"), p99 = f.at("p99_ns"),
                     max = f.at("max_ns");
      CHECK(p50 > 0);
      CHECK(p50 <= p90);
      CHECK(p90 <= p99);
      CHECK(p99 <= max);
    }
  }

  // The pass over the tree's pods: 4 pods, 5 containers once the sandboxes are named.
  const auto& pass = j.at("pass");
  CHECK(pass.at("pods") == 4);
  CHECK(pass.at("containers") == 5);
  CHECK(pass.at("cgroups") == 9);
  CHECK(pass.at("passes") == 3);
  CHECK(pass.at("median_ns") > 0);
  CHECK(pass.at("cpu_median_ns") > 0);
  CHECK(pass.at("min_ns") <= pass.at("median_ns"));
  CHECK(pass.at("median_ns") <= pass.at("max_ns"));
  CHECK(pass.at("floor_files") == nlohmann::json({"cpuacct.usage", "cpuacct.stat", "cpu.stat",
                                                  "memory.usage_in_bytes", "memory.stat"}));
  for (const char* m : {"pread", "openat", "open+read+close"})
    CHECK(pass.at("floor_median_ns").at(m) > 0);
  const double ratio = pass.at("ratio");
  CHECK(ratio == Approx(static_cast<double>(pass.at("median_ns")) /
                        static_cast<double>(pass.at("floor_median_ns").at("pread"))));
}

TEST_CASE("bench: --pods-only over a v2 fixture reads the v2 kinds of the scanned cgroups",
          "[bench]") {
  const Run r = bench(fixture_args(
      "v2-systemd-containerd", {"--pods-only", "--iterations", "4", "--passes", "2", "--json"}));
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j.at("mode") == "v2");
  CHECK(j.at("scope") == "pods");

  const fs::path cg = nodemeter::testing::fixture_path("v2-systemd-containerd") / "cgroup";
  auto layout = nodemeter::cgroup::detect_layout(cg, cg / ".." / "proc");
  REQUIRE(layout.has_value());
  const auto scan = nodemeter::cgroup::scan(*layout);
  size_t scanned = 0;
  for (const auto& pod : scan.pods)
    scanned += 1 + pod.containers.size();
  CHECK(j.at("cgroups") == scanned);

  std::set<std::string> files;
  for (const auto& f : j.at("files"))
    files.insert(f.at("file"));
  CHECK(files == std::set<std::string>{"cpu.stat", "memory.current", "memory.stat", "memory.events",
                                       "cpu.pressure", "memory.pressure", "io.pressure"});
  const auto* mem = find_file(j, "memory.current", "pread");
  REQUIRE(mem != nullptr);
  CHECK(mem->at("cgroups") == scanned);
  CHECK(mem->at("reads") == 4);
  CHECK(j.at("pass").at("floor_files") ==
        nlohmann::json({"cpu.stat", "memory.current", "memory.stat", "memory.events"}));
}

TEST_CASE("bench: --duration replaces the count, --passes 0 and --iterations 0 skip", "[bench]") {
  SECTION("duration") {
    const Run r = bench(
        fixture_args("v1-cgroupfs-containerd", {"--duration", "3ms", "--passes", "0", "--json"}));
    REQUIRE(r.status == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j.at("iterations").is_null());
    CHECK(j.at("duration_ns") == 3'000'000);
    CHECK(j.at("pass").is_null());
    for (const auto& f : j.at("files"))
      CHECK(f.at("reads") > 0);
  }
  SECTION("iterations 0") {
    const Run r = bench(
        fixture_args("v1-cgroupfs-containerd", {"--iterations", "0", "--passes", "1", "--json"}));
    REQUIRE(r.status == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j.at("files").empty());
    CHECK(j.at("pass").at("passes") == 1);
  }
}

TEST_CASE("bench: the table has a row per file kind and method, aligned", "[bench]") {
  const Run r =
      bench(fixture_args("v1-systemd-containerd", {"--iterations", "5", "--passes", "2"}));
  INFO(r.err);
  REQUIRE(r.status == 0);
  std::istringstream in(r.out);
  std::string line;
  size_t header_width = 0;
  std::vector<std::string> rows;
  bool in_table = false;
  while (std::getline(in, line)) {
    if (line.rfind("FILE", 0) == 0) {
      in_table = true;
      header_width = line.size();
      continue;
    }
    if (in_table && line.empty()) break;
    if (in_table) rows.push_back(line);
  }
  REQUIRE(rows.size() == 15);  // cpu.stat, cpuacct.usage, cpuacct.stat, memory.usage_in_bytes,
                               // memory.stat: three methods each
  for (const auto& row : rows) {
    INFO(row);
    CHECK(row.size() == header_width);
  }
  CHECK(rows[0].rfind("cpu.stat", 0) == 0);
  CHECK(rows[0].find("open+read+close") != std::string::npos);
  CHECK(rows[2].find("pread") != std::string::npos);
  CHECK(r.out.find("collection pass over 4 pods + 5 containers (9 cgroups; median of 2 passes)") !=
        std::string::npos);
  CHECK(r.out.find("pass / pread floor: ") != std::string::npos);
}

TEST_CASE("bench: percentiles by nearest rank, medians, summaries", "[bench]") {
  using nodemeter::agent::median;
  using nodemeter::agent::percentile;
  using nodemeter::agent::summarize;
  std::vector<uint64_t> v;
  for (uint64_t i = 100; i >= 1; --i)
    v.push_back(i * 10);
  const auto s = summarize(v);
  CHECK(std::is_sorted(v.begin(), v.end()));
  CHECK(s.reads == 100);
  CHECK(s.p50_ns == 500);
  CHECK(s.p90_ns == 900);
  CHECK(s.p99_ns == 990);
  CHECK(s.max_ns == 1000);
  CHECK(percentile({7}, 0.99) == 7);
  CHECK(percentile({}, 0.5) == 0);
  CHECK(percentile({1, 2, 3}, 0.5) == 2);
  CHECK(median({5, 1, 3}) == 3);
  CHECK(median({4, 1, 3, 2}) == 2);
  CHECK(median({}) == 0);
  std::vector<uint64_t> empty;
  CHECK(summarize(empty).reads == 0);
}
