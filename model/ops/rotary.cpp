// Rotary position embedding, GPT-J style: interleaved pairs (rotate_every_two) on the first
// rotary_dim dims of each head, in place, forward and backward.
#include <cmath>
#include <cstdint>
#include <vector>

#include "model/ops_cpu.h"
#include "runtime/error.h"

namespace zt::model::cpu {
namespace {

constexpr int64_t kParallelMinWork = int64_t(1) << 14;

// cos/sin tables [seq, rotary_dim / 2] of angle pos * inv_freq[i],
// inv_freq[i] = 1 / 10000^(2i / rotary_dim). For float every step is fp32, as Hugging Face
// computes it (inv_freq, the pos * inv_freq product and sin/cos are fp32 tensors there).
void rotary_tables(int64_t seq, int64_t rotary_dim, std::vector<float>& cos_t,
                   std::vector<float>& sin_t) {
  const int64_t half = rotary_dim / 2;
  cos_t.resize(size_t(seq * half));
  sin_t.resize(size_t(seq * half));
  for (int64_t i = 0; i < half; ++i) {
    const float inv_freq = 1.0f / powf(10000.0f, float(2 * i) / float(rotary_dim));
    for (int64_t pos = 0; pos < seq; ++pos) {
      const float angle = float(pos) * inv_freq;
      cos_t[size_t(pos * half + i)] = cosf(angle);
      sin_t[size_t(pos * half + i)] = sinf(angle);
    }
  }
}

void rotary_tables(int64_t seq, int64_t rotary_dim, std::vector<double>& cos_t,
                   std::vector<double>& sin_t) {
  const int64_t half = rotary_dim / 2;
  cos_t.resize(size_t(seq * half));
  sin_t.resize(size_t(seq * half));
  for (int64_t i = 0; i < half; ++i) {
    const double inv_freq = 1.0 / std::pow(10000.0, double(2 * i) / double(rotary_dim));
    for (int64_t pos = 0; pos < seq; ++pos) {
      const double angle = double(pos) * inv_freq;
      cos_t[size_t(pos * half + i)] = std::cos(angle);
      sin_t[size_t(pos * half + i)] = std::sin(angle);
    }
  }
}

// Rotates each pair (2i, 2i+1), 2i < rotary_dim, of every head of x[B, T, H, Dh] by
// sign * angle(pos, i): out[2i] = x[2i] cos - sign x[2i+1] sin,
// out[2i+1] = x[2i+1] cos + sign x[2i] sin. sign = -1 applies the transpose (the backward).
template <class T>
void rotate(T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim, int64_t rotary_dim,
            bool inverse, const char* what) {
  ZT_CHECK(batch >= 0 && seq >= 0 && heads >= 0 && head_dim >= 0, what, ": negative size");
  ZT_CHECK(rotary_dim >= 0 && rotary_dim <= head_dim && rotary_dim % 2 == 0, what, ": rotary_dim ",
           rotary_dim, " must be even and at most head_dim ", head_dim);
  const int64_t half = rotary_dim / 2;
  if (half == 0 || batch * seq * heads == 0) return;
  std::vector<T> cos_t, sin_t;
  rotary_tables(seq, rotary_dim, cos_t, sin_t);
  const int64_t rows = batch * seq;  // one row = one token: [H, Dh]
#pragma omp parallel for schedule(static) if (rows * heads * rotary_dim >= kParallelMinWork)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t pos = row % seq;
    const T* c = cos_t.data() + pos * half;
    const T* s = sin_t.data() + pos * half;
    for (int64_t h = 0; h < heads; ++h) {
      T* xh = x + (row * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const T x0 = xh[2 * i];
        const T x1 = xh[2 * i + 1];
        if (!inverse) {
          xh[2 * i] = x0 * c[i] - x1 * s[i];
          xh[2 * i + 1] = x1 * c[i] + x0 * s[i];
        } else {
          xh[2 * i] = x0 * c[i] + x1 * s[i];
          xh[2 * i + 1] = x1 * c[i] - x0 * s[i];
        }
      }
    }
  }
}

}  // namespace

template <class T>
void rotary_forward(T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                    int64_t rotary_dim) {
  rotate(x, batch, seq, heads, head_dim, rotary_dim, false, "rotary_forward");
}

// The rotation is orthogonal, so its gradient is the rotation by the negative angle.
template <class T>
void rotary_backward(T* dx, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                     int64_t rotary_dim) {
  rotate(dx, batch, seq, heads, head_dim, rotary_dim, true, "rotary_backward");
}

template void rotary_forward<float>(float*, int64_t, int64_t, int64_t, int64_t, int64_t);
template void rotary_forward<double>(double*, int64_t, int64_t, int64_t, int64_t, int64_t);
template void rotary_backward<float>(float*, int64_t, int64_t, int64_t, int64_t, int64_t);
template void rotary_backward<double>(double*, int64_t, int64_t, int64_t, int64_t, int64_t);

}  // namespace zt::model::cpu
