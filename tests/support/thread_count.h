// Sets the OpenMP thread count for one scope and restores the previous one (tests that check
// results do not depend on the thread count).
#pragma once

#include <omp.h>

namespace zt::testing {

class ThreadCount {
 public:
  explicit ThreadCount(int threads) : previous_(omp_get_max_threads()) {
    omp_set_num_threads(threads);
  }
  ~ThreadCount() { omp_set_num_threads(previous_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int previous_;
};

}  // namespace zt::testing
