// Tests of the SIMD paths of adamw_step_cpu (bit for bit against the scalar reference, note
// "AdamW bit identity" in optim/adamw_simd.h) and of the per-rank CPU pinning helpers.
#include <gtest/gtest.h>
#include <omp.h>
#include <sched.h>

#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "optim/adamw.h"
#include "optim/cpu_affinity.h"
#include "runtime/dtype.h"
#include "runtime/error.h"
#include "tests/support/thread_count.h"

namespace zt::optim {
namespace {

using zt::testing::ThreadCount;

const CpuSimd kSimdPaths[] = {CpuSimd::kAvx2, CpuSimd::kAvx512, CpuSimd::kAvx512Bf16};

// Skips the calling test when this CPU cannot run `simd` (the lead runs the suite on a machine
// that can; the message says which path was not covered).
#define SKIP_UNLESS_SUPPORTED(simd)                                                          \
  do {                                                                                       \
    if (!cpu_simd_supported(simd))                                                           \
      GTEST_SKIP() << "this CPU lacks the features of the " << cpu_simd_name(simd)          \
                   << " path; run this test on a CPU that has them";                         \
  } while (0)

// The copy a call writes: none, or param16 in a dtype.
struct Copy {
  bool on;
  DType dtype;
};
const Copy kCopies[] = {{false, DType::kBF16}, {true, DType::kBF16}, {true, DType::kF16},
                        {true, DType::kF32}};

std::string describe(CpuSimd simd, size_t n, DType grad, Copy copy, double wd, double scale) {
  return std::string(cpu_simd_name(simd)) + " n=" + std::to_string(n) + " grad=" +
         std::string(dtype_name(grad)) + " copy=" +
         (copy.on ? std::string(dtype_name(copy.dtype)) : std::string("none")) +
         " wd=" + std::to_string(wd) + " scale=" + std::to_string(scale);
}

// One optimizer state plus per-step gradients, in a given gradient dtype. Values are mostly
// realistic, with non-finite and edge values sprinkled in. Unless `nans_meet`, element i gets
// such gradients only in step i % steps, so every NaN an element ever holds descends from one
// source (one payload, or the default NaN of inf / inf) and no operation sees two NaNs of
// different payloads: see NaNsOfDifferentPayloadsMeetingStayNaN for why that case is apart.
struct Problem {
  std::vector<float> p, m, v;
  std::vector<std::vector<uint8_t>> grads;  // one per step, n * dtype_size(grad dtype) bytes
  std::vector<uint8_t> copy;                // n * 4 bytes, room for any copy dtype
};

float from_bits(uint32_t u) { return bits_to_float(u); }

// Gradient specials (fp32 values; stored in the gradient dtype they may round).
const float kGradSpecials[] = {
    std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
    from_bits(0x7fc00000u),  // quiet NaN
    from_bits(0xffc12345u),  // negative quiet NaN with payload
    from_bits(0x7f812000u),  // signalling NaN (bf16: 0x7f81, fp16: a NaN too)
    0.0f, -0.0f, 1e-40f /* fp32 subnormal */, 3e38f /* g*g overflows to inf */, 1e-30f,
    65504.0f, 1e20f};

Problem make_problem(size_t n, DType grad_dtype, int steps, uint32_t seed,
                     bool nans_meet = false) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 63);
  Problem pr;
  pr.p.resize(n);
  pr.m.resize(n);
  pr.v.resize(n);
  for (size_t i = 0; i < n; ++i) {
    pr.p[i] = unit(rng);
    pr.m[i] = 0.1f * unit(rng);
    pr.v[i] = 0.01f * std::abs(unit(rng));
    // Parameter edge cases: subnormals (the bf16 copy of one), past the fp16 range, huge.
    switch (pick(rng)) {
      case 0: pr.p[i] = from_bits(0x00400001u + uint32_t(i % 1000) * 0x1000u); break;
      case 1: pr.p[i] = -from_bits(0x007fffffu - uint32_t(i % 1000)); break;
      case 2: pr.p[i] = 65519.0f + float(i % 3); break;
      case 3: pr.p[i] = 3.3e38f; break;
      case 4: pr.p[i] = 1e-6f; pr.m[i] = 0.0f; pr.v[i] = 0.0f; break;
      default: break;
    }
  }
  const size_t gsize = dtype_size(grad_dtype);
  pr.grads.resize(size_t(steps));
  for (int s = 0; s < steps; ++s) {
    std::vector<uint8_t>& g = pr.grads[size_t(s)];
    g.resize(n * gsize);
    for (size_t i = 0; i < n; ++i) {
      float x = unit(rng);
      int k = pick(rng);
      if (!nans_meet && int(i % size_t(steps)) != s) k = 63;  // realistic value only
      if (k < int(std::size(kGradSpecials))) x = kGradSpecials[k];
      if (k == 20) x = 0.0f;  // with zero state: parameter passes through (decay only)
      store_from_double(g.data(), grad_dtype, i, double(x));
      // Raw 16-bit patterns too (any exponent, NaN payloads the fp32 conversion cannot make).
      if (k == 30 && gsize == 2) {
        const uint16_t bits = uint16_t(rng());
        std::memcpy(g.data() + 2 * i, &bits, 2);
      }
      if (k == 31 && gsize == 4) {
        const uint32_t bits = 0x7f800001u | (uint32_t(rng()) & 0x807fffffu);  // any NaN
        std::memcpy(g.data() + 4 * i, &bits, 4);
      }
    }
  }
  pr.copy.assign(n * 4, 0xa5);
  return pr;
}

AdamWStep step_hp(int64_t step, double wd, double scale) {
  AdamWStep hp;
  hp.lr = 0.01;
  hp.beta1 = 0.9;
  hp.beta2 = 0.95;
  hp.eps = 1e-8;
  hp.weight_decay = wd;
  hp.grad_scale = scale;
  hp.step = step;
  return hp;
}

void run(CpuSimd simd, Problem& pr, DType grad_dtype, Copy copy, double wd, double scale) {
  const int64_t n = int64_t(pr.p.size());
  for (size_t s = 0; s < pr.grads.size(); ++s) {
    adamw_step_cpu(simd, pr.p.data(), pr.m.data(), pr.v.data(), pr.grads[s].data(), grad_dtype,
                   n, step_hp(int64_t(s) + 1, wd, scale), copy.on ? pr.copy.data() : nullptr,
                   copy.dtype);
  }
}

template <class T>
size_t first_difference(const std::vector<T>& a, const std::vector<T>& b, size_t elem_size) {
  const auto* x = reinterpret_cast<const uint8_t*>(a.data());
  const auto* y = reinterpret_cast<const uint8_t*>(b.data());
  const size_t bytes = a.size() * sizeof(T);
  if (std::memcmp(x, y, bytes) == 0) return SIZE_MAX;
  for (size_t i = 0; i < bytes; ++i) {
    if (x[i] != y[i]) return i / elem_size;
  }
  return SIZE_MAX;
}

// Runs `steps` steps on `simd` and on the scalar reference from the same inputs and asserts
// identical bits in param, m, v and the whole copy buffer (bytes past the copy included).
void expect_same_as_scalar(CpuSimd simd, size_t n, DType grad_dtype, Copy copy, double wd,
                           double scale, int steps = 3) {
  const uint32_t seed = uint32_t(n * 31 + size_t(grad_dtype) * 7 + 1);
  Problem ref = make_problem(n, grad_dtype, steps, seed);
  Problem got = ref;
  run(CpuSimd::kScalar, ref, grad_dtype, copy, wd, scale);
  run(simd, got, grad_dtype, copy, wd, scale);
  const std::string what = describe(simd, n, grad_dtype, copy, wd, scale);
  size_t i = first_difference(ref.p, got.p, 4);
  ASSERT_EQ(i, SIZE_MAX) << what << ": param " << i << " scalar " << std::hex
                         << float_to_bits(ref.p[i]) << " simd " << float_to_bits(got.p[i]);
  i = first_difference(ref.m, got.m, 4);
  ASSERT_EQ(i, SIZE_MAX) << what << ": m " << i << " scalar " << std::hex
                         << float_to_bits(ref.m[i]) << " simd " << float_to_bits(got.m[i]);
  i = first_difference(ref.v, got.v, 4);
  ASSERT_EQ(i, SIZE_MAX) << what << ": v " << i << " scalar " << std::hex
                         << float_to_bits(ref.v[i]) << " simd " << float_to_bits(got.v[i]);
  i = first_difference(ref.copy, got.copy, copy.on ? dtype_size(copy.dtype) : 1);
  ASSERT_EQ(i, SIZE_MAX) << what << ": param16 element " << i;
}

class AdamWSimd : public ::testing::TestWithParam<CpuSimd> {};

TEST_P(AdamWSimd, BitIdenticalToScalarAtOddSizes) {
  const CpuSimd simd = GetParam();
  SKIP_UNLESS_SUPPORTED(simd);
  const int64_t tile = kAdamWCpuTile;
  // Around the vector widths (8, 16, unrolled 32) and the tile edges.
  const size_t sizes[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 100,
                          size_t(tile - 1), size_t(tile), size_t(tile + 1),
                          size_t(2 * tile + 17)};
  for (size_t n : sizes) {
    for (DType grad : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (const Copy& copy : kCopies) {
        expect_same_as_scalar(simd, n, grad, copy, 0.0, 1.0);
        expect_same_as_scalar(simd, n, grad, copy, 0.1, 0.37);
        if (HasFatalFailure()) return;
      }
    }
  }
}

// When one operation meets two NaNs of different payloads (a NaN state from an earlier step and
// a NaN gradient of another payload now), x86 returns the payload of the first source operand,
// and which operand comes first is the compiler's choice: GCC commutes the operands of + and *
// freely, differently in its vectorised body and its scalar epilogue, so the scalar reference
// itself gives different payloads for the same element at different positions of a call (seen:
// v = 0xffc10000 at element 3 of a 7-element call, 0x7fc10000 in a 1-element call). NaN payloads
// carry no meaning (and the CUDA twin returns a canonical NaN), so here NaN results need only be
// NaN in both; every other value is still compared bit for bit.
TEST_P(AdamWSimd, NaNsOfDifferentPayloadsMeetingStayNaN) {
  const CpuSimd simd = GetParam();
  SKIP_UNLESS_SUPPORTED(simd);
  for (DType grad : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (const Copy& copy : kCopies) {
      const size_t n = 4099;
      Problem ref = make_problem(n, grad, 3, 77, /*nans_meet=*/true);
      Problem got = ref;
      run(CpuSimd::kScalar, ref, grad, copy, 0.1, 0.37);
      run(simd, got, grad, copy, 0.1, 0.37);
      const std::string what = describe(simd, n, grad, copy, 0.1, 0.37);
      size_t nans = 0;
      for (size_t i = 0; i < n; ++i) {
        const float* r[] = {&ref.p[i], &ref.m[i], &ref.v[i]};
        const float* g[] = {&got.p[i], &got.m[i], &got.v[i]};
        for (int j = 0; j < 3; ++j) {
          if (std::isnan(*r[j])) {
            ++nans;
            ASSERT_TRUE(std::isnan(*g[j])) << what << " element " << i << " field " << j;
          } else {
            ASSERT_EQ(float_to_bits(*r[j]), float_to_bits(*g[j]))
                << what << " element " << i << " field " << j;
          }
        }
        if (!copy.on) continue;
        const size_t size = dtype_size(copy.dtype);
        const bool nan = std::isnan(ref.p[i]);
        if (!nan) {
          ASSERT_EQ(std::memcmp(ref.copy.data() + i * size, got.copy.data() + i * size, size), 0)
              << what << " copy " << i;
        } else if (copy.dtype == DType::kBF16) {
          uint16_t bits;
          std::memcpy(&bits, got.copy.data() + 2 * i, 2);
          ASSERT_TRUE(std::isnan(bf16_to_float(bf16{bits}))) << what << " copy " << i;
        } else if (copy.dtype == DType::kF16) {
          uint16_t bits;
          std::memcpy(&bits, got.copy.data() + 2 * i, 2);
          ASSERT_TRUE(std::isnan(f16_to_float(f16{bits}))) << what << " copy " << i;
        } else {
          float x;
          std::memcpy(&x, got.copy.data() + 4 * i, 4);
          ASSERT_TRUE(std::isnan(x)) << what << " copy " << i;
        }
      }
      EXPECT_GT(nans, 100u) << what;  // the case is exercised
      const size_t rest = n * 4;       // bytes past the copy stay untouched
      const size_t used = copy.on ? n * dtype_size(copy.dtype) : 0;
      EXPECT_EQ(std::memcmp(ref.copy.data() + used, got.copy.data() + used, rest - used), 0);
    }
  }
}

TEST_P(AdamWSimd, BitIdenticalToScalarOnALargeRange) {
  const CpuSimd simd = GetParam();
  SKIP_UNLESS_SUPPORTED(simd);
  ThreadCount threads(2);
  for (DType grad : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (const Copy& copy : kCopies) {
      expect_same_as_scalar(simd, 1000003, grad, copy, 0.1, 0.37, 2);
      if (HasFatalFailure()) return;
    }
  }
}

// With zero gradient and state and no weight decay the parameter passes through unchanged
// (p * 1 - lr * 0), so the copy is the conversion of every fp32 pattern we choose: a stride
// through all 2^32 patterns plus the subnormal and rounding edges, against dtype.h directly.
TEST_P(AdamWSimd, CopyRoundsEveryKindOfValueLikeDtypeH) {
  const CpuSimd simd = GetParam();
  SKIP_UNLESS_SUPPORTED(simd);
  std::vector<float> p;
  for (uint64_t u = 0; u < (uint64_t(1) << 32); u += 4093) p.push_back(from_bits(uint32_t(u)));
  for (uint32_t base : {0x00000000u, 0x00800000u, 0x7f800000u, 0x3f800000u, 0x477fe000u,
                        0x387fc000u, 0x33000000u}) {
    for (uint32_t d = 0; d < 64; ++d) {
      for (uint32_t sign : {0u, 0x80000000u}) {
        p.push_back(from_bits(sign | (base + d)));
        p.push_back(from_bits(sign | (base - d - 1)));
        p.push_back(from_bits(sign | (base + 0x7fffu + d)));  // near bf16 halfway points
        p.push_back(from_bits(sign | (base + 0xfffu + d)));   // near fp16 halfway points
      }
    }
  }
  const size_t n = p.size();
  const std::vector<float> zeros(n, 0.0f);
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    std::vector<float> param = p, m = zeros, v = zeros;
    std::vector<uint16_t> copy(n, 0xa5a5);
    adamw_step_cpu(simd, param.data(), m.data(), v.data(), zeros.data(), DType::kF32,
                   int64_t(n), step_hp(1, 0.0, 1.0), copy.data(), dtype);
    for (size_t i = 0; i < n; ++i) {
      const float in = p[i];
      // The pass-through itself: same bits (NaNs come back quieted by the multiply).
      const uint32_t expected_param =
          std::isnan(in) ? (float_to_bits(in) | 0x00400000u) : float_to_bits(in);
      ASSERT_EQ(float_to_bits(param[i]), expected_param) << std::hex << float_to_bits(in);
      const uint16_t expected =
          dtype == DType::kBF16 ? float_to_bf16(param[i]).bits : float_to_f16(param[i]).bits;
      ASSERT_EQ(copy[i], expected) << cpu_simd_name(simd) << " " << dtype_name(dtype)
                                   << " input bits " << std::hex << float_to_bits(in);
    }
  }
}

TEST_P(AdamWSimd, ThreadCountDoesNotChangeBits) {
  const CpuSimd simd = GetParam();
  SKIP_UNLESS_SUPPORTED(simd);
  const size_t n = size_t(5 * kAdamWCpuTile + 123);
  Problem one = make_problem(n, DType::kBF16, 2, 99);
  Problem two = one;
  Problem three = one;
  const Copy copy{true, DType::kBF16};
  {
    ThreadCount threads(1);
    run(simd, one, DType::kBF16, copy, 0.1, 0.5);
  }
  {
    ThreadCount threads(2);
    run(simd, two, DType::kBF16, copy, 0.1, 0.5);
  }
  {
    ThreadCount threads(3);  // more threads than this VM's cores: uneven tile runs
    run(simd, three, DType::kBF16, copy, 0.1, 0.5);
  }
  for (const Problem* other : {&two, &three}) {
    EXPECT_EQ(first_difference(one.p, other->p, 4), SIZE_MAX);
    EXPECT_EQ(first_difference(one.m, other->m, 4), SIZE_MAX);
    EXPECT_EQ(first_difference(one.v, other->v, 4), SIZE_MAX);
    EXPECT_EQ(first_difference(one.copy, other->copy, 2), SIZE_MAX);
  }
}

// Buffers at every alignment: the AVX-512 path streams the 16-bit copy with 64-byte
// non-temporal stores when the copy is 64-byte aligned at the tile start, and uses plain
// unaligned stores otherwise; fp32 buffers one float off their vector alignment.
TEST_P(AdamWSimd, AlignedAndMisalignedBuffersGiveTheSameBits) {
  const CpuSimd simd = GetParam();
  SKIP_UNLESS_SUPPORTED(simd);
  const size_t n = size_t(3 * kAdamWCpuTile + 45);
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    for (size_t copy_offset : {size_t(0), size_t(2), size_t(32)}) {
      for (size_t float_offset : {size_t(0), size_t(1)}) {
        Problem ref = make_problem(n, DType::kF32, 2, 21);
        run(CpuSimd::kScalar, ref, DType::kF32, {true, dtype}, 0.1, 1.0);
        const Problem start = make_problem(n, DType::kF32, 2, 21);
        const size_t floats = n + 16;
        std::unique_ptr<float, Free> p(static_cast<float*>(std::aligned_alloc(64, floats * 4)));
        std::unique_ptr<float, Free> m(static_cast<float*>(std::aligned_alloc(64, floats * 4)));
        std::unique_ptr<float, Free> v(static_cast<float*>(std::aligned_alloc(64, floats * 4)));
        std::unique_ptr<uint8_t, Free> copy(
            static_cast<uint8_t*>(std::aligned_alloc(64, (n * 2 + 128 + 63) / 64 * 64)));
        float* pp = p.get() + float_offset;
        float* mp = m.get() + float_offset;
        float* vp = v.get() + float_offset;
        uint8_t* cp = copy.get() + copy_offset;
        std::memcpy(pp, start.p.data(), n * 4);
        std::memcpy(mp, start.m.data(), n * 4);
        std::memcpy(vp, start.v.data(), n * 4);
        for (size_t s = 0; s < start.grads.size(); ++s) {
          adamw_step_cpu(simd, pp, mp, vp, start.grads[s].data(), DType::kF32, int64_t(n),
                         step_hp(int64_t(s) + 1, 0.1, 1.0), cp, dtype);
        }
        const std::string what = std::string(dtype_name(dtype)) + " copy offset " +
                                 std::to_string(copy_offset) + " float offset " +
                                 std::to_string(float_offset);
        EXPECT_EQ(std::memcmp(pp, ref.p.data(), n * 4), 0) << what;
        EXPECT_EQ(std::memcmp(mp, ref.m.data(), n * 4), 0) << what;
        EXPECT_EQ(std::memcmp(vp, ref.v.data(), n * 4), 0) << what;
        EXPECT_EQ(std::memcmp(cp, ref.copy.data(), n * 2), 0) << what;
      }
    }
  }
}

// fp64 gradients and fp64 copies are not SIMD dtypes: the call runs the scalar path.
TEST_P(AdamWSimd, Fp64FallsBackToScalar) {
  const CpuSimd simd = GetParam();
  SKIP_UNLESS_SUPPORTED(simd);
  const size_t n = 1001;
  Problem ref = make_problem(n, DType::kF64, 2, 5);
  ref.copy.assign(n * 8, 0);
  Problem got = ref;
  run(CpuSimd::kScalar, ref, DType::kF64, {true, DType::kF64}, 0.1, 1.0);
  run(simd, got, DType::kF64, {true, DType::kF64}, 0.1, 1.0);
  EXPECT_EQ(first_difference(ref.p, got.p, 4), SIZE_MAX);
  EXPECT_EQ(first_difference(ref.copy, got.copy, 8), SIZE_MAX);
  Problem ref32 = make_problem(n, DType::kF32, 2, 6);
  Problem got32 = ref32;
  ref32.copy.assign(n * 8, 0);
  got32.copy.assign(n * 8, 0);
  run(CpuSimd::kScalar, ref32, DType::kF32, {true, DType::kF64}, 0.1, 1.0);
  run(simd, got32, DType::kF32, {true, DType::kF64}, 0.1, 1.0);
  EXPECT_EQ(first_difference(ref32.p, got32.p, 4), SIZE_MAX);
  EXPECT_EQ(first_difference(ref32.copy, got32.copy, 8), SIZE_MAX);
}

INSTANTIATE_TEST_SUITE_P(Paths, AdamWSimd, ::testing::ValuesIn(kSimdPaths),
                         [](const ::testing::TestParamInfo<CpuSimd>& info) {
                           switch (info.param) {
                             case CpuSimd::kAvx2: return std::string("Avx2");
                             case CpuSimd::kAvx512: return std::string("Avx512");
                             case CpuSimd::kAvx512Bf16: return std::string("Avx512Bf16");
                             default: return std::string("Other");
                           }
                         });

TEST(AdamWSimdDispatch, NamesAndSupport) {
  EXPECT_STREQ(cpu_simd_name(CpuSimd::kAuto), "auto");
  EXPECT_STREQ(cpu_simd_name(CpuSimd::kScalar), "scalar");
  EXPECT_STREQ(cpu_simd_name(CpuSimd::kAvx2), "avx2");
  EXPECT_STREQ(cpu_simd_name(CpuSimd::kAvx512), "avx512");
  EXPECT_STREQ(cpu_simd_name(CpuSimd::kAvx512Bf16), "avx512-bf16");
  const CpuSimd best = best_cpu_simd();
  EXPECT_NE(best, CpuSimd::kAuto);
  EXPECT_TRUE(cpu_simd_supported(best));
  EXPECT_TRUE(cpu_simd_supported(CpuSimd::kScalar));
  // The paths nest: a CPU with a wider path has the narrower ones.
  if (cpu_simd_supported(CpuSimd::kAvx512Bf16)) {
    EXPECT_TRUE(cpu_simd_supported(CpuSimd::kAvx512));
  }
  if (cpu_simd_supported(CpuSimd::kAvx512)) {
    EXPECT_TRUE(cpu_simd_supported(CpuSimd::kAvx2));
  }
  std::printf("best CPU AdamW path here: %s\n", cpu_simd_name(best));
}

TEST(AdamWSimdDispatch, DefaultCallIsTheBestPath) {
  const size_t n = 777;
  Problem a = make_problem(n, DType::kBF16, 2, 11);
  Problem b = a;
  const Copy copy{true, DType::kBF16};
  for (size_t s = 0; s < a.grads.size(); ++s) {
    adamw_step_cpu(a.p.data(), a.m.data(), a.v.data(), a.grads[s].data(), DType::kBF16,
                   int64_t(n), step_hp(int64_t(s) + 1, 0.1, 1.0), a.copy.data(), DType::kBF16);
  }
  run(best_cpu_simd(), b, DType::kBF16, copy, 0.1, 1.0);
  EXPECT_EQ(first_difference(a.p, b.p, 4), SIZE_MAX);
  EXPECT_EQ(first_difference(a.copy, b.copy, 2), SIZE_MAX);
}

TEST(AdamWSimdDispatch, UnsupportedPathIsAnError) {
  float p = 1.0f, m = 0.0f, v = 0.0f, g = 0.5f;
  for (CpuSimd simd : kSimdPaths) {
    if (cpu_simd_supported(simd)) continue;
    EXPECT_THROW(adamw_step_cpu(simd, &p, &m, &v, &g, DType::kF32, 1, step_hp(1, 0.0, 1.0)),
                 Error);
  }
  EXPECT_EQ(p, 1.0f);
}

// ---------------------------------------------------------------------------------------------
// CPU groups and pinning.

TEST(CpuAffinity, GroupsAreContiguousDisjointAndCoverEveryCpu) {
  for (int cpus : {1, 2, 3, 5, 7, 16, 17, 31, 127, 128}) {
    for (int size : {1, 2, 3, 4, 7, 8}) {
      if (size > cpus) continue;
      int next = 0;
      for (int r = 0; r < size; ++r) {
        const CpuGroup g = cpu_group_for_rank(cpus, r, size);
        EXPECT_EQ(g.first, next) << cpus << " cpus, rank " << r << " of " << size;
        // Sizes differ by at most one, larger groups first.
        EXPECT_TRUE(g.count == cpus / size || g.count == cpus / size + 1);
        EXPECT_EQ(g.count, cpus / size + (r < cpus % size ? 1 : 0));
        next += g.count;
      }
      EXPECT_EQ(next, cpus) << cpus << " cpus, " << size << " ranks";
    }
  }
  EXPECT_EQ(cpu_group_for_rank(7, 0, 3), (CpuGroup{0, 3}));
  EXPECT_EQ(cpu_group_for_rank(7, 1, 3), (CpuGroup{3, 2}));
  EXPECT_EQ(cpu_group_for_rank(7, 2, 3), (CpuGroup{5, 2}));
  EXPECT_EQ(cpu_group_for_rank(16, 0, 1), (CpuGroup{0, 16}));
}

TEST(CpuAffinity, FewerCpusThanRanksShareRoundRobin) {
  EXPECT_EQ(cpu_group_for_rank(2, 0, 3), (CpuGroup{0, 1}));
  EXPECT_EQ(cpu_group_for_rank(2, 1, 3), (CpuGroup{1, 1}));
  EXPECT_EQ(cpu_group_for_rank(2, 2, 3), (CpuGroup{0, 1}));
  EXPECT_EQ(cpu_group_for_rank(1, 5, 8), (CpuGroup{0, 1}));
  EXPECT_THROW(cpu_group_for_rank(0, 0, 1), Error);
  EXPECT_THROW(cpu_group_for_rank(4, 2, 2), Error);
  EXPECT_THROW(cpu_group_for_rank(4, -1, 2), Error);
}

std::vector<int> thread_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  EXPECT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

// Restores the calling thread's and the OpenMP threads' masks when a test ends.
class RestoreAffinity {
 public:
  RestoreAffinity() : threads_(omp_get_max_threads()) {
    CPU_ZERO(&mask_);
    sched_getaffinity(0, sizeof(mask_), &mask_);
  }
  ~RestoreAffinity() {
    sched_setaffinity(0, sizeof(mask_), &mask_);
#pragma omp parallel num_threads(threads_)
    sched_setaffinity(0, sizeof(mask_), &mask_);
    omp_set_num_threads(threads_);
  }

 private:
  cpu_set_t mask_;
  int threads_;
};

TEST(CpuAffinity, OneLocalRankKeepsAllCores) {
  RestoreAffinity restore;
  const std::vector<int> all = allowed_cpus();
  ASSERT_FALSE(all.empty());
  const int threads = pin_threads_for_local_rank(0, 1);
  EXPECT_GE(threads, 1);
  EXPECT_LE(threads, int(all.size()));
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    EXPECT_EQ(threads, int(all.size()));
  }
  EXPECT_EQ(omp_get_max_threads(), threads);
  EXPECT_EQ(thread_cpus(), all);  // the master keeps the whole group: every core
  std::vector<std::vector<int>> seen{size_t(threads)};
#pragma omp parallel num_threads(threads)
  seen[size_t(omp_get_thread_num())] = thread_cpus();
  for (int t = 1; t < threads; ++t) {
    EXPECT_EQ(seen[size_t(t)], std::vector<int>{all[size_t(t)]}) << "thread " << t;
  }
}

TEST(CpuAffinity, LastRankGetsTheLastGroup) {
  RestoreAffinity restore;
  const std::vector<int> all = allowed_cpus();
  const int size = std::min(2, int(all.size()));
  const CpuGroup group = cpu_group_for_rank(int(all.size()), size - 1, size);
  pin_threads_for_local_rank(size - 1, size);
  const std::vector<int> expected(all.begin() + group.first,
                                  all.begin() + group.first + group.count);
  EXPECT_EQ(thread_cpus(), expected);
}

}  // namespace
}  // namespace zt::optim
