// The engine's initial values on one rank (SelfComm): split over several threads they are the
// same bits as on one, and with init_values = false a load sets everything the init would have.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "model/params.h"
#include "model/weight_source.h"
#include "tests/support/checkpoint_fixture.h"
#include "zero/checkpoint.h"
#include "zero/engine.h"
#include "zero/weights.h"

namespace zt::zero {
namespace {

// Every buffer a step reads, as bytes: the fp32 master, the Adam moments and the model-facing
// parameters of every layer (stage 3: gathered).
std::vector<unsigned char> state_bytes(Engine& e) {
  std::vector<unsigned char> out;
  auto add = [&](const void* data, size_t bytes) {
    const auto* p = static_cast<const unsigned char*>(data);
    out.insert(out.end(), p, p + bytes);
  };
  const std::vector<float> master = e.gather_master_values();
  add(master.data(), master.size() * sizeof(float));
  add(e.adam_m().data, size_t(e.adam_m().numel()) * sizeof(float));
  add(e.adam_v().data, size_t(e.adam_v().numel()) * sizeof(float));
  for (int layer = 0; layer < model::num_layers_total(e.config()); ++layer) {
    e.before_layer(layer, model::Pass::kForward);
    for (const Tensor& t : e.layer_params(layer)) add(t.data, size_t(t.numel()) * dtype_size(t.dtype));
    e.after_layer(layer, model::Pass::kForward);
  }
  return out;
}

struct Variant {
  DType dtype;
  int stage;
  bool offload_optimizer;
  bool offload_params;
};

std::vector<Variant> variants() {
  std::vector<Variant> v;
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF32})
    for (int stage = 0; stage <= 3; ++stage) {
      v.push_back({dt, stage, false, false});
      if (stage >= 1) v.push_back({dt, stage, true, false});
      if (stage == 3) v.push_back({dt, stage, true, true});
    }
  return v;
}

std::string name(const Variant& v) {
  return std::string(dtype_name(v.dtype)) + " stage " + std::to_string(v.stage) +
         (v.offload_optimizer ? " offload_optimizer" : "") + (v.offload_params ? " offload_params" : "");
}

// The initial values themselves, as a weight source.
class InitWeights final : public model::WeightSource {
 public:
  InitWeights(const model::GptjConfig& config, uint64_t seed)
      : config_(config), specs_(model::gptj_param_specs(config)), seed_(seed) {}
  const model::GptjConfig& config() const override { return config_; }
  void read(int spec, int64_t begin, int64_t end, float* out) override {
    model::init_param_values(specs_[size_t(spec)], config_, seed_, begin, end, out, 1);
  }
  std::string describe() const override { return "the initial values"; }

 private:
  model::GptjConfig config_;
  std::vector<model::ParamSpec> specs_;
  uint64_t seed_;
};

class EngineInit : public testing::CheckpointTest {
 protected:
  EngineOptions options(const Variant& v) const {
    EngineOptions o = testing::checkpoint_engine_options(v.dtype, v.stage, 5);
    o.offload_optimizer = v.offload_optimizer;
    o.offload_params = v.offload_params;
    return o;
  }
};

// Runs of 1000 elements over 3 threads split every large parameter of gptj-tiny, and the
// pieces the buckets cut them into, at odd places.
TEST_F(EngineInit, ThreadsGiveTheSameStateAsOneThread) {
  for (const Variant& v : variants()) {
    SCOPED_TRACE(name(v));
    EngineOptions one = options(v);
    one.init_threads = 1;
    EngineOptions many = options(v);
    many.init_threads = 3;
    many.init_chunk = 1000;
    Engine a(config_, one, comm_);
    Engine b(config_, many, comm_);
    EXPECT_TRUE(state_bytes(a) == state_bytes(b));
  }
}

// init_values = false leaves every buffer zero; load_weights of the initial values then gives
// the state of an initialised engine, bit for bit, and so does a checkpoint load.
TEST_F(EngineInit, LoadsSetEverythingTheInitSets) {
  InitWeights init(config_, 5);
  int count = 0;
  for (const Variant& v : variants()) {
    SCOPED_TRACE(name(v));
    EngineOptions skip = options(v);
    skip.init_values = false;
    Engine fresh(config_, options(v), comm_);
    const std::vector<unsigned char> expected = state_bytes(fresh);
    {
      Engine e(config_, skip, comm_);
      const std::vector<unsigned char> zeros = state_bytes(e);
      EXPECT_TRUE(std::all_of(zeros.begin(), zeros.end(), [](unsigned char c) { return c == 0; }));
      load_weights(e, comm_, init);
      EXPECT_TRUE(state_bytes(e) == expected);
    }
    // A trained state saved, then loaded into an engine that skipped the init.
    train(fresh, 1);
    const std::string at = dir("checkpoint-" + std::to_string(count++));
    save_checkpoint(fresh, comm_, at, CheckpointMeta{});
    const std::vector<unsigned char> trained = state_bytes(fresh);
    Engine e(config_, skip, comm_);
    load_checkpoint(e, comm_, at);
    EXPECT_TRUE(state_bytes(e) == trained);
  }
}

}  // namespace
}  // namespace zt::zero
