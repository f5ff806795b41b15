// Tests of attention_forward/backward: causality, the saved probabilities, a naive reference,
// float against double, and finite-difference gradients of q, k and v.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "model/ops_cpu.h"
#include "tests/model/gradcheck.h"

namespace zt::model::cpu {
namespace {

using testing::dot;
using testing::expect_gradient;
using testing::kFloatUnit;
using testing::random_float_values;
using testing::random_values;

struct Shape {
  int64_t batch, seq, heads, head_dim;
  size_t act() const { return size_t(batch * seq * heads * head_dim); }
  size_t probs() const { return size_t(batch * heads * seq * seq); }
  size_t at(int64_t b, int64_t t, int64_t h) const {
    return size_t(((b * seq + t) * heads + h) * head_dim);
  }
};

TEST(OpsAttention, ProbsAreCausalRowsThatSumToOneAndMatchNaive) {
  const Shape s{2, 7, 3, 5};
  const auto q = random_values(s.act(), 1, -2.0, 2.0);
  const auto k = random_values(s.act(), 2, -2.0, 2.0);
  const auto v = random_values(s.act(), 3);
  std::vector<double> out(s.act()), probs(s.probs(), std::numeric_limits<double>::quiet_NaN());
  attention_forward<double>(q.data(), k.data(), v.data(), out.data(), probs.data(), s.batch, s.seq,
                            s.heads, s.head_dim);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < s.heads; ++h) {
      for (int64_t t = 0; t < s.seq; ++t) {
        const double* p = probs.data() + ((b * s.heads + h) * s.seq + t) * s.seq;
        // Naive softmax of the scaled scores over j <= t.
        std::vector<double> ref(size_t(t + 1));
        double m = -INFINITY, sum = 0.0, row_sum = 0.0;
        for (int64_t j = 0; j <= t; ++j) {
          double sc = 0.0;
          for (int64_t i = 0; i < s.head_dim; ++i)
            sc += q[s.at(b, t, h) + i] * k[s.at(b, j, h) + i];
          ref[size_t(j)] = sc / std::sqrt(double(s.head_dim));
          m = std::max(m, ref[size_t(j)]);
        }
        for (double& r : ref) sum += (r = std::exp(r - m));
        for (int64_t j = 0; j < s.seq; ++j) {
          if (j > t) {
            EXPECT_EQ(p[j], 0.0);  // exactly zero above the diagonal
            continue;
          }
          row_sum += p[j];
          EXPECT_NEAR(p[j], ref[size_t(j)] / sum, 1e-14);
        }
        // A sum of at most 7 probabilities, each within an ulp or two: 1e-14 is ample.
        EXPECT_NEAR(row_sum, 1.0, 1e-14);
        for (int64_t i = 0; i < s.head_dim; ++i) {
          double o = 0.0;
          for (int64_t j = 0; j <= t; ++j) o += ref[size_t(j)] / sum * v[s.at(b, j, h) + i];
          EXPECT_NEAR(out[s.at(b, t, h) + i], o, 1e-14);
        }
      }
    }
  }
}

TEST(OpsAttention, OutputAtPositionIgnoresLaterPositions) {
  const Shape s{1, 6, 2, 4};
  auto q = random_values(s.act(), 11), k = random_values(s.act(), 12),
       v = random_values(s.act(), 13);
  std::vector<double> out(s.act()), probs(s.probs());
  attention_forward<double>(q.data(), k.data(), v.data(), out.data(), probs.data(), s.batch, s.seq,
                            s.heads, s.head_dim);
  for (int64_t t = 0; t + 1 < s.seq; ++t) {
    // Change every input at positions > t; outputs at positions <= t must not move a bit.
    auto q2 = q, k2 = k, v2 = v;
    const auto noise = random_values(s.act(), 100 + uint64_t(t), -3.0, 3.0);
    for (size_t i = s.at(0, t + 1, 0); i < s.act(); ++i) {
      q2[i] += noise[i];
      k2[i] -= noise[i];
      v2[i] *= noise[i];
    }
    std::vector<double> out2(s.act()), probs2(s.probs());
    attention_forward<double>(q2.data(), k2.data(), v2.data(), out2.data(), probs2.data(), s.batch,
                              s.seq, s.heads, s.head_dim);
    for (size_t i = 0; i < s.at(0, t + 1, 0); ++i) EXPECT_EQ(out2[i], out[i]) << "t=" << t;
    bool later_changed = false;
    for (size_t i = s.at(0, t + 1, 0); i < s.act(); ++i) later_changed |= out2[i] != out[i];
    EXPECT_TRUE(later_changed);
  }
}

TEST(OpsAttention, FloatForwardAgreesWithDouble) {
  const Shape s{2, 7, 3, 8};
  const auto q = random_float_values(s.act(), 21), k = random_float_values(s.act(), 22);
  const auto v = random_float_values(s.act(), 23);
  std::vector<double> out(s.act()), probs(s.probs());
  attention_forward<double>(q.data(), k.data(), v.data(), out.data(), probs.data(), s.batch, s.seq,
                            s.heads, s.head_dim);
  const auto qf = testing::to_float(q), kf = testing::to_float(k), vf = testing::to_float(v);
  std::vector<float> outf(s.act()), probsf(s.probs());
  attention_forward<float>(qf.data(), kf.data(), vf.data(), outf.data(), probsf.data(), s.batch,
                           s.seq, s.heads, s.head_dim);
  // fp32 error budget with |q|, |k|, |v| <= 1: a score is a Dh-term dot product divided by
  // sqrt(Dh), off by <= (Dh + 2) u sqrt(Dh) in absolute terms; exp turns twice that (the score
  // and the row max) into a relative error of each unnormalised probability, plus u for exp;
  // the normalising sum of <= T terms and the division add (T + 1) u. So a probability is
  // within p * e_p, e_p = 2 (Dh + 2) u sqrt(Dh) + (T + 3) u, and out = sum_j p_j v_j (T terms)
  // within max|v| (e_p + (T + 1) u). Twice these bounds are asserted.
  const double dh = double(s.head_dim), t = double(s.seq);
  const double e_p = 2.0 * (dh + 2.0) * kFloatUnit * std::sqrt(dh) + (t + 3.0) * kFloatUnit;
  for (size_t i = 0; i < probs.size(); ++i) {
    EXPECT_NEAR(probsf[i], probs[i], 2.0 * e_p * probs[i]) << i;
  }
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_NEAR(outf[i], out[i], 2.0 * (e_p + (t + 1.0) * kFloatUnit)) << i;
  }
}

void check_gradients(const Shape& s, uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "B=" << s.batch << " T=" << s.seq << " H=" << s.heads << " Dh=" << s.head_dim);
  auto q = random_values(s.act(), seed, -1.5, 1.5);
  auto k = random_values(s.act(), seed + 1, -1.5, 1.5);
  auto v = random_values(s.act(), seed + 2);
  const auto dout = random_values(s.act(), seed + 3);  // L = sum(dout * out)
  auto loss = [&] {
    std::vector<double> out(s.act()), probs(s.probs());
    attention_forward<double>(q.data(), k.data(), v.data(), out.data(), probs.data(), s.batch,
                              s.seq, s.heads, s.head_dim);
    return dot(dout, out);
  };
  std::vector<double> out(s.act()), probs(s.probs());
  attention_forward<double>(q.data(), k.data(), v.data(), out.data(), probs.data(), s.batch, s.seq,
                            s.heads, s.head_dim);
  // dq, dk, dv are written: NaN garbage must not survive.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> dq(s.act(), nan), dk(s.act(), nan), dv(s.act(), nan);
  attention_backward<double>(dout.data(), q.data(), k.data(), v.data(), probs.data(), dq.data(),
                             dk.data(), dv.data(), s.batch, s.seq, s.heads, s.head_dim);
  expect_gradient("dq", q, dq, loss);
  expect_gradient("dk", k, dk, loss);
  expect_gradient("dv", v, dv, loss);
}

TEST(OpsAttention, GradientsMatchFiniteDifferences) {
  check_gradients({2, 5, 2, 3}, 30);
  check_gradients({1, 1, 3, 4}, 40);
  check_gradients({1, 7, 1, 5}, 50);
}

}  // namespace
}  // namespace zt::model::cpu
