// Time, injected: wall time for timestamps on the wire, steady time for rates and scheduling.
// Nothing in the agent reads a global clock; tests use FakeClock.
#pragma once

#include <chrono>
#include <mutex>

namespace nodemeter::agent {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::system_clock::time_point wall() const = 0;
  virtual std::chrono::steady_clock::time_point steady() const = 0;
};

class SystemClock final : public Clock {
 public:
  std::chrono::system_clock::time_point wall() const override {
    return std::chrono::system_clock::now();
  }
  std::chrono::steady_clock::time_point steady() const override {
    return std::chrono::steady_clock::now();
  }
};

// A clock that moves only when told; wall and steady advance together unless set apart.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(std::chrono::system_clock::time_point wall_start =
                         std::chrono::system_clock::time_point{std::chrono::seconds{1'700'000'000}})
      : wall_(wall_start) {}
  std::chrono::system_clock::time_point wall() const override {
    std::lock_guard lock(mu_);
    return wall_;
  }
  std::chrono::steady_clock::time_point steady() const override {
    std::lock_guard lock(mu_);
    return steady_;
  }
  void advance(std::chrono::nanoseconds d) {
    std::lock_guard lock(mu_);
    wall_ += std::chrono::duration_cast<std::chrono::system_clock::duration>(d);
    steady_ += d;
  }
  // Moves only the wall clock, as an NTP step does.
  void jump_wall(std::chrono::nanoseconds d) {
    std::lock_guard lock(mu_);
    wall_ += std::chrono::duration_cast<std::chrono::system_clock::duration>(d);
  }

 private:
  mutable std::mutex mu_;
  std::chrono::system_clock::time_point wall_;
  std::chrono::steady_clock::time_point steady_{std::chrono::seconds{1000}};
};

}  // namespace nodemeter::agent
