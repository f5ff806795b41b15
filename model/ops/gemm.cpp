// CPU GEMM: cache-blocked, packed panels, a register-tiled micro-kernel, OpenMP over blocks of C.
//
// Structure (the usual Goto/BLIS loop nest, written in plain C++ so that GCC -O3 vectorises the
// micro-kernel with whatever SIMD the build targets; SSE2 on the x86-64 baseline):
//   for jc over N in kNc columns
//     for pc over K in kKc (the K order is fixed: it decides the rounding)
//       pack op(B)[pc:pc+kc, jc:jc+nc] into kNr-column panels, [kc][kNr] each
//       for ic over M in kMcChunk rows
//         pack op(A)[ic:ic+mc, pc:pc+kc] into kMr-row panels, [kc][kMr] each
//         for each tile (kMc rows x kTileCols columns) of that block of C, one thread per tile:
//           for each kNr panel, for each kMr panel: micro-kernel, C += alpha * acc
// Determinism: the arithmetic of every C element is fixed by the blocking constants alone (acc
// starts at 0 for each K block, sums k in order, then C += alpha * acc in pc order), and one
// thread owns each tile, so the result does not depend on the thread count or the schedule.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "model/ops_cpu.h"
#include "runtime/error.h"

namespace zt::model::cpu {
namespace {

// Register tile: kMr x kNr accumulators. With 16 SSE registers, 4 x 8 floats (8 registers of
// 4 lanes) or 4 x 4 doubles (8 registers of 2 lanes) leave room for the B row and the broadcast
// A value; measured on the 2-core EPYC dev machine these beat 6 x 8 / 8 x 8 shapes.
template <class T>
struct TileShape;
template <>
struct TileShape<float> {
  static constexpr int kMr = 4;
  static constexpr int kNr = 8;
};
template <>
struct TileShape<double> {
  static constexpr int kMr = 4;
  static constexpr int kNr = 4;
};

// Cache blocking: a packed kMc x kKc block of A (128 KiB in float) sits in L2 while a
// kKc x kNr panel of B (8 KiB) sits in L1; the packed B slab (kKc x kNc) lives in L3.
constexpr int64_t kKc = 256;
constexpr int64_t kMc = 128;            // rows of one tile; a multiple of kMr
constexpr int64_t kMcChunk = 16 * kMc;  // rows of A packed at once (bounds the A buffer)
constexpr int64_t kNc = 4096;           // columns of B packed at once; a multiple of kNr
constexpr int64_t kTileCols = 256;      // columns of one tile; a multiple of kNr
// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kParallelMinWork = int64_t(1) << 18;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Packs rows [i0, i0 + mc) x cols [p0, p0 + kc) of op(A) into panels of kMr rows: panel r holds
// element (i0 + r*kMr + ii, p0 + k) at dst[r*kc*kMr + k*kMr + ii]; rows past M are zero.
template <class T, int MR>
void pack_a_panel(bool trans_a, const T* A, int64_t lda, int64_t i0, int64_t rows, int64_t p0,
                  int64_t kc, T* dst) {
  if (!trans_a) {
    // op(A)[i, k] = A[i*lda + k]: read each row contiguously.
    for (int64_t ii = 0; ii < MR; ++ii) {
      if (ii < rows) {
        const T* src = A + (i0 + ii) * lda + p0;
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + ii] = src[k];
      } else {
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + ii] = T(0);
      }
    }
  } else {
    // op(A)[i, k] = A[k*lda + i]: the kMr values of one k are contiguous.
    for (int64_t k = 0; k < kc; ++k) {
      const T* src = A + (p0 + k) * lda + i0;
      for (int64_t ii = 0; ii < MR; ++ii) dst[k * MR + ii] = ii < rows ? src[ii] : T(0);
    }
  }
}

// Packs rows [p0, p0 + kc) x cols [j0, j0 + cols) of op(B) into one panel of kNr columns:
// element (p0 + k, j0 + jj) at dst[k*kNr + jj]; columns past N are zero.
template <class T, int NR>
void pack_b_panel(bool trans_b, const T* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0,
                  int64_t cols, T* dst) {
  if (!trans_b) {
    // op(B)[k, j] = B[k*ldb + j]: the kNr values of one k are contiguous.
    for (int64_t k = 0; k < kc; ++k) {
      const T* src = B + (p0 + k) * ldb + j0;
      if (cols == NR) {
        for (int64_t jj = 0; jj < NR; ++jj) dst[k * NR + jj] = src[jj];
      } else {
        for (int64_t jj = 0; jj < NR; ++jj) dst[k * NR + jj] = jj < cols ? src[jj] : T(0);
      }
    }
  } else {
    // op(B)[k, j] = B[j*ldb + k]: read each column of op(B) (a row of B) contiguously.
    for (int64_t jj = 0; jj < NR; ++jj) {
      if (jj < cols) {
        const T* src = B + (j0 + jj) * ldb + p0;
        for (int64_t k = 0; k < kc; ++k) dst[k * NR + jj] = src[k];
      } else {
        for (int64_t k = 0; k < kc; ++k) dst[k * NR + jj] = T(0);
      }
    }
  }
}

// acc[MR][NR] = sum_k a[k][:] outer b[k][:] over packed panels, then
// C[0:rows, 0:cols] += alpha * acc. The fixed-size accumulator array stays in registers and
// GCC vectorises the j loop.
template <class T, int MR, int NR>
void micro_kernel(int64_t kc, const T* __restrict a, const T* __restrict b, T alpha,
                  T* __restrict c, int64_t ldc, int64_t rows, int64_t cols) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const T ai = a[k * MR + i];
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[k * NR + j];
    }
  }
  if (rows == MR && cols == NR) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) c[i * ldc + j] += alpha * acc[i][j];
  } else {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) c[i * ldc + j] += alpha * acc[i][j];
  }
}

// Per-thread packing buffers, reused across calls (a large std::vector per call would page-fault
// its memory in every time). Only the calling thread's buffers are used; workers share them.
template <class T>
std::vector<T>& a_pack_buffer() {
  thread_local std::vector<T> buf;
  return buf;
}
template <class T>
std::vector<T>& b_pack_buffer() {
  thread_local std::vector<T> buf;
  return buf;
}

}  // namespace

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  constexpr int kMr = TileShape<T>::kMr;
  constexpr int kNr = TileShape<T>::kNr;
  static_assert(kMc % kMr == 0 && kMcChunk % kMc == 0);
  static_assert(kNc % kTileCols == 0 && kTileCols % kNr == 0);

  ZT_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M=", M, " N=", N, " K=", K);
  if (M == 0 || N == 0) return;
  ZT_CHECK(ldc >= N, "gemm: ldc=", ldc, " < N=", N);
  const bool use_product = K > 0 && alpha != T(0);
  if (use_product) {
    ZT_CHECK(lda >= (trans_a ? M : K), "gemm: lda=", lda, " too small (trans_a=", trans_a,
             ", M=", M, ", K=", K, ")");
    ZT_CHECK(ldb >= (trans_b ? K : N), "gemm: ldb=", ldb, " too small (trans_b=", trans_b,
             ", K=", K, ", N=", N, ")");
  }

  const int64_t kc_max = std::min(K, kKc);
  std::vector<T>& a_buf = a_pack_buffer<T>();
  std::vector<T>& b_buf = b_pack_buffer<T>();
  if (use_product) {
    const size_t a_need = size_t(ceil_div(std::min(M, kMcChunk), kMr) * kMr * kc_max);
    const size_t b_need = size_t(ceil_div(std::min(N, kNc), kNr) * kNr * kc_max);
    if (a_buf.size() < a_need) a_buf.resize(a_need);
    if (b_buf.size() < b_need) b_buf.resize(b_need);
  }
  T* const a_pack = a_buf.data();
  T* const b_pack = b_buf.data();

  const bool parallel = M * N * std::max<int64_t>(K, 1) >= kParallelMinWork;
#pragma omp parallel if (parallel)
  {
    // C = beta * C first; beta == 0 overwrites, so NaN garbage in C does not survive.
    if (beta != T(1)) {
#pragma omp for schedule(static)
      for (int64_t i = 0; i < M; ++i) {
        T* row = C + i * ldc;
        if (beta == T(0)) {
          for (int64_t j = 0; j < N; ++j) row[j] = T(0);
        } else {
          for (int64_t j = 0; j < N; ++j) row[j] *= beta;
        }
      }
    }
    if (use_product) {
      for (int64_t jc = 0; jc < N; jc += kNc) {
        const int64_t nc = std::min(kNc, N - jc);
        const int64_t n_panels = ceil_div(nc, kNr);
        for (int64_t pc = 0; pc < K; pc += kKc) {
          const int64_t kc = std::min(kKc, K - pc);
          // The implicit barrier of each omp for keeps packing and use of a buffer apart.
#pragma omp for schedule(static)
          for (int64_t q = 0; q < n_panels; ++q) {
            pack_b_panel<T, kNr>(trans_b, B, ldb, pc, kc, jc + q * kNr,
                                 std::min<int64_t>(kNr, nc - q * kNr), b_pack + q * kc * kNr);
          }
          for (int64_t ic = 0; ic < M; ic += kMcChunk) {
            const int64_t mc = std::min(kMcChunk, M - ic);
            const int64_t m_panels = ceil_div(mc, kMr);
#pragma omp for schedule(static)
            for (int64_t r = 0; r < m_panels; ++r) {
              pack_a_panel<T, kMr>(trans_a, A, lda, ic + r * kMr,
                                   std::min<int64_t>(kMr, mc - r * kMr), pc, kc,
                                   a_pack + r * kc * kMr);
            }
            const int64_t row_tiles = ceil_div(mc, kMc);
            const int64_t col_tiles = ceil_div(nc, kTileCols);
#pragma omp for schedule(static) collapse(2)
            for (int64_t tr = 0; tr < row_tiles; ++tr) {
              for (int64_t tc = 0; tc < col_tiles; ++tc) {
                const int64_t r_begin = tr * (kMc / kMr);
                const int64_t r_end = std::min(m_panels, r_begin + kMc / kMr);
                const int64_t q_begin = tc * (kTileCols / kNr);
                const int64_t q_end = std::min(n_panels, q_begin + kTileCols / kNr);
                // B panel outer (stays in L1), A panels inner (the A block stays in L2).
                for (int64_t q = q_begin; q < q_end; ++q) {
                  const int64_t j = jc + q * kNr;
                  const int64_t cols = std::min<int64_t>(kNr, N - j);
                  for (int64_t r = r_begin; r < r_end; ++r) {
                    const int64_t i = ic + r * kMr;
                    micro_kernel<T, kMr, kNr>(kc, a_pack + r * kc * kMr, b_pack + q * kc * kNr,
                                              alpha, C + i * ldc + j, ldc,
                                              std::min<int64_t>(kMr, M - i), cols);
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

}  // namespace zt::model::cpu
