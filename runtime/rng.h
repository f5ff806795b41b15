// Counter-based random numbers: the value at (seed, stream, index) never depends on thread count,
// rank or call order, so any shard of a parameter can be initialised on its own and every rank
// agrees (the same idea as Philox in cuRAND, here with splitmix64 hashing).
#pragma once

#include <cmath>
#include <cstdint>

namespace zt {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// MurmurHash3's 64-bit finaliser: every input bit flips each output bit with probability ~1/2.
// The zt64 checksum (note "token dataset format" in datasets/token_format.h) pins its exact
// constants; the tokenizer's hash tables use it too.
inline uint64_t fmix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

// 64 random bits for (seed, stream, index).
inline uint64_t random_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ index);
}

// Uniform in (0, 1): never exactly 0 or 1.
inline double random_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return (double(random_bits(seed, stream, index) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// Standard normal by Box-Muller over two independent uniforms.
inline double random_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  const double u1 = random_uniform(seed, stream, 2 * index);
  const double u2 = random_uniform(seed, stream, 2 * index + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace zt
