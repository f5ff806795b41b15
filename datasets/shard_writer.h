// ShardWriter: writes one HDF5 token shard (note "token dataset format" in token_format.h),
// streaming: tokens go to disk in chunks as they are appended, so a shard of any size needs
// only its document offsets in memory.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "datasets/hdf5_check.h"
#include "datasets/token_format.h"

namespace zt::datasets {

struct ShardAttributes {
  std::string tokenizer;  // the tokenizer's id
  int64_t vocab_size = 0;
  int64_t eos_id = 0;
  Split split = Split::kTrain;
};

struct ShardWriterOptions {
  TokenDType dtype = TokenDType::kUInt16;
  int64_t chunk_tokens = 1 << 16;  // HDF5 chunk of /tokens (128 KiB at uint16)
  int compression = 0;             // gzip level 1-9, 0 = none (fastest random reads)
};

class ShardWriter {
 public:
  // Creates (truncates) the HDF5 file at `path`. Throws zt::UserError when it cannot.
  ShardWriter(const std::string& path, const ShardAttributes& attributes,
              const ShardWriterOptions& options);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends token ids (each in [0, vocab_size)) to the current document.
  void append(std::span<const int32_t> tokens);
  // Ends the current document: the next token starts a new one. The caller appends the EOS.
  void end_document();
  // Flushes, writes /doc_offsets and the attributes, and closes the file. `file` of the result
  // is the path's file name. A document left open (tokens after the last end_document) is an
  // internal error.
  ShardInfo finish();

  int64_t tokens() const { return tokens_; }
  int64_t documents() const { return int64_t(doc_offsets_.size()) - 1; }

 private:
  void flush();

  std::string path_;
  ShardAttributes attributes_;
  ShardWriterOptions options_;
  H5Handle file_;
  H5Handle tokens_dataset_;
  std::vector<unsigned char> buffer_;  // tokens not yet written, in the file's dtype
  int64_t buffered_ = 0;
  int64_t written_ = 0;  // tokens in the file
  int64_t tokens_ = 0;   // written + buffered
  std::vector<int64_t> doc_offsets_{0};
  Checksum64 checksum_;
  bool finished_ = false;
};

}  // namespace zt::datasets
