// Tests of the CPU gemm: against a naive triple loop for every trans combination, awkward sizes
// and leading dimensions, alpha/beta, NaN in C with beta = 0; float against double; a GFLOP/s
// figure for 512^3 (printed, not asserted).
#include <gtest/gtest.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "model/ops_cpu.h"
#include "tests/model/gradcheck.h"

namespace zt::model::cpu {
namespace {

using testing::kDoubleUnit;
using testing::kFloatUnit;
using testing::random_float_values;

struct GemmCase {
  bool trans_a, trans_b;
  int64_t m, n, k;
  int64_t pad_a, pad_b, pad_c;  // extra leading-dimension slack
  double alpha, beta;
};

// Storage of op(A) [M, K] for the given trans: rows x cols of the stored matrix.
int64_t stored_rows(bool trans, int64_t r, int64_t c) { return trans ? c : r; }
int64_t stored_cols(bool trans, int64_t r, int64_t c) { return trans ? r : c; }

// The reference: C = alpha * sum_k op(A)[i, k] op(B)[k, j] + beta * C, in double, plus the
// magnitude sum |alpha| sum_k |a||b| + |beta||c| that bounds the rounding error of any order.
void naive_gemm(const GemmCase& g, const std::vector<double>& A, int64_t lda,
                const std::vector<double>& B, int64_t ldb, std::vector<double>& C, int64_t ldc,
                std::vector<double>& magnitude) {
  magnitude.assign(C.size(), 0.0);
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      double sum = 0.0, mag = 0.0;
      for (int64_t p = 0; p < g.k; ++p) {
        const double a = g.trans_a ? A[size_t(p * lda + i)] : A[size_t(i * lda + p)];
        const double b = g.trans_b ? B[size_t(j * ldb + p)] : B[size_t(p * ldb + j)];
        sum += a * b;
        mag += std::abs(a * b);
      }
      double& c = C[size_t(i * ldc + j)];
      const double old = g.beta == 0.0 ? 0.0 : c;
      c = g.alpha * sum + g.beta * old;
      magnitude[size_t(i * ldc + j)] = std::abs(g.alpha) * mag + std::abs(g.beta * old);
    }
  }
}

void run_case(const GemmCase& g, uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "trans_a=" << g.trans_a << " trans_b=" << g.trans_b << " M=" << g.m
               << " N=" << g.n << " K=" << g.k << " alpha=" << g.alpha << " beta=" << g.beta);
  const int64_t lda = stored_cols(g.trans_a, g.m, g.k) + g.pad_a;
  const int64_t ldb = stored_cols(g.trans_b, g.k, g.n) + g.pad_b;
  const int64_t ldc = g.n + g.pad_c;
  const size_t a_size = size_t(std::max<int64_t>(stored_rows(g.trans_a, g.m, g.k) * lda, 1));
  const size_t b_size = size_t(std::max<int64_t>(stored_rows(g.trans_b, g.k, g.n) * ldb, 1));
  const size_t c_size = size_t(std::max<int64_t>(g.m * ldc, 1));
  std::vector<double> A = random_float_values(a_size, seed);
  std::vector<double> B = random_float_values(b_size, seed + 1);
  std::vector<double> C0 = random_float_values(c_size, seed + 2);
  if (g.beta == 0.0) {
    // beta == 0 must ignore C's old contents, NaN included.
    for (double& c : C0) c = std::numeric_limits<double>::quiet_NaN();
  }

  std::vector<double> expected = C0, magnitude;
  naive_gemm(g, A, lda, B, ldb, expected, ldc, magnitude);

  std::vector<double> got = C0;
  gemm<double>(g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, A.data(), lda, B.data(), ldb, g.beta,
               got.data(), ldc);
  std::vector<float> got_f(C0.begin(), C0.end());
  const std::vector<float> A_f(A.begin(), A.end()), B_f(B.begin(), B.end());
  gemm<float>(g.trans_a, g.trans_b, g.m, g.n, g.k, float(g.alpha), A_f.data(), lda, B_f.data(), ldb,
              float(g.beta), got_f.data(), ldc);

  int failures = 0;
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      const size_t idx = size_t(i * ldc + j);
      if (j >= g.n) {
        // Padding columns of C are never touched (NaN stays NaN: compare bits).
        EXPECT_EQ(std::isnan(got[idx]), std::isnan(C0[idx]));
        if (!std::isnan(C0[idx])) {
          EXPECT_EQ(got[idx], C0[idx]);
        }
        continue;
      }
      // Double vs double in another summation order: each side is within (K + 2) * 2^-53 *
      // magnitude of the exact value (K products and sums, the alpha and beta steps).
      const double tol_d = 2.0 * double(g.k + 2) * kDoubleUnit * magnitude[idx];
      // Float vs the double reference (inputs are exactly representable in float): the same
      // bound in fp32 units, (K + 2) * 2^-24 * sum |alpha a b| + |beta c|.
      const double tol_f = double(g.k + 2) * kFloatUnit * magnitude[idx] + tol_d;
      if (!(std::abs(got[idx] - expected[idx]) <= tol_d) && failures++ < 5) {
        ADD_FAILURE() << "double C[" << i << "," << j << "] = " << got[idx] << ", expected "
                      << expected[idx];
      }
      if (!(std::abs(double(got_f[idx]) - expected[idx]) <= tol_f) && failures++ < 5) {
        ADD_FAILURE() << "float C[" << i << "," << j << "] = " << got_f[idx] << ", expected "
                      << expected[idx];
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(OpsGemm, MatchesNaiveForAllTransCombinationsAndAwkwardSizes) {
  // Sizes 0, 1 and primes, plus sizes that cross the blocking (K > 256 = kKc, M > 128 = kMc,
  // N > 256 = one tile) so partial panels and several K blocks are exercised.
  const int64_t shapes[][3] = {{0, 5, 3},    {5, 0, 3},    {5, 3, 0},    {1, 1, 1},    {1, 7, 1},
                               {7, 1, 13},   {2, 3, 5},    {13, 17, 7},  {31, 29, 37}, {67, 5, 263},
                               {131, 11, 3}, {5, 263, 19}, {37, 41, 521}};
  uint64_t seed = 100;
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      for (const auto& s : shapes) {
        run_case({ta == 1, tb == 1, s[0], s[1], s[2], 0, 0, 0, 1.0, 0.0}, seed++);
        run_case({ta == 1, tb == 1, s[0], s[1], s[2], 3, 5, 2, -0.75, 0.5}, seed++);
        run_case({ta == 1, tb == 1, s[0], s[1], s[2], 1, 0, 7, 2.0, 1.0}, seed++);
      }
    }
  }
}

TEST(OpsGemm, BetaZeroIgnoresNanAndAlphaZeroOnlyScales) {
  // alpha == 0: C = beta * C without reading A or B (here full of NaN).
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> A(12, nan), B(12, nan), C = {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0};
  gemm<double>(false, false, 3, 3, 4, 0.0, A.data(), 4, B.data(), 3, 2.0, C.data(), 3);
  for (int i = 0; i < 9; ++i) EXPECT_EQ(C[size_t(i)], 2.0 * (i + 1));
  // K == 0 and beta == 0: C becomes exactly 0 even when it held NaN.
  std::vector<double> Cn(9, nan);
  gemm<double>(false, false, 3, 3, 0, 1.0, A.data(), 1, B.data(), 3, 0.0, Cn.data(), 3);
  for (double c : Cn) EXPECT_EQ(c, 0.0);
}

TEST(OpsGemm, LargeShapesAcrossChunkBoundaries) {
  // M > 2048 (several packed A chunks) and N > 4096 (several B slabs), with small other dims.
  run_case({false, true, 2053, 5, 9, 1, 2, 3, 1.0, 0.0}, 900);
  run_case({true, false, 3, 4099, 5, 0, 1, 0, 1.5, -1.0}, 901);
}

// Prints the GFLOP/s of a 512 x 512 x 512 float gemm (the figure DESIGN.md asks benchmarks to
// print rather than assert).
TEST(OpsGemmBenchmark, Float512GflopsPrinted) {
  const int64_t n = 512;
  const std::vector<float> A = testing::to_float(random_float_values(size_t(n * n), 7));
  const std::vector<float> B = testing::to_float(random_float_values(size_t(n * n), 8));
  std::vector<float> C(size_t(n * n));
  gemm<float>(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n);  // warm
  const int reps = 10;
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) {
    gemm<float>(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double gflops = 2.0 * double(n * n * n) * reps / seconds * 1e-9;
  std::printf("[ gemm     ] float 512x512x512, %d OpenMP threads: %.1f GFLOP/s\n",
              omp_get_max_threads(), gflops);
  RecordProperty("gflops", std::to_string(gflops));
  EXPECT_GT(gflops, 0.0);
}

}  // namespace
}  // namespace zt::model::cpu
