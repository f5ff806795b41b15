// The training loop: builds model, engine and data from a RunConfig and runs the steps on every
// rank of a Comm (data parallel: each rank its own samples, the engine keeps ranks in step).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "datasets/sampler.h"
#include "launch/config.h"
#include "launch/metrics.h"
#include "runtime/comm.h"

namespace zt::zero {
class Engine;
}

namespace zt::launch {

struct TrainSummary {
  std::vector<StepMetrics> steps;  // every step run, in order (the same on every rank)
  double start_val_loss = NAN;     // train.eval_at_start: the val loss before step 1
  int64_t first_step = 1;          // the first step run: 1, or the resumed checkpoint's step + 1
  int64_t num_params = 0;
  double loss_floor = 0.0;         // the synthetic corpus's entropy rate (nats/token); 0 for hdf5
  // HDF5 data: the sampler state after the last step (to continue the sample sequence exactly).
  datasets::SamplerState data_state;
  std::vector<float> final_params; // fp32 master values in forward order, when asked for
  // A stop request (SIGTERM / SIGINT, launch/signals.h) ended the run early: the last step run,
  // saved to stop_checkpoint (a step folder; `latest` in its parent names it). 0: the run reached
  // train.steps.
  int64_t stopped_at_step = 0;
  std::string stop_checkpoint;
  bool interrupted() const { return stopped_at_step > 0; }
};

struct TrainOptions {
  int local_rank = 0;                 // this rank among the ranks of its node: its GPU index
  int local_size = 1;
  bool write_outputs = true;          // rank 0 writes config.toml and metrics.jsonl to out_dir
  bool collect_final_params = false;  // fill TrainSummary::final_params (collective)
  // Called on every rank after each step's backward, right before the optimizer step (tests use
  // it to inject faults).
  std::function<void(int64_t step, zero::Engine& engine)> before_optimizer_step;
  // Tests: passed to zero::SaveOptions::fault_hook of every checkpoint save (with the step being
  // saved), so a test can make a save fail midway as a full or read-only disk would.
  std::function<void(int64_t step, std::string_view point)> checkpoint_fault_hook;
};

// Where train.device sends this run: cpu or this rank's GPU (local rank r on GPU r % GPUs). Throws
// zt::UserError when cuda is asked for and cannot be had (no CUDA build or GPU, fp32 precision,
// more ranks than GPUs without comm.backend = "mpi"), or comm.backend = "nccl" without a GPU.
Device resolve_device(const TrainSection& train, const CommSection& comm, int local_rank,
                      int local_size);
// How many of a node's `local_size` ranks share local rank `local_rank`'s GPU when ranks take the
// node's `gpus` GPUs round-robin (as resolve_device places them): 1 with one rank per GPU.
int ranks_on_gpu(int local_rank, int local_size, int gpus);

// The line a checkpointed GPU run logs after its first step when its measured peak (bytes per
// GPU) leaves room on a device of `device_bytes` for more blocks of model.keep_activations; ""
// when there is none, checkpointing is off, every block is kept, or device_bytes is unknown (0).
std::string kept_blocks_hint(const RunConfig& config, int64_t peak, int64_t device_bytes);

// Checkpoints (note "trainer checkpoints" in trainer.cpp): with train.checkpoint_dir set, every
// train.save_every steps and after the last one the run saves <checkpoint_dir>/step-NNNNNNNN and
// then points <checkpoint_dir>/latest at it, keeping train.keep_last step folders. With
// train.resume ("auto" or a checkpoint folder) it loads the checkpoint, continues the data where
// it stopped and runs steps k + 1 .. train.steps: the same losses and parameters as a run that
// never stopped. A resumed run continues its own out_dir (launch/run_outputs.h).
//
// Faults (issue 8):
// - A stop request (launch/signals.h; on any rank) is read after every step; the ranks agree on it
//   and all stop after the same step k: a checkpoint of step k is saved (to train.checkpoint_dir,
//   or <out_dir>/checkpoints when that is empty), `latest` names it, rank 0 logs how to resume,
//   and train() returns with TrainSummary::stopped_at_step = k.
// - A failed save leaves the previous checkpoint and `latest` as they were; then
//   train.on_checkpoint_error = "stop" throws zt::UserError saying why and what `latest` names,
//   "continue" warns and trains on. A save for a stop request that fails always throws.
// - A step whose loss or gradients are not finite on some rank is skipped on every rank (no
//   parameter or optimizer state changes); train.max_skipped_steps consecutive skipped steps
//   (fp16 loss-scaler skips included) throw zt::UserError naming the step and the first layer
//   whose gradients were non-finite.
//
// Runs the job on every rank of `comm` (a host Comm over all ranks; on GPUs the engine talks
// over an NcclComm built from it): rank 0 prints the resolved config, writes
// <out_dir>/config.toml and <out_dir>/metrics.jsonl and logs every train.log_every steps (and the
// first and last). Returns the metrics.
TrainSummary train(const RunConfig& config, Comm& comm, const TrainOptions& options = {});

}  // namespace zt::launch
