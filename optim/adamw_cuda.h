// The fused AdamW and the gradient sum of squares on the GPU: twins of adamw_step_cpu and
// sum_of_squares_cpu (optim/adamw.h, optim/grad_clip.h).
#pragma once

#include <cstdint>

#include "optim/adamw.h"
#include "runtime/cuda/context.h"
#include "runtime/dtype.h"

namespace zt::optim {

// adamw_step_cpu on device pointers, queued on ctx.stream(): one kernel reads the gradient (any
// dtype), updates the fp32 master and moments in place and, when param16 != nullptr, writes the
// rounded 16-bit parameters. Same per-element fp32 operations in the same order as the CPU
// reference (no fused multiply-adds), so results agree with it bit for bit.
void adamw_step_cuda(const CudaContext& ctx, float* param, float* m, float* v, const void* grad,
                     DType grad_dtype, int64_t n, const AdamWStep& hp, void* param16 = nullptr,
                     DType param16_dtype = DType::kBF16);

// *out += the sum of squares of data[0..n) (any dtype), accumulated in fp64 in a fixed order (the
// result does not depend on the launch configuration's scheduling), queued on ctx.stream().
// `out` is a device double; the caller reads it when it needs the value. A non-finite element
// makes the sum non-finite.
void sum_of_squares_cuda(const CudaContext& ctx, const void* data, DType dtype, int64_t n,
                         double* out);

}  // namespace zt::optim
