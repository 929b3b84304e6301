// CgroupReader on temp trees laid out as v1 and v2 hosts, filled with verbatim kernel text (v2 from
// the real 6.1 capture from shared/fixtures (copied into tests/fixtures/shared-v2-capture), v1 from
// this machine kind): exact values, kept descriptors, identity changes, removal, malformed and
// missing files, limits, and the node.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "cgroup/reader.h"
#include "support/fixture_tree.h"

using namespace nodemeter::cgroup;
using nodemeter::testing::read_text;
using nodemeter::testing::TempDir;
using nodemeter::testing::write_file;
namespace fs = std::filesystem;

namespace {

const std::string kPageCache =
    "kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod0b9e7d36_51c4_4f2a_8e63_a7d90c1b5f48.slice/"
    "cri-containerd-b70772de5c0fc5874bb2465be6267394a7ba027da9967ca546c67b4189703aba.scope";
const std::string kSwapped =
    "kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod0b9e7d36_51c4_4f2a_8e63_a7d90c1b5f48.slice/"
    "cri-containerd-412ca847a34a4cf55dfffe9e909483f346776b7f1cf14b3ecbd8ce626b620d21.scope";
const std::string kThrottled =
    "kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod6a1f0c52_3d8e_4b7a_9c21_5e0f8d4b2a17.slice/"
    "cri-containerd-386bbb4080d57034555c9cb75a3aea1a796dd6b690530823aec2ba020b70adb7.scope";
const std::string kOomKilled =
    "kubepods.slice/kubepods-pod9f8e7d6c_5b4a_4392_8180_7f6e5d4c3b2a.slice/"
    "cri-containerd-e570bb39b7499cb04a38b5dc360f2925be94880dd3bcb49802e9ffe3081172e2.scope";

fs::path source_dir() {
  if (const char* dir = std::getenv("NODEMETER_SOURCE_DIR")) return dir;
  return fs::path(__FILE__).parent_path().parent_path().parent_path();
}

fs::path v2_capture() {
  // The part of ../shared/fixtures the tests use is copied into tests/fixtures/shared-v2-capture.
  fs::path shared = source_dir() / "tests" / "fixtures" / "shared-v2-capture";
  if (const char* dir = std::getenv("NODEMETER_SHARED_FIXTURES")) shared = dir;
  const fs::path capture = shared / "cgroup-v2-debian-6.1";
  INFO("the real cgroup v2 capture is expected at " << capture);
  REQUIRE(fs::is_directory(capture));
  return capture;
}

std::string verbatim(const std::string& name) {
  return read_text(source_dir() / "tests" / "fixtures" / "verbatim" / name);
}

// Replaces a file by rename: a new inode at the same path.
void replace_by_rename(const fs::path& path, std::string_view text) {
  const fs::path tmp = path.string() + ".new";
  write_file(tmp, text);
  fs::rename(tmp, path);
}

uint64_t inode_of(const fs::path& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

// Copies the files (not subdirectories) of one cgroup directory, writable.
void copy_cgroup_files(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(from)) {
    if (!e.is_regular_file()) continue;
    write_file(to / e.path().filename(), read_text(e.path()));
  }
}

// A v2 host: the capture's root files and four of its containers, plus its /proc.
struct V2Tree {
  TempDir tmp;
  fs::path root = tmp.path() / "cgroup";
  fs::path proc = tmp.path() / "proc";

  explicit V2Tree(const std::string& snapshot = "t0") {
    const fs::path capture = v2_capture();
    copy_cgroup_files(capture / snapshot, root);
    for (const auto& rel : {kPageCache, kSwapped, kThrottled, kOomKilled}) {
      copy_cgroup_files(capture / snapshot / rel, root / rel);
    }
    copy_cgroup_files(capture / ("proc-" + snapshot), proc);
    copy_cgroup_files(capture / ("proc-" + snapshot) / "pressure", proc / "pressure");
  }
  Layout layout() const {
    Layout l;
    l.mode = Mode::kV2;
    l.root = l.cpu = l.cpuacct = l.memory = root;
    return l;
  }
  CgroupTarget target(const std::string& rel) const { return {rel, inode_of(root / rel)}; }
};

// A hybrid v1 host shaped like this machine: cpu, cpuacct and memory each on their own hierarchy
// (or cpu,cpuacct co-mounted), files captured from this machine's hierarchy roots.
struct V1Tree {
  TempDir tmp;
  fs::path root = tmp.path() / "cgroup";
  fs::path proc = tmp.path() / "proc";
  fs::path cpu, cpuacct, memory;

  explicit V1Tree(bool comounted = false) {
    cpu = root / (comounted ? "cpu,cpuacct" : "cpu");
    cpuacct = comounted ? cpu : root / "cpuacct";
    memory = root / "memory";
    fs::create_directories(root / "unified");
    add("", true);
    write_file(proc / "meminfo", verbatim("v1-proc-meminfo"));
    write_file(proc / "stat", verbatim("v1-proc-stat"));
  }
  // A cgroup with this machine's files; limits as the kernel prints "unlimited" unless given.
  void add(const std::string& rel, bool with_limits = true) {
    write_file(cpuacct / rel / "cpuacct.usage", verbatim("v1-cpuacct.usage"));
    write_file(cpuacct / rel / "cpuacct.stat", verbatim("v1-cpuacct.stat"));
    write_file(cpu / rel / "cpu.stat", verbatim("v1-cpu.stat"));
    write_file(memory / rel / "memory.usage_in_bytes", verbatim("v1-memory.usage_in_bytes"));
    write_file(memory / rel / "memory.stat", verbatim("v1-memory.stat"));
    if (!with_limits) return;
    write_file(memory / rel / "memory.limit_in_bytes", verbatim("v1-memory.limit_in_bytes"));
    write_file(memory / rel / "memory.memsw.limit_in_bytes", verbatim("v1-memory.limit_in_bytes"));
    write_file(memory / rel / "memory.oom_control", verbatim("v1-memory.oom_control"));
    write_file(memory / rel / "memory.failcnt", "0\n");
  }
  Layout layout() const {
    Layout l;
    l.mode = Mode::kHybrid;
    l.root = root;
    l.cpu = cpu;
    l.cpuacct = cpuacct;
    l.memory = memory;
    return l;
  }
  CgroupTarget target(const std::string& rel) const { return {rel, inode_of(memory / rel)}; }
};

struct Recorded {
  FileKind kind;
  bool failed;
  ReadErrorKind error_kind;
};

class RecordingObserver : public ReadObserver {
 public:
  void on_file_read(FileKind kind, std::chrono::nanoseconds elapsed,
                    const ReadError* error) override {
    CHECK(elapsed.count() >= 0);
    reads.push_back({kind, error != nullptr, error ? error->kind : ReadErrorKind::kIo});
  }
  size_t count(FileKind kind) const {
    size_t n = 0;
    for (const auto& r : reads)
      n += r.kind == kind ? 1 : 0;
    return n;
  }
  std::vector<Recorded> reads;
};

const CgroupSample& only(const std::vector<CgroupSample>& samples) {
  REQUIRE(samples.size() == 1);
  return samples[0];
}

void check_psi(const std::optional<Psi>& psi, double some_avg10, uint64_t some_total,
               double full_avg10, uint64_t full_total) {
  REQUIRE(psi.has_value());
  REQUIRE(psi->some.has_value());
  CHECK(psi->some->avg10 == Approx(some_avg10));
  CHECK(psi->some->total_usec == some_total);
  REQUIRE(psi->full.has_value());
  CHECK(psi->full->avg10 == Approx(full_avg10));
  CHECK(psi->full->total_usec == full_total);
}

constexpr uint64_t kKiB = 1024;

}  // namespace

TEST_CASE("reader: file names per layout", "[reader]") {
  CHECK(std::string(file_name(FileKind::kMemoryUsage, Mode::kV2)) == "memory.current");
  CHECK(std::string(file_name(FileKind::kMemoryUsage, Mode::kV1)) == "memory.usage_in_bytes");
  CHECK(std::string(file_name(FileKind::kMemoryUsage, Mode::kHybrid)) == "memory.usage_in_bytes");
  CHECK(std::string(file_name(FileKind::kMemoryLimit, Mode::kV2)) == "memory.max");
  CHECK(std::string(file_name(FileKind::kMemoryLimit, Mode::kV1)) == "memory.limit_in_bytes");
  CHECK(std::string(file_name(FileKind::kMemorySwapLimit, Mode::kV2)) == "memory.swap.max");
  CHECK(std::string(file_name(FileKind::kMemorySwapLimit, Mode::kV1)) ==
        "memory.memsw.limit_in_bytes");
  CHECK(std::string(file_name(FileKind::kCpuacctUsage, Mode::kV1)) == "cpuacct.usage");
  CHECK(std::string(file_name(FileKind::kCpuStat, Mode::kV2)) == "cpu.stat");
  CHECK(std::string(file_name(FileKind::kIoPressure, Mode::kV2)) == "io.pressure");
  CHECK(std::string(file_name(FileKind::kProcMeminfo, Mode::kV2)) == "meminfo");
}

TEST_CASE("reader: errno classification", "[reader]") {
  CHECK(classify_errno(ENOENT) == ReadErrorKind::kGone);
  CHECK(classify_errno(ENODEV) == ReadErrorKind::kGone);
  CHECK(classify_errno(ESRCH) == ReadErrorKind::kGone);
  CHECK(classify_errno(EOPNOTSUPP) == ReadErrorKind::kUnsupported);
  CHECK(classify_errno(EACCES) == ReadErrorKind::kIo);
  CHECK(classify_errno(EIO) == ReadErrorKind::kIo);
}

TEST_CASE("reader: read_file reads whole files and classifies failures", "[reader]") {
  TempDir tmp;
  const std::string big(100000, 'x');  // larger than any first buffer
  write_file(tmp.path() / "big", big);
  auto r = read_file(tmp.path() / "big");
  REQUIRE(r.has_value());
  CHECK(*r == big);

  write_file(tmp.path() / "empty", "");
  auto e = read_file(tmp.path() / "empty");
  REQUIRE(e.has_value());
  CHECK(e->empty());

  auto missing = read_file(tmp.path() / "missing");
  REQUIRE(missing.has_error());
  CHECK(missing.error().kind == ReadErrorKind::kGone);
  CHECK(missing.error().errno_value == ENOENT);
  CHECK(missing.error().path == (tmp.path() / "missing").string());

  auto dir = read_file(tmp.path());
  REQUIRE(dir.has_error());
  CHECK(dir.error().kind == ReadErrorKind::kIo);
  CHECK(dir.error().errno_value == EISDIR);
}

TEST_CASE("reader: v2 values from the real 6.1 capture", "[reader]") {
  V2Tree tree;
  CgroupReader reader(tree.layout(), tree.proc);
  const std::vector<CgroupTarget> targets{tree.target(kPageCache), tree.target(kSwapped),
                                          tree.target(kThrottled), tree.target(kOomKilled)};
  const auto samples = reader.read(targets, ReadOptions{});
  REQUIRE(samples.size() == 4);
  for (const auto& s : samples) {
    REQUIRE(s.cpu.has_value());
    REQUIRE(s.memory.has_value());
    CHECK(s.errors.empty());
  }

  SECTION("page cache: working set excludes inactive_file") {
    const auto& cpu = *samples[0].cpu;
    CHECK(cpu.cumulative_ns == 304129000);
    CHECK(cpu.user_ns == 15206000u);
    CHECK(cpu.system_ns == 288923000u);
    CHECK(cpu.periods == 0u);
    CHECK(cpu.throttled_periods == 0u);
    CHECK(cpu.throttled_ns == 0u);
    const auto& m = *samples[0].memory;
    CHECK(m.usage_bytes == 64327680);
    CHECK(m.working_set_bytes == 64327680 - 30408704);
    CHECK(m.rss_bytes == 33607680u);
    CHECK(m.cache_bytes == 30408704u);
    CHECK(m.swap_bytes == 0u);
    CHECK(m.page_faults == 1776u);
    CHECK(m.major_page_faults == 0u);
    CHECK(m.oom_kills == 0u);
    CHECK(m.limit_bytes == 134217728u);
    CHECK_FALSE(m.swap_limit_bytes.has_value());  // "max"
    CHECK_FALSE(m.failcnt.has_value());           // v1 only
    check_psi(samples[0].pressure.cpu, 0.54, 76226, 0.54, 76033);
    check_psi(samples[0].pressure.memory, 0.00, 0, 0.00, 0);
    check_psi(samples[0].pressure.io, 0.00, 7250, 0.00, 7250);
  }
  SECTION("swapped: memory.swap.current, limit, major faults") {
    const auto& m = *samples[1].memory;
    CHECK(m.usage_bytes == 15847424);
    CHECK(m.working_set_bytes == 15847424);
    CHECK(m.rss_bytes == 15740928u);
    CHECK(m.cache_bytes == 0u);
    CHECK(m.swap_bytes == 9510912u);
    CHECK(m.page_faults == 2607u);
    CHECK(m.major_page_faults == 8u);
    CHECK(m.limit_bytes == 16777216u);
    CHECK_FALSE(m.swap_limit_bytes.has_value());
    CHECK(samples[1].cpu->cumulative_ns == 182326000);
  }
  SECTION("throttled: cpu.stat bandwidth fields") {
    const auto& cpu = *samples[2].cpu;
    CHECK(cpu.cumulative_ns == 1538516000);
    CHECK(cpu.user_ns == 1534631000u);
    CHECK(cpu.system_ns == 3885000u);
    CHECK(cpu.periods == 32u);
    CHECK(cpu.throttled_periods == 28u);
    CHECK(cpu.throttled_ns == 1335186000u);
  }
  SECTION("OOM-killed: memory.events oom_kill and a zero swap limit") {
    const auto& m = *samples[3].memory;
    CHECK(m.oom_kills == 1u);
    CHECK(m.usage_bytes == 53248);
    CHECK(m.working_set_bytes == 53248);
    CHECK(m.limit_bytes == 8388608u);
    CHECK(m.swap_limit_bytes == 0u);  // "0" is a limit, not "max"
    CHECK(samples[3].cpu->throttled_ns == 689957000u);
  }
}

TEST_CASE("reader: v2 kept descriptors see in-place rewrites", "[reader]") {
  V2Tree tree;
  const fs::path capture = v2_capture();
  CgroupReader reader(tree.layout(), tree.proc);
  const std::vector<CgroupTarget> targets{tree.target(kThrottled)};
  const ReadOptions options;

  const auto first = only(reader.read(targets, options));
  REQUIRE(first.cpu.has_value());
  CHECK(first.cpu->cumulative_ns == 1538516000);
  CHECK(first.pressure.cpu->some->total_usec == 1330901);
  // cpu.stat, memory.current, memory.stat, memory.events, memory.swap.current and three PSI
  // files stay open; the limits were opened, read and closed.
  CHECK(reader.open_descriptors() == 8);

  const fs::path dir = tree.root / kThrottled;
  const uint64_t cpu_stat_inode = inode_of(dir / "cpu.stat");
  for (const char* name : {"cpu.stat", "cpu.pressure", "memory.current"}) {
    write_file(dir / name, read_text(capture / "t1" / kThrottled / name));
  }
  REQUIRE(inode_of(dir / "cpu.stat") == cpu_stat_inode);

  const auto second = only(reader.read(targets, options));
  REQUIRE(second.cpu.has_value());
  CHECK(second.cpu->cumulative_ns == 2364554000);
  CHECK(second.cpu->user_ns == 2360633000u);
  CHECK(second.cpu->periods == 48u);
  CHECK(second.cpu->throttled_periods == 44u);
  CHECK(second.cpu->throttled_ns == 2133546000u);
  check_psi(second.pressure.cpu, 14.39, 2153466, 14.39, 2153466);
  CHECK(reader.open_descriptors() == 8);

  SECTION("a longer text than before is read whole") {
    std::string stat = read_text(capture / "t1" / kThrottled / "memory.stat");
    for (int i = 0; i < 600; ++i)
      stat += "padding_key_" + std::to_string(i) + " 1\n";
    REQUIRE(stat.size() > 8192);
    write_file(dir / "memory.stat", stat);
    const auto third = only(reader.read(targets, options));
    REQUIRE(third.memory.has_value());
    CHECK(third.memory->rss_bytes == 57344u);
    CHECK(third.memory->page_faults == 42u);
  }
}

TEST_CASE("reader: a file replaced by rename is not seen until the identity changes", "[reader]") {
  V2Tree tree;
  CgroupReader reader(tree.layout(), tree.proc);
  const CgroupTarget old_identity = tree.target(kPageCache);
  const ReadOptions options{.pressure = false, .limits = false};
  CHECK(only(reader.read({&old_identity, 1}, options)).cpu->cumulative_ns == 304129000);
  CHECK(reader.open_descriptors() == 5);

  // The descriptor is kept: a file swapped in by rename (which the kernel never does) stays unseen.
  replace_by_rename(tree.root / kPageCache / "cpu.stat", "usage_usec 7\n");
  CHECK(only(reader.read({&old_identity, 1}, options)).cpu->cumulative_ns == 304129000);

  // The same path with a new inode is a new cgroup: its files are opened again.
  const CgroupTarget new_identity{kPageCache, old_identity.inode + 1};
  const auto s = only(reader.read({&new_identity, 1}, options));
  REQUIRE(s.cpu.has_value());
  CHECK(s.cpu->cumulative_ns == 7000);
  CHECK_FALSE(s.cpu->user_ns.has_value());
  CHECK(reader.open_descriptors() == 5);
}

TEST_CASE("reader: a removed cgroup is gone and its descriptors are closed", "[reader]") {
  V2Tree tree;
  CgroupReader reader(tree.layout(), tree.proc);
  const ReadOptions options{.pressure = true, .limits = false};
  std::vector<CgroupTarget> targets{tree.target(kPageCache), tree.target(kSwapped)};
  auto samples = reader.read(targets, options);
  REQUIRE(samples.size() == 2);
  CHECK(samples[1].cpu.has_value());
  CHECK(reader.open_descriptors() == 16);

  // Removed and recreated elsewhere by the runtime; the scanner reports what it saw.
  fs::remove_all(tree.root / kSwapped);
  targets[1].inode += 1;
  samples = reader.read(targets, options);
  REQUIRE(samples.size() == 2);
  CHECK(samples[0].cpu.has_value());
  CHECK(samples[0].memory.has_value());
  REQUIRE(samples[1].cpu.has_error());
  CHECK(samples[1].cpu.error().kind == ReadErrorKind::kGone);
  CHECK(samples[1].cpu.error().path == (tree.root / kSwapped / "cpu.stat").string());
  CHECK(samples[1].cpu.error().errno_value == ENOENT);
  REQUIRE(samples[1].memory.has_error());
  CHECK(samples[1].memory.error().kind == ReadErrorKind::kGone);
  CHECK_FALSE(samples[1].pressure.cpu.has_value());
  CHECK(samples[1].errors.empty());  // gone is absence, not an error
  CHECK(reader.open_descriptors() == 8);

  // A cgroup no longer passed has its descriptors closed.
  targets.pop_back();
  reader.read(targets, options);
  CHECK(reader.open_descriptors() == 8);
  reader.read({}, options);
  CHECK(reader.open_descriptors() == 0);
}

TEST_CASE("reader: garbage memory.stat is a parse error naming the path, others still read",
          "[reader]") {
  V2Tree tree;
  RecordingObserver observer;
  CgroupReader reader(tree.layout(), tree.proc, &observer);
  const fs::path bad = tree.root / kSwapped / "memory.stat";
  write_file(bad, "anon 15740928\nfile twelve\ninactive_file 0\n");
  const std::vector<CgroupTarget> targets{tree.target(kPageCache), tree.target(kSwapped),
                                          tree.target(kThrottled)};
  const auto samples = reader.read(targets, ReadOptions{});
  REQUIRE(samples.size() == 3);
  REQUIRE(samples[1].memory.has_error());
  const ReadError& e = samples[1].memory.error();
  CHECK(e.kind == ReadErrorKind::kParse);
  CHECK(e.path == bad.string());
  CHECK_THAT(e.message, Catch::Contains("file twelve"));
  CHECK_THAT(describe(e), Catch::StartsWith(bad.string() + ": "));
  CHECK(samples[1].cpu.has_value());  // only memory failed
  CHECK(samples[1].cpu->cumulative_ns == 182326000);
  REQUIRE(samples[0].memory.has_value());
  CHECK(samples[0].memory->working_set_bytes == 64327680 - 30408704);
  REQUIRE(samples[2].memory.has_value());
  CHECK(samples[2].memory->usage_bytes == 98304);

  size_t failed_stat_reads = 0;
  for (const auto& r : observer.reads) {
    if (r.failed) {
      CHECK(r.kind == FileKind::kMemoryStat);
      CHECK(r.error_kind == ReadErrorKind::kParse);
      ++failed_stat_reads;
    }
  }
  CHECK(failed_stat_reads == 1);
}

TEST_CASE("reader: reads are grouped by file kind across cgroups", "[reader]") {
  V2Tree tree;
  RecordingObserver observer;
  CgroupReader reader(tree.layout(), tree.proc, &observer);
  const std::vector<CgroupTarget> targets{tree.target(kPageCache), tree.target(kSwapped),
                                          tree.target(kThrottled), tree.target(kOomKilled)};
  reader.read(targets, ReadOptions{});
  const std::vector<FileKind> expected_order{
      FileKind::kCpuStat,        FileKind::kMemoryUsage,       FileKind::kMemoryStat,
      FileKind::kMemoryEvents,   FileKind::kMemorySwapCurrent, FileKind::kCpuPressure,
      FileKind::kMemoryPressure, FileKind::kIoPressure,        FileKind::kMemoryLimit,
      FileKind::kMemorySwapLimit};
  REQUIRE(observer.reads.size() == expected_order.size() * targets.size());
  for (size_t i = 0; i < observer.reads.size(); ++i) {
    INFO("read " << i);
    CHECK(observer.reads[i].kind == expected_order[i / targets.size()]);
    CHECK_FALSE(observer.reads[i].failed);
  }
}

TEST_CASE("reader: empty files", "[reader]") {
  V2Tree tree;
  CgroupReader reader(tree.layout(), tree.proc);
  const CgroupTarget t = tree.target(kPageCache);

  SECTION("memory.current") {
    write_file(tree.root / kPageCache / "memory.current", "");
    const auto s = only(reader.read({&t, 1}, ReadOptions{}));
    REQUIRE(s.memory.has_error());
    CHECK(s.memory.error().kind == ReadErrorKind::kParse);
    CHECK(s.memory.error().path == (tree.root / kPageCache / "memory.current").string());
    CHECK(s.cpu.has_value());
  }
  SECTION("cpu.stat has no usage_usec") {
    write_file(tree.root / kPageCache / "cpu.stat", "");
    const auto s = only(reader.read({&t, 1}, ReadOptions{}));
    REQUIRE(s.cpu.has_error());
    CHECK(s.cpu.error().kind == ReadErrorKind::kParse);
    CHECK(s.cpu.error().path == (tree.root / kPageCache / "cpu.stat").string());
    CHECK(s.memory.has_value());
  }
  SECTION("an empty optional file is an error in errors, the rest is served") {
    write_file(tree.root / kPageCache / "io.pressure", "");
    write_file(tree.root / kPageCache / "memory.max", "");
    const auto s = only(reader.read({&t, 1}, ReadOptions{}));
    REQUIRE(s.cpu.has_value());
    REQUIRE(s.memory.has_value());
    CHECK_FALSE(s.memory->limit_bytes.has_value());
    CHECK_FALSE(s.pressure.io.has_value());
    CHECK(s.pressure.cpu.has_value());
    REQUIRE(s.errors.size() == 2);
    CHECK(s.errors[0].path == (tree.root / kPageCache / "io.pressure").string());
    CHECK(s.errors[0].kind == ReadErrorKind::kParse);
    CHECK(s.errors[1].path == (tree.root / kPageCache / "memory.max").string());
    CHECK(s.errors[1].kind == ReadErrorKind::kParse);
  }
}

TEST_CASE("reader: missing PSI and swap files are absent, not errors, and not retried",
          "[reader]") {
  V2Tree tree;
  RecordingObserver observer;
  CgroupReader reader(tree.layout(), tree.proc, &observer);
  for (const char* name : {"cpu.pressure", "memory.pressure", "io.pressure", "memory.swap.current",
                           "memory.swap.max", "memory.events"}) {
    fs::remove(tree.root / kSwapped / name);
  }
  const CgroupTarget t = tree.target(kSwapped);
  for (int pass = 0; pass < 3; ++pass) {
    const auto s = only(reader.read({&t, 1}, ReadOptions{}));
    REQUIRE(s.cpu.has_value());
    REQUIRE(s.memory.has_value());
    CHECK(s.errors.empty());
    CHECK_FALSE(s.pressure.cpu.has_value());
    CHECK_FALSE(s.pressure.memory.has_value());
    CHECK_FALSE(s.pressure.io.has_value());
    CHECK_FALSE(s.memory->swap_bytes.has_value());
    CHECK_FALSE(s.memory->swap_limit_bytes.has_value());
    CHECK_FALSE(s.memory->oom_kills.has_value());
    CHECK(s.memory->limit_bytes == 16777216u);
  }
  // A missing file is tried once per identity; files that exist are re-read every pass (the
  // limits with open + read + close).
  CHECK(observer.count(FileKind::kCpuPressure) == 1);
  CHECK(observer.count(FileKind::kMemorySwapCurrent) == 1);
  CHECK(observer.count(FileKind::kMemoryEvents) == 1);
  CHECK(observer.count(FileKind::kMemorySwapLimit) == 1);
  CHECK(observer.count(FileKind::kMemoryLimit) == 3);
  CHECK(observer.count(FileKind::kCpuStat) == 3);
  CHECK(reader.open_descriptors() == 3);  // cpu.stat, memory.current, memory.stat
}

TEST_CASE("reader: an unreadable optional file is reported, the rest is served", "[reader]") {
  // A directory in place of cpu.pressure: open succeeds, read fails with EISDIR.
  V2Tree tree;
  fs::remove(tree.root / kSwapped / "cpu.pressure");
  fs::create_directory(tree.root / kSwapped / "cpu.pressure");
  CgroupReader reader(tree.layout(), tree.proc);
  const CgroupTarget t = tree.target(kSwapped);
  const auto s = only(reader.read({&t, 1}, ReadOptions{}));
  CHECK_FALSE(s.pressure.cpu.has_value());
  CHECK(s.pressure.memory.has_value());
  REQUIRE(s.errors.size() == 1);
  CHECK(s.errors[0].kind == ReadErrorKind::kIo);
  CHECK(s.errors[0].path == (tree.root / kSwapped / "cpu.pressure").string());
  CHECK(s.cpu.has_value());
}

TEST_CASE("reader: options turn pressure and limits off", "[reader]") {
  V2Tree tree;
  RecordingObserver observer;
  CgroupReader reader(tree.layout(), tree.proc, &observer);
  const CgroupTarget t = tree.target(kOomKilled);
  only(reader.read({&t, 1}, ReadOptions{}));
  CHECK(reader.open_descriptors() == 8);

  observer.reads.clear();
  const auto s = only(reader.read({&t, 1}, ReadOptions{.pressure = false, .limits = false}));
  REQUIRE(s.memory.has_value());
  CHECK_FALSE(s.memory->limit_bytes.has_value());
  CHECK_FALSE(s.memory->swap_limit_bytes.has_value());
  CHECK(s.memory->oom_kills == 1u);  // memory.events is read every pass
  CHECK(s.memory->swap_bytes == 0u);
  CHECK_FALSE(s.pressure.cpu.has_value());
  CHECK(observer.count(FileKind::kCpuPressure) == 0);
  CHECK(observer.count(FileKind::kMemoryLimit) == 0);
  CHECK(observer.reads.size() == 5);
  CHECK(reader.open_descriptors() == 5);  // PSI descriptors are released
}

TEST_CASE("reader: v1 values from this machine's files", "[reader]") {
  V1Tree tree;
  const std::string rel = "kubepods/burstable/pod0b9e7d36-51c4-4f2a-8e63-a7d90c1b5f48";
  tree.add(rel);
  const std::string limited = rel + "/" + std::string(64, 'a');
  tree.add(limited);
  write_file(tree.memory / limited / "memory.limit_in_bytes", "268435456\n");
  write_file(tree.memory / limited / "memory.memsw.limit_in_bytes", "402653184\n");
  write_file(tree.memory / limited / "memory.failcnt", "3\n");
  write_file(tree.memory / limited / "memory.oom_control",
             "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
  write_file(tree.cpu / limited / "cpu.stat",
             "nr_periods 120\nnr_throttled 7\nthrottled_time 123456789\nnr_bursts 0\n"
             "burst_time 0\n");

  RecordingObserver observer;
  CgroupReader reader(tree.layout(), tree.proc, &observer);
  const std::vector<CgroupTarget> targets{tree.target(rel), tree.target(limited)};
  const auto samples = reader.read(targets, ReadOptions{});
  REQUIRE(samples.size() == 2);
  const uint64_t user_hz = static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
  for (const auto& s : samples) {
    CHECK(s.errors.empty());
    REQUIRE(s.cpu.has_value());
    CHECK(s.cpu->cumulative_ns == 71841425744);
    CHECK(s.cpu->user_ns == 3455 * (1'000'000'000 / user_hz));
    CHECK(s.cpu->system_ns == 3728 * (1'000'000'000 / user_hz));
    REQUIRE(s.memory.has_value());
    const auto& m = *s.memory;
    CHECK(m.usage_bytes == 303501312);
    CHECK(m.working_set_bytes == 303501312 - 162799616);
    CHECK(m.rss_bytes == 7139328u);
    CHECK(m.cache_bytes == 296554496u);
    CHECK(m.swap_bytes == 0u);
    CHECK(m.page_faults == 1743494u);
    CHECK(m.major_page_faults == 954u);
    CHECK_FALSE(s.pressure.cpu.has_value());  // no PSI on v1 cgroups
  }
  const auto& unlimited = *samples[0].memory;
  CHECK_FALSE(unlimited.limit_bytes.has_value());  // 9223372036854771712
  CHECK_FALSE(unlimited.swap_limit_bytes.has_value());
  CHECK(unlimited.failcnt == 0u);
  CHECK(unlimited.oom_kills == 0u);
  CHECK(samples[0].cpu->periods == 0u);
  CHECK(samples[0].cpu->throttled_periods == 0u);
  CHECK(samples[0].cpu->throttled_ns == 0u);

  const auto& lim = *samples[1].memory;
  CHECK(lim.limit_bytes == 268435456u);
  CHECK(lim.swap_limit_bytes == 402653184u - 268435456u);  // memsw is memory + swap
  CHECK(lim.failcnt == 3u);
  CHECK(lim.oom_kills == 2u);
  CHECK(samples[1].cpu->periods == 120u);
  CHECK(samples[1].cpu->throttled_periods == 7u);
  CHECK(samples[1].cpu->throttled_ns == 123456789u);

  // Five kept files per cgroup; limits, failcnt and oom_control are opened, read and closed.
  CHECK(reader.open_descriptors() == 10);
  const std::vector<FileKind> expected_order{
      FileKind::kCpuacctUsage,    FileKind::kCpuacctStat,   FileKind::kCpuStat,
      FileKind::kMemoryUsage,     FileKind::kMemoryStat,    FileKind::kMemoryLimit,
      FileKind::kMemorySwapLimit, FileKind::kMemoryFailcnt, FileKind::kMemoryOomControl};
  REQUIRE(observer.reads.size() == expected_order.size() * 2);
  for (size_t i = 0; i < observer.reads.size(); ++i) {
    CHECK(observer.reads[i].kind == expected_order[i / 2]);
  }

  SECTION("in-place rewrite through kept descriptors") {
    write_file(tree.cpuacct / rel / "cpuacct.usage", "71900000000\n");
    write_file(tree.memory / rel / "memory.usage_in_bytes", "400000000\n");
    const auto again = reader.read(targets, ReadOptions{.pressure = true, .limits = false});
    CHECK(again[0].cpu->cumulative_ns == 71900000000);
    CHECK(again[0].memory->working_set_bytes == 400000000 - 162799616);
    CHECK_FALSE(again[0].memory->limit_bytes.has_value());
    CHECK(reader.open_descriptors() == 10);
  }
  SECTION("working set floors at zero") {
    write_file(tree.memory / rel / "memory.usage_in_bytes", "1000\n");
    const auto again = reader.read(targets, ReadOptions{});
    CHECK(again[0].memory->usage_bytes == 1000);
    CHECK(again[0].memory->working_set_bytes == 0);
  }
  SECTION("garbage in a v1 file names it") {
    write_file(tree.cpuacct / rel / "cpuacct.usage", "-5\n");
    const auto again = reader.read(targets, ReadOptions{});
    REQUIRE(again[0].cpu.has_error());
    CHECK(again[0].cpu.error().kind == ReadErrorKind::kParse);
    CHECK(again[0].cpu.error().path == (tree.cpuacct / rel / "cpuacct.usage").string());
    CHECK(again[0].memory.has_value());
    CHECK(again[1].cpu.has_value());
  }
}

TEST_CASE("reader: v1 hierarchies are told apart when one of them lacks the cgroup", "[reader]") {
  for (bool comounted : {false, true}) {
    INFO("cpu,cpuacct co-mounted: " << comounted);
    V1Tree tree(comounted);
    const std::string rel = "kubepods/besteffort/podc3d4e5f6-0718-4293-a4b5-c6d7e8f90a1b";
    tree.add(rel, false);
    fs::remove_all(tree.cpuacct / rel);
    fs::remove_all(tree.cpu / rel);
    CgroupReader reader(tree.layout(), tree.proc);
    const CgroupTarget t = tree.target(rel);
    const auto s = only(reader.read({&t, 1}, ReadOptions{}));
    REQUIRE(s.cpu.has_error());
    CHECK(s.cpu.error().kind == ReadErrorKind::kGone);
    CHECK(s.cpu.error().path == (tree.cpuacct / rel / "cpuacct.usage").string());
    REQUIRE(s.memory.has_value());
    CHECK(s.memory->usage_bytes == 303501312);
    CHECK_FALSE(s.memory->limit_bytes.has_value());  // no limit files: absent, no error
    CHECK(s.errors.empty());
    CHECK(reader.open_descriptors() == 2);  // memory.usage_in_bytes, memory.stat
  }
}

TEST_CASE("reader: a controller that is not mounted is unsupported", "[reader]") {
  V1Tree tree;
  tree.add("a");
  Layout layout = tree.layout();
  layout.cpuacct.clear();
  CgroupReader reader(layout, tree.proc);
  const CgroupTarget t = tree.target("a");
  const auto s = only(reader.read({&t, 1}, ReadOptions{}));
  REQUIRE(s.cpu.has_error());
  CHECK(s.cpu.error().kind == ReadErrorKind::kUnsupported);
  CHECK(s.memory.has_value());
}

TEST_CASE("reader: v2 node from the root's memory.stat and cpu.stat", "[reader]") {
  V2Tree tree;
  RecordingObserver observer;
  CgroupReader reader(tree.layout(), tree.proc, &observer);
  const NodeSample n = reader.read_node(ReadOptions{});
  CHECK(n.errors.empty());
  REQUIRE(n.cpu.has_value());
  CHECK(n.cpu->cumulative_ns == 5500000000);
  CHECK(n.cpu->user_ns == 1696000000u);
  CHECK(n.cpu->system_ns == 3804000000u);
  REQUIRE(n.memory.has_value());
  const auto& m = *n.memory;
  CHECK(m.usage_bytes == 66772992 + 101187584);  // anon + file
  CHECK(m.working_set_bytes == 66772992 + 101187584 - 30412800);
  CHECK(m.rss_bytes == 66772992u);
  CHECK(m.cache_bytes == 101187584u);
  CHECK(m.page_faults == 12716u);
  CHECK(m.major_page_faults == 8u);
  CHECK(m.limit_bytes == 983496 * kKiB);               // MemTotal
  CHECK(m.swap_bytes == (65532 - 56060) * kKiB);       // SwapTotal - SwapFree
  check_psi(n.pressure.cpu, 14.42, 2156111, 0.00, 0);  // the root's, not /proc's
  check_psi(n.pressure.memory, 0.51, 70055, 0.18, 39629);
  check_psi(n.pressure.io, 0.00, 7330, 0.00, 0);
  CHECK(observer.count(FileKind::kProcStat) == 0);
  CHECK(reader.open_descriptors() == 6);  // meminfo, cpu.stat, memory.stat, three PSI files

  // Kept descriptors for the node too.
  write_file(tree.root / "cpu.stat", read_text(v2_capture() / "t1" / "cpu.stat"));
  const NodeSample again = reader.read_node(ReadOptions{});
  REQUIRE(again.cpu.has_value());
  CHECK(again.cpu->cumulative_ns == 6984000000);
  CHECK(reader.open_descriptors() == 6);
}

TEST_CASE("reader: v2 node falls back to /proc where the root lacks files", "[reader]") {
  V2Tree tree;
  for (const char* name :
       {"cpu.stat", "memory.stat", "cpu.pressure", "memory.pressure", "io.pressure"}) {
    fs::remove(tree.root / name);
  }
  CgroupReader reader(tree.layout(), tree.proc);
  for (int pass = 0; pass < 2; ++pass) {
    const NodeSample n = reader.read_node(ReadOptions{});
    CHECK(n.errors.empty());
    REQUIRE(n.cpu.has_value());
    // /proc/stat "cpu  176 0 387 671 0 0 2 0 0 0": busy = user + nice + system + irq + softirq
    // + steal, in USER_HZ ticks.
    const uint64_t tick_ns = 1'000'000'000 / static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
    CHECK(n.cpu->cumulative_ns == (176 + 387 + 2) * tick_ns);
    CHECK(n.cpu->user_ns == 176 * tick_ns);
    CHECK(n.cpu->system_ns == (387 + 2) * tick_ns);
    REQUIRE(n.memory.has_value());
    const auto& m = *n.memory;
    CHECK(m.usage_bytes == (983496 - 758744) * kKiB);                // MemTotal - MemFree
    CHECK(m.working_set_bytes == (983496 - 758744 - 29700) * kKiB);  // - Inactive(file)
    CHECK(m.cache_bytes == (29700 + 69116) * kKiB);                  // Buffers + Cached
    CHECK_FALSE(m.rss_bytes.has_value());
    CHECK(m.limit_bytes == 983496 * kKiB);
    CHECK(m.swap_bytes == (65532 - 56060) * kKiB);
    check_psi(n.pressure.cpu, 14.42, 2186829, 0.00, 0);  // /proc/pressure/cpu
    check_psi(n.pressure.io, 0.00, 7330, 0.00, 0);
  }
  CHECK(reader.open_descriptors() == 5);  // meminfo, stat, three /proc/pressure files

  SECTION("no PSI anywhere is absent") {
    fs::remove_all(tree.proc / "pressure");
    CgroupReader fresh(tree.layout(), tree.proc);
    const NodeSample n = fresh.read_node(ReadOptions{});
    CHECK(n.errors.empty());
    CHECK_FALSE(n.pressure.cpu.has_value());
    CHECK_FALSE(n.pressure.memory.has_value());
    CHECK_FALSE(n.pressure.io.has_value());
  }
  SECTION("no meminfo either: memory is an error, CPU is served") {
    fs::remove(tree.proc / "meminfo");
    CgroupReader fresh(tree.layout(), tree.proc);
    const NodeSample n = fresh.read_node(ReadOptions{});
    CHECK(n.cpu.has_value());
    REQUIRE(n.memory.has_error());
    CHECK(n.memory.error().path == (tree.proc / "meminfo").string());
    REQUIRE(n.errors.size() == 1);
    CHECK(n.errors[0].path == (tree.proc / "meminfo").string());
  }
}

TEST_CASE("reader: v1 node from the hierarchy roots", "[reader]") {
  V1Tree tree;
  CgroupReader reader(tree.layout(), tree.proc);
  NodeSample n = reader.read_node(ReadOptions{});
  CHECK(n.errors.empty());
  REQUIRE(n.cpu.has_value());
  CHECK(n.cpu->cumulative_ns == 71841425744);
  const uint64_t tick_ns = 1'000'000'000 / static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
  CHECK(n.cpu->user_ns == 3455 * tick_ns);
  CHECK(n.cpu->system_ns == 3728 * tick_ns);
  CHECK(n.cpu->periods == 0u);
  REQUIRE(n.memory.has_value());
  CHECK(n.memory->usage_bytes == 303501312);
  CHECK(n.memory->working_set_bytes == 303501312 - 162799616);  // - total_inactive_file
  CHECK(n.memory->rss_bytes == 7139328u);
  CHECK(n.memory->limit_bytes == 24684092 * kKiB);  // MemTotal
  CHECK_FALSE(n.memory->swap_bytes.has_value());    // SwapTotal 0: no swap
  CHECK_FALSE(n.pressure.cpu.has_value());          // this proc dir has no pressure/
  CHECK(reader.open_descriptors() == 6);

  SECTION("PSI from /proc/pressure") {
    write_file(tree.proc / "pressure" / "cpu",
               "some avg10=1.50 avg60=0.50 avg300=0.10 total=123456\n"
               "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
    CgroupReader fresh(tree.layout(), tree.proc);
    n = fresh.read_node(ReadOptions{});
    check_psi(n.pressure.cpu, 1.50, 123456, 0.00, 0);
    CHECK_FALSE(n.pressure.memory.has_value());
    CHECK(n.errors.empty());
    n = fresh.read_node(ReadOptions{.pressure = false, .limits = true});
    CHECK_FALSE(n.pressure.cpu.has_value());
  }
  SECTION("garbage root memory.stat") {
    write_file(tree.memory / "memory.stat", "total_inactive_file\n");
    n = reader.read_node(ReadOptions{});
    REQUIRE(n.memory.has_error());
    CHECK(n.memory.error().kind == ReadErrorKind::kParse);
    CHECK(n.memory.error().path == (tree.memory / "memory.stat").string());
    CHECK(n.cpu.has_value());
  }
}

TEST_CASE("reader: v2 node memory.stat without anon or file is an error, not zero", "[reader]") {
  V2Tree tree;
  write_file(tree.root / "memory.stat", "file 4096\ninactive_file 0\n");
  CgroupReader reader(tree.layout(), tree.proc);
  const NodeSample n = reader.read_node(ReadOptions{});
  REQUIRE(n.memory.has_error());
  CHECK(n.memory.error().kind == ReadErrorKind::kParse);
  CHECK(n.memory.error().path == (tree.root / "memory.stat").string());
  CHECK_THAT(n.memory.error().message, Catch::Contains("anon"));
  CHECK(n.cpu.has_value());
}
