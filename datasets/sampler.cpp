// The per-epoch sample permutation (Feistel network with cycle walking) and the sampler.
#include "datasets/sampler.h"

#include "runtime/error.h"
#include "runtime/rng.h"

namespace zt::datasets {

namespace {
constexpr uint64_t kEpochStream = 0x5a3b1e;  // stream of the counter-based RNG (rng.h)
constexpr int kRounds = 6;
}  // namespace

Permutation::Permutation(int64_t n, uint64_t key) : n_(n), key_(key) {
  ZT_CHECK(n >= 1, "a permutation needs at least one element, got ", n);
  // The smallest square domain 2^(2h) >= n: at most 4n, so cycle walking takes < 4 rounds on
  // average.
  int bits = 0;
  while ((int64_t(1) << bits) < n) ++bits;
  half_bits_ = (bits + 1) / 2;
}

uint64_t Permutation::feistel(uint64_t x) const {
  const uint64_t mask = (uint64_t(1) << half_bits_) - 1;
  uint64_t left = x >> half_bits_, right = x & mask;
  for (int round = 0; round < kRounds; ++round) {
    const uint64_t f = random_bits(key_, uint64_t(round), right) & mask;
    const uint64_t next = left ^ f;
    left = right;
    right = next;
  }
  return (left << half_bits_) | right;
}

int64_t Permutation::operator()(int64_t i) const {
  ZT_CHECK(i >= 0 && i < n_, "index ", i, " outside [0, ", n_, ")");
  if (n_ == 1) return 0;
  // Cycle walking: apply the bijection of the larger domain until the value falls in [0, n);
  // this is a bijection of [0, n) because the walk from each start stays on its own cycle.
  uint64_t x = uint64_t(i);
  do {
    x = feistel(x);
  } while (x >= uint64_t(n_));
  return int64_t(x);
}

Sampler::Sampler(int64_t num_samples, uint64_t seed) : num_samples_(num_samples), seed_(seed) {
  ZT_CHECK(num_samples >= 1, "a sampler needs at least one sample");
}

int64_t Sampler::sample_at(int64_t position) const {
  ZT_CHECK(position >= 0, "negative sample position ", position);
  const int64_t epoch = position / num_samples_;
  if (epoch != cached_epoch_) {
    cached_ = Permutation(num_samples_, random_bits(seed_, kEpochStream, uint64_t(epoch)));
    cached_epoch_ = epoch;
  }
  return cached_(position % num_samples_);
}

SamplerState Sampler::state_at(int64_t position) const {
  return SamplerState{seed_, position / num_samples_, position, num_samples_};
}

}  // namespace zt::datasets
