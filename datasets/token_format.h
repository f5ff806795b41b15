// The on-disk token dataset format (HDF5 shards + manifest.toml), the zt64 shard checksum, and
// reading/writing the manifest. docs/data.md is the user-facing version of this note.
//
// Note "token dataset format" (cited by shard_writer, token_dataset, prepare and the docs):
//
//   DATASET_DIR/
//     manifest.toml      written last, by rename: its presence means every shard it lists is
//                        complete. It holds
//                          format = "zerotrain-tokens", format_version = 1,
//                          tokenizer = "<tokenizer id>", vocab_size, eos_id,
//                          token_dtype = "uint16" | "uint32", val_fraction, split_seed,
//                          [[train]] / [[val]] tables {file, tokens, documents, checksum}
//                        in split order: a split's token stream is its shards concatenated.
//     train-00000.h5 ... one HDF5 file per shard, plain layout so h5py/h5ls read it as is:
//       /tokens          1-D uint16 (uint32 when vocab_size > 65536), little-endian, chunked,
//                        optionally gzip-compressed. Every document ends with eos_id.
//       /doc_offsets     1-D int64, documents + 1 entries: document d is
//                        tokens[doc_offsets[d] : doc_offsets[d+1]] (its EOS included).
//       attributes of the root group: format, tokenizer, token_dtype, split (strings),
//                        format_version, vocab_size, eos_id, tokens, documents (int64).
//     val-00000.h5 ...   the validation split, same layout.
//
// Documents never span shards: a shard is closed at the first document end at or past
// --shard-tokens tokens.
//
// Checksum "zt64" (checksum = "zt64:<16 lowercase hex digits>"): over the raw little-endian
// bytes of /tokens (2 or 4 bytes per token), taken as 8-byte little-endian words w, the last
// one zero-padded:
//   h = 0x6a09e667f3bcc908
//   per word: m = w * 0x9e3779b97f4a7c15; m ^= m >> 29; h = rotl64((h ^ m) * 0xbf58476d1ce4e5b9, 31)
//   result: fmix(h ^ byte_count) with fmix(x) = x ^= x>>33; x *= 0xff51afd7ed558ccd; x ^= x>>33;
//           x *= 0xc4ceb9fe1a85ec53; x ^= x>>33   (all arithmetic mod 2^64)
// Each step is a bijection of h for a fixed word and the word enters through a bijection, so a
// change of any single word always changes the result (not just with high probability).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace zt::datasets {

inline constexpr std::string_view kFormatName = "zerotrain-tokens";
inline constexpr int64_t kFormatVersion = 1;
inline constexpr std::string_view kManifestFile = "manifest.toml";
inline constexpr std::string_view kTokensDataset = "tokens";
inline constexpr std::string_view kDocOffsetsDataset = "doc_offsets";
inline constexpr std::string_view kChecksumPrefix = "zt64:";

enum class TokenDType { kUInt16, kUInt32 };
std::string_view token_dtype_name(TokenDType dtype);  // "uint16", "uint32"
bool parse_token_dtype(std::string_view name, TokenDType* out);
int token_dtype_size(TokenDType dtype);
// uint16 while every id of the vocabulary fits, else uint32.
TokenDType token_dtype_for_vocab(int64_t vocab_size);

enum class Split { kTrain, kVal };
std::string_view split_name(Split split);  // "train", "val"

// The zt64 checksum (see the note above), fed with the raw bytes of /tokens in order, in pieces
// of any size.
class Checksum64 {
 public:
  void update(const void* data, size_t bytes);
  uint64_t value() const;  // of everything fed so far; update() may continue afterwards

 private:
  void mix_word(uint64_t w);
  uint64_t h_ = 0x6a09e667f3bcc908ull;
  uint64_t pending_ = 0;  // bytes of an incomplete word, little-endian
  int pending_bytes_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string format_checksum(uint64_t checksum);  // "zt64:0123456789abcdef"
// False when `text` is not "zt64:" + 16 hex digits.
bool parse_checksum(std::string_view text, uint64_t* out);

struct ShardInfo {
  std::string file;  // relative to the dataset folder
  int64_t tokens = 0;
  int64_t documents = 0;
  uint64_t checksum = 0;
};

struct Manifest {
  int64_t format_version = kFormatVersion;
  std::string tokenizer;  // the tokenizer's id, e.g. "gpt2-bpe:0123456789abcdef"
  int64_t vocab_size = 0;
  int64_t eos_id = 0;
  TokenDType token_dtype = TokenDType::kUInt16;
  double val_fraction = 0.0;
  uint64_t split_seed = 0;
  std::vector<ShardInfo> train;
  std::vector<ShardInfo> val;

  const std::vector<ShardInfo>& shards(Split split) const { return split == Split::kTrain ? train : val; }
  int64_t tokens(Split split) const;
  int64_t documents(Split split) const;
};

std::string manifest_to_toml(const Manifest& manifest);
// Parses manifest text; `source` (its path) names it in errors. Throws zt::UserError naming the
// file and what is wrong (not TOML, another format, a newer version, a missing or bad key).
Manifest parse_manifest(std::string_view text, const std::string& source);
// Reads DATASET_DIR/manifest.toml; a missing file is a UserError that says how to make one.
Manifest read_manifest(const std::string& dataset_dir);

}  // namespace zt::datasets
