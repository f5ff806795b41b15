// The order in which training samples are visited: a deterministic shuffle per epoch, the split
// of each step's global batch across data-parallel ranks, and the sampler state that makes a
// resumed run consume exactly the samples the uninterrupted run would have.
//
// Note "sample order": training consumes a single global sequence of samples. Global position p
// (0, 1, 2, ...) is sample P_e(p mod S) with S samples per epoch (note "sample packing" in
// token_dataset.h), epoch e = p / S, and P_e a pseudo-random permutation of [0, S) keyed by
// (seed, e): a Feistel network with cycle walking, so no O(S) index array is kept and any
// position is computed on its own. Optimizer step k (1-based) consumes the global positions
// [(k-1) G, k G) with G = world * grad_accum_steps * micro_batch_size; micro-batch m of rank r
// takes rows [(m * world + r) b, (m * world + r + 1) b) of them, exactly as the trainer indexes
// the synthetic corpus, so the same global batch is produced whatever the world size and
// accumulation split. The state after k steps is {seed, position = k G}: nothing else is needed
// to continue the sequence.
#pragma once

#include <cstdint>

namespace zt::datasets {

// A bijection of [0, n) keyed by `key`.
class Permutation {
 public:
  Permutation(int64_t n, uint64_t key);
  int64_t operator()(int64_t i) const;
  int64_t size() const { return n_; }

 private:
  uint64_t feistel(uint64_t x) const;
  int64_t n_;
  uint64_t key_;
  int half_bits_ = 0;
};

// Everything needed to continue a sample sequence; part of the training state (checkpoints).
struct SamplerState {
  uint64_t seed = 0;
  int64_t epoch = 0;        // = position / num_samples (kept for readability and checks)
  int64_t position = 0;     // global samples consumed so far, over all epochs and ranks
  int64_t num_samples = 0;  // samples per epoch when the state was taken (a changed dataset shows)
  bool operator==(const SamplerState&) const = default;
};

// Not thread-safe (it caches the current epoch's permutation): one thread per Sampler.
class Sampler {
 public:
  Sampler(int64_t num_samples, uint64_t seed);
  int64_t num_samples() const { return num_samples_; }
  uint64_t seed() const { return seed_; }
  // The sample index at global position `position` (note "sample order").
  int64_t sample_at(int64_t position) const;
  SamplerState state_at(int64_t position) const;

 private:
  int64_t num_samples_;
  uint64_t seed_;
  // The permutation of the epoch last asked for (positions are mostly asked in order).
  mutable int64_t cached_epoch_ = -1;
  mutable Permutation cached_{1, 0};
};

// Which global positions a rank reads (note "sample order").
struct BatchLayout {
  int64_t micro_batch_size = 1;
  int64_t grad_accum_steps = 1;
  int64_t world = 1;
  int64_t rank = 0;
  int64_t global_batch() const { return micro_batch_size * grad_accum_steps * world; }
  // Global position of row `row` of micro-batch `micro` of the step that starts at `step_start`.
  int64_t position(int64_t step_start, int64_t micro, int64_t row) const {
    return step_start + (micro * world + rank) * micro_batch_size + row;
  }
};

}  // namespace zt::datasets
