// The synthetic corpus: deterministic per sample, in range, and with the entropy it claims.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "datasets/synthetic.h"

namespace zt::datasets {
namespace {

TEST(SyntheticCorpus, SamplesAreDeterministicAndIndependentOfOrder) {
  const SyntheticCorpus a(512, 9), b(512, 9), other_seed(512, 10);
  std::vector<int32_t> x(65), y(65), z(65);
  b.sample(3, 65, y.data());  // produced out of order on purpose
  a.sample(1, 65, x.data());
  a.sample(3, 65, x.data());
  EXPECT_EQ(x, y);
  other_seed.sample(3, 65, z.data());
  EXPECT_NE(x, z);
  for (int32_t t : x) {
    EXPECT_GE(t, 0);
    EXPECT_LT(t, 512);
  }
}

TEST(SyntheticCorpus, FollowsItsTransitionProbabilities) {
  const SyntheticCorpus c(64, 1);
  // Empirical next-token frequencies after token 5 against the slot probabilities.
  std::map<int32_t, int> counts;
  int total = 0;
  std::vector<int32_t> s(257);
  for (uint64_t i = 0; i < 4000; ++i) {
    c.sample(i, 257, s.data());
    for (size_t t = 0; t + 1 < s.size(); ++t)
      if (s[t] == 5) ++counts[s[t + 1]], ++total;
  }
  ASSERT_GT(total, 5000);
  std::map<int32_t, double> expect;
  const double u_mid[] = {0.3, 0.7, 0.875, 0.975};  // a point inside each slot's interval
  for (int j = 0; j < SyntheticCorpus::kSuccessors; ++j)
    expect[c.next_token(5, u_mid[j])] += SyntheticCorpus::kSuccessorProbs[j];
  for (const auto& [token, n] : counts) {
    ASSERT_TRUE(expect.count(token)) << "token " << token << " never follows 5 by construction";
    // Binomial standard error at p >= 0.05 and total > 5000 is < 0.007; 0.03 is > 4 sigma.
    EXPECT_NEAR(double(n) / total, expect[token], 0.03) << "successor " << token;
  }
}

TEST(SyntheticCorpus, EntropyRateIsThatOfTheSlotProbabilities) {
  const double h = -(0.6 * std::log(0.6) + 0.2 * std::log(0.2) + 0.15 * std::log(0.15) +
                     0.05 * std::log(0.05));
  const SyntheticCorpus c(50400, 3);
  // With 50400 tokens, successor collisions are rare (~4 of 6 pairs in 50400): within 0.1%.
  EXPECT_NEAR(c.entropy_rate(), h, 1e-3 * h);
  // A tiny vocabulary merges colliding successors and can only lower the entropy.
  EXPECT_LE(SyntheticCorpus(4, 3).entropy_rate(), h);
}

}  // namespace
}  // namespace zt::datasets
