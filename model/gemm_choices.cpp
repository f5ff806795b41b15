// GEMM choices files (model/gemm_choices.h).
#include "model/gemm_choices.h"

#include <cstdlib>
#include <sstream>

#include "runtime/error.h"
#include "runtime/file_io.h"

namespace zt::model {

std::string format_gemm_choices(const GemmChoices& choices) {
  std::ostringstream out;
  out << "# zerotrain GEMM choices, written by `zerotrain bench --tune-gemms` or by a run with\n"
         "# train.gemm_choices: for each GEMM problem, which of cuBLASLt's heuristic candidates\n"
         "# runs (0 is the heuristic's pick). Used by a run with train.gemm_choices (or\n"
         "# ZT_GEMM_CHOICES) naming this file, on the same GPU and cuBLASLt.\n";
  out << "device " << choices.device << "\n";
  out << "cublaslt " << choices.library << "\n";
  for (const auto& [key, index] : choices.index) out << "choice " << index << " " << key << "\n";
  return out.str();
}

GemmChoices parse_gemm_choices(const std::string& text, const std::string& where) {
  GemmChoices c;
  bool has_device = false, has_library = false;
  std::istringstream in(text);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.find(' ');
    const std::string word = line.substr(0, space);
    const std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
    auto fail = [&](const std::string& why) {
      throw_user_error(where, ":", number, ": ", why, " (a GEMM choices file holds `device NAME`, "
                       "`cublaslt VERSION` and `choice INDEX KEY` lines; write one with "
                       "`zerotrain bench --tune-gemms FILE`)");
    };
    if (word == "device" && !rest.empty()) {
      c.device = rest;
      has_device = true;
    } else if (word == "cublaslt" && !rest.empty()) {
      c.library = rest;
      has_library = true;
    } else if (word == "choice") {
      const size_t key_at = rest.find(' ');
      const std::string number_text = rest.substr(0, key_at);
      char* end = nullptr;
      const long index = std::strtol(number_text.c_str(), &end, 10);
      if (number_text.empty() || *end != '\0' || index < 0 || index > 1000)
        fail("`" + number_text + "` is not a candidate index (0-1000)");
      if (key_at == std::string::npos || key_at + 1 >= rest.size()) fail("a choice without a problem key");
      const std::string key = rest.substr(key_at + 1);
      if (!c.index.emplace(key, int(index)).second) fail("a second choice for `" + key + "`");
    } else {
      fail("unexpected line `" + line + "`");
    }
  }
  if (!has_device || !has_library)
    throw_user_error(where, ": no `", has_device ? "cublaslt" : "device",
                     "` line (write the file with `zerotrain bench --tune-gemms FILE`)");
  return c;
}

GemmChoices read_gemm_choices(const std::string& path) {
  return parse_gemm_choices(read_file(path, "GEMM choices file"), path);
}

void write_gemm_choices(const std::string& path, const GemmChoices& choices) {
  replace_file(path, format_gemm_choices(choices));
}

}  // namespace zt::model
