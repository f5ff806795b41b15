// A minimal JSON reader for `zerotrain prepare --format jsonl`: the string value of one key of
// a one-line JSON object, with every escape JSON allows (\uXXXX and surrogate pairs included).
#pragma once

#include <string>
#include <string_view>

namespace zt::datasets {

enum class JsonExtract { kOk, kMissingKey, kNotString, kMalformed };

// Parses `line` as one JSON object and, for its top-level key `key` (the last one when repeated,
// as Python's json does), writes the UTF-8 string value to *out. The whole line must be valid
// JSON; other values are checked and skipped. A lone UTF-16 surrogate becomes U+FFFD. On a
// result other than kOk, *error says what is wrong and at which column (1-based).
JsonExtract extract_json_string(std::string_view line, std::string_view key, std::string* out,
                                std::string* error);

}  // namespace zt::datasets
