// Fused CUDA attention (model/cuda/attention.cu) against the CPU twin on awkward shapes in bf16
// and fp16, against the materialising GPU reference at GPT-J-6B shape, plus determinism and
// causality. Tolerances are worst-case error bounds built from the dtype's unit roundoff and
// fp32 accumulation, per element (see ErrorModel below).
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "model/cuda/attention_sm90.h"
#include "model/cuda/attention_tiles.cuh"
#include "model/ops_cpu.h"
#include "model/ops_cuda.h"
#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cuda_device.h"
#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/rng.h"

namespace zt::model::cuda {
namespace {

constexpr uint64_t kSeed = 20240611;

struct Dims {
  int64_t batch, seq, heads, head_dim;
  size_t act() const { return size_t(batch * seq * heads * head_dim); }  // [B, T, H, Dh]
  size_t rows() const { return size_t(batch * heads * seq); }            // [B, H, T]
  size_t at(int64_t b, int64_t t, int64_t h) const {
    return size_t(((b * seq + t) * heads + h) * head_dim);
  }
  double scale() const { return 1.0 / std::sqrt(double(head_dim)); }
};

std::string describe(const Dims& d, DType dt) {
  return std::string(dtype_name(dt)) + " B=" + std::to_string(d.batch) +
         " T=" + std::to_string(d.seq) + " H=" + std::to_string(d.heads) +
         " Dh=" + std::to_string(d.head_dim);
}

// A host tensor in a 16-bit dtype: its bytes, and the same values exactly as floats.
struct Host16 {
  std::vector<float> values;
  std::vector<unsigned char> bytes;
};

Host16 random_input(size_t n, DType dt, uint64_t stream, double sigma = 1.0) {
  Host16 t;
  t.values.resize(n);
  for (size_t i = 0; i < n; ++i) t.values[i] = float(sigma * random_normal(kSeed, stream, i));
  t.bytes.resize(n * dtype_size(dt));
  convert_cpu(t.values.data(), DType::kF32, t.bytes.data(), dt, n);
  convert_cpu(t.bytes.data(), dt, t.values.data(), DType::kF32, n);  // the rounded values
  return t;
}

struct Inputs {
  Dims dims;
  DType dt;
  Host16 q, k, v, dout;
};

Inputs make_inputs(const Dims& d, DType dt, uint64_t seed) {
  return Inputs{d,
                dt,
                random_input(d.act(), dt, 4 * seed),
                random_input(d.act(), dt, 4 * seed + 1),
                random_input(d.act(), dt, 4 * seed + 2),
                random_input(d.act(), dt, 4 * seed + 3)};
}

Buffer to_device(const std::vector<unsigned char>& host, std::string_view what) {
  Buffer b = Buffer::allocate(Device::cuda(0), host.size(), MemCategory::kBuffers, what);
  cuda_copy(b.data(), host.data(), host.size());
  // A pageable host-to-device cudaMemcpy may return before its DMA ends, and the kernels run on a
  // non-blocking stream: wait for the device before queueing them.
  ZT_CUDA_CHECK(cudaDeviceSynchronize());
  return b;
}

// Output buffers start as all-ones bytes (NaN in bf16, fp16 and fp32): an element a kernel
// forgets to write fails every comparison.
Buffer device_nan(size_t bytes, std::string_view what) {
  Buffer b = Buffer::allocate(Device::cuda(0), bytes, MemCategory::kBuffers, what);
  ZT_CUDA_CHECK(cudaMemset(b.data(), 0xff, bytes));
  ZT_CUDA_CHECK(cudaDeviceSynchronize());
  return b;
}

std::vector<unsigned char> to_host(const Buffer& b) {
  std::vector<unsigned char> host(b.bytes());
  cuda_copy(host.data(), b.data(), host.size());
  return host;
}

std::vector<float> as_floats(const std::vector<unsigned char>& bytes, DType dt) {
  const size_t n = bytes.size() / dtype_size(dt);
  std::vector<float> f(n);
  convert_cpu(bytes.data(), dt, f.data(), DType::kF32, n);
  return f;
}

// What a run produced, as raw bytes (out, dq, dk, dv in dt; lse fp32).
struct FusedBytes {
  std::vector<unsigned char> out, lse, dq, dk, dv;
};

FusedBytes run_fused(const CudaContext& ctx, const Inputs& in) {
  const Dims& d = in.dims;
  const size_t act_bytes = d.act() * dtype_size(in.dt);
  Buffer q = to_device(in.q.bytes, "q"), k = to_device(in.k.bytes, "k"),
         v = to_device(in.v.bytes, "v"), dout = to_device(in.dout.bytes, "dout");
  Buffer out = device_nan(act_bytes, "out"), lse = device_nan(d.rows() * sizeof(float), "lse");
  Buffer dq = device_nan(act_bytes, "dq"), dk = device_nan(act_bytes, "dk"),
         dv = device_nan(act_bytes, "dv");
  attention_forward(ctx, q.data(), k.data(), v.data(), out.data(), static_cast<float*>(lse.data()),
                    d.batch, d.seq, d.heads, d.head_dim, in.dt);
  attention_backward(ctx, dout.data(), q.data(), k.data(), v.data(), out.data(),
                     static_cast<const float*>(lse.data()), dq.data(), dk.data(), dv.data(),
                     d.batch, d.seq, d.heads, d.head_dim, in.dt);
  ctx.synchronize();
  return FusedBytes{to_host(out), to_host(lse), to_host(dq), to_host(dk), to_host(dv)};
}

// Results as floats: the values under test, or an oracle's.
struct Results {
  std::vector<float> out, lse, dq, dk, dv;
};

Results as_results(const FusedBytes& f, DType dt) {
  return Results{as_floats(f.out, dt), as_floats(f.lse, DType::kF32), as_floats(f.dq, dt),
                 as_floats(f.dk, dt), as_floats(f.dv, dt)};
}

// Sums of absolute values that scale the error bounds, each [B, T, H, Dh]:
//   out_abs = sum_j P_ij |v_jd|
//   dq_abs = scale sum_j |dS_ij| |k_jd|,  dq_pabs = scale sum_j P_ij |k_jd|
//   dk_abs = scale sum_i |dS_ij| |q_id|,  dk_pabs = scale sum_i P_ij |q_id|
//   dv_abs = sum_i P_ij |dout_id|
struct AbsSums {
  std::vector<float> out_abs, dq_abs, dq_pabs, dk_abs, dk_pabs, dv_abs;
};

// The CPU twin (fp32) as the oracle for out, dq, dk, dv; lse in fp64 from q and k; the sums in
// fp64 from the twin's probabilities.
void cpu_oracle(const Inputs& in, Results* want, AbsSums* sums) {
  const Dims& d = in.dims;
  const int64_t T = d.seq, Dh = d.head_dim;
  const double scale = d.scale();
  std::vector<float> probs(size_t(d.batch * d.heads * T * T));
  want->out.assign(d.act(), 0.0f);
  want->dq.assign(d.act(), 0.0f);
  want->dk.assign(d.act(), 0.0f);
  want->dv.assign(d.act(), 0.0f);
  const float *q = in.q.values.data(), *k = in.k.values.data(), *v = in.v.values.data(),
              *dout = in.dout.values.data();
  cpu::attention_forward<float>(q, k, v, want->out.data(), probs.data(), d.batch, T, d.heads, Dh);
  cpu::attention_backward<float>(dout, q, k, v, probs.data(), want->dq.data(), want->dk.data(),
                                 want->dv.data(), d.batch, T, d.heads, Dh);

  want->lse.assign(d.rows(), 0.0f);
  std::vector<double> out_abs(d.act()), dq_abs(d.act()), dq_pabs(d.act()), dk_abs(d.act()),
      dk_pabs(d.act()), dv_abs(d.act());
  std::vector<double> s(static_cast<size_t>(T)), dp_row(static_cast<size_t>(T));
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t h = 0; h < d.heads; ++h) {
      for (int64_t i = 0; i < T; ++i) {
        const size_t qi = d.at(b, i, h);
        double m = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0.0;
          for (int64_t x = 0; x < Dh; ++x) dot += double(q[qi + x]) * k[d.at(b, j, h) + x];
          s[size_t(j)] = dot * scale;
          m = std::max(m, s[size_t(j)]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(s[size_t(j)] - m);
        want->lse[size_t((b * d.heads + h) * T + i)] = float(m + std::log(sum));

        const float* p = probs.data() + size_t(((b * d.heads + h) * T + i) * T);
        double dsum = 0.0;  // D_i = sum_j P_ij dP_ij
        for (int64_t j = 0; j <= i; ++j) {
          double dp = 0.0;
          for (int64_t x = 0; x < Dh; ++x) dp += double(dout[qi + x]) * v[d.at(b, j, h) + x];
          dp_row[size_t(j)] = dp;
          dsum += p[j] * dp;
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double pj = p[j];
          const double dsj = std::fabs(pj * (dp_row[size_t(j)] - dsum));
          const size_t kj = d.at(b, j, h);
          for (int64_t x = 0; x < Dh; ++x) {
            out_abs[qi + x] += pj * std::fabs(v[kj + x]);
            dq_abs[qi + x] += scale * dsj * std::fabs(k[kj + x]);
            dq_pabs[qi + x] += scale * pj * std::fabs(k[kj + x]);
            dk_abs[kj + x] += scale * dsj * std::fabs(q[qi + x]);
            dk_pabs[kj + x] += scale * pj * std::fabs(q[qi + x]);
            dv_abs[kj + x] += pj * std::fabs(dout[qi + x]);
          }
        }
      }
    }
  }
  auto to_float = [](const std::vector<double>& x) {
    return std::vector<float>(x.begin(), x.end());
  };
  *sums = AbsSums{to_float(out_abs), to_float(dq_abs),  to_float(dq_pabs),
                  to_float(dk_abs),  to_float(dk_pabs), to_float(dv_abs)};
}

// The materialising GPU reference as the oracle (fp64 sums, fp32 results).
void gpu_oracle(const CudaContext& ctx, const Inputs& in, Results* want, AbsSums* sums) {
  const Dims& d = in.dims;
  const size_t act_bytes = d.act() * sizeof(float);
  Buffer q = to_device(in.q.bytes, "q"), k = to_device(in.k.bytes, "k"),
         v = to_device(in.v.bytes, "v"), dout = to_device(in.dout.bytes, "dout");
  Buffer out = device_nan(act_bytes, "ref out"), lse = device_nan(d.rows() * 4, "ref lse"),
         out_abs = device_nan(act_bytes, "ref out_abs"), dq = device_nan(act_bytes, "ref dq"),
         dk = device_nan(act_bytes, "ref dk"), dv = device_nan(act_bytes, "ref dv"),
         dq_abs = device_nan(act_bytes, "ref dq_abs"),
         dq_pabs = device_nan(act_bytes, "ref dq_pabs"),
         dk_abs = device_nan(act_bytes, "ref dk_abs"),
         dk_pabs = device_nan(act_bytes, "ref dk_pabs"),
         dv_abs = device_nan(act_bytes, "ref dv_abs");
  auto f = [](const Buffer& b) { return static_cast<float*>(b.data()); };
  attention_reference_forward(ctx, q.data(), k.data(), v.data(), f(out), f(lse), f(out_abs),
                              d.batch, d.seq, d.heads, d.head_dim, in.dt);
  AttentionReferenceAbs abs;
  abs.dq_abs = f(dq_abs);
  abs.dq_pabs = f(dq_pabs);
  abs.dk_abs = f(dk_abs);
  abs.dk_pabs = f(dk_pabs);
  abs.dv_abs = f(dv_abs);
  attention_reference_backward(ctx, dout.data(), q.data(), k.data(), v.data(), f(dq), f(dk), f(dv),
                               &abs, d.batch, d.seq, d.heads, d.head_dim, in.dt);
  ctx.synchronize();
  auto host = [](const Buffer& b) { return as_floats(to_host(b), DType::kF32); };
  *want = Results{host(out), host(lse), host(dq), host(dk), host(dv)};
  *sums = AbsSums{host(out_abs), host(dq_abs),  host(dq_pabs),
                  host(dk_abs),  host(dk_pabs), host(dv_abs)};
}

// Largest row 2-norm (over (b, t, h)) and largest |x| of a [B, T, H, Dh] tensor.
struct Magnitude {
  double row_norm = 0.0, max_abs = 0.0;
};

Magnitude magnitude(const std::vector<float>& x, int64_t head_dim) {
  Magnitude m;
  for (size_t r = 0; r < x.size(); r += size_t(head_dim)) {
    double ss = 0.0;
    for (int64_t i = 0; i < head_dim; ++i) {
      ss += double(x[r + size_t(i)]) * x[r + size_t(i)];
      m.max_abs = std::max(m.max_abs, double(std::fabs(x[r + size_t(i)])));
    }
    m.row_norm = std::max(m.row_norm, std::sqrt(ss));
  }
  return m;
}

// Unit roundoff of rounding a result to `dt` (round to nearest: relative error <= 2^-p with p the
// significand bits including the hidden one: bf16 8, fp16 11, fp32 24). A value in [2^e, 2^e+1)
// is off by at most half an ulp = 2^(e-p), i.e. 2^-p relative at the bottom of the binade.
double unit_roundoff(DType dt) {
  switch (dt) {
    case DType::kBF16: return std::ldexp(1.0, -8);
    case DType::kF16: return std::ldexp(1.0, -11);
    default: return std::ldexp(1.0, -24);
  }
}

// Absolute rounding error below the normal range: fp16 subnormals are 2^-24 apart (error 2^-25);
// bf16 and fp32 share fp32's range, where the kernels' exp2 flushes results below 2^-126.
double underflow_error(DType dt) {
  return dt == DType::kF16 ? std::ldexp(1.0, -25) : std::ldexp(1.0, -126);
}

// Relative error bound of an n-term fp32 sum, for the kernel and the oracle together: n * 2^-24
// each, doubled again because tensor cores may truncate rather than round their fp32 adds.
double sum_error(double n) { return 4.0 * n * std::ldexp(1.0, -24); }

// Worst-case first-order error model of `got` (results rounded to `result_dt`, with P and dS
// rounded to result_dt as MMA operands) against an exact-arithmetic oracle on the same inputs.
// Products of the first-order terms (each below 2^-7 here) are covered by a factor 1 + 2^-6.
class ErrorModel {
 public:
  ErrorModel(const Inputs& in, DType result_dt) : d_(in.dims), dout_values_(&in.dout.values) {
    u_ = unit_roundoff(result_dt);
    tiny_ = underflow_error(result_dt);
    const double T = double(d_.seq), Dh = double(d_.head_dim);
    q_ = magnitude(in.q.values, d_.head_dim);
    k_ = magnitude(in.k.values, d_.head_dim);
    v_ = magnitude(in.v.values, d_.head_dim);
    dout_ = magnitude(in.dout.values, d_.head_dim);
    // |score| <= scale ||q_i|| ||k_j|| (Cauchy-Schwarz).
    const double s_max = d_.scale() * q_.row_norm * k_.row_norm;
    // A score is an fp32 dot of Dh products (sum_error(Dh) relative to sum |q k|, bounded as
    // s_max); the log2-scaled exponent then rounds a few times at magnitude <= s_max + log T + 1
    // (scale*log2e, lse*log2e, the fma): 4 ulps of fp32 there.
    s_err_ = sum_error(Dh) * s_max + 4.0 * std::ldexp(1.0, -24) * (s_max + std::log(T) + 1.0);
    // P = exp(s - lse): s and lse are each off by s_err (lse also by its row sum's fp32 error),
    // and exp2.approx adds 2^-21 relative.
    p_rel_ = 2.0 * s_err_ + sum_error(T) + std::ldexp(1.0, -21);
    // Each term of a P- or dS-weighted sum: the 16-bit rounding of P or dS for the MMA (u), P's
    // own error, and fp32 accumulation over up to T terms.
    term_rel_ = u_ + p_rel_ + sum_error(T);
  }

  // out_i = sum_j P_ij v_j: terms off by term_rel, underflowed P by tiny; one final rounding.
  double out(double want, double out_abs) const {
    return kSecondOrder *
           (u_ * std::fabs(want) + term_rel_ * out_abs + tiny_ * double(d_.seq) * v_.max_abs);
  }
  // lse = max + log(sum): the max is off by s_err, the log of the sum by s_err + its fp32 error;
  // log2 and the final ln2 multiply round within 2^-22 relative.
  double lse(double want) const {
    return kSecondOrder * (2.0 * s_err_ + sum_error(double(d_.seq)) +
                           std::ldexp(1.0, -22) * (std::fabs(want) + 1.0));
  }
  // The fused backward uses D_i = dout_i . out_i with its own (rounded) out: off from the exact
  // sum_j P_ij dP_ij by dout_i . (out error) plus fp32 summation over Dh. dP_ij = dout_i . v_j is
  // off by sum_error(Dh) ||dout_i|| ||v_j||. The largest total over rows bounds |error of dP - D|.
  void set_row_error(const Results& got, const Results& want, const AbsSums& sums) {
    const double Dh = double(d_.head_dim);
    double worst = 0.0;
    for (size_t r = 0; r < d_.act(); r += size_t(d_.head_dim)) {
      double e = 0.0, mag = 0.0;
      for (int64_t x = 0; x < d_.head_dim; ++x) {
        const size_t i = r + size_t(x);
        const double g = std::fabs((*dout_values_)[i]);
        e += g * out(want.out[i], sums.out_abs[i]);
        mag += g * std::fabs(double(got.out[i]));
      }
      worst = std::max(worst, e + sum_error(Dh) * mag);
    }
    // + dP's fp32 dot over Dh; + the oracle's own D, a sum of T terms P_ij |dP_ij| <= max |dP|.
    row_err_ = worst + sum_error(Dh + double(d_.seq)) * dout_.row_norm * v_.row_norm;
  }

  // dq_i = scale sum_j dS_ij k_j with dS_ij = P_ij (dP_ij - D_i): each dS term is off by
  // term_rel |dS| (P's error, its 16-bit rounding, accumulation) plus P_ij row_err (dP - D).
  double dq(double want, double dq_abs, double dq_pabs) const {
    return kSecondOrder * (u_ * std::fabs(want) + term_rel_ * dq_abs + row_err_ * dq_pabs +
                           tiny_ * d_.scale() * double(d_.seq) * k_.max_abs);
  }
  double dk(double want, double dk_abs, double dk_pabs) const {
    return kSecondOrder * (u_ * std::fabs(want) + term_rel_ * dk_abs + row_err_ * dk_pabs +
                           tiny_ * d_.scale() * double(d_.seq) * q_.max_abs);
  }
  double p_rel() const { return p_rel_; }

  // dv_j = sum_i P_ij dout_i.
  double dv(double want, double dv_abs) const {
    return kSecondOrder *
           (u_ * std::fabs(want) + term_rel_ * dv_abs + tiny_ * double(d_.seq) * dout_.max_abs);
  }

 private:
  static constexpr double kSecondOrder = 1.0 + 1.0 / 64.0;
  Dims d_;
  double u_ = 0.0, tiny_ = 0.0, s_err_ = 0.0, p_rel_ = 0.0, term_rel_ = 0.0, row_err_ = 0.0;
  Magnitude q_, k_, v_, dout_;
  const std::vector<float>* dout_values_;
};

// Counts |got - want| > tol (NaN counts) and reports the first few with their (b, t, h, d).
template <class Tol>
void expect_within(const char* name, const std::vector<float>& got, const std::vector<float>& want,
                   Tol tol, const Dims& d, bool per_row, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << name;
  size_t bad = 0;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - double(want[i]));
    const double t = tol(i);
    if (!(err <= t)) {
      if (bad < 5) {
        std::string where;
        if (per_row) {  // [B, H, T]
          const int64_t t_idx = int64_t(i) % d.seq, bh = int64_t(i) / d.seq;
          where = "b=" + std::to_string(bh / d.heads) + " h=" + std::to_string(bh % d.heads) +
                  " t=" + std::to_string(t_idx);
        } else {  // [B, T, H, Dh]
          const int64_t x = int64_t(i) % d.head_dim, row = int64_t(i) / d.head_dim;
          where = "b=" + std::to_string(row / d.heads / d.seq) +
                  " t=" + std::to_string((row / d.heads) % d.seq) +
                  " h=" + std::to_string(row % d.heads) + " d=" + std::to_string(x);
        }
        ADD_FAILURE() << what << ": " << name << " at " << where << ": got " << got[i] << ", want "
                      << want[i] << ", tolerance " << t;
      }
      ++bad;
    } else if (t > 0.0) {
      worst_ratio = std::max(worst_ratio, err / t);
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << name << " outside its bound in " << bad << " of "
                     << got.size() << " elements";
  std::printf("  %s %s: worst |err| / bound = %.3f\n", what.c_str(), name, worst_ratio);
}

// Every result of `got` within ErrorModel's bound of `want`.
void expect_close(const Inputs& in, const Results& got, const Results& want, const AbsSums& sums,
                  DType result_dt, const std::string& what) {
  const Dims& d = in.dims;
  ErrorModel model(in, result_dt);
  expect_within(
      "out", got.out, want.out, [&](size_t i) { return model.out(want.out[i], sums.out_abs[i]); },
      d, false, what);
  expect_within(
      "lse", got.lse, want.lse, [&](size_t i) { return model.lse(want.lse[i]); }, d, true, what);
  model.set_row_error(got, want, sums);
  expect_within(
      "dq", got.dq, want.dq,
      [&](size_t i) { return model.dq(want.dq[i], sums.dq_abs[i], sums.dq_pabs[i]); }, d, false,
      what);
  expect_within(
      "dk", got.dk, want.dk,
      [&](size_t i) { return model.dk(want.dk[i], sums.dk_abs[i], sums.dk_pabs[i]); }, d, false,
      what);
  expect_within(
      "dv", got.dv, want.dv, [&](size_t i) { return model.dv(want.dv[i], sums.dv_abs[i]); }, d,
      false, what);
}

void check_fused_against_cpu(const CudaContext& ctx, const Dims& d, DType dt, uint64_t seed) {
  const Inputs in = make_inputs(d, dt, seed);
  Results want;
  AbsSums sums;
  cpu_oracle(in, &want, &sums);
  const Results got = as_results(run_fused(ctx, in), dt);
  expect_close(in, got, want, sums, dt, describe(d, dt));
}

TEST(CudaAttention, FusedMatchesCpuTwinBf16) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  uint64_t seed = 1;
  for (int64_t head_dim : {64, 256})
    for (int64_t seq : {1, 7, 64, 129})
      check_fused_against_cpu(ctx, Dims{3, seq, 2, head_dim}, DType::kBF16, seed++);
}

TEST(CudaAttention, FusedMatchesCpuTwinFp16) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  uint64_t seed = 100;
  for (int64_t head_dim : {64, 256})
    for (int64_t seq : {1, 7, 64, 129})
      check_fused_against_cpu(ctx, Dims{3, seq, 2, head_dim}, DType::kF16, seed++);
}

// Head dims that are not 64/128/256 run in the next wider kernel with zero-filled columns.
TEST(CudaAttention, NarrowHeadDimsMatchCpuTwin) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  uint64_t seed = 200;
  for (DType dt : {DType::kBF16, DType::kF16})
    for (int64_t head_dim : {16, 48, 112, 128, 160})
      check_fused_against_cpu(ctx, Dims{2, 70, 3, head_dim}, dt, seed++);
}

// The materialising reference itself against the CPU twin (fp32 results: u = 2^-24), so the
// large-shape comparison below rests on a checked oracle.
TEST(CudaAttention, ReferenceMatchesCpuTwin) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  for (const Dims& d : {Dims{2, 129, 2, 64}, Dims{1, 70, 2, 256}}) {
    const Inputs in = make_inputs(d, DType::kBF16, 300 + uint64_t(d.head_dim));
    Results want, got;
    AbsSums sums, ref_sums;
    cpu_oracle(in, &want, &sums);
    gpu_oracle(ctx, in, &got, &ref_sums);
    const std::string what = "reference " + describe(d, DType::kBF16);
    expect_close(in, got, want, sums, DType::kF32, what);
    // The reference's own sums feed the large test's bounds, so check them too. Each side's P
    // is within p_rel of exact and each sum has fp32 accumulation error: twice that, relative,
    // bounds the P-weighted sums (all terms are non-negative).
    ErrorModel model(in, DType::kF32);
    model.set_row_error(got, want, sums);
    const double rel = 2.0 * (model.p_rel() + sum_error(double(d.seq)));
    auto same = [&](const char* name, const std::vector<float>& a, const std::vector<float>& b) {
      expect_within(
          name, a, b, [&](size_t i) { return rel * std::fabs(b[i]); }, d, false, what);
    };
    same("out_abs", ref_sums.out_abs, sums.out_abs);
    same("dq_pabs", ref_sums.dq_pabs, sums.dq_pabs);
    same("dk_pabs", ref_sums.dk_pabs, sums.dk_pabs);
    same("dv_abs", ref_sums.dv_abs, sums.dv_abs);
    // Each side's |dS_ij| is within the per-term error the dq/dk bounds allow: twice those bound
    // the difference of the |dS|-weighted sums.
    expect_within(
        "dq_abs", ref_sums.dq_abs, sums.dq_abs,
        [&](size_t i) { return 2.0 * model.dq(0.0, sums.dq_abs[i], sums.dq_pabs[i]); }, d, false,
        what);
    expect_within(
        "dk_abs", ref_sums.dk_abs, sums.dk_abs,
        [&](size_t i) { return 2.0 * model.dk(0.0, sums.dk_abs[i], sums.dk_pabs[i]); }, d, false,
        what);
  }
}

// GPT-J-6B attention shape (Dh = 256, T = 2048, 16 heads) in bf16 against the materialising
// reference, with bounds from the reference's own absolute sums.
TEST(CudaAttention, FusedMatchesReferenceAtGptj6bShape) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  const Dims d{2, 2048, 16, 256};
  const Inputs in = make_inputs(d, DType::kBF16, 400);
  Results want;
  AbsSums sums;
  gpu_oracle(ctx, in, &want, &sums);
  const Results got = as_results(run_fused(ctx, in), DType::kBF16);
  expect_close(in, got, want, sums, DType::kBF16, "GPT-J-6B " + describe(d, DType::kBF16));
}

// The same inputs give the same bits: no atomics, fixed reduction orders.
TEST(CudaAttention, RepeatedRunsAreBitIdentical) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  for (DType dt : {DType::kBF16, DType::kF16}) {
    const Inputs in = make_inputs(Dims{2, 300, 3, 256}, dt, 500);
    const FusedBytes a = run_fused(ctx, in);
    const FusedBytes b = run_fused(ctx, in);
    EXPECT_TRUE(a.out == b.out) << dtype_name(dt) << " out";
    EXPECT_TRUE(a.lse == b.lse) << dtype_name(dt) << " lse";
    EXPECT_TRUE(a.dq == b.dq) << dtype_name(dt) << " dq";
    EXPECT_TRUE(a.dk == b.dk) << dtype_name(dt) << " dk";
    EXPECT_TRUE(a.dv == b.dv) << dtype_name(dt) << " dv";
  }
}

// Causality, bit for bit: keys/values after position `cut` do not change out, lse or dq at
// positions <= cut; queries/dout before `cut` do not change dk, dv at positions > cut. The cut
// sits inside a tile so masked and unmasked entries share tiles.
TEST(CudaAttention, LaterPositionsDoNotLeakIntoEarlierOnes) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  const Dims d{2, 200, 2, 128};
  const int64_t cut = 100;
  const DType dt = DType::kBF16;
  const Inputs in = make_inputs(d, dt, 600);
  const size_t w = dtype_size(dt);
  const size_t row_bytes = size_t(d.head_dim) * w;
  // Replacements: 3x larger values, so a leak would be large.
  const Host16 other_a = random_input(d.act(), dt, 4 * 601, 3.0);
  const Host16 other_b = random_input(d.act(), dt, 4 * 601 + 1, 3.0);

  Inputs later = in;    // k, v changed at t > cut
  Inputs earlier = in;  // q, dout changed at t <= cut
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t t = 0; t < d.seq; ++t)
      for (int64_t h = 0; h < d.heads; ++h) {
        const size_t at = d.at(b, t, h);
        Inputs& target = t > cut ? later : earlier;
        Host16& x = t > cut ? target.k : target.q;
        Host16& y = t > cut ? target.v : target.dout;
        std::memcpy(x.bytes.data() + at * w, other_a.bytes.data() + at * w, row_bytes);
        std::memcpy(y.bytes.data() + at * w, other_b.bytes.data() + at * w, row_bytes);
      }

  const FusedBytes base = run_fused(ctx, in);
  const FusedBytes changed_later = run_fused(ctx, later);
  const FusedBytes changed_earlier = run_fused(ctx, earlier);
  bool out_changed_after_cut = false;
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < d.heads; ++h)
      for (int64_t t = 0; t < d.seq; ++t) {
        const size_t at = d.at(b, t, h) * w;
        const size_t row = size_t((b * d.heads + h) * d.seq + t) * sizeof(float);
        if (t <= cut) {
          EXPECT_EQ(std::memcmp(base.out.data() + at, changed_later.out.data() + at, row_bytes), 0)
              << "out b=" << b << " h=" << h << " t=" << t;
          EXPECT_EQ(std::memcmp(base.lse.data() + row, changed_later.lse.data() + row, 4), 0)
              << "lse b=" << b << " h=" << h << " t=" << t;
          EXPECT_EQ(std::memcmp(base.dq.data() + at, changed_later.dq.data() + at, row_bytes), 0)
              << "dq b=" << b << " h=" << h << " t=" << t;
        } else {
          out_changed_after_cut |=
              std::memcmp(base.out.data() + at, changed_later.out.data() + at, row_bytes) != 0;
          EXPECT_EQ(std::memcmp(base.dk.data() + at, changed_earlier.dk.data() + at, row_bytes), 0)
              << "dk b=" << b << " h=" << h << " t=" << t;
          EXPECT_EQ(std::memcmp(base.dv.data() + at, changed_earlier.dv.data() + at, row_bytes), 0)
              << "dv b=" << b << " h=" << h << " t=" << t;
        }
      }
  EXPECT_TRUE(out_changed_after_cut) << "the replaced keys/values changed nothing at all";
}

TEST(CudaAttention, RejectsUnsupportedShapes) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  Buffer x = Buffer::allocate(Device::cuda(0), 1 << 16, MemCategory::kBuffers, "x");
  Buffer lse = Buffer::allocate(Device::cuda(0), 1 << 12, MemCategory::kBuffers, "lse");
  float* l = static_cast<float*>(lse.data());
  // head_dim above 256 or not a multiple of 8; fp32 storage.
  EXPECT_THROW(
      attention_forward(ctx, x.data(), x.data(), x.data(), x.data(), l, 1, 4, 1, 264, DType::kBF16),
      Error);
  EXPECT_THROW(
      attention_forward(ctx, x.data(), x.data(), x.data(), x.data(), l, 1, 4, 1, 12, DType::kBF16),
      Error);
  EXPECT_THROW(
      attention_forward(ctx, x.data(), x.data(), x.data(), x.data(), l, 1, 4, 1, 64, DType::kF32),
      Error);
}

// On an H100/H200 the tests above must exercise the wgmma kernels (unless the portable ones are
// forced, as the cuda_attention_portable CTest does), so the Hopper path cannot fall back to the
// portable one unnoticed. Heads up to 128 wide always run the portable kernels.
TEST(CudaAttention, HopperKernelsRunOnHopperGpus) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaContext ctx(0);
  int major = 0, minor = 0;
  ZT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  ZT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0));
  EXPECT_EQ(ctx.compute_capability(), 10 * major + minor);
  const char* forced = std::getenv("ZT_ATTENTION_KERNEL");
  const bool portable = forced != nullptr && std::string_view(forced) == "portable";
#if defined(ZT_CUDA_SM90A)
  const bool hopper = major == 9 && minor == 0 && !portable;
#else
  const bool hopper = false;  // built without sm_90a code
#endif
  EXPECT_EQ(attention_sm90_usable(ctx, 256), hopper);
  EXPECT_EQ(attention_sm90_usable(ctx, 136), hopper);
  EXPECT_FALSE(attention_sm90_usable(ctx, 128));
  EXPECT_FALSE(attention_sm90_usable(ctx, 64));
}

}  // namespace
}  // namespace zt::model::cuda
