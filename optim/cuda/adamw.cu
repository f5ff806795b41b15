// The fused AdamW kernel and the deterministic fp64 sum of squares on the GPU (optim/adamw_cuda.h).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "optim/adamw_cuda.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/device.h"
#include "runtime/memory.h"

namespace zt::optim {
namespace {

// ---------------------------------------------------------------------------------------------
// Storage access shared by both kernels.
//
// Vector accesses are 16 bytes (one float4 / uint4 / double2): the widest load sm_90 issues, and
// enough bytes in flight per thread for a streaming kernel to reach HBM bandwidth. A "pack" is
// kPack consecutive elements: 16 bytes of a 16-bit dtype, 32 of fp32, 64 of fp64, so a pack that
// starts 16-byte aligned is made of whole 16-byte vectors for every dtype.
constexpr int kPack = 8;

inline bool is_aligned_16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// The low and high 16-bit halves of a 32-bit word of a packed 16-bit vector (little endian).
__device__ __forceinline__ uint16_t half_word(const uint4& w, int j) {
  const uint32_t word = j < 2 ? w.x : j < 4 ? w.y : j < 6 ? w.z : w.w;
  return uint16_t((j & 1) != 0 ? word >> 16 : word & 0xffffu);
}

// fp16 <-> fp32 by the hardware's conversions: one instruction each, exact (fp16 -> fp32) or
// rounded to nearest even with subnormal results and overflow to inf (fp32 -> fp16), which is
// what dtype.h's f16_to_float / float_to_f16 compute in a dozen integer operations and a branch
// per element. Those made the fp16 sum of squares compute-bound: 0.85 against bf16's 0.48 ms
// per step for 2 layers of GPT-J-6B (Nsight Compute, H200). A NaN keeps dtype.h's path, so its
// sign and payload are the CPU's.
__device__ __forceinline__ float f16_bits_to_float(uint16_t bits) {
  if ((bits & 0x7fffu) > 0x7c00u) return f16_to_float(f16{bits});
  return __half2float(__ushort_as_half(bits));
}
__device__ __forceinline__ uint16_t float_to_f16_bits(float f) {
  if (isnan(f)) return float_to_f16(f).bits;
  return __half_as_ushort(__float2half_rn(f));
}

// Element i of a buffer of dtype kDtype as fp32, exactly as the CPU reference's
// float(load_as_double(...)): exact for fp32/bf16/fp16, round to nearest for fp64.
template <DType kDtype>
__device__ __forceinline__ float load_float(const void* p, int64_t i) {
  if constexpr (kDtype == DType::kF32) {
    return static_cast<const float*>(p)[i];
  } else if constexpr (kDtype == DType::kBF16) {
    return bf16_to_float(static_cast<const bf16*>(p)[i]);
  } else if constexpr (kDtype == DType::kF16) {
    return f16_bits_to_float(static_cast<const f16*>(p)[i].bits);
  } else {
    return __double2float_rn(static_cast<const double*>(p)[i]);
  }
}

// Elements [i, i + kPack) as fp32, through 16-byte loads; the caller guarantees the alignment.
// __ldcs (evict first): every byte is read once per step, caching it would only push out data
// other streams (NCCL, the model) will reuse.
template <DType kDtype>
__device__ __forceinline__ void load_pack_float(const void* p, int64_t i, float (&out)[kPack]) {
  if constexpr (kDtype == DType::kF32) {
    const float4* q = reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
    const float4 a = __ldcs(q);
    const float4 b = __ldcs(q + 1);
    out[0] = a.x;
    out[1] = a.y;
    out[2] = a.z;
    out[3] = a.w;
    out[4] = b.x;
    out[5] = b.y;
    out[6] = b.z;
    out[7] = b.w;
  } else if constexpr (kDtype == DType::kBF16 || kDtype == DType::kF16) {
    const uint4 w = __ldcs(reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(p) + i));
#pragma unroll
    for (int j = 0; j < kPack; ++j) {
      if constexpr (kDtype == DType::kBF16) {
        out[j] = bf16_to_float(bf16{half_word(w, j)});
      } else {
        out[j] = f16_bits_to_float(half_word(w, j));
      }
    }
  } else {
    const double2* q = reinterpret_cast<const double2*>(static_cast<const double*>(p) + i);
#pragma unroll
    for (int j = 0; j < kPack / 2; ++j) {
      const double2 d = __ldcs(q + j);
      out[2 * j] = __double2float_rn(d.x);
      out[2 * j + 1] = __double2float_rn(d.y);
    }
  }
}

// Element i of a buffer of dtype kDtype as fp64 (exact for every dtype).
template <DType kDtype>
__device__ __forceinline__ double load_double(const void* p, int64_t i) {
  if constexpr (kDtype == DType::kF64) {
    return static_cast<const double*>(p)[i];
  } else {
    return double(load_float<kDtype>(p, i));  // exact: fp32/bf16/fp16 -> fp32 is exact
  }
}

template <DType kDtype>
__device__ __forceinline__ void load_pack_double(const void* p, int64_t i, double (&out)[kPack]) {
  if constexpr (kDtype == DType::kF64) {
    const double2* q = reinterpret_cast<const double2*>(static_cast<const double*>(p) + i);
#pragma unroll
    for (int j = 0; j < kPack / 2; ++j) {
      const double2 d = __ldcs(q + j);
      out[2 * j] = d.x;
      out[2 * j + 1] = d.y;
    }
  } else {
    float f[kPack];
    load_pack_float<kDtype>(p, i, f);
#pragma unroll
    for (int j = 0; j < kPack; ++j) out[j] = double(f[j]);
  }
}

// ---------------------------------------------------------------------------------------------
// AdamW.

struct AdamWBuffers {
  float* param;
  float* m;
  float* v;
  const void* grad;
  void* param16;  // nullptr when no 16-bit copy is written
};

// One element of AdamW: the CPU reference's expression tree, operation for operation. The _rn
// intrinsics are each one IEEE round-to-nearest operation that nvcc never contracts into an FMA
// (plain a * b + c would be, by default), and __fdiv_rn / __fsqrt_rn are the correctly rounded
// division and square root the CPU's divss / sqrtss compute. With nvcc's default -ftz=false,
// subnormals are kept as on the CPU.
//   g = grad * grad_scale
//   m = beta1 m + (1 - beta1) g
//   v = beta2 v + ((1 - beta2) g) g
//   denom = sqrt(v) / sqrt(1 - beta2^step) + eps
//   p = p decay - step_size (m / denom)
__device__ __forceinline__ void update_element(float& p, float& m, float& v, float grad,
                                               const AdamWConstants& c) {
  const float g = __fmul_rn(grad, c.grad_scale);
  m = __fadd_rn(__fmul_rn(c.beta1, m), __fmul_rn(c.one_minus_beta1, g));
  v = __fadd_rn(__fmul_rn(c.beta2, v), __fmul_rn(__fmul_rn(c.one_minus_beta2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), c.bias2_sqrt), c.eps);
  p = __fsub_rn(__fmul_rn(p, c.decay), __fmul_rn(c.step_size, __fdiv_rn(m, denom)));
}

// The 16-bit copy of p: one rounding fp32 -> kParam16, as dtype.h's converters do it (the CPU's
// store_from_double(double(p)) rounds the same fp32 value with them).
template <DType kParam16>
__device__ __forceinline__ void store_param16(void* out, int64_t i, float p) {
  if constexpr (kParam16 == DType::kBF16) {
    static_cast<bf16*>(out)[i] = float_to_bf16(p);
  } else if constexpr (kParam16 == DType::kF16) {
    static_cast<f16*>(out)[i] = f16{float_to_f16_bits(p)};
  } else if constexpr (kParam16 == DType::kF32) {
    static_cast<float*>(out)[i] = p;
  } else {
    static_cast<double*>(out)[i] = double(p);
  }
}

template <DType kParam16>
__device__ __forceinline__ uint16_t bits16(float p) {
  if constexpr (kParam16 == DType::kBF16) {
    return float_to_bf16(p).bits;
  } else {
    return float_to_f16_bits(p);
  }
}

// The 16-bit copies of a whole pack, as 16-byte streaming stores (__stcs: the model reads them
// in a later phase, long after they would have left L2).
template <DType kParam16>
__device__ __forceinline__ void store_param16_pack(void* out, int64_t i, const float (&p)[kPack]) {
  if constexpr (kParam16 == DType::kBF16 || kParam16 == DType::kF16) {
    uint32_t w[kPack / 2];
#pragma unroll
    for (int j = 0; j < kPack / 2; ++j)
      w[j] =
          uint32_t(bits16<kParam16>(p[2 * j])) | (uint32_t(bits16<kParam16>(p[2 * j + 1])) << 16);
    __stcs(reinterpret_cast<uint4*>(static_cast<uint16_t*>(out) + i),
           make_uint4(w[0], w[1], w[2], w[3]));
  } else if constexpr (kParam16 == DType::kF32) {
    float4* q = reinterpret_cast<float4*>(static_cast<float*>(out) + i);
    __stcs(q, make_float4(p[0], p[1], p[2], p[3]));
    __stcs(q + 1, make_float4(p[4], p[5], p[6], p[7]));
  } else {
    double2* q = reinterpret_cast<double2*>(static_cast<double*>(out) + i);
#pragma unroll
    for (int j = 0; j < kPack / 2; ++j)
      __stcs(q + j, make_double2(double(p[2 * j]), double(p[2 * j + 1])));
  }
}

__device__ __forceinline__ void load_state_pack(const float* p, int64_t i, float (&out)[kPack]) {
  load_pack_float<DType::kF32>(p, i, out);
}

__device__ __forceinline__ void store_state_pack(float* p, int64_t i, const float (&x)[kPack]) {
  float4* q = reinterpret_cast<float4*>(p + i);
  __stcs(q, make_float4(x[0], x[1], x[2], x[3]));
  __stcs(q + 1, make_float4(x[4], x[5], x[6], x[7]));
}

template <DType kGrad, bool kWrite16, DType kParam16>
__device__ __forceinline__ void adamw_one(const AdamWBuffers& b, int64_t i,
                                          const AdamWConstants& c) {
  float p = b.param[i];
  float m = b.m[i];
  float v = b.v[i];
  update_element(p, m, v, load_float<kGrad>(b.grad, i), c);
  b.param[i] = p;
  b.m[i] = m;
  b.v[i] = v;
  if constexpr (kWrite16) store_param16<kParam16>(b.param16, i, p);
}

constexpr int kAdamWThreads = 256;

// Elements [0, head) and [head + packs * kPack, n) one at a time, the packs in between through
// 16-byte accesses (every buffer is 16-byte aligned at element `head`; the host checked). Every
// element gets the same update_element whichever path it takes, so the split (which depends on
// the pointers' alignment) never changes a result. The loops stride by the grid, which
// launch_adamw sizes to one pack per thread (see there), so each thread usually runs one pass.
template <DType kGrad, bool kWrite16, DType kParam16>
__global__ void __launch_bounds__(kAdamWThreads)
    adamw_kernel(AdamWBuffers b, int64_t n, int64_t head, int64_t packs, AdamWConstants c) {
  const int64_t first = int64_t(blockIdx.x) * kAdamWThreads + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * kAdamWThreads;
  for (int64_t i = first; i < head; i += stride) adamw_one<kGrad, kWrite16, kParam16>(b, i, c);
  for (int64_t k = first; k < packs; k += stride) {
    const int64_t i = head + k * kPack;
    float p[kPack], m[kPack], v[kPack], g[kPack];
    load_state_pack(b.param, i, p);
    load_state_pack(b.m, i, m);
    load_state_pack(b.v, i, v);
    load_pack_float<kGrad>(b.grad, i, g);
#pragma unroll
    for (int j = 0; j < kPack; ++j) update_element(p[j], m[j], v[j], g[j], c);
    store_state_pack(b.param, i, p);
    store_state_pack(b.m, i, m);
    store_state_pack(b.v, i, v);
    if constexpr (kWrite16) store_param16_pack<kParam16>(b.param16, i, p);
  }
  for (int64_t i = head + packs * kPack + first; i < n; i += stride)
    adamw_one<kGrad, kWrite16, kParam16>(b, i, c);
}

// Resident blocks per SM of a kernel at `threads` threads, asked once per kernel (the GPUs of a
// process are of one kind; a wrong guess would only change the grid size, never a result).
template <class Kernel>
int blocks_per_sm(Kernel kernel, int threads) {
  int blocks = 0;
  ZT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, 0));
  return std::max(blocks, 1);
}

int sm_count(int device) {
  int sms = 0;
  ZT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return std::max(sms, 1);
}

// The first element index h < kPack at which every buffer is 16-byte aligned, or -1 when there
// is none (the buffers' offsets disagree modulo 16 bytes): then every element takes the scalar
// path. The alignment pattern of each buffer repeats every kPack elements or fewer, so trying
// h < kPack is enough.
int64_t aligned_head(const AdamWBuffers& b, size_t grad_size, size_t param16_size) {
  for (int64_t h = 0; h < kPack; ++h) {
    const bool ok = is_aligned_16(b.param + h) && is_aligned_16(b.m + h) &&
                    is_aligned_16(b.v + h) &&
                    is_aligned_16(static_cast<const char*>(b.grad) + size_t(h) * grad_size) &&
                    (b.param16 == nullptr ||
                     is_aligned_16(static_cast<const char*>(b.param16) + size_t(h) * param16_size));
    if (ok) return h;
  }
  return -1;
}

template <DType kGrad, bool kWrite16, DType kParam16>
void launch_adamw(const CudaContext& ctx, const AdamWBuffers& b, int64_t n,
                  const AdamWConstants& c) {
  const int64_t h = aligned_head(b, dtype_size(kGrad), kWrite16 ? dtype_size(kParam16) : 0);
  const int64_t head = h < 0 ? n : std::min(h, n);
  const int64_t packs = (n - head) / kPack;
  const int64_t tail = n - head - packs * kPack;
  // One pack per thread, not one wave of resident blocks striding over n: the blocks then run in
  // index order, so the SMs' accesses at any moment fall in one narrow window of each of the
  // seven arrays, which HBM serves faster. 268M elements on an H200: 1.88 ms (4.0 TB/s, 94% of
  // a device-to-device copy) against 2.15 ms with a resident wave of 4-8 blocks per SM
  // (docs/performance.md, stop 26).
  const int64_t items = std::max({packs, head, tail});
  const int64_t blocks = std::min<int64_t>((items + kAdamWThreads - 1) / kAdamWThreads, INT32_MAX);
  adamw_kernel<kGrad, kWrite16, kParam16>
      <<<unsigned(std::max<int64_t>(blocks, 1)), kAdamWThreads, 0, ctx.stream()>>>(b, n, head,
                                                                                   packs, c);
  ZT_CUDA_CHECK(cudaGetLastError());
}

template <DType kGrad>
void dispatch_param16(const CudaContext& ctx, const AdamWBuffers& b, DType param16_dtype, int64_t n,
                      const AdamWConstants& c) {
  if (b.param16 == nullptr) return launch_adamw<kGrad, false, DType::kF32>(ctx, b, n, c);
  switch (param16_dtype) {
    case DType::kBF16: return launch_adamw<kGrad, true, DType::kBF16>(ctx, b, n, c);
    case DType::kF16: return launch_adamw<kGrad, true, DType::kF16>(ctx, b, n, c);
    case DType::kF32: return launch_adamw<kGrad, true, DType::kF32>(ctx, b, n, c);
    case DType::kF64: return launch_adamw<kGrad, true, DType::kF64>(ctx, b, n, c);
  }
  ZT_FAIL("adamw_step_cuda: unknown param16 dtype ", int(param16_dtype));
}

// ---------------------------------------------------------------------------------------------
// Sum of squares.
//
// Summation order (fixed by these constants alone: not by the grid size, the alignment of
// `data` or timing):
//   - the range is cut into chunks of kSumChunk elements at fixed offsets, one fp64 partial each;
//   - in a chunk, thread t of kSumThreads owns the packs t, t + kSumThreads, ... (kSumRounds of
//     them) and adds the squares of their elements one after the other into one fp64 accumulator
//     (fma(x, x, s): for fp32/bf16/fp16 inputs x * x is exact in fp64 anyway);
//   - the kSumThreads accumulators are added by a fixed tree: shuffles within each warp
//     (offsets 16, 8, 4, 2, 1), then the same over the 8 warp sums;
//   - one block adds the partials: thread t sums partials t, t + kSumThreads, ... in order, the
//     same tree combines them, and the total is added to *out.
// Error bound: every term passes through at most
//   d_gpu = kPack * kSumRounds (64, in-thread) + 5 + 3 (chunk tree)
//         + ceil(chunks / kSumThreads) + 5 + 3 (partials) + 1 (the add to *out)
// roundings, all of non-negative values, so |result - exact| <= d_gpu * 2^-53 * (out + exact)
// to first order (Higham, Accuracy and Stability of Numerical Algorithms, section 4.2).
// sum_of_squares_cpu's tree obeys the same kind of bound with its own depth, so the two agree
// within the sum of the two bounds.
constexpr int kSumThreads = 256;
constexpr int kSumRounds = 8;
constexpr int64_t kSumChunk = int64_t(kSumThreads) * kPack * kSumRounds;  // 16384 elements
constexpr int kWarps = kSumThreads / 32;

// The sum over the block's threads in the fixed tree above; the result is valid in thread 0.
// Every thread of the block must call it (it synchronises the block).
__device__ __forceinline__ double block_sum(double s) {
  __shared__ double warp_sums[kWarps];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_down_sync(0xffffffffu, s, offset);
  if (lane == 0) warp_sums[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < kWarps ? warp_sums[lane] : 0.0;
#pragma unroll
    for (int offset = kWarps / 2; offset > 0; offset >>= 1)
      s += __shfl_down_sync(0xffffffffu, s, offset);
  }
  // warp_sums is reused by the caller's next call: nobody may write it before warp 0 read it.
  __syncthreads();
  return s;
}

// One fp64 partial per chunk. kAligned: `data` is 16-byte aligned, so every whole pack can be
// read with vector loads (packs start at multiples of kPack elements). A pack that crosses n (the
// last one only) is read element by element; the order of the additions is the same either way.
// With accumulate (one chunk only), the partial is added to partials[0] (= the caller's *out)
// instead: the same value the final pass would add, one launch and no scratch buffer fewer.
template <DType kDtype, bool kAligned>
__global__ void __launch_bounds__(kSumThreads)
    chunk_sum_kernel(const void* data, int64_t n, int64_t chunks, double* partials,
                     bool accumulate) {
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    double s = 0.0;
#pragma unroll
    for (int r = 0; r < kSumRounds; ++r) {
      const int64_t i = chunk * kSumChunk + (int64_t(r) * kSumThreads + threadIdx.x) * kPack;
      if (kAligned && i + kPack <= n) {
        double x[kPack];
        load_pack_double<kDtype>(data, i, x);
#pragma unroll
        for (int j = 0; j < kPack; ++j) s = fma(x[j], x[j], s);
      } else {
        for (int j = 0; j < kPack && i + j < n; ++j) {
          const double x = load_double<kDtype>(data, i + j);
          s = fma(x, x, s);
        }
      }
    }
    s = block_sum(s);
    if (threadIdx.x == 0) {
      if (accumulate) {
        partials[0] = partials[0] + s;
      } else {
        partials[chunk] = s;
      }
    }
  }
}

// *out += the sum of partials[0..count), by one block in the fixed order above.
__global__ void __launch_bounds__(kSumThreads)
    final_sum_kernel(const double* partials, int64_t count, double* out) {
  // Eight loads are issued before their adds (in the same order as the plain loop), so the
  // single block waits for memory once per eight partials instead of once per partial.
  constexpr int kBatch = 8;
  double s = 0.0;
  int64_t i = threadIdx.x;
  for (; i + (kBatch - 1) * kSumThreads < count; i += kBatch * kSumThreads) {
    double x[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) x[j] = partials[i + j * kSumThreads];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) s += x[j];
  }
  for (; i < count; i += kSumThreads) s += partials[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = *out + s;
}

template <DType kDtype, bool kAligned>
void launch_chunk_sums(const CudaContext& ctx, const void* data, int64_t n, int64_t chunks,
                       double* partials, bool accumulate) {
  auto kernel = chunk_sum_kernel<kDtype, kAligned>;
  static const int per_sm = blocks_per_sm(kernel, kSumThreads);
  // One block per chunk, capped at one wave; a block then takes chunks blockIdx.x + k * grid.
  const int blocks = int(std::min<int64_t>(chunks, int64_t(sm_count(ctx.device())) * per_sm));
  kernel<<<blocks, kSumThreads, 0, ctx.stream()>>>(data, n, chunks, partials, accumulate);
  ZT_CUDA_CHECK(cudaGetLastError());
}

template <DType kDtype>
void chunk_sums(const CudaContext& ctx, const void* data, int64_t n, int64_t chunks,
                double* partials, bool accumulate) {
  if (is_aligned_16(data))
    return launch_chunk_sums<kDtype, true>(ctx, data, n, chunks, partials, accumulate);
  launch_chunk_sums<kDtype, false>(ctx, data, n, chunks, partials, accumulate);
}

void dispatch_chunk_sums(const CudaContext& ctx, const void* data, DType dtype, int64_t n,
                         int64_t chunks, double* partials, bool accumulate) {
  switch (dtype) {
    case DType::kF32: return chunk_sums<DType::kF32>(ctx, data, n, chunks, partials, accumulate);
    case DType::kBF16: return chunk_sums<DType::kBF16>(ctx, data, n, chunks, partials, accumulate);
    case DType::kF16: return chunk_sums<DType::kF16>(ctx, data, n, chunks, partials, accumulate);
    case DType::kF64: return chunk_sums<DType::kF64>(ctx, data, n, chunks, partials, accumulate);
  }
  ZT_FAIL("sum_of_squares_cuda: unknown dtype ", int(dtype));
}

// A scratch allocation from the device's stream-ordered pool, freed in stream order after the
// work queued before release() (or the destructor, when a launch threw). Accounted as a
// transient buffer so the tracker's peak sees it.
class StreamScratch {
 public:
  StreamScratch(const CudaContext& ctx, size_t bytes)
      : stream_(ctx.stream()),
        bytes_(bytes),
        tracker_(MemoryTracker::of(Device::cuda(ctx.device()))) {
    ZT_CUDA_CHECK(cudaMallocAsync(&data_, bytes_, stream_));
    tracker_.on_alloc(MemCategory::kBuffers, bytes_);
  }
  ~StreamScratch() {
    if (data_ != nullptr) {
      (void)cudaFreeAsync(data_, stream_);  // destructors never throw
      tracker_.on_free(MemCategory::kBuffers, bytes_);
    }
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;

  void* data() const { return data_; }
  void release() {
    void* p = data_;
    data_ = nullptr;
    tracker_.on_free(MemCategory::kBuffers, bytes_);
    ZT_CUDA_CHECK(cudaFreeAsync(p, stream_));
  }

 private:
  cudaStream_t stream_;
  size_t bytes_;
  MemoryTracker& tracker_;
  void* data_ = nullptr;
};

bool naturally_aligned(const void* p, size_t element_size) {
  return reinterpret_cast<uintptr_t>(p) % element_size == 0;
}

}  // namespace

void adamw_step_cuda(const CudaContext& ctx, float* param, float* m, float* v, const void* grad,
                     DType grad_dtype, int64_t n, const AdamWStep& hp, void* param16,
                     DType param16_dtype) {
  ZT_CHECK(n >= 0, "adamw_step_cuda: element count must be >= 0, got ", n);
  ZT_CHECK(hp.step >= 1, "adamw_step_cuda: step is 1-based, got ", hp.step);
  if (n == 0) return;
  ZT_CHECK(param != nullptr && m != nullptr && v != nullptr && grad != nullptr,
           "adamw_step_cuda: null buffer for ", n, " elements");
  // Element accesses need natural alignment; a misaligned pointer would fault in the kernel, far
  // from the caller that made it.
  ZT_CHECK(naturally_aligned(param, 4) && naturally_aligned(m, 4) && naturally_aligned(v, 4) &&
               naturally_aligned(grad, dtype_size(grad_dtype)) &&
               (param16 == nullptr || naturally_aligned(param16, dtype_size(param16_dtype))),
           "adamw_step_cuda: a buffer is not aligned to its element size");
  ZT_CUDA_CHECK(cudaSetDevice(ctx.device()));
  const AdamWBuffers b{param, m, v, grad, param16};
  const AdamWConstants c = adamw_constants(hp);
  switch (grad_dtype) {
    case DType::kF32: return dispatch_param16<DType::kF32>(ctx, b, param16_dtype, n, c);
    case DType::kBF16: return dispatch_param16<DType::kBF16>(ctx, b, param16_dtype, n, c);
    case DType::kF16: return dispatch_param16<DType::kF16>(ctx, b, param16_dtype, n, c);
    case DType::kF64: return dispatch_param16<DType::kF64>(ctx, b, param16_dtype, n, c);
  }
  ZT_FAIL("adamw_step_cuda: unknown gradient dtype ", int(grad_dtype));
}

void sum_of_squares_cuda(const CudaContext& ctx, const void* data, DType dtype, int64_t n,
                         double* out) {
  ZT_CHECK(n >= 0, "sum_of_squares_cuda: element count must be >= 0, got ", n);
  if (n == 0) return;
  ZT_CHECK(data != nullptr && out != nullptr, "sum_of_squares_cuda: null buffer for ", n,
           " elements");
  ZT_CHECK(naturally_aligned(data, dtype_size(dtype)) && naturally_aligned(out, sizeof(double)),
           "sum_of_squares_cuda: a buffer is not aligned to its element size");
  ZT_CUDA_CHECK(cudaSetDevice(ctx.device()));
  const int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  if (chunks == 1) return dispatch_chunk_sums(ctx, data, dtype, n, 1, out, true);
  // The partials live in a stream-ordered scratch buffer: no device-wide synchronisation (as
  // cudaFree would do), and the pool reuses what was freed in stream order.
  StreamScratch partials(ctx, size_t(chunks) * sizeof(double));
  double* p = static_cast<double*>(partials.data());
  dispatch_chunk_sums(ctx, data, dtype, n, chunks, p, false);
  final_sum_kernel<<<1, kSumThreads, 0, ctx.stream()>>>(p, chunks, out);
  ZT_CUDA_CHECK(cudaGetLastError());
  partials.release();
}

}  // namespace zt::optim
