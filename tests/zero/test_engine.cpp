// The engine on one rank (SelfComm): views, initialisation, the AdamW step, clipping, skipping,
// model-state bytes per stage, and that every stage trains the same on a world of one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "model/gptj.h"
#include "optim/adamw.h"
#include "runtime/self_comm.h"
#include "zero/engine.h"

namespace zt::zero {
namespace {

EngineOptions options(DType dtype, int stage = 0) {
  EngineOptions o;
  o.param_dtype = dtype;
  o.stage = stage;
  o.bucket_elements = 20000;  // several buckets per layer in gptj-tiny
  o.total_steps = 10;
  o.seed = 5;
  o.optimizer.warmup_steps = 0;
  o.optimizer.decay = optim::LrDecay::kConstant;
  o.optimizer.lr = 1e-2;
  o.optimizer.grad_clip = 0.0;
  return o;
}

// Offsets of each parameter in gather_master_values()'s forward-order concatenation.
std::vector<int64_t> spec_offsets(const std::vector<model::ParamSpec>& specs) {
  std::vector<int64_t> off(specs.size() + 1, 0);
  for (size_t i = 0; i < specs.size(); ++i) off[i + 1] = off[i] + specs[i].numel();
  return off;
}

TEST(Engine, ViewsMatchSpecsAndInit) {
  model::GptjConfig c;
  SelfComm comm;
  Engine e(c, options(DType::kBF16), comm);
  for (int layer = 0; layer < model::num_layers_total(c); ++layer) {
    auto params = e.layer_params(layer);
    for (size_t j = 0; j < params.size(); ++j) {
      EXPECT_EQ(params[j].dtype, DType::kBF16);
      EXPECT_EQ(params[j].shape, e.layer_grads(layer)[j].shape);
    }
  }
  // The bf16 parameters are the fp32 master rounded, and the master is the init.
  const std::vector<float> master = e.gather_master_values();
  const auto specs = model::gptj_param_specs(c);
  const size_t lm = specs.size() - 2;  // lm_head.weight
  const int64_t off = spec_offsets(specs)[lm];
  std::vector<float> init(size_t(specs[lm].numel()));
  model::init_param_values(specs[lm], c, 5, 0, specs[lm].numel(), init.data());
  const Tensor view = e.layer_params(model::head_layer(c))[model::kLmHeadWeight];
  for (int64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(master[size_t(off + i)], init[size_t(i)]);
    EXPECT_EQ(view.as<bf16>()[i].bits, float_to_bf16(init[size_t(i)]).bits);
  }
}

// One engine step equals AdamW applied parameter by parameter with the right weight decay.
TEST(Engine, StepIsAdamWWithoutDecayOnBiasesAndNorms) {
  model::GptjConfig c;
  EngineOptions o = options(DType::kF32);
  o.optimizer.weight_decay = 0.5;
  SelfComm comm;
  Engine e(c, o, comm);
  const std::vector<float> before = e.gather_master_values();
  // A deterministic gradient per flat element: g = 1e-3 * (flat index % 7 - 3).
  float* g = e.step_grads().as<float>();
  for (int64_t i = 0; i < e.layout().total; ++i) g[i] = 1e-3f * float(i % 7 - 3);
  e.set_last_micro_step(true);
  const StepStats s = e.step();
  EXPECT_FALSE(s.skipped);
  EXPECT_EQ(s.lr, 1e-2);
  EXPECT_EQ(e.steps_taken(), 1);
  const std::vector<float> after = e.gather_master_values();
  const std::vector<int64_t> off = spec_offsets(e.specs());
  for (const FlatParam& p : e.layout().params) {
    const model::ParamSpec& spec = e.specs()[size_t(p.spec_index)];
    const int64_t o0 = off[size_t(p.spec_index)];
    std::vector<float> w(before.begin() + o0, before.begin() + o0 + p.numel);
    std::vector<float> m(size_t(p.numel), 0.0f), v(size_t(p.numel), 0.0f);
    std::vector<float> grad(g + p.offset, g + p.offset + p.numel);
    optim::AdamWStep hp;
    hp.lr = 1e-2;
    hp.beta1 = o.optimizer.beta1;
    hp.beta2 = o.optimizer.beta2;
    hp.eps = o.optimizer.eps;
    hp.weight_decay = spec.is_bias_or_norm() ? 0.0 : 0.5;
    optim::adamw_step_cpu(w.data(), m.data(), v.data(), grad.data(), DType::kF32, p.numel, hp);
    for (int64_t i = 0; i < p.numel; ++i)
      ASSERT_EQ(after[size_t(o0 + i)], w[size_t(i)]) << spec.name << "[" << i << "]";
  }
}

TEST(Engine, ClipsByTheGlobalNorm) {
  model::GptjConfig c;
  EngineOptions o = options(DType::kF32);
  o.optimizer.grad_clip = 0.5;
  SelfComm comm;
  Engine e(c, o, comm);
  float* g = e.step_grads().as<float>();
  for (const FlatParam& p : e.layout().params)
    for (int64_t i = 0; i < p.numel; ++i) g[p.offset + i] = 0.01f;
  // 0.01f is 0.01 to 2e-8 relative; the fp64 sum of squares adds ~1e-16: 1e-6 is ample.
  const double norm = 0.01 * std::sqrt(double(e.num_params()));
  const StepStats s = e.step();
  EXPECT_NEAR(s.grad_norm, norm, 1e-6 * norm);
  EXPECT_DOUBLE_EQ(s.clip_coef, 0.5 / (s.grad_norm + 1e-6));
}

TEST(Engine, NonFiniteGradientSkipsTheStepAndChangesNothing) {
  model::GptjConfig c;
  SelfComm comm;
  Engine e(c, options(DType::kBF16), comm);
  const std::vector<float> before = e.gather_master_values();
  bf16* g = e.step_grads().as<bf16>();
  g[e.layout().params[3].offset + 5] = float_to_bf16(INFINITY);
  const StepStats s = e.step();
  EXPECT_TRUE(s.skipped);
  EXPECT_EQ(e.steps_taken(), 0);
  EXPECT_EQ(e.skipped_steps(), 1);
  EXPECT_EQ(e.gather_master_values(), before);
}

// The DESIGN.md table on a world of one: 2 + 2 + 12 bytes per parameter in bf16 (4 + 4 + 8 in
// fp32), whatever the stage, up to the layout's padding.
TEST(Engine, ModelStateBytesOnOneRank) {
  model::GptjConfig c;
  SelfComm comm;
  for (int stage = 0; stage <= 3; ++stage) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
      Engine e(c, options(dt, stage), comm);
      const ModelStateBytes b = e.model_state_bytes();
      const int64_t padded = e.layout().total;
      const int64_t w = int64_t(dtype_size(dt));
      EXPECT_EQ(b.params, w * padded);
      EXPECT_EQ(b.grads, w * padded);
      EXPECT_EQ(b.optimizer, (dt == DType::kF32 ? 8 : 12) * padded);
      EXPECT_LT(padded - e.num_params(), e.num_params() / 100);
    }
  }
}

TEST(Engine, EveryStageTrainsTheSameOnOneRank) {
  model::GptjConfig c;
  std::vector<int32_t> in(64), tg(64);
  for (int i = 0; i < 64; ++i) in[size_t(i)] = (i * 7) % 50, tg[size_t(i)] = (i * 7 + 3) % 50;
  const model::Batch batch{in.data(), tg.data(), 2, 32};
  auto m = model::make_cpu_gptj(c, {});
  std::vector<std::vector<double>> losses(4);
  std::vector<std::vector<float>> finals(4);
  SelfComm comm;
  for (int stage = 0; stage <= 3; ++stage) {
    Engine e(c, options(DType::kBF16, stage), comm);
    for (int step = 0; step < 8; ++step) {
      e.zero_grads();
      e.set_last_micro_step(true);
      losses[size_t(stage)].push_back(m->forward_backward(batch, e, e.micro_grad_scale(1)).mean());
      e.step();
    }
    finals[size_t(stage)] = e.gather_master_values();
  }
  // One rank: the stages differ only in where buffers live, so the arithmetic is identical.
  for (int stage = 1; stage <= 3; ++stage) {
    EXPECT_EQ(losses[size_t(stage)], losses[0]) << "stage " << stage;
    EXPECT_EQ(finals[size_t(stage)], finals[0]) << "stage " << stage;
  }
  // Memorising one batch: the loss must drop far below log(512) = 6.24 at lr 1e-2.
  EXPECT_LT(losses[0].back(), 0.7 * losses[0].front());
}

// SelfComm that adds up the elements every all_gather sends.
class GatherCountingComm final : public Comm {
 public:
  int64_t gathered = 0;
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Device device() const override { return Device::cpu(); }
  CommHandle all_reduce(void* data, size_t count, DType dtype, ReduceOp op) override {
    return self_.all_reduce(data, count, dtype, op);
  }
  CommHandle reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                            ReduceOp op) override {
    return self_.reduce_scatter(send, recv, recv_count, dtype, op);
  }
  CommHandle all_gather(const void* send, void* recv, size_t send_count, DType dtype) override {
    gathered += int64_t(send_count);
    return self_.all_gather(send, recv, send_count, dtype);
  }
  CommHandle broadcast(void* data, size_t count, DType dtype, int root) override {
    return self_.broadcast(data, count, dtype, root);
  }
  void barrier() override {}

 private:
  SelfComm self_;
};

// Stage 3 gathers each layer once per pass that reads it: every layer in the forward (the head
// stays for the backward), the blocks again in the backward, and never the embedding there (its
// backward reads no parameters: model::reads_params). On one rank a gather sends whole buckets.
TEST(Engine, Stage3GathersOnlyTheLayersAPassReads) {
  model::GptjConfig c;
  std::vector<int32_t> in(64), tg(64);
  for (int i = 0; i < 64; ++i) in[size_t(i)] = (i * 3) % 50, tg[size_t(i)] = (i * 3 + 1) % 50;
  const model::Batch batch{in.data(), tg.data(), 2, 32};
  auto m = model::make_cpu_gptj(c, {});
  GatherCountingComm comm;
  Engine e(c, options(DType::kBF16, 3), comm);
  const FlatLayout& layout = e.layout();
  auto layer_elements = [&](int layer) {
    int64_t n = 0;
    for (int b = layout.layer_first_bucket[size_t(layer)]; b < layout.layer_end_bucket[size_t(layer)]; ++b)
      n += layout.buckets[size_t(b)].shard;
    return n;
  };
  const int head = model::head_layer(c);
  int64_t forward = 0, blocks = 0;
  for (int layer = 0; layer <= head; ++layer) forward += layer_elements(layer);
  for (int layer = 1; layer < head; ++layer) blocks += layer_elements(layer);
  ASSERT_GT(layer_elements(0), 0);

  for (int step = 0; step < 2; ++step) {
    e.zero_grads();
    e.set_last_micro_step(true);
    comm.gathered = 0;
    m->forward_backward(batch, e, e.micro_grad_scale(1));
    EXPECT_EQ(comm.gathered, forward + blocks) << "step " << step;
    e.step();
  }
  comm.gathered = 0;
  m->forward(batch, e);
  EXPECT_EQ(comm.gathered, forward);
}

// ZeRO-Offload on the host backend: the optimizer state moves to host buffers, gradients are
// copied out chunk by chunk (stage 1) or per layer during backward (stages 2-3), the CPU AdamW
// writes the new parameters over the copied gradients and they go back. The same AdamW on the
// same bits in the same order: every loss and every master value must be identical, with
// gradient accumulation (downloads only on the last micro-step) and with fp32 parameters (a
// separate host master). Stage 3 also with its parameter shard on the host (offload_params): the
// gathers read uploaded copies of it and the CPU AdamW writes the new parameters into it.
TEST(Engine, OffloadedOptimizerTrainsBitForBitLikeTheDeviceOne) {
  model::GptjConfig c;
  std::vector<int32_t> in(64), tg(64);
  for (int i = 0; i < 64; ++i) in[size_t(i)] = (i * 7) % 50, tg[size_t(i)] = (i * 5 + 3) % 50;
  const model::Batch first{in.data(), tg.data(), 1, 32};
  const model::Batch second{in.data() + 32, tg.data() + 32, 1, 32};
  auto m = model::make_cpu_gptj(c, {});
  SelfComm comm;
  for (DType dt : {DType::kBF16, DType::kF32}) {
    for (int stage = 1; stage <= 3; ++stage) {
      // 0: the optimizer on the device; 1: offloaded; 2 (stage 3): the parameters offloaded too.
      const int variants = stage == 3 ? 3 : 2;
      std::vector<double> losses[3];
      std::vector<float> finals[3];
      for (int offload = 0; offload < variants; ++offload) {
        EngineOptions o = options(dt, stage);
        o.offload_optimizer = offload != 0;
        o.offload_params = offload == 2;
        o.optimizer.grad_clip = 0.5;  // clipping scales the gradients the CPU AdamW reads
        o.optimizer.weight_decay = 0.1;
        Engine e(c, o, comm);
        EXPECT_EQ(e.offloaded(), offload != 0);
        EXPECT_EQ(e.params_offloaded(), offload == 2);
        for (int step = 0; step < 4; ++step) {
          e.zero_grads();
          for (int micro = 0; micro < 2; ++micro) {
            e.set_last_micro_step(micro == 1);
            losses[offload].push_back(
                m->forward_backward(micro == 0 ? first : second, e, e.micro_grad_scale(2)).mean());
          }
          const StepStats st = e.step();
          EXPECT_FALSE(st.skipped);
          if (offload) {
            EXPECT_GT(st.offload_cpu_adam_s, 0.0);
          }
        }
        finals[offload] = e.gather_master_values();
      }
      for (int offload = 1; offload < variants; ++offload) {
        const char* what = offload == 2 ? " with the parameters offloaded" : "";
        EXPECT_EQ(losses[offload], losses[0]) << dtype_name(dt) << " stage " << stage << what;
        EXPECT_EQ(finals[offload], finals[0]) << dtype_name(dt) << " stage " << stage << what;
      }
    }
  }
}

TEST(Engine, OffloadedStateIsCountedOnTheHost) {
  model::GptjConfig c;
  SelfComm comm;
  for (int stage = 1; stage <= 3; ++stage) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
      EngineOptions o = options(dt, stage);
      o.offload_optimizer = true;
      Engine e(c, o, comm);
      const ModelStateBytes b = e.model_state_bytes();
      const int64_t padded = e.layout().total;
      const int64_t w = int64_t(dtype_size(dt));
      EXPECT_EQ(b.optimizer, 0);
      EXPECT_EQ(b.host_optimizer, 12 * padded);  // fp32 too: a separate master on the host
      EXPECT_EQ(b.host_buffers, w * padded);
      const ModelStateBytes predicted = model_state_bytes(e.layout(), stage, dt, true);
      EXPECT_EQ(predicted.host_optimizer, b.host_optimizer);
      EXPECT_EQ(predicted.host_buffers, b.host_buffers);
      EXPECT_EQ(predicted.total(), b.total());
    }
  }
  EngineOptions o = options(DType::kBF16, 0);
  o.offload_optimizer = true;
  EXPECT_THROW(Engine(c, o, comm), Error);  // stage 0 has nothing to offload per rank
}

// Stage 3 with offload_params: the parameter shard moves from the device to the host; what the
// device keeps between steps is the gradient shard only.
TEST(Engine, OffloadedParametersAreCountedOnTheHost) {
  model::GptjConfig c;
  SelfComm comm;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    EngineOptions o = options(dt, 3);
    o.offload_optimizer = true;
    o.offload_params = true;
    Engine e(c, o, comm);
    const ModelStateBytes b = e.model_state_bytes();
    const int64_t padded = e.layout().total;
    const int64_t w = int64_t(dtype_size(dt));
    EXPECT_EQ(b.params, 0);
    EXPECT_EQ(b.host_params, w * padded);
    EXPECT_EQ(b.grads, w * padded);
    EXPECT_EQ(b.optimizer, 0);
    EXPECT_EQ(b.host_optimizer, 12 * padded);
    EXPECT_EQ(b.host_buffers, w * padded);
    EXPECT_EQ(b.total(), w * padded);
    const ModelStateBytes predicted = model_state_bytes(e.layout(), 3, dt, true, true);
    EXPECT_EQ(predicted.params, b.params);
    EXPECT_EQ(predicted.host_params, b.host_params);
    EXPECT_EQ(predicted.host_optimizer, b.host_optimizer);
    EXPECT_EQ(predicted.host_buffers, b.host_buffers);
    EXPECT_EQ(predicted.total(), b.total());
  }
  // Only stage 3 partitions the parameters, and only the CPU AdamW writes them on the host.
  for (int stage = 0; stage <= 3; ++stage) {
    for (bool offload_optimizer : {false, true}) {
      if (stage == 3 && offload_optimizer) continue;
      if (stage == 0 && offload_optimizer) continue;  // refused for its own reason
      EngineOptions o = options(DType::kBF16, stage);
      o.offload_optimizer = offload_optimizer;
      o.offload_params = true;
      try {
        Engine e(c, o, comm);
        ADD_FAILURE() << "stage " << stage << ", offload_optimizer " << offload_optimizer
                      << ": accepted";
      } catch (const Error& err) {
        const std::string what = err.what();
        EXPECT_NE(what.find("zero.offload_params"), std::string::npos) << what;
        EXPECT_NE(what.find("zero.offload_optimizer"), std::string::npos) << what;
      }
    }
  }
}

}  // namespace
}  // namespace zt::zero

namespace zt::zero {
namespace {

// One micro-batch's backward with gradients that do not depend on the parameters: element j of
// parameter `spec` gets scale * (a small multiple of 2^-12 fixed by j, spec and `step`), layers
// from the head down as the model adds them; a NaN in the first element when `poison`.
void param_free_backward(Engine& e, int step, bool poison) {
  const double scale = e.micro_grad_scale(1);
  for (int layer = model::head_layer(e.config()); layer >= 0; --layer) {
    e.before_layer(layer, model::Pass::kBackward);
    std::span<const Tensor> grads = e.layer_grads(layer);
    size_t spec = 0;
    for (const model::ParamSpec& s : e.specs()) {
      if (s.layer == layer) {
        const Tensor& g = grads[size_t(s.index_in_layer)];
        std::vector<float> v(size_t(g.numel()));
        convert_cpu(g.data, g.dtype, v.data(), DType::kF32, v.size());
        for (int64_t j = 0; j < g.numel(); ++j)
          v[size_t(j)] += float(scale) * float(int((j * 7 + int64_t(spec) * 13 + step * 5) % 23) - 11) * 0x1p-12f;
        if (poison && layer == 0) v[0] = NAN;
        convert_cpu(v.data(), DType::kF32, g.data, g.dtype, v.size());
      }
      ++spec;
    }
    e.grad_ready(layer);
    e.after_layer(layer, model::Pass::kBackward);
  }
}

// The 16-bit (or fp32) bits of every parameter the model would read in a forward, in order.
std::vector<uint32_t> forward_param_bits(Engine& e) {
  std::vector<uint32_t> bits;
  for (int layer = 0; layer < model::num_layers_total(e.config()); ++layer) {
    e.before_layer(layer, model::Pass::kForward);
    for (const Tensor& t : e.layer_params(layer)) {
      // Raw storage: 4 bytes per element in fp32, 2 in bf16 and fp16.
      const auto* raw = static_cast<const unsigned char*>(t.data);
      const size_t w = dtype_size(t.dtype);
      for (int64_t j = 0; j < t.numel(); ++j) {
        uint32_t b = 0;
        std::memcpy(&b, raw + size_t(j) * w, w);
        bits.push_back(b);
      }
    }
    e.after_layer(layer, model::Pass::kForward);
  }
  return bits;
}

// ZeRO-Offload's one-step delayed update (EngineOptions::delayed_update_from = 3) against the
// same engine without it, on gradients that do not depend on the parameters, so both run the
// same AdamW updates and only what the model reads differs. Steps 1-3 read the parameters of the
// step before, as usual; from step 4 on each step reads the parameters from two steps before
// (step 3's update is still running while step 4 computes). Step 5 is skipped (a NaN gradient)
// while an update is pending: nothing is lost, the update lands at the next applied step. At
// the end finish_update() brings both engines to the same masters and parameters, bit for bit.
// Stages 1-3, bf16 and fp32, with gradient accumulation.
TEST(Engine, DelayedUpdateReadsParametersOneStepOlderAndEndsTheSame) {
  model::GptjConfig c;
  SelfComm comm;
  for (DType dt : {DType::kBF16, DType::kF32}) {
    for (int stage = 1; stage <= 3; ++stage) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " stage " + std::to_string(stage));
      EngineOptions o = options(dt, stage);
      o.offload_optimizer = true;
      o.optimizer.grad_clip = 0.5;
      o.optimizer.weight_decay = 0.1;
      Engine ref(c, o, comm);
      o.delayed_update_from = 3;
      Engine delayed(c, o, comm);
      EXPECT_EQ(delayed.model_state_bytes().host_buffers, 2 * ref.model_state_bytes().host_buffers);
      std::vector<std::vector<uint32_t>> ref_read;  // what ref's forward of step k + 1 reads
      constexpr int steps = 8;
      for (int step = 0; step < steps; ++step) {
        ref_read.push_back(forward_param_bits(ref));
        // Stages 1-2: after a step that landed an update (steps 4, 6 and 7) its parameters are
        // arriving layer by layer until before_layer waits for each; reading one earlier is a bug.
        if (stage != 3) {
          const bool arriving = step == 4 || step == 6 || step == 7;
          const int head = model::head_layer(c);
          if (arriving)
            EXPECT_THROW(delayed.layer_params(head), Error) << "step " << step + 1;
          else
            EXPECT_NO_THROW(delayed.layer_params(head)) << "step " << step + 1;
        }
        const std::vector<uint32_t> read = forward_param_bits(delayed);
        // Which of ref's steps read the same parameters. With p_j the parameters after j
        // updates, ref's steps 1-8 read p0 p1 p2 p3 p4 p4 p5 p6 (step 5 is skipped), the
        // delayed engine's p0 p1 p2 p2 p3 p3 p4 p5: updates 1-2 land at once, update 3 (step 3)
        // during step 4, update 4 (step 4) during step 6 (the skipped step 5 finishes nothing),
        // update 5 during step 7.
        const int same_as[steps] = {0, 1, 2, 2, 3, 3, 4, 6};
        EXPECT_EQ(read, ref_read[size_t(same_as[step])]) << "step " << step + 1;
        for (Engine* e : {&ref, &delayed}) {
          e->zero_grads();
          for (int micro = 0; micro < 2; ++micro) {
            e->set_last_micro_step(micro == 1);
            param_free_backward(*e, 2 * step + micro, step == 4 && micro == 1);
          }
          const StepStats st = e->step();
          EXPECT_EQ(st.skipped, step == 4) << "step " << step + 1;
        }
        EXPECT_EQ(delayed.update_pending(), step >= 2) << "step " << step + 1;
      }
      // Reading the optimizer state under a running update is refused (checkpoint code finishes
      // the update first, on every rank).
      std::vector<float> one(size_t(delayed.owned_pieces()[0].numel));
      EXPECT_THROW(delayed.read_piece_state(delayed.owned_pieces()[0], one.data(), nullptr, nullptr), Error);
      EXPECT_EQ(delayed.gather_master_values(), ref.gather_master_values());  // finishes the update
      EXPECT_FALSE(delayed.update_pending());
      EXPECT_EQ(forward_param_bits(delayed), forward_param_bits(ref));
      EXPECT_EQ(delayed.finish_update(), 0.0);  // nothing left to finish
    }
  }
  EngineOptions o = options(DType::kBF16, 3);
  o.offload_optimizer = true;
  o.offload_params = true;
  o.delayed_update_from = 1;
  EXPECT_THROW(Engine(c, o, comm), Error);  // the AdamW would write the shard the gathers read
}

}  // namespace
}  // namespace zt::zero
