// Hugging Face GPT-J mapping: config.json both ways (against transformers' own file), opening the
// committed fixture directories, every directory error, and the crash-safe exporter.
#include "model/hf_gptj.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "model/params.h"
#include "runtime/safetensors.h"
#include "tests/support/temp_dir.h"
#include "tests/support/user_error.h"

namespace zt::model {
namespace {

namespace fs = std::filesystem;
using zt::testing::read_file;
using zt::testing::user_error_of;
using zt::testing::write_file;

const std::string kFixtures = std::string(ZT_SOURCE_DIR) + "/tests/fixtures/hf-gptj-tiny";

GptjConfig tiny_config() {
  GptjConfig c;
  c.vocab_size = 96;
  c.n_positions = 32;
  c.d_model = 32;
  c.n_layer = 2;
  c.n_head = 4;
  c.rotary_dim = 4;
  c.d_ff = 80;
  c.layer_norm_eps = 1e-5;
  c.init_std = 0.02;
  return c;
}

// Weights held in memory, initialised like the engine (model/params.h), for export tests.
class MemorySource final : public WeightSource {
 public:
  MemorySource(const GptjConfig& c, uint64_t seed) : config_(c) {
    for (const ParamSpec& s : gptj_param_specs(c)) {
      values.emplace_back(size_t(s.numel()));
      init_param_values(s, c, seed, 0, s.numel(), values.back().data());
      // Non-trivial biases and norms, so that their values are tested too.
      for (size_t j = 0; j < values.back().size(); ++j)
        values.back()[j] += 0.001f * float(j % 7) - 0.003f;
    }
  }
  const GptjConfig& config() const override { return config_; }
  void read(int i, int64_t begin, int64_t end, float* out) override {
    if (fail_at == i) throw_user_error("reading failed on purpose");
    ++reads;
    std::copy(values[size_t(i)].begin() + begin, values[size_t(i)].begin() + end, out);
  }
  std::string describe() const override { return "memory"; }

  std::vector<std::vector<float>> values;
  int fail_at = -1;
  int reads = 0;

 private:
  GptjConfig config_;
};

// ---------------------------------------------------------------------------------------------
// config.json

TEST(HfGptjConfig, ReadsTransformersConfig) {
  const GptjConfig c = gptj_config_from_hf(kFixtures + "/fp32/config.json");
  const GptjConfig want = tiny_config();
  EXPECT_EQ(c.vocab_size, want.vocab_size);
  EXPECT_EQ(c.n_positions, want.n_positions);
  EXPECT_EQ(c.d_model, want.d_model);
  EXPECT_EQ(c.n_layer, want.n_layer);
  EXPECT_EQ(c.n_head, want.n_head);
  EXPECT_EQ(c.rotary_dim, want.rotary_dim);
  EXPECT_EQ(c.d_ff, want.d_ff);
  EXPECT_EQ(c.layer_norm_eps, 1e-5);  // exact: "1e-05" rounds to the same double as the literal
  EXPECT_EQ(c.init_std, 0.02);
}

// The fixture's config.json as transformers 5.17 wrote it, less its version line, plus the
// "torch_dtype" key that transformers 4.x reads.
std::string transformers_config(const std::string& dir) {
  std::string text = read_file(kFixtures + "/" + dir + "/config.json");
  const size_t v = text.find("  \"transformers_version\"");
  text.erase(v, text.find('\n', v) + 1 - v);
  const size_t u = text.find("  \"use_cache\"");
  const size_t d = text.find("\"dtype\": ");
  const std::string dtype = text.substr(d + 9, text.find(',', d) - d - 9);
  text.insert(u, "  \"torch_dtype\": " + dtype + ",\n");
  return text;
}

TEST(HfGptjConfig, WritesWhatTransformersWrites) {
  EXPECT_EQ(hf_config_json(tiny_config(), DType::kF32), transformers_config("fp32"));
  EXPECT_EQ(hf_config_json(tiny_config(), DType::kBF16), transformers_config("bf16-sharded"));
  EXPECT_NE(hf_config_json(tiny_config(), DType::kF16).find("\"dtype\": \"float16\""),
            std::string::npos);
  EXPECT_NE(user_error_of([] { hf_config_json(tiny_config(), DType::kF64); }), "");

  // And reads back to the same config, also for values Python writes in exponent form.
  GptjConfig c = tiny_config();
  c.layer_norm_eps = 1.5e-7;
  c.init_std = 123456.0;
  const std::string dir = zt::testing::fresh_dir("config_round_trip");
  const std::string json = hf_config_json(c, DType::kF32);
  EXPECT_NE(json.find("\"layer_norm_epsilon\": 1.5e-07,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"initializer_range\": 123456.0,"), std::string::npos) << json;
  const GptjConfig back = gptj_config_from_hf(write_file(dir, "config.json", json));
  EXPECT_EQ(back.layer_norm_eps, 1.5e-7);
  EXPECT_EQ(back.init_std, 123456.0);
  EXPECT_EQ(back.d_ff, 80);
}

TEST(HfGptjConfig, NullsDefaultsAndErrors) {
  const std::string dir = zt::testing::fresh_dir("config_errors");
  auto config_of = [&](const std::string& json) {
    return gptj_config_from_hf(write_file(dir, "config.json", json));
  };
  const std::string base = R"("model_type": "gptj", "n_embd": 32, "n_head": 4, "n_layer": 1,
                              "vocab_size": 10, "n_positions": 8)";
  // rotary_dim null rotates the whole head; n_inner null means 4 * n_embd.
  const GptjConfig nulls = config_of("{" + base + R"(, "rotary_dim": null, "n_inner": null,
                                     "tie_word_embeddings": false, "pad_token_id": null,
                                     "some_future_key": {"x": [1, 2]}})");
  EXPECT_EQ(nulls.rotary_dim, 8);
  EXPECT_EQ(nulls.d_ff, 128);
  // Missing keys take transformers' GPTJConfig defaults (GPT-J 6B).
  const GptjConfig defaults = config_of(R"({"model_type": "gptj"})");
  EXPECT_EQ(defaults.vocab_size, 50400);
  EXPECT_EQ(defaults.d_model, 4096);
  EXPECT_EQ(defaults.n_layer, 28);
  EXPECT_EQ(defaults.rotary_dim, 64);
  EXPECT_EQ(defaults.d_ff, 16384);
  EXPECT_EQ(gptj_param_count(defaults), 6050882784);

  const std::string path = dir + "/config.json";
  const std::map<std::string, std::string> errors = {
      {R"({"model_type": "llama"})",
       path + " describes a \"llama\" model: zerotrain supports only GPT-J (model_type \"gptj\")"},
      {R"({"n_embd": 32})", path + " has no \"model_type\": it is not a Hugging Face model config"},
      {"{" + base + R"(, "activation_function": "gelu"})",
       path + ": activation_function is \"gelu\", but zerotrain's GPT-J computes gelu_new only"},
      {"{" + base + R"(, "tie_word_embeddings": true})",
       path + ": tie_word_embeddings is true, but GPT-J's lm_head is a separate parameter (with a "
              "bias) in zerotrain: untied weights only"},
      {R"({"model_type": "gptj",
  "n_embd": "32"})",
       "bad " + path + " at line 2, column 13: expected an integer, found '\"' (the value of "
                       "\"n_embd\")"},
      {R"({"model_type": "gptj", "layer_norm_epsilon": "1e-5"})",
       "bad " + path + " at line 1, column 46: expected a number, found '\"' (the value of "
                       "\"layer_norm_epsilon\")"},
      {"[]", "bad " + path + " at line 1, column 1: expected '{' (config.json is one JSON object), "
                             "found '['"},
      {"{" + base + R"(, "n_head": 5})",
       path + " gives shapes zerotrain cannot use: model.d_model (32) must be divisible by "
              "model.n_head (5)"},
  };
  for (const auto& [json, message] : errors)
    EXPECT_EQ(user_error_of([&] { config_of(json); }), message) << json;
  EXPECT_NE(user_error_of([&] { gptj_config_from_hf(dir + "/absent.json"); })
                .find("cannot read Hugging Face config \"" + dir + "/absent.json\""),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Opening directories

TEST(HfGptjImport, OpensTheFixtureDirectories) {
  EXPECT_TRUE(is_hf_gptj_dir(kFixtures + "/fp32"));
  EXPECT_TRUE(is_hf_gptj_dir(kFixtures + "/bf16-sharded"));
  EXPECT_TRUE(is_hf_gptj_dir(kFixtures + "/fp16-legacy"));
  EXPECT_FALSE(is_hf_gptj_dir(kFixtures));
  EXPECT_FALSE(is_hf_gptj_dir(kFixtures + "/absent"));

  const auto fp32 = open_hf_gptj(kFixtures + "/fp32");
  EXPECT_EQ(fp32->describe(), "Hugging Face GPT-J in " + kFixtures + "/fp32 (fp32, 1 file)");
  EXPECT_EQ(fp32->config().d_ff, 80);
  const auto bf16 = open_hf_gptj(kFixtures + "/bf16-sharded");
  EXPECT_EQ(bf16->describe(),
            "Hugging Face GPT-J in " + kFixtures + "/bf16-sharded (bf16, 2 files)");
  const auto fp16 = open_hf_gptj(kFixtures + "/fp16-legacy");  // mask buffers skipped
  EXPECT_EQ(fp16->describe(), "Hugging Face GPT-J in " + kFixtures + "/fp16-legacy (fp16, 1 file)");

  // Ranges of a parameter read the same elements as the whole parameter.
  const std::vector<ParamSpec> specs = gptj_param_specs(fp32->config());
  const int wte = 0;
  std::vector<float> all(size_t(specs[wte].numel())), part(5);
  fp32->read(wte, 0, specs[wte].numel(), all.data());
  fp32->read(wte, 100, 105, part.data());
  for (int j = 0; j < 5; ++j) EXPECT_EQ(part[size_t(j)], all[size_t(100 + j)]);
}

// A Hugging Face directory made by the test: config.json of tiny_config() and the tensors
// `tensors` (name, dtype, shape) in one model.safetensors, with zeros as data.
std::string make_dir(const std::string& name, const std::vector<SafetensorsTensorSpec>& tensors) {
  const std::string dir = zt::testing::fresh_dir(name);
  write_file(dir, "config.json", hf_config_json(tiny_config(), DType::kF32));
  SafetensorsWriter w(dir + "/model.safetensors", tensors);
  for (const SafetensorsTensorSpec& t : tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    const std::vector<float> zeros(static_cast<size_t>(n));
    w.write(t.name, zeros.data(), n);
  }
  w.finish();
  return dir;
}

std::vector<SafetensorsTensorSpec> all_params(DType dtype) {
  std::vector<SafetensorsTensorSpec> out;
  for (const ParamSpec& s : gptj_param_specs(tiny_config())) {
    std::vector<int64_t> dims;
    for (int i = 0; i < s.shape.rank(); ++i) dims.push_back(s.shape[i]);
    out.push_back({s.name, dtype, dims});
  }
  return out;
}

TEST(HfGptjImport, DirectoryErrorsNameTheFileAndTheFix) {
  // PyTorch pickles only.
  const std::string bin = zt::testing::fresh_dir("bin_only");
  write_file(bin, "config.json", hf_config_json(tiny_config(), DType::kF32));
  write_file(bin, "pytorch_model.bin", "not read");
  EXPECT_EQ(user_error_of([&] { open_hf_gptj(bin); }),
            bin + " holds PyTorch .bin weights (pytorch_model*.bin), but zerotrain reads "
                  "safetensors only (they load without running pickled code): convert it with "
                  "transformers: GPTJForCausalLM.from_pretrained(dir).save_pretrained(out, "
                  "safe_serialization=True)");
  const std::string empty = zt::testing::fresh_dir("empty");
  EXPECT_EQ(user_error_of([&] { open_hf_gptj(empty); }),
            empty + " has neither model.safetensors nor model.safetensors.index.json: it is not "
                    "a Hugging Face model directory with safetensors weights");
  EXPECT_EQ(user_error_of([&] { open_hf_gptj(empty + "/absent"); }),
            "Hugging Face model directory " + empty +
                "/absent does not exist or is not a directory");

  // No config.json.
  std::string dir = make_dir("no_config", all_params(DType::kF32));
  fs::remove(dir + "/config.json");
  EXPECT_EQ(user_error_of([&] { open_hf_gptj(dir); }),
            dir + " has weights but no config.json: zerotrain needs it for the model's shapes "
                  "(copy the one that came with the checkpoint)");

  // A missing parameter.
  std::vector<SafetensorsTensorSpec> t = all_params(DType::kBF16);
  t.pop_back();  // lm_head.bias
  dir = make_dir("missing", t);
  EXPECT_EQ(user_error_of([&] { open_hf_gptj(dir); }),
            dir + "/model.safetensors lacks 1 of the 25 GPT-J parameters that " + dir +
                "/config.json implies (lm_head.bias): the checkpoint is incomplete or for other "
                "shapes");

  // An unexpected tensor (mask buffers are fine).
  t = all_params(DType::kF16);
  t.push_back({"transformer.h.0.attn.masked_bias", DType::kF32, {}});
  t.push_back({"transformer.h.1.attn.bias", DType::kF16, {1, 1, 32, 32}});
  EXPECT_NO_THROW(open_hf_gptj(make_dir("masks", t)));
  t.push_back({"transformer.h.0.attn.rotary.inv_freq", DType::kF32, {2}});
  dir = make_dir("extra", t);
  EXPECT_EQ(user_error_of([&] { open_hf_gptj(dir); }),
            dir + "/model.safetensors holds tensor \"transformer.h.0.attn.rotary.inv_freq\", "
                  "which is not a parameter of GPT-J (GPTJForCausalLM) with the shapes of " +
                dir + "/config.json: is this a GPT-J checkpoint?");

  // Wrong shape (transposed), and a dtype zerotrain does not read parameters from.
  t = all_params(DType::kF32);
  ASSERT_EQ(t[7].name, "transformer.h.0.mlp.fc_in.weight");
  t[7].shape = {32, 80};  // [out, in] = [80, 32] stored transposed
  dir = make_dir("shape", t);
  EXPECT_EQ(user_error_of([&] { open_hf_gptj(dir); }),
            dir + "/model.safetensors: tensor \"transformer.h.0.mlp.fc_in.weight\" has shape "
                  "[32, 80], but " + dir + "/config.json gives [80, 32]: the weights and "
                  "config.json do not belong together");
  t = all_params(DType::kF32);
  t[0].dtype = DType::kF64;
  dir = make_dir("f64", t);
  EXPECT_EQ(user_error_of([&] { open_hf_gptj(dir); }),
            dir + "/model.safetensors: tensor \"transformer.wte.weight\" has dtype F64; "
                  "zerotrain reads parameters stored as F32, BF16 or F16");
}

// Two shards and an index; `place` says which shard each parameter goes to (0 or 1).
std::string make_sharded(const std::string& name, const std::function<int(size_t)>& place,
                         const std::string& extra_index_entry = "") {
  const std::string dir = zt::testing::fresh_dir(name);
  write_file(dir, "config.json", hf_config_json(tiny_config(), DType::kBF16));
  const std::vector<SafetensorsTensorSpec> all = all_params(DType::kBF16);
  std::vector<SafetensorsTensorSpec> shard[2];
  std::string index = "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {";
  for (size_t i = 0; i < all.size(); ++i) {
    const int s = place(i);
    shard[s].push_back(all[i]);
    if (s == 1 && place(i + 1000) == 2) shard[0].push_back(all[i]);  // also in shard 0
    index += (i ? ", \"" : "\"") + all[i].name + "\": \"s" + std::to_string(s) + ".safetensors\"";
  }
  index += extra_index_entry + "}}";
  write_file(dir, "model.safetensors.index.json", index);
  for (int s = 0; s < 2; ++s) {
    SafetensorsWriter w(dir + "/s" + std::to_string(s) + ".safetensors", shard[s]);
    for (const SafetensorsTensorSpec& t : shard[s]) {
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      const std::vector<float> zeros(static_cast<size_t>(n));
      w.write(t.name, zeros.data(), n);
    }
    w.finish();
  }
  return dir;
}

TEST(HfGptjImport, ShardedIndexErrors) {
  auto halves = [](size_t i) { return i % 1000 < 12 ? 0 : 1; };
  const std::string good = make_sharded("good", halves);
  EXPECT_EQ(open_hf_gptj(good)->describe(), "Hugging Face GPT-J in " + good + " (bf16, 2 files)");

  // A parameter stored in both shards though the index names one.
  const std::string twice = make_sharded("twice", [](size_t i) {
    if (i >= 1000) return i - 1000 == 20 ? 2 : 0;
    return i < 12 ? 0 : 1;
  });
  EXPECT_EQ(user_error_of([&] { open_hf_gptj(twice); }),
            twice + "/s0.safetensors holds tensor \"" + all_params(DType::kBF16)[20].name +
                "\", but " + twice + "/model.safetensors.index.json places it in s1.safetensors: "
                "the index and its shards do not belong together");

  // A shard the index names but the directory lacks.
  const std::string lost = make_sharded("lost", halves, ", \"x\": \"s2.safetensors\"");
  EXPECT_EQ(user_error_of([&] { open_hf_gptj(lost); }),
            lost + "/model.safetensors.index.json lists shard s2.safetensors, but " + lost +
                "/s2.safetensors does not exist: the download is incomplete");
  const std::string escape = make_sharded("escape", halves, ", \"x\": \"../s0.safetensors\"");
  EXPECT_EQ(user_error_of([&] { open_hf_gptj(escape); }),
            escape + "/model.safetensors.index.json maps \"x\" to \"../s0.safetensors\": shard "
                     "names must be plain file names in the same directory");
}

// ---------------------------------------------------------------------------------------------
// Export

TEST(HfGptjExport, WritesAStreamedCompleteDirectory) {
  const std::string root = zt::testing::fresh_dir("export");
  MemorySource src(tiny_config(), 7);
  const std::string out = root + "/hf";
  write_hf_gptj(out + "/", src, DType::kF32, false);  // a trailing slash is fine
  EXPECT_EQ(src.reads, 25);  // one chunk per parameter at this size
  EXPECT_EQ(read_file(out + "/config.json"), hf_config_json(tiny_config(), DType::kF32));
  EXPECT_EQ(std::distance(fs::directory_iterator(root), fs::directory_iterator()), 1)
      << "no temporary directory is left";
  const SafetensorsFile f(out + "/model.safetensors");
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  const std::vector<ParamSpec> specs = gptj_param_specs(tiny_config());
  ASSERT_EQ(f.names().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) EXPECT_EQ(f.names()[i], specs[i].name);

  // A non-empty directory is refused without overwrite, and kept as it was.
  EXPECT_EQ(user_error_of([&] { write_hf_gptj(out, src, DType::kBF16, false); }),
            "cannot export to " + out + ": the directory exists and is not empty; choose a new "
            "directory or allow overwriting it");
  EXPECT_EQ(SafetensorsFile(out + "/model.safetensors").at("lm_head.bias").dtype, "F32");
  // With overwrite it is replaced, and only once the new one is complete: a failing source
  // leaves the old directory and no temporary one.
  src.fail_at = 10;
  EXPECT_EQ(user_error_of([&] { write_hf_gptj(out, src, DType::kBF16, true); }),
            "reading failed on purpose");
  EXPECT_EQ(SafetensorsFile(out + "/model.safetensors").at("lm_head.bias").dtype, "F32");
  EXPECT_EQ(std::distance(fs::directory_iterator(root), fs::directory_iterator()), 1);
  src.fail_at = -1;
  // Overwriting deletes the old directory whole, so it must hold only an export: anything else
  // (a user's file, a checkpoint, the export's own input) is refused and kept.
  write_file(out, "notes.txt", "the user's");
  fs::create_directories(out + "/ckpt");
  EXPECT_EQ(user_error_of([&] { write_hf_gptj(out, src, DType::kBF16, true); }),
            "cannot export to " + out + ": it holds what an export does not write (ckpt/, "
            "notes.txt), and overwriting would delete it; choose a new directory, or one that "
            "holds only an earlier export");
  EXPECT_EQ(read_file(out + "/notes.txt"), "the user's");
  fs::remove(out + "/notes.txt");
  fs::remove(out + "/ckpt");
  write_file(out, "model-00002-of-00002.safetensors", "from an older, sharded export");
  write_hf_gptj(out, src, DType::kBF16, true);
  EXPECT_EQ(SafetensorsFile(out + "/model.safetensors").at("lm_head.bias").dtype, "BF16");
  EXPECT_FALSE(fs::exists(out + "/model-00002-of-00002.safetensors"));
  EXPECT_EQ(std::distance(fs::directory_iterator(root), fs::directory_iterator()), 1);

  // An existing empty directory is used as is; a file in the way and fp64 are refused.
  fs::create_directory(root + "/empty");
  write_hf_gptj(root + "/empty", src, DType::kF16, false);
  EXPECT_TRUE(is_hf_gptj_dir(root + "/empty"));
  write_file(root, "file", "x");
  EXPECT_EQ(user_error_of([&] { write_hf_gptj(root + "/file", src, DType::kF32, true); }),
            "cannot export to " + root + "/file: it exists and is not a directory");
  EXPECT_EQ(user_error_of([&] { write_hf_gptj(root + "/x", src, DType::kF64, false); }),
            "Hugging Face export writes fp32, bf16 or fp16 weights, not fp64");
}

}  // namespace
}  // namespace zt::model
