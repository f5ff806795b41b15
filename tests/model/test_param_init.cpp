// The parameter initialisation split over threads: the same bits as on one thread, for any split.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "model/params.h"

namespace zt::model {
namespace {

TEST(ParamInit, ThreadsGiveTheSameBitsAsOneThread) {
  GptjConfig c;
  const ParamSpec s = gptj_param_specs(c)[0];  // transformer.wte.weight: 65536 random values
  ASSERT_EQ(s.kind, ParamKind::kEmbedding);
  const int64_t n = s.numel();
  std::vector<float> one(static_cast<size_t>(n));
  init_param_values(s, c, 42, 0, n, one.data(), /*threads=*/1);
  for (int threads : {2, 3, 7}) {
    for (int64_t chunk : {int64_t(1000), int64_t(4099)}) {
      SCOPED_TRACE("threads " + std::to_string(threads) + ", chunk " + std::to_string(chunk));
      std::vector<float> many(static_cast<size_t>(n));
      init_param_values(s, c, 42, 0, n, many.data(), threads, chunk);
      EXPECT_EQ(std::memcmp(one.data(), many.data(), size_t(n) * sizeof(float)), 0);
      // A range that starts and ends inside the parameter.
      std::vector<float> part(10007);
      init_param_values(s, c, 42, 12345, 12345 + 10007, part.data(), threads, chunk);
      EXPECT_EQ(std::memcmp(one.data() + 12345, part.data(), part.size() * sizeof(float)), 0);
    }
  }
}

TEST(ParamInit, ParallelRangesCoverEachElementOnce) {
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(1999), int64_t(2000), int64_t(10007)}) {
    for (int threads : {1, 2, 5}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int> runs{0};
      parallel_ranges(n, threads, 1000, [&](int64_t begin, int64_t end) {
        EXPECT_LT(begin, end);
        ++runs;
        for (int64_t i = begin; i < end; ++i) ++hits[size_t(i)];
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "n " << n << ", element " << i;
      // At most `threads` runs, and none shorter than the chunk: below two chunks, one run.
      EXPECT_LE(runs.load(), threads);
      if (n < 2000) {
        EXPECT_LE(runs.load(), 1);
      }
    }
  }
}

TEST(ParamInit, ParallelRangesRethrowAWorkersError) {
  EXPECT_THROW(parallel_ranges(8000, 4, 1000,
                               [](int64_t begin, int64_t) {
                                 if (begin > 0) throw std::runtime_error("worker failed");
                               }),
               std::runtime_error);
}

}  // namespace
}  // namespace zt::model
