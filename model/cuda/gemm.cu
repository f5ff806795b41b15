// gemm and the shared matmul on cuBLASLt: row-major C = alpha op(A) op(B) + beta C (+ epilogue)
// mapped onto column-major cuBLASLt, with one cached plan (descriptors, layouts, algorithm) per
// shape, dtype, epilogue and pointer alignment.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <compare>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <type_traits>

#include "model/cuda/kernels_common.cuh"
#include "model/gemm_choices.h"
#include "model/ops_cuda.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace zt::model::cuda {
namespace detail {
namespace {

cudaDataType_t cuda_data_type(DType dt) {
  switch (dt) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kF32:
      return CUDA_R_32F;
    default:
      ZT_FAIL("matmul: dtype ", dtype_name(dt), " is not supported");
  }
}

// The alignment cuBLASLt is told a pointer has: the largest power of two dividing the address,
// capped at 16 bytes. The cap makes every 16-byte aligned pointer (all of the engine's buffers)
// get the same plan, hence the same algorithm and the same bits wherever a buffer happens to lie:
// activation recompute reproduces the forward's bits. 16 bytes is what Hopper's TMA kernels need.
constexpr uint32_t kAlignmentCap = 16;
uint32_t pointer_alignment(const void* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 1;
  while (alignment < kAlignmentCap && (address & (uintptr_t(alignment) * 2 - 1)) == 0)
    alignment *= 2;
  return alignment;
}

// Everything the algorithm choice depends on. Pointer values are not part of it (they change every
// call), only their alignments: cuBLASLt's heuristic picks kernels that need the alignment it is
// told, so a plan made for 16-byte aligned pointers must not run on 4-byte aligned ones.
struct PlanKey {
  int device;
  bool trans_a, trans_b;
  int64_t m, n, k, lda, ldb, ldc;
  DType ab_dtype, c_dtype;
  Epilogue epilogue;
  int64_t aux_ld;
  uint32_t align_a, align_b, align_c, align_bias, align_aux;
  size_t workspace_bytes;
  auto operator<=>(const PlanKey&) const = default;
};

// The key's text in a GEMM choices file (model/gemm_choices.h): everything but the device, whose
// kind the file names once.
std::string key_text(const PlanKey& k) {
  static const char* const kEpilogues[] = {"none", "bias", "gelu_aux", "gelu_aux_bias"};
  std::ostringstream out;
  out << dtype_name(k.ab_dtype) << ">" << dtype_name(k.c_dtype) << " " << (k.trans_a ? "T" : "N")
      << (k.trans_b ? "T" : "N") << " m=" << k.m << " n=" << k.n << " k=" << k.k << " lda=" << k.lda
      << " ldb=" << k.ldb << " ldc=" << k.ldc << " epilogue=" << kEpilogues[int(k.epilogue)]
      << " aux_ld=" << k.aux_ld << " align=" << k.align_a << "," << k.align_b << "," << k.align_c
      << "," << k.align_bias << "," << k.align_aux << " workspace=" << k.workspace_bytes;
  return out.str();
}

// How many of the heuristic's candidates a tuned plan considers.
constexpr int kCandidates = 8;

// Where a plan's algorithm came from: the heuristic's first candidate (tuning may still replace
// it), a GEMM choices file, or tuning in this process. Only the last two are "in use" choices.
enum class Source { kHeuristic, kChosen, kTuned };

// cuBLASLt objects of one problem. The matmul descriptor's bias/aux pointers are set per call.
// `found` is false when cuBLASLt has no algorithm for it (kept, so the heuristic is asked once).
// The preference is kept so that a plan made before tuning was turned on can ask for all the
// candidates later.
struct MatmulPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr;  // cuBLASLt's A = our B
  cublasLtMatrixLayout_t layout_b = nullptr;  // cuBLASLt's B = our A
  cublasLtMatrixLayout_t layout_c = nullptr;  // C and D (in place)
  cublasLtMatmulPreference_t pref = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
  int choice = 0;  // the index of `algo` among the heuristic's candidates
  Source source = Source::kHeuristic;
  bool tuning_failed = false;  // no scratch memory for an accumulating problem: not tried again

  MatmulPlan() = default;
  MatmulPlan(const MatmulPlan&) = delete;
  MatmulPlan& operator=(const MatmulPlan&) = delete;
  ~MatmulPlan() {
    if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
    if (layout_c != nullptr) cublasLtMatrixLayoutDestroy(layout_c);
    if (layout_b != nullptr) cublasLtMatrixLayoutDestroy(layout_b);
    if (layout_a != nullptr) cublasLtMatrixLayoutDestroy(layout_a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

// Plans for the life of the process. Deliberately never destroyed: a static destructor would run
// after the CUDA libraries may have been torn down at exit. Shapes in training repeat, so the map
// holds a few dozen entries.
// With the plans: the GEMM choices in force. `choices` comes from the file named by
// ZT_GEMM_CHOICES (read when the first plan is made) and from use_gemm_choices; `tune` makes a
// problem without a choice time its candidates on its next call (set_gemm_tuning); `tuned`
// counts the problems tuned so far.
struct PlanCache {
  std::mutex mutex;
  std::map<PlanKey, std::unique_ptr<MatmulPlan>> plans;
  std::map<std::string, int> choices;
  bool environment_read = false;
  bool tune = false;
  int64_t tuned = 0;
};
PlanCache& plan_cache() {
  static PlanCache* cache = new PlanCache;
  return *cache;
}

std::string device_name(int device) {
  cudaDeviceProp prop{};
  ZT_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

std::string library_version() { return std::to_string(cublasLtGetVersion()); }

// `c`'s choices for this process, when they were made on this GPU kind and cuBLASLt; otherwise
// the reason they do not apply.
std::string check_choices_apply(const GemmChoices& c, int device) {
  if (c.device != device_name(device))
    return "they were tuned on a " + c.device + ", and this is a " + device_name(device);
  if (c.library != library_version())
    return "they were tuned with cuBLASLt " + c.library + ", and this is cuBLASLt " +
           library_version();
  return "";
}

// Puts `c`'s choices in force when they apply to `device`; otherwise returns why not and changes
// nothing.
std::string add_choices(PlanCache& cache, const GemmChoices& c, int device) {
  const std::string mismatch = check_choices_apply(c, device);
  if (mismatch.empty())
    for (const auto& [key, index] : c.index) cache.choices[key] = index;
  return mismatch;
}

// Reads ZT_GEMM_CHOICES once, before the first plan. Choices from another GPU kind or cuBLASLt
// version are ignored with a warning: their indices would name other kernels.
void read_choices_from_environment(PlanCache& cache, int device) {
  if (cache.environment_read) return;
  cache.environment_read = true;
  const char* path = std::getenv("ZT_GEMM_CHOICES");
  if (path == nullptr || *path == '\0') return;
  const GemmChoices c = read_gemm_choices(path);
  const std::string mismatch = add_choices(cache, c, device);
  if (!mismatch.empty()) {
    log_warn("ZT_GEMM_CHOICES=", path, ": not used, ", mismatch,
             " (run `zerotrain bench --tune-gemms FILE` here to tune for it)");
    return;
  }
  log_info("GEMM choices from ", path, ": ", c.index.size(), " problems");
}

template <class V>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const V& value) {
  ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
}

template <class V>
void set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attribute,
              const V& value) {
  ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attribute, &value, sizeof(value)));
}

cublasLtEpilogue_t lt_epilogue(Epilogue e) {
  switch (e) {
    case Epilogue::kNone:
      return CUBLASLT_EPILOGUE_DEFAULT;
    case Epilogue::kBias:
      return CUBLASLT_EPILOGUE_BIAS;
    case Epilogue::kGeluAux:
      return CUBLASLT_EPILOGUE_GELU_AUX;
    case Epilogue::kGeluAuxBias:
      return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

bool has_bias(Epilogue e) { return e == Epilogue::kBias || e == Epilogue::kGeluAuxBias; }
bool has_aux(Epilogue e) { return e == Epilogue::kGeluAux || e == Epilogue::kGeluAuxBias; }

// D = alpha op(A) op(B) + beta C (+ epilogue) with `algo`; d is C except while tuning an
// accumulating problem (tune_plan).
void run_plan(const CudaContext& ctx, const MatmulArgs& args, const MatmulPlan& plan,
              const cublasLtMatmulAlgo_t& algo, void* d) {
  ZT_CUBLAS_CHECK(cublasLtMatmul(ctx.lt(), plan.desc, &args.alpha, args.b, plan.layout_a, args.a,
                                 plan.layout_b, &args.beta, args.c, plan.layout_c, d,
                                 plan.layout_c, &algo, ctx.workspace(), ctx.workspace_bytes(),
                                 ctx.stream()));
}

// Up to `wanted` of the heuristic's candidates for `plan`, into `out`; returns how many can run
// (a choice's index counts only those).
int query_candidates(const CudaContext& ctx, const MatmulPlan& plan, int wanted,
                     cublasLtMatmulAlgo_t* out) {
  cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
  int found = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(ctx.lt(), plan.desc, plan.layout_a, plan.layout_b,
                                     plan.layout_c, plan.layout_c, plan.pref,
                                     std::min(wanted, kCandidates), results, &found);
  if (status != CUBLAS_STATUS_SUCCESS) return 0;
  int count = 0;
  for (int i = 0; i < found; ++i)
    if (results[i].state == CUBLAS_STATUS_SUCCESS) out[count++] = results[i].algo;
  return count;
}

// Tuning: the index of the candidate that runs this call's problem fastest, writing D to `d`.
// What counts is the speed a training step sees: GEMMs back to back on a power-capped GPU, whose
// clock drops within milliseconds of a sustained load. So the GPU is first loaded for about
// 10 ms with the heuristic's pick, then each candidate runs two rounds of about 12 ms (the rounds
// go over all the candidates in turn, so a clock or interference swing touches them alike) and
// is scored by its mean time over both. (The fastest of three 4 ms rounds was tried first and
// favoured kernels that are fast only at the unthrottled clock: GPT-J-6B on an H200 gained
// 0.6-0.9% per step with its picks, 1.6-1.7% with these.) Another candidate replaces the
// heuristic's first only when it is more than 1% faster, so noise does not move a problem off
// the heuristic's pick.
int fastest_candidate(const CudaContext& ctx, const MatmulArgs& args, const MatmulPlan& plan,
                      const cublasLtMatmulAlgo_t* candidates, int count, void* d) {
  cudaEvent_t start, stop;
  ZT_CUDA_CHECK(cudaEventCreate(&start));
  ZT_CUDA_CHECK(cudaEventCreate(&stop));
  auto time_ms = [&](const cublasLtMatmulAlgo_t& algo, int calls) {
    ZT_CUDA_CHECK(cudaEventRecord(start, ctx.stream()));
    for (int i = 0; i < calls; ++i) run_plan(ctx, args, plan, algo, d);
    ZT_CUDA_CHECK(cudaEventRecord(stop, ctx.stream()));
    ZT_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    ZT_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return double(ms);
  };
  auto calls_for = [](double window_ms, double once_ms) {
    return int(std::clamp(window_ms / std::max(once_ms, 1e-3), 2.0, 1000.0));
  };
  constexpr int kRounds = 2;
  constexpr double kLoadMs = 10.0, kRoundMs = 12.0;
  int calls[kCandidates];
  double total_ms[kCandidates] = {};
  for (int i = 0; i < count; ++i) calls[i] = calls_for(kRoundMs, time_ms(candidates[i], 1));
  time_ms(candidates[0], calls_for(kLoadMs, kRoundMs / calls[0]));
  for (int round = 0; round < kRounds; ++round)
    for (int i = 0; i < count; ++i) total_ms[i] += time_ms(candidates[i], calls[i]);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  double mean_ms[kCandidates];
  int best = 0;
  for (int i = 0; i < count; ++i) {
    mean_ms[i] = total_ms[i] / (kRounds * calls[i]);
    if (mean_ms[i] < mean_ms[best]) best = i;
  }
  return mean_ms[best] < 0.99 * mean_ms[0] ? best : 0;
}

// Bytes from C's first element to one past its last (row-major, leading dimension ldc).
size_t c_bytes(const MatmulArgs& args) {
  return size_t((args.m - 1) * args.ldc + args.n) * dtype_size(args.c_dtype);
}

// Times the plan's candidates on this call's buffers and makes the fastest the plan's algorithm.
// The call then runs it as usual, so the results are exactly those of a later run that reads
// this choice from a file. With beta = 0 the candidates write C (and the GELU epilogue's aux),
// which that call overwrites; an accumulating problem (beta != 0, the weight gradients) must not
// change C, so its candidates write a scratch copy's worth of memory instead, allocated on the
// stream for the tuning only. Without that memory the problem keeps the heuristic's pick.
void tune_plan(const CudaContext& ctx, const MatmulArgs& args, MatmulPlan& plan, PlanCache& cache,
               const std::string& key) {
  cublasLtMatmulAlgo_t candidates[kCandidates];
  const int count = query_candidates(ctx, plan, kCandidates, candidates);
  if (count == 0) return;  // keeps the heuristic's first, which `found` says exists
  void* d = args.c;
  if (args.beta != 0.0f) {
    if (cudaMallocAsync(&d, c_bytes(args), ctx.stream()) != cudaSuccess) {
      (void)cudaGetLastError();
      plan.tuning_failed = true;
      log_warn("GEMM tuning: no ", c_bytes(args) >> 20, " MiB of scratch memory to tune `", key,
               "`; it keeps the heuristic's pick");
      return;
    }
  }
  plan.choice = fastest_candidate(ctx, args, plan, candidates, count, d);
  plan.algo = candidates[plan.choice];
  plan.source = Source::kTuned;
  ++cache.tuned;
  if (d != args.c) ZT_CUDA_CHECK(cudaFreeAsync(d, ctx.stream()));
}

// Row-major C[M, N] is the column-major matrix C^T [N, M] with the same leading dimension, and
// C^T = op(B)^T op(A)^T. So cuBLASLt runs m' = N, n' = M, k' = K with its A = our B and its B = our
// A, each transposed exactly when ours is:
//   our B [K, N] row-major (ldb)         = column-major [N, K]: op N;  trans_b: [K, N], op T
//   our A [M, K] row-major (lda)         = column-major [K, M]: op N;  trans_a: [M, K], op T
// The algorithm is the heuristic's first candidate, or the one the choices in force name for the
// problem; tuning (try_matmul) may replace the first.
std::unique_ptr<MatmulPlan> make_plan(const CudaContext& ctx, const MatmulArgs& args,
                                      const PlanKey& key, const std::string& text) {
  auto plan = std::make_unique<MatmulPlan>();
  const cudaDataType_t ab_type = cuda_data_type(args.ab_dtype);
  const cudaDataType_t c_type = cuda_data_type(args.c_dtype);
  ZT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = args.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = args.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(op_a));
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(op_b));
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(lt_epilogue(args.epilogue)));
  // The heuristic reads these pointers' alignment, so they are set before it runs.
  if (has_bias(args.epilogue)) set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, args.bias);
  if (has_aux(args.epilogue)) {
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(args.aux));
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(args.aux_ld));
  }

  const uint64_t m = uint64_t(args.n), n = uint64_t(args.m), k = uint64_t(args.k);
  ZT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->layout_a, ab_type, args.trans_b ? k : m,
                                             args.trans_b ? m : k, args.ldb));
  ZT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->layout_b, ab_type, args.trans_a ? n : k,
                                             args.trans_a ? k : n, args.lda));
  ZT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->layout_c, c_type, m, n, args.ldc));

  ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&plan->pref));
  const cublasLtMatmulPreference_t pref = plan->pref;
  set_pref(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(ctx.workspace_bytes()));
  // Split-K only with its partial sums kept in fp32 in the workspace and reduced in a fixed order:
  // the in-place and output-type schemes round partial sums to the 16-bit output (more than one
  // rounding per result).
  set_pref(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
           uint32_t(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE));
  set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b);  // its A = our B
  set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a);
  set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c);
  set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c);
  const PlanCache& cache = plan_cache();
  const auto chosen = cache.choices.find(text);
  cublasLtMatmulAlgo_t candidates[kCandidates];
  const int count =
      query_candidates(ctx, *plan, chosen != cache.choices.end() ? kCandidates : 1, candidates);
  plan->found = count > 0;
  if (!plan->found) return plan;
  if (chosen != cache.choices.end()) {
    plan->source = Source::kChosen;
    if (chosen->second < count) {
      plan->choice = chosen->second;
    } else {
      log_warn("GEMM choices: candidate ", chosen->second, " of `", chosen->first, "` does not exist ",
               "here (", count, " candidates); the heuristic's first runs");
    }
  }
  plan->algo = candidates[plan->choice];
  return plan;
}

// C[M, N] *= beta (0 writes zeros, ignoring NaN in C): the K == 0 product, which cuBLASLt does not
// take. One thread per element.
template <class T>
__global__ void scale_matrix_kernel(T* c, int64_t rows, int64_t cols, int64_t ldc, float beta) {
  const int64_t total = rows * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    T* p = c + (i / cols) * ldc + i % cols;
    if constexpr (std::is_same_v<T, float>) {
      *p = beta == 0.0f ? 0.0f : *p * beta;
    } else {
      *p = from_float<T>(beta == 0.0f ? 0.0f : to_float(*p) * beta);
    }
  }
}

void scale_matrix(const CudaContext& ctx, void* c, int64_t rows, int64_t cols, int64_t ldc,
                  float beta, DType dt) {
  if (beta == 1.0f || rows == 0 || cols == 0) return;
  constexpr int kThreads = 256;
  const unsigned blocks = grid_for(rows * cols, kThreads);
  if (dt == DType::kF32) {
    scale_matrix_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(static_cast<float*>(c), rows, cols,
                                                               ldc, beta);
  } else {
    dispatch_16bit(dt, "gemm", [&](auto tag) {
      using T = decltype(tag);
      scale_matrix_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(static_cast<T*>(c), rows, cols,
                                                                 ldc, beta);
    });
  }
  check_launch();
}

}  // namespace

bool try_matmul(const CudaContext& ctx, const MatmulArgs& args) {
  ZT_CHECK(args.m >= 0 && args.n >= 0 && args.k >= 0, "gemm: negative size M=", args.m,
           " N=", args.n, " K=", args.k);
  ZT_CHECK(args.ab_dtype == DType::kBF16 || args.ab_dtype == DType::kF16,
           "gemm: A and B must be bf16 or fp16, got ", dtype_name(args.ab_dtype));
  // cuBLASLt's 16-bit GEMMs write C in the input type or in fp32 (no bf16 x bf16 -> fp16).
  ZT_CHECK(args.c_dtype == args.ab_dtype || args.c_dtype == DType::kF32, "gemm: C must be ",
           dtype_name(args.ab_dtype), " or fp32 for ", dtype_name(args.ab_dtype), " inputs, got ",
           dtype_name(args.c_dtype));
  ZT_CHECK(args.lda >= std::max<int64_t>(1, args.trans_a ? args.m : args.k) &&
               args.ldb >= std::max<int64_t>(1, args.trans_b ? args.k : args.n) &&
               args.ldc >= std::max<int64_t>(1, args.n),
           "gemm: leading dimension too small: lda=", args.lda, " ldb=", args.ldb,
           " ldc=", args.ldc, " for M=", args.m, " N=", args.n, " K=", args.k,
           " trans_a=", args.trans_a, " trans_b=", args.trans_b);
  if (has_bias(args.epilogue)) ZT_CHECK(args.bias != nullptr, "gemm: bias epilogue without bias");
  if (has_aux(args.epilogue)) {
    ZT_CHECK(args.aux != nullptr && args.aux_ld >= args.n && args.aux_ld % 8 == 0,
             "gemm: the GELU epilogue needs an aux buffer with a leading dimension that is a "
             "multiple of 8 and at least N=",
             args.n, ", got ", args.aux_ld);
  }
  if (args.m == 0 || args.n == 0) return true;
  if (args.k == 0) {
    // Nothing to multiply: C = beta C. The epilogues are only used by linear, which has K > 0.
    ZT_CHECK(args.epilogue == Epilogue::kNone, "gemm: an epilogue needs K > 0");
    scale_matrix(ctx, args.c, args.m, args.n, args.ldc, args.beta, args.c_dtype);
    return true;
  }
  const size_t ab_size = dtype_size(args.ab_dtype), c_size = dtype_size(args.c_dtype);
  ZT_CHECK(is_aligned(args.a, ab_size) && is_aligned(args.b, ab_size) &&
               is_aligned(args.c, c_size) && is_aligned(args.bias, c_size) &&
               is_aligned(args.aux, c_size),
           "gemm: pointers must be aligned to their element size");

  int device = 0;
  ZT_CUDA_CHECK(cudaGetDevice(&device));
  const PlanKey key{device,
                    args.trans_a,
                    args.trans_b,
                    args.m,
                    args.n,
                    args.k,
                    args.lda,
                    args.ldb,
                    args.ldc,
                    args.ab_dtype,
                    args.c_dtype,
                    args.epilogue,
                    has_aux(args.epilogue) ? args.aux_ld : 0,
                    pointer_alignment(args.a),
                    pointer_alignment(args.b),
                    pointer_alignment(args.c),
                    has_bias(args.epilogue) ? pointer_alignment(args.bias) : kAlignmentCap,
                    has_aux(args.epilogue) ? pointer_alignment(args.aux) : kAlignmentCap,
                    ctx.workspace_bytes()};

  PlanCache& cache = plan_cache();
  // Held over the launch too: the cached descriptor's bias/aux pointers are set per call, and
  // cuBLASLt reads them when the matmul is enqueued (it is asynchronous; the lock is short).
  std::lock_guard<std::mutex> lock(cache.mutex);
  read_choices_from_environment(cache, device);
  auto it = cache.plans.find(key);
  if (it == cache.plans.end())
    it = cache.plans.emplace(key, make_plan(ctx, args, key, key_text(key))).first;
  MatmulPlan& plan = *it->second;
  if (!plan.found) return false;
  if (has_bias(args.epilogue)) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, args.bias);
  if (has_aux(args.epilogue)) {
    set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(args.aux));
  }
  if (cache.tune && plan.source == Source::kHeuristic && !plan.tuning_failed)
    tune_plan(ctx, args, plan, cache, key_text(key));
  // beta == 0: cuBLASLt does not read C, so NaN in C's old contents does not survive (as on the
  // CPU). The same algorithm runs every time for a key, so results are reproducible.
  run_plan(ctx, args, plan, plan.algo, args.c);
  return true;
}

void matmul(const CudaContext& ctx, const MatmulArgs& args) {
  ZT_CHECK(try_matmul(ctx, args), "cuBLASLt has no algorithm for gemm M=", args.m, " N=", args.n,
           " K=", args.k, " trans_a=", args.trans_a, " trans_b=", args.trans_b, " lda=", args.lda,
           " ldb=", args.ldb, " ldc=", args.ldc, " ", dtype_name(args.ab_dtype), " -> ",
           dtype_name(args.c_dtype), " epilogue=", int(args.epilogue), " with pointers A=", args.a,
           " B=", args.b, " C=", args.c,
           " (16-byte aligned pointers and leading dimensions that "
           "are multiples of 8 elements are supported everywhere)");
}

}  // namespace detail

void set_gemm_tuning(bool on) {
  detail::PlanCache& cache = detail::plan_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  cache.tune = on;
}

void use_gemm_choices(const GemmChoices& choices, int device) {
  detail::PlanCache& cache = detail::plan_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  const std::string mismatch = detail::add_choices(cache, choices, device);
  if (!mismatch.empty()) throw_user_error("these GEMM choices do not apply: ", mismatch);
}

GemmChoices gemm_choices_in_use(int device) {
  detail::PlanCache& cache = detail::plan_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  GemmChoices c;
  c.device = detail::device_name(device);
  c.library = detail::library_version();
  std::set<std::string> met;
  for (const auto& [key, plan] : cache.plans) {
    if (key.device != device) continue;
    const std::string text = detail::key_text(key);
    met.insert(text);
    if (plan->found && plan->source != detail::Source::kHeuristic) c.index[text] = plan->choice;
  }
  // Choices given for problems not run yet stay: a file written from this keeps them.
  for (const auto& [text, index] : cache.choices)
    if (met.count(text) == 0) c.index.emplace(text, index);
  return c;
}

int64_t gemm_problems_tuned() {
  detail::PlanCache& cache = detail::plan_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  return cache.tuned;
}

void gemm(const CudaContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          float alpha, const void* A, int64_t lda, const void* B, int64_t ldb, float beta, void* C,
          int64_t ldc, DType ab_dtype, DType c_dtype) {
  detail::MatmulArgs args;
  args.trans_a = trans_a;
  args.trans_b = trans_b;
  args.m = M;
  args.n = N;
  args.k = K;
  args.alpha = alpha;
  args.a = A;
  args.lda = lda;
  args.b = B;
  args.ldb = ldb;
  args.beta = beta;
  args.c = C;
  args.ldc = ldc;
  args.ab_dtype = ab_dtype;
  args.c_dtype = c_dtype;
  detail::matmul(ctx, args);
}

}  // namespace zt::model::cuda
