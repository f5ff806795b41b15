// CUDA ops for GPT-J: forward and backward on device buffers, each the twin of the CPU reference
// op of the same name in model/ops_cpu.h (tests compare them).
//
// Conventions (differences from ops_cpu.h are called out):
// - Every pointer is device memory; shapes as in ops_cpu.h (N = batch * seq tokens, D = d_model,
//   F = d_ff, H = heads, Dh = head dim, V = vocab). Row-major.
// - `dt` is the storage dtype of activations, parameters and gradients: kBF16 or kF16. Arithmetic
//   is fp32 (fp32 accumulation in GEMMs and reductions); every result is rounded once to dt,
//   except that a GEMM adding into a 16-bit C (beta != 0: dw +=, dx +=) may round its product to
//   dt before the add, as cuBLASLt's small-M kernels do.
//   LayerNorm statistics, softmax log-sum-exp and losses are fp32.
// - All work is queued on ctx.stream(); nothing synchronises the device. Scratch memory comes
//   from the stream-ordered pool, so ops are safe to queue back to back.
// - Backward ops ADD into parameter gradients (dw, db, dwte) and WRITE input gradients unless
//   stated, exactly as on the CPU.
// - Results are deterministic run to run (no floating-point atomics in any result).
#pragma once

#include <cstdint>

#include "model/gemm_choices.h"
#include "runtime/cuda/context.h"
#include "runtime/dtype.h"

namespace zt::model::cuda {

// C[M, N] = alpha * op(A) @ op(B) + beta * C through cuBLASLt, row-major as cpu::gemm. A and B
// are ab_dtype (bf16/fp16); C is c_dtype (bf16, fp16 or fp32); fp32 accumulation.
void gemm(const CudaContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          float alpha, const void* A, int64_t lda, const void* B, int64_t ldb, float beta, void* C,
          int64_t ldc, DType ab_dtype, DType c_dtype);

// Which of cuBLASLt's candidates each GEMM problem runs (model/gemm_choices.h). A problem's
// algorithm is fixed when it first runs in the process: the choice named by ZT_GEMM_CHOICES or
// given to use_gemm_choices (for this GPU kind and cuBLASLt version; otherwise a UserError) for
// the problems they list; else, with tuning on, the fastest of the heuristic's candidates on
// that call's own operands; else the heuristic's first. Tuning is safe inside training: the call
// that tunes still computes exactly what it would with that choice read from a file (an
// accumulating GEMM's candidates write scratch memory, not C). A problem run before tuning was
// turned on is tuned at its next call.
void set_gemm_tuning(bool on);
void use_gemm_choices(const GemmChoices& choices, int device);
// The choices on `device` that came from a file or from tuning, labelled with its kind and
// cuBLASLt, with those given for problems not run yet: what a GEMM choices file written now holds
// (rewriting the file they were read from loses none of its lines).
GemmChoices gemm_choices_in_use(int device);
// Problems tuned so far in this process: a run writes its file again when this grows.
int64_t gemm_problems_tuned();

// y[N, out] = x[N, in] @ w[out, in]^T (+ b[out]); with `gelu`, y = gelu_new(x w^T + b) and the
// pre-activation is written to pre_gelu[N, out] (needed by backward) — a cuBLASLt epilogue.
void linear_forward(const CudaContext& ctx, const void* x, const void* w, const void* b, void* y,
                    int64_t n, int64_t in, int64_t out, DType dt, bool gelu = false,
                    void* pre_gelu = nullptr);
// dx[N, in] = dy @ w (or += when accumulate_dx; nullptr skips); dw[out, in] += dy^T @ x;
// db[out] += sum_n dy (nullptr skips).
void linear_backward(const CudaContext& ctx, const void* dy, const void* x, const void* w, void* dx,
                     void* dw, void* db, int64_t n, int64_t in, int64_t out, DType dt,
                     bool accumulate_dx);

// ids are device int32 [N]. Out-of-range ids are the caller's to prevent (the CPU model checks
// them on the host before they are copied).
void embedding_forward(const CudaContext& ctx, const int32_t* ids, const void* wte, void* out,
                       int64_t n, int64_t d, DType dt);
// dwte[ids[i], :] += dout[i, :], deterministic (tokens of one id summed in a fixed order).
void embedding_backward(const CudaContext& ctx, const int32_t* ids, const void* dout, void* dwte,
                        int64_t n, int64_t d, int64_t vocab, DType dt);

// mean[N], rstd[N] are fp32.
void layernorm_forward(const CudaContext& ctx, const void* x, const void* w, const void* b, void* y,
                       float* mean, float* rstd, int64_t n, int64_t d, double eps, DType dt);
// dx += ; dw, db += (column sums in a fixed order).
void layernorm_backward(const CudaContext& ctx, const void* dy, const void* x, const void* w,
                        const float* mean, const float* rstd, void* dx, void* dw, void* db,
                        int64_t n, int64_t d, DType dt);

// In place on x[B, T, H, Dh]; angles in fp32 exactly as the CPU float path (Hugging Face).
void rotary_forward(const CudaContext& ctx, void* x, int64_t batch, int64_t seq, int64_t heads,
                    int64_t head_dim, int64_t rotary_dim, DType dt);
void rotary_backward(const CudaContext& ctx, void* dx, int64_t batch, int64_t seq, int64_t heads,
                     int64_t head_dim, int64_t rotary_dim, DType dt);

void gelu_forward(const CudaContext& ctx, const void* x, void* y, int64_t n, DType dt);
void gelu_backward(const CudaContext& ctx, const void* x, const void* dy, void* dx, int64_t n,
                   DType dt);

// out = a + b + c elementwise (the parallel residual); out may alias a.
void add3(const CudaContext& ctx, const void* a, const void* b, const void* c, void* out, int64_t n,
          DType dt);

// Causal self-attention, fused and tiled (FlashAttention-2 style: online softmax, the T x T
// scores never reach global memory). q, k, v, out: [B, T, H, Dh]; lse: [B, H, T] fp32 log-sum-exp
// of each query's scaled scores, saved for backward. Dh up to 256.
void attention_forward(const CudaContext& ctx, const void* q, const void* k, const void* v,
                       void* out, float* lse, int64_t batch, int64_t seq, int64_t heads,
                       int64_t head_dim, DType dt);
// dq, dk, dv written. out and lse are the forward's.
void attention_backward(const CudaContext& ctx, const void* dout, const void* q, const void* k,
                        const void* v, const void* out, const float* lse, void* dq, void* dk,
                        void* dv, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                        DType dt);

// Cross-entropy over logits[N, V] (dt) with targets[N] (device int32, -100 ignored): losses[N]
// (fp32, 0 for ignored rows) are written; when dloss != 0, logits are overwritten in place with
// dlogits = dloss * (softmax - onehot) (0 for ignored rows). One pass over each row for the
// max and sum, one to write; the normalised probabilities are never stored.
void cross_entropy(const CudaContext& ctx, void* logits, const int32_t* targets, float* losses,
                   int64_t n, int64_t v, float dloss, DType dt);

}  // namespace zt::model::cuda
