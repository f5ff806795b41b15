// prepare_dataset: the pipeline behind `zerotrain prepare`. Reads documents (a file per document
// for text, a line per document for jsonl), tokenizes them on worker threads, appends EOS after
// each, and writes train/val HDF5 shards and manifest.toml (note "token dataset format" in
// token_format.h).
//
// Note "prepare pipeline":
// - One reader (the calling thread) cuts documents into pieces of about piece_bytes, before a
//   whitespace character (Unicode White_Space) that a non-whitespace character follows: the last
//   whitespace of a run. GPT-2's pre-tokenizer ends a word there in any text (a run followed by
//   a word splits as run-minus-last + last, the last joining the word when it is a space), and
//   matches the same words on either side of the cut, so the pieces give exactly the tokens of
//   the whole document. A text with no such point in 16 pieces' worth of bytes is cut at a UTF-8
//   character boundary instead (inexact at that one point).
// - `threads` workers tokenize pieces in any order; one writer thread appends them to the
//   current shard strictly in input order, so the output is byte-identical for any thread count.
// - At most 4 * threads + 8 pieces are in flight between reader and writer: memory stays bounded
//   for inputs of any size (a single jsonl line is held whole while it is parsed).
// - Document d (counted in input order over all inputs, empty documents skipped) goes to the
//   validation split when random_uniform(split_seed, stream, d) < val_fraction: the split is the
//   same for the same inputs and seed, whatever the thread count or shard size.
// - Shards are written as NAME.h5.tmp and renamed when all are complete; manifest.toml is
//   written last (through manifest.toml.tmp and a rename), so an interrupted prepare never leaves
//   a manifest that points at partial shards. On an error the temporary files are removed. A
//   dataset replaced with `overwrite` loses its manifest only once the new shards are complete,
//   then its shards (renamed over, or removed when the new dataset has fewer).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "datasets/token_format.h"

namespace zt::datasets {

enum class InputFormat { kText, kJsonl };

// The tokenizer as prepare uses it: `zerotrain prepare` wraps BpeTokenizer; tests may pass a
// trivial one. encode_append must be thread-safe.
struct TokenizerRef {
  std::string id;
  int64_t vocab_size = 0;
  int64_t eos_id = 0;
  std::function<void(std::string_view text, std::vector<int32_t>& out)> encode_append;
};

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string out_dir;
  InputFormat format = InputFormat::kText;
  std::string jsonl_key = "text";
  int64_t shard_tokens = 100'000'000;  // a shard closes at the first document end past this
  double val_fraction = 0.01;
  int64_t split_seed = 1234;
  int threads = 0;        // tokenizer threads; 0 = one per core
  int compression = 0;    // gzip level of /tokens, 0 = none
  // Replace a dataset already in out_dir. Its files stay until the new shards are complete
  // (an error or interrupt leaves it as it was); only then do its manifest and shards go.
  bool overwrite = false;
  // Polled by the reader between pieces and lines: once it returns true the run stops as on an
  // error (a zt::UserError saying it was interrupted; temporary files removed). Null: never.
  std::function<bool()> stop;
  // Progress on stderr: on a terminal a self-updating line, elsewhere a line every 10 s.
  bool progress = true;
  int64_t piece_bytes = 1 << 20;
};

struct PrepareSummary {
  Manifest manifest;
  int64_t bytes_read = 0;
  int64_t documents = 0;
  double seconds = 0.0;
};

// Throws zt::UserError for bad inputs (a missing file, a malformed jsonl line: "FILE:LINE: ...",
// inputs without a document, or documents that all went to the validation split), a non-empty
// out_dir without overwrite, a failed write, or a stop; out_dir is then left as it was (the
// temporary files are removed).
PrepareSummary prepare_dataset(const PrepareOptions& options, const TokenizerRef& tokenizer);

// Cuts `text` at the last exact split point (see the note) at or before `limit` bytes; returns
// the length of the first part (0 when there is none).
size_t find_piece_end(std::string_view text, size_t limit);

}  // namespace zt::datasets
