// The ZeRO engine's optimizer offload (zero.offload_optimizer = "cpu"): gradient shards to the
// host, the CPU AdamW and the new parameters back to the device, synchronous (step_offloaded) or
// one step delayed (step_offloaded_delayed, with its per-layer parameter uploads).
#include <algorithm>
#include <cstring>
#include <future>
#include <utility>
#include <vector>

#include <omp.h>

#include "optim/adamw.h"
#include "runtime/error.h"
#include "runtime/timer.h"
#include "zero/engine.h"

namespace zt::zero {

namespace {
// Offload: elements per CPU AdamW chunk. A chunk's parameters go back to the device while the
// next chunk is stepped; 16M elements are 32 MiB of bf16 (about 0.6 ms of PCIe), and about 50 ms
// of CPU AdamW at 90 GB/s, so the copies hide behind the stepping.
constexpr int64_t kOffloadChunk = int64_t(1) << 24;

// The offloaded CPU AdamW of n elements: `grad` (param dtype `dt`) in, the new model-facing
// parameters out at `param` (rounded to dt when `mixed`; fp32: the master is the value).
void offloaded_adamw(float* master, float* m, float* v, const void* grad, DType dt, int64_t n,
                     const optim::AdamWStep& hp, void* param, bool mixed) {
  optim::adamw_step_cpu(master, m, v, grad, dt, n, hp, mixed ? param : nullptr, dt);
  if (!mixed) std::memcpy(param, master, size_t(n) * 4);
}
}  // namespace

void Engine::download_layer_grads(int layer) {
  const int64_t begin = layout_.layer_shard_begin(layer);
  const size_t bytes = size_t(layout_.layer_shard_end(layer) - begin) * elem();
  const size_t at = size_t(begin) * elem();
  ops_->download_async(static_cast<const char*>(grads_.data()) + at,
                       static_cast<char*>(host_grads_.data()) + at, bytes);
  ++grads_downloaded_;
}

void Engine::step_offloaded(const optim::AdamWStep& base, StepStats& stats) {
  const DType dt = options_.param_dtype;
  const size_t w = elem();
  char* host = static_cast<char*>(host_grads_.data());
  // Stages 2-3 sent every layer's reduced shard to the host during the last micro-step's
  // backward; otherwise (stage 1) the shard goes now, chunk by chunk, each chunk's copy
  // overlapping the stepping of the one before.
  const bool streamed = grads_downloaded_ == model::num_layers_total(config_);
  const char* device_shard =
      static_cast<const char*>((options_.stage == 1 ? owned_grads_ : grads_).data());
  struct Chunk {
    const OwnedPiece* piece;
    int64_t offset;  // into the piece
    int64_t n;
    int64_t marker;  // its gradients are on the host once this marker is
  };
  std::vector<Chunk> chunks;
  const int64_t all_downloaded = streamed ? ops_->mark_copies() : -1;
  for (const OwnedPiece& p : owned_) {
    for (int64_t off = 0; off < p.numel; off += kOffloadChunk) {
      Chunk c{&p, off, std::min(kOffloadChunk, p.numel - off), all_downloaded};
      if (!streamed) {
        const size_t at = size_t(p.local_begin + off) * w;
        ops_->download_async(device_shard + at, host + at, size_t(c.n) * w);
        c.marker = ops_->mark_copies();
      }
      chunks.push_back(c);
    }
  }
  float* master = static_cast<float*>(master_.data());
  float* m = static_cast<float*>(adam_m_.data());
  float* v = static_cast<float*>(adam_v_.data());
  int64_t waited = -1;
  for (const Chunk& c : chunks) {
    const OwnedPiece& p = *c.piece;
    const int64_t at = p.local_begin + c.offset;
    if (c.marker != waited) {
      const Timer wait;
      ops_->wait_copies_on_host(c.marker);
      stats.offload_download_wait_s += wait.seconds();
      waited = c.marker;
    }
    // The new parameters overwrite the gradients they came from (same dtype and place), then go
    // back to the device's parameter copy from there; with offload_params they go straight into
    // the host shard, which the next gathers upload from. No upload of an earlier gather can
    // still be reading that shard: those were queued before the marker the host waited for
    // above, and a marker covers the uploads as well as the downloads.
    char* g = host + size_t(at) * w;
    char* param = options_.offload_params
                      ? static_cast<char*>(piece_param(p)) + size_t(c.offset) * w
                      : g;
    const Timer adam;
    offloaded_adamw(master + at, m + at, v + at, g, dt, c.n, piece_hyper(p, base), param, mixed());
    stats.offload_cpu_adam_s += adam.seconds();
    if (!options_.offload_params)
      ops_->upload_async(g, static_cast<char*>(piece_param(p)) + size_t(c.offset) * w,
                         size_t(c.n) * w);
  }
  // The host waits for the last upload only to report it: the device could not start the next
  // step before the parameters are back anyway.
  const Timer upload;
  ops_->wait_copies_on_host(ops_->mark_copies());
  stats.offload_upload_wait_s = upload.seconds();
  ops_->compute_after_copies();
  ops_->forget_copy_markers();
  grads_downloaded_ = 0;
}

void Engine::step_offloaded_delayed(const optim::AdamWStep& base, StepStats& stats) {
  const DType dt = options_.param_dtype;
  const size_t w = elem();
  char* host = static_cast<char*>(host_grads_.data());
  // 1. This step's gradient shard on the host: stages 2-3 sent it during the backward; stage 1
  //    sends it now.
  if (grads_downloaded_ != model::num_layers_total(config_)) {
    const char* shard = static_cast<const char*>((options_.stage == 1 ? owned_grads_ : grads_).data());
    for (const OwnedPiece& p : owned_) {
      const size_t at = size_t(p.local_begin) * w;
      ops_->download_async(shard + at, host + at, size_t(p.numel) * w);
    }
  }
  const Timer wait;
  ops_->wait_copies_on_host(ops_->mark_copies());
  ops_->forget_copy_markers();
  stats.offload_download_wait_s = wait.seconds();
  grads_downloaded_ = 0;
  // 2. The previous step's update: the host waits for its CPU AdamW; its parameters go to the
  //    device when the next forward starts (queue_params_upload), and the host never waits for
  //    that upload.
  stats.offload_cpu_adam_s = join_update();
  // 3. This step's CPU AdamW on a host thread, over the gradient shard just downloaded, writing
  //    the new 16-bit parameters over it (as step_offloaded does); the next backward downloads
  //    into the other shard, once the upload from there is done for each layer (the backward of a
  //    layer follows its forward, which waited for the layer's parameters). The thread leaves one
  //    of this rank's cores to the thread that drives the device and the communication.
  struct Job {
    float *master, *m, *v;
    char* g;
    int64_t n;
    optim::AdamWStep hp;
  };
  std::vector<Job> jobs;
  for (const OwnedPiece& p : owned_) {
    const int64_t at = p.local_begin;
    jobs.push_back({piece_master(p), static_cast<float*>(adam_m_.data()) + at,
                    static_cast<float*>(adam_v_.data()) + at, host + size_t(at) * w, p.numel,
                    piece_hyper(p, base)});
  }
  const bool mixed16 = mixed();
  const int threads = std::max(1, omp_get_max_threads() - 1);
  pending_update_ = std::async(std::launch::async, [jobs = std::move(jobs), dt, mixed16, threads] {
    omp_set_num_threads(threads);  // a new thread starts from the process default
    const Timer adam;
    for (const Job& j : jobs) offloaded_adamw(j.master, j.m, j.v, j.g, dt, j.n, j.hp, j.g, mixed16);
    return adam.seconds();
  });
  std::swap(host_grads_, host_grads_spare_);
}

double Engine::finish_update() {
  const double adam_s = join_update();
  queue_params_upload();
  wait_arriving_params();
  return adam_s;
}

double Engine::join_update() {
  if (!pending_update_.valid()) return 0.0;
  const double adam_s = pending_update_.get();  // rethrows what the thread threw
  // Its parameters replace any older ones not yet queued: they overwrite every owned piece.
  params_to_upload_ = static_cast<const char*>(host_grads_spare_.data());
  return adam_s;
}

void Engine::queue_params_upload() {
  if (params_to_upload_ == nullptr) return;
  const char* fresh = params_to_upload_;
  params_to_upload_ = nullptr;
  // Gathers of the update before may still be writing the full copy: what follows comes after.
  wait_arriving_params();
  const int layers = model::num_layers_total(config_);
  if (options_.stage == 3) {
    // Layers gathered before the update hold its old values. Their gathers (and every earlier
    // one) read the shard: the compute stream waits for them before the uploads below.
    for (auto it = gathered_.begin(); it != gathered_.end(); it = gathered_.erase(it))
      wait_gather(it->first);
  }
  // The device's parameters are overwritten: the compute queued so far may still read them.
  ops_->copies_after_compute();
  upload_from_ = fresh;
  unsent_layers_.assign(size_t(layers), 1);
  // Stage 3: each layer goes up when its first all-gather is queued (gather_layer), that is in
  // the order the forward reads them, one layer ahead of the compute (the prefetch).
  if (options_.stage == 3) return;
  // Stages 1-2, in the order the forward reads them: a layer's pieces, then its all-gathers,
  // which the communication stream runs once those pieces are up while the next layer's upload
  // goes on.
  arriving_.resize(size_t(layers));  // empty before: wait_arriving_params() above
  for (int layer = 0; layer < layers; ++layer) {
    upload_layer_params(layer);
    ops_->comm_after_uploads(comm_);
    arriving_[size_t(layer)] = gather_layer_copy(layer);
  }
}

void Engine::upload_layer_params(int layer) {
  ZT_CHECK(upload_from_ != nullptr && unsent_layers_.at(size_t(layer)), "layer ", layer,
           " has no delayed-update parameters to upload");
  for (const OwnedPiece& p : owned_)
    if (layout_.params[size_t(p.param)].layer == layer)
      ops_->upload_async(upload_from_ + size_t(p.local_begin) * elem(), piece_param(p),
                         size_t(p.numel) * elem());
  unsent_layers_[size_t(layer)] = 0;
  if (std::find(unsent_layers_.begin(), unsent_layers_.end(), 1) == unsent_layers_.end()) {
    unsent_layers_.clear();
    upload_from_ = nullptr;
  }
}

void Engine::wait_arriving_params() {
  for (std::vector<CommHandle>& handles : arriving_) wait_all(handles);
  arriving_.clear();
  if (unsent_layers_.empty()) return;
  // Stage 3, layers not gathered since the update: up now, in layer order, and both streams wait
  // for them. (The last upload empties unsent_layers_.)
  while (!unsent_layers_.empty()) {
    const auto next = std::find(unsent_layers_.begin(), unsent_layers_.end(), 1);
    upload_layer_params(int(next - unsent_layers_.begin()));
  }
  ops_->comm_after_uploads(comm_);
  ops_->compute_after_copies();
}

}  // namespace zt::zero
