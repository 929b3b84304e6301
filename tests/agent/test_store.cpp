#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "agent/store.h"

namespace nodemeter::agent {
namespace {

using namespace std::chrono_literals;
using std::chrono::nanoseconds;

const SteadyTime kSteady0{std::chrono::seconds{1000}};
const WallTime kWall0{std::chrono::seconds{1'700'000'000}};

WindowPoint point(nanoseconds at, uint64_t cumulative_ns, uint64_t working_set = 100) {
  return WindowPoint{kSteady0 + at, kWall0 + std::chrono::duration_cast<WallTime::duration>(at),
                     cumulative_ns, working_set, std::nullopt};
}

api::Sample sample_at(nanoseconds at, uint64_t cumulative_ns, uint64_t working_set = 4096) {
  api::Sample s;
  s.time = kWall0 + std::chrono::duration_cast<WallTime::duration>(at);
  s.cpu.cumulative_ns = cumulative_ns;
  s.memory.usage_bytes = working_set + 1000;
  s.memory.working_set_bytes = working_set;
  return s;
}

WindowParams params(nanoseconds window = 15s, nanoseconds interval = 5s) {
  WindowParams p;
  p.window = window;
  p.interval = interval;
  return p;
}

}  // namespace

TEST_CASE("cpu_nano_cores divides the counter difference by the steady difference", "[store]") {
  // Half a core: 2.5 s of CPU over 5 s.
  CHECK(cpu_nano_cores(1'000'000'000, kSteady0, 3'500'000'000, kSteady0 + 5s) == 500'000'000);
  // Exact for large counters (would overflow 64 bits as cumulative * 1e9).
  const uint64_t big = uint64_t{1} << 62;
  CHECK(cpu_nano_cores(big, kSteady0, big + 30'000'000'000, kSteady0 + 10s) == 3'000'000'000);
  // Truncates.
  CHECK(cpu_nano_cores(0, kSteady0, 10, kSteady0 + 3s) == 3);
  CHECK(cpu_nano_cores(5, kSteady0, 5, kSteady0 + 1s) == 0);
}

TEST_CASE("cpu_nano_cores gives no value for a decrease or no elapsed time", "[store]") {
  CHECK_FALSE(cpu_nano_cores(2000, kSteady0, 1999, kSteady0 + 5s).has_value());
  CHECK_FALSE(cpu_nano_cores(1000, kSteady0, 2000, kSteady0).has_value());
  CHECK_FALSE(cpu_nano_cores(1000, kSteady0 + 1s, 2000, kSteady0).has_value());
}

TEST_CASE("window_usage over a steady ramp uses the oldest point within the window", "[store]") {
  // 0.25 cores: 1.25 s of CPU per 5 s interval.
  std::vector<WindowPoint> points;
  for (int i = 0; i <= 4; ++i)
    points.push_back(point(i * 5s, uint64_t(i) * 1'250'000'000, 100 + i));
  const auto usage = window_usage(points, std::nullopt, params());
  REQUIRE(usage);
  CHECK(usage->nano_cores == 250'000'000);
  CHECK(usage->window == 15s);  // 20 s - 5 s; the point at 0 s is beyond 15 s + 2.5 s
  CHECK(usage->timestamp == kWall0 + 20s);
  CHECK(usage->working_set_bytes == 104);
  CHECK_FALSE(usage->swap_bytes.has_value());
}

TEST_CASE("window_usage tolerates a late pass by half an interval", "[store]") {
  std::vector<WindowPoint> points = {point(0s, 0), point(5s, 1'000'000'000),
                                     point(10s, 2'000'000'000), point(17s, 3'400'000'000)};
  const auto usage = window_usage(points, std::nullopt, params());
  REQUIRE(usage);
  CHECK(usage->window == 17s);  // 17 s <= 15 s + 2.5 s: the point at 0 s still counts
  CHECK(usage->nano_cores == 200'000'000);
  points.push_back(point(20s + 1ms, 4'000'000'000));  // now 0 s is 20.001 s back: too old
  const auto later = window_usage(points, std::nullopt, params());
  REQUIRE(later);
  CHECK(later->window == 15s + 1ms);
}

TEST_CASE("window_usage after a counter reset starts a new window", "[store]") {
  SECTION("one point after the reset: no value, and the start is not trusted") {
    std::vector<WindowPoint> points = {point(0s, 9'000'000'000), point(5s, 10'000'000'000),
                                       point(10s, 1'000'000)};
    CHECK_FALSE(window_usage(points, kWall0 + 8s, params()).has_value());
  }
  SECTION("two points after the reset: the rate of the new counter only") {
    std::vector<WindowPoint> points = {point(0s, 9'000'000'000), point(5s, 1'000'000'000),
                                       point(10s, 1'500'000'000)};
    const auto usage = window_usage(points, std::nullopt, params());
    REQUIRE(usage);
    CHECK(usage->nano_cores == 100'000'000);
    CHECK(usage->window == 5s);
  }
}

TEST_CASE("window_usage of a single point without a start has no value", "[store]") {
  std::vector<WindowPoint> points = {point(0s, 5'000'000'000)};
  CHECK_FALSE(window_usage(points, std::nullopt, params()).has_value());
  CHECK_FALSE(window_usage({}, kWall0, params()).has_value());
}

TEST_CASE("window_usage measures a young container from its start", "[store]") {
  const std::vector<WindowPoint> points = {point(10s, 3'000'000'000, 777)};
  SECTION("started 6 s before its only reading: 3 s of CPU over 6 s") {
    const auto usage = window_usage(points, kWall0 + 4s, params());
    REQUIRE(usage);
    CHECK(usage->nano_cores == 500'000'000);
    CHECK(usage->window == 6s);
    CHECK(usage->timestamp == kWall0 + 10s);
    CHECK(usage->working_set_bytes == 777);
  }
  SECTION("started under fresh_min_age ago: too imprecise") {
    CHECK_FALSE(window_usage(points, kWall0 + 9500ms, params()).has_value());
  }
  SECTION("started a window or more ago: it needs a second reading") {
    CHECK_FALSE(window_usage(points, kWall0 - 5s, params()).has_value());
  }
  SECTION("a start after the reading (clock skew) gives nothing") {
    CHECK_FALSE(window_usage(points, kWall0 + 11s, params()).has_value());
  }
  SECTION("real readings win over the start") {
    const std::vector<WindowPoint> two = {point(5s, 1'000'000'000), point(10s, 3'000'000'000)};
    const auto usage = window_usage(two, kWall0 + 4s, params());
    REQUIRE(usage);
    CHECK(usage->window == 5s);
    CHECK(usage->nano_cores == 400'000'000);
  }
  SECTION("the start is placed by the reading's wall/steady offset, not by a wall jump") {
    // The wall clock stepped +100 s between steady 0 and the reading; the start time, taken from
    // the same stepped wall clock, is 6 s before the reading's wall time.
    WindowPoint stepped = points[0];
    stepped.wall += 100s;
    const std::vector<WindowPoint> one = {stepped};
    const auto usage = window_usage(one, kWall0 + 104s, params());
    REQUIRE(usage);
    CHECK(usage->window == 6s);
  }
}

TEST_CASE("Store records, ramps and reports the window", "[store]") {
  Store store;
  const CgroupIdentity id{"kubepods/burstable/podabc/c1", 42};
  for (int i = 0; i <= 3; ++i) {
    store.record(id, kSteady0 + i * 5s, sample_at(i * 5s, uint64_t(i) * 2'000'000'000, 1000 + i));
    store.end_pass();
  }
  const auto usage = store.usage(id, kSteady0 + 15s, std::nullopt);
  REQUIRE(usage);
  CHECK(usage->nano_cores == 400'000'000);
  CHECK(usage->window == 15s);
  CHECK(usage->working_set_bytes == 1003);
  REQUIRE(store.latest(id) != nullptr);
  CHECK(store.latest(id)->cpu.cumulative_ns == 6'000'000'000);
  CHECK_FALSE(store.stale(id));
}

TEST_CASE("Store: a new identity at the same path starts from nothing", "[store]") {
  Store store;
  const CgroupIdentity first{"kubepods/podabc/c1", 1};
  const CgroupIdentity recreated{"kubepods/podabc/c1", 2};
  store.record(first, kSteady0, sample_at(0s, 50'000'000'000));
  store.end_pass();
  store.record(first, kSteady0 + 5s, sample_at(5s, 55'000'000'000));
  store.end_pass();
  REQUIRE(store.usage(first, kSteady0 + 5s, std::nullopt));
  store.record(recreated, kSteady0 + 10s, sample_at(10s, 1'000'000));
  store.end_pass();
  CHECK_FALSE(store.contains(first));
  CHECK_FALSE(store.usage(recreated, kSteady0 + 10s, std::nullopt).has_value());
  store.record(recreated, kSteady0 + 15s, sample_at(15s, 501'000'000));
  const auto usage = store.usage(recreated, kSteady0 + 15s, std::nullopt);
  REQUIRE(usage);
  CHECK(usage->nano_cores == 100'000'000);
  CHECK(usage->window == 5s);
}

TEST_CASE("Store: a counter that goes down drops older samples", "[store]") {
  Store store;
  const CgroupIdentity id{"c", 7};
  store.record(id, kSteady0, sample_at(0s, 10'000'000'000));
  store.record(id, kSteady0 + 5s, sample_at(5s, 12'000'000'000));
  store.record(id, kSteady0 + 10s, sample_at(10s, 100'000'000));
  CHECK(store.total_points() == 1);
  // Even with a start time that would qualify, a reset counter does not count from the start.
  CHECK_FALSE(store.usage(id, kSteady0 + 10s, kWall0 + 5s).has_value());
  store.record(id, kSteady0 + 15s, sample_at(15s, 600'000'000));
  const auto usage = store.usage(id, kSteady0 + 15s, std::nullopt);
  REQUIRE(usage);
  CHECK(usage->nano_cores == 100'000'000);
}

TEST_CASE("Store: repeated or out-of-order readings are ignored", "[store]") {
  Store store;
  const CgroupIdentity id{"c", 7};
  store.record(id, kSteady0 + 5s, sample_at(5s, 1'000'000'000));
  store.record(id, kSteady0 + 5s, sample_at(5s, 9'000'000'000));
  store.record(id, kSteady0 + 1s, sample_at(1s, 0));
  CHECK(store.total_points() == 1);
  CHECK(store.latest(id)->cpu.cumulative_ns == 1'000'000'000);
}

TEST_CASE("Store: a young container is measured from its start on its first reading", "[store]") {
  Store store;
  const CgroupIdentity id{"c", 7};
  store.record(id, kSteady0 + 10s, sample_at(10s, 1'500'000'000));
  api::ContainerSnapshot container;
  container.start_time = kWall0 + 7s;
  store.fill(id, kSteady0 + 10s, container);
  REQUIRE(container.usage);
  CHECK(container.usage->nano_cores == 500'000'000);
  CHECK(container.usage->window == 3s);
  REQUIRE(container.latest);
  CHECK(container.latest->cpu.cumulative_ns == 1'500'000'000);
  CHECK_FALSE(container.stale);

  api::ContainerSnapshot unknown_start;
  store.fill(id, kSteady0 + 10s, unknown_start);
  CHECK_FALSE(unknown_start.usage.has_value());
}

TEST_CASE("Store: an unreadable container keeps its window until it is older than the window",
          "[store]") {
  Store store;
  const CgroupIdentity id{"c", 7};
  store.record(id, kSteady0, sample_at(0s, 0));
  store.end_pass();
  store.record(id, kSteady0 + 5s, sample_at(5s, 1'000'000'000, 5555));
  store.end_pass();

  store.mark_unreadable(id);
  store.end_pass();
  api::ContainerSnapshot c;
  store.fill(id, kSteady0 + 10s, c);
  CHECK(c.stale);
  REQUIRE(c.usage);  // newest good reading is 5 s old: within the 15 s window
  CHECK(c.usage->nano_cores == 200'000'000);
  CHECK(c.usage->timestamp == kWall0 + 5s);
  REQUIRE(c.latest);
  CHECK(c.latest->memory.working_set_bytes == 5555);

  store.mark_unreadable(id);
  store.end_pass();
  store.fill(id, kSteady0 + 20s, c);  // exactly a window old: still kept
  CHECK(c.usage);

  store.mark_unreadable(id);
  store.end_pass();
  store.fill(id, kSteady0 + 20s + 1ns, c);  // older than the window: lost
  CHECK(c.stale);
  CHECK_FALSE(c.usage.has_value());
  CHECK(c.latest.has_value());  // the last good read stays, marked stale
  CHECK(store.contains(id));

  // Readable again: not stale, and the new reading pairs with nothing older than the horizon.
  store.record(id, kSteady0 + 25s, sample_at(25s, 3'000'000'000));
  store.fill(id, kSteady0 + 25s, c);
  CHECK_FALSE(c.stale);
  CHECK_FALSE(c.usage.has_value());
}

TEST_CASE("Store: an identity first seen unreadable has no data and is stale", "[store]") {
  Store store;
  const CgroupIdentity id{"c", 7};
  store.mark_unreadable(id);
  api::PodSnapshot pod;
  store.fill(id, kSteady0, pod);
  CHECK(pod.stale);
  CHECK_FALSE(pod.latest.has_value());
  CHECK_FALSE(pod.usage.has_value());
}

TEST_CASE("Store: gone identities leave on the next end_pass", "[store]") {
  Store store;
  const CgroupIdentity a{"a", 1}, b{"b", 2}, unreadable{"u", 3};
  store.record(a, kSteady0, sample_at(0s, 1));
  store.record(b, kSteady0, sample_at(0s, 1));
  store.mark_unreadable(unreadable);
  store.end_pass();
  CHECK(store.size() == 3);
  store.record(a, kSteady0 + 5s, sample_at(5s, 2));
  store.mark_unreadable(unreadable);
  store.end_pass();
  CHECK(store.size() == 2);
  CHECK(store.contains(a));
  CHECK_FALSE(store.contains(b));
  CHECK(store.contains(unreadable));
  store.end_pass();
  CHECK(store.size() == 0);
}

TEST_CASE("Store: memory stays bounded under 10k churned identities", "[store]") {
  Store store;
  const size_t live = 100;
  size_t next_inode = 1;
  size_t max_points = 0;
  for (int pass = 0; pass < 100; ++pass) {
    // Each pass replaces a tenth of the live identities with new ones; the rest continue.
    const auto steady = kSteady0 + pass * 5s;
    for (size_t i = 0; i < live; ++i) {
      const bool replaced = (i % 10) == static_cast<size_t>(pass % 10);
      if (replaced) next_inode += 1;
      const CgroupIdentity id{"pod/c" + std::to_string(i), replaced ? next_inode : i + 1'000'000};
      store.record(id, steady, sample_at(pass * 5s, uint64_t(pass) * 1'000'000));
    }
    store.end_pass();
    CHECK(store.size() == live);
    max_points = std::max(max_points, store.total_points());
  }
  // Plus a burst of 10k identities seen once each.
  for (size_t i = 0; i < 10'000; ++i) {
    store.record(CgroupIdentity{"burst/" + std::to_string(i), i}, kSteady0 + 600s,
                 sample_at(600s, 1));
  }
  store.end_pass();
  CHECK(store.size() == 10'000);
  store.end_pass();
  CHECK(store.size() == 0);
  CHECK(store.total_points() == 0);
  // 15 s window + 2.5 s at 5 s intervals: at most four points per identity.
  CHECK(max_points <= live * 4);
}

TEST_CASE("Store thins a long window to max_points and keeps the oldest", "[store]") {
  StoreOptions options;
  options.window = params(60s, 1s);
  options.max_points = 8;
  Store store(options);
  const CgroupIdentity id{"c", 7};
  nanoseconds shortest = 1h;
  nanoseconds longest = 0s;
  for (int i = 0; i <= 300; ++i) {
    store.record(id, kSteady0 + i * 1s, sample_at(i * 1s, uint64_t(i) * 100'000'000));
    CHECK(store.total_points() <= 8);
    if (i < 60) continue;
    const auto usage = store.usage(id, kSteady0 + i * 1s, std::nullopt);
    REQUIRE(usage);
    CHECK(usage->nano_cores == 100'000'000);
    shortest = std::min(shortest, usage->window);
    longest = std::max(longest, usage->window);
  }
  CHECK(store.total_points() == 8);
  // Thinned evenly, the oldest kept point stays near the window's edge as time moves on.
  CHECK(shortest >= 45s);
  CHECK(longest <= 60s + 500ms);
}

TEST_CASE("Store fills the node from its boot time and its own samples", "[store]") {
  Store store;
  const CgroupIdentity root{"", 1};
  store.record(root, kSteady0, sample_at(0s, 100'000'000'000, 1 << 30));
  store.record(root, kSteady0 + 5s, sample_at(5s, 110'000'000'000, 1 << 29));
  api::NodeSnapshot node;
  node.start_time = kWall0 - 3600s;
  store.fill(root, kSteady0 + 5s, node);
  REQUIRE(node.usage);
  CHECK(node.usage->nano_cores == 2'000'000'000);
  CHECK(node.usage->working_set_bytes == (1u << 29));
  REQUIRE(node.latest);
}

}  // namespace nodemeter::agent
