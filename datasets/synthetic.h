// The built-in synthetic corpus: a deterministic Markov chain over the model's vocabulary, so a
// model can learn something real (its loss falls from ln(vocab) toward the chain's entropy rate)
// with no download and no files.
#pragma once

#include <cstdint>

namespace zt::datasets {

// Each token a has kSuccessors possible next tokens, picked from a hash of (seed, a), followed
// with fixed probabilities kSuccessorProbs. Sample i is a walk of the chain from a start token
// drawn from (seed, i): any sample can be produced on its own, by any rank, in any order.
class SyntheticCorpus {
 public:
  static constexpr int kSuccessors = 4;
  static constexpr double kSuccessorProbs[kSuccessors] = {0.6, 0.2, 0.15, 0.05};

  SyntheticCorpus(int64_t vocab_size, uint64_t seed);

  int64_t vocab_size() const { return vocab_size_; }
  // Writes `length` tokens of sample `index` to out.
  void sample(uint64_t index, int64_t length, int32_t* out) const;
  // The successor of token `a` chosen by the uniform number u in [0, 1).
  int32_t next_token(int32_t a, double u) const;
  // Nats per token of the best possible predictor (the chain's conditional entropy, averaged
  // uniformly over tokens), about 1.06 when the successors of every token are distinct: roughly
  // the floor the training loss approaches.
  double entropy_rate() const;

 private:
  int32_t successor(int32_t a, int slot) const;

  int64_t vocab_size_;
  uint64_t seed_;
};

}  // namespace zt::datasets
