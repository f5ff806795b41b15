// Tests of embedding_forward/backward: the lookup, the scatter-add gradient with repeated ids
// (finite differences, added into a pre-filled dwte), float against double, and id checking.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "model/ops_cpu.h"
#include "runtime/error.h"
#include "tests/model/gradcheck.h"

namespace zt::model::cpu {
namespace {

using testing::dot;
using testing::expect_gradient;
using testing::random_values;

constexpr int64_t kVocab = 6, kD = 5;
// Id 2 repeats, id 5 is the last row, ids 1 and 4 never appear (their gradient stays put).
const std::vector<int32_t> kIds = {2, 0, 5, 2, 3, 2, 0};
const int64_t kN = int64_t(kIds.size());

TEST(OpsEmbedding, ForwardCopiesRowsInFloatAndDouble) {
  const auto wte = testing::random_float_values(kVocab * kD, 1);
  std::vector<double> out(kN * kD);
  embedding_forward<double>(kIds.data(), wte.data(), out.data(), kN, kD, kVocab);
  const auto wte_f = testing::to_float(wte);
  std::vector<float> out_f(kN * kD);
  embedding_forward<float>(kIds.data(), wte_f.data(), out_f.data(), kN, kD, kVocab);
  for (int64_t i = 0; i < kN; ++i) {
    for (int64_t j = 0; j < kD; ++j) {
      EXPECT_EQ(out[i * kD + j], wte[kIds[size_t(i)] * kD + j]);
      // A copy: float and double agree exactly (the inputs are floats).
      EXPECT_EQ(double(out_f[i * kD + j]), out[i * kD + j]);
    }
  }
}

TEST(OpsEmbedding, BackwardMatchesFiniteDifferencesAndAccumulates) {
  auto wte = random_values(kVocab * kD, 2);
  const auto dout = random_values(kN * kD, 3);  // L = sum(dout * out)
  auto loss = [&] {
    std::vector<double> out(kN * kD);
    embedding_forward<double>(kIds.data(), wte.data(), out.data(), kN, kD, kVocab);
    return dot(dout, out);
  };
  const auto dwte0 = random_values(kVocab * kD, 4);
  auto dwte = dwte0;
  embedding_backward<double>(kIds.data(), dout.data(), dwte.data(), kN, kD, kVocab);
  std::vector<double> grad(dwte.size());
  for (size_t i = 0; i < grad.size(); ++i) grad[i] = dwte[i] - dwte0[i];
  expect_gradient("dwte", wte, grad, loss);
  // Rows of ids that never occur are left exactly as they were.
  for (int64_t j = 0; j < kD; ++j) {
    EXPECT_EQ(dwte[1 * kD + j], dwte0[1 * kD + j]);
    EXPECT_EQ(dwte[4 * kD + j], dwte0[4 * kD + j]);
  }
}

TEST(OpsEmbedding, OutOfRangeIdThrowsNamingIdPositionAndVocab) {
  const std::vector<int32_t> ids = {1, 3, 6, 0};
  std::vector<double> wte(kVocab * kD, 0.0), out(4 * kD, 0.0);
  try {
    embedding_forward<double>(ids.data(), wte.data(), out.data(), 4, kD, kVocab);
    FAIL() << "expected zt::Error";
  } catch (const zt::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("token id 6 at position 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[0, 6)"), std::string::npos) << msg;  // the vocabulary size
  }
  const std::vector<int32_t> negative = {-1};
  EXPECT_THROW(embedding_forward<double>(negative.data(), wte.data(), out.data(), 1, kD, kVocab),
               zt::Error);
  EXPECT_THROW(embedding_backward<double>(ids.data(), out.data(), wte.data(), 4, kD, kVocab),
               zt::Error);
}

}  // namespace
}  // namespace zt::model::cpu
