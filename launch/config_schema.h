// The one table of every config key (type, default, allowed range, meaning, field access) that
// validation, --help, the resolved-config printer and docs/config.md all read.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "launch/config.h"

namespace zt::launch {

enum class KeyType { kInt, kFloat, kBool, kString, kEnum };

// A key's value after reading: int64_t for kInt (or std::string for its int_word), double for
// kFloat, bool for kBool, and std::string for kString and kEnum (the enum's spelling, e.g. "bf16").
using ConfigValue = std::variant<int64_t, double, bool, std::string>;

struct ConfigKey {
  std::string key;      // "train.micro_batch_size"
  std::string section;  // "train"
  std::string name;     // "micro_batch_size"
  KeyType type = KeyType::kInt;

  // kInt and kFloat: the allowed interval; a missing end is unbounded. kFloat values must also
  // be finite, so a schema edit can never let inf or nan through to the trainer.
  std::optional<double> min;
  bool min_exclusive = false;
  std::optional<double> max;
  bool max_exclusive = false;
  std::vector<std::string> choices;  // kEnum: the allowed spellings, in the order shown
  // kInt: a word the key also takes in place of a number ("auto"); its value is then that
  // string, which `get` returns and `set` accepts.
  std::string int_word;
  bool non_empty = false;            // kString: the empty string is not allowed
  // A rule against another key, checked by parse_config after every key is read; shown in the
  // reference beside the range, e.g. "<= model.n_positions".
  std::string cross_rule;

  std::string meaning;       // one line
  std::string default_text;  // as shown in the reference (read from a default RunConfig)

  std::function<ConfigValue(const RunConfig&)> get;
  // Called only with a value of the key's type that passed check_config_range.
  std::function<void(RunConfig&, const ConfigValue&)> set;
};

// Every key, grouped by section in config_sections() order.
const std::vector<ConfigKey>& config_schema();
// "model", "train", "optimizer", "data": the order of the reference and of config_to_toml.
const std::vector<std::string>& config_sections();
// The entry of a full key ("train.steps"), or nullptr.
const ConfigKey* find_config_key(std::string_view key);

// The value as a TOML literal: 8, 0.003, 1e-08, true, "runs/tiny-cpu". Floats use the shortest
// text that reads back to the same double, always with a '.' or an exponent so TOML reads them
// back as floats.
std::string format_config_value(const ConfigValue& value);
// "" when `value` is allowed, else what is allowed: "must be >= 1", "must be in [0, 1)",
// "must be non-empty", "use one of \"fp32\", \"bf16\"".
std::string check_config_range(const ConfigKey& key, const ConfigValue& value);

// Reference columns: "int", "float", "bool", "string", "enum"; and ">= 1", "[0, 1)",
// "\"fp32\", \"bf16\"", "true, false", "non-empty" (plus cross_rule).
std::string_view config_type_name(KeyType type);
std::string config_allowed_text(const ConfigKey& key);

}  // namespace zt::launch
