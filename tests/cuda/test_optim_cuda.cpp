// adamw_step_cuda and sum_of_squares_cuda against their CPU twins, and their bandwidth benchmarks.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "optim/adamw.h"
#include "optim/adamw_cuda.h"
#include "optim/grad_clip.h"
#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/rng.h"

namespace zt::optim {
namespace {

constexpr DType kAllDtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kF64};

// Host <-> device copies ordered on the context's stream (its stream is non-blocking, so copies
// on the legacy default stream would not be ordered with the kernels), then waited for.
void upload(const CudaContext& ctx, void* dst, const void* src, size_t bytes) {
  ZT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx.stream()));
  ctx.synchronize();
}

void download(const CudaContext& ctx, void* dst, const void* src, size_t bytes) {
  ZT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.synchronize();
}

// A device buffer for n elements of `dtype` viewed `offset` elements past its (256-byte aligned)
// start, so tests can hand the kernels pointers of every alignment.
class DeviceArray {
 public:
  DeviceArray(int64_t n, DType dtype, int64_t offset = 0)
      : buffer_(Buffer::allocate(Device::cuda(0), size_t(n + offset) * dtype_size(dtype),
                                 MemCategory::kBuffers, "test array")),
        dtype_(dtype),
        offset_(offset) {}
  void* data() const {
    return static_cast<unsigned char*>(buffer_.data()) + size_t(offset_) * dtype_size(dtype_);
  }
  float* f32() const { return static_cast<float*>(data()); }

 private:
  Buffer buffer_;
  DType dtype_;
  int64_t offset_;
};

// n values of `dtype` (rounded from doubles with store_from_double), as raw bytes.
std::vector<unsigned char> to_dtype(const std::vector<double>& values, DType dtype) {
  std::vector<unsigned char> out(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) store_from_double(out.data(), dtype, i, values[i]);
  return out;
}

// Equal bits element by element; with nan_aware, any NaN also matches any NaN (the GPU makes
// canonical NaNs where x86 keeps payloads, and a 16-bit copy of a NaN carries those bits along).
::testing::AssertionResult same_elements(const char* what, const void* expect, const void* got,
                                         DType dtype, int64_t n, bool nan_aware = false) {
  const size_t w = dtype_size(dtype);
  const auto* e = static_cast<const unsigned char*>(expect);
  const auto* g = static_cast<const unsigned char*>(got);
  if (!nan_aware && std::memcmp(e, g, size_t(n) * w) == 0) return ::testing::AssertionSuccess();
  for (int64_t i = 0; i < n; ++i) {
    const double ev = load_as_double(e, dtype, size_t(i));
    const double gv = load_as_double(g, dtype, size_t(i));
    if (nan_aware && std::isnan(ev) && std::isnan(gv)) continue;
    if (std::memcmp(e + size_t(i) * w, g + size_t(i) * w, w) != 0) {
      return ::testing::AssertionFailure() << what << " (" << dtype_name(dtype) << ") differs at "
                                           << i << " of " << n << ": cpu " << ev << " gpu " << gv;
    }
  }
  return ::testing::AssertionSuccess();
}

// The starting state and per-step gradients (in fp64, rounded to each gradient dtype later).
// Gradients span 2^-16..2^7 times a normal value: fp16 subnormals, fp32 values far below and
// above 1, exact zeros; v starts at 0 in places so some denominators are eps alone.
struct AdamWInputs {
  std::vector<float> param, m, v;
  std::vector<std::vector<double>> grads;  // [steps][n]
};

AdamWInputs make_adamw_inputs(int64_t n, int steps) {
  AdamWInputs in;
  in.param.resize(size_t(n));
  in.m.resize(size_t(n));
  in.v.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t u = uint64_t(i);
    in.param[size_t(i)] = float(0.5 * random_normal(11, 0, u));
    in.m[size_t(i)] = float(1e-2 * random_normal(11, 1, u));
    const double r = random_normal(11, 2, u);
    in.v[size_t(i)] = i % 13 == 0 ? 0.0f : float(1e-4 * r * r);
  }
  // The 16-bit copy at fp16's edges: where the gradient is 0 (every 97th element) and m = v = 0,
  // a step only multiplies p by the weight decay's factor, so these stay past fp16's largest
  // finite value (inf), at it, at a subnormal and below half the smallest subnormal.
  const float edges[] = {7e4f, -7e4f, 65510.0f, 65519.0f, 1e-5f, -3e-7f, 4e-8f, 2.5e-8f};
  for (size_t k = 0; k < std::size(edges) && int64_t(k) * 97 < n; ++k) {
    in.param[k * 97] = edges[k];
    in.m[k * 97] = 0.0f;
    in.v[k * 97] = 0.0f;
  }
  in.grads.resize(size_t(steps));
  for (int s = 0; s < steps; ++s) {
    std::vector<double>& g = in.grads[size_t(s)];
    g.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      g[size_t(i)] = i % 97 == 0 ? 0.0
                                 : std::ldexp(random_normal(12, uint64_t(s), uint64_t(i)),
                                              int((i + s) % 24) - 16);
    }
  }
  return in;
}

AdamWStep adamw_hyper_parameters(int64_t step) {
  AdamWStep hp;
  hp.lr = 3e-4;  // not a power of two: the fp32 constants' rounding matters
  hp.beta1 = 0.9;
  hp.beta2 = 0.95;
  hp.eps = 1e-8;
  hp.weight_decay = 0.1;
  hp.step = step;
  hp.grad_scale = 0.37;  // a clip coefficient / loss-scale undo that rounds in every product
  return hp;
}

// Element offsets of the five device views: all 0 takes the vector path for everything; equal
// non-zero offsets make the kernel peel a scalar head; disagreeing ones force the scalar path.
struct Offsets {
  int64_t param = 0, m = 0, v = 0, grad = 0, param16 = 0;
};

// Runs `steps` AdamW steps on the CPU and the GPU from the same state and compares param, m, v
// and the 16-bit copy after every step.
::testing::AssertionResult adamw_matches_cpu(const CudaContext& ctx, const AdamWInputs& in,
                                             DType grad_dtype, std::optional<DType> param16_dtype,
                                             const Offsets& off, bool nan_aware = false) {
  const int64_t n = int64_t(in.param.size());
  std::vector<float> param = in.param, m = in.m, v = in.v;
  const DType p16 = param16_dtype.value_or(DType::kBF16);
  std::vector<unsigned char> param16(static_cast<size_t>(n) * dtype_size(p16));

  DeviceArray d_param(n, DType::kF32, off.param), d_m(n, DType::kF32, off.m),
      d_v(n, DType::kF32, off.v), d_grad(n, grad_dtype, off.grad), d_param16(n, p16, off.param16);
  upload(ctx, d_param.data(), param.data(), size_t(n) * 4);
  upload(ctx, d_m.data(), m.data(), size_t(n) * 4);
  upload(ctx, d_v.data(), v.data(), size_t(n) * 4);
  // A pattern no result has, so an element the kernel skipped shows.
  ZT_CUDA_CHECK(cudaMemsetAsync(d_param16.data(), 0xa5, param16.size(), ctx.stream()));

  std::vector<float> got_param(static_cast<size_t>(n)), got_m(static_cast<size_t>(n)),
      got_v(static_cast<size_t>(n));
  std::vector<unsigned char> got16(param16.size());
  for (size_t s = 0; s < in.grads.size(); ++s) {
    const AdamWStep hp = adamw_hyper_parameters(int64_t(s) + 1);
    const std::vector<unsigned char> grad = to_dtype(in.grads[s], grad_dtype);
    upload(ctx, d_grad.data(), grad.data(), grad.size());
    adamw_step_cpu(param.data(), m.data(), v.data(), grad.data(), grad_dtype, n, hp,
                   param16_dtype ? param16.data() : nullptr, p16);
    adamw_step_cuda(ctx, d_param.f32(), d_m.f32(), d_v.f32(), d_grad.data(), grad_dtype, n, hp,
                    param16_dtype ? d_param16.data() : nullptr, p16);
    download(ctx, got_param.data(), d_param.data(), size_t(n) * 4);
    download(ctx, got_m.data(), d_m.data(), size_t(n) * 4);
    download(ctx, got_v.data(), d_v.data(), size_t(n) * 4);
    for (auto r :
         {same_elements("param", param.data(), got_param.data(), DType::kF32, n, nan_aware),
          same_elements("m", m.data(), got_m.data(), DType::kF32, n, nan_aware),
          same_elements("v", v.data(), got_v.data(), DType::kF32, n, nan_aware)}) {
      if (!r) return r << " after step " << s + 1;
    }
    if (param16_dtype) {
      download(ctx, got16.data(), d_param16.data(), got16.size());
      auto r = same_elements("param16", param16.data(), got16.data(), p16, n, nan_aware);
      if (!r) return r << " after step " << s + 1;
    }
  }
  return ::testing::AssertionSuccess();
}

std::string describe(int64_t n, DType grad_dtype, std::optional<DType> param16_dtype) {
  return "n " + std::to_string(n) + ", grad " + std::string(dtype_name(grad_dtype)) + ", param16 " +
         (param16_dtype ? std::string(dtype_name(*param16_dtype)) : std::string("none"));
}

const std::optional<DType> kParam16Choices[] = {std::nullopt, DType::kBF16, DType::kF16,
                                                DType::kF32};

TEST(OptimCuda, AdamWMatchesCpuBitForBit) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  // Odd sizes: 1 and 7 are all remainder; 4099 and 1000003 leave a remainder after the
  // 8-element packs and span many blocks.
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(4099), int64_t(1000003)}) {
    const AdamWInputs in = make_adamw_inputs(n, 3);
    for (DType grad_dtype : kAllDtypes) {
      for (const std::optional<DType>& p16 : kParam16Choices) {
        ASSERT_TRUE(adamw_matches_cpu(ctx, in, grad_dtype, p16, Offsets{}))
            << describe(n, grad_dtype, p16);
      }
    }
  }
}

TEST(OptimCuda, AdamWMatchesCpuOnMisalignedViews) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  const Offsets cases[] = {
      {1, 1, 1, 1, 1},  // a scalar head, then aligned packs
      {3, 3, 3, 3, 3},
      {0, 0, 0, 1, 0},  // the gradient disagrees with the rest: all scalar
      {0, 1, 0, 0, 2},
  };
  for (int64_t n : {int64_t(7), int64_t(4099), int64_t(100003)}) {
    const AdamWInputs in = make_adamw_inputs(n, 2);
    for (const Offsets& off : cases) {
      for (DType grad_dtype : kAllDtypes) {
        for (const std::optional<DType>& p16 :
             {std::optional<DType>(), std::optional(DType::kBF16)}) {
          ASSERT_TRUE(adamw_matches_cpu(ctx, in, grad_dtype, p16, off))
              << describe(n, grad_dtype, p16) << ", offsets " << off.param << "," << off.m << ","
              << off.v << "," << off.grad << "," << off.param16;
        }
      }
    }
  }
}

TEST(OptimCuda, AdamWNonFiniteGradientsMatchCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  const int64_t n = 4099;
  AdamWInputs in = make_adamw_inputs(n, 2);
  // In the scalar tail, in packs, at both ends; inf makes m/denom = inf/inf = NaN.
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  in.grads[0][0] = nan;
  in.grads[0][17] = inf;
  in.grads[0][2050] = -inf;
  in.grads[1][n - 1] = nan;
  in.grads[1][9] = inf;
  for (DType grad_dtype : kAllDtypes) {
    for (const std::optional<DType>& p16 : kParam16Choices) {
      ASSERT_TRUE(adamw_matches_cpu(ctx, in, grad_dtype, p16, Offsets{}, /*nan_aware=*/true))
          << describe(n, grad_dtype, p16);
    }
  }
}

TEST(OptimCuda, AdamWOfNothingIsANoOp) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  EXPECT_NO_THROW(adamw_step_cuda(ctx, nullptr, nullptr, nullptr, nullptr, DType::kBF16, 0,
                                  adamw_hyper_parameters(1)));
  EXPECT_THROW(adamw_step_cuda(ctx, nullptr, nullptr, nullptr, nullptr, DType::kBF16, -1,
                               adamw_hyper_parameters(1)),
               Error);
}

// --- sum of squares ---------------------------------------------------------------------------

// The number of fp64 roundings any term of the sum passes through (all terms are >= 0, so the
// error of each implementation is at most depth * 2^-53 * exact sum, to first order; Higham,
// Accuracy and Stability of Numerical Algorithms, section 4.2).
// GPU (optim/cuda/adamw.cu): 64 in-thread additions per 16384-element chunk, a 5 + 3 level
// tree per chunk, ceil(chunks / 256) in-thread additions of partials, another 5 + 3 level tree,
// and the add into *out.
int64_t gpu_sum_depth(int64_t n) {
  const int64_t chunks = (n + 16383) / 16384;
  return 64 + 8 + (chunks + 255) / 256 + 8 + 1;
}
// CPU (optim/grad_clip.cpp): 512 per lane of a 4096-element block (the product x * x rounds for
// fp64 input: counted), a 3-level lane tree, then the blocks one after the other.
int64_t cpu_sum_depth(int64_t n) { return 512 + 3 + (n + 4095) / 4096; }

// |gpu - cpu| <= |gpu - exact| + |exact - cpu| <= (d_gpu + d_cpu) 2^-53 exact. The + 2 covers
// the second-order terms (gamma_d = d u / (1 - d u)) and using the CPU's value for `exact`.
double sum_tolerance(int64_t n, double expected) {
  return double(gpu_sum_depth(n) + cpu_sum_depth(n) + 2) * std::ldexp(1.0, -53) * expected;
}

// Values over many binades (2^-10..2^9 times a normal value), in every dtype's range.
std::vector<double> sum_values(int64_t n, uint64_t seed) {
  std::vector<double> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    x[size_t(i)] = std::ldexp(random_normal(seed, 0, uint64_t(i)), int(i % 20) - 10);
  return x;
}

// Uploads `bytes` (n elements of dtype) at `offset` elements into a fresh device array, runs
// sum_of_squares_cuda into a device double that starts at `start`, and returns the result.
double gpu_sum(const CudaContext& ctx, const std::vector<unsigned char>& bytes, DType dtype,
               int64_t n, double start = 0.0, int64_t offset = 0) {
  DeviceArray data(n, dtype, offset);
  DeviceArray out(1, DType::kF64);
  if (n > 0) upload(ctx, data.data(), bytes.data(), size_t(n) * dtype_size(dtype));
  upload(ctx, out.data(), &start, sizeof(double));
  sum_of_squares_cuda(ctx, data.data(), dtype, n, static_cast<double*>(out.data()));
  double result = 0.0;
  download(ctx, &result, out.data(), sizeof(double));
  return result;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }

TEST(OptimCuda, SumOfSquaresMatchesCpuWithinFp64Bound) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  // One element; one partial chunk; exactly one and just over one 16384-element chunk; many
  // chunks; more chunks than the final block has threads (the final pass loops).
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(4099), int64_t(16384), int64_t(16385),
                    int64_t(1000003), int64_t(6000011)}) {
    const std::vector<double> values = sum_values(n, 21);
    for (DType dtype : kAllDtypes) {
      const std::vector<unsigned char> bytes = to_dtype(values, dtype);
      const double cpu = sum_of_squares_cpu(bytes.data(), dtype, n);
      const double gpu = gpu_sum(ctx, bytes, dtype, n);
      EXPECT_NEAR(gpu, cpu, sum_tolerance(n, cpu)) << "n " << n << " " << dtype_name(dtype);
      // A misaligned view takes the element-by-element path of the same summation order.
      if (n > 1) {
        const double shifted = gpu_sum(ctx, bytes, dtype, n, 0.0, 1);
        EXPECT_TRUE(same_bits(shifted, gpu))
            << "n " << n << " " << dtype_name(dtype) << ": " << shifted << " vs " << gpu;
      }
    }
  }
}

TEST(OptimCuda, SumOfSquaresIsRepeatable) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  for (int64_t n : {int64_t(1000), int64_t(6000011)}) {
    const std::vector<double> values = sum_values(n, 22);
    for (DType dtype : kAllDtypes) {
      const std::vector<unsigned char> bytes = to_dtype(values, dtype);
      const double first = gpu_sum(ctx, bytes, dtype, n);
      for (int repeat = 0; repeat < 3; ++repeat) {
        const double again = gpu_sum(ctx, bytes, dtype, n);
        ASSERT_TRUE(same_bits(first, again))
            << "n " << n << " " << dtype_name(dtype) << ": " << first << " vs " << again;
      }
    }
  }
}

TEST(OptimCuda, SumOfSquaresAddsToOut) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  const double start = 12.5;
  for (int64_t n : {int64_t(100), int64_t(1000003)}) {  // the one-chunk path and the two-pass one
    const std::vector<double> values = sum_values(n, 23);
    for (DType dtype : kAllDtypes) {
      const std::vector<unsigned char> bytes = to_dtype(values, dtype);
      const double expected = start + sum_of_squares_cpu(bytes.data(), dtype, n);
      const double gpu = gpu_sum(ctx, bytes, dtype, n, start);
      // One more rounding on each side (the add of `start`).
      EXPECT_NEAR(gpu, expected, sum_tolerance(n, expected) + std::ldexp(2.0, -53) * expected)
          << "n " << n << " " << dtype_name(dtype);

      // Two calls into the same *out add twice, in stream order.
      DeviceArray data(n, dtype);
      DeviceArray out(1, DType::kF64);
      upload(ctx, data.data(), bytes.data(), bytes.size());
      upload(ctx, out.data(), &start, sizeof(double));
      auto* d_out = static_cast<double*>(out.data());
      sum_of_squares_cuda(ctx, data.data(), dtype, n, d_out);
      sum_of_squares_cuda(ctx, data.data(), dtype, n, d_out);
      double twice = 0.0;
      download(ctx, &twice, d_out, sizeof(double));
      // The sum alone is the same bits every time (out = 0 + s is exact), and each call's add to
      // *out is one IEEE fp64 addition, which the host repeats exactly.
      const double alone = gpu_sum(ctx, bytes, dtype, n);
      EXPECT_TRUE(same_bits(twice, gpu + alone))
          << "n " << n << " " << dtype_name(dtype) << ": " << twice << " vs " << gpu + alone;
    }
  }
}

TEST(OptimCuda, SumOfSquaresPropagatesNonFinite) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (int64_t n : {int64_t(7), int64_t(100003)}) {
    const std::vector<double> base = sum_values(n, 24);
    for (DType dtype : kAllDtypes) {
      for (int64_t at : {int64_t(0), n / 2, n - 1}) {
        std::vector<double> values = base;
        values[size_t(at)] = nan;
        EXPECT_TRUE(std::isnan(gpu_sum(ctx, to_dtype(values, dtype), dtype, n)))
            << "NaN at " << at << " of " << n << " " << dtype_name(dtype);
        values[size_t(at)] = -inf;
        EXPECT_EQ(gpu_sum(ctx, to_dtype(values, dtype), dtype, n), inf)
            << "-inf at " << at << " of " << n << " " << dtype_name(dtype);
        values[size_t(n - 1 - at)] = nan;  // inf and NaN together: NaN
        EXPECT_TRUE(std::isnan(gpu_sum(ctx, to_dtype(values, dtype), dtype, n)))
            << "inf and NaN, " << n << " " << dtype_name(dtype);
      }
    }
  }
}

TEST(OptimCuda, SumOfSquaresOfNothingLeavesOutUnchanged) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  DeviceArray out(1, DType::kF64);
  const double start = 3.25;
  upload(ctx, out.data(), &start, sizeof(double));
  auto* d_out = static_cast<double*>(out.data());
  for (DType dtype : kAllDtypes) sum_of_squares_cuda(ctx, nullptr, dtype, 0, d_out);
  double got = 0.0;
  download(ctx, &got, d_out, sizeof(double));
  EXPECT_TRUE(same_bits(got, start)) << got;
  EXPECT_THROW(sum_of_squares_cuda(ctx, nullptr, DType::kF32, -1, d_out), Error);
}

// --- benchmarks (print figures; no timing assertions, DESIGN.md section 8) ----------------------

// Milliseconds per call of `work`, averaged over `reps` calls after two warm-up calls, timed with
// events on the context's stream.
template <class Work>
double time_ms(const CudaContext& ctx, int reps, Work&& work) {
  work();
  work();
  cudaEvent_t start, stop;
  ZT_CUDA_CHECK(cudaEventCreate(&start));
  ZT_CUDA_CHECK(cudaEventCreate(&stop));
  ZT_CUDA_CHECK(cudaEventRecord(start, ctx.stream()));
  for (int r = 0; r < reps; ++r) work();
  ZT_CUDA_CHECK(cudaEventRecord(stop, ctx.stream()));
  ZT_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.0f;
  ZT_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  ZT_CUDA_CHECK(cudaEventDestroy(start));
  ZT_CUDA_CHECK(cudaEventDestroy(stop));
  return double(ms) / reps;
}

TEST(OptimCudaBenchmark, AdamWBandwidth) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  const int64_t n = int64_t(256) << 20;  // 256M parameters
  const int reps = 10;
  DeviceArray param(n, DType::kF32), m(n, DType::kF32), v(n, DType::kF32);
  DeviceArray grad32(n, DType::kF32), grad16(n, DType::kBF16), param16(n, DType::kBF16);
  for (const DeviceArray* a : {&param, &m, &v, &grad32})
    ZT_CUDA_CHECK(cudaMemsetAsync(a->data(), 0, size_t(n) * 4, ctx.stream()));
  for (const DeviceArray* a : {&grad16, &param16})
    ZT_CUDA_CHECK(cudaMemsetAsync(a->data(), 0, size_t(n) * 2, ctx.stream()));
  ctx.synchronize();

  cudaDeviceProp prop{};
  ZT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("[ bench    ] %s, %lld parameters, %d steps each\n", prop.name,
              static_cast<long long>(n), reps);
  auto report = [&](const char* what, double bytes_per_param, double ms) {
    std::printf("[ bench    ] %-44s %8.3f ms  %7.1f GB/s  (%.0f B/param)\n", what, ms,
                bytes_per_param * double(n) / (ms * 1e6), bytes_per_param);
  };

  AdamWStep hp = adamw_hyper_parameters(1);
  // Reads master, m, v (12 B) and the gradient; writes master, m, v (12 B) and the 16-bit copy.
  report("adamw bf16 grad -> fp32 state + bf16 param16", 12 + 2 + 12 + 2, time_ms(ctx, reps, [&] {
           adamw_step_cuda(ctx, param.f32(), m.f32(), v.f32(), grad16.data(), DType::kBF16, n, hp,
                           param16.data(), DType::kBF16);
           ++hp.step;
         }));
  report("adamw fp32 grad -> fp32 state + bf16 param16", 12 + 4 + 12 + 2, time_ms(ctx, reps, [&] {
           adamw_step_cuda(ctx, param.f32(), m.f32(), v.f32(), grad32.data(), DType::kF32, n, hp,
                           param16.data(), DType::kBF16);
           ++hp.step;
         }));
  report("adamw fp32 grad -> fp32 state, no param16", 12 + 4 + 12, time_ms(ctx, reps, [&] {
           adamw_step_cuda(ctx, param.f32(), m.f32(), v.f32(), grad32.data(), DType::kF32, n, hp);
           ++hp.step;
         }));
  // The ceiling to compare with: a device-to-device copy of the 1 GiB master (read + write).
  report("reference: cudaMemcpyAsync fp32 -> fp32", 8, time_ms(ctx, reps, [&] {
           ZT_CUDA_CHECK(cudaMemcpyAsync(grad32.data(), param.data(), size_t(n) * 4,
                                         cudaMemcpyDeviceToDevice, ctx.stream()));
         }));
}

TEST(OptimCudaBenchmark, SumOfSquaresBandwidth) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  const int64_t n = int64_t(256) << 20;
  const int reps = 10;
  DeviceArray grad16(n, DType::kBF16), grad32(n, DType::kF32), out(1, DType::kF64);
  ZT_CUDA_CHECK(cudaMemsetAsync(grad16.data(), 0, size_t(n) * 2, ctx.stream()));
  ZT_CUDA_CHECK(cudaMemsetAsync(grad32.data(), 0, size_t(n) * 4, ctx.stream()));
  ZT_CUDA_CHECK(cudaMemsetAsync(out.data(), 0, sizeof(double), ctx.stream()));
  ctx.synchronize();
  auto* d_out = static_cast<double*>(out.data());
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    const void* data = dtype == DType::kBF16 ? grad16.data() : grad32.data();
    const double ms = time_ms(ctx, reps, [&] { sum_of_squares_cuda(ctx, data, dtype, n, d_out); });
    const double bytes = double(dtype_size(dtype));
    std::printf("[ bench    ] sum_of_squares %s, %lld elements: %8.3f ms  %7.1f GB/s\n",
                std::string(dtype_name(dtype)).c_str(), static_cast<long long>(n), ms,
                bytes * double(n) / (ms * 1e6));
  }
}

}  // namespace
}  // namespace zt::optim
