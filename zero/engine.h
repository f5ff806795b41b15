// The ZeRO engine: one engine for stages 0-3. It owns parameters, gradients and optimizer state
// in flat buffers (zero/flat_layout.h), serves them to the model as a ParamProvider, talks to
// the other ranks only through Comm, and takes optimizer steps.
//
// What each stage partitions across the N ranks (DESIGN.md section 4):
//   stage 0  nothing: full params, full grads (all-reduced), full optimizer state on every rank
//   stage 1  fp32 master + Adam moments: each rank steps its shard, then the 16-bit params are
//            all-gathered; gradients are reduce-scattered once per optimizer step
//   stage 2  + gradients: each layer's gradients are reduce-scattered into the owner's shard as
//            soon as backward finishes the layer (every micro-step); only the shard is kept
//   stage 3  + the 16-bit params: each layer is all-gathered before its forward and again before
//            its backward, released after use, and the next layer's gather starts ahead
//
// Gradient scaling: the trainer passes micro_grad_scale() to forward_backward, which folds in
// the fp16 loss scale and the 1 / (grad_accum_steps * N) of the mean over micro-batches and
// ranks, so reductions are plain sums. step() undoes the loss scale.
#pragma once

#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "model/config.h"
#include "model/params.h"
#include "model/provider.h"
#include "optim/config.h"
#include "optim/loss_scaler.h"
#include "optim/lr_schedule.h"
#include "runtime/comm.h"
#include "runtime/memory.h"
#include "zero/device_ops.h"
#include "zero/flat_layout.h"

namespace zt::zero {

struct EngineOptions {
  // Storage dtype of the parameters and gradients the model sees: fp32, or bf16/fp16 with fp32
  // master weights kept by the optimizer. fp16 uses dynamic loss scaling.
  DType param_dtype = DType::kF32;
  int stage = 0;
  int64_t bucket_elements = 25'000'000;
  optim::OptimizerConfig optimizer;
  optim::LossScalerConfig loss_scaler;
  // ZeRO-Offload (stages 1-3): the fp32 master and Adam moments of this rank's shard live in host
  // memory (pinned on a GPU) and a CPU AdamW steps them. Gradients go to the host during the last
  // micro-step's backward (stages 2-3; at the step for stage 1), the new 16-bit parameters come
  // back chunk by chunk while the next chunk is being stepped.
  bool offload_optimizer = false;
  // Stage 3 with offload_optimizer: the rank's 16-bit parameter shard lives in host memory too
  // (pinned on a GPU). Each layer's piece of it is uploaded on the upload stream ahead of use and
  // all-gathered from there; the CPU AdamW writes the new parameters straight into it, so the step
  // uploads nothing.
  bool offload_params = false;
  // ZeRO-Offload's one-step delayed parameter update (offload_optimizer without offload_params;
  // 0 = never): from the delayed_update_from-th applied step on, step() leaves the step's CPU
  // AdamW running on a host thread and returns, so the device computes the next step meanwhile,
  // on the parameters from before that update; the next applied step (or finish_update()) waits
  // for it and uploads its parameters. Costs a second host gradient shard. The upload starts
  // with the next forward; at stages 1-2 the parameters arrive layer by layer (uploaded and
  // all-gathered in forward order) and each layer's compute waits only for its own, so the
  // upload overlaps that forward instead of holding the device.
  int64_t delayed_update_from = 0;
  int64_t total_steps = 1;  // end of the LR decay
  uint64_t seed = 0;        // parameter initialisation
  // false: the buffers are only zeroed, not set to the random initial values, because the caller
  // loads every parameter (load_weights, load_checkpoint) before the first step.
  bool init_values = true;
  // Host threads for initialisation (0: model::default_init_threads()), each taking runs of at
  // least init_chunk elements; tests make the runs small to split a tiny model.
  int init_threads = 0;
  int64_t init_chunk = model::kInitChunkElements;
};

struct StepStats {
  double grad_norm = 0.0;   // global L2 norm of the (unscaled) gradients, before clipping
  double clip_coef = 1.0;   // factor applied to the gradients (1 = not clipped)
  double lr = 0.0;          // learning rate used (0 when skipped)
  double loss_scale = 1.0;  // the fp16 loss scale this step's gradients carried
  bool skipped = false;     // non-finite gradients or loss on some rank: nothing changed anywhere
  bool loss_nonfinite = false;  // skipped because step() was told the loss was not finite
  // Skipped for non-finite gradients: the first provider layer (model/params.h numbering) whose
  // gradient held a non-finite value on some rank (-1: none, e.g. only the loss was non-finite).
  int nonfinite_layer = -1;
  // Host seconds of the step's optimizer phase (the norm, clipping, the AdamW), and with offload
  // its parts: waiting for gradients to reach the host, the CPU AdamW, waiting for the last
  // parameters to reach the device. On a GPU the device has no work queued while the offloaded
  // optimizer runs, so optimizer_s is also the GPU's idle time in the step.
  double optimizer_s = 0.0;
  double offload_download_wait_s = 0.0;
  double offload_cpu_adam_s = 0.0;
  double offload_upload_wait_s = 0.0;
  // Seconds the engine's Comm was busy in collectives since the previous step() returned
  // (Comm::take_busy_seconds): the micro-batches' gradient reductions and stage 3 gathers, then
  // the step's norm all-reduces and parameter gathers. It overlaps the phase times above. On a
  // GPU (NcclComm) only collectives already finished when step() returns are counted, so the
  // last parameter gathers usually count in the next step, and the trainer's loss all-reduce
  // (over MPI) is not included. On the CPU the trainer shares the engine's MpiComm, so its
  // scalar all-reduces (the loss, peak memory, the stop flag) are included. Collectives between
  // steps (evaluation, checkpoint saves) count in the next step.
  double comm_s = 0.0;
};

// The engine's step counters and fp16 loss-scaler state: with the optimizer state, what a resumed
// run needs to continue bit for bit (the LR schedule and AdamW bias correction read steps_taken).
struct EngineCounters {
  int64_t steps_taken = 0;
  int64_t skipped_steps = 0;
  double loss_scale = 1.0;              // fp16 only (1 otherwise)
  int64_t scaler_clean_steps = 0;       // fp16: clean steps since the last overflow or growth
  int64_t scaler_hysteresis_left = 0;   // fp16: overflows still tolerated before halving
};

// Bytes of model state this rank keeps between steps (transient gather/reduce buffers are not
// model state; they are accounted under MemCategory::kBuffers).
struct ModelStateBytes {
  int64_t params = 0;          // on the compute device (0 with offload_params)
  int64_t grads = 0;
  int64_t optimizer = 0;       // on the compute device
  int64_t host_optimizer = 0;  // offloaded to host memory (master + moments)
  int64_t host_buffers = 0;    // offload: the host copy of the gradient shard (two: delayed update)
  int64_t host_params = 0;     // offload_params: the 16-bit parameter shard in host memory
  int64_t total() const { return params + grads + optimizer; }  // on the compute device
};

// What an Engine of `stage` keeps per rank over `layout` (partitioned for that stage), computed
// without allocating anything: `zerotrain estimate` uses it, and tests check it against
// Engine::model_state_bytes() of a real engine.
ModelStateBytes model_state_bytes(const FlatLayout& layout, int stage, DType param_dtype,
                                  bool offload_optimizer = false, bool offload_params = false,
                                  bool delayed_update = false);

class Engine final : public model::ParamProvider {
 public:
  // `ops` says where the buffers live and how they are worked on (null: the host); `comm` must
  // move buffers of that device (MpiComm/SelfComm on the host, NcclComm or HostStagedComm on a GPU).
  Engine(const model::GptjConfig& config, const EngineOptions& options, Comm& comm,
         std::unique_ptr<DeviceOps> ops = nullptr);
  ~Engine() override;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // ParamProvider.
  void before_layer(int layer, model::Pass pass) override;
  void after_layer(int layer, model::Pass pass) override;
  std::span<const Tensor> layer_params(int layer) override;
  std::span<const Tensor> layer_grads(int layer) override;
  void grad_ready(int layer) override;

  // Starts an optimizer step's accumulation: zeroes the gradients this rank keeps.
  void zero_grads();
  // Before each micro-batch: `last` marks the one that ends the accumulation. Stages 0-1
  // communicate gradients only during that micro-batch's backward.
  void set_last_micro_step(bool last) { last_micro_step_ = last; }
  // The grad_scale to pass to forward_backward for one micro-batch.
  double micro_grad_scale(int64_t grad_accum_steps) const;
  // Clipping, AdamW on this rank's shard, then the new parameters are made visible to the model
  // (all-gathered for stages 1-2). Collective: every rank calls it. Non-finite gradients on any
  // rank skip the step on every rank (and back off the fp16 loss scale). `loss_finite` false
  // (the caller's verdict on the step's loss, the same on every rank) skips it too: a NaN loss
  // must never update parameters, even in the odd case where its gradients are finite.
  // With EngineOptions::delayed_update_from the new parameters of an applied step may still be
  // coming (see there); StepStats then reports the CPU AdamW of the update joined during this
  // call, the previous step's, and no upload wait (the host never waits for that upload).
  StepStats step(bool loss_finite = true);
  // Collective: completes a delayed update still running (waits for its CPU AdamW, uploads its
  // parameters and gathers them as step() would), so the model and the optimizer state agree.
  // Before an evaluation; checkpoint saves and loads and gather_master_values() call it. Returns
  // the seconds of that CPU AdamW (0 when no update was pending).
  double finish_update();
  bool update_pending() const { return pending_update_.valid(); }
  // Collective: the first provider layer whose gradients (what the next step() reads) hold a
  // non-finite value on any rank, or -1. Each rank scans the gradients it holds (stage 0: all of
  // them; stages 1-3: its reduced shard) piece by piece, so it is slow: for the failure path.
  int first_nonfinite_layer();

  int stage() const { return options_.stage; }
  bool offloaded() const { return options_.offload_optimizer; }
  bool params_offloaded() const { return options_.offload_params; }
  bool delays_updates() const { return options_.delayed_update_from > 0; }
  double loss_scale() const;
  int64_t steps_taken() const { return steps_taken_; }
  int64_t skipped_steps() const { return skipped_steps_; }
  int64_t num_params() const { return layout_.num_params; }
  const FlatLayout& layout() const { return layout_; }
  const std::vector<model::ParamSpec>& specs() const { return specs_; }
  ModelStateBytes model_state_bytes() const;

  // ---- checkpoint support (zero/checkpoint.h); call between steps, never inside one ----
  const model::GptjConfig& config() const { return config_; }
  DType param_dtype() const { return options_.param_dtype; }
  int rank() const { return comm_.rank(); }
  int world_size() const { return comm_.size(); }
  // The parameter runs whose optimizer state this rank holds, in local order (stage 0: all).
  const std::vector<OwnedPiece>& owned_pieces() const { return owned_; }
  // Copies piece `p`'s fp32 master, Adam m and v (p.numel floats each; a null target is skipped)
  // to the host, wherever they live (device, or host memory with offload).
  void read_piece_state(const OwnedPiece& p, float* master, float* m, float* v);
  // Sets piece `p`'s master, m and v from host arrays (a null m or v: zeros), and this rank's
  // model-facing parameters of the piece to the master rounded to the parameter dtype (as step()
  // makes them).
  void write_piece_state(const OwnedPiece& p, const float* master, const float* m, const float* v);
  // After write_piece_state of every owned piece: stages 1-2 all-gather the parameter copy so every
  // rank's full copy holds the new values (collective). Gradients left from before are dropped
  // by the next zero_grads().
  void finish_state_load();
  EngineCounters counters() const;
  // Restores counters() of a saved engine. The loss scaler is rebuilt through its public rules:
  // a scaler that starts at the saved scale, then the overflows that bring hysteresis down to the
  // saved value, then the saved count of clean steps (less than growth_interval, so no growth).
  // Throws zt::UserError when the state is impossible under this engine's scaler config.
  void restore_counters(const EngineCounters& c);
  // Collective: true on every rank when `flag` is true on any rank (errors are agreed with it so
  // no rank waits in a collective for a rank that failed).
  bool any_rank(bool flag);

  // The fp32 master values of every parameter, concatenated in forward (spec) order, on the host.
  // Collective for stages 1-3 (shards are gathered); every rank gets the whole vector.
  std::vector<float> gather_master_values();
  // The gradients the next step() reads on this rank (on the engine's device), once pending
  // reductions complete: the full flat buffer for stage 0, the rank's reduced shard (local
  // order) for stages 1-3. For stage 1 it exists from the last micro-step's backward until
  // step(). Tests inject faults through it.
  Tensor step_grads();
  // The rank's Adam moments (local shard order); for tests that check a skipped step.
  Tensor adam_m() const { return adam_m_.tensor(DType::kF32, Shape{local_size_}); }
  Tensor adam_v() const { return adam_v_.tensor(DType::kF32, Shape{local_size_}); }

 private:
  // A layer's gathered parameters (stage 3), possibly still arriving.
  struct GatheredLayer {
    Buffer buffer;
    // offload_params: the layer's piece of the host shard, uploaded for the all-gather to read;
    // freed once the gather was waited (stream-ordered after it on the compute stream).
    Buffer staging;
    std::vector<CommHandle> pending;
    std::vector<Tensor> views;
  };
  // A layer's gradients being reduce-scattered (stages 2-3).
  struct PendingReduce {
    int layer;
    Buffer full;     // the layer's full gradients (the model added into these)
    Buffer staging;  // this rank's reduced pieces, added into the shard on completion
    std::vector<CommHandle> handles;
    bool last_micro_step = false;  // offload: the shard is final once this one is added
  };

  size_t elem() const { return dtype_size(options_.param_dtype); }
  bool mixed() const { return options_.param_dtype != DType::kF32; }
  std::vector<Tensor> views_into(void* base, int64_t base_offset, int layer) const;
  void gather_layer(int layer);
  // Waits for layer `layer`'s gather (started by gather_layer) and drops its upload staging.
  void wait_gather(int layer);
  void release_layer(int layer);
  void complete_reduce(PendingReduce& r);
  void drain_reduces(size_t keep);
  // Later work on this device sees the results of `handles`, which are then released.
  void wait_all(std::vector<CommHandle>& handles);
  // Where the owned piece's gradient, master value and model-facing parameter live.
  const void* piece_grad(const OwnedPiece& p) const;
  // The step's hyper-parameters for one piece (weight decay off for biases and norms).
  optim::AdamWStep piece_hyper(const OwnedPiece& p, const optim::AdamWStep& base) const;
  // The offloaded AdamW: gradients to the host (unless already there), the CPU step in chunks,
  // the new parameters back to the device.
  void step_offloaded(const optim::AdamWStep& base, StepStats& stats);
  // The same with the delayed update: this step's gradients to the host, the previous update's
  // CPU AdamW joined (join_update; its parameters are uploaded when the next pass starts), then
  // this step's CPU AdamW started on a host thread.
  void step_offloaded_delayed(const optim::AdamWStep& base, StepStats& stats);
  // Stages 2-3 with offload: queues the download of layer `layer`'s reduced gradient shard.
  void download_layer_grads(int layer);
  float* piece_master(const OwnedPiece& p) const;
  // The constructor's random initial values (EngineOptions::init_values).
  void init_values();
  // Elements [begin, begin + n) of `spec`'s initial values computed on the host threads: fp32
  // into f32 (null: not kept), and rounded to the parameter dtype into p16 (null: not wanted).
  void init_on_host(const model::ParamSpec& spec, int64_t begin, int64_t n, float* f32, void* p16);
  // Where piece_master() points: host memory (memcpy) or device memory (DeviceOps copies).
  bool master_on_host() const;
  // Completes pending reductions and gathers and drops gathered layers (checkpoint load/save).
  void quiesce();
  // Stages 1-2: all-gathers the full parameter copy from every rank's owned pieces (after a
  // step, or after a checkpoint load wrote this rank's pieces).
  void gather_full_params();
  // Stages 1-2: the all-gathers of layer `layer`'s buckets of the full parameter copy.
  std::vector<CommHandle> gather_layer_copy(int layer);
  // Delayed update: waits for its CPU AdamW and keeps its new parameters for
  // queue_params_upload (params_to_upload_). Returns the AdamW's seconds (0 when none ran).
  double join_update();
  // Queues the upload of params_to_upload_, if any: at stages 1-2 with the all-gathers, per layer
  // in forward order, into arriving_; at stage 3 each layer's upload is queued by its next
  // gather_layer (unsent_layers_).
  void queue_params_upload();
  // The upload of layer `layer`'s owned pieces from upload_from_ (one of unsent_layers_).
  void upload_layer_params(int layer);
  // Work queued from now on sees every layer's new parameters (arriving_ emptied, the stage-3
  // layers not uploaded yet uploaded).
  void wait_arriving_params();
  void* piece_param(const OwnedPiece& p) const;

  model::GptjConfig config_;
  EngineOptions options_;
  Comm& comm_;
  std::unique_ptr<DeviceOps> ops_;
  optim::LrSchedule schedule_;
  std::unique_ptr<optim::DynamicLossScaler> scaler_;  // fp16 only
  std::vector<model::ParamSpec> specs_;
  FlatLayout layout_;
  std::vector<OwnedPiece> owned_;
  int64_t local_size_ = 0;  // elements of the optimizer state on this rank

  Buffer params_;       // stages 0-2: all params (flat); stage 3: this rank's shard (on the
                        // host with offload_params)
  Buffer grads_;        // stages 0-1: all grads (flat); stages 2-3: this rank's shard
  Buffer master_;       // fp32 master of the owned pieces (local order); empty for fp32 params
                        // unless offloaded (then on the host, as are the moments)
  Buffer host_grads_;   // offload: the gradient shard on the host (local order, param dtype); the
                        // CPU AdamW then writes the new 16-bit parameters over it for the upload
  Buffer host_grads_spare_;  // delayed update: the other host gradient shard, which the update in
                             // flight reads and writes its new parameters over
  std::future<double> pending_update_;  // delayed update: its CPU AdamW (seconds), running
  // Delayed update, stages 1-2: per provider layer, the all-gathers still bringing the last
  // update's parameters into the full copy (empty when none are arriving); before_layer waits
  // for the layer's own.
  std::vector<std::vector<CommHandle>> arriving_;
  // Delayed update: the host shard holding a joined update's new parameters, until the next
  // before_layer (or finish_update) queues their upload.
  const char* params_to_upload_ = nullptr;
  // Once queued: the host shard the update's parameters go up from, and per provider layer
  // whether its pieces are still to go (stage 3; empty once all are on their way).
  const char* upload_from_ = nullptr;
  std::vector<char> unsent_layers_;
  int64_t grads_downloaded_ = 0;  // offload, stages 2-3: layers whose gradients went to the host
  int64_t downloads_marker_ = -1;
  Buffer adam_m_, adam_v_;
  Buffer owned_grads_;  // stage 1: the reduce-scattered shard, alive from backward to step
  std::vector<std::vector<Tensor>> param_views_;  // stages 0-2: per layer
  std::vector<std::vector<Tensor>> grad_views_;   // stages 0-1: per layer
  std::map<int, GatheredLayer> gathered_;          // stage 3
  std::map<int, Buffer> layer_grad_buffers_;       // stages 2-3: grads of layers in backward
  std::map<int, std::vector<Tensor>> layer_grad_views_;
  std::deque<PendingReduce> reduces_;              // stages 2-3
  std::vector<CommHandle> grad_sync_;              // stages 0-1: this step's gradient collectives
  bool last_micro_step_ = true;
  int64_t steps_taken_ = 0;
  int64_t skipped_steps_ = 0;
};

}  // namespace zt::zero
