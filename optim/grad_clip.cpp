// Global gradient-norm clipping: a thread-count-independent fp64 sum of squares, and the scale.
#include "optim/grad_clip.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/error.h"

namespace zt::optim {
namespace {

// The sum is cut into blocks of kBlock elements at fixed offsets; each block's partial sum is
// computed by one thread, and the partials are added in block order on one thread. The result is
// therefore the same bits whatever the thread count (OpenMP's own reduction clause combines in an
// unspecified order).
constexpr int64_t kBlock = 4096;
// Inside a block, element i goes to accumulator i % kLanes: independent chains the compiler can
// vectorise, still in a fixed order, combined in a fixed order at the end of the block.
constexpr int64_t kLanes = 8;

template <DType kDtype>
double block_sum_of_squares(const void* data, int64_t begin, int64_t end) {
  double lanes[kLanes] = {};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) {
      const double x = load_as_double(data, kDtype, size_t(i + j));
      lanes[j] += x * x;
    }
  }
  for (int64_t j = 0; i < end; ++i, ++j) {  // only the last block of the range has a tail
    const double x = load_as_double(data, kDtype, size_t(i));
    lanes[j] += x * x;
  }
  // Pairwise: (0+4)+(2+6) + (1+5)+(3+7).
  for (int64_t width = kLanes / 2; width >= 1; width /= 2) {
    for (int64_t j = 0; j < width; ++j) lanes[j] += lanes[j + width];
  }
  return lanes[0];
}

template <DType kDtype>
double sum_of_squares_blocks(const void* data, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(size_t(blocks), 0.0);
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    partial[size_t(b)] =
        block_sum_of_squares<kDtype>(data, b * kBlock, std::min(n, (b + 1) * kBlock));
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace

double sum_of_squares_cpu(const void* data, DType dtype, int64_t n) {
  ZT_CHECK(n >= 0, "sum_of_squares_cpu: element count must be >= 0, got ", n);
  if (n == 0) return 0.0;
  ZT_CHECK(data != nullptr, "sum_of_squares_cpu: null buffer for ", n, " elements");
  switch (dtype) {
    case DType::kF32: return sum_of_squares_blocks<DType::kF32>(data, n);
    case DType::kBF16: return sum_of_squares_blocks<DType::kBF16>(data, n);
    case DType::kF16: return sum_of_squares_blocks<DType::kF16>(data, n);
    case DType::kF64: return sum_of_squares_blocks<DType::kF64>(data, n);
  }
  ZT_FAIL("sum_of_squares_cpu: unknown dtype ", int(dtype));
}

double clip_coefficient(double norm, double max_norm) {
  // Written so that a NaN max_norm also gives 1 (no comparison with NaN is true).
  if (!std::isfinite(norm) || !(max_norm > 0.0) || !(norm > max_norm)) return 1.0;
  // + 1e-6 as PyTorch's clip_grad_norm_ does, so the clipped norm lands just under max_norm.
  return max_norm / (norm + 1e-6);
}

}  // namespace zt::optim
