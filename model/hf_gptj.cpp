// Hugging Face GPT-J import/export: config.json mapping, the safetensors-directory WeightSource
// with its completeness checks, and the crash-safe streaming exporter.
#include "model/hf_gptj.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <vector>

#include "model/params.h"
#include "runtime/error.h"
#include "runtime/file_io.h"
#include "runtime/json_reader.h"
#include "runtime/safetensors.h"

namespace zt::model {

namespace fs = std::filesystem;

namespace {

constexpr const char* kConfigName = "config.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kConvertHint =
    "convert it with transformers: GPTJForCausalLM.from_pretrained(dir)"
    ".save_pretrained(out, safe_serialization=True)";

// A double as Python's repr() writes it (what json.dumps puts in config.json): the shortest
// digits that read back exactly, positional for exponents -4..15, else d.ddde[+-]XX.
std::string python_float(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  const std::string sci(buf, r.ptr);  // "-1.2345e-05"
  const size_t e_pos = sci.find('e');
  const bool negative = sci[0] == '-';
  std::string digits;
  for (size_t i = negative ? 1 : 0; i < e_pos; ++i)
    if (sci[i] != '.') digits += sci[i];
  const int exp = std::stoi(sci.substr(e_pos + 1));
  std::string out = negative ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0." + std::string(size_t(-exp - 1), '0') + digits;
    } else if (size_t(exp) + 1 >= digits.size()) {
      out += digits + std::string(size_t(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, size_t(exp) + 1) + "." + digits.substr(size_t(exp) + 1);
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const int mag = exp < 0 ? -exp : exp;  // at most 324 for a double
    out += exp < 0 ? "e-" : "e+";
    if (mag < 10) out += '0';
    out += std::to_string(mag);
  }
  return out;
}

std::vector<int64_t> shape_dims(const Shape& shape) {
  std::vector<int64_t> dims;
  for (int i = 0; i < shape.rank(); ++i) dims.push_back(shape[i]);
  return dims;
}

// transformer.h.<N>.attn.bias and transformer.h.<N>.attn.masked_bias: the causal-mask buffers
// older transformers versions saved with GPT-J weights; they are not parameters.
bool is_mask_buffer(const std::string& name) {
  const std::string prefix = "transformer.h.";
  if (name.rfind(prefix, 0) != 0) return false;
  size_t i = prefix.size();
  const size_t digits_begin = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
  if (i == digits_begin) return false;
  const std::string_view rest = std::string_view(name).substr(i);
  return rest == ".attn.bias" || rest == ".attn.masked_bias";
}

// ---------------------------------------------------------------------------------------------
// The WeightSource over a directory of safetensors files.

class HfGptjSource final : public WeightSource {
 public:
  struct Location {
    const SafetensorsFile* file = nullptr;
    const SafetensorsEntry* entry = nullptr;
  };

  HfGptjSource(GptjConfig config, std::vector<std::unique_ptr<SafetensorsFile>> files,
               std::vector<Location> params, std::string description)
      : config_(config),
        files_(std::move(files)),
        params_(std::move(params)),
        description_(std::move(description)) {}

  const GptjConfig& config() const override { return config_; }
  void read(int spec_index, int64_t begin, int64_t end, float* out) override {
    ZT_CHECK(spec_index >= 0 && size_t(spec_index) < params_.size(), "parameter index ",
             spec_index, " out of range for ", description_);
    const Location& l = params_[size_t(spec_index)];
    l.file->read_f32(*l.entry, begin, end, out);
  }
  std::string describe() const override { return description_; }

 private:
  GptjConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<Location> params_;  // gptj_param_specs order
  std::string description_;
};

// model.safetensors.index.json's weight_map: tensor name -> shard file name.
std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
  const std::string text = read_file(index_path, "safetensors index");
  std::map<std::string, std::string> weight_map;
  bool has_map = false;
  try {
    JsonReader r(text);
    r.object([&](const std::string& key) {
      if (key != "weight_map") {
        r.skip_value();  // "metadata": total_size and the like, not needed
        return;
      }
      has_map = true;
      r.object([&](const std::string& name) { weight_map[name] = r.string(); });
    });
    if (!r.at_end()) r.fail("unexpected text after the index object");
  } catch (const JsonError& e) {
    throw_user_error("bad JSON in ", index_path, " at line ", e.line(), ", column ", e.column(),
                     ": ", e.problem());
  }
  if (!has_map)
    throw_user_error(index_path, " has no \"weight_map\": it is not a safetensors index as "
                     "transformers writes it");
  for (const auto& [name, file] : weight_map)
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
      throw_user_error(index_path, " maps \"", name, "\" to \"", file,
                       "\": shard names must be plain file names in the same directory");
  return weight_map;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// config.json

GptjConfig gptj_config_from_hf(const std::string& path) {
  const std::string text = read_file(path, "Hugging Face config");
  // transformers' GPTJConfig defaults (the 6B model): what from_pretrained uses for a missing key.
  GptjConfig c = gptj_preset("gptj-6b");
  c.layer_norm_eps = 1e-5;
  c.init_std = 0.02;
  bool n_inner_null = true, rotary_null = false;
  int64_t n_inner = 0;
  std::string model_type, activation = "gelu_new";
  bool has_model_type = false, tied = false;
  std::string key_now;
  try {
    JsonReader r(text);
    if (r.peek() != '{') r.fail("expected '{' (config.json is one JSON object)" + r.found());
    r.object([&](const std::string& key) {
      key_now = key;
      if (key == "model_type") {
        model_type = r.string();
        has_model_type = true;
      } else if (key == "vocab_size") {
        c.vocab_size = r.integer();
      } else if (key == "n_positions") {
        c.n_positions = r.integer();
      } else if (key == "n_embd") {
        c.d_model = r.integer();
      } else if (key == "n_layer") {
        c.n_layer = r.integer();
      } else if (key == "n_head") {
        c.n_head = r.integer();
      } else if (key == "rotary_dim") {
        rotary_null = r.accept_null();
        if (!rotary_null) c.rotary_dim = r.integer();
      } else if (key == "n_inner") {
        n_inner_null = r.accept_null();
        if (!n_inner_null) n_inner = r.integer();
      } else if (key == "layer_norm_epsilon") {
        c.layer_norm_eps = r.number();
      } else if (key == "initializer_range") {
        c.init_std = r.number();
      } else if (key == "activation_function") {
        activation = r.string();
      } else if (key == "tie_word_embeddings") {
        tied = r.boolean();
      } else {
        r.skip_value();  // dropout (zerotrain trains without), token ids, architectures, ...
      }
      key_now.clear();
    });
    if (!r.at_end()) r.fail("unexpected text after the config object");
  } catch (const JsonError& e) {
    throw_user_error("bad ", path, " at line ", e.line(), ", column ", e.column(), ": ",
                     e.problem(), key_now.empty() ? "" : " (the value of \"" + key_now + "\")");
  }
  if (!has_model_type)
    throw_user_error(path, " has no \"model_type\": it is not a Hugging Face model config");
  if (model_type != "gptj")
    throw_user_error(path, " describes a \"", model_type, "\" model: zerotrain supports only "
                     "GPT-J (model_type \"gptj\")");
  if (activation != "gelu_new")
    throw_user_error(path, ": activation_function is \"", activation, "\", but zerotrain's GPT-J "
                     "computes gelu_new only");
  if (tied)
    throw_user_error(path, ": tie_word_embeddings is true, but GPT-J's lm_head is a separate "
                     "parameter (with a bias) in zerotrain: untied weights only");
  if (rotary_null) c.rotary_dim = c.head_dim();  // transformers rotates the whole head then
  c.d_ff = n_inner_null ? 4 * c.d_model : n_inner;
  try {
    c.validate();
  } catch (const UserError& e) {
    throw_user_error(path, " gives shapes zerotrain cannot use: ", e.what());
  }
  return c;
}

std::string hf_config_json(const GptjConfig& c, DType dtype) {
  const char* torch_dtype = dtype == DType::kF32    ? "float32"
                            : dtype == DType::kBF16 ? "bfloat16"
                            : dtype == DType::kF16  ? "float16"
                                                    : nullptr;
  if (torch_dtype == nullptr)
    throw_user_error("Hugging Face weights are stored in fp32, bf16 or fp16, not ",
                     dtype_name(dtype));
  const std::string dt = std::string("\"") + torch_dtype + "\"";
  // Sorted keys, as transformers' to_json_file writes them. "dtype" is the key transformers 5
  // reads, "torch_dtype" the one of 4.x.
  const std::vector<std::pair<std::string, std::string>> items = {
      {"activation_function", "\"gelu_new\""},
      {"architectures", "[\n    \"GPTJForCausalLM\"\n  ]"},
      {"attn_pdrop", "0.0"},
      {"bos_token_id", "50256"},
      {"dtype", dt},
      {"embd_pdrop", "0.0"},
      {"eos_token_id", "50256"},
      {"initializer_range", python_float(c.init_std)},
      {"layer_norm_epsilon", python_float(c.layer_norm_eps)},
      {"model_type", "\"gptj\""},
      {"n_embd", std::to_string(c.d_model)},
      {"n_head", std::to_string(c.n_head)},
      {"n_inner", std::to_string(c.d_ff)},
      {"n_layer", std::to_string(c.n_layer)},
      {"n_positions", std::to_string(c.n_positions)},
      {"pad_token_id", "null"},
      {"resid_pdrop", "0.0"},
      {"rotary_dim", std::to_string(c.rotary_dim)},
      {"tie_word_embeddings", "false"},
      {"torch_dtype", dt},
      {"use_cache", "true"},
      {"vocab_size", std::to_string(c.vocab_size)},
  };
  std::string out = "{\n";
  for (size_t i = 0; i < items.size(); ++i)
    out += "  \"" + items[i].first + "\": " + items[i].second +
           (i + 1 < items.size() ? ",\n" : "\n");
  return out + "}\n";
}

// ---------------------------------------------------------------------------------------------
// Import

bool is_hf_gptj_dir(const std::string& dir) {
  std::error_code ec;
  const fs::path d(dir);
  return fs::is_regular_file(d / kConfigName, ec) &&
         (fs::is_regular_file(d / kSingleName, ec) || fs::is_regular_file(d / kIndexName, ec));
}

std::unique_ptr<WeightSource> open_hf_gptj(const std::string& dir) {
  std::error_code ec;
  const fs::path d(dir);
  if (!fs::is_directory(d, ec))
    throw_user_error("Hugging Face model directory ", dir, " does not exist or is not a directory");
  const std::string config_path = (d / kConfigName).string();
  const std::string single_path = (d / kSingleName).string();
  const std::string index_path = (d / kIndexName).string();
  const bool has_single = fs::is_regular_file(single_path, ec);
  const bool has_index = fs::is_regular_file(index_path, ec);
  if (!has_single && !has_index) {
    bool has_bin = false;
    for (const auto& e : fs::directory_iterator(d, ec)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("pytorch_model", 0) == 0 &&
          (n.ends_with(".bin") || n.ends_with(".bin.index.json")))
        has_bin = true;
    }
    if (has_bin)
      throw_user_error(dir, " holds PyTorch .bin weights (pytorch_model*.bin), but zerotrain reads "
                       "safetensors only (they load without running pickled code): ",
                       kConvertHint);
    throw_user_error(dir, " has neither ", kSingleName, " nor ", kIndexName,
                     ": it is not a Hugging Face model directory with safetensors weights");
  }
  if (!fs::is_regular_file(config_path, ec))
    throw_user_error(dir, " has weights but no ", kConfigName,
                     ": zerotrain needs it for the model's shapes (copy the one that came with "
                     "the checkpoint)");
  const GptjConfig config = gptj_config_from_hf(config_path);

  // Which file each tensor lives in.
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, std::string> weight_map;  // empty for a single file
  if (has_single) {
    files.push_back(std::make_unique<SafetensorsFile>(single_path));
  } else {
    weight_map = read_weight_map(index_path);
    std::set<std::string> shard_names;
    for (const auto& [name, file] : weight_map) shard_names.insert(file);
    for (const std::string& f : shard_names) {
      const std::string p = (d / f).string();
      if (!fs::is_regular_file(p, ec))
        throw_user_error(index_path, " lists shard ", f, ", but ", p,
                         " does not exist: the download is incomplete");
      files.push_back(std::make_unique<SafetensorsFile>(p));
    }
  }

  const std::vector<ParamSpec> specs = gptj_param_specs(config);
  std::map<std::string, size_t> spec_of;
  for (size_t i = 0; i < specs.size(); ++i) spec_of[specs[i].name] = i;
  std::vector<HfGptjSource::Location> params(specs.size());
  std::set<DType> dtypes;
  for (const auto& file : files) {
    for (const std::string& name : file->names()) {
      if (!weight_map.empty()) {
        const auto it = weight_map.find(name);
        const std::string base = fs::path(file->path()).filename().string();
        if (it == weight_map.end() || it->second != base)
          throw_user_error(file->path(), " holds tensor \"", name, "\", but ", index_path,
                           it == weight_map.end() ? std::string(" does not list it")
                                                  : " places it in " + it->second,
                           ": the index and its shards do not belong together");
      }
      if (is_mask_buffer(name)) continue;
      const auto it = spec_of.find(name);
      if (it == spec_of.end())
        throw_user_error(file->path(), " holds tensor \"", name, "\", which is not a parameter of "
                         "GPT-J (GPTJForCausalLM) with the shapes of ", config_path,
                         ": is this a GPT-J checkpoint?");
      const ParamSpec& spec = specs[it->second];
      const SafetensorsEntry& e = file->at(name);
      HfGptjSource::Location& loc = params[it->second];
      if (loc.file != nullptr)
        throw_user_error("tensor \"", name, "\" is present twice: in ", loc.file->path(), " and ",
                         file->path());
      if (e.shape != shape_dims(spec.shape))
        throw_user_error(file->path(), ": tensor \"", name, "\" has shape ", shape_str(e.shape),
                         ", but ", config_path, " gives ", spec.shape.str(),
                         ": the weights and config.json do not belong together");
      if (!e.float_dtype || *e.float_dtype == DType::kF64)
        throw_user_error(file->path(), ": tensor \"", name, "\" has dtype ", e.dtype,
                         "; zerotrain reads parameters stored as F32, BF16 or F16");
      dtypes.insert(*e.float_dtype);
      loc = {file.get(), &e};
    }
  }
  std::vector<std::string> missing;
  for (size_t i = 0; i < specs.size(); ++i)
    if (params[i].file == nullptr) missing.push_back(specs[i].name);
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 5; ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 5) list += ", ...";
    throw_user_error(has_single ? single_path : index_path, " lacks ", missing.size(), " of the ",
                     specs.size(), " GPT-J parameters that ", config_path, " implies (", list,
                     "): the checkpoint is incomplete or for other shapes");
  }
  std::string dtype_list;
  for (DType t : dtypes) dtype_list += (dtype_list.empty() ? "" : "+") + std::string(dtype_name(t));
  const std::string description = "Hugging Face GPT-J in " + dir + " (" + dtype_list + ", " +
                                  std::to_string(files.size()) +
                                  (files.size() == 1 ? " file)" : " files)");
  return std::make_unique<HfGptjSource>(config, std::move(files), std::move(params), description);
}

// ---------------------------------------------------------------------------------------------
// Export

void write_hf_gptj(const std::string& dir, WeightSource& src, DType dtype, bool overwrite) {
  if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kF16)
    throw_user_error("Hugging Face export writes fp32, bf16 or fp16 weights, not ",
                     dtype_name(dtype));
  fs::path out = fs::path(dir).lexically_normal();
  if (!out.empty() && out.filename().empty()) out = out.parent_path();  // "out/" -> "out"
  if (out.empty() || out == "." || out == "..")
    throw_user_error("cannot export to \"", dir, "\": give a new directory's path");
  std::error_code ec;
  const bool exists = fs::exists(out, ec);
  if (exists && !fs::is_directory(out, ec))
    throw_user_error("cannot export to ", out.string(), ": it exists and is not a directory");
  const bool replace = exists && !fs::is_empty(out, ec);
  if (replace && !overwrite)
    throw_user_error("cannot export to ", out.string(), ": the directory exists and is not "
                     "empty; choose a new directory or allow overwriting it");
  // Overwriting replaces the whole directory: only an earlier export (config.json and its
  // safetensors files) may be there, never other files, a checkpoint or the export's own input.
  if (replace) {
    std::vector<std::string> foreign;
    for (const auto& entry : fs::directory_iterator(out, ec)) {
      const std::string name = entry.path().filename().string();
      const bool ours = entry.is_regular_file(ec) &&
                        (name == kConfigName || name == kIndexName ||
                         (name.starts_with("model") && name.ends_with(".safetensors")));
      if (!ours) foreign.push_back(name + (entry.is_directory(ec) ? "/" : ""));
    }
    std::sort(foreign.begin(), foreign.end());
    std::string named;
    for (size_t i = 0; i < foreign.size() && i < 3; ++i) named += (i ? ", " : "") + foreign[i];
    if (!foreign.empty())
      throw_user_error("cannot export to ", out.string(), ": it holds what an export does not write (",
                       named, foreign.size() > 3 ? ", ..." : "", "), and overwriting would delete "
                       "it; choose a new directory, or one that holds only an earlier export");
  }

  const GptjConfig& config = src.config();
  config.validate();
  const std::vector<ParamSpec> specs = gptj_param_specs(config);
  const fs::path tmp = out.string() + ".tmp-" + std::to_string(::getpid());
  // Removes the half-written directory on any error; the old DIR is untouched until the end.
  struct TmpGuard {
    fs::path path;
    bool keep = false;
    ~TmpGuard() {
      std::error_code ec;
      if (!keep) fs::remove_all(path, ec);
    }
  } guard{tmp};
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) throw_user_error("cannot create ", tmp.string(), ": ", ec.message());

  std::vector<SafetensorsTensorSpec> tensors;
  int64_t largest = 0;
  for (const ParamSpec& s : specs) {
    tensors.push_back({s.name, dtype, shape_dims(s.shape)});
    largest = std::max(largest, s.numel());
  }
  SafetensorsWriter writer((tmp / kSingleName).string(), std::move(tensors), {{"format", "pt"}});
  std::vector<float> chunk(size_t(std::min(largest, kExportChunkElements)));
  for (size_t i = 0; i < specs.size(); ++i) {
    const int64_t n = specs[i].numel();
    for (int64_t begin = 0; begin < n; begin += kExportChunkElements) {
      const int64_t end = std::min(n, begin + kExportChunkElements);
      src.read(int(i), begin, end, chunk.data());
      writer.write(specs[i].name, chunk.data(), end - begin);
    }
  }
  writer.finish();
  write_file_synced(tmp / kConfigName, hf_config_json(config, dtype),
                    "check the disk space and permissions of the output directory");
  sync_path(tmp);

  replace_dir(tmp, out, out.string() + ".old-" + std::to_string(::getpid()));
  guard.keep = true;  // renamed, or the old directory already removed
}

}  // namespace zt::model
