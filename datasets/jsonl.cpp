// The one-key JSON string extractor for jsonl inputs: JsonReader checks the whole line and
// decodes only the wanted string.
#include "datasets/jsonl.h"

#include <optional>

#include "runtime/json_reader.h"

namespace zt::datasets {

JsonExtract extract_json_string(std::string_view line, std::string_view key, std::string* out,
                                std::string* error) {
  std::optional<std::string> value;
  bool not_string = false;
  try {
    JsonReader r(line);
    if (r.peek() != '{') r.fail("expected '{' (each line must be one JSON object)" + r.found());
    r.object([&](const std::string& name) {
      // The last one wins when a key repeats, as in Python's json.
      if (name != key) {
        r.skip_value();
      } else if (r.peek() == '"') {
        value = r.string();
        not_string = false;
      } else {
        r.skip_value();
        value.reset();
        not_string = true;
      }
    });
    if (!r.at_end()) r.fail("unexpected text after the object");
  } catch (const JsonError& e) {
    *error = "malformed JSON: " + e.problem() + " at column " + std::to_string(e.column()) +
             (e.at_end() ? " (end of line)" : "");
    return JsonExtract::kMalformed;
  }
  if (not_string) {
    *error = "the value of \"" + std::string(key) + "\" is not a string";
    return JsonExtract::kNotString;
  }
  if (!value) {
    *error = "no \"" + std::string(key) + "\" key in the object";
    return JsonExtract::kMissingKey;
  }
  *out = std::move(*value);
  return JsonExtract::kOk;
}

}  // namespace zt::datasets
