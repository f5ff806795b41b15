// The CUDA ops of model/ops_cuda.h against their CPU twins (model/ops_cpu.h) in bf16 and fp16, with
// tolerances derived from the dtype's rounding and fp32 accumulation, and run-to-run determinism.
//
// Method: random inputs are rounded to the 16-bit dtype; the CPU twin runs on the rounded values
// (as float), the CUDA op on the 16-bit values; the results are compared element by element.
// Rounding facts used throughout (u = unit roundoff, the largest relative error of one
// round-to-nearest): bf16 has 8 significant bits, u = 2^-8; fp16 has 11, u = 2^-11 (plus an
// absolute 2^-25 below fp16's smallest normal 2^-14, where the spacing is 2^-24); fp32 has 24,
// u = 2^-24. A length-K fp32 sum of terms t_k is within K u_32 sum|t_k| of the exact sum, whatever
// the order; when both the CPU and the GPU accumulate, the bound is counted twice.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "model/ops_cpu.h"
#include "model/ops_cuda.h"
#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/memory.h"
#include "runtime/rng.h"
#include "tests/support/user_error.h"

namespace zt::model {
namespace {

constexpr DType kDTypes[] = {DType::kBF16, DType::kF16};
constexpr double kU32 = 0x1p-24;  // fp32 unit roundoff

double unit_roundoff(DType dt) {
  switch (dt) {
    case DType::kBF16:
      return 0x1p-8;
    case DType::kF16:
      return 0x1p-11;
    case DType::kF32:
      return 0x1p-24;
    default:
      return 0.0;
  }
}
// Absolute rounding error below the normal range: fp16's subnormal spacing is 2^-24 (bf16 and
// fp32 reach 2^-126, far below any value here).
double rounding_floor(DType dt) { return dt == DType::kF16 ? 0x1p-25 : 0x1p-130; }
// One rounding of a value of magnitude |v| to dt.
double rounding(DType dt, double v) {
  return unit_roundoff(dt) * std::fabs(v) + rounding_floor(dt);
}

// One context for the whole suite, made on first use (after the skip check). Never destroyed: its
// destructor would run after the CUDA runtime has been torn down at exit.
CudaContext& ctx() {
  static CudaContext* context = new CudaContext(0);
  return *context;
}

uint16_t to_bits(float v, DType dt) {
  return dt == DType::kBF16 ? float_to_bf16(v).bits : float_to_f16(v).bits;
}
float from_bits(uint16_t bits, DType dt) {
  return dt == DType::kBF16 ? bf16_to_float(bf16{bits}) : f16_to_float(f16{bits});
}
uint16_t nan_bits(DType dt) { return dt == DType::kBF16 ? 0x7fc0 : 0x7e00; }

// Values rounded to a 16-bit dtype: bits for the device, the same values as float for the CPU.
struct Host16 {
  DType dt = DType::kBF16;
  std::vector<uint16_t> bits;
  std::vector<float> vals;

  Host16() = default;
  Host16(size_t n, DType dtype) : dt(dtype), bits(n, 0), vals(n, 0.0f) {}
  size_t size() const { return bits.size(); }
  void set(size_t i, double v) {
    bits[i] = to_bits(float(v), dt);
    vals[i] = from_bits(bits[i], dt);
  }
};

// offset + scale * N(0, 1), rounded to dt; `stream` separates the tensors of one test.
Host16 random16(size_t n, DType dt, uint64_t stream, double scale, double offset = 0.0) {
  Host16 h(n, dt);
  for (size_t i = 0; i < n; ++i) h.set(i, offset + scale * random_normal(2024, stream, i));
  return h;
}

// Device memory of one test tensor, with copies ordered on the context's stream (the ops run on a
// non-blocking stream, which plain cudaMemcpy would not wait for).
class DeviceArray {
 public:
  explicit DeviceArray(size_t bytes)
      : buffer_(Buffer::allocate(Device::cuda(0), std::max<size_t>(bytes, 256),
                                 MemCategory::kBuffers, "test tensor")),
        bytes_(bytes) {}
  template <class T>
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size() * sizeof(T)) {
    upload(host);
  }
  void* data() const { return buffer_.data(); }
  template <class T>
  T* as() const {
    return static_cast<T*>(buffer_.data());
  }
  template <class T>
  void upload(const std::vector<T>& host) {
    ASSERT_LE(host.size() * sizeof(T), bytes_);
    ZT_CUDA_CHECK(cudaMemcpyAsync(data(), host.data(), host.size() * sizeof(T),
                                  cudaMemcpyHostToDevice, ctx().stream()));
    ctx().synchronize();
  }
  template <class T>
  std::vector<T> download(size_t n) const {
    std::vector<T> host(n);
    ctx().synchronize();  // the ops queued before
    ZT_CUDA_CHECK(cudaMemcpyAsync(host.data(), data(), n * sizeof(T), cudaMemcpyDeviceToHost,
                                  ctx().stream()));
    ctx().synchronize();
    return host;
  }
  std::vector<float> download16(size_t n, DType dt) const {
    const std::vector<uint16_t> bits = download<uint16_t>(n);
    std::vector<float> vals(n);
    for (size_t i = 0; i < n; ++i) vals[i] = from_bits(bits[i], dt);
    return vals;
  }

 private:
  Buffer buffer_;
  size_t bytes_;
};

// Expects |got[i] - ref[i]| <= tol[i] for every i (NaN fails); reports the first few misses.
void expect_close(const std::string& what, const std::vector<float>& got,
                  const std::vector<double>& ref, const std::vector<double>& tol) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  ASSERT_EQ(tol.size(), ref.size()) << what;
  int64_t misses = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(double(got[i]) - ref[i]);
    if (!(diff <= tol[i])) {
      if (++misses <= 5)
        ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", expected " << ref[i]
                      << " +- " << tol[i] << " (off by " << diff << ")";
    }
  }
  EXPECT_EQ(misses, 0) << what << ": " << misses << " of " << got.size()
                       << " elements out of tolerance";
}

template <class T>
std::vector<double> to_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

std::vector<float> abs_of(const std::vector<float>& v) {
  std::vector<float> a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(v[i]);
  return a;
}

template <class... Args>
std::string label(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// gemm

TEST(CudaGemm, MatchesCpuTwin) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int64_t m, n, k, pad;  // pad: extra columns in every leading dimension
  };
  // Awkward shapes: one row, odd sizes, leading dimensions that are not multiples of 8.
  const Case cases[] = {{1, 16, 32, 0}, {7, 24, 40, 8}, {129, 48, 72, 0}, {5, 3, 7, 1}};
  const float alpha = 0.75f;
  uint64_t stream = 100;
  for (DType dt : kDTypes) {
    for (DType c_dt : {dt, DType::kF32}) {
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) {
          for (const Case& c : cases) {
            for (float beta : {0.0f, 0.5f}) {
              const std::string what =
                  label("gemm ", dtype_name(dt), "->", dtype_name(c_dt), " ta=", ta, " tb=", tb,
                        " M=", c.m, " N=", c.n, " K=", c.k, " pad=", c.pad, " beta=", beta);
              const int64_t rows_a = ta ? c.k : c.m, lda = (ta ? c.m : c.k) + c.pad;
              const int64_t rows_b = tb ? c.n : c.k, ldb = (tb ? c.k : c.n) + c.pad;
              const int64_t ldc = c.n + c.pad;
              const size_t c_size = size_t(c.m * ldc);
              const Host16 a = random16(size_t(rows_a * lda), dt, ++stream, 1.0);
              const Host16 b = random16(size_t(rows_b * ldb), dt, ++stream, 1.0);
              // C's old contents: random for beta != 0, NaN for beta == 0 (which must ignore it).
              std::vector<float> c_old(c_size);
              std::vector<uint16_t> c_old_bits(c_size);
              ++stream;
              for (size_t i = 0; i < c_size; ++i) {
                const double r = random_normal(2024, stream, i);
                if (c_dt == DType::kF32) {
                  c_old[i] = beta == 0.0f ? NAN : float(r);
                } else {
                  c_old_bits[i] = beta == 0.0f ? nan_bits(dt) : to_bits(float(r), dt);
                  c_old[i] = from_bits(c_old_bits[i], dt);
                }
              }
              DeviceArray da(a.bits), db(b.bits);
              DeviceArray dc = c_dt == DType::kF32 ? DeviceArray(c_old) : DeviceArray(c_old_bits);
              cuda::gemm(ctx(), ta, tb, c.m, c.n, c.k, alpha, da.data(), lda, db.data(), ldb, beta,
                         dc.data(), ldc, dt, c_dt);
              std::vector<float> got;
              std::vector<uint16_t> got_bits;  // 16-bit C as stored
              if (c_dt == DType::kF32) {
                got = dc.download<float>(c_size);
              } else {
                got_bits = dc.download<uint16_t>(c_size);
                for (uint16_t bits : got_bits) got.push_back(from_bits(bits, dt));
              }
              std::vector<float> ref = c_old;
              cpu::gemm<float>(ta, tb, c.m, c.n, c.k, alpha, a.vals.data(), lda, b.vals.data(), ldb,
                               beta, ref.data(), ldc);
              std::vector<float> abs_prod(c_size, 0.0f);  // sum_k |a_ik| |b_kj|
              cpu::gemm<float>(ta, tb, c.m, c.n, c.k, 1.0f, abs_of(a.vals).data(), lda,
                               abs_of(b.vals).data(), ldb, 0.0f, abs_prod.data(), ldc);
              std::vector<float> got_in;
              std::vector<double> ref_in, tol_in;
              for (int64_t i = 0; i < c.m; ++i) {
                for (int64_t j = 0; j < ldc; ++j) {
                  const size_t e = size_t(i * ldc + j);
                  if (j >= c.n) {
                    // Padding columns past N are never written: same bits as before.
                    if (c_dt == DType::kF32) {
                      EXPECT_EQ(std::memcmp(&got[e], &c_old[e], sizeof(float)), 0) << what;
                    } else {
                      EXPECT_EQ(got_bits[e], c_old_bits[e]) << what;
                    }
                    continue;
                  }
                  got_in.push_back(got[e]);
                  ref_in.push_back(ref[e]);
                  // One rounding to C's dtype, plus fp32 accumulation of K products and the beta
                  // term on both the CPU and the GPU.
                  const double old_term = beta == 0.0f ? 0.0 : std::fabs(beta * c_old[e]);
                  tol_in.push_back(rounding(c_dt, ref[e]) +
                                   2.0 * double(c.k + 2) * kU32 *
                                       (std::fabs(alpha) * abs_prod[e] + old_term));
                }
              }
              expect_close(what, got_in, ref_in, tol_in);
              if (HasFailure()) return;
            }
          }
        }
      }
    }
  }
}

// Element (i, j) of A B^T for 16-bit row-major A [M, K] and B [N, K], in double (exact to
// ~1e-16), and the sum of its products' magnitudes, which scales the fp32 accumulation error.
std::pair<double, double> exact_nt_dot(const std::vector<uint16_t>& a,
                                       const std::vector<uint16_t>& b, int64_t i, int64_t j,
                                       int64_t K, DType dt) {
  double dot = 0.0, abs_dot = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    const double p = double(from_bits(a[size_t(i * K + k)], dt)) *
                     double(from_bits(b[size_t(j * K + k)], dt));
    dot += p;
    abs_dot += std::fabs(p);
  }
  return {dot, abs_dot};
}

// GPT-J-6B's fc_in shape: [2048 tokens x 4096] @ [16384 x 4096]^T, checked on sampled elements
// against double-precision dot products (the CPU would take too long for all 33.5M outputs).
TEST(CudaGemm, GptjFcInShapeSampled) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t M = 2048, N = 16384, K = 4096;
  for (DType dt : kDTypes) {
    // Uniform in [-1, 1), rounded to dt; generated from a counter hash, in parallel.
    auto fill = [&](std::vector<uint16_t>& bits, uint64_t stream) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < int64_t(bits.size()); ++i) {
        const double u = double(splitmix64(uint64_t(i) * 4 + stream) >> 11) * 0x1p-53;
        bits[size_t(i)] = to_bits(float(2.0 * u - 1.0), dt);
      }
    };
    std::vector<uint16_t> a(size_t(M * K)), b(size_t(N * K));
    fill(a, 1);
    fill(b, 2);
    DeviceArray da(a), db(b), dc(size_t(M * N) * 2);
    cuda::gemm(ctx(), false, true, M, N, K, 1.0f, da.data(), K, db.data(), K, 0.0f, dc.data(), N,
               dt, dt);
    const std::vector<uint16_t> c = dc.download<uint16_t>(size_t(M * N));
    const int kSamples = 2048;
    std::vector<float> got;
    std::vector<double> ref, tol;
    double sum_err2 = 0.0, sum_ref2 = 0.0, sum_abs2 = 0.0;
    for (int s = 0; s < kSamples; ++s) {
      int64_t i = int64_t(random_bits(9, 1, uint64_t(s)) % uint64_t(M));
      int64_t j = int64_t(random_bits(9, 2, uint64_t(s)) % uint64_t(N));
      if (s == 0) i = 0, j = 0;
      if (s == 1) i = M - 1, j = N - 1;
      const auto [dot, abs_dot] = exact_nt_dot(a, b, i, j, K, dt);
      const float g = from_bits(c[size_t(i * N + j)], dt);
      got.push_back(g);
      ref.push_back(dot);
      // One rounding to dt plus the GPU's fp32 accumulation (the reference is exact to ~1e-16).
      tol.push_back(rounding(dt, dot) + double(K) * kU32 * abs_dot);
      sum_err2 += (g - dot) * (g - dot);
      sum_ref2 += dot * dot;
      sum_abs2 += abs_dot * abs_dot;
    }
    expect_close(label("gemm 2048x4096x16384 ", dtype_name(dt)), got, ref, tol);
    // In aggregate: each rounding is within u of its value, so the RMS error is within u times
    // the reference's RMS; fp32 accumulation errors of random-sign sums grow like sqrt(K) (4 sigma
    // allowed). A subtle bug (a missing K block, a wrong row) fails this long before the bound.
    const double rms_err = std::sqrt(sum_err2 / kSamples);
    const double rms_bound = unit_roundoff(dt) * std::sqrt(sum_ref2 / kSamples) +
                             4.0 * std::sqrt(double(K)) * kU32 * std::sqrt(sum_abs2 / kSamples);
    EXPECT_LE(rms_err, rms_bound) << dtype_name(dt);
  }
}

// GEMM choices (model/gemm_choices.h): a tuned problem runs one of the heuristic's candidates, a
// problem given a choice runs that one (and is listed among those in use before it first runs),
// and both compute what the CPU does. Shapes of their own,
// so that no earlier test has fixed their algorithms in this process.
TEST(CudaGemm, TunedAndChosenCandidatesMatchTheCpuTwin) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = DType::kBF16;
  const int64_t N = 520, K = 1032;
  auto run = [&](int64_t M) {
    std::vector<uint16_t> a(size_t(M * K)), b(size_t(N * K));
    for (size_t i = 0; i < a.size(); ++i) a[i] = to_bits(float(random_uniform(7, 1, i) * 2 - 1), dt);
    for (size_t i = 0; i < b.size(); ++i) b[i] = to_bits(float(random_uniform(7, 2, i) * 2 - 1), dt);
    DeviceArray da(a), db(b), dc(size_t(M * N) * 2);
    cuda::gemm(ctx(), false, true, M, N, K, 1.0f, da.data(), K, db.data(), K, 0.0f, dc.data(), N,
               dt, dt);
    const std::vector<uint16_t> c = dc.download<uint16_t>(size_t(M * N));
    std::vector<float> got;
    std::vector<double> ref, tol;
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        const auto [dot, abs_dot] = exact_nt_dot(a, b, i, j, K, dt);
        got.push_back(from_bits(c[size_t(i * N + j)], dt));
        ref.push_back(dot);
        tol.push_back(rounding(dt, dot) + double(K) * kU32 * abs_dot);  // one rounding, fp32 sums
      }
    }
    expect_close(label("gemm ", M, "x", N, "x", K), got, ref, tol);
  };
  auto choice_of = [&](int64_t M) -> std::pair<std::string, int> {
    const std::string shape = " m=" + std::to_string(M) + " n=" + std::to_string(N) + " k=" +
                              std::to_string(K) + " ";
    for (const auto& [key, index] : cuda::gemm_choices_in_use(ctx().device()).index)
      if (key.find(shape) != std::string::npos) return {key, index};
    return {"", -1};
  };
  // Tuned: the fastest of at most 8 candidates.
  cuda::set_gemm_tuning(true);
  run(264);
  cuda::set_gemm_tuning(false);
  const auto [tuned_key, tuned_index] = choice_of(264);
  ASSERT_FALSE(tuned_key.empty()) << "the tuned problem is not among the choices in use";
  EXPECT_GE(tuned_index, 0);
  EXPECT_LT(tuned_index, 8);
  // Chosen: the second candidate for the same problem with M = 272 (its key differs in m only).
  model::GemmChoices chosen = cuda::gemm_choices_in_use(ctx().device());
  chosen.index.clear();
  std::string key = tuned_key;
  key.replace(key.find(" m=264 "), 7, " m=272 ");
  chosen.index[key] = 1;
  cuda::use_gemm_choices(chosen, ctx().device());
  EXPECT_EQ(choice_of(272), std::make_pair(key, 1)) << "a choice for a problem not run yet is kept";
  run(272);
  EXPECT_EQ(choice_of(272), std::make_pair(key, 1));
  // Choices made on another GPU kind are refused, naming both kinds.
  chosen.device = "Some Other GPU";
  const std::string error =
      zt::testing::user_error_of([&] { cuda::use_gemm_choices(chosen, ctx().device()); });
  EXPECT_NE(error.find("tuned on a Some Other GPU"), std::string::npos) << error;
}

// Tuning inside training (train.gemm_choices): the call that tunes computes exactly what later
// calls with the chosen algorithm compute, also for an accumulating problem (beta = 1, the
// weight gradients), whose candidates must not add into C; and a problem first run with tuning
// off is tuned at its next call with tuning on. Shapes of their own, as above.
TEST(CudaGemm, TuningLeavesTheTunedCallsResultIntact) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = DType::kBF16;
  const int64_t N = 520, K = 1032;
  auto check = [&](int64_t M, bool run_before_tuning) {
    std::vector<uint16_t> a(size_t(M * K)), b(size_t(N * K)), c0(size_t(M * N));
    for (size_t i = 0; i < a.size(); ++i) a[i] = to_bits(float(random_uniform(8, 1, i) * 2 - 1), dt);
    for (size_t i = 0; i < b.size(); ++i) b[i] = to_bits(float(random_uniform(8, 2, i) * 2 - 1), dt);
    for (size_t i = 0; i < c0.size(); ++i) c0[i] = to_bits(float(random_uniform(8, 3, i) * 8 - 4), dt);
    DeviceArray da(a), db(b);
    // C <- C0 + A B^T, through a fresh copy of C0 each time.
    auto accumulate = [&]() {
      DeviceArray dc(c0);
      cuda::gemm(ctx(), false, true, M, N, K, 1.0f, da.data(), K, db.data(), K, 1.0f, dc.data(), N,
                 dt, dt);
      return dc.download<uint16_t>(size_t(M * N));
    };
    if (run_before_tuning) accumulate();  // makes the plan with the heuristic's pick
    const int64_t tuned_before = cuda::gemm_problems_tuned();
    cuda::set_gemm_tuning(true);
    const std::vector<uint16_t> tuned = accumulate();
    cuda::set_gemm_tuning(false);
    EXPECT_EQ(cuda::gemm_problems_tuned(), tuned_before + 1) << "M=" << M;
    // The chosen algorithm again, tuning off: the same bits. Had the candidates added into C,
    // the tuned call would hold C0 plus several products.
    EXPECT_EQ(accumulate(), tuned) << "M=" << M;
    std::vector<float> got;
    std::vector<double> ref, tol;
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        const auto [dot, abs_dot] = exact_nt_dot(a, b, i, j, K, dt);
        const double c = from_bits(c0[size_t(i * N + j)], dt);
        got.push_back(from_bits(tuned[size_t(i * N + j)], dt));
        ref.push_back(c + dot);
        // One rounding to bf16 of an fp32 sum of K products and C, and one more of the product:
        // accumulating kernels may round it to bf16 before adding C (as in the linear tests).
        tol.push_back(rounding(dt, c + dot) + rounding(dt, dot) +
                      double(K + 1) * kU32 * (abs_dot + std::fabs(c)));
      }
    }
    expect_close(label("accumulating gemm ", M, "x", N, "x", K), got, ref, tol);
  };
  check(280, false);
  check(288, true);
}


// ---------------------------------------------------------------------------------------------
// linear

// Bound on |x w^T + b - fl32(x w^T + b)| per output (fp32 accumulation of `in` products plus the
// bias), for CPU and GPU together.
std::vector<double> accumulation_bound(const Host16& x, const Host16& w, const Host16* b, int64_t n,
                                       int64_t in, int64_t out) {
  std::vector<float> abs_prod(size_t(n * out), 0.0f);
  cpu::gemm<float>(false, true, n, out, in, 1.0f, abs_of(x.vals).data(), in, abs_of(w.vals).data(),
                   in, 0.0f, abs_prod.data(), out);
  std::vector<double> bound(abs_prod.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < out; ++j) {
      const size_t e = size_t(i * out + j);
      const double bias = b != nullptr ? std::fabs(b->vals[size_t(j)]) : 0.0;
      bound[e] = 2.0 * double(in + 1) * kU32 * (abs_prod[e] + bias);
    }
  return bound;
}

// |gelu_new'(x)| <= 1.13 for all x (its maximum is about 1.129 near x = 2.4).
constexpr double kGeluSlope = 1.13;

// CPU gelu_new in double of float inputs: the exact function of the same pre-activations.
double gelu_exact(double v) {
  return 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
}

TEST(CudaLinear, ForwardMatchesCpuTwin) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int64_t n, in, out;
  };
  // out = 20 is not a multiple of 8: the GELU then runs after the GEMM instead of in its epilogue.
  const Case cases[] = {{1, 32, 48}, {7, 64, 80}, {129, 48, 96}, {3, 40, 24}, {5, 16, 20}};
  uint64_t stream = 200;
  for (DType dt : kDTypes) {
    for (const Case& c : cases) {
      for (bool with_bias : {false, true}) {
        for (bool gelu : {false, true}) {
          const std::string what =
              label("linear_forward ", dtype_name(dt), " n=", c.n, " in=", c.in, " out=", c.out,
                    " bias=", with_bias, " gelu=", gelu);
          const Host16 x = random16(size_t(c.n * c.in), dt, ++stream, 1.0);
          const Host16 w = random16(size_t(c.out * c.in), dt, ++stream, 0.3);
          const Host16 b = random16(size_t(c.out), dt, ++stream, 0.5);
          const size_t y_size = size_t(c.n * c.out);
          DeviceArray dx(x.bits), dw(w.bits), dbias(b.bits);
          DeviceArray dy(y_size * 2), dpre(y_size * 2);
          cuda::linear_forward(ctx(), dx.data(), dw.data(), with_bias ? dbias.data() : nullptr,
                               dy.data(), c.n, c.in, c.out, dt, gelu, gelu ? dpre.data() : nullptr);
          std::vector<float> pre(y_size);
          cpu::linear_forward<float>(x.vals.data(), w.vals.data(),
                                     with_bias ? b.vals.data() : nullptr, pre.data(), c.n, c.in,
                                     c.out);
          const std::vector<double> acc =
              accumulation_bound(x, w, with_bias ? &b : nullptr, c.n, c.in, c.out);
          if (!gelu) {
            std::vector<double> tol(y_size);
            for (size_t e = 0; e < y_size; ++e) tol[e] = rounding(dt, pre[e]) + acc[e];
            expect_close(what + " y", dy.download16(y_size, dt), to_double(pre), tol);
            continue;
          }
          std::vector<double> tol_pre(y_size), y_ref(y_size), tol_y(y_size);
          for (size_t e = 0; e < y_size; ++e) {
            tol_pre[e] = rounding(dt, pre[e]) + acc[e];
            y_ref[e] = gelu_exact(pre[e]);
            // gelu of a pre-activation that is off by at most its accumulation error and (when the
            // GELU is not fused into the GEMM) its rounding to dt; fp32 evaluation of gelu_new
            // (tanhf within 2 ulp, a few products) is within 2^-20 |pre|; one rounding of y.
            tol_y[e] = rounding(dt, y_ref[e]) + kGeluSlope * (acc[e] + rounding(dt, pre[e])) +
                       0x1p-20 * std::fabs(pre[e]);
          }
          expect_close(what + " pre_gelu", dpre.download16(y_size, dt), to_double(pre), tol_pre);
          expect_close(what + " y", dy.download16(y_size, dt), y_ref, tol_y);
          if (HasFailure()) return;
        }
      }
    }
  }
}

// The GELU of the fused fc_in is gelu_new, to fp32 accuracy: with one-hot weights and a zero bias
// every pre-activation is exactly an input value (the GEMM is exact), so y must be gelu_new of it
// rounded once. Inputs cover [-6, 6], where the tanh approximation differs from the erf GELU (by
// 11% of the value at -3) and where a low-precision tanh shows in the negative tail.
TEST(CudaLinear, GeluEpilogueIsGeluNew) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t n = 64, in = 16, out = 64;
  for (DType dt : kDTypes) {
    Host16 x(size_t(n * in), dt), w(size_t(out * in), dt), b(size_t(out), dt);
    for (size_t i = 0; i < x.size(); ++i) x.set(i, -6.0 + 12.0 * double(i) / double(x.size() - 1));
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) w.set(size_t(o * in + i), o % in == i ? 1.0 : 0.0);
    DeviceArray dx(x.bits), dw(w.bits), dbias(b.bits);
    DeviceArray dy(size_t(n * out) * 2), dpre(size_t(n * out) * 2);
    cuda::linear_forward(ctx(), dx.data(), dw.data(), dbias.data(), dy.data(), n, in, out, dt, true,
                         dpre.data());
    std::vector<double> pre(size_t(n * out)), y_ref(pre.size()), tol_pre(pre.size()),
        tol_y(pre.size());
    for (int64_t r = 0; r < n; ++r)
      for (int64_t o = 0; o < out; ++o) {
        const size_t e = size_t(r * out + o);
        pre[e] = x.vals[size_t(r * in + o % in)];
        y_ref[e] = gelu_exact(pre[e]);
        tol_pre[e] = 0.0;  // exact
        // One rounding of y; gelu_new in fp32 (tanhf within 2 ulp, a few roundings) is within
        // 2^-20 |pre| of the exact function.
        tol_y[e] = rounding(dt, y_ref[e]) + 0x1p-20 * std::fabs(pre[e]);
      }
    expect_close(label("gelu epilogue ", dtype_name(dt), " pre_gelu"),
                 dpre.download16(pre.size(), dt), pre, tol_pre);
    expect_close(label("gelu epilogue ", dtype_name(dt),
                       " y (if this fails, cuBLASLt's GELU is "
                       "not gelu_new to fp32 accuracy: set kGeluInEpilogue = false in "
                       "model/cuda/linear.cu)"),
                 dy.download16(pre.size(), dt), y_ref, tol_y);
  }
}

TEST(CudaLinear, BackwardMatchesCpuTwinAndIsDeterministic) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int64_t n, in, out;
  };
  // n = 300 spans three 128-row chunks of the bias-gradient reduction.
  const Case cases[] = {{1, 32, 48}, {7, 64, 80}, {129, 48, 96}, {300, 64, 40}};
  uint64_t stream = 300;
  for (DType dt : kDTypes) {
    for (const Case& c : cases) {
      for (int variant = 0; variant < 3; ++variant) {
        // 0: dx written, db; 1: dx accumulated, db; 2: no dx, no db.
        const bool accumulate_dx = variant == 1;
        const bool with_dx = variant != 2, with_db = variant != 2;
        const std::string what = label("linear_backward ", dtype_name(dt), " n=", c.n, " in=", c.in,
                                       " out=", c.out, " variant=", variant);
        const Host16 dy = random16(size_t(c.n * c.out), dt, ++stream, 1.0);
        const Host16 x = random16(size_t(c.n * c.in), dt, ++stream, 1.0);
        const Host16 w = random16(size_t(c.out * c.in), dt, ++stream, 0.3);
        // Existing gradients: random, since backward adds into them (dx only when accumulating).
        const Host16 dx_old = random16(size_t(c.n * c.in), dt, ++stream, 1.0);
        const Host16 dw_old = random16(size_t(c.out * c.in), dt, ++stream, 1.0);
        const Host16 db_old = random16(size_t(c.out), dt, ++stream, 1.0);
        DeviceArray d_dy(dy.bits), d_x(x.bits), d_w(w.bits);
        std::vector<uint16_t> got_bits[2][3];
        for (int run = 0; run < 2; ++run) {
          DeviceArray d_dx(dx_old.bits), d_dw(dw_old.bits), d_db(db_old.bits);
          cuda::linear_backward(
              ctx(), d_dy.data(), d_x.data(), d_w.data(), with_dx ? d_dx.data() : nullptr,
              d_dw.data(), with_db ? d_db.data() : nullptr, c.n, c.in, c.out, dt, accumulate_dx);
          got_bits[run][0] = d_dx.download<uint16_t>(dx_old.size());
          got_bits[run][1] = d_dw.download<uint16_t>(dw_old.size());
          got_bits[run][2] = d_db.download<uint16_t>(db_old.size());
        }
        for (int t = 0; t < 3; ++t)
          EXPECT_EQ(got_bits[0][t], got_bits[1][t]) << what << ": run-to-run difference in "
                                                    << (t == 0   ? "dx"
                                                        : t == 1 ? "dw"
                                                                 : "db");
        std::vector<float> dx_ref = dx_old.vals, dw_ref = dw_old.vals, db_ref = db_old.vals;
        cpu::linear_backward<float>(
            dy.vals.data(), x.vals.data(), w.vals.data(), with_dx ? dx_ref.data() : nullptr,
            dw_ref.data(), with_db ? db_ref.data() : nullptr, c.n, c.in, c.out, accumulate_dx);
        auto as_float = [&](const std::vector<uint16_t>& bits) {
          std::vector<float> v(bits.size());
          for (size_t i = 0; i < bits.size(); ++i) v[i] = from_bits(bits[i], dt);
          return v;
        };
        // dx = dy @ w: sums of `out` products; dw = dy^T x: sums of n products; db: sums of n.
        std::vector<float> abs_dx(dx_ref.size()), abs_dw(dw_ref.size()),
            abs_db(static_cast<size_t>(c.out), 0.0f);
        cpu::gemm<float>(false, false, c.n, c.in, c.out, 1.0f, abs_of(dy.vals).data(), c.out,
                         abs_of(w.vals).data(), c.in, 0.0f, abs_dx.data(), c.in);
        cpu::gemm<float>(true, false, c.out, c.in, c.n, 1.0f, abs_of(dy.vals).data(), c.out,
                         abs_of(x.vals).data(), c.in, 0.0f, abs_dw.data(), c.in);
        for (int64_t i = 0; i < c.n; ++i)
          for (int64_t j = 0; j < c.out; ++j)
            abs_db[size_t(j)] += std::fabs(dy.vals[size_t(i * c.out + j)]);
        std::vector<double> tol_dx(dx_ref.size()), tol_dw(dw_ref.size()), tol_db(db_ref.size());
        // An accumulating GEMM (beta = 1 into a 16-bit C) may round the product to the dtype
        // before adding C: cuBLASLt's small-M kernels do (measured on an H100 for n = 1), so
        // accumulated results allow one more rounding, of the product |ref - old|.
        for (size_t e = 0; e < tol_dx.size(); ++e) {
          const double old = accumulate_dx ? std::fabs(dx_old.vals[e]) : 0.0;
          const double product = accumulate_dx ? rounding(dt, dx_ref[e] - dx_old.vals[e]) : 0.0;
          tol_dx[e] = rounding(dt, dx_ref[e]) + product +
                      2.0 * double(c.out + 1) * kU32 * (abs_dx[e] + old);
        }
        for (size_t e = 0; e < tol_dw.size(); ++e)
          tol_dw[e] = rounding(dt, dw_ref[e]) + rounding(dt, dw_ref[e] - dw_old.vals[e]) +
                      2.0 * double(c.n + 1) * kU32 * (abs_dw[e] + std::fabs(dw_old.vals[e]));
        for (size_t e = 0; e < tol_db.size(); ++e)
          tol_db[e] = rounding(dt, db_ref[e]) +
                      2.0 * double(c.n + 1) * kU32 * (abs_db[e] + std::fabs(db_old.vals[e]));
        if (with_dx) {
          expect_close(what + " dx", as_float(got_bits[0][0]), to_double(dx_ref), tol_dx);
        } else {
          EXPECT_EQ(got_bits[0][0], dx_old.bits) << what << ": dx must be untouched";
        }
        expect_close(what + " dw", as_float(got_bits[0][1]), to_double(dw_ref), tol_dw);
        if (with_db) {
          expect_close(what + " db", as_float(got_bits[0][2]), to_double(db_ref), tol_db);
        } else {
          EXPECT_EQ(got_bits[0][2], db_old.bits) << what << ": db must be untouched";
        }
        if (HasFailure()) return;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// embedding

std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint64_t stream) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    ids[size_t(i)] = int32_t(random_bits(11, stream, uint64_t(i)) % uint64_t(vocab));
  return ids;
}

TEST(CudaEmbedding, ForwardCopiesRows) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int64_t n, d, vocab;
  };
  // d = 100 is not a multiple of 8 (the row-by-row path); the others take 16-byte copies.
  const Case cases[] = {{1, 16, 10}, {7, 100, 50}, {129, 256, 1000}, {64, 64, 50400}};
  uint64_t stream = 400;
  for (DType dt : kDTypes) {
    for (const Case& c : cases) {
      const Host16 wte = random16(size_t(c.vocab * c.d), dt, ++stream, 1.0);
      const std::vector<int32_t> ids = random_ids(c.n, c.vocab, ++stream);
      DeviceArray d_wte(wte.bits), d_ids(ids), d_out(size_t(c.n * c.d) * 2);
      cuda::embedding_forward(ctx(), d_ids.as<int32_t>(), d_wte.data(), d_out.data(), c.n, c.d, dt);
      std::vector<uint16_t> expect(size_t(c.n * c.d));
      for (int64_t i = 0; i < c.n; ++i)
        std::copy_n(wte.bits.begin() + int64_t(ids[size_t(i)]) * c.d, c.d,
                    expect.begin() + i * c.d);
      // A gather copies bit patterns: exact.
      EXPECT_EQ(d_out.download<uint16_t>(expect.size()), expect)
          << dtype_name(dt) << " n=" << c.n << " d=" << c.d;
    }
  }
}

TEST(CudaEmbedding, BackwardMatchesCpuTwinAndIsDeterministic) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int64_t n, d, vocab;
  };
  // Few ids (long runs of repeats), d not a multiple of 8 or wider than one 256-column tile, one
  // token, one id for 1000 tokens, and GPT-J's vocabulary.
  const Case cases[] = {{1, 16, 10}, {7, 100, 5}, {129, 300, 37}, {1000, 64, 1}, {4096, 64, 50400}};
  uint64_t stream = 500;
  for (DType dt : kDTypes) {
    for (const Case& c : cases) {
      const std::string what =
          label("embedding_backward ", dtype_name(dt), " n=", c.n, " d=", c.d, " vocab=", c.vocab);
      const std::vector<int32_t> ids = random_ids(c.n, c.vocab, ++stream);
      const Host16 dout = random16(size_t(c.n * c.d), dt, ++stream, 1.0);
      const Host16 dwte_old = random16(size_t(c.vocab * c.d), dt, ++stream, 1.0);
      DeviceArray d_ids(ids), d_dout(dout.bits);
      std::vector<uint16_t> got[2];
      for (int run = 0; run < 2; ++run) {
        DeviceArray d_dwte(dwte_old.bits);
        cuda::embedding_backward(ctx(), d_ids.as<int32_t>(), d_dout.data(), d_dwte.data(), c.n, c.d,
                                 c.vocab, dt);
        got[run] = d_dwte.download<uint16_t>(dwte_old.size());
      }
      EXPECT_EQ(got[0], got[1]) << what << ": run-to-run difference";
      std::vector<float> ref = dwte_old.vals;
      cpu::embedding_backward<float>(ids.data(), dout.vals.data(), ref.data(), c.n, c.d, c.vocab);
      std::vector<float> abs_sum(ref.size(), 0.0f);  // sum of |dout| added into each element
      cpu::embedding_backward<float>(ids.data(), abs_of(dout.vals).data(), abs_sum.data(), c.n, c.d,
                                     c.vocab);
      std::vector<int64_t> count(static_cast<size_t>(c.vocab), 0);
      for (int32_t id : ids) ++count[size_t(id)];
      std::vector<float> got_vals(ref.size());
      std::vector<double> tol(ref.size());
      for (size_t e = 0; e < ref.size(); ++e) {
        got_vals[e] = from_bits(got[0][e], dt);
        const int64_t k = count[e / size_t(c.d)];
        // One rounding; fp32 sums of k rows plus the old value on both sides (the CPU adds into the
        // old value token by token, the GPU sums the tokens first).
        tol[e] = rounding(dt, ref[e]) +
                 2.0 * double(k + 1) * kU32 * (abs_sum[e] + std::fabs(dwte_old.vals[e]));
      }
      expect_close(what, got_vals, to_double(ref), tol);
      // Rows of ids that never occur are untouched.
      for (int64_t v = 0; v < c.vocab; ++v) {
        if (count[size_t(v)] != 0) continue;
        for (int64_t j = 0; j < c.d; ++j) {
          const size_t e = size_t(v * c.d + j);
          ASSERT_EQ(got[0][e], dwte_old.bits[e]) << what << ": row " << v << " changed";
        }
      }
      if (HasFailure()) return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// layernorm

TEST(CudaLayerNorm, ForwardMatchesCpuTwin) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int64_t n, d;
  };
  // d = 100 takes the element-by-element path; 4096 is GPT-J-6B's d_model, the largest row held
  // in registers (64 and 520 leave lanes or packs of the held row empty); 4104 takes the 16-byte
  // loop over a row too long to hold.
  const Case cases[] = {{1, 64}, {7, 100}, {129, 4096}, {300, 520}, {5, 4104}};
  const double eps = 1e-5;
  uint64_t stream = 600;
  for (DType dt : kDTypes) {
    for (const Case& c : cases) {
      const std::string what = label("layernorm_forward ", dtype_name(dt), " n=", c.n, " d=", c.d);
      // A mean of 3 against a standard deviation of 1: the two-pass variance matters.
      const Host16 x = random16(size_t(c.n * c.d), dt, ++stream, 1.0, 3.0);
      const Host16 w = random16(size_t(c.d), dt, ++stream, 0.2, 1.0);
      const Host16 b = random16(size_t(c.d), dt, ++stream, 0.2);
      DeviceArray d_x(x.bits), d_w(w.bits), d_b(b.bits), d_y(x.size() * 2);
      DeviceArray d_mean(size_t(c.n) * 4), d_rstd(size_t(c.n) * 4);
      cuda::layernorm_forward(ctx(), d_x.data(), d_w.data(), d_b.data(), d_y.data(),
                              d_mean.as<float>(), d_rstd.as<float>(), c.n, c.d, eps, dt);
      std::vector<float> y(x.size()), mean(static_cast<size_t>(c.n)),
          rstd(static_cast<size_t>(c.n));
      cpu::layernorm_forward<float>(x.vals.data(), w.vals.data(), b.vals.data(), y.data(),
                                    mean.data(), rstd.data(), c.n, c.d, eps);
      std::vector<double> tol_mean(static_cast<size_t>(c.n)), tol_rstd(static_cast<size_t>(c.n)),
          tol_y(y.size());
      const double dd = double(c.d);
      for (int64_t i = 0; i < c.n; ++i) {
        double abs_sum = 0.0;
        for (int64_t j = 0; j < c.d; ++j) abs_sum += std::fabs(x.vals[size_t(i * c.d + j)]);
        // mean: fp32 sums of d terms on both sides, then a division.
        const double d_mean = 2.0 * (dd + 1.0) * kU32 * abs_sum / dd;
        tol_mean[size_t(i)] = d_mean;
        // rstd: the variance is a sum of d positive terms (each with 2 roundings), relative error
        // 2 (d + 3) u_32 on both sides, plus the mean's error squared over the variance (second
        // order); the square root halves it; the division and sqrt add 2 u_32.
        const double var = 1.0 / (double(rstd[size_t(i)]) * rstd[size_t(i)]);
        const double rel_r = (dd + 3.0) * 2.0 * kU32 + d_mean * d_mean / var + 4.0 * kU32;
        tol_rstd[size_t(i)] = rel_r * rstd[size_t(i)];
        for (int64_t j = 0; j < c.d; ++j) {
          const size_t e = size_t(i * c.d + j);
          const double xhat = (x.vals[e] - mean[size_t(i)]) * double(rstd[size_t(i)]);
          // y = (x - mean) rstd w + b: the errors of mean and rstd carried through, four fp32
          // roundings of the expression on each side, one rounding to dt.
          tol_y[e] =
              rounding(dt, y[e]) +
              std::fabs(w.vals[size_t(j)]) * (rstd[size_t(i)] * d_mean + std::fabs(xhat) * rel_r) +
              8.0 * kU32 * (std::fabs(xhat * w.vals[size_t(j)]) + std::fabs(b.vals[size_t(j)]));
        }
      }
      expect_close(what + " mean", d_mean.download<float>(size_t(c.n)), to_double(mean), tol_mean);
      expect_close(what + " rstd", d_rstd.download<float>(size_t(c.n)), to_double(rstd), tol_rstd);
      expect_close(what + " y", d_y.download16(y.size(), dt), to_double(y), tol_y);
      if (HasFailure()) return;
    }
  }
}

TEST(CudaLayerNorm, BackwardMatchesCpuTwinAndIsDeterministic) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int64_t n, d;
  };
  // n = 300 spans three 128-row chunks of the dw/db reduction.
  const Case cases[] = {{1, 64}, {7, 100}, {129, 4096}, {300, 520}};
  uint64_t stream = 700;
  for (DType dt : kDTypes) {
    for (const Case& c : cases) {
      const std::string what = label("layernorm_backward ", dtype_name(dt), " n=", c.n, " d=", c.d);
      const Host16 x = random16(size_t(c.n * c.d), dt, ++stream, 1.0, 3.0);
      const Host16 w = random16(size_t(c.d), dt, ++stream, 0.2, 1.0);
      const Host16 b = random16(size_t(c.d), dt, ++stream, 0.2);
      const Host16 dy = random16(size_t(c.n * c.d), dt, ++stream, 1.0);
      // Existing gradients (backward adds into dx, dw and db).
      const Host16 dx_old = random16(x.size(), dt, ++stream, 1.0);
      const Host16 dw_old = random16(size_t(c.d), dt, ++stream, 1.0);
      const Host16 db_old = random16(size_t(c.d), dt, ++stream, 1.0);
      // The forward's statistics from the CPU, given to both sides.
      std::vector<float> y(x.size()), mean(static_cast<size_t>(c.n)),
          rstd(static_cast<size_t>(c.n));
      cpu::layernorm_forward<float>(x.vals.data(), w.vals.data(), b.vals.data(), y.data(),
                                    mean.data(), rstd.data(), c.n, c.d, 1e-5);
      DeviceArray d_x(x.bits), d_w(w.bits), d_dy(dy.bits), d_mean(mean), d_rstd(rstd);
      std::vector<uint16_t> got[2][3];
      for (int run = 0; run < 2; ++run) {
        DeviceArray d_dx(dx_old.bits), d_dw(dw_old.bits), d_db(db_old.bits);
        cuda::layernorm_backward(ctx(), d_dy.data(), d_x.data(), d_w.data(), d_mean.as<float>(),
                                 d_rstd.as<float>(), d_dx.data(), d_dw.data(), d_db.data(), c.n,
                                 c.d, dt);
        got[run][0] = d_dx.download<uint16_t>(x.size());
        got[run][1] = d_dw.download<uint16_t>(size_t(c.d));
        got[run][2] = d_db.download<uint16_t>(size_t(c.d));
      }
      for (int t = 0; t < 3; ++t)
        EXPECT_EQ(got[0][t], got[1][t]) << what << ": run-to-run difference in "
                                        << (t == 0   ? "dx"
                                            : t == 1 ? "dw"
                                                     : "db");
      std::vector<float> dx_ref = dx_old.vals, dw_ref = dw_old.vals, db_ref = db_old.vals;
      cpu::layernorm_backward<float>(dy.vals.data(), x.vals.data(), w.vals.data(), mean.data(),
                                     rstd.data(), dx_ref.data(), dw_ref.data(), db_ref.data(), c.n,
                                     c.d);
      const double dd = double(c.d);
      std::vector<double> tol_dx(x.size()), tol_dw(static_cast<size_t>(c.d)),
          tol_db(static_cast<size_t>(c.d));
      std::vector<double> abs_w(static_cast<size_t>(c.d), 0.0),
          abs_b(static_cast<size_t>(c.d), 0.0);
      for (int64_t i = 0; i < c.n; ++i) {
        const double r = rstd[size_t(i)];
        // Row sums of g = dy w and g xhat, their means, and those means' error bounds (fp32 sums
        // of d terms with a rounding or two each, on both sides).
        double sum_g = 0.0, sum_gx = 0.0, abs_g = 0.0, abs_gx = 0.0;
        for (int64_t j = 0; j < c.d; ++j) {
          const size_t e = size_t(i * c.d + j);
          const double g = double(dy.vals[e]) * w.vals[size_t(j)];
          const double xhat = (x.vals[e] - mean[size_t(i)]) * r;
          sum_g += g;
          sum_gx += g * xhat;
          abs_g += std::fabs(g);
          abs_gx += std::fabs(g * xhat);
          abs_w[size_t(j)] += std::fabs(dy.vals[e] * xhat);
          abs_b[size_t(j)] += std::fabs(dy.vals[e]);
        }
        const double err_mg = 2.0 * (dd + 2.0) * kU32 * abs_g / dd;
        const double err_mgx = 2.0 * (dd + 4.0) * kU32 * abs_gx / dd;
        for (int64_t j = 0; j < c.d; ++j) {
          const size_t e = size_t(i * c.d + j);
          const double g = double(dy.vals[e]) * w.vals[size_t(j)];
          const double xhat = (x.vals[e] - mean[size_t(i)]) * r;
          // dx += r (g - mean_g - xhat mean_gx): the means' errors, then about eight fp32
          // roundings on each side of the terms' magnitudes, one rounding to dt.
          const double terms = std::fabs(g) + std::fabs(sum_g / dd) + std::fabs(xhat * sum_gx / dd);
          tol_dx[e] = rounding(dt, dx_ref[e]) + r * (err_mg + std::fabs(xhat) * err_mgx) +
                      16.0 * kU32 * (r * terms + std::fabs(dx_old.vals[e]));
        }
      }
      for (int64_t j = 0; j < c.d; ++j) {
        const size_t e = size_t(j);
        // Column sums of n terms (each with a few roundings) plus the old value, both sides.
        tol_dw[e] = rounding(dt, dw_ref[e]) +
                    2.0 * (double(c.n) + 4.0) * kU32 * (abs_w[e] + std::fabs(dw_old.vals[e]));
        tol_db[e] = rounding(dt, db_ref[e]) +
                    2.0 * (double(c.n) + 1.0) * kU32 * (abs_b[e] + std::fabs(db_old.vals[e]));
      }
      auto as_float = [&](const std::vector<uint16_t>& bits) {
        std::vector<float> v(bits.size());
        for (size_t i = 0; i < bits.size(); ++i) v[i] = from_bits(bits[i], dt);
        return v;
      };
      expect_close(what + " dx", as_float(got[0][0]), to_double(dx_ref), tol_dx);
      expect_close(what + " dw", as_float(got[0][1]), to_double(dw_ref), tol_dw);
      expect_close(what + " db", as_float(got[0][2]), to_double(db_ref), tol_db);
      if (HasFailure()) return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// rotary

TEST(CudaRotary, MatchesCpuTwin) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int64_t batch, seq, heads, head_dim, rotary_dim;
  };
  // GPT-J-6B's head (Dh 256, rotary 64) at up to 2048 positions, small heads, odd sequence lengths,
  // rotary_dim == head_dim, and no rotation at all.
  const Case cases[] = {{1, 1, 1, 8, 8},       {3, 7, 2, 16, 8},  {2, 129, 4, 256, 64},
                        {1, 2048, 2, 256, 64}, {2, 5, 3, 12, 12}, {1, 3, 2, 8, 0}};
  uint64_t stream = 800;
  for (DType dt : kDTypes) {
    for (const Case& c : cases) {
      for (bool backward : {false, true}) {
        const std::string what =
            label(backward ? "rotary_backward " : "rotary_forward ", dtype_name(dt), " B=", c.batch,
                  " T=", c.seq, " H=", c.heads, " Dh=", c.head_dim, " rd=", c.rotary_dim);
        const size_t size = size_t(c.batch * c.seq * c.heads * c.head_dim);
        const Host16 x = random16(size, dt, ++stream, 1.0);
        DeviceArray d_x(x.bits);
        std::vector<float> ref = x.vals;
        if (!backward) {
          cuda::rotary_forward(ctx(), d_x.data(), c.batch, c.seq, c.heads, c.head_dim, c.rotary_dim,
                               dt);
          cpu::rotary_forward<float>(ref.data(), c.batch, c.seq, c.heads, c.head_dim, c.rotary_dim);
        } else {
          cuda::rotary_backward(ctx(), d_x.data(), c.batch, c.seq, c.heads, c.head_dim,
                                c.rotary_dim, dt);
          cpu::rotary_backward<float>(ref.data(), c.batch, c.seq, c.heads, c.head_dim,
                                      c.rotary_dim);
        }
        const std::vector<uint16_t> got_bits = d_x.download<uint16_t>(size);
        std::vector<float> got;
        std::vector<double> ref_rot, tol;
        for (size_t e = 0; e < size; ++e) {
          const int64_t j = int64_t(e % size_t(c.head_dim));
          if (j >= c.rotary_dim) {
            // Dims past rotary_dim pass through untouched.
            ASSERT_EQ(got_bits[e], x.bits[e]) << what << " element " << e;
            continue;
          }
          const size_t pair = e - size_t(j % 2);
          got.push_back(from_bits(got_bits[e], dt));
          ref_rot.push_back(ref[e]);
          // Same fp32 inverse frequencies and angles on both sides; sinf/cosf within 2 ulp on each
          // (CUDA vs glibc); two products and a sum in fp32; one rounding to dt.
          tol.push_back(rounding(dt, ref[e]) +
                        0x1p-20 * (std::fabs(x.vals[pair]) + std::fabs(x.vals[pair + 1])));
        }
        expect_close(what, got, ref_rot, tol);
        if (HasFailure()) return;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// elementwise

TEST(CudaElementwise, GeluMatchesCpuTwin) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  uint64_t stream = 900;
  // Lengths around the 8-wide packs; `offset` 1 starts the buffers 2 bytes past 16-byte alignment,
  // which takes the element-by-element path.
  for (DType dt : kDTypes) {
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(4099)}) {
      for (int64_t offset : {int64_t(0), int64_t(1)}) {
        const std::string what = label("gelu ", dtype_name(dt), " n=", n, " offset=", offset);
        Host16 x = random16(size_t(n + offset), dt, ++stream, 3.0);
        const double specials[] = {0.0, -10.0, 10.0, -6.0, -3.0, 2.4};
        for (size_t s = 0; s < std::size(specials) && s < size_t(n); ++s)
          x.set(size_t(offset) + s, specials[s]);
        const Host16 dy = random16(size_t(n + offset), dt, ++stream, 1.0);
        DeviceArray d_x(x.bits), d_dy(dy.bits), d_y(x.size() * 2), d_dx(x.size() * 2);
        auto* xp = d_x.as<uint16_t>() + offset;
        cuda::gelu_forward(ctx(), xp, d_y.as<uint16_t>() + offset, n, dt);
        cuda::gelu_backward(ctx(), xp, d_dy.as<uint16_t>() + offset, d_dx.as<uint16_t>() + offset,
                            n, dt);
        const std::vector<float> y_all = d_y.download16(x.size(), dt);
        const std::vector<float> dx_all = d_dx.download16(x.size(), dt);
        const std::vector<float> xs(x.vals.begin() + offset, x.vals.end());
        const std::vector<float> dys(dy.vals.begin() + offset, dy.vals.end());
        std::vector<float> y_ref(static_cast<size_t>(n)), dx_ref(static_cast<size_t>(n));
        cpu::gelu_forward<float>(xs.data(), y_ref.data(), n);
        cpu::gelu_backward<float>(xs.data(), dys.data(), dx_ref.data(), n);
        std::vector<double> tol_y(static_cast<size_t>(n)), tol_dx(static_cast<size_t>(n));
        for (size_t i = 0; i < size_t(n); ++i) {
          const double v = std::fabs(xs[i]);
          // forward: tanhf within 2 ulp and a few fp32 roundings on each side, at most 2^-21 |x|
          // each (the tanh error is scaled by 0.5 |x|); one rounding to dt.
          tol_y[i] = rounding(dt, y_ref[i]) + 0x1p-20 * v;
          // backward: gelu' = 0.5 (1 + th) + 0.5 x (1 - th^2) c (1 + 3 a x^2); an ulp-level error
          // in th is amplified by at most 1 + |x| (1 + 0.134 x^2) (both sides); one rounding.
          tol_dx[i] = rounding(dt, dx_ref[i]) +
                      0x1p-20 * std::fabs(dys[i]) * (1.0 + v * (1.0 + 0.134 * v * v));
        }
        expect_close(what + " forward", std::vector<float>(y_all.begin() + offset, y_all.end()),
                     to_double(y_ref), tol_y);
        expect_close(what + " backward", std::vector<float>(dx_all.begin() + offset, dx_all.end()),
                     to_double(dx_ref), tol_dx);
        if (HasFailure()) return;
      }
    }
  }
}

TEST(CudaElementwise, Add3IsExactAndMayAliasItsFirstInput) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  uint64_t stream = 1000;
  for (DType dt : kDTypes) {
    for (int64_t n : {int64_t(1), int64_t(13), int64_t(4096), int64_t(100003)}) {
      for (bool alias : {false, true}) {
        const Host16 a = random16(size_t(n), dt, ++stream, 1.0);
        const Host16 b = random16(size_t(n), dt, ++stream, 1.0);
        const Host16 c = random16(size_t(n), dt, ++stream, 1.0);
        DeviceArray d_a(a.bits), d_b(b.bits), d_c(c.bits), d_out(size_t(n) * 2);
        void* out = alias ? d_a.data() : d_out.data();
        cuda::add3(ctx(), d_a.data(), d_b.data(), d_c.data(), out, n, dt);
        // (a + b) + c in fp32 is the same computation on both sides, rounded once to nearest
        // even: the bits must match exactly.
        std::vector<uint16_t> expect(static_cast<size_t>(n));
        for (size_t i = 0; i < size_t(n); ++i)
          expect[i] = to_bits(a.vals[i] + b.vals[i] + c.vals[i], dt);
        const DeviceArray& result = alias ? d_a : d_out;
        EXPECT_EQ(result.download<uint16_t>(size_t(n)), expect)
            << dtype_name(dt) << " n=" << n << " alias=" << alias;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// cross-entropy

TEST(CudaCrossEntropy, MatchesCpuTwinAndIsDeterministic) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int64_t n, v;
  };
  // V = 17 and 1001 take the element-by-element path; 1000 and GPT-J's 50400 the 16-byte packs.
  const Case cases[] = {{1, 1000}, {7, 1000}, {3, 17}, {5, 1001}, {129, 50400}};
  uint64_t stream = 1100;
  for (DType dt : kDTypes) {
    for (const Case& c : cases) {
      for (bool with_grad : {false, true}) {
        const std::string what =
            label("cross_entropy ", dtype_name(dt), " n=", c.n, " v=", c.v, " grad=", with_grad);
        const size_t size = size_t(c.n * c.v);
        Host16 logits = random16(size, dt, ++stream, 2.0);
        // One large logit per row: the max matters.
        for (int64_t i = 0; i < c.n; ++i)
          logits.set(size_t(i * c.v) + random_bits(13, stream, uint64_t(i)) % uint64_t(c.v), 12.0);
        std::vector<int32_t> targets = random_ids(c.n, c.v, ++stream);
        int64_t counted = c.n;
        if (c.n > 1) {
          targets[1] = cpu::kIgnoreIndex;
          --counted;
        }
        const float dloss = with_grad ? 1.0f / float(counted) : 0.0f;
        // The reference is the CPU twin in double: its float instantiation sums the V exponentials
        // sequentially, and that sum's own error bound (V u_32, 3e-3 for V = 50400) would swamp
        // the tolerance. The double reference is exact to ~1e-13 here.
        const std::vector<double> x(logits.vals.begin(), logits.vals.end());
        std::vector<double> loss_ref(static_cast<size_t>(c.n), 0.0), dlogits_ref(size);
        for (int64_t i = 0; i < c.n; ++i)
          loss_ref[size_t(i)] = cpu::cross_entropy_forward<double>(
              x.data() + i * c.v, &targets[size_t(i)], 1, c.v, nullptr);
        cpu::cross_entropy_backward<double>(x.data(), targets.data(), dlogits_ref.data(), c.n, c.v,
                                            double(dloss));
        DeviceArray d_targets(targets);
        std::vector<uint16_t> got_logits[2];
        std::vector<float> got_loss[2];
        for (int run = 0; run < 2; ++run) {
          DeviceArray d_logits(logits.bits), d_loss(size_t(c.n) * 4);
          cuda::cross_entropy(ctx(), d_logits.data(), d_targets.as<int32_t>(), d_loss.as<float>(),
                              c.n, c.v, dloss, dt);
          got_logits[run] = d_logits.download<uint16_t>(size);
          got_loss[run] = d_loss.download<float>(size_t(c.n));
        }
        EXPECT_EQ(got_logits[0], got_logits[1]) << what << ": run-to-run difference in dlogits";
        EXPECT_EQ(got_loss[0], got_loss[1]) << what << ": run-to-run difference in losses";
        // Relative error bound of the GPU's sum of exponentials, per row: each thread adds at most
        // ceil(V / 256) + 8 terms online (the kernel runs at least 256 threads per row and reads
        // packs of 8), each step with an expf (2 ulp), a product and a sum (8 u_32 allowed); then a
        // tree of at most 10 levels of the same; and every exponent x - max is rounded in fp32,
        // which moves exp(x - max) by up to |x - max| u_32 relative.
        std::vector<double> kappa(static_cast<size_t>(c.n)), row_max(static_cast<size_t>(c.n)),
            row_sum(static_cast<size_t>(c.n));
        std::vector<double> tol_loss(static_cast<size_t>(c.n));
        for (int64_t i = 0; i < c.n; ++i) {
          const double* row = x.data() + i * c.v;
          const double hi = *std::max_element(row, row + c.v);
          const double lo = *std::min_element(row, row + c.v);
          double sum = 0.0;
          for (int64_t j = 0; j < c.v; ++j) sum += std::exp(row[j] - hi);
          row_max[size_t(i)] = hi;
          row_sum[size_t(i)] = sum;
          kappa[size_t(i)] =
              (std::ceil(double(c.v) / 256.0) + 8.0 + 10.0) * 8.0 * kU32 + (hi - lo) * kU32;
          const double x_t = targets[size_t(i)] >= 0 ? row[targets[size_t(i)]] : 0.0;
          // loss = log(sum) - (x_t - max): the sum's relative error becomes an absolute one; logf
          // and the two subtractions round at the magnitudes involved.
          tol_loss[size_t(i)] =
              kappa[size_t(i)] +
              4.0 * kU32 * (std::fabs(loss_ref[size_t(i)]) + std::fabs(x_t) + std::fabs(hi));
        }
        expect_close(what + " losses", got_loss[0], loss_ref, tol_loss);
        if (!with_grad) {
          EXPECT_EQ(got_logits[0], logits.bits) << what << ": dloss == 0 must leave the logits";
        } else {
          std::vector<float> got(size);
          std::vector<double> tol(size);
          for (size_t e = 0; e < size; ++e) {
            got[e] = from_bits(got_logits[0][e], dt);
            const size_t i = e / size_t(c.v);
            // The softmax probability of this logit (0 for ignored rows, which are exactly 0).
            const double p =
                targets[i] == cpu::kIgnoreIndex ? 0.0 : std::exp(x[e] - row_max[i]) / row_sum[i];
            // dloss (p - onehot): p's relative error is the sum's plus expf (2 ulp), its rounded
            // exponent, the division and the product; the target's p - 1 rounds once more at
            // magnitude 1; one rounding to dt.
            tol[e] = rounding(dt, dlogits_ref[e]) +
                     double(dloss) * (p * (kappa[i] + 8.0 * kU32) + 2.0 * kU32);
          }
          expect_close(what + " dlogits", got, dlogits_ref, tol);
        }
        if (HasFailure()) return;
      }
    }
  }
}

}  // namespace
}  // namespace zt::model
