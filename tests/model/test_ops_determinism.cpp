// Determinism of the CPU ops: every op that runs in parallel gives the same bits with 1, 2 and
// 3 OpenMP threads and on a repeated run (static partitioning, no atomics; ops_cpu.h).
#include <gtest/gtest.h>
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "model/ops_cpu.h"
#include "tests/model/gradcheck.h"
#include "tests/support/thread_count.h"

namespace zt::model::cpu {
namespace {

using Outputs = std::vector<std::vector<float>>;

std::vector<float> random_floats(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  return testing::to_float(testing::random_values(n, seed, lo, hi));
}

// Runs `run` with 1, 2 and 3 threads and twice with 2, and expects identical bits every time.
// Sizes in the callers are above the ops' parallel thresholds, so the threads really split work.
void expect_thread_count_independent(const char* name, const std::function<Outputs()>& run) {
  const Outputs reference = [&] {
    zt::testing::ThreadCount one(1);
    return run();
  }();
  for (int threads : {2, 3, 2}) {
    zt::testing::ThreadCount scoped(threads);
    const Outputs got = run();
    ASSERT_EQ(got.size(), reference.size());
    for (size_t o = 0; o < got.size(); ++o) {
      ASSERT_EQ(got[o].size(), reference[o].size());
      EXPECT_EQ(std::memcmp(got[o].data(), reference[o].data(), got[o].size() * sizeof(float)), 0)
          << name << ": output " << o << " differs with " << threads << " threads";
    }
  }
}

TEST(OpsDeterminism, GemmAllTransCombinations) {
  const int64_t m = 300, n = 270, k = 520;  // two K blocks, partial tiles
  const auto a = random_floats(size_t(m * k), 1), b = random_floats(size_t(k * n), 2);
  const auto c0 = random_floats(size_t(m * n), 3);
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      expect_thread_count_independent("gemm", [&] {
        std::vector<float> c = c0;
        gemm<float>(ta == 1, tb == 1, m, n, k, 0.5f, a.data(), ta ? m : k, b.data(), tb ? k : n,
                    1.5f, c.data(), n);
        return Outputs{c};
      });
    }
  }
}

TEST(OpsDeterminism, LinearBackward) {
  const int64_t n = 67, in = 259, out = 131;
  const auto x = random_floats(size_t(n * in), 1), w = random_floats(size_t(out * in), 2);
  const auto dy = random_floats(size_t(n * out), 3);
  const auto dw0 = random_floats(size_t(out * in), 4), db0 = random_floats(size_t(out), 5);
  expect_thread_count_independent("linear_backward", [&] {
    std::vector<float> dx(size_t(n * in)), dw = dw0, db = db0;
    linear_backward<float>(dy.data(), x.data(), w.data(), dx.data(), dw.data(), db.data(), n, in,
                           out, false);
    return Outputs{dx, dw, db};
  });
}

TEST(OpsDeterminism, EmbeddingBackward) {
  const int64_t n = 300, d = 260, vocab = 50;
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = int32_t((i * 7) % vocab);  // many repeats
  const auto dout = random_floats(size_t(n * d), 1);
  const auto dwte0 = random_floats(size_t(vocab * d), 2);
  expect_thread_count_independent("embedding_backward", [&] {
    std::vector<float> dwte = dwte0;
    embedding_backward<float>(ids.data(), dout.data(), dwte.data(), n, d, vocab);
    return Outputs{dwte};
  });
}

TEST(OpsDeterminism, LayerNormBackward) {
  const int64_t n = 64, d = 300;
  const auto x = random_floats(size_t(n * d), 1), w = random_floats(size_t(d), 2);
  const auto b = random_floats(size_t(d), 3), dy = random_floats(size_t(n * d), 4);
  std::vector<float> y(size_t(n * d)), mean(static_cast<size_t>(n)), rstd(static_cast<size_t>(n));
  layernorm_forward<float>(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), n, d,
                           1e-5);
  const auto dx0 = random_floats(size_t(n * d), 5);
  expect_thread_count_independent("layernorm_backward", [&] {
    std::vector<float> dx = dx0, dw(size_t(d), 0.0f), db(size_t(d), 0.0f);
    layernorm_backward<float>(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                              dw.data(), db.data(), n, d);
    return Outputs{dx, dw, db};
  });
}

TEST(OpsDeterminism, AttentionForwardBackwardAndRotary) {
  const int64_t batch = 2, seq = 33, heads = 3, head_dim = 16, rotary_dim = 8;
  const size_t act = size_t(batch * seq * heads * head_dim);
  const auto q = random_floats(act, 1), k = random_floats(act, 2), v = random_floats(act, 3);
  const auto dout = random_floats(act, 4);
  expect_thread_count_independent("attention", [&] {
    std::vector<float> qr = q, kr = k;
    rotary_forward<float>(qr.data(), batch, seq, heads, head_dim, rotary_dim);
    rotary_forward<float>(kr.data(), batch, seq, heads, head_dim, rotary_dim);
    std::vector<float> out(act), probs(size_t(batch * heads * seq * seq));
    attention_forward<float>(qr.data(), kr.data(), v.data(), out.data(), probs.data(), batch, seq,
                             heads, head_dim);
    std::vector<float> dq(act), dk(act), dv(act);
    attention_backward<float>(dout.data(), qr.data(), kr.data(), v.data(), probs.data(), dq.data(),
                              dk.data(), dv.data(), batch, seq, heads, head_dim);
    rotary_backward<float>(dq.data(), batch, seq, heads, head_dim, rotary_dim);
    rotary_backward<float>(dk.data(), batch, seq, heads, head_dim, rotary_dim);
    return Outputs{out, probs, dq, dk, dv};
  });
}

TEST(OpsDeterminism, GeluAndCrossEntropy) {
  const int64_t n = 40, v = 1000;
  const auto x = random_floats(size_t(n * v), 1, -4.0, 4.0), dy = random_floats(size_t(n * v), 2);
  std::vector<int32_t> targets(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    targets[size_t(i)] = i % 5 == 0 ? kIgnoreIndex : int32_t(i * 37 % v);
  expect_thread_count_independent("gelu_cross_entropy", [&] {
    std::vector<float> y(x.size()), dx(x.size()), dlogits(x.size());
    gelu_forward<float>(x.data(), y.data(), n * v);
    gelu_backward<float>(x.data(), dy.data(), dx.data(), n * v);
    int64_t count = 0;
    const double loss = cross_entropy_forward<float>(x.data(), targets.data(), n, v, &count);
    cross_entropy_backward<float>(x.data(), targets.data(), dlogits.data(), n, v, 1.0 / 32.0);
    const double loss_bits[1] = {loss};
    std::vector<float> loss_as_floats(2);
    std::memcpy(loss_as_floats.data(), loss_bits, sizeof(double));
    return Outputs{y, dx, dlogits, loss_as_floats};
  });
}

}  // namespace
}  // namespace zt::model::cpu
