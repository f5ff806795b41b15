// The ZeRO engine: buffers per stage, layer hooks (gather, reduce), and the optimizer step
// (its CPU offload and delayed update: zero/engine_offload.cpp).
#include "zero/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "optim/grad_clip.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/timer.h"

namespace zt::zero {

namespace {
constexpr size_t kReducesInFlight = 2;  // stage 2-3 layer reductions kept pending before waiting

int init_threads(const EngineOptions& o) {
  return o.init_threads > 0 ? o.init_threads : model::default_init_threads();
}
}

Engine::Engine(const model::GptjConfig& config, const EngineOptions& options, Comm& comm,
               std::unique_ptr<DeviceOps> ops)
    : config_(config), options_(options), comm_(comm), ops_(ops ? std::move(ops) : make_cpu_device_ops()) {
  const DType dt = options.param_dtype;
  ZT_CHECK(dt == DType::kF32 || dt == DType::kBF16 || dt == DType::kF16,
           "the engine keeps parameters in fp32, bf16 or fp16, not ", dtype_name(dt));
  ZT_CHECK(options.stage >= 0 && options.stage <= 3, "zero.stage must be 0..3, got ", options.stage);
  ZT_CHECK(comm.device() == ops_->device(), "the engine's buffers are on ", ops_->device().str(),
           " but its comm moves buffers on ", comm.device().str());
  ZT_CHECK(!options.offload_optimizer || options.stage >= 1,
           "zero.offload_optimizer = \"cpu\" needs zero.stage 1, 2 or 3 (stage 0 keeps a full "
           "optimizer state on every rank), got stage ", options.stage);
  ZT_CHECK(!options.offload_params || (options.stage == 3 && options.offload_optimizer),
           "zero.offload_params = \"cpu\" needs zero.stage = 3 and zero.offload_optimizer = \"cpu\" "
           "(only stage 3 partitions the parameters, and the CPU AdamW writes them), got stage ",
           options.stage, " and offload_optimizer ", options.offload_optimizer ? "on" : "off");
  ZT_CHECK(options.delayed_update_from >= 0, "delayed_update_from must be >= 0 (0 = never), got ",
           options.delayed_update_from);
  ZT_CHECK(options.delayed_update_from == 0 || (options.offload_optimizer && !options.offload_params),
           "the delayed update needs zero.offload_optimizer = \"cpu\" without zero.offload_params "
           "(the CPU AdamW would write parameters the device is reading)");
  const optim::OptimizerConfig& o = options.optimizer;
  schedule_ = optim::LrSchedule{o.decay, o.lr, o.min_lr, o.warmup_steps, options.total_steps};
  if (dt == DType::kF16) scaler_ = std::make_unique<optim::DynamicLossScaler>(options.loss_scaler);
  specs_ = model::gptj_param_specs(config_);
  const int layers = model::num_layers_total(config_);
  // Stage 0 shards nothing: one partition, so every rank owns (and steps) everything.
  const int partitions = options.stage == 0 ? 1 : comm.size();
  const int rank = options.stage == 0 ? 0 : comm.rank();
  layout_ = make_flat_layout(specs_, layers, partitions, options.bucket_elements);
  owned_ = layout_.owned_pieces(rank);
  local_size_ = layout_.shard_size;

  const int64_t param_elems = options.stage == 3 ? layout_.shard_size : layout_.total;
  const int64_t grad_elems = options.stage >= 2 ? layout_.shard_size : layout_.total;
  params_ = options.offload_params
                ? ops_->allocate_host(size_t(param_elems) * elem(), MemCategory::kParams,
                                      "offloaded parameter shard")
                : ops_->allocate(size_t(param_elems) * elem(), MemCategory::kParams, "parameters");
  grads_ = ops_->allocate(size_t(grad_elems) * elem(), MemCategory::kGrads, "gradients");
  // The optimizer state: on the device, or (offload) in host memory, where fp32 parameters also
  // get a separate master since the device copy is not where the CPU AdamW works.
  const bool offload = options.offload_optimizer;
  auto optimizer_buffer = [&](const char* what) {
    const size_t bytes = size_t(local_size_) * 4;
    return offload ? ops_->allocate_host(bytes, MemCategory::kOptimizer, what)
                   : ops_->allocate(bytes, MemCategory::kOptimizer, what);
  };
  if (mixed() || offload) master_ = optimizer_buffer("fp32 master parameters");
  adam_m_ = optimizer_buffer("Adam m");
  adam_v_ = optimizer_buffer("Adam v");
  if (offload)
    host_grads_ = ops_->allocate_host(size_t(local_size_) * elem(), MemCategory::kBuffers,
                                      "offloaded gradient shard");
  if (options.delayed_update_from > 0)
    host_grads_spare_ = ops_->allocate_host(size_t(local_size_) * elem(), MemCategory::kBuffers,
                                            "offloaded gradient shard (delayed update)");
  // Padding stays zero forever. Host buffers are zeroed by several threads: first touching
  // gigabytes of host memory takes seconds on one.
  ZT_CHECK(options.init_chunk > 0, "init_chunk must be positive, got ", options.init_chunk);
  for (Buffer* b : {&params_, &grads_, &master_, &adam_m_, &adam_v_, &host_grads_, &host_grads_spare_}) {
    if (b->empty()) continue;
    if (b->device().is_cpu()) {
      char* base = static_cast<char*>(b->data());
      model::parallel_ranges(int64_t(b->bytes()), init_threads(options), options.init_chunk * 4,
                             [&](int64_t begin, int64_t end) {
                               std::memset(base + begin, 0, size_t(end - begin));
                             });
    } else {
      ops_->zero(b->data(), b->bytes());
    }
  }
  if (options.init_values) init_values();
  if (options.stage < 3)
    for (int layer = 0; layer < layers; ++layer)
      param_views_.push_back(views_into(params_.data(), 0, layer));
  if (options.stage < 2)
    for (int layer = 0; layer < layers; ++layer)
      grad_views_.push_back(views_into(grads_.data(), 0, layer));
}

// Initial values from the counter-based init, each element computed once where it can be: the
// owned pieces' master and their model-facing parameters (the stage-3 shard, or their place in
// the stages 0-2 full copy), then for stages 0-2 the rest of the full copy, which every rank
// computes identically. Uploads to a device go one piece at a time, in order.
void Engine::init_values() {
  const DType dt = options_.param_dtype;
  const bool host_master = master_on_host();
  const bool host_params = params_.device().is_cpu();
  const bool separate = !master_.empty();  // false: the fp32 parameters are the master
  std::vector<float> values;               // what goes to the device
  auto compute = [&](const model::ParamSpec& spec, int64_t begin, int64_t n) {
    values.resize(size_t(n));
    model::init_param_values(spec, config_, options_.seed, begin, begin + n, values.data(),
                             init_threads(options_), options_.init_chunk);
  };
  // Per parameter: the [begin, end) ranges this rank owns.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> owned(layout_.params.size());
  for (const OwnedPiece& p : owned_) {
    const model::ParamSpec& spec = specs_[size_t(layout_.params[size_t(p.param)].spec_index)];
    owned[size_t(p.param)].emplace_back(p.param_begin, p.param_begin + p.numel);
    if (host_master) {
      init_on_host(spec, p.param_begin, p.numel, piece_master(p),
                   separate && host_params ? piece_param(p) : nullptr);
      if (separate && !host_params)
        ops_->upload(piece_master(p), piece_param(p), size_t(p.numel), dt);
    } else {
      compute(spec, p.param_begin, p.numel);
      if (separate) ops_->upload(values.data(), piece_master(p), size_t(p.numel), DType::kF32);
      ops_->upload(values.data(), piece_param(p), size_t(p.numel), dt);
    }
  }
  if (options_.stage == 3) return;
  for (size_t i = 0; i < layout_.params.size(); ++i) {
    const FlatParam& fp = layout_.params[i];
    const model::ParamSpec& spec = specs_[size_t(fp.spec_index)];
    auto fill = [&](int64_t begin, int64_t end) {
      if (begin >= end) return;
      char* dst = static_cast<char*>(params_.data()) + size_t(fp.offset + begin) * elem();
      if (host_params && dt == DType::kF32) {
        init_on_host(spec, begin, end - begin, reinterpret_cast<float*>(dst), nullptr);
      } else if (host_params) {
        init_on_host(spec, begin, end - begin, nullptr, dst);
      } else {
        compute(spec, begin, end - begin);
        ops_->upload(values.data(), dst, size_t(end - begin), dt);
      }
    };
    std::sort(owned[i].begin(), owned[i].end());
    int64_t at = 0;
    for (const auto& [begin, end] : owned[i]) {
      fill(at, begin);
      at = end;
    }
    fill(at, fp.numel);
  }
}

void Engine::init_on_host(const model::ParamSpec& spec, int64_t begin, int64_t n, float* f32,
                          void* p16) {
  const DType dt = options_.param_dtype;
  // Blocks small enough that the fp32 values are still in cache when rounded.
  const int64_t block = std::min<int64_t>(options_.init_chunk, int64_t(1) << 16);
  model::parallel_ranges(n, init_threads(options_), options_.init_chunk, [&](int64_t a, int64_t e) {
    std::vector<float> scratch(f32 != nullptr ? 0 : size_t(std::min(block, e - a)));
    for (int64_t b = a; b < e; b += block) {
      const int64_t m = std::min(block, e - b);
      float* v = f32 != nullptr ? f32 + b : scratch.data();
      model::init_param_values(spec, config_, options_.seed, begin + b, begin + b + m, v, 1);
      // A block is at most 65536 elements, which convert_cpu converts on this thread alone.
      if (p16 != nullptr)
        convert_cpu(v, DType::kF32, static_cast<char*>(p16) + size_t(b) * elem(), dt, size_t(m));
    }
  });
}

Engine::~Engine() {
  // A delayed update's host thread uses the optimizer state and a gradient shard: it ends first.
  if (pending_update_.valid()) pending_update_.wait();
  // Never leave a collective running over buffers about to be freed.
  try {
    drain_reduces(0);
    wait_all(grad_sync_);
    for (auto& [layer, g] : gathered_) wait_all(g.pending);
    wait_arriving_params();
  } catch (const std::exception& e) {
    log_error("engine shutdown: ", e.what());
  }
}

std::vector<Tensor> Engine::views_into(void* base, int64_t base_offset, int layer) const {
  std::vector<Tensor> views;
  const Bucket& first = layout_.buckets[size_t(layout_.layer_first_bucket[size_t(layer)])];
  const Bucket& last = layout_.buckets[size_t(layout_.layer_end_bucket[size_t(layer)] - 1)];
  for (int i = first.first_param; i < last.end_param; ++i) {
    const FlatParam& p = layout_.params[size_t(i)];
    const model::ParamSpec& s = specs_[size_t(p.spec_index)];
    ZT_CHECK(s.index_in_layer == i - first.first_param, "flat layout out of params.h order at ", s.name);
    views.emplace_back(static_cast<char*>(base) + size_t(p.offset - base_offset) * elem(),
                       options_.param_dtype, s.shape, ops_->device());
  }
  return views;
}

const void* Engine::piece_grad(const OwnedPiece& p) const {
  if (options_.stage == 0)
    return static_cast<const char*>(grads_.data()) + size_t(p.flat_begin) * elem();
  const Buffer& shard = options_.stage == 1 ? owned_grads_ : grads_;
  return static_cast<const char*>(shard.data()) + size_t(p.local_begin) * elem();
}

void* Engine::piece_param(const OwnedPiece& p) const {
  const int64_t at = options_.stage == 3 ? p.local_begin : p.flat_begin;
  return static_cast<char*>(params_.data()) + size_t(at) * elem();
}

float* Engine::piece_master(const OwnedPiece& p) const {
  if (!master_.empty()) return static_cast<float*>(master_.data()) + p.local_begin;
  return static_cast<float*>(piece_param(p));  // fp32: the parameters are the master
}

double Engine::loss_scale() const { return scaler_ ? scaler_->scale() : 1.0; }

double Engine::micro_grad_scale(int64_t grad_accum_steps) const {
  return loss_scale() / (double(grad_accum_steps) * double(comm_.size()));
}

void Engine::wait_all(std::vector<CommHandle>& handles) {
  for (CommHandle& h : handles) ops_->wait(*h);
  handles.clear();
}

// ---- stage 3: gathering parameters per layer ----

void Engine::gather_layer(int layer) {
  if (gathered_.count(layer)) return;
  if (!unsent_layers_.empty() && unsent_layers_[size_t(layer)]) {
    // A delayed update's new parameters for this layer (queue_params_upload): up first, and this
    // gather after them on the device; later layers' uploads go on while this layer computes.
    upload_layer_params(layer);
    ops_->comm_after_uploads(comm_);
  }
  GatheredLayer& g = gathered_[layer];
  const int64_t begin = layout_.layer_begin[size_t(layer)];
  const int64_t n = layout_.layer_end[size_t(layer)] - begin;
  g.buffer = ops_->allocate(size_t(n) * elem(), MemCategory::kBuffers, "gathered layer parameters");
  // Where the all-gather reads this rank's pieces: the shard, or (offload_params) a device copy of
  // the layer's range of it. That copy runs on the upload stream, after the compute work queued so
  // far (the staging memory may be recycled from it), and the communication stream waits for it
  // on the device, so the compute stream keeps running the current layer meanwhile.
  const int64_t shard_begin = layout_.layer_shard_begin(layer);
  const char* shard = static_cast<const char*>(params_.data());
  int64_t shard_offset = 0;  // element of `shard` at the layer's local range begin
  if (options_.offload_params) {
    const size_t bytes = size_t(layout_.layer_shard_end(layer) - shard_begin) * elem();
    g.staging = ops_->allocate(bytes, MemCategory::kBuffers, "offloaded layer parameters");
    ops_->copies_after_compute();
    ops_->upload_async(shard + size_t(shard_begin) * elem(), g.staging.data(), bytes);
    ops_->comm_after_uploads(comm_);
    shard = static_cast<const char*>(g.staging.data());
    shard_offset = shard_begin;
  }
  char* full = static_cast<char*>(g.buffer.data());
  for (int b = layout_.layer_first_bucket[size_t(layer)]; b < layout_.layer_end_bucket[size_t(layer)]; ++b) {
    const Bucket& bk = layout_.buckets[size_t(b)];
    g.pending.push_back(comm_.all_gather(shard + size_t(bk.shard_offset - shard_offset) * elem(),
                                         full + size_t(bk.begin - begin) * elem(), size_t(bk.shard),
                                         options_.param_dtype));
  }
  g.views = views_into(g.buffer.data(), begin, layer);
}

void Engine::wait_gather(int layer) {
  GatheredLayer& g = gathered_.at(layer);
  wait_all(g.pending);
  // The compute stream now waits for the gather, so the stream-ordered free of the staging comes
  // after the all-gather that read it (NcclComm::stream_wait).
  g.staging.release();
}

void Engine::release_layer(int layer) {
  if (!gathered_.count(layer)) return;
  wait_gather(layer);
  gathered_.erase(layer);
}

void Engine::before_layer(int layer, model::Pass pass) {
  // A delayed update's parameters go to the device when the pass that reads them starts: the
  // forward's token copies are queued by then, which would otherwise wait behind 2 bytes per
  // parameter on the copy engine (copies in one direction run in the order they were queued).
  queue_params_upload();
  if (!arriving_.empty()) {
    // A delayed update's new parameters (stages 1-2): this layer's compute waits for its own
    // upload and all-gathers only, so the rest keep arriving while it runs.
    wait_all(arriving_[size_t(layer)]);
    if (std::all_of(arriving_.begin(), arriving_.end(), [](const auto& h) { return h.empty(); }))
      arriving_.clear();
  }
  if (options_.stage != 3) return;
  const int head = model::head_layer(config_);
  if (pass == model::Pass::kForward && layer == 0) {
    // A new forward pass: whatever an earlier pass left resident (the head after a forward
    // without backward) is not needed now.
    for (auto it = gathered_.begin(); it != gathered_.end();) {
      wait_gather(it->first);
      it = it->first == 0 ? std::next(it) : gathered_.erase(it);
    }
  }
  if (!model::reads_params(layer, pass)) return;  // the embedding's backward
  gather_layer(layer);
  wait_gather(layer);
  // Prefetch the layer this pass needs next, so its gather overlaps this layer's compute.
  const int next = pass == model::Pass::kForward ? layer + 1 : layer - 1;
  if (next >= 0 && next <= head && model::reads_params(next, pass)) gather_layer(next);
}

void Engine::after_layer(int layer, model::Pass pass) {
  if (options_.stage != 3) return;
  // The head's backward follows its forward at once: keep it gathered.
  if (pass == model::Pass::kForward && layer == model::head_layer(config_)) return;
  release_layer(layer);
}

std::span<const Tensor> Engine::layer_params(int layer) {
  if (options_.stage != 3) {
    ZT_CHECK(params_to_upload_ == nullptr && (arriving_.empty() || arriving_.at(size_t(layer)).empty()),
             "layer ", layer, " parameters requested outside before_layer/after_layer while a "
             "delayed update's are on their way");
    return param_views_.at(size_t(layer));
  }
  auto it = gathered_.find(layer);
  ZT_CHECK(it != gathered_.end() && it->second.pending.empty(), "layer ", layer,
           " parameters requested outside before_layer/after_layer");
  return it->second.views;
}

// ---- gradients ----

std::span<const Tensor> Engine::layer_grads(int layer) {
  if (options_.stage < 2) return grad_views_.at(size_t(layer));
  auto it = layer_grad_views_.find(layer);
  if (it != layer_grad_views_.end()) return it->second;
  // Stages 2-3: a zeroed full-size buffer for this layer only, freed once reduced.
  const int64_t begin = layout_.layer_begin[size_t(layer)];
  const int64_t n = layout_.layer_end[size_t(layer)] - begin;
  Buffer buffer = ops_->allocate(size_t(n) * elem(), MemCategory::kBuffers,
                                 "layer gradients before reduce-scatter");
  ops_->zero(buffer.data(), buffer.bytes());
  layer_grad_views_[layer] = views_into(buffer.data(), begin, layer);
  layer_grad_buffers_[layer] = std::move(buffer);
  return layer_grad_views_[layer];
}

void Engine::grad_ready(int layer) {
  const int first = layout_.layer_first_bucket[size_t(layer)];
  const int end = layout_.layer_end_bucket[size_t(layer)];
  const DType dt = options_.param_dtype;
  if (options_.stage == 0) {
    if (!last_micro_step_ || comm_.size() == 1) return;
    char* g = static_cast<char*>(grads_.data());
    for (int b = first; b < end; ++b) {
      const Bucket& bk = layout_.buckets[size_t(b)];
      grad_sync_.push_back(comm_.all_reduce(g + size_t(bk.begin) * elem(), size_t(bk.padded), dt, ReduceOp::kSum));
    }
    return;
  }
  if (options_.stage == 1) {
    if (!last_micro_step_) return;
    if (owned_grads_.empty())
      owned_grads_ = ops_->allocate(size_t(local_size_) * elem(), MemCategory::kBuffers,
                                    "reduce-scattered gradient shard");
    const char* g = static_cast<const char*>(grads_.data());
    char* out = static_cast<char*>(owned_grads_.data());
    for (int b = first; b < end; ++b) {
      const Bucket& bk = layout_.buckets[size_t(b)];
      grad_sync_.push_back(comm_.reduce_scatter(g + size_t(bk.begin) * elem(), out + size_t(bk.shard_offset) * elem(),
                                                size_t(bk.shard), dt, ReduceOp::kSum));
    }
    return;
  }
  // Stages 2-3: reduce-scatter this layer now, every micro-step.
  auto it = layer_grad_buffers_.find(layer);
  ZT_CHECK(it != layer_grad_buffers_.end(), "grad_ready(", layer, ") without layer_grads(", layer, ")");
  PendingReduce r;
  r.layer = layer;
  r.last_micro_step = last_micro_step_;
  r.full = std::move(it->second);
  layer_grad_buffers_.erase(it);
  layer_grad_views_.erase(layer);
  const int64_t shard_begin = layout_.layer_shard_begin(layer);
  r.staging = ops_->allocate(size_t(layout_.layer_shard_end(layer) - shard_begin) * elem(),
                             MemCategory::kBuffers, "reduce-scatter staging");
  const int64_t begin = layout_.layer_begin[size_t(layer)];
  const char* full = static_cast<const char*>(r.full.data());
  char* staging = static_cast<char*>(r.staging.data());
  for (int b = first; b < end; ++b) {
    const Bucket& bk = layout_.buckets[size_t(b)];
    r.handles.push_back(comm_.reduce_scatter(full + size_t(bk.begin - begin) * elem(),
                                             staging + size_t(bk.shard_offset - shard_begin) * elem(),
                                             size_t(bk.shard), dt, ReduceOp::kSum));
  }
  reduces_.push_back(std::move(r));
  drain_reduces(kReducesInFlight);
}

void Engine::complete_reduce(PendingReduce& r) {
  wait_all(r.handles);
  const int64_t begin = layout_.layer_shard_begin(r.layer);
  const int64_t n = layout_.layer_shard_end(r.layer) - begin;
  const DType dt = options_.param_dtype;
  ops_->accumulate(r.staging.data(), static_cast<char*>(grads_.data()) + size_t(begin) * elem(),
                   size_t(n), dt);
  if (offloaded() && r.last_micro_step) download_layer_grads(r.layer);
}

void Engine::drain_reduces(size_t keep) {
  while (reduces_.size() > keep) {
    complete_reduce(reduces_.front());
    reduces_.pop_front();
  }
}

void Engine::zero_grads() {
  drain_reduces(0);
  wait_all(grad_sync_);
  ops_->zero(grads_.data(), grads_.bytes());
  grads_downloaded_ = 0;
}

Tensor Engine::step_grads() {
  drain_reduces(0);
  wait_all(grad_sync_);
  if (options_.stage == 0) return grads_.tensor(options_.param_dtype, Shape{layout_.total});
  const Buffer& shard = options_.stage == 1 ? owned_grads_ : grads_;
  ZT_CHECK(!shard.empty(), "stage 1 has no reduced gradients before the last micro-step's backward");
  return shard.tensor(options_.param_dtype, Shape{layout_.shard_size});
}

// ---- the optimizer step ----

int Engine::first_nonfinite_layer() {
  drain_reduces(0);
  wait_all(grad_sync_);
  const int layers = model::num_layers_total(config_);
  int first = -1;
  for (const OwnedPiece& p : owned_) {
    const int layer = layout_.params[size_t(p.param)].layer;
    if (first >= 0 && layer >= first) continue;
    ops_->add_sum_of_squares(piece_grad(p), options_.param_dtype, p.numel);
    if (!std::isfinite(ops_->take_sum_of_squares())) first = layer;
  }
  // The minimum over ranks as a maximum (Comm has no kMin): layers - layer, 0 for none.
  double rank_value = first < 0 ? 0.0 : double(layers - first);
  if (comm_.size() > 1) rank_value = ops_->all_reduce_scalar(comm_, rank_value, ReduceOp::kMax);
  return rank_value == 0.0 ? -1 : layers - int(rank_value);
}

StepStats Engine::step(bool loss_finite) {
  const Timer timer;
  drain_reduces(0);
  wait_all(grad_sync_);
  ZT_CHECK(options_.stage != 1 || !owned_grads_.empty() || owned_.empty(),
           "stage 1 step without a last micro-step: call set_last_micro_step(true) before the "
           "final micro-batch");
  StepStats stats;
  stats.loss_scale = loss_scale();
  const DType dt = options_.param_dtype;

  // Global gradient norm from the owned pieces: every element is owned by exactly one rank
  // (stage 0: every rank owns all of it, so no reduction is needed).
  for (const OwnedPiece& p : owned_) ops_->add_sum_of_squares(piece_grad(p), dt, p.numel);
  double sum_sq = ops_->take_sum_of_squares();
  double overflow = std::isfinite(sum_sq) ? 0.0 : 1.0;
  if (comm_.size() > 1) {
    if (options_.stage > 0) sum_sq = ops_->all_reduce_scalar(comm_, sum_sq, ReduceOp::kSum);
    // Overflow is agreed across ranks, so every rank skips together.
    overflow = ops_->all_reduce_scalar(comm_, overflow, ReduceOp::kMax);
  }
  stats.grad_norm = std::sqrt(sum_sq) / stats.loss_scale;
  if (overflow != 0.0 || !loss_finite) {
    stats.skipped = true;
    stats.loss_nonfinite = !loss_finite;
    ++skipped_steps_;
    // The trainer's step number: every step() call is one (applied or skipped), and resumes
    // restore both counts.
    const int64_t call = steps_taken_ + skipped_steps_;
    // Before the gradients are dropped: where the trouble starts is what a user needs to know
    // when skips pile up. Every rank is in this branch (overflow and loss_finite are agreed).
    if (overflow != 0.0) stats.nonfinite_layer = first_nonfinite_layer();
    const std::string where =
        stats.nonfinite_layer >= 0 ? ", first in layer " + std::to_string(stats.nonfinite_layer) + " (" +
                                         model::layer_name(config_, stats.nonfinite_layer) + ")"
                                   : "";
    if (scaler_ && overflow != 0.0) {
      scaler_->update(true);
      log_warn("step ", call, " skipped: fp16 gradients overflowed at loss scale ",
               stats.loss_scale, " (now ", scaler_->scale(), ")", where,
               loss_finite ? "" : ", and the loss was not finite",
               "; parameters and optimizer state unchanged");
    } else {
      log_warn("step ", call, " skipped: ",
               overflow != 0.0 ? "non-finite gradients" + where : std::string(),
               overflow != 0.0 && !loss_finite ? ", and " : "", loss_finite ? "" : "non-finite loss",
               "; parameters and optimizer state unchanged");
    }
    // Gradient copies to the host may still be running (offload): the next step zeroes the
    // gradients they read.
    ops_->wait_copies_on_host(ops_->mark_copies());
    ops_->forget_copy_markers();
    owned_grads_.release();
    grads_downloaded_ = 0;
    stats.comm_s = comm_.take_busy_seconds();
    stats.optimizer_s = timer.seconds();
    return stats;
  }
  const optim::OptimizerConfig& o = options_.optimizer;
  stats.clip_coef = optim::clip_coefficient(stats.grad_norm, o.grad_clip);
  ++steps_taken_;
  stats.lr = schedule_.at(steps_taken_);

  optim::AdamWStep hp;
  hp.lr = stats.lr;
  hp.beta1 = o.beta1;
  hp.beta2 = o.beta2;
  hp.eps = o.eps;
  hp.step = steps_taken_;
  hp.grad_scale = stats.clip_coef / stats.loss_scale;
  // The delayed update starts at the delayed_update_from-th applied step and stays on.
  const bool delayed = delays_updates() && steps_taken_ >= options_.delayed_update_from;
  if (delayed) {
    step_offloaded_delayed(hp, stats);
  } else if (offloaded()) {
    step_offloaded(hp, stats);
  } else {
    float* m = static_cast<float*>(adam_m_.data());
    float* v = static_cast<float*>(adam_v_.data());
    for (const OwnedPiece& p : owned_)
      ops_->adamw(piece_master(p), m + p.local_begin, v + p.local_begin, piece_grad(p), dt, p.numel,
                  piece_hyper(p, hp), mixed() ? piece_param(p) : nullptr, dt);
  }
  if (scaler_) scaler_->update(false);
  owned_grads_.release();

  if (!delayed) gather_full_params();  // delayed: queue_params_upload() gathers the update's
  // No wait: collectives still running (on a GPU, the gathers just issued) count in the next step.
  stats.comm_s = comm_.take_busy_seconds();
  stats.optimizer_s = timer.seconds();
  return stats;
}

optim::AdamWStep Engine::piece_hyper(const OwnedPiece& p, const optim::AdamWStep& base) const {
  const optim::OptimizerConfig& o = options_.optimizer;
  const model::ParamSpec& s = specs_[size_t(layout_.params[size_t(p.param)].spec_index)];
  optim::AdamWStep hp = base;
  hp.weight_decay = (s.is_bias_or_norm() && !o.decay_bias_and_norm) ? 0.0 : o.weight_decay;
  return hp;
}

ModelStateBytes model_state_bytes(const FlatLayout& layout, int stage, DType param_dtype,
                                  bool offload_optimizer, bool offload_params, bool delayed_update) {
  const int64_t w = int64_t(dtype_size(param_dtype));
  // m, v, + the fp32 master when mixed or offloaded (fp32 parameters on the device are then not
  // where the CPU AdamW works).
  const int64_t k = param_dtype == DType::kF32 && !offload_optimizer ? 8 : 12;
  ModelStateBytes b;
  (offload_params ? b.host_params : b.params) = w * (stage >= 3 ? layout.shard_size : layout.total);
  b.grads = w * (stage >= 2 ? layout.shard_size : layout.total);
  // Stage 0's layout has one partition: shard == total.
  (offload_optimizer ? b.host_optimizer : b.optimizer) = k * layout.shard_size;
  if (offload_optimizer) b.host_buffers = w * layout.shard_size * (delayed_update ? 2 : 1);
  return b;
}

ModelStateBytes Engine::model_state_bytes() const {
  ModelStateBytes b;
  (params_offloaded() ? b.host_params : b.params) = int64_t(params_.bytes());
  b.grads = int64_t(grads_.bytes());
  (offloaded() ? b.host_optimizer : b.optimizer) =
      int64_t(master_.bytes() + adam_m_.bytes() + adam_v_.bytes());
  b.host_buffers = int64_t(host_grads_.bytes() + host_grads_spare_.bytes());
  return b;
}

std::vector<float> Engine::gather_master_values() {
  finish_update();
  // Every rank's master shard side by side, gathered in the engine's device memory (the comm
  // moves that memory), then read back (stage 0: this rank's copy is the whole thing).
  const int world = options_.stage == 0 ? 1 : comm_.size();
  Buffer local = ops_->allocate(size_t(local_size_) * 4, MemCategory::kBuffers, "master gather");
  ops_->zero(local.data(), local.bytes());
  for (const OwnedPiece& p : owned_)
    ops_->copy(piece_master(p), static_cast<float*>(local.data()) + p.local_begin, size_t(p.numel) * 4);
  Buffer gathered = ops_->allocate(size_t(local_size_) * 4 * size_t(world), MemCategory::kBuffers,
                                   "master gather");
  if (world == 1) {
    ops_->copy(local.data(), gathered.data(), local.bytes());
  } else {
    CommHandle h = comm_.all_gather(local.data(), gathered.data(), size_t(local_size_), DType::kF32);
    ops_->wait(*h);
  }
  std::vector<float> all(size_t(local_size_) * size_t(world));
  ops_->download(gathered.data(), all.data(), all.size() * 4);
  // Reassemble in forward order: offsets of each spec in the concatenation.
  std::vector<int64_t> spec_offset(specs_.size() + 1, 0);
  for (size_t i = 0; i < specs_.size(); ++i) spec_offset[i + 1] = spec_offset[i] + specs_[i].numel();
  std::vector<float> out(size_t(spec_offset.back()));
  for (int r = 0; r < world; ++r) {
    for (const OwnedPiece& p : layout_.owned_pieces(r)) {
      const int spec = layout_.params[size_t(p.param)].spec_index;
      std::memcpy(out.data() + spec_offset[size_t(spec)] + p.param_begin,
                  all.data() + size_t(r) * size_t(local_size_) + p.local_begin, size_t(p.numel) * 4);
    }
  }
  return out;
}

// ---- checkpoint support ----

bool Engine::master_on_host() const {
  return (master_.empty() ? params_ : master_).device().is_cpu();
}

void Engine::quiesce() {
  // The optimizer state is being read or replaced: no delayed update may still be writing it
  // (finish_update() is collective, so the callers' entry points call it on every rank).
  ZT_CHECK(!update_pending() && params_to_upload_ == nullptr,
           "a delayed update is still running, or its parameters are not queued for the device "
           "yet: call finish_update() before reading or writing the optimizer state");
  wait_arriving_params();
  drain_reduces(0);
  wait_all(grad_sync_);
  for (auto& [layer, g] : gathered_) wait_all(g.pending);
  gathered_.clear();
}

void Engine::read_piece_state(const OwnedPiece& p, float* master, float* m, float* v) {
  quiesce();
  const size_t bytes = size_t(p.numel) * 4;
  auto read = [&](const float* src, bool host, float* dst) {
    if (dst == nullptr) return;
    if (host)
      std::memcpy(dst, src, bytes);
    else
      ops_->download(src, dst, bytes);
  };
  read(piece_master(p), master_on_host(), master);
  read(static_cast<const float*>(adam_m_.data()) + p.local_begin, adam_m_.device().is_cpu(), m);
  read(static_cast<const float*>(adam_v_.data()) + p.local_begin, adam_v_.device().is_cpu(), v);
}

void Engine::write_piece_state(const OwnedPiece& p, const float* master, const float* m,
                               const float* v) {
  quiesce();
  const size_t n = size_t(p.numel);
  auto write = [&](const float* src, bool host, float* dst) {
    if (src == nullptr && host)  // zeros: no host array to copy (load_weights' fresh moments)
      std::memset(dst, 0, n * 4);
    else if (src == nullptr)
      ops_->zero(dst, n * 4);
    else if (host)
      std::memcpy(dst, src, n * 4);
    else
      ops_->upload(src, dst, n, DType::kF32);
  };
  if (!master_.empty()) write(master, master_.device().is_cpu(), piece_master(p));
  write(m, adam_m_.device().is_cpu(), static_cast<float*>(adam_m_.data()) + p.local_begin);
  write(v, adam_v_.device().is_cpu(), static_cast<float*>(adam_v_.data()) + p.local_begin);
  // The model-facing parameters are the master rounded to nearest even, as AdamW writes them
  // (fp32 without a separate master: they are the master itself).
  const DType dt = options_.param_dtype;
  if (params_.device().is_cpu())
    convert_cpu(master, DType::kF32, piece_param(p), dt, n);
  else
    ops_->upload(master, piece_param(p), n, dt);
}

void Engine::finish_state_load() {
  quiesce();
  owned_grads_.release();
  grads_downloaded_ = 0;
  gather_full_params();  // as at the end of step()
}

void Engine::gather_full_params() {
  // Stages 1-2: every rank wrote its pieces of the full parameter copy; rebuild the copy.
  if (options_.stage != 1 && options_.stage != 2) return;
  std::vector<CommHandle> gathers;
  for (int layer = model::num_layers_total(config_) - 1; layer >= 0; --layer)
    for (CommHandle& h : gather_layer_copy(layer)) gathers.push_back(std::move(h));
  wait_all(gathers);
}

std::vector<CommHandle> Engine::gather_layer_copy(int layer) {
  std::vector<CommHandle> gathers;
  char* full = static_cast<char*>(params_.data());
  for (int b = layout_.layer_first_bucket[size_t(layer)]; b < layout_.layer_end_bucket[size_t(layer)]; ++b) {
    const Bucket& bk = layout_.buckets[size_t(b)];
    gathers.push_back(comm_.all_gather(full + size_t(bk.piece_begin(comm_.rank())) * elem(),
                                       full + size_t(bk.begin) * elem(), size_t(bk.shard),
                                       options_.param_dtype));
  }
  return gathers;
}

EngineCounters Engine::counters() const {
  EngineCounters c;
  c.steps_taken = steps_taken_;
  c.skipped_steps = skipped_steps_;
  if (scaler_) {
    c.loss_scale = scaler_->scale();
    c.scaler_clean_steps = scaler_->clean_steps();
    c.scaler_hysteresis_left = scaler_->hysteresis_left();
  }
  return c;
}

void Engine::restore_counters(const EngineCounters& c) {
  if (c.steps_taken < 0 || c.skipped_steps < 0)
    throw_user_error("checkpoint counters are negative: steps_taken ", c.steps_taken,
                     ", skipped_steps ", c.skipped_steps);
  if (scaler_) {
    const optim::LossScalerConfig& cfg = options_.loss_scaler;
    if (!(c.loss_scale >= cfg.min_scale) || c.scaler_hysteresis_left < 1 ||
        c.scaler_hysteresis_left > cfg.hysteresis || c.scaler_clean_steps < 0 ||
        c.scaler_clean_steps >= cfg.growth_interval)
      throw_user_error("the saved fp16 loss-scaler state (scale ", c.loss_scale, ", hysteresis left ",
                       c.scaler_hysteresis_left, ", clean steps ", c.scaler_clean_steps,
                       ") is impossible with this run's loss scaler (min_scale ", cfg.min_scale,
                       ", hysteresis ", cfg.hysteresis, ", growth_interval ", cfg.growth_interval,
                       "): resume with the loss-scaler settings the checkpoint was trained with");
    scaler_->restore(c.loss_scale, c.scaler_hysteresis_left, c.scaler_clean_steps);
  }
  steps_taken_ = c.steps_taken;
  skipped_steps_ = c.skipped_steps;
}

bool Engine::any_rank(bool flag) {
  if (comm_.size() == 1) return flag;
  return ops_->all_reduce_scalar(comm_, flag ? 1.0 : 0.0, ReduceOp::kMax) != 0.0;
}

}  // namespace zt::zero
