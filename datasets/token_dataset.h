// Reading a prepared token dataset (note "token dataset format" in token_format.h): checking it
// against what a run needs before training starts, and reading token ranges of a split.
//
// Samples (note "sample packing", cited by sampler.h and the trainer): a split's token stream is
// its shards concatenated in manifest order (documents already joined by their EOS). Sample i
// of a run with sequence length T is tokens [i*T, i*T + T + 1): inputs are its first T tokens,
// targets its last T. Consecutive samples share one token (like nanoGPT and Megatron-LM), so
// every token of the stream after the first is a target exactly once per epoch. A split of N
// tokens has (N - 1) / T samples; the tail that does not fill a sample is not used.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "datasets/token_format.h"

namespace zt::datasets {

// What a run needs of a dataset. Every problem found is a zt::UserError naming the file (the
// manifest or the shard) and what to do about it.
struct DatasetRequirements {
  int64_t model_vocab_size = 0;  // > 0: the dataset's vocab_size must not exceed it
  std::string tokenizer_id;      // non-empty: must equal the manifest's tokenizer
  std::string tokenizer_source;  // where tokenizer_id came from, for messages (data.tokenizer)
  int64_t seq_len = 0;           // > 0: train (and, with need_val, val) must hold one sample
  bool need_val = false;         // the validation split is read (train.eval_every > 0)
  // Read every token once: the zt64 checksum of each shard must match the manifest and every id
  // must be < vocab_size. Without it the cheap checks (files, attributes, dtype, sizes) remain.
  bool verify_checksums = true;
};

// Reads DATASET_DIR/manifest.toml and checks the dataset against `req`: every shard of both
// splits exists, is an HDF5 shard of this format whose attributes agree with the manifest, holds
// /tokens of the manifest's dtype and length (and, with verify_checksums, its checksum), and the
// splits the run reads are not empty and hold at least one sample. Returns the manifest.
Manifest check_dataset(const std::string& dataset_dir, const DatasetRequirements& req);

// One split of a dataset, open for reading (its HDF5 files stay open). Reads are thread-safe.
class TokenDataset {
 public:
  // Opens the split's shards with the cheap checks of check_dataset (not the checksums).
  static std::shared_ptr<const TokenDataset> open(const std::string& dataset_dir, Split split);
  ~TokenDataset();
  TokenDataset(const TokenDataset&) = delete;
  TokenDataset& operator=(const TokenDataset&) = delete;

  const Manifest& manifest() const { return manifest_; }
  Split split() const { return split_; }
  const std::string& dir() const { return dir_; }
  int64_t num_tokens() const { return shard_begin_.back(); }
  // Samples of length seq_len + 1 in the split (note "sample packing").
  int64_t num_samples(int64_t seq_len) const;

  // Tokens [begin, begin + count) of the split's stream, across shard boundaries, as int32.
  void read(int64_t begin, int64_t count, int32_t* out) const;
  // Sample `index` (seq_len + 1 tokens) into out.
  void read_sample(int64_t index, int64_t seq_len, int32_t* out) const;

  struct Shard;  // an open shard file (token_dataset.cpp)

 private:
  TokenDataset() = default;

  std::string dir_;
  Manifest manifest_;
  Split split_ = Split::kTrain;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<int64_t> shard_begin_{0};  // first token of each shard in the stream; back() = total
};

}  // namespace zt::datasets
