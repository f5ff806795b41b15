// A stand-in tokenizer for dataset tests: each byte is its own token id, so expected outputs are
// obvious without the real GPT-2 tokenizer.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "datasets/prepare.h"

namespace zt::testing {

// Byte b becomes id b + offset; the vocabulary has `vocab` ids, the last one EOS (256 by
// default). The id is "bytes:test".
inline datasets::TokenizerRef byte_tokenizer(int64_t vocab = 257, int32_t offset = 0) {
  datasets::TokenizerRef t;
  t.id = "bytes:test";
  t.vocab_size = vocab;
  t.eos_id = vocab - 1;
  t.encode_append = [offset](std::string_view text, std::vector<int32_t>& out) {
    for (unsigned char c : text) out.push_back(int32_t(c) + offset);
  };
  return t;
}

}  // namespace zt::testing
