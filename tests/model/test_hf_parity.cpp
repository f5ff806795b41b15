// The CPU model against Hugging Face transformers' GPTJForCausalLM on the committed fixture
// tests/fixtures/gptj_hf_tiny.bin (made by scripts/hf_fixture.py): logits, loss and every
// parameter's gradient for a random model with non-trivial biases and LayerNorm parameters.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "model/gptj.h"
#include "model/ops_cpu.h"
#include "tests/support/host_provider.h"

namespace zt::model {
namespace {

struct FixtureTensor {
  std::vector<int64_t> shape;
  std::vector<float> f32;
  std::vector<int32_t> i32;
};

std::map<std::string, FixtureTensor> read_fixture(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::vector<std::pair<std::string, std::string>> order;  // name, dtype
  std::map<std::string, FixtureTensor> out;
  std::string line;
  while (std::getline(in, line) && line != "end") {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string name, kind;
    int ndim = 0;
    ls >> name >> kind >> ndim;
    FixtureTensor t;
    for (int i = 0; i < ndim; ++i) {
      int64_t d;
      ls >> d;
      t.shape.push_back(d);
    }
    out[name] = t;
    order.emplace_back(name, kind);
  }
  for (const auto& [name, kind] : order) {
    FixtureTensor& t = out[name];
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    if (kind == "i32") {
      t.i32.resize(size_t(n));
      in.read(reinterpret_cast<char*>(t.i32.data()), n * 4);
    } else {
      t.f32.resize(size_t(n));
      in.read(reinterpret_cast<char*>(t.f32.data()), n * 4);
    }
  }
  EXPECT_TRUE(in) << "fixture truncated: " << path;
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
  auto fx = read_fixture(std::string(ZT_SOURCE_DIR) + "/tests/fixtures/gptj_hf_tiny.bin");
  const std::vector<int32_t>& cfg = fx.at("config").i32;
  GptjConfig c;
  c.vocab_size = cfg[0];
  c.n_positions = cfg[1];
  c.d_model = cfg[2];
  c.n_layer = cfg[3];
  c.n_head = cfg[4];
  c.rotary_dim = cfg[5];
  c.d_ff = cfg[6];
  zt::testing::HostProvider p(c, compute, 0);
  for (size_t i = 0; i < p.num_params(); ++i) {
    const ParamSpec& s = p.specs()[i];
    ASSERT_TRUE(fx.count(s.name)) << s.name << " missing from the fixture";
    const FixtureTensor& t = fx.at(s.name);
    ASSERT_EQ(int64_t(t.f32.size()), s.numel()) << s.name;
    for (int64_t j = 0; j < s.numel(); ++j) p.set_param(i, j, t.f32[size_t(j)]);
  }
  // Hugging Face shifts labels inside the model; our targets are already shifted.
  const int64_t b = fx.at("input_ids").shape[0], t = fx.at("input_ids").shape[1];
  const std::vector<int32_t>& ids = fx.at("input_ids").i32;
  const std::vector<int32_t>& labels = fx.at("labels").i32;
  std::vector<int32_t> targets(size_t(b * t), cpu::kIgnoreIndex);
  for (int64_t r = 0; r < b; ++r)
    for (int64_t s = 0; s + 1 < t; ++s) targets[size_t(r * t + s)] = labels[size_t(r * t + s + 1)];
  const Batch batch{ids.data(), targets.data(), b, t};

  auto model = make_cpu_gptj(c, ModelOptions{false, compute});
  std::vector<float> logits(size_t(b * t * c.vocab_size));
  model->logits(batch, p, logits.data());
  const std::vector<float>& want_logits = fx.at("logits").f32;
  const double logit_tol = 2e-5 * max_abs(want_logits);
  for (size_t i = 0; i < logits.size(); ++i)
    ASSERT_NEAR(logits[i], want_logits[i], logit_tol) << "logit " << i;

  const LossSum loss = model->forward_backward(batch, p, 1.0);
  EXPECT_EQ(loss.count, b * (t - 1) - 2);  // two labels are -100
  EXPECT_NEAR(loss.mean(), fx.at("loss").f32[0], 2e-5 * fx.at("loss").f32[0]);

  for (size_t i = 0; i < p.num_params(); ++i) {
    const ParamSpec& s = p.specs()[i];
    const std::vector<float>& want = fx.at("grad:" + s.name).f32;
    const double tol = 2e-5 * max_abs(want) + 1e-9;
    ASSERT_GT(max_abs(want), 1e-6) << s.name << ": gradient too small to test anything";
    for (int64_t j = 0; j < s.numel(); ++j)
      ASSERT_NEAR(p.grad(i, j), want[size_t(j)], tol) << "gradient of " << s.name << "[" << j << "]";
  }
}

TEST(HuggingFaceParity, Fp32ModelMatchesTransformers) { check_against_transformers(DType::kF32); }
TEST(HuggingFaceParity, Fp64ModelMatchesTransformers) { check_against_transformers(DType::kF64); }

}  // namespace
}  // namespace zt::model
