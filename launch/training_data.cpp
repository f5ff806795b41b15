// TrainingData: the HDF5 check, the BatchLoader or synthetic-corpus micro-batches, the eval
// batches and the data log lines of a training run.
#include "launch/training_data.h"

#include <algorithm>
#include <string>
#include <utility>

#include "datasets/bpe_tokenizer.h"
#include "datasets/token_dataset.h"
#include "runtime/agreed.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace zt::launch {

TrainingData::TrainingData(const RunConfig& config, Comm& comm)
    : config_(config),
      rank_(comm.rank()),
      world_(comm.size()),
      hdf5_(config.data.source == "hdf5"),
      corpus_(config.model.shape.vocab_size, uint64_t(config.train.seed)) {
  if (!hdf5_) return;
  run_agreed(comm, "the dataset check", [&] {
    datasets::DatasetRequirements req;
    req.model_vocab_size = config.model.shape.vocab_size;
    req.seq_len = config.train.seq_len;
    req.need_val = config.train.eval_every > 0;
    req.verify_checksums = config.data.verify && rank_ == 0;
    if (!config.data.tokenizer.empty() && rank_ == 0) {
      req.tokenizer_id = datasets::BpeTokenizer::load(config.data.tokenizer).id();
      req.tokenizer_source = config.data.tokenizer;
    }
    if (rank_ == 0)
      log_info("data: checking ", config.data.path,
               config.data.verify ? " (reading every shard once for its checksum)" : "");
    manifest_ = datasets::check_dataset(config.data.path, req);
    train_ = datasets::TokenDataset::open(config.data.path, datasets::Split::kTrain);
    if (req.need_val) val_ = datasets::TokenDataset::open(config.data.path, datasets::Split::kVal);
  });
}

void TrainingData::start() {
  const TrainSection& t = config_.train;
  const int64_t b = t.micro_batch_size, seq = t.seq_len, accum = t.grad_accum_steps;
  const int64_t samples_per_step = b * accum * world_;
  const int64_t tokens_per_step = samples_per_step * seq;
  // HDF5 data: this rank's micro-batches in the global sample order (datasets/sampler.h), read
  // ahead on a background thread.
  if (hdf5_) {
    const datasets::BatchLayout layout{b, accum, world_, rank_};
    const datasets::SamplerState start = resume_state_ ? *resume_state_ : datasets::SamplerState{uint64_t(t.seed)};
    loader_ = std::make_unique<datasets::BatchLoader>(train_, seq, layout, start);
    const int64_t samples = loader_->num_samples();
    log_info("data: ", config_.data.path, ": ", manifest_.tokens(datasets::Split::kTrain), " train tokens in ",
             manifest_.train.size(), " shards (", manifest_.tokenizer, ", vocab ", manifest_.vocab_size, "); ",
             samples, " samples of ", seq + 1, " tokens per epoch = ", double(samples) / double(samples_per_step),
             " steps; ", tokens_per_step, " tokens per step = ", world_, " ranks x ", accum, " micro-batches x ", b,
             " sequences x ", seq, " tokens");
    if (samples < samples_per_step)
      log_warn("data: the train split holds ", samples, " samples, fewer than one step's ",
               samples_per_step, ": every step repeats some of them (the epoch wraps inside the "
               "step). Prepare more data, or lower train.seq_len or the global batch");
    if (resume_state_)
      log_info("data: resuming the sample order at position ", start.position, " (epoch ", start.epoch,
               ", seed ", start.seed, ")");
  } else {
    log_info("data: synthetic Markov corpus over ", config_.model.shape.vocab_size, " tokens (best possible loss ~",
             loss_floor(), " nats/token); ", tokens_per_step, " tokens per step = ", world_, " ranks x ", accum,
             " micro-batches x ", b, " sequences x ", seq, " tokens");
    sample_.resize(size_t(seq + 1));
    inputs_.resize(size_t(b * seq));
    targets_.resize(size_t(b * seq));
  }

  // Validation batches, read once: the val split of the dataset, or for the synthetic corpus
  // walks of sample indices far past any the run trains on.
  if (t.eval_every > 0) {
    if (hdf5_) {
      eval_batches_ = datasets::read_eval_batches(*val_, seq, b, world_, rank_, t.eval_batches);
    } else {
      constexpr uint64_t kHeldOut = uint64_t(1) << 62;
      std::vector<int32_t> walk(size_t(seq + 1));
      for (int64_t j = 0; j < t.eval_batches; ++j) {
        datasets::MicroBatch mb;
        mb.batch_size = b;
        mb.seq_len = seq;
        for (int64_t row = 0; row < b; ++row) {
          corpus_.sample(kHeldOut + uint64_t((j * world_ + rank_) * b + row), seq + 1, walk.data());
          mb.inputs.insert(mb.inputs.end(), walk.begin(), walk.end() - 1);
          mb.targets.insert(mb.targets.end(), walk.begin() + 1, walk.end());
        }
        eval_batches_.push_back(std::move(mb));
      }
    }
    log_info("eval: every ", t.eval_every, " steps, ", t.eval_batches, " batches of ", b * world_, " sequences (",
             hdf5_ ? "the dataset's val split" : "held-out synthetic samples", ")");
  }
}

model::Batch TrainingData::next_micro_batch(int64_t step, int64_t micro) {
  const int64_t b = config_.train.micro_batch_size, seq = config_.train.seq_len;
  // The step's samples are [(step-1) G, step G) with G = world * accum * b, split so that the
  // same global batch gives the same samples whatever the world size and accumulation.
  // HDF5 data follows the same split (datasets/sampler.h, note "sample order").
  if (loader_) {
    loaded_ = loader_->next();
    return model::Batch{loaded_.inputs.data(), loaded_.targets.data(), b, seq};
  }
  const int64_t samples_per_step = b * config_.train.grad_accum_steps * world_;
  const int64_t first = (step - 1) * samples_per_step + (micro * world_ + rank_) * b;
  for (int64_t row = 0; row < b; ++row) {
    corpus_.sample(uint64_t(first + row), seq + 1, sample_.data());
    std::copy(sample_.begin(), sample_.end() - 1, inputs_.begin() + row * seq);
    std::copy(sample_.begin() + 1, sample_.end(), targets_.begin() + row * seq);
  }
  return model::Batch{inputs_.data(), targets_.data(), b, seq};
}

std::optional<datasets::SamplerState> TrainingData::state() const {
  if (!loader_) return std::nullopt;
  return loader_->state();
}

}  // namespace zt::launch
