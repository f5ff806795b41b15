// CPU reference ops for GPT-J: forward and backward, templated on the compute type.
//
// T is float (training) or double (finite-difference gradient checks); both are instantiated in
// model/ops/*.cpp. All tensors are dense row-major; shapes are given in the comments, with
// N = batch * seq tokens, D = d_model, H = heads, Dh = head dim, V = vocab. Backward functions
// ADD into parameter gradients (dw, db, dwte) and, unless stated, WRITE input gradients.
// Results never depend on the OpenMP thread count (static partitioning, no atomics), so
// recomputation reproduces the same bits.
#pragma once

#include <cstdint>

namespace zt::model::cpu {

// C[M, N] = alpha * op(A) @ op(B) + beta * C, row-major. op(A) is [M, K]: A is [M, K] with
// leading dimension lda (or [K, M] when trans_a). op(B) is [K, N]: B is [K, N] (or [N, K] when
// trans_b). beta == 0 ignores C's old contents (NaN included).
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// y[N, out] = x[N, in] @ w[out, in]^T (+ b[out] when b != nullptr).
template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t n, int64_t in, int64_t out);
// dx[N, in] = dy @ w (or += when accumulate_dx); dw[out, in] += dy^T @ x; db[out] += sum_n dy
// (skipped when db == nullptr); dx may be nullptr to skip it.
template <class T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, int64_t n,
                     int64_t in, int64_t out, bool accumulate_dx);

// out[N, D] = wte[ids[i], :]. Every id must be in [0, vocab) (checked; throws zt::Error).
template <class T>
void embedding_forward(const int32_t* ids, const T* wte, T* out, int64_t n, int64_t d,
                       int64_t vocab);
// dwte[ids[i], :] += dout[i, :].
template <class T>
void embedding_backward(const int32_t* ids, const T* dout, T* dwte, int64_t n, int64_t d,
                        int64_t vocab);

// y = (x - mean) * rstd * w + b over the last dim; mean[N], rstd[N] saved for backward.
template <class T>
void layernorm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t n,
                       int64_t d, double eps);
// dx[N, D] += (accumulates: the residual path already holds a gradient); dw, db += .
template <class T>
void layernorm_backward(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                        T* dw, T* db, int64_t n, int64_t d);

// Rotary position embedding in place on x[B, T, H, Dh]: for each head, pairs (2i, 2i+1) with
// 2i < rotary_dim rotate by angle pos * inv_freq[i], inv_freq[i] = 1 / 10000^(2i / rotary_dim),
// pos = token index within the sequence (0..T-1). Angles and sin/cos are computed in fp32 for
// T = float, as Hugging Face does; in T for double. Backward rotates by the negative angle.
template <class T>
void rotary_forward(T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                    int64_t rotary_dim);
template <class T>
void rotary_backward(T* dx, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                     int64_t rotary_dim);

// Causal self-attention. q, k, v, out: [B, T, H, Dh]; probs: [B, H, T, T] (softmax of
// q.k / sqrt(Dh) with the causal mask; entries above the diagonal are 0), saved for backward.
template <class T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* probs, int64_t batch,
                       int64_t seq, int64_t heads, int64_t head_dim);
// dq, dk, dv [B, T, H, Dh] are written.
template <class T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* probs, T* dq,
                        T* dk, T* dv, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim);

// gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise over n values.
template <class T>
void gelu_forward(const T* x, T* y, int64_t n);
// dx = dy * gelu'(x) (written).
template <class T>
void gelu_backward(const T* x, const T* dy, T* dx, int64_t n);

// Cross-entropy over logits[N, V] with targets[N]; target -100 is ignored, any other target must
// be in [0, V) (checked). Returns the SUM of per-token losses (in double) and counts the tokens
// that took part in *count.
template <class T>
double cross_entropy_forward(const T* logits, const int32_t* targets, int64_t n, int64_t v,
                             int64_t* count);
// dlogits[N, V] = dloss * (softmax(logits) - onehot(target)) for counted rows, 0 for ignored
// rows. dlogits may alias logits (the softmax is computed row by row before it is overwritten).
template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, T* dlogits, int64_t n,
                            int64_t v, double dloss);

inline constexpr int32_t kIgnoreIndex = -100;

}  // namespace zt::model::cpu
