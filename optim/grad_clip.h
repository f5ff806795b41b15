// Global gradient-norm clipping: the norm over every gradient, then one scale for all.
#pragma once

#include <cstdint>

#include "runtime/dtype.h"

namespace zt::optim {

// Sum of squares of n values of any storage dtype, accumulated in fp64 (OpenMP; the result does
// not depend on the thread count: fixed-size blocks summed in a fixed order).
double sum_of_squares_cpu(const void* data, DType dtype, int64_t n);

// The factor that brings a gradient of global norm `norm` down to `max_norm`:
// max_norm / (norm + 1e-6) when norm > max_norm, else 1. max_norm <= 0 disables clipping (1).
// A non-finite norm returns 1 (the caller decides what a non-finite gradient means).
double clip_coefficient(double norm, double max_norm);

}  // namespace zt::optim
