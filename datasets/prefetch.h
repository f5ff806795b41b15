// Prefetcher<T>: produces a sequence of values on a background thread, a bounded number ahead
// of the consumer, and hands them over in order; a producer exception reaches the consumer.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "runtime/error.h"

namespace zt::datasets {

template <class T>
class Prefetcher {
 public:
  // Calls produce(0), produce(1), ... on a background thread, keeping at most `depth` results
  // waiting. The first exception it throws ends production; next() rethrows it once the
  // results produced before it are consumed.
  Prefetcher(std::function<T(int64_t)> produce, size_t depth)
      : produce_(std::move(produce)), depth_(depth) {
    ZT_CHECK(depth >= 1, "prefetch depth must be at least 1");
    thread_ = std::thread([this] { run(); });
  }
  // Stops production (a produce() in progress finishes first) and joins the thread.
  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    space_.notify_all();
    thread_.join();
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // The next value in order; blocks while it is being produced.
  T next() {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] { return !queue_.empty() || error_ != nullptr; });
    if (queue_.empty()) std::rethrow_exception(error_);
    T value = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    space_.notify_one();
    return value;
  }

 private:
  void run() {
    for (int64_t i = 0;; ++i) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        space_.wait(lock, [&] { return stop_ || queue_.size() < depth_; });
        if (stop_) return;
      }
      try {
        T value = produce_(i);
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back(std::move(value));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        error_ = std::current_exception();
        ready_.notify_all();
        return;
      }
      ready_.notify_one();
    }
  }

  std::function<T(int64_t)> produce_;
  size_t depth_;
  std::mutex mutex_;
  std::condition_variable ready_;  // a value (or the error) is waiting
  std::condition_variable space_;  // the queue has room (or stop)
  std::deque<T> queue_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;  // last: started after every member above exists
};

}  // namespace zt::datasets
