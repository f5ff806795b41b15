// Reading a run's config: TOML text and --set overrides checked against the key schema
// (launch/config_schema.h) into a validated RunConfig, and the resolved config back to TOML.
#include "launch/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include "launch/config_schema.h"
#include "runtime/error.h"

namespace zt::launch {
namespace {

// One key's value and where it came from ("run.toml:12" or "--set train.steps=5"), kept until
// every key is read so the preset can be applied before the shape keys that override it.
struct Assignment {
  const ConfigKey* key;
  ConfigValue value;
  std::string where;
};

std::string location(std::string_view source, uint32_t line) {
  std::string out(source);
  if (line > 0) {
    out += ':';
    out += std::to_string(line);
  }
  return out;
}

// Optimal string alignment distance: Levenshtein plus adjacent transpositions, so "trian"
// is one edit from "train".
size_t edit_distance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

// Whether `typed` is plausibly a misspelling of `valid`: a few edits for its length, or one
// is a prefix of the other ("micro_batch" for "micro_batch_size", "training" for "train").
bool is_close(std::string_view typed, std::string_view valid) {
  const size_t limit = std::max<size_t>(1, valid.size() / 3);
  if (edit_distance(typed, valid) <= limit) return true;
  const size_t shorter = std::min(typed.size(), valid.size());
  return shorter >= 3 && (typed.starts_with(valid) || valid.starts_with(typed));
}

// How far `typed` is from `valid` for ranking suggestions: a name cut short ("decay_bias")
// counts as one edit, so it finds its completion ("decay_bias_and_norm") before a shorter key
// it happens to start with ("decay").
size_t name_cost(std::string_view typed, std::string_view valid) {
  if (!typed.empty() && valid.starts_with(typed))
    return std::min<size_t>(1, valid.size() - typed.size());
  return edit_distance(typed, valid);
}

// The valid key closest to `section.name`, or "" when none is close. The name counts most: a
// key under another section ("optimizer.seq_len") still finds "train.seq_len", but a key in
// the same (or a misspelt) section wins a tie.
std::string closest_key(std::string_view section, std::string_view name) {
  const ConfigKey* best = nullptr;
  size_t best_cost = std::numeric_limits<size_t>::max();
  for (const ConfigKey& k : config_schema()) {
    if (!is_close(name, k.name)) continue;
    size_t section_cost = 2;
    if (section == k.section) {
      section_cost = 0;
    } else if (!section.empty() && is_close(section, k.section)) {
      section_cost = 1;
    }
    const size_t cost = section_cost + name_cost(name, k.name);
    if (cost < best_cost) {
      best_cost = cost;
      best = &k;
    }
  }
  return best ? best->key : "";
}

std::string closest_section(std::string_view section) {
  std::string best;
  size_t best_cost = std::numeric_limits<size_t>::max();
  for (const std::string& s : config_sections()) {
    if (!is_close(section, s)) continue;
    const size_t cost = edit_distance(section, s);
    if (cost < best_cost) {
      best_cost = cost;
      best = s;
    }
  }
  return best;
}

std::string did_you_mean(const std::string& suggestion) {
  return suggestion.empty() ? "" : " (did you mean \"" + suggestion + "\"?)";
}

// "train.steps" -> {"train", "steps"}; a key without a section has an empty one.
std::pair<std::string_view, std::string_view> split_key(std::string_view key) {
  const size_t dot = key.find('.');
  if (dot == std::string_view::npos) return {"", key};
  return {key.substr(0, dot), key.substr(dot + 1)};
}

[[noreturn]] void throw_unknown_key(const std::string& where, std::string_view key) {
  auto [section, name] = split_key(key);
  throw_user_error(where, ": unknown config key \"", key, "\"",
                   did_you_mean(closest_key(section, name)));
}

std::string expected_text(const ConfigKey& key) {
  switch (key.type) {
    case KeyType::kInt:
      return key.int_word.empty() ? "an integer" : "an integer or \"" + key.int_word + "\"";
    case KeyType::kFloat: return "a number";
    case KeyType::kBool: return "true or false";
    case KeyType::kString:
    case KeyType::kEnum: return "a string";
  }
  return "?";
}

std::string_view toml_type_text(toml::node_type type) {
  switch (type) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

// The node as TOML, for error messages, spelled like config_to_toml spells values (TOML++'s
// own printer would show strings in single quotes).
std::string toml_text(const toml::node& node) {
  if (node.is_table()) return "{...}";
  if (const toml::array* array = node.as_array()) {
    std::string out = "[";
    for (const toml::node& item : *array) out += (out.size() > 1 ? ", " : "") + toml_text(item);
    return out + "]";
  }
  if (auto v = node.as_string()) return format_config_value(std::string(v->get()));
  if (auto v = node.as_integer()) return format_config_value(int64_t(v->get()));
  if (auto v = node.as_floating_point()) return format_config_value(double(v->get()));
  if (auto v = node.as_boolean()) return format_config_value(bool(v->get()));
  std::ostringstream os;  // dates and times
  node.visit([&](auto&& value) { os << value; });
  return os.str();
}

// Range and enum checks shared by the file and --set paths; `where` prefixes the message.
void check_range(const std::string& where, const ConfigKey& key, const ConfigValue& value) {
  const std::string problem = check_config_range(key, value);
  if (problem.empty()) return;
  const bool numeric = (key.type == KeyType::kInt || key.type == KeyType::kFloat) &&
                       !std::holds_alternative<std::string>(value);
  throw_user_error(where, ": ", key.key, " = ", format_config_value(value),
                   numeric ? " is out of range: " : " is not allowed: ", problem);
}

// The node's value as the key's type, or nothing when the TOML type does not fit. Integers are
// accepted for float keys (lr = 1); floats are not accepted for int keys.
std::optional<ConfigValue> value_from_node(const ConfigKey& key, const toml::node& node) {
  switch (key.type) {
    case KeyType::kInt:
      if (auto v = node.as_integer()) return ConfigValue(int64_t(v->get()));
      // Any string, so that check_range names what is allowed.
      if (auto v = node.as_string(); v && !key.int_word.empty()) return ConfigValue(std::string(v->get()));
      break;
    case KeyType::kFloat:
      if (auto v = node.as_floating_point()) return ConfigValue(double(v->get()));
      if (auto v = node.as_integer()) return ConfigValue(double(v->get()));
      break;
    case KeyType::kBool:
      if (auto v = node.as_boolean()) return ConfigValue(bool(v->get()));
      break;
    case KeyType::kString:
    case KeyType::kEnum:
      if (auto v = node.as_string()) return ConfigValue(std::string(v->get()));
      break;
  }
  return std::nullopt;
}

// A key=value or [section] of the file, in file order, so that the first problem reported is
// the first one in the file (TOML++ tables iterate in key order, not file order).
struct TomlEntry {
  toml::source_position pos;
  std::string section;  // the enclosing top-level table, "" at the top level
  std::string name;
  const toml::node* node;
};

toml::source_position position_of(const toml::key& key, const toml::node& node) {
  if (key.source().begin.line > 0) return key.source().begin;
  return node.source().begin;
}

void read_toml(std::string_view text, std::string_view source, std::vector<Assignment>& out) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    const toml::source_position& at = e.source().begin;
    throw_user_error(source, ":", at.line, ":", at.column, ": invalid TOML: ", e.description());
  }

  std::vector<TomlEntry> entries;
  for (auto&& [key, node] : root) {
    const std::string name(key.str());
    const bool is_section = std::find(config_sections().begin(), config_sections().end(), name) !=
                            config_sections().end();
    if (is_section && node.is_table()) {
      for (auto&& [child_key, child] : *node.as_table())
        entries.push_back(
            {position_of(child_key, child), name, std::string(child_key.str()), &child});
    } else {
      entries.push_back({position_of(key, node), "", name, &node});
    }
  }
  std::stable_sort(entries.begin(), entries.end(), [](const TomlEntry& a, const TomlEntry& b) {
    return a.pos.line != b.pos.line ? a.pos.line < b.pos.line : a.pos.column < b.pos.column;
  });

  for (const TomlEntry& e : entries) {
    const std::string where = location(source, e.pos.line);
    const toml::node& node = *e.node;
    if (e.section.empty()) {
      // A top-level entry: a section that is not a table, an unknown section, or a key that
      // belongs in a section.
      const bool is_section = std::find(config_sections().begin(), config_sections().end(),
                                        e.name) != config_sections().end();
      if (is_section)
        throw_user_error(where, ": ", e.name, " = ", toml_text(node),
                         " has the wrong type: expected a table ([", e.name, "]), got ",
                         toml_type_text(node.type()));
      if (node.is_table())
        throw_user_error(where, ": unknown config section \"", e.name, "\"",
                         did_you_mean(closest_section(e.name)));
      throw_unknown_key(where, e.name);
    }
    const std::string full = e.section + "." + e.name;
    const ConfigKey* key = find_config_key(full);
    if (!key) throw_unknown_key(where, full);
    std::optional<ConfigValue> value = value_from_node(*key, node);
    if (!value)
      throw_user_error(where, ": ", full, " = ", toml_text(node), " has the wrong type: expected ",
                       expected_text(*key), ", got ", toml_type_text(node.type()));
    check_range(where, *key, *value);
    out.push_back({key, std::move(*value), where});
  }
}

std::string_view trim(std::string_view s) {
  const size_t begin = s.find_first_not_of(" \t");
  if (begin == std::string_view::npos) return {};
  const size_t end = s.find_last_not_of(" \t");
  return s.substr(begin, end - begin + 1);
}

// Parses the text after '=' of a --set by the key's type.
std::optional<ConfigValue> value_from_text(const ConfigKey& key, std::string_view text) {
  switch (key.type) {
    case KeyType::kInt: {
      std::string_view digits = text.starts_with('+') ? text.substr(1) : text;
      int64_t v = 0;
      auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
      if (ec == std::errc() && end == digits.data() + digits.size() && !digits.empty())
        return ConfigValue(v);
      // Not a number: the key's word (bare or quoted), or any other text for check_range to refuse.
      if (key.int_word.empty()) break;
      const bool quoted = text.size() >= 2 && text.front() == '"' && text.back() == '"';
      return ConfigValue(std::string(quoted ? text.substr(1, text.size() - 2) : text));
    }
    case KeyType::kFloat: {
      if (text.starts_with('+')) text.remove_prefix(1);
      double v = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc() || end != text.data() + text.size() || text.empty()) break;
      return ConfigValue(v);
    }
    case KeyType::kBool:
      if (text == "true") return ConfigValue(true);
      if (text == "false") return ConfigValue(false);
      break;
    case KeyType::kString:
    case KeyType::kEnum: {
      // Bare text is the string itself; a quoted one is read as a TOML string, escapes and all.
      const bool quoted = text.size() >= 2 && (text.front() == '"' || text.front() == '\'') &&
                          text.back() == text.front();
      if (!quoted) return ConfigValue(std::string(text));
      try {
        toml::table t = toml::parse("v = " + std::string(text));
        if (auto s = t["v"].value<std::string>()) return ConfigValue(*s);
      } catch (const toml::parse_error&) {
      }
      break;
    }
  }
  return std::nullopt;
}

void read_override(const std::string& override_text, std::vector<Assignment>& out) {
  const std::string where = "--set " + override_text;
  const size_t eq = override_text.find('=');
  if (eq == std::string::npos)
    throw_user_error(where, ": expected section.key=value, e.g. --set train.steps=100");
  const std::string_view key_text = trim(std::string_view(override_text).substr(0, eq));
  const std::string_view value_text = trim(std::string_view(override_text).substr(eq + 1));
  const ConfigKey* key = find_config_key(key_text);
  if (!key) throw_unknown_key(where, key_text);
  std::optional<ConfigValue> value = value_from_text(*key, value_text);
  if (!value) throw_user_error(where, ": expected ", expected_text(*key));
  check_range(where, *key, *value);
  out.push_back({key, std::move(*value), where});
}

}  // namespace

RunConfig parse_config(std::string_view toml_text, std::string_view source_name,
                       const std::vector<std::string>& overrides) {
  std::vector<Assignment> assignments;
  read_toml(toml_text, source_name, assignments);
  for (const std::string& o : overrides) read_override(o, assignments);

  // The preset first (its setter replaces every shape), then every other key in the order given,
  // so a shape key overrides the preset wherever either was set and a later --set wins.
  RunConfig config;
  std::map<std::string, std::string> where_set;  // key -> where it was last set
  for (const Assignment& a : assignments)
    if (a.key->key == "model.preset") a.key->set(config, a.value);
  for (const Assignment& a : assignments) {
    if (a.key->key != "model.preset") a.key->set(config, a.value);
    where_set[a.key->key] = a.where;
  }

  config.model.shape.validate();

  // Rules between keys. The location is where the first-named key was set, else where the other
  // one was (or the preset that chose it), else the source as a whole.
  auto where_of = [&](std::initializer_list<const char*> keys) {
    for (const char* k : keys)
      if (auto it = where_set.find(k); it != where_set.end()) return it->second;
    return std::string(source_name);
  };
  if (config.train.seq_len > config.model.shape.n_positions)
    throw_user_error(
        where_of({"train.seq_len", "model.n_positions", "model.preset"}),
        ": train.seq_len = ", config.train.seq_len,
        " is out of range: must be <= model.n_positions = ", config.model.shape.n_positions);
  // A micro-batch's largest activation (the logits, fc_in's output or q/k/v) and a step's tokens
  // are int64 products: bounded far above any run that fits in memory, far below overflow.
  {
    const double step_tokens =
        std::max(double(config.train.global_batch_size),
                 double(config.train.micro_batch_size) * double(config.train.grad_accum_steps)) *
        double(config.train.seq_len);
    if (model::gptj_widest_activation(config.model.shape, config.train.micro_batch_size,
                                      config.train.seq_len) > model::kMaxElements ||
        step_tokens > model::kMaxElements)
      throw_user_error(
          where_of({"train.micro_batch_size", "train.global_batch_size", "train.grad_accum_steps",
                    "train.seq_len"}),
          ": train.micro_batch_size = ", config.train.micro_batch_size, " (global ",
          config.train.global_batch_size, ", grad_accum_steps ", config.train.grad_accum_steps,
          ") x train.seq_len = ", config.train.seq_len,
          " is out of range: a micro-batch's activations or a step's tokens would pass 2^48 "
          "elements");
  }
  if (config.train.global_batch_size % config.train.micro_batch_size != 0)
    throw_user_error(
        where_of({"train.global_batch_size", "train.micro_batch_size"}),
        ": train.global_batch_size = ", config.train.global_batch_size,
        " is not a multiple of train.micro_batch_size = ", config.train.micro_batch_size,
        ": each rank runs whole micro-batches (global = micro x grad_accum_steps x ranks)");
  if (config.model.keep_activations > config.model.shape.n_layer)
    throw_user_error(
        where_of({"model.keep_activations", "model.n_layer", "model.preset"}),
        ": model.keep_activations = ", config.model.keep_activations,
        " is out of range: must be <= model.n_layer = ", config.model.shape.n_layer,
        " (keeping every block's activations is model.activation_checkpointing = false)");
  if (config.model.keep_activations != 0 && !config.model.activation_checkpointing)
    throw_user_error(
        where_of({"model.keep_activations", "model.activation_checkpointing"}),
        ": model.keep_activations = ", format_config_value(find_config_key("model.keep_activations")->get(config)),
        " needs model.activation_checkpointing = true: without checkpointing every block already "
        "keeps its activations; turn checkpointing on, or set model.keep_activations = 0");
  if (config.optimizer.min_lr > config.optimizer.lr)
    throw_user_error(
        where_of({"optimizer.min_lr", "optimizer.lr"}),
        ": optimizer.min_lr = ", format_config_value(config.optimizer.min_lr),
        " is out of range: must be <= optimizer.lr = ", format_config_value(config.optimizer.lr));
  if (config.fp16.initial_scale < config.fp16.min_scale)
    throw_user_error(
        where_of({"fp16.initial_scale", "fp16.min_scale"}),
        ": fp16.initial_scale = ", format_config_value(config.fp16.initial_scale),
        " is out of range: must be >= fp16.min_scale = ", format_config_value(config.fp16.min_scale));
  if (config.zero.offload_optimizer == "cpu" && config.zero.stage == 0)
    throw_user_error(where_of({"zero.offload_optimizer", "zero.stage"}),
                     ": zero.offload_optimizer = \"cpu\" needs zero.stage 1, 2 or 3: stage 0 keeps the "
                     "whole optimizer state on every rank; set zero.stage = 2 (the usual choice "
                     "with offload)");
  if (config.zero.offload_params == "cpu" &&
      (config.zero.stage != 3 || config.zero.offload_optimizer != "cpu"))
    throw_user_error(where_of({"zero.offload_params", "zero.stage", "zero.offload_optimizer"}),
                     ": zero.offload_params = \"cpu\" needs zero.stage = 3 and "
                     "zero.offload_optimizer = \"cpu\" (only stage 3 partitions the parameters, "
                     "and the CPU AdamW writes them into host memory); got zero.stage = ",
                     config.zero.stage, " and zero.offload_optimizer = ",
                     format_config_value(config.zero.offload_optimizer));
  if (config.zero.delayed_update_from_step > 0 &&
      (config.zero.offload_optimizer != "cpu" || config.zero.offload_params == "cpu"))
    throw_user_error(where_of({"zero.delayed_update_from_step", "zero.offload_optimizer", "zero.offload_params"}),
                     ": zero.delayed_update_from_step = ", config.zero.delayed_update_from_step,
                     " needs zero.offload_optimizer = \"cpu\" and zero.offload_params = \"none\" (it "
                     "overlaps the CPU AdamW with the GPU's next step; with the parameters offloaded "
                     "the AdamW writes the shard the GPU reads); got zero.offload_optimizer = ",
                     format_config_value(config.zero.offload_optimizer), " and zero.offload_params = ",
                     format_config_value(config.zero.offload_params));
  if (config.comm.backend == "nccl" && config.train.device == "cpu")
    throw_user_error(where_of({"comm.backend", "train.device"}),
                     ": comm.backend = \"nccl\" needs GPUs, but train.device = \"cpu\" (the CPU "
                     "backend always uses MPI): set train.device = \"cuda\", or comm.backend = "
                     "\"auto\"");
  if (config.train.resume == "auto" && config.train.checkpoint_dir.empty())
    throw_user_error(where_of({"train.resume"}), ": train.resume = \"auto\" needs train.checkpoint_dir, "
                     "the folder whose `latest` checkpoint to continue from");
  if (config.train.eval_at_start && config.train.eval_every == 0)
    throw_user_error(where_of({"train.eval_at_start"}), ": train.eval_at_start = true needs "
                     "train.eval_every > 0, which also chooses the validation data and its checks");
  if (config.train.save_every > 0 && config.train.checkpoint_dir.empty())
    throw_user_error(where_of({"train.save_every"}), ": train.save_every = ", config.train.save_every,
                     " needs train.checkpoint_dir, the folder to save the checkpoints in");
  if (config.data.source == "hdf5" && config.data.path.empty())
    throw_user_error(where_of({"data.source"}), ": data.source = \"hdf5\" needs data.path, the folder "
                     "made by `zerotrain prepare --out DIR` (docs/data.md)");
  if (config.data.source != "hdf5" && !config.data.path.empty())
    throw_user_error(where_of({"data.path"}), ": data.path is set but data.source = ",
                     format_config_value(config.data.source), ": set data.source = \"hdf5\" to train on it");
  if (config.data.source != "hdf5" && !config.data.tokenizer.empty())
    throw_user_error(where_of({"data.tokenizer"}), ": data.tokenizer is only read with data.source = \"hdf5\"");
  return config;
}

RunConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (path.empty()) return parse_config("", "(defaults)", overrides);
  std::FILE* file = std::fopen(path.c_str(), "rb");
  auto fail = [&](int err) {
    throw_user_error("cannot read config file \"", path, "\": ", std::strerror(err),
                     "; check the path, or run `zerotrain train --help` for the config keys");
  };
  if (!file) fail(errno);
  std::string text;
  char buf[1 << 14];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), file)) > 0) text.append(buf, n);
  const bool read_error = std::ferror(file);
  const int err = errno;
  std::fclose(file);
  if (read_error) fail(err);  // e.g. a directory: EISDIR
  return parse_config(text, path, overrides);
}

RunConfig with_rank_count(const RunConfig& config, int ranks) {
  RunConfig c = config;
  const TrainSection& t = config.train;
  if (t.global_batch_size == 0) return c;
  const int64_t per_micro = t.micro_batch_size * ranks;  // sequences of one micro-batch on every rank
  if (t.global_batch_size % per_micro != 0)
    throw_user_error("train.global_batch_size = ", t.global_batch_size,
                     " cannot be split into whole micro-batches on ", ranks, ranks == 1 ? " rank" : " ranks",
                     ": it must be a multiple of train.micro_batch_size x ranks = ",
                     t.micro_batch_size, " x ", ranks, " = ", per_micro,
                     "; change the global batch, the micro-batch or the number of ranks");
  const int64_t accum = t.global_batch_size / per_micro;
  if (t.grad_accum_steps != 1 && t.grad_accum_steps != accum)
    throw_user_error("train.grad_accum_steps = ", t.grad_accum_steps, " disagrees with train.global_batch_size = ",
                     t.global_batch_size, ", which on ", ranks, ranks == 1 ? " rank" : " ranks",
                     " of train.micro_batch_size = ", t.micro_batch_size, " needs ", accum,
                     ": set only one of them (global_batch_size derives the accumulation)");
  c.train.grad_accum_steps = accum;
  return c;
}

std::string config_to_toml(const RunConfig& config) {
  std::string out;
  for (const std::string& section : config_sections()) {
    if (!out.empty()) out += "\n";
    out += "[" + section + "]\n";
    for (const ConfigKey& key : config_schema())
      if (key.section == section)
        out += key.name + " = " + format_config_value(key.get(config)) + "\n";
  }
  return out;
}

}  // namespace zt::launch
