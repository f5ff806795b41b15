// TrainingData: a run's data source for train() (the synthetic corpus or a prepared HDF5 token
// dataset): this rank's micro-batches of each step, the fixed eval batches and the data log lines.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "datasets/batch_loader.h"
#include "datasets/sampler.h"
#include "datasets/synthetic.h"
#include "launch/config.h"
#include "model/gptj.h"
#include "runtime/comm.h"

namespace zt::launch {

class TrainingData {
 public:
  // HDF5 data is checked here, before anything is written or allocated: every rank opens its
  // splits (cheap checks); rank 0 alone reads every shard for the checksums and loads
  // data.tokenizer. A problem on any rank throws zt::UserError on every rank (one collective, so
  // none hangs). The synthetic corpus needs no check. `config` must outlive this object.
  TrainingData(const RunConfig& config, Comm& comm);

  // A resumed run: HDF5 data starts its loader at `state` (a saved state()) instead of at the
  // beginning of the sample order. Call before start(). The synthetic corpus needs nothing (its
  // batches are a pure function of the step), so it ignores the call.
  void resume_from(const datasets::SamplerState& state) { resume_state_ = state; }

  // Starts the HDF5 read-ahead, reads or generates the eval batches and logs the "data:" and
  // "eval:" lines. train() calls it once, after the model lines of the log.
  void start();

  // Micro-batch `micro` of optimizer step `step` (1-based) for this rank: views into buffers
  // owned here, valid until the next call. Calls must come in order (HDF5 data is read ahead).
  model::Batch next_micro_batch(int64_t step, int64_t micro);
  // This rank's validation batches, the same every evaluation (empty when train.eval_every = 0).
  const std::vector<datasets::MicroBatch>& eval_batches() const { return eval_batches_; }
  // The best possible loss (nats/token): the synthetic corpus's entropy rate; 0 for HDF5 data.
  double loss_floor() const { return hdf5_ ? 0.0 : corpus_.entropy_rate(); }
  // HDF5 data: the sampler state after the last step whose micro-batches were all returned.
  std::optional<datasets::SamplerState> state() const;

 private:
  const RunConfig& config_;
  const int rank_, world_;
  const bool hdf5_;
  const datasets::SyntheticCorpus corpus_;
  datasets::Manifest manifest_;
  std::shared_ptr<const datasets::TokenDataset> train_, val_;
  std::unique_ptr<datasets::BatchLoader> loader_;
  std::vector<datasets::MicroBatch> eval_batches_;
  std::optional<datasets::SamplerState> resume_state_;  // where HDF5 data starts (resumed runs)
  datasets::MicroBatch loaded_;                   // the HDF5 micro-batch last returned
  std::vector<int32_t> sample_, inputs_, targets_;  // synthetic: [seq + 1], [b, seq], [b, seq]
};

}  // namespace zt::launch
