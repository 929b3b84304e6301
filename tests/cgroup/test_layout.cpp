// Mode detection: mountinfo parsing, detection from a proc root's mountinfo (this machine's real
// /sys/fs/cgroup and written mount tables) and from the files of plain directory trees.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cgroup/layout.h"

using namespace nodemeter::cgroup;
namespace fs = std::filesystem;
using namespace std::string_literals;

namespace {

std::string verbatim(const std::string& name) {
  const char* dir = std::getenv("NODEMETER_SOURCE_DIR");
  INFO("NODEMETER_SOURCE_DIR must point at the source tree (CTest sets it)");
  REQUIRE(dir != nullptr);
  const std::string path = std::string(dir) + "/tests/fixtures/verbatim/" + name;
  std::ifstream in(path, std::ios::binary);
  INFO(path);
  REQUIRE(in.good());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// A fresh directory under /tmp, removed with everything in it when the test ends (also on failure).
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "nodemeter-layout-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = fs::canonical(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
  REQUIRE(out.good());
}

// A proc root whose self/mountinfo is the given text.
void write_mountinfo(const fs::path& proc_root, const std::string& text) {
  write_file(proc_root / "self" / "mountinfo", text);
}

std::string cgroup_line(int id, const std::string& mount_point, const std::string& fs_type,
                        const std::string& super_options, const std::string& root = "/") {
  return std::to_string(id) + " 31 0:" + std::to_string(id) + " " + root + " " + mount_point +
         " rw,nosuid,nodev,noexec,relatime shared:" + std::to_string(id) + " - " + fs_type + " " +
         fs_type + " " + super_options + "\n";
}

Layout detect_ok(const fs::path& cgroup_root, const fs::path& proc_root) {
  auto layout = detect_layout(cgroup_root, proc_root);
  INFO((layout.has_error() ? layout.error() : std::string("ok")));
  REQUIRE(layout.has_value());
  CHECK(layout->root == cgroup_root);
  return *layout;
}

std::string detect_error(const fs::path& cgroup_root, const fs::path& proc_root) {
  auto layout = detect_layout(cgroup_root, proc_root);
  REQUIRE(layout.has_error());
  return layout.error();
}

std::string not_a_hierarchy(const fs::path& root) {
  return "--cgroup-root " + root.string() +
         ": not a cgroup v1 or v2 hierarchy (no cgroup.controllers and no cpuacct/memory "
         "controller directories)";
}

}  // namespace

TEST_CASE("to_string(Mode)", "[layout]") {
  CHECK(std::string(to_string(Mode::kV1)) == "v1");
  CHECK(std::string(to_string(Mode::kV2)) == "v2");
  CHECK(std::string(to_string(Mode::kHybrid)) == "hybrid");
}

TEST_CASE("parse_mountinfo reads this machine's verbatim mountinfo", "[layout]") {
  const auto mounts = parse_mountinfo(verbatim("v1-proc-self-mountinfo"));
  REQUIRE(mounts.has_value());
  REQUIRE(mounts->size() == 20);
  const MountInfo& first = mounts->front();
  CHECK(first.mount_point == "/proc");
  CHECK(first.root == "/");
  CHECK(first.fs_type == "proc");
  CHECK(first.super_options == "rw");
  const MountInfo& tmpfs = (*mounts)[9];
  CHECK(tmpfs.mount_point == "/sys/fs/cgroup");
  CHECK(tmpfs.fs_type == "tmpfs");
  CHECK(tmpfs.super_options == "rw,mode=755");
  const MountInfo& cpuacct = (*mounts)[11];
  CHECK(cpuacct.mount_point == "/sys/fs/cgroup/cpuacct");
  CHECK(cpuacct.fs_type == "cgroup");
  CHECK(cpuacct.super_options == "rw,cpuacct");
  CHECK((*mounts)[18].super_options == "rw,name=systemd");
  const MountInfo& unified = mounts->back();
  CHECK(unified.mount_point == "/sys/fs/cgroup/unified");
  CHECK(unified.fs_type == "cgroup2");
  CHECK(unified.super_options == "rw");
}

TEST_CASE("parse_mountinfo handles optional fields, escapes and CRLF", "[layout]") {
  // proc(5)'s own example, with two optional fields before the separator.
  auto mounts = parse_mountinfo(
      "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n"
      "40 31 0:37 /my\\040root /sys/fs/cgroup/my\\040dir\\011tab\\134back\\012nl rw - cgroup "
      "cgroup rw,cpu,cpuacct\r\n"
      "\n"
      "41 31 0:38 / /odd\\9ab\\04 rw - cgroup2 cgroup2 rw");
  REQUIRE(mounts.has_value());
  REQUIRE(mounts->size() == 3);
  CHECK((*mounts)[0].root == "/mnt1");
  CHECK((*mounts)[0].mount_point == "/mnt2");
  CHECK((*mounts)[0].fs_type == "ext3");
  CHECK((*mounts)[0].super_options == "rw,errors=continue");
  CHECK((*mounts)[1].root == "/my root");
  CHECK((*mounts)[1].mount_point == "/sys/fs/cgroup/my dir\ttab\\back\nnl");
  CHECK((*mounts)[1].super_options == "rw,cpu,cpuacct");
  CHECK((*mounts)[2].mount_point == "/odd\\9ab\\04");  // not escapes: kept as they are
  CHECK((*mounts)[2].fs_type == "cgroup2");

  const auto empty = parse_mountinfo("");
  REQUIRE(empty.has_value());
  CHECK(empty->empty());
}

TEST_CASE("parse_mountinfo rejects malformed lines with the line", "[layout]") {
  auto check = [](std::string_view text, const std::string& message, const std::string& line) {
    const auto r = parse_mountinfo(text);
    REQUIRE(r.has_error());
    CHECK(r.error().message == message);
    CHECK(r.error().line == line);
  };
  const std::string good = "22 27 0:21 / /proc rw,relatime - proc proc rw\n";
  check(good + "garbage\n", "mountinfo line has no ' - ' separator", "garbage");
  check("22 27 0:21 / /proc rw,relatime proc proc rw\n", "mountinfo line has no ' - ' separator",
        "22 27 0:21 / /proc rw,relatime proc proc rw");
  check("22 27 0:21 / /proc - proc proc rw\n",
        "mountinfo line has fewer than 6 fields before ' - '", "22 27 0:21 / /proc - proc proc rw");
  check("22 27 0:21 / /proc rw - proc proc\n",  // truncated
        "mountinfo line has fewer than 3 fields after ' - '", "22 27 0:21 / /proc rw - proc proc");
  check("x 27 0:21 / /proc rw - proc proc rw\n", "mountinfo mount id is not a number",
        "x 27 0:21 / /proc rw - proc proc rw");
  check("-1 27 0:21 / /proc rw - proc proc rw\n", "mountinfo mount id is not a number",
        "-1 27 0:21 / /proc rw - proc proc rw");
  check("18446744073709551616 27 0:21 / /p rw - proc proc rw", "mountinfo mount id is not a number",
        "18446744073709551616 27 0:21 / /p rw - proc proc rw");
  check("22 27 021 / /proc rw - proc proc rw\n", "mountinfo device is not major:minor",
        "22 27 021 / /proc rw - proc proc rw");
  check("22\0 27 0:21 / /proc rw - proc proc rw\n"s, "mountinfo mount id is not a number",
        "22\0 27 0:21 / /proc rw - proc proc rw"s);
  const std::string huge(1 << 20, 'a');
  check(huge, "mountinfo line has no ' - ' separator", huge.substr(0, 120));
}

TEST_CASE("detect_layout on this machine's /sys/fs/cgroup matches /proc/self/mountinfo",
          "[layout]") {
  // What the mount table says, found with plain string handling.
  std::map<std::string, std::string> controller_dir;  // controller -> mount point
  bool cgroup2_root = false, cgroup2_unified = false;
  std::istringstream lines(read_text("/proc/self/mountinfo"));
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string field; fields >> field;)
      f.push_back(field);
    const auto sep = std::find(f.begin(), f.end(), "-");
    REQUIRE(sep != f.end());
    const std::string& point = f[4];
    const std::string& type = sep[1];
    if (type == "cgroup2") {
      cgroup2_root |= point == "/sys/fs/cgroup";
      cgroup2_unified |= point == "/sys/fs/cgroup/unified";
    } else if (type == "cgroup") {
      std::istringstream options(sep[3]);
      for (std::string option; std::getline(options, option, ',');) {
        if (!controller_dir.count(option)) controller_dir[option] = point;
      }
    }
  }

  const Layout layout = detect_ok("/sys/fs/cgroup", "/proc");
  if (cgroup2_root) {
    CHECK(layout.mode == Mode::kV2);
    return;
  }
  INFO("this machine kind is hybrid: v1 controllers plus cgroup2 at /sys/fs/cgroup/unified");
  REQUIRE(cgroup2_unified);
  CHECK(layout.mode == Mode::kHybrid);
  CHECK(layout.cpu == controller_dir.at("cpu"));
  CHECK(layout.cpuacct == controller_dir.at("cpuacct"));
  CHECK(layout.memory == controller_dir.at("memory"));
  CHECK(layout.blkio == controller_dir.at("blkio"));
  CHECK(layout.pids == controller_dir.at("pids"));
  CHECK(layout.primary() == layout.memory);
  CHECK(fs::exists(layout.cpuacct / "cpuacct.usage"));
  CHECK(fs::exists(layout.memory / "memory.usage_in_bytes"));
}

TEST_CASE("detect_layout from mountinfo: pure v2", "[layout]") {
  TempDir proc, root;
  write_mountinfo(proc.path(), "22 27 0:21 / /proc rw,relatime - proc proc rw\n" +
                                   cgroup_line(30, root.path().string(), "cgroup2",
                                               "rw,nsdelegate,memory_recursiveprot"));
  // The directory is empty: only the mount table can say it is v2.
  const Layout layout = detect_ok(root.path(), proc.path());
  CHECK(layout.mode == Mode::kV2);
  CHECK(layout.is_v2());
  CHECK(layout.cpu == root.path());
  CHECK(layout.cpuacct == root.path());
  CHECK(layout.memory == root.path());
  CHECK(layout.primary() == root.path());
}

TEST_CASE("detect_layout from mountinfo: co-mounted cpu,cpuacct with name=systemd", "[layout]") {
  TempDir proc, root;
  const std::string r = root.path().string();
  const std::string v1_mounts =
      "31 23 0:28 / " + r + " rw - tmpfs tmpfs rw,mode=755\n" +
      cgroup_line(32, r + "/systemd", "cgroup", "rw,xattr,name=systemd") +
      cgroup_line(33, r + "/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct") +
      cgroup_line(34, r + "/memory", "cgroup", "rw,memory") +
      cgroup_line(35, r + "/blkio", "cgroup", "rw,blkio") +
      cgroup_line(36, r + "/net_cls,net_prio", "cgroup", "rw,net_cls,net_prio");
  SECTION("v1") {
    write_mountinfo(proc.path(), v1_mounts);
    const Layout layout = detect_ok(root.path(), proc.path());
    CHECK(layout.mode == Mode::kV1);
    CHECK(layout.cpu == root.path() / "cpu,cpuacct");
    CHECK(layout.cpuacct == root.path() / "cpu,cpuacct");
    CHECK(layout.memory == root.path() / "memory");
    CHECK(layout.blkio == root.path() / "blkio");
    CHECK(layout.pids.empty());
    CHECK(layout.primary() == root.path() / "memory");
  }
  SECTION("hybrid: cgroup2 at unified/") {
    write_mountinfo(proc.path(),
                    v1_mounts + cgroup_line(37, r + "/unified", "cgroup2", "rw,nsdelegate"));
    const Layout layout = detect_ok(root.path(), proc.path());
    CHECK(layout.mode == Mode::kHybrid);
    CHECK_FALSE(layout.is_v2());
    CHECK(layout.cpuacct == root.path() / "cpu,cpuacct");
    CHECK(layout.memory == root.path() / "memory");
  }
}

TEST_CASE("detect_layout from mountinfo: escaped paths, symlinked roots, bind mounts", "[layout]") {
  TempDir proc, base;
  const fs::path root = base.path() / "my cgroups";
  fs::create_directories(root);
  const std::string escaped = base.path().string() + "/my\\040cgroups";
  std::string table = cgroup_line(40, escaped + "/cpu", "cgroup", "rw,cpu") +
                      cgroup_line(41, escaped + "/cpuacct", "cgroup", "rw,cpuacct") +
                      // A bind mount of part of the memory hierarchy first, then the whole tree.
                      cgroup_line(42, escaped + "/memory", "cgroup", "rw,memory", "/kubepods") +
                      cgroup_line(43, escaped + "/memory", "cgroup", "rw,memory") +
                      cgroup_line(44, escaped + "/pids", "cgroup", "rw,pids") +
                      // Elsewhere on the host: not under the root, ignored.
                      cgroup_line(45, "/elsewhere/memory", "cgroup", "rw,memory");
  write_mountinfo(proc.path(), table);

  const Layout layout = detect_ok(root, proc.path());
  CHECK(layout.mode == Mode::kV1);
  CHECK(layout.cpu == root / "cpu");
  CHECK(layout.cpuacct == root / "cpuacct");
  CHECK(layout.memory == root / "memory");
  CHECK(layout.pids == root / "pids");

  // The root given through a symlink (and with a trailing slash) matches the canonical mount
  // points; paths stay under the root as given.
  const fs::path link = base.path() / "link";
  fs::create_directory_symlink(root, link);
  const fs::path given = link.string() + "/";
  const Layout via_link = detect_ok(given, proc.path());
  CHECK(via_link.mode == Mode::kV1);
  CHECK(via_link.memory == given / "memory");
  CHECK(via_link.cpuacct == given / "cpuacct");
}

TEST_CASE("detect_layout from mountinfo: a later mount hides an earlier one", "[layout]") {
  TempDir proc, root;
  const std::string r = root.path().string();
  // cgroup2 was mounted at the root, then a tmpfs over it holding v1 controllers.
  write_mountinfo(proc.path(), cgroup_line(30, r, "cgroup2", "rw") + "31 23 0:28 / " + r +
                                   " rw - tmpfs tmpfs rw,mode=755\n" +
                                   cgroup_line(32, r + "/cpuacct", "cgroup", "rw,cpuacct") +
                                   cgroup_line(33, r + "/memory", "cgroup", "rw,memory"));
  const Layout layout = detect_ok(root.path(), proc.path());
  CHECK(layout.mode == Mode::kV1);
  CHECK(layout.cpu.empty());  // no cpu controller mounted
  CHECK(layout.cpuacct == root.path() / "cpuacct");
}

TEST_CASE("detect_layout from mountinfo: errors name the path", "[layout]") {
  TempDir proc, root;
  const std::string r = root.path().string();
  SECTION("v1 without memory") {
    write_mountinfo(proc.path(),
                    cgroup_line(32, r + "/systemd", "cgroup", "rw,name=systemd") +
                        cgroup_line(33, r + "/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"));
    CHECK(detect_error(root.path(), proc.path()) ==
          "--cgroup-root " + r + ": cgroup v1 hierarchy without the memory controller");
  }
  SECTION("v1 without cpuacct") {
    write_mountinfo(proc.path(), cgroup_line(33, r + "/memory", "cgroup", "rw,memory"));
    CHECK(detect_error(root.path(), proc.path()) ==
          "--cgroup-root " + r + ": cgroup v1 hierarchy without the cpuacct controller");
  }
  SECTION("only name=systemd and an empty cgroup2") {
    write_mountinfo(proc.path(), cgroup_line(32, r + "/systemd", "cgroup", "rw,name=systemd") +
                                     cgroup_line(33, r + "/unified", "cgroup2", "rw"));
    CHECK(detect_error(root.path(), proc.path()) == not_a_hierarchy(root.path()));
  }
  SECTION("malformed mountinfo") {
    write_mountinfo(proc.path(), "22 27 0:21 / /proc rw\n");
    CHECK(detect_error(root.path(), proc.path()) ==
          "--proc-root " + proc.path().string() + ": " + proc.path().string() +
              "/self/mountinfo: mountinfo line has no ' - ' separator: 22 27 0:21 / /proc rw");
  }
}

TEST_CASE("detect_layout from directory files: v2, v1, hybrid", "[layout]") {
  TempDir proc, root;  // proc has no self/mountinfo: the directory decides
  const fs::path& r = root.path();
  SECTION("v2") {
    write_file(r / "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
    const Layout layout = detect_ok(r, proc.path());
    CHECK(layout.mode == Mode::kV2);
    CHECK(layout.memory == r);
    CHECK(layout.cpu == r);
  }
  SECTION("v1 and hybrid") {
    write_file(r / "cpu" / "cpu.shares", "1024\n");
    write_file(r / "cpuacct" / "cpuacct.usage", "71841425744\n");
    write_file(r / "memory" / "memory.usage_in_bytes", "303501312\n");
    fs::create_directories(r / "blkio");
    fs::create_directories(r / "pids");
    fs::create_directories(r / "systemd");
    Layout layout = detect_ok(r, proc.path());
    CHECK(layout.mode == Mode::kV1);
    CHECK(layout.cpu == r / "cpu");
    CHECK(layout.cpuacct == r / "cpuacct");
    CHECK(layout.memory == r / "memory");
    CHECK(layout.blkio == r / "blkio");
    CHECK(layout.pids == r / "pids");

    fs::create_directories(r / "unified");
    CHECK(detect_ok(r, proc.path()).mode == Mode::kV1);  // an empty unified/ is not cgroup2
    write_file(r / "unified" / "cgroup.controllers", "");
    layout = detect_ok(r, proc.path());
    CHECK(layout.mode == Mode::kHybrid);
    CHECK(layout.memory == r / "memory");
  }
  SECTION("v1 without the optional controllers") {
    write_file(r / "cpuacct" / "cpuacct.stat", "user 1\nsystem 1\n");
    write_file(r / "memory" / "memory.stat", "cache 0\n");
    const Layout layout = detect_ok(r, proc.path());
    CHECK(layout.mode == Mode::kV1);
    CHECK(layout.cpu.empty());
    CHECK(layout.blkio.empty());
    CHECK(layout.pids.empty());
  }
}

TEST_CASE("detect_layout from directory files: systemd's cpu -> cpu,cpuacct links", "[layout]") {
  TempDir proc, root;
  const fs::path& r = root.path();
  write_file(r / "cpu,cpuacct" / "cpu.shares", "1024\n");
  write_file(r / "cpu,cpuacct" / "cpuacct.usage", "5\n");
  write_file(r / "memory" / "memory.usage_in_bytes", "4096\n");
  fs::create_directory_symlink("cpu,cpuacct", r / "cpu");
  fs::create_directory_symlink("cpu,cpuacct", r / "cpuacct");
  Layout layout = detect_ok(r, proc.path());
  CHECK(layout.mode == Mode::kV1);
  CHECK(layout.cpu == r / "cpu,cpuacct");
  CHECK(layout.cpuacct == r / "cpu,cpuacct");  // co-mounted: one shared directory
  CHECK(layout.memory == r / "memory");

  // With the real directory named the other way round and only links to it by plain names.
  TempDir other;
  const fs::path& o = other.path();
  write_file(o / "cpuacct,cpu" / "cpu.stat", "nr_periods 0\n");
  write_file(o / "cpuacct,cpu" / "cpuacct.usage", "5\n");
  write_file(o / "memory" / "memory.usage_in_bytes", "4096\n");
  fs::create_directory_symlink(o / "cpuacct,cpu", o / "cpu");
  layout = detect_ok(o, proc.path());
  CHECK(layout.cpu == o / "cpuacct,cpu");
  CHECK(layout.cpuacct == o / "cpuacct,cpu");

  // A symlinked controller directory alone is followed.
  TempDir third;
  const fs::path& t = third.path();
  write_file(t / "real-memory" / "memory.usage_in_bytes", "4096\n");
  write_file(t / "cpuacct" / "cpuacct.usage", "5\n");
  fs::create_directory_symlink(t / "real-memory", t / "memory");
  layout = detect_ok(t, proc.path());
  CHECK(layout.memory == t / "memory");
  CHECK(fs::exists(layout.memory / "memory.usage_in_bytes"));
}

TEST_CASE("detect_layout errors name the path", "[layout]") {
  TempDir proc, root;
  const fs::path& r = root.path();
  SECTION("missing root") {
    CHECK(detect_error(r / "nope", proc.path()) ==
          "--cgroup-root " + (r / "nope").string() + ": no such directory");
  }
  SECTION("root is a file") {
    write_file(r / "file", "x");
    CHECK(detect_error(r / "file", proc.path()) ==
          "--cgroup-root " + (r / "file").string() + ": not a directory");
  }
  SECTION("empty directory") {
    CHECK(detect_error(r, proc.path()) == not_a_hierarchy(r));
  }
  SECTION("controller directories without their files") {
    fs::create_directories(r / "cpuacct");
    fs::create_directories(r / "memory");
    CHECK(detect_error(r, proc.path()) == not_a_hierarchy(r));
  }
  SECTION("v1 without memory") {
    write_file(r / "cpuacct" / "cpuacct.usage", "5\n");
    write_file(r / "cpu" / "cpu.shares", "1024\n");
    CHECK(detect_error(r, proc.path()) ==
          "--cgroup-root " + r.string() + ": cgroup v1 hierarchy without the memory controller");
  }
  SECTION("v1 without cpuacct") {
    write_file(r / "memory" / "memory.usage_in_bytes", "5\n");
    CHECK(detect_error(r, proc.path()) ==
          "--cgroup-root " + r.string() + ": cgroup v1 hierarchy without the cpuacct controller");
  }
  SECTION("a proc root whose mountinfo cannot be read") {
    fs::create_directories(proc.path() / "self" / "mountinfo");  // a directory: read fails
    write_file(r / "cgroup.controllers", "");
    CHECK(detect_error(r, proc.path()) == "--proc-root " + proc.path().string() + ": " +
                                              proc.path().string() +
                                              "/self/mountinfo: Is a directory");
  }
}
