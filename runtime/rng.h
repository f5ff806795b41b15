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
