// The data-parallel training loop over the synthetic corpus or a prepared HDF5 token dataset
// (launch/training_data.h), with periodic evaluation on a validation split.
#include "launch/trainer.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "launch/estimate.h"
#include "launch/init_weights.h"
#include "launch/run_checkpoints.h"
#include "launch/run_gemm_choices.h"
#include "launch/run_outputs.h"
#include "launch/signals.h"
#include "launch/training_data.h"
#include "model/gptj.h"
#include "optim/cpu_affinity.h"
#include "runtime/agreed.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/memory.h"
#include "runtime/timer.h"
#include "zero/checkpoint.h"
#include "zero/engine.h"
#include "zero/memory_estimate.h"
#include "zero/weights.h"

#ifdef ZT_WITH_CUDA
#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/host_staged_comm.h"
#include "runtime/cuda/nccl_comm.h"
#endif

namespace zt::launch {

namespace {

namespace fs = std::filesystem;

constexpr double kPeakFlops = 989e12;  // dense bf16, H100 SXM / H200 (DESIGN.md section 6)

// One double per rank, gathered on every rank.
std::vector<double> gather_scalar(Comm& comm, double value) {
  std::vector<double> all(size_t(comm.size()));
  comm.all_gather(&value, all.data(), 1, DType::kF64)->wait();
  return all;
}

double all_reduce_scalar(Comm& comm, double value, ReduceOp op) {
  comm.all_reduce(&value, 1, DType::kF64, op)->wait();
  return value;
}

void log_model_state(Comm& comm, const zero::Engine& engine) {
  const zero::ModelStateBytes b = engine.model_state_bytes();
  const std::vector<double> params = gather_scalar(comm, double(b.params));
  const std::vector<double> grads = gather_scalar(comm, double(b.grads));
  const std::vector<double> optimizer = gather_scalar(comm, double(b.optimizer));
  const int shown = std::min(comm.size(), 8);
  for (int r = 0; r < shown; ++r)
    log_info("rank ", r, " model state: params ", format_bytes(params[size_t(r)]), ", grads ",
             format_bytes(grads[size_t(r)]), ", optimizer ", format_bytes(optimizer[size_t(r)]),
             " (total ", format_bytes(params[size_t(r)] + grads[size_t(r)] + optimizer[size_t(r)]), ")");
  if (shown < comm.size()) log_info("(ranks ", shown, "..", comm.size() - 1, " hold the same up to padding)");
  if (b.host_optimizer > 0)
    log_info("offloaded to host memory per rank: optimizer ", format_bytes(double(b.host_optimizer)),
             " (fp32 master + Adam moments), ", format_bytes(double(b.host_buffers)),
             engine.delays_updates() ? " for two copies of the gradient shard (delayed update)"
                 : " for a copy of the gradient shard",
             b.host_params > 0 ? ", parameters " + format_bytes(double(b.host_params)) : std::string(),
             " (rank 0)");
}

// What checkpoint_dir/latest names now, for the message of a failed save.
std::string latest_note(const std::string& checkpoint_dir) {
  const fs::path latest = fs::path(checkpoint_dir) / "latest";
  try {
    const std::string dir = latest_checkpoint(checkpoint_dir, "checkpoint");
    if (dir.empty()) return "there is no " + latest.string() + " yet: no checkpoint of this run was saved";
    return latest.string() + " still names " + fs::path(dir).filename().string() + ", the last checkpoint saved";
  } catch (const std::exception& e) {
    return std::string("and ") + e.what();
  }
}

// Rank 0's report of a run a stop request ended: where its checkpoint is and how to resume it.
void log_stop(const TrainSection& t, int sig, int64_t step, const std::string& root) {
  log_info("interrupted by ", stop_signal_name(sig), " at step ", step, " of ", t.steps,
           ": checkpoint saved to ", (fs::path(root) / step_dir_name(step)).string(),
           t.checkpoint_dir.empty() ? " (train.checkpoint_dir is empty, so it went to <train.out_dir>/checkpoints)" : "",
           "; resume with --set train.checkpoint_dir=", root, " --set train.resume=auto",
           " (it continues ", t.out_dir, ")");
}

// train.max_skipped_steps consecutive skipped steps: what went wrong where, and what to try.
[[noreturn]] void throw_skipped_steps_error(const RunConfig& c, int64_t step, int64_t skips,
                                            const zero::StepStats& stats, double loss_scale) {
  const bool fp16 = c.train.precision == DType::kF16;
  std::string cause;
  if (stats.nonfinite_layer >= 0)
    cause = "the first layer with a non-finite gradient is layer " + std::to_string(stats.nonfinite_layer) +
            " (" + model::layer_name(c.model.shape, stats.nonfinite_layer) + ")";
  if (stats.loss_nonfinite)
    cause += cause.empty() ? "the loss is not finite (the gradients are)" : ", and the loss is not finite";
  throw_user_error(
      "step ", step, ": ", skips, " steps in a row skipped for non-finite values "
      "(train.max_skipped_steps = ", c.train.max_skipped_steps, "), so the run stops: ", cause,
      fp16 ? detail::concat("; the fp16 loss scale is now ", loss_scale) : std::string(),
      ". Try a lower optimizer.lr (now ", c.optimizer.lr, "), gradient clipping (optimizer.grad_clip, now ",
      c.optimizer.grad_clip, ")",
      fp16 ? ", other fp16 loss-scaling settings (fp16.initial_scale, fp16.min_scale, fp16.hysteresis) "
             "or train.precision = \"bf16\""
           : "",
      ", and check the data for bad samples; then resume from the last good checkpoint with "
      "train.resume = \"auto\" (train.max_skipped_steps = 0 never stops)");
}


// The model line's words for where a GPU run computes and how its ranks talk.
std::string gpu_placement_text(const CommSection& c, const Device& device, int ranks_sharing) {
  const std::string where = device.str() + " on rank 0";
  if (c.backend != "mpi") return "one GPU per rank (" + where + "), NCCL between them";
  return detail::concat(ranks_sharing > 1 ? detail::concat(ranks_sharing, " ranks per GPU (")
                                          : std::string("one GPU per rank ("),
                        where, "), collectives over MPI through host memory (comm.backend = "
                        "\"mpi\": slower than NCCL)");
}

// One number as printf formats it ("%.4f"), for log lines built with log_info's pieces.
std::string printf_text(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, value);
  return buf;
}

}  // namespace

std::string kept_blocks_hint(const RunConfig& c, int64_t peak, int64_t device_bytes) {
  const int64_t keep = c.model.keep_activations, n_layer = c.model.shape.n_layer;
  if (!c.model.activation_checkpointing || keep >= n_layer || device_bytes <= 0) return "";
  zero::EstimateInput in;
  apply_run_config(c, in);
  const int64_t per_block = zero::kept_block_bytes(in);
  const int64_t best = zero::max_keep_from_peak(peak, device_bytes, per_block, keep, n_layer);
  if (best <= keep) return "";
  return detail::concat("memory: the peak of ", format_bytes(double(peak)), " per GPU (of ",
                        format_bytes(double(device_bytes)),
                        ") leaves room for model.keep_activations = ", best, " (now ", keep, ")",
                        best == n_layer ? ", every block, as model.activation_checkpointing = false"
                                        : "",
                        ": each kept block skips its recompute for ",
                        format_bytes(double(per_block)),
                        " more (`zerotrain estimate --config RUN.toml --set model.keep_activations=",
                        best, "`)");
}

Device resolve_device(const TrainSection& t, const CommSection& c, int local_rank, int local_size) {
  const bool sixteen_bit = t.precision == DType::kBF16 || t.precision == DType::kF16;
  const int gpus = cuda_device_count();
  if (t.device == "cpu" || (t.device == "auto" && (gpus == 0 || !sixteen_bit))) {
    if (c.backend == "nccl")  // train.device = "cpu" with it is refused when the config is parsed
      throw_user_error("comm.backend = \"nccl\" needs GPUs, but train.device = \"auto\" chose the "
                       "CPU (", gpus == 0 ? "no GPU is visible" : "train.precision is not bf16 or fp16",
                       "): set train.device = \"cuda\", or comm.backend = \"auto\"");
    return Device::cpu();
  }
  if (!built_with_cuda())
    throw_user_error("train.device = \"cuda\", but this zerotrain was built without CUDA: rebuild "
                     "on a machine with the CUDA toolkit, or set train.device = \"cpu\"");
  if (gpus == 0)
    throw_user_error("train.device = \"cuda\", but no GPU is visible (check nvidia-smi and "
                     "CUDA_VISIBLE_DEVICES), or set train.device = \"cpu\"");
  if (!sixteen_bit)
    throw_user_error("train.precision = \"", dtype_name(t.precision), "\" runs on the CPU backend "
                     "only; on GPUs use \"bf16\" or \"fp16\" (or set train.device = \"cpu\")");
  if (local_size > gpus && c.backend != "mpi")
    throw_user_error(local_size, " ranks on this node but only ", gpus, " GPUs: NCCL needs one GPU "
                     "per rank, so start at most ", gpus, " ranks per node (mpirun -np / --map-by), "
                     "or set comm.backend = \"mpi\" to let ranks share GPUs (collectives through "
                     "host memory: slow, for debugging)");
  return Device::cuda(local_rank % gpus);
}

int ranks_on_gpu(int local_rank, int local_size, int gpus) {
  ZT_CHECK(gpus > 0 && local_rank >= 0 && local_rank < local_size, "ranks_on_gpu(", local_rank, ", ",
           local_size, ", ", gpus, ")");
  return local_size / gpus + (local_rank % gpus < local_size % gpus ? 1 : 0);
}

TrainSummary train(const RunConfig& given, Comm& comm, const TrainOptions& options) {
  const int rank = comm.rank(), world = comm.size();
  // The config of this launch: train.global_batch_size fixes the accumulation for this many ranks,
  // and model.keep_activations = "auto" becomes a count below. out_dir's config.toml keeps the
  // config as given, so it runs again on any number of ranks and GPUs.
  RunConfig config = with_rank_count(given, world);
  const TrainSection& t = config.train;
  const model::GptjConfig& shape = config.model.shape;
  const bool writer = options.write_outputs && rank == 0;
  if (t.threads > 0) omp_set_num_threads(int(t.threads));
  if (given.train.global_batch_size > 0)
    log_info("batch: train.global_batch_size = ", t.global_batch_size, " sequences per step = ",
             t.micro_batch_size, " (micro-batch) x ", t.grad_accum_steps, " (grad_accum_steps) x ",
             world, world == 1 ? " rank" : " ranks");

  TrainingData data(config, comm);  // HDF5 data is checked here, before anything is written
  // So is the checkpoint a resumed run continues from (note "trainer checkpoints").
  std::optional<ResumePoint> resume;
  run_agreed(comm, "finding the checkpoint to resume from", [&] { resume = find_resume_point(config, world); });

  // So are the weights a fresh run starts from (model.init_from): every rank opens them and later
  // reads only its own shard's ranges; rank 0 verifies a checkpoint's checksums.
  std::unique_ptr<model::WeightSource> init_weights;
  if (!config.model.init_from.empty() && !resume) {
    const std::string what = "model.init_from = \"" + config.model.init_from + "\"";
    run_agreed(comm, "opening model.init_from", [&] {
      init_weights = open_weights(config.model.init_from, what, rank == 0);
      zero::check_weight_shapes(init_weights->config(), shape, what + " (" + init_weights->describe() + ")");
    });
  }

  // Checked before anything is written: a device or precision the run cannot use is a config
  // error, and must not leave an out_dir behind that the corrected run would refuse to reuse.
  const Device device = resolve_device(t, config.comm, options.local_rank, options.local_size);
  // comm.backend = "mpi" lets ranks share a GPU: each rank's memory is then its share of it.
  const int ranks_sharing =
      device.is_cuda() ? ranks_on_gpu(options.local_rank, options.local_size, cuda_device_count()) : 1;
  // train.gemm_choices: read (or its tuning turned on) before anything is written.
  RunGemmChoices gemm_choices(t.gemm_choices, device, rank == 0);
  // The offloaded CPU AdamW runs on this rank's share of the host's cores, so ranks that share a
  // host (one per GPU) do not fight over them; train.threads still caps the count.
  if (config.zero.offload_optimizer == "cpu" && device.is_cuda()) {
    const int threads = optim::pin_threads_for_local_rank(options.local_rank, options.local_size);
    if (t.threads > 0 && t.threads < threads) omp_set_num_threads(int(t.threads));
    if (rank == 0)
      log_info("offload: the CPU AdamW of each rank runs on ", omp_get_max_threads(),
               " threads pinned to its share of the host's cores");
  }
  if (config.zero.delayed_update_from_step > 0 && rank == 0)
    log_info("offload: delayed parameter update from step ", config.zero.delayed_update_from_step,
             " (zero.delayed_update_from_step): each step's CPU AdamW runs while the next step "
             "computes on the parameters from before it; evaluations and checkpoint saves apply it "
             "first");

  const std::string resolved = writer ? config_to_toml(given) : std::string();  // for config.toml
  if (writer) log_info("resolved config:\n", resolved);

  // The backend: on the CPU the engine uses `comm` directly; on a GPU it gets a CUDA context
  // (stream, cuBLASLt) and an NcclComm bootstrapped over `comm`, or with comm.backend = "mpi" a
  // HostStagedComm that moves its buffers over `comm` through host memory.
#ifdef ZT_WITH_CUDA
  // Declared first so they outlive the model and engine that queue work on them.
  std::unique_ptr<CudaContext> cuda;
  std::unique_ptr<Comm> device_comm;
#endif
  // The estimated peak per GPU (launch/estimate.h), against the smallest GPU of the run (a rank's
  // share of it when ranks share GPUs), before anything large is allocated;
  // model.keep_activations = "auto" takes its count from it (0 on the CPU backend, whose memory
  // the estimate does not model).
  const bool keep_auto = config.model.keep_activations == kKeepActivationsAuto;
  int64_t gpu_bytes = 0;
#ifdef ZT_WITH_CUDA
  if (device.is_cuda()) gpu_bytes = int64_t(cuda_total_memory(device.index)) / ranks_sharing;
#endif
  gpu_bytes = int64_t(-all_reduce_scalar(comm, -double(gpu_bytes), ReduceOp::kMax));  // the minimum
  if (gpu_bytes > 0) {
    const RunMemory estimate = estimate_run_memory(config, world, gpu_bytes);
    config.model.keep_activations = estimate.keep;
    log_info("memory: estimated peak ", format_bytes(double(estimate.gpu_total)), " per GPU of ",
             format_bytes(double(gpu_bytes)),
             ranks_sharing > 1 ? detail::concat(" (1/", ranks_sharing, " of a GPU shared by ",
                                                ranks_sharing, " ranks)")
                               : std::string(),
             keep_auto ? detail::concat(", with model.keep_activations = \"auto\" keeping ", estimate.keep,
                                        " of ", shape.n_layer, " blocks' activations")
                       : std::string(),
             estimate.fits ? std::string()
                           : "; that is over the 95% the estimate allows, so the run may run out of "
                             "memory: see `zerotrain estimate --config RUN.toml` for a stage, offload "
                             "or micro-batch that fits");
  } else if (keep_auto) {
    config.model.keep_activations = 0;
    log_info("model.keep_activations = \"auto\": 0 on the CPU backend (every block is recomputed)");
  }
  model::ModelOptions model_options;
  model_options.activation_checkpointing = config.model.activation_checkpointing;
  model_options.keep_activations = config.model.keep_activations;
  std::unique_ptr<model::GptjModel> model;
  std::unique_ptr<zero::DeviceOps> device_ops;
  Comm* engine_comm = &comm;
#ifdef ZT_WITH_CUDA
  if (device.is_cuda()) {
    cuda = std::make_unique<CudaContext>(device.index);
    if (config.comm.backend == "mpi")
      device_comm = std::make_unique<HostStagedComm>(comm, device.index);
    else
      device_comm = std::make_unique<NcclComm>(comm, device.index, cuda->stream(), config.comm.timeout_s);
    engine_comm = device_comm.get();
    model_options.compute_dtype = t.precision;
    model = model::make_cuda_gptj(shape, model_options, *cuda);
    device_ops = zero::make_cuda_device_ops(*cuda);
  }
#endif
  if (!model) model = model::make_cpu_gptj(shape, model_options);

  zero::EngineOptions engine_options;
  engine_options.param_dtype = t.precision;
  engine_options.stage = int(config.zero.stage);
  engine_options.bucket_elements = config.zero.bucket_elements;
  engine_options.optimizer = config.optimizer;
  engine_options.loss_scaler = config.fp16;
  engine_options.total_steps = t.steps;
  engine_options.offload_optimizer = config.zero.offload_optimizer == "cpu";
  engine_options.offload_params = config.zero.offload_params == "cpu";
  engine_options.delayed_update_from = config.zero.delayed_update_from_step;
  engine_options.seed = uint64_t(t.seed);
  // A checkpoint or model.init_from sets every value below: computing the random init is wasted.
  engine_options.init_values = !resume && !init_weights;
  zero::Engine engine(shape, engine_options, *engine_comm, std::move(device_ops));

  TrainSummary summary;
  summary.num_params = engine.num_params();
  summary.loss_floor = data.loss_floor();

  const int64_t b = t.micro_batch_size, seq = t.seq_len, accum = t.grad_accum_steps;
  const int64_t samples_per_step = b * accum * world;
  const int64_t tokens_per_step = samples_per_step * seq;
  const double flops_per_token = model::gptj_flops_per_token(shape, seq);
  log_info("model gptj (", config.model.preset, " shapes): ", summary.num_params, " parameters, ",
           shape.n_layer, " layers, d_model ", shape.d_model, "; precision ", dtype_name(t.precision),
           "; activation checkpointing ",
           model::describe_checkpointing(config.model.activation_checkpointing,
                                         config.model.keep_activations),
           "; ", device.is_cuda() ? gpu_placement_text(config.comm, device, ranks_sharing)
                                  : "device cpu (" + std::to_string(omp_get_max_threads()) + " threads per rank)");
  log_info("world size ", world, ", zero stage ", config.zero.stage, ", ",
           engine.layout().buckets.size(), " buckets of up to ", config.zero.bucket_elements,
           " parameters");
  log_model_state(comm, engine);
  // The GPUs the ranks run on (MFU and throughput are per GPU): each rank counts for its share
  // of its GPU, so ranks that share one (comm.backend = "mpi") add up to 1.
  const int gpus_in_use =
      device.is_cuda()
          ? int(std::lround(all_reduce_scalar(comm, 1.0 / ranks_sharing, ReduceOp::kSum)))
          : 0;
  int64_t first_step = 1;
  if (resume) {
    const Timer load_timer;
    const zero::CheckpointMeta meta = zero::load_checkpoint(engine, *engine_comm, resume->dir);
    ZT_CHECK(meta.step == resume->step, "checkpoint ", resume->dir, " changed while loading it");
    if (resume->data_state) data.resume_from(*resume->data_state);
    first_step = meta.step + 1;
    log_info("resumed from ", resume->dir, " at step ", meta.step, " (in ",
             printf_text("%.2f s", load_timer.seconds()), "); continuing with step ", first_step,
             " of ", t.steps);
  }
  if (init_weights) {
    const Timer load_timer;
    zero::load_weights(engine, *engine_comm, *init_weights);
    log_info("initialised from ", init_weights->describe(), " (in ",
             printf_text("%.2f s", load_timer.seconds()), ")");
  } else if (resume && !config.model.init_from.empty()) {
    log_info("model.init_from is not used: the run continues from its checkpoint");
  }
  // Only now, with the state loaded, does the run write to out_dir: a checkpoint refused while
  // loading (a checksum, a shape), a device or memory failure, must leave an out_dir it would
  // continue (its metrics past the checkpoint, its config.toml) as it was.
  std::optional<MetricsWriter> metrics;
  run_agreed(comm, "opening the run's outputs", [&] {
    if (writer)
      metrics.emplace(open_run_outputs(t, resolved, resume ? std::optional<int64_t>(resume->step)
                                                           : std::nullopt));
  });
  summary.first_step = first_step;
  data.start();
  // Mean loss over every token of the eval batches of all ranks: loss sums and counts are
  // all-reduced, so the result does not depend on how the batches are split across ranks.
  // Each batch's loss is read once the next one is queued, so the GPU never waits for the host.
  auto evaluate = [&]() {
    engine.finish_update();  // evaluate the parameters the steps so far made, not one step older
    double sums[2] = {0.0, 0.0};
    std::optional<model::LossTicket> queued;
    auto add = [&](model::LossTicket ticket) {
      const model::LossSum l = model->collect(ticket);
      sums[0] += l.sum;
      sums[1] += double(l.count);
    };
    for (const datasets::MicroBatch& mb : data.eval_batches()) {
      const model::Batch batch{mb.inputs.data(), mb.targets.data(), mb.batch_size, mb.seq_len};
      const model::LossTicket next = model->queue_forward(batch, engine);
      if (queued) add(*queued);
      queued = next;
    }
    if (queued) add(*queued);
    comm.all_reduce(sums, 2, DType::kF64, ReduceOp::kSum)->wait();
    return sums[1] > 0 ? sums[0] / sums[1] : NAN;
  };

  // Saves step `step` to <root>/step-NNNNNNNN (collective), then rank 0 moves `latest` to it and
  // deletes old ones. A save that fails does so on every rank (save_checkpoint and run_agreed
  // agree) and leaves the previous checkpoint and `latest` as they were. Then, with
  // `may_continue` and train.on_checkpoint_error = "continue", it warns and returns false;
  // otherwise it throws zt::UserError.
  const bool overwrite_checkpoints = resume.has_value() || t.overwrite;
  auto save = [&](int64_t step, const std::string& root, bool may_continue) {
    const Timer save_timer;
    zero::CheckpointMeta meta;
    meta.step = step;
    meta.extra = checkpoint_fingerprint(config, world);
    meta.extra.merge(checkpoint_settings(config));
    if (const std::optional<datasets::SamplerState> s = data.state()) {
      meta.extra["data.seed"] = std::to_string(s->seed);
      meta.extra["data.epoch"] = std::to_string(s->epoch);
      meta.extra["data.position"] = std::to_string(s->position);
      meta.extra["data.num_samples"] = std::to_string(s->num_samples);
    }
    const std::string name = step_dir_name(step);
    const fs::path dir = fs::path(root) / name;
    zero::SaveOptions save_options;
    save_options.overwrite = overwrite_checkpoints;
    if (options.checkpoint_fault_hook)
      save_options.fault_hook = [&, step](std::string_view point) { options.checkpoint_fault_hook(step, point); };
    try {
      zero::save_checkpoint(engine, *engine_comm, dir.string(), meta, save_options);
      run_agreed(comm, "updating the latest checkpoint", [&] {
        if (rank != 0) return;
        if (metrics) metrics->sync();  // the lines up to `step` outlive a power loss, as the checkpoint does
        publish_latest(root, name);
        prune_checkpoints(root, t.keep_last, step, name);
      });
    } catch (const std::exception& e) {
      const std::string failure = "checkpoint: saving step " + std::to_string(step) + " to " +
                                  dir.string() + " failed: " + e.what() + "; " + latest_note(root);
      if (!may_continue)
        throw_user_error(failure, ". Free disk space or fix the folder's permissions (train.checkpoint_dir)");
      if (t.on_checkpoint_error == "continue") {
        log_warn(failure, ". Training goes on (train.on_checkpoint_error = \"continue\"); free disk "
                 "space or fix the folder's permissions before the next save");
        return false;
      }
      throw_user_error(failure, ". The run stops (train.on_checkpoint_error = \"stop\"): free disk "
                       "space or fix the folder's permissions, then resume with train.resume = \"auto\"; "
                       "or set train.on_checkpoint_error = \"continue\" to train on when a save fails");
    }
    log_info("checkpoint: step ", step, " saved to ", dir.string(), " in ",
             printf_text("%.2f s", save_timer.seconds()));
    return true;
  };
  // Where a stop request saves: train.checkpoint_dir, else a folder in out_dir.
  const std::string stop_root =
      t.checkpoint_dir.empty() ? (fs::path(t.out_dir) / "checkpoints").string() : t.checkpoint_dir;
  int64_t consecutive_skips = 0;

  if (t.eval_at_start && first_step == 1) {
    summary.start_val_loss = evaluate();
    log_info(format_eval_line(0, t.steps, summary.start_val_loss), " (before training)");
    if (metrics) metrics->write_eval(0, summary.start_val_loss);
  }

  ProgressLine progress;
  Timer run_timer;
  std::vector<model::LossTicket> loss_tickets;
  for (int64_t step = first_step; step <= t.steps; ++step) {
    Timer step_timer;
    engine.zero_grads();
    const Timer fwd_bwd_timer;
    // Queue every micro-batch, then read the losses once: no host wait between micro-batches.
    loss_tickets.clear();
    for (int64_t micro = 0; micro < accum; ++micro) {
      const model::Batch batch = data.next_micro_batch(step, micro);
      engine.set_last_micro_step(micro == accum - 1);
      loss_tickets.push_back(
          model->queue_forward_backward(batch, engine, engine.micro_grad_scale(accum)));
    }
    double loss_sum = 0.0;
    for (const model::LossTicket& ticket : loss_tickets) loss_sum += model->collect(ticket).mean();
    const double fwd_bwd_s = fwd_bwd_timer.seconds();
    if (options.before_optimizer_step) options.before_optimizer_step(step, engine);
    StepMetrics m;
    m.step = step;
    // Before the step: a non-finite loss on any rank makes the sum non-finite on every rank, so
    // the ranks agree to skip the step without another collective.
    m.loss = all_reduce_scalar(comm, loss_sum / double(accum), ReduceOp::kSum) / double(world);
    const zero::StepStats stats = engine.step(std::isfinite(m.loss));

    m.lr = stats.lr;
    m.grad_norm = stats.grad_norm;
    m.tokens_per_s = double(tokens_per_step) / step_timer.seconds();
    m.elapsed_s = run_timer.seconds();
    m.skipped = stats.skipped;
    m.fwd_bwd_s = fwd_bwd_s;
    m.optimizer_s = stats.optimizer_s;
    m.comm_s = stats.comm_s;
    if (engine.offloaded()) {
      m.offload_d2h_wait_s = stats.offload_download_wait_s;
      m.offload_cpu_adam_s = stats.offload_cpu_adam_s;
      m.offload_h2d_wait_s = stats.offload_upload_wait_s;
      m.peak_host_mem_bytes = int64_t(all_reduce_scalar(
          comm, double(MemoryTracker::of(Device::cpu()).stats().peak_total), ReduceOp::kMax));
    }
    // Peak bytes of the rank that peaked highest, on the compute device.
    m.peak_mem_bytes = int64_t(all_reduce_scalar(
        comm, double(MemoryTracker::of(device).stats().peak_total), ReduceOp::kMax));
    // MFU per GPU with the 6N + 12 L d T convention against the dense bf16 peak (GPU runs only).
    if (device.is_cuda()) m.mfu = m.tokens_per_s / gpus_in_use * flops_per_token / kPeakFlops;
    const bool eval_step = t.eval_every > 0 && (step % t.eval_every == 0 || step == t.steps);
    if (eval_step) {
      m.val_loss = evaluate();
      m.val_ppl = std::exp(m.val_loss);
    }
    if (metrics) metrics->write(m);
    summary.steps.push_back(m);
    if (step % t.log_every == 0 || step == t.steps || step == 1 || eval_step) {
      progress.clear();
      log_info(format_step_line(m, t.steps));
    } else if (rank == 0) {
      progress.update(m, t.steps);
    }
    gemm_choices.after_step();
#ifdef ZT_WITH_CUDA
    if (device.is_cuda() && step == first_step) {
      const std::string hint =
          kept_blocks_hint(config, m.peak_mem_bytes, gpu_bytes);
      if (!hint.empty()) log_info(hint);
    }
#endif
    consecutive_skips = stats.skipped ? consecutive_skips + 1 : 0;
    if (t.max_skipped_steps > 0 && consecutive_skips >= t.max_skipped_steps) {
      progress.clear();
      throw_skipped_steps_error(config, step, consecutive_skips, stats, engine.loss_scale());
    }
    bool saved = false;
    if (!t.checkpoint_dir.empty() && ((t.save_every > 0 && step % t.save_every == 0) || step == t.steps)) {
      progress.clear();
      saved = save(step, t.checkpoint_dir, true);
    }
    // A stop request on any rank (launch/signals.h) stops every rank after this step. Agreed once
    // per step: one double. The last step ends the run anyway.
    if (step < t.steps) {
      const int stop = int(all_reduce_scalar(comm, double(stop_signal()), ReduceOp::kMax));
      if (stop != 0) {
        progress.clear();
        if (!(saved && stop_root == t.checkpoint_dir)) save(step, stop_root, false);
        summary.stopped_at_step = step;
        summary.stop_checkpoint = (fs::path(stop_root) / step_dir_name(step)).string();
        log_stop(t, stop, step, stop_root);
        break;
      }
    }
  }
  progress.clear();
  engine.finish_update();  // the last step's delayed update: the run ends with it applied
  if (options.collect_final_params) summary.final_params = engine.gather_master_values();
  if (const std::optional<datasets::SamplerState> state = data.state()) summary.data_state = *state;
  const StepMetrics& last = summary.steps.back();
  log_info(summary.interrupted() ? "stopped: " : "done: ",
           first_step > 1 ? "steps " + std::to_string(first_step) + ".." : std::string(),
           first_step > 1 ? std::to_string(last.step) : std::to_string(last.step) + " steps", " in ",
           printf_text("%.1f s", run_timer.seconds()), "; loss ",
           printf_text("%.4f", summary.steps.front().loss), " -> ", printf_text("%.4f", last.loss),
           engine.skipped_steps() > 0 ? "; skipped steps: " : "",
           engine.skipped_steps() > 0 ? std::to_string(engine.skipped_steps()) : "",
           writer ? "; metrics in " + (fs::path(t.out_dir) / "metrics.jsonl").string() : "");
  if (const std::string line = format_throughput_line(summary.steps, world, gpus_in_use); !line.empty())
    log_info(line);
  return summary;
}

}  // namespace zt::launch
