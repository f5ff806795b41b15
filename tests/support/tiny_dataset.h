// A tiny prepared token dataset for trainer tests: byte-level ids (vocab 257 fits gptj-tiny's
// 512), jsonl documents of repetitive text, so a few steps already lower the loss.
#pragma once

#include <filesystem>
#include <string>

#include "datasets/prepare.h"
#include "tests/support/byte_tokenizer.h"
#include "tests/support/temp_dir.h"

namespace zt::testing {

// Writes `documents` jsonl documents, each "the cat sat on the mat <d % 7>. " repeated `repeats`
// times, into dir/in.jsonl and prepares them into dir/ds (val fraction 0.2, 3000-token shards);
// returns the dataset folder.
inline std::string make_tiny_dataset(const std::string& dir, int documents, int repeats) {
  std::string jsonl;
  for (int d = 0; d < documents; ++d) {
    jsonl += "{\"text\": \"";
    for (int r = 0; r < repeats; ++r) jsonl += "the cat sat on the mat " + std::to_string(d % 7) + ". ";
    jsonl += "\"}\n";
  }
  datasets::PrepareOptions o;
  o.inputs = {write_file(dir, "in.jsonl", jsonl)};
  o.out_dir = (std::filesystem::path(dir) / "ds").string();
  o.format = datasets::InputFormat::kJsonl;
  o.val_fraction = 0.2;
  o.shard_tokens = 3000;
  o.progress = false;
  o.threads = 2;
  datasets::prepare_dataset(o, byte_tokenizer());
  return o.out_dir;
}

}  // namespace zt::testing
