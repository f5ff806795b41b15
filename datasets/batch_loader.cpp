// Training micro-batches in sampler order, read ahead by a Prefetcher; validation batches.
#include "datasets/batch_loader.h"

#include <algorithm>

#include "runtime/error.h"

namespace zt::datasets {

namespace {

// Splits each (seq_len + 1)-token sample into its inputs and targets rows.
void fill_row(MicroBatch& mb, int64_t row, const std::vector<int32_t>& sample) {
  const int64_t t = mb.seq_len;
  std::copy(sample.begin(), sample.begin() + t, mb.inputs.begin() + row * t);
  std::copy(sample.begin() + 1, sample.begin() + t + 1, mb.targets.begin() + row * t);
}

MicroBatch empty_batch(int64_t b, int64_t seq_len) {
  MicroBatch mb;
  mb.batch_size = b;
  mb.seq_len = seq_len;
  mb.inputs.resize(size_t(b * seq_len));
  mb.targets.resize(size_t(b * seq_len));
  mb.samples.resize(size_t(b));
  return mb;
}

}  // namespace

MicroBatch read_micro_batch(const TokenDataset& dataset, const Sampler& sampler, const BatchLayout& layout,
                            int64_t seq_len, int64_t step_start, int64_t step, int64_t micro) {
  MicroBatch mb = empty_batch(layout.micro_batch_size, seq_len);
  mb.step = step;
  mb.micro = micro;
  std::vector<int32_t> sample(size_t(seq_len + 1));
  for (int64_t row = 0; row < layout.micro_batch_size; ++row) {
    const int64_t index = sampler.sample_at(layout.position(step_start, micro, row));
    dataset.read_sample(index, seq_len, sample.data());
    mb.samples[size_t(row)] = index;
    fill_row(mb, row, sample);
  }
  return mb;
}

BatchLoader::BatchLoader(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len, const BatchLayout& layout,
                         const SamplerState& start, int prefetch_steps)
    : dataset_(std::move(dataset)), seq_len_(seq_len), layout_(layout), start_(start) {
  ZT_CHECK(dataset_ != nullptr, "no dataset");
  ZT_CHECK(layout.micro_batch_size >= 1 && layout.grad_accum_steps >= 1 && layout.world >= 1 &&
               layout.rank >= 0 && layout.rank < layout.world,
           "bad batch layout");
  ZT_CHECK(start.position >= 0, "negative sampler position");
  num_samples_ = dataset_->num_samples(seq_len);
  if (num_samples_ == 0)
    throw_user_error(dataset_->dir(), ": the ", split_name(dataset_->split()), " split holds ", dataset_->num_tokens(),
                     " tokens, fewer than one sample of train.seq_len + 1 = ", seq_len + 1, " tokens");
  if (start.num_samples != 0 && start.num_samples != num_samples_)
    throw_user_error("the saved sampler state counts ", start.num_samples, " samples per epoch, but ",
                     dataset_->dir(), " now gives ", num_samples_, " at train.seq_len = ", seq_len,
                     ": the dataset or train.seq_len changed since the state was saved; resume with the "
                     "same data and seq_len");
  start_.num_samples = num_samples_;
  // The producer owns its own Sampler (a Sampler is used by one thread) and computes every
  // position from the micro-batch counter alone.
  const int64_t accum = layout.grad_accum_steps, global = layout.global_batch();
  const int64_t first_position = start.position;
  const int64_t first_step = start.position / std::max<int64_t>(1, global) + 1;
  auto sampler = std::make_shared<Sampler>(num_samples_, start.seed);
  std::shared_ptr<const TokenDataset> ds = dataset_;
  const BatchLayout lay = layout_;
  const int64_t seq = seq_len_;
  prefetcher_ = std::make_unique<Prefetcher<MicroBatch>>(
      [=](int64_t i) {
        const int64_t step_offset = i / accum, micro = i % accum;
        return read_micro_batch(*ds, *sampler, lay, seq, first_position + step_offset * global,
                                first_step + step_offset, micro);
      },
      size_t(std::max(1, prefetch_steps)) * size_t(accum));
}

BatchLoader::~BatchLoader() = default;

MicroBatch BatchLoader::next() {
  MicroBatch mb = prefetcher_->next();
  ++returned_;
  return mb;
}

SamplerState BatchLoader::state() const {
  const int64_t steps_done = returned_ / layout_.grad_accum_steps;
  const int64_t position = start_.position + steps_done * layout_.global_batch();
  return SamplerState{start_.seed, position / num_samples_, position, num_samples_};
}

std::vector<MicroBatch> read_eval_batches(const TokenDataset& val, int64_t seq_len, int64_t micro_batch_size,
                                          int64_t world, int64_t rank, int64_t num_batches) {
  const int64_t n = val.num_samples(seq_len);
  if (n == 0)
    throw_user_error(val.dir(), ": the val split holds ", val.num_tokens(), " tokens, fewer than one sample of "
                     "train.seq_len + 1 = ", seq_len + 1, " tokens");
  std::vector<MicroBatch> out;
  std::vector<int32_t> sample(size_t(seq_len + 1));
  for (int64_t j = 0; j < num_batches; ++j) {
    MicroBatch mb = empty_batch(micro_batch_size, seq_len);
    mb.step = j;
    for (int64_t row = 0; row < micro_batch_size; ++row) {
      const int64_t index = ((j * world + rank) * micro_batch_size + row) % n;
      val.read_sample(index, seq_len, sample.data());
      mb.samples[size_t(row)] = index;
      fill_row(mb, row, sample);
    }
    out.push_back(std::move(mb));
  }
  return out;
}

}  // namespace zt::datasets
