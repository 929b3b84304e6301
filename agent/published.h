// The latest immutable value one thread publishes and any thread reads: a snapshot, a merged view.
//
// Not std::atomic<std::shared_ptr>: libstdc++ 12's load() releases its internal lock with relaxed
// ordering, so its read of the pointer does not happen before the next store's write (a data race
// ThreadSanitizer reports, make test-sanitize). A mutex held only to copy one shared_ptr costs
// about as much, and the value replaced is released outside it.
#pragma once

#include <memory>
#include <mutex>
#include <utility>

namespace nodemeter::agent {

template <typename T>
class Published {
 public:
  std::shared_ptr<const T> load() const {
    std::lock_guard lock(mu_);
    return value_;
  }

  void store(std::shared_ptr<const T> value) {
    {
      std::lock_guard lock(mu_);
      value_.swap(value);
    }
    // `value` now holds the one replaced; the last reader of it frees it, maybe here.
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const T> value_;
};

}  // namespace nodemeter::agent
