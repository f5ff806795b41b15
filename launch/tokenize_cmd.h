// `zerotrain tokenize`: GPT-2 BPE token ids of stdin (or, with --decode, the text of ids).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace zt::launch {

struct TokenizeArgs {
  std::string
      tokenizer_dir;    // vocab.json + merges.txt, encoder.json + vocab.bpe, or tokenizer.json
  bool decode = false;  // ids -> text instead of text -> ids
  bool help = false;
};

// Parses the flags after `tokenize`; throws zt::UserError naming a bad or missing flag.
TokenizeArgs parse_tokenize_args(const std::vector<std::string>& args);
std::string tokenize_usage_text();
// Encodes all of `in` as one text and writes the ids separated by spaces and a final newline;
// with decode, reads whitespace-separated ids and writes their text, byte-exact. Throws
// zt::UserError on a bad tokenizer directory or a bad id.
void run_tokenize(const TokenizeArgs& args, std::istream& in, std::ostream& out);

}  // namespace zt::launch
