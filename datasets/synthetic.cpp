// The synthetic Markov-chain corpus.
#include "datasets/synthetic.h"

#include <cmath>

#include "runtime/error.h"
#include "runtime/rng.h"

namespace zt::datasets {

namespace {
constexpr uint64_t kSuccessorStream = 0x5ecc;  // streams of the counter-based RNG (rng.h)
constexpr uint64_t kWalkStream = 0x3a1c;
}  // namespace

SyntheticCorpus::SyntheticCorpus(int64_t vocab_size, uint64_t seed)
    : vocab_size_(vocab_size), seed_(seed) {
  ZT_CHECK(vocab_size >= 2, "the synthetic corpus needs a vocabulary of at least 2 tokens, got ",
           vocab_size);
}

int32_t SyntheticCorpus::next_token(int32_t a, double u) const {
  int slot = kSuccessors - 1;
  double cumulative = 0.0;
  for (int j = 0; j < kSuccessors; ++j) {
    cumulative += kSuccessorProbs[j];
    if (u < cumulative) {
      slot = j;
      break;
    }
  }
  return successor(a, slot);
}

int32_t SyntheticCorpus::successor(int32_t a, int slot) const {
  const uint64_t bits = random_bits(seed_, kSuccessorStream, uint64_t(a) * kSuccessors + uint64_t(slot));
  return int32_t(bits % uint64_t(vocab_size_));
}

void SyntheticCorpus::sample(uint64_t index, int64_t length, int32_t* out) const {
  if (length <= 0) return;
  const uint64_t stream = kWalkStream ^ (index * 0x9e3779b97f4a7c15ull);
  int32_t token = int32_t(random_bits(seed_, stream, 0) % uint64_t(vocab_size_));
  out[0] = token;
  for (int64_t t = 1; t < length; ++t) {
    token = next_token(token, random_uniform(seed_, stream, uint64_t(t)));
    out[t] = token;
  }
}

double SyntheticCorpus::entropy_rate() const {
  // Average over tokens (uniformly: an approximation of the stationary average) of the entropy
  // of the next-token distribution; two slots of one token may hash to the same successor, which
  // merges their probability.
  double total = 0.0;
  for (int64_t a = 0; a < vocab_size_; ++a) {
    int32_t succ[kSuccessors];
    double prob[kSuccessors];
    int distinct = 0;
    for (int j = 0; j < kSuccessors; ++j) {
      const int32_t s = successor(int32_t(a), j);
      int k = 0;
      while (k < distinct && succ[k] != s) ++k;
      if (k == distinct) {
        succ[distinct] = s;
        prob[distinct++] = 0.0;
      }
      prob[k] += kSuccessorProbs[j];
    }
    for (int k = 0; k < distinct; ++k) total -= prob[k] * std::log(prob[k]);
  }
  return total / double(vocab_size_);
}

}  // namespace zt::datasets
