// The CPU model against Hugging Face transformers' GPTJForCausalLM on the committed fixture
// tests/fixtures/hf-gptj-tiny (made by scripts/hf_gptj_fixture.py): logits, loss and every
// parameter's gradient for a random model with non-trivial biases and LayerNorm parameters, read
// through the Hugging Face importer; and the import/export of the same weights in bf16 and fp16
// against transformers' own rounding, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "model/gptj.h"
#include "model/hf_gptj.h"
#include "model/ops_cpu.h"
#include "model/params.h"
#include "runtime/safetensors.h"
#include "tests/support/host_provider.h"
#include "tests/support/temp_dir.h"

namespace zt::model {
namespace {

const std::string kFixtures = std::string(ZT_SOURCE_DIR) + "/tests/fixtures/hf-gptj-tiny";

// A float tensor of expected.safetensors as fp32.
std::vector<float> read_floats(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsEntry& e = f.at(name);
  std::vector<float> v(size_t(e.numel()));
  f.read_f32(e, 0, e.numel(), v.data());
  return v;
}

// An int32 tensor of expected.safetensors.
std::vector<int32_t> read_ints(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsEntry& e = f.at(name);
  EXPECT_EQ(e.dtype, "I32") << name;
  std::vector<int32_t> v(size_t(e.numel()));
  std::memcpy(v.data(), f.data(e).data(), v.size() * 4);
  return v;
}

// Every parameter of a WeightSource, in gptj_param_specs order, as fp32.
std::vector<std::vector<float>> read_all(WeightSource& src) {
  std::vector<std::vector<float>> out;
  for (const ParamSpec& s : gptj_param_specs(src.config())) {
    out.emplace_back(size_t(s.numel()));
    src.read(int(out.size() - 1), 0, s.numel(), out.back().data());
  }
  return out;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

// Runs the fixture through the CPU model computing in `compute` and compares with transformers.
// Both sides compute in fp32 (the fixture) or better (fp64 here), with different summation
// orders over dot products of length <= 96 through ~12 sequential ops: differences are a few
// fp32 ulps relative to each tensor's scale, ~1e-6. The bound 2e-5 of the tensor's largest
// magnitude leaves margin, while a semantic difference (rotate_half instead of interleaved pairs,
// a missing bias, sequential instead of parallel residual) changes results by 1e-2 or more.
void check_against_transformers(DType compute) {
  // The weights through the importer `model.init_from` uses, so the parity covers it too.
  const std::unique_ptr<WeightSource> weights = open_hf_gptj(kFixtures + "/fp32");
  const GptjConfig& c = weights->config();
  const SafetensorsFile fx(kFixtures + "/expected.safetensors");
  zt::testing::HostProvider p(c, compute, 0);
  const std::vector<std::vector<float>> values = read_all(*weights);
  for (size_t i = 0; i < p.num_params(); ++i)
    for (int64_t j = 0; j < p.specs()[i].numel(); ++j) p.set_param(i, j, values[i][size_t(j)]);
  // Hugging Face shifts labels inside the model; our targets are already shifted.
  const int64_t b = fx.at("input_ids").shape[0], t = fx.at("input_ids").shape[1];
  const std::vector<int32_t> ids = read_ints(fx, "input_ids");
  const std::vector<int32_t> labels = read_ints(fx, "labels");
  std::vector<int32_t> targets(size_t(b * t), cpu::kIgnoreIndex);
  for (int64_t r = 0; r < b; ++r)
    for (int64_t s = 0; s + 1 < t; ++s) targets[size_t(r * t + s)] = labels[size_t(r * t + s + 1)];
  const Batch batch{ids.data(), targets.data(), b, t};
  ASSERT_EQ(fx.at("logits").shape, (std::vector<int64_t>{b, t, c.vocab_size}));

  auto model = make_cpu_gptj(c, ModelOptions{false, compute});
  std::vector<float> logits(size_t(b * t * c.vocab_size));
  model->logits(batch, p, logits.data());
  const std::vector<float> want_logits = read_floats(fx, "logits");
  const double logit_tol = 2e-5 * max_abs(want_logits);
  for (size_t i = 0; i < logits.size(); ++i)
    ASSERT_NEAR(logits[i], want_logits[i], logit_tol) << "logit " << i;

  const LossSum loss = model->forward_backward(batch, p, 1.0);
  EXPECT_EQ(loss.count, b * (t - 1) - 2);  // two labels are -100
  const float want_loss = read_floats(fx, "loss")[0];
  EXPECT_NEAR(loss.mean(), want_loss, 2e-5 * want_loss);

  for (size_t i = 0; i < p.num_params(); ++i) {
    const ParamSpec& s = p.specs()[i];
    const std::vector<float> want = read_floats(fx, "grad:" + s.name);
    const double tol = 2e-5 * max_abs(want) + 1e-9;
    ASSERT_GT(max_abs(want), 1e-6) << s.name << ": gradient too small to test anything";
    for (int64_t j = 0; j < s.numel(); ++j)
      ASSERT_NEAR(p.grad(i, j), want[size_t(j)], tol) << "gradient of " << s.name << "[" << j << "]";
  }
}

TEST(HuggingFaceParity, Fp32ModelMatchesTransformers) { check_against_transformers(DType::kF32); }
TEST(HuggingFaceParity, Fp64ModelMatchesTransformers) { check_against_transformers(DType::kF64); }

// Every element of `got` has the bits of `want` rounded to `dtype` (round to nearest even, as
// torch's .to(bfloat16) / .to(float16) rounds): import changes no bit, and neither does torch.
void expect_rounded(const std::vector<std::vector<float>>& want,
                    const std::vector<std::vector<float>>& got, DType dtype, const char* what) {
  const std::vector<ParamSpec> specs =
      gptj_param_specs(open_hf_gptj(kFixtures + "/fp32")->config());
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].size(), want[i].size()) << what << " " << specs[i].name;
    for (size_t j = 0; j < want[i].size(); ++j) {
      const float w = want[i][j];
      const float r = dtype == DType::kBF16  ? bf16_to_float(float_to_bf16(w))
                      : dtype == DType::kF16 ? f16_to_float(float_to_f16(w))
                                             : w;
      ASSERT_EQ(float_to_bits(got[i][j]), float_to_bits(r))
          << what << ": " << specs[i].name << "[" << j << "] = " << w;
    }
  }
}

TEST(HuggingFaceParity, Bf16ShardedAndFp16LegacyImportTheRoundedFp32Weights) {
  const auto fp32 = open_hf_gptj(kFixtures + "/fp32");
  const auto bf16 = open_hf_gptj(kFixtures + "/bf16-sharded");
  const auto fp16 = open_hf_gptj(kFixtures + "/fp16-legacy");
  const std::vector<std::vector<float>> want = read_all(*fp32);
  expect_rounded(want, read_all(*bf16), DType::kBF16, "bf16-sharded");
  expect_rounded(want, read_all(*fp16), DType::kF16, "fp16-legacy");
  for (const auto* src : {bf16.get(), fp16.get()}) {
    EXPECT_EQ(src->config().d_ff, fp32->config().d_ff);
    EXPECT_EQ(src->config().rotary_dim, fp32->config().rotary_dim);
    EXPECT_EQ(src->config().layer_norm_eps, fp32->config().layer_norm_eps);
  }
}

TEST(HuggingFaceParity, ExportRoundTripsBitForBit) {
  const std::string root = zt::testing::fresh_dir("export");
  const auto fp32 = open_hf_gptj(kFixtures + "/fp32");
  const std::vector<std::vector<float>> want = read_all(*fp32);
  write_hf_gptj(root + "/fp32", *fp32, DType::kF32, false);
  expect_rounded(want, read_all(*open_hf_gptj(root + "/fp32")), DType::kF32, "fp32 export");
  // bf16 and fp16 exports are the fp32 weights rounded once, i.e. what transformers stores.
  write_hf_gptj(root + "/bf16", *fp32, DType::kBF16, false);
  expect_rounded(want, read_all(*open_hf_gptj(root + "/bf16")), DType::kBF16, "bf16 export");
  write_hf_gptj(root + "/fp16", *fp32, DType::kF16, false);
  expect_rounded(want, read_all(*open_hf_gptj(root + "/fp16")), DType::kF16, "fp16 export");
  EXPECT_EQ(open_hf_gptj(root + "/bf16")->describe(),
            "Hugging Face GPT-J in " + root + "/bf16 (bf16, 1 file)");
  // Re-exporting the bf16 import in bf16 changes nothing either.
  write_hf_gptj(root + "/bf16-again", *open_hf_gptj(kFixtures + "/bf16-sharded"), DType::kBF16,
                false);
  expect_rounded(want, read_all(*open_hf_gptj(root + "/bf16-again")), DType::kBF16,
                 "bf16 re-export");
}

}  // namespace
}  // namespace zt::model
