// The GPT-2 byte-level BPE tokenizer (GPT-J uses it unchanged; DESIGN.md section 7).
//
// encode: the text is split into words by the GPT-2 pre-tokenisation regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (implemented by hand over UTF-8 code points; classes from datasets/unicode_classes.h), then
// each word's bytes are merged by rank, lowest first, into vocabulary tokens. Any byte string is
// accepted: a byte that does not begin a well-formed UTF-8 sequence counts as one code point that
// is neither letter, number nor space, so decode(encode(x)) == x for every x. Special tokens are
// not parsed: "<|endoftext|>" inside the text is encoded as ordinary text, as GPT-2 does; append
// eos_id() yourself between documents. No BOS/EOS is added.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zt::datasets {

class BpeTokenizer {
 public:
  // dir holds vocab.json + merges.txt, or encoder.json + vocab.bpe (same files, npm names), or a
  // Hugging Face tokenizer.json (model.vocab + model.merges), looked for in that order. Throws
  // zt::UserError naming the file and what is wrong when a file is missing or malformed.
  static BpeTokenizer load(const std::string& dir);

  // Thread-safe: any number of threads may encode with one tokenizer at once (each thread keeps
  // its own cache of word encodings).
  std::vector<int32_t> encode(std::string_view text) const;
  void encode_append(std::string_view text, std::vector<int32_t>& out) const;
  // Throws zt::UserError on an id outside [0, vocab_size()).
  std::string decode(std::span<const int32_t> ids) const;

  int32_t vocab_size() const;  // 50257 for GPT-2
  int32_t eos_id() const;      // id of "<|endoftext|>" (50256 for GPT-2)
  // "gpt2-bpe:" + 16 lower-case hex digits of FNV-1a 64 over the content, independent of the
  // file format it was loaded from: for each id in order its token's bytes (after undoing the
  // bytes_to_unicode mapping) as a little-endian uint32 length then the bytes, then for each
  // merge in rank order the two input ids and the merged id as little-endian uint32. Identifies
  // the tokenizer in dataset files.
  const std::string& id() const;

  // The raw bytes of one token (no bytes_to_unicode mapping); id must be in range.
  std::string_view token_bytes(int32_t id) const;

  // Copies are cheap and share the (immutable) vocabulary and merges.
  struct Impl;

 private:
  explicit BpeTokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace zt::datasets
