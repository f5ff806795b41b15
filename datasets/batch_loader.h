// BatchLoader: this rank's training micro-batches from a token dataset in the order of note
// "sample order" (sampler.h), read ahead on a background thread; and the fixed validation
// batches.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "datasets/prefetch.h"
#include "datasets/sampler.h"
#include "datasets/token_dataset.h"

namespace zt::datasets {

// One micro-batch of one rank: rows of seq_len inputs and the targets shifted by one.
struct MicroBatch {
  int64_t step = 0;   // 1-based optimizer step
  int64_t micro = 0;  // 0-based micro-batch within the step
  int64_t batch_size = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> inputs;   // [batch_size, seq_len]
  std::vector<int32_t> targets;  // [batch_size, seq_len]
  std::vector<int64_t> samples;  // [batch_size] the sample index of each row
};

// Reads micro-batch `micro` of the step that starts at global position `step_start` for the
// layout's rank (synchronously).
MicroBatch read_micro_batch(const TokenDataset& dataset, const Sampler& sampler, const BatchLayout& layout,
                            int64_t seq_len, int64_t step_start, int64_t step, int64_t micro);

class BatchLoader {
 public:
  // Starts at `start` (a fresh run: {seed, 0, 0, 0}; a resumed run: the saved state). A state
  // whose num_samples differs from the dataset's is a zt::UserError (the dataset or
  // train.seq_len changed since it was saved). `prefetch_steps` optimizer steps are read ahead.
  BatchLoader(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len, const BatchLayout& layout,
              const SamplerState& start, int prefetch_steps = 2);
  ~BatchLoader();

  // The next micro-batch: micro 0..grad_accum_steps-1 of the next step, then the next step.
  MicroBatch next();
  // The state after the last step whose micro-batches next() has all returned.
  SamplerState state() const;
  int64_t num_samples() const { return num_samples_; }

 private:
  std::shared_ptr<const TokenDataset> dataset_;
  int64_t seq_len_;
  BatchLayout layout_;
  SamplerState start_;
  int64_t num_samples_;
  int64_t returned_ = 0;  // micro-batches handed out
  std::unique_ptr<Prefetcher<MicroBatch>> prefetcher_;
};

// The validation batches of this rank: batch j holds the val split's samples at positions
// [j * world * b, (j + 1) * world * b) in order (no shuffle; wrapping around when the split has
// fewer samples), rank r taking rows [r b, (r + 1) b). The same every evaluation, so val losses
// of a run are comparable.
std::vector<MicroBatch> read_eval_batches(const TokenDataset& val, int64_t seq_len, int64_t micro_batch_size,
                                          int64_t world, int64_t rank, int64_t num_batches);

}  // namespace zt::datasets
