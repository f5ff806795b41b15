// Tests of the config front end: TOML and --set parsing, presets, every error message, the
// resolved-config round trip, and docs/config.md staying in sync with the schema.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "launch/config.h"
#include "launch/config_schema.h"
#include "model/config.h"
#include "runtime/error.h"

namespace zt::launch {
namespace {

// Field by field, so a failure names the field (and RunConfig needs no operator==).
void expect_same_config(const RunConfig& a, const RunConfig& b) {
  EXPECT_EQ(a.model.preset, b.model.preset);
  EXPECT_EQ(a.model.shape.vocab_size, b.model.shape.vocab_size);
  EXPECT_EQ(a.model.shape.n_positions, b.model.shape.n_positions);
  EXPECT_EQ(a.model.shape.d_model, b.model.shape.d_model);
  EXPECT_EQ(a.model.shape.n_layer, b.model.shape.n_layer);
  EXPECT_EQ(a.model.shape.n_head, b.model.shape.n_head);
  EXPECT_EQ(a.model.shape.rotary_dim, b.model.shape.rotary_dim);
  EXPECT_EQ(a.model.shape.d_ff, b.model.shape.d_ff);
  EXPECT_EQ(a.model.shape.layer_norm_eps, b.model.shape.layer_norm_eps);
  EXPECT_EQ(a.model.shape.init_std, b.model.shape.init_std);
  EXPECT_EQ(a.model.activation_checkpointing, b.model.activation_checkpointing);
  EXPECT_EQ(a.model.keep_activations, b.model.keep_activations);

  EXPECT_EQ(a.optimizer.lr, b.optimizer.lr);
  EXPECT_EQ(a.optimizer.min_lr, b.optimizer.min_lr);
  EXPECT_EQ(a.optimizer.warmup_steps, b.optimizer.warmup_steps);
  EXPECT_EQ(a.optimizer.decay, b.optimizer.decay);
  EXPECT_EQ(a.optimizer.beta1, b.optimizer.beta1);
  EXPECT_EQ(a.optimizer.beta2, b.optimizer.beta2);
  EXPECT_EQ(a.optimizer.eps, b.optimizer.eps);
  EXPECT_EQ(a.optimizer.weight_decay, b.optimizer.weight_decay);
  EXPECT_EQ(a.optimizer.decay_bias_and_norm, b.optimizer.decay_bias_and_norm);
  EXPECT_EQ(a.optimizer.grad_clip, b.optimizer.grad_clip);

  EXPECT_EQ(a.train.micro_batch_size, b.train.micro_batch_size);
  EXPECT_EQ(a.train.grad_accum_steps, b.train.grad_accum_steps);
  EXPECT_EQ(a.train.global_batch_size, b.train.global_batch_size);
  EXPECT_EQ(a.train.seq_len, b.train.seq_len);
  EXPECT_EQ(a.train.steps, b.train.steps);
  EXPECT_EQ(a.train.seed, b.train.seed);
  EXPECT_EQ(a.train.log_every, b.train.log_every);
  EXPECT_EQ(a.train.out_dir, b.train.out_dir);
  EXPECT_EQ(a.train.overwrite, b.train.overwrite);
  EXPECT_EQ(a.train.threads, b.train.threads);
  EXPECT_EQ(a.train.precision, b.train.precision);
  EXPECT_EQ(a.train.device, b.train.device);
  EXPECT_EQ(a.train.eval_at_start, b.train.eval_at_start);
  EXPECT_EQ(a.train.checkpoint_dir, b.train.checkpoint_dir);
  EXPECT_EQ(a.train.save_every, b.train.save_every);
  EXPECT_EQ(a.train.keep_last, b.train.keep_last);
  EXPECT_EQ(a.train.resume, b.train.resume);

  EXPECT_EQ(a.data.source, b.data.source);

  EXPECT_EQ(a.zero.stage, b.zero.stage);
  EXPECT_EQ(a.zero.bucket_elements, b.zero.bucket_elements);
  EXPECT_EQ(a.zero.offload_optimizer, b.zero.offload_optimizer);
  EXPECT_EQ(a.zero.offload_params, b.zero.offload_params);
  EXPECT_EQ(a.zero.delayed_update_from_step, b.zero.delayed_update_from_step);
  EXPECT_EQ(a.comm.timeout_s, b.comm.timeout_s);
  EXPECT_EQ(a.comm.backend, b.comm.backend);
  EXPECT_EQ(a.fp16.initial_scale, b.fp16.initial_scale);
  EXPECT_EQ(a.fp16.growth_interval, b.fp16.growth_interval);
  EXPECT_EQ(a.fp16.hysteresis, b.fp16.hysteresis);
  EXPECT_EQ(a.fp16.min_scale, b.fp16.min_scale);
}

// The message of the zt::UserError that `fn` throws ("" and a test failure when it throws none).
std::string user_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const UserError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a zt::UserError";
  return "";
}

std::string parse_error(const std::string& toml, const std::vector<std::string>& overrides = {}) {
  return user_error([&] { parse_config(toml, "run.toml", overrides); });
}

std::string set_error(const std::string& override_text) { return parse_error("", {override_text}); }

// A config where every key differs from its default (and from the tiny preset), with floats
// that have no short decimal form.
RunConfig every_key_changed() {
  RunConfig c;
  c.model.preset = "gptj-6b";
  c.model.shape.vocab_size = 1000;
  c.model.shape.n_positions = 300;
  c.model.shape.d_model = 96;
  c.model.shape.n_layer = 3;
  c.model.shape.n_head = 6;
  c.model.shape.rotary_dim = 8;
  c.model.shape.d_ff = 100;
  c.model.shape.layer_norm_eps = 1.0 / 3.0 * 1e-5;
  c.model.shape.init_std = 0.1 + 0.2;  // 0.30000000000000004
  c.model.activation_checkpointing = true;
  c.model.keep_activations = 2;
  c.model.init_from = "models/gpt-j-6b";
  c.train.on_checkpoint_error = "continue";
  c.train.max_skipped_steps = 7;
  c.train.gemm_choices = "tuned/h200 gemms.txt";
  c.comm.timeout_s = 12.5;
  c.comm.backend = "mpi";  // with train.device = "cpu" below: "nccl" would be refused
  c.optimizer.lr = 2.0 / 3.0;
  c.optimizer.min_lr = 1e-300;
  c.optimizer.warmup_steps = 7;
  c.optimizer.decay = optim::LrDecay::kLinear;
  c.optimizer.beta1 = 0.0;
  c.optimizer.beta2 = 0.999999999999;
  c.optimizer.eps = 5e-324;  // the smallest subnormal
  c.optimizer.weight_decay = 1e20;
  c.optimizer.decay_bias_and_norm = true;
  c.optimizer.grad_clip = 0.0;
  c.train.micro_batch_size = 3;
  c.train.grad_accum_steps = 4;
  c.train.global_batch_size = 12;
  c.train.seq_len = 300;
  c.train.steps = 9000000000;  // past 32 bits
  c.train.seed = 0;
  c.train.log_every = 1;
  c.train.out_dir = "runs/with \"quotes\"\\and\ttab/x";
  c.train.overwrite = true;
  c.train.threads = 3;
  c.train.precision = DType::kBF16;
  c.train.eval_every = 25;
  c.train.eval_batches = 3;
  c.train.eval_at_start = true;
  c.train.checkpoint_dir = "ckpt/with \"quotes\"";
  c.train.save_every = 5;
  c.train.keep_last = 7;
  c.train.resume = "auto";
  c.data.source = "hdf5";
  c.data.path = "data/with \"quotes\"";
  c.data.tokenizer = "tokenizers/gpt2";
  c.data.verify = false;
  c.train.device = "cpu";
  c.zero.stage = 3;  // offload_params needs it
  c.zero.offload_optimizer = "cpu";
  c.zero.offload_params = "cpu";
  c.zero.bucket_elements = 123457;
  c.fp16.initial_scale = 1024.0;
  c.fp16.growth_interval = 77;
  c.fp16.hysteresis = 3;
  c.fp16.min_scale = 0.25;
  return c;
}

TEST(ConfigRules, CheckpointKeys) {
  EXPECT_NE(parse_error("", {"train.resume=auto"}).find("train.resume = \"auto\" needs train.checkpoint_dir"),
            std::string::npos);
  EXPECT_NE(parse_error("", {"train.eval_at_start=true"}).find("train.eval_at_start = true needs train.eval_every > 0"),
            std::string::npos);
  EXPECT_NE(parse_error("", {"train.save_every=5"}).find("train.save_every = 5 needs train.checkpoint_dir"),
            std::string::npos);
  EXPECT_NE(parse_error("", {"train.checkpoint_dir=c", "train.save_every=-1"}).find("train.save_every"),
            std::string::npos);
  EXPECT_NE(parse_error("", {"train.keep_last=0"}).find("train.keep_last"), std::string::npos);
  const RunConfig c = parse_config("", "run.toml", {"train.checkpoint_dir=c", "train.save_every=5",
                                                    "train.resume=auto"});
  EXPECT_EQ(c.train.save_every, 5);
  EXPECT_EQ(c.train.keep_last, 2);
}

TEST(ConfigRules, CommBackend) {
  EXPECT_EQ(parse_config("", "run.toml", {"comm.backend=mpi"}).comm.backend, "mpi");
  EXPECT_EQ(parse_config("", "run.toml", {"comm.backend=nccl", "train.device=cuda"}).comm.backend, "nccl");
  // The CPU backend always uses MPI: asking it for NCCL is a mistake worth naming.
  const std::string cpu = parse_error("", {"comm.backend=nccl", "train.device=cpu"});
  EXPECT_NE(cpu.find("comm.backend = \"nccl\" needs GPUs, but train.device = \"cpu\""), std::string::npos) << cpu;
  const std::string word = parse_error("", {"comm.backend=gloo"});
  EXPECT_NE(word.find("comm.backend"), std::string::npos) << word;
  EXPECT_NE(word.find("\"mpi\""), std::string::npos) << word;
}

TEST(ConfigParse, EmptyTextGivesDefaults) {
  expect_same_config(parse_config("", "run.toml", {}), RunConfig{});
  expect_same_config(load_config("", {}), RunConfig{});
}

TEST(ConfigParse, FullExample) {
  const std::string text = R"(# A small run.
[model]
preset = "gptj-tiny"
d_model = 64
n_head = 2
activation_checkpointing = true

[train]
micro_batch_size = 4
grad_accum_steps = 2
seq_len = 128
steps = 50
seed = 7
log_every = 5
out_dir = "runs/example"
overwrite = true
threads = 2
precision = "bf16"

[optimizer]
lr = 1             # an integer is fine for a float key
min_lr = 1e-4
warmup_steps = 0
decay = "linear"
beta1 = 0.8
beta2 = 0.99
eps = 1e-6
weight_decay = 0.0
decay_bias_and_norm = true
grad_clip = 0.5

[data]
source = "synthetic"
)";
  RunConfig expected;
  expected.model.shape.d_model = 64;
  expected.model.shape.n_head = 2;
  expected.model.activation_checkpointing = true;
  expected.train.micro_batch_size = 4;
  expected.train.grad_accum_steps = 2;
  expected.train.seq_len = 128;
  expected.train.steps = 50;
  expected.train.seed = 7;
  expected.train.log_every = 5;
  expected.train.out_dir = "runs/example";
  expected.train.overwrite = true;
  expected.train.threads = 2;
  expected.train.precision = DType::kBF16;
  expected.optimizer.lr = 1.0;
  expected.optimizer.min_lr = 1e-4;
  expected.optimizer.warmup_steps = 0;
  expected.optimizer.decay = optim::LrDecay::kLinear;
  expected.optimizer.beta1 = 0.8;
  expected.optimizer.beta2 = 0.99;
  expected.optimizer.eps = 1e-6;
  expected.optimizer.weight_decay = 0.0;
  expected.optimizer.decay_bias_and_norm = true;
  expected.optimizer.grad_clip = 0.5;
  expect_same_config(parse_config(text, "run.toml", {}), expected);
}

TEST(ConfigParse, DottedKeysAndInlineTables) {
  const RunConfig c =
      parse_config("train.steps = 5\noptimizer = { lr = 0.5, min_lr = 0.1 }\n", "run.toml", {});
  EXPECT_EQ(c.train.steps, 5);
  EXPECT_EQ(c.optimizer.lr, 0.5);
  EXPECT_EQ(c.optimizer.min_lr, 0.1);
}

TEST(ConfigPreset, ShapeKeysOverrideThePreset) {
  const RunConfig c = parse_config("[model]\npreset = \"gptj-6b\"\nn_layer = 8\n", "run.toml", {});
  model::GptjConfig expected = model::gptj_preset("gptj-6b");
  expected.n_layer = 8;
  EXPECT_EQ(c.model.preset, "gptj-6b");
  EXPECT_EQ(c.model.shape.n_layer, 8);
  EXPECT_EQ(c.model.shape.vocab_size, expected.vocab_size);
  EXPECT_EQ(c.model.shape.n_positions, expected.n_positions);
  EXPECT_EQ(c.model.shape.d_model, expected.d_model);
  EXPECT_EQ(c.model.shape.n_head, expected.n_head);
  EXPECT_EQ(c.model.shape.rotary_dim, expected.rotary_dim);
  EXPECT_EQ(c.model.shape.d_ff, expected.d_ff);
}

TEST(ConfigPreset, OrderDoesNotMatterBetweenPresetAndShapeKeys) {
  // The shape key comes first in the file, and the preset arrives later through --set: the
  // shape key still wins over the preset.
  const RunConfig c = parse_config("[model]\nn_layer = 8\n", "run.toml", {"model.preset=gptj-6b"});
  EXPECT_EQ(c.model.preset, "gptj-6b");
  EXPECT_EQ(c.model.shape.n_layer, 8);
  EXPECT_EQ(c.model.shape.d_model, model::gptj_preset("gptj-6b").d_model);

  const RunConfig d =
      parse_config("[model]\npreset = \"gptj-6b\"\n", "run.toml", {"model.preset=gptj-tiny"});
  EXPECT_EQ(d.model.preset, "gptj-tiny");
  EXPECT_EQ(d.model.shape.d_model, model::gptj_preset("gptj-tiny").d_model);
}

TEST(ConfigRoundTrip, Defaults) {
  const RunConfig defaults;
  expect_same_config(parse_config(config_to_toml(defaults), "resolved.toml", {}), defaults);
}

TEST(ConfigRoundTrip, EveryKeyChanged) {
  const RunConfig changed = every_key_changed();
  // Guard against a key added to the schema but not to every_key_changed(). One key cannot change
  // with the others: zero.delayed_update_from_step excludes zero.offload_params = "cpu", so it
  // round-trips below with offload_params back at its default.
  const RunConfig defaults;
  for (const ConfigKey& k : config_schema()) {
    if (k.key == "zero.delayed_update_from_step") continue;
    EXPECT_NE(format_config_value(k.get(changed)), format_config_value(k.get(defaults)))
        << k.key << " is not changed by every_key_changed()";
  }
  const std::string toml = config_to_toml(changed);
  expect_same_config(parse_config(toml, "resolved.toml", {}), changed);
  RunConfig delayed = changed;
  delayed.zero.offload_params = "none";
  delayed.zero.delayed_update_from_step = 40;
  expect_same_config(parse_config(config_to_toml(delayed), "resolved.toml", {}), delayed);
}

TEST(ConfigRules, DelayedUpdateNeedsTheOptimizerOffloadedAlone) {
  const RunConfig c = parse_config("", "run.toml", {"zero.stage=2", "zero.offload_optimizer=cpu",
                                                    "zero.delayed_update_from_step=20"});
  EXPECT_EQ(c.zero.delayed_update_from_step, 20);
  const std::string none = parse_error("", {"zero.stage=2", "zero.delayed_update_from_step=20"});
  EXPECT_NE(none.find("zero.delayed_update_from_step = 20 needs zero.offload_optimizer = \"cpu\" and "
                      "zero.offload_params = \"none\""), std::string::npos) << none;
  const std::string params = parse_error("", {"zero.stage=3", "zero.offload_optimizer=cpu",
                                              "zero.offload_params=cpu", "zero.delayed_update_from_step=1"});
  EXPECT_NE(params.find("got zero.offload_optimizer = \"cpu\" and zero.offload_params = \"cpu\""),
            std::string::npos) << params;
  EXPECT_NE(parse_error("", {"zero.delayed_update_from_step=-1"}).find("zero.delayed_update_from_step"),
            std::string::npos);
}

TEST(ConfigRoundTrip, TomlListsEveryKeyInSchemaOrder) {
  const std::string toml = config_to_toml(RunConfig{});
  size_t pos = 0;
  std::string section;
  for (const ConfigKey& k : config_schema()) {
    if (k.section != section) {
      section = k.section;
      pos = toml.find("[" + section + "]\n", pos);
      ASSERT_NE(pos, std::string::npos) << section;
    }
    pos = toml.find("\n" + k.name + " = ", pos);
    ASSERT_NE(pos, std::string::npos) << k.key;
  }
  EXPECT_NE(toml.find("\nlr = 0.003\n"), std::string::npos) << toml;
  EXPECT_NE(toml.find("\neps = 1e-08\n"), std::string::npos) << toml;
  EXPECT_NE(toml.find("\ngrad_clip = 1.0\n"), std::string::npos) << toml;
  EXPECT_NE(toml.find("\nprecision = \"fp32\"\n"), std::string::npos) << toml;
}

TEST(ConfigOverrides, ParsedByTheKeysType) {
  const RunConfig c =
      parse_config("", "run.toml",
                   {"train.steps=100", "optimizer.lr=3e-4", "optimizer.min_lr=0",
                    "train.overwrite=true", "train.out_dir=runs/a b", "train.precision=\"bf16\"",
                    "optimizer.decay='constant'", " train.seed = 9 ", "optimizer.beta1=+0.5"});
  EXPECT_EQ(c.train.steps, 100);
  EXPECT_EQ(c.optimizer.lr, 3e-4);
  EXPECT_EQ(c.optimizer.min_lr, 0.0);
  EXPECT_TRUE(c.train.overwrite);
  EXPECT_EQ(c.train.out_dir, "runs/a b");
  EXPECT_EQ(c.train.precision, DType::kBF16);
  EXPECT_EQ(c.optimizer.decay, optim::LrDecay::kConstant);
  EXPECT_EQ(c.train.seed, 9);
  EXPECT_EQ(c.optimizer.beta1, 0.5);
}

TEST(ConfigOverrides, QuotedStringsKeepEscapes) {
  const RunConfig c = parse_config("", "run.toml", {R"(train.out_dir="a\"b\\c")"});
  EXPECT_EQ(c.train.out_dir, "a\"b\\c");
}

TEST(ConfigOverrides, LaterOverridesWinOverEarlierOnesAndTheFile) {
  const RunConfig c = parse_config("[train]\nsteps = 10\nseed = 3\n", "run.toml",
                                   {"train.steps=20", "train.steps=30"});
  EXPECT_EQ(c.train.steps, 30);
  EXPECT_EQ(c.train.seed, 3);
}

TEST(ConfigErrors, UnknownKeySuggestsTheClosest) {
  EXPECT_EQ(parse_error("[train]\nsteps = 5\nmicro_batch = 4\n"),
            "run.toml:3: unknown config key \"train.micro_batch\" (did you mean "
            "\"train.micro_batch_size\"?)");
  EXPECT_EQ(parse_error("[optimizer]\ndecay_bias = true\n"),
            "run.toml:2: unknown config key \"optimizer.decay_bias\" (did you mean "
            "\"optimizer.decay_bias_and_norm\"?)");
  EXPECT_EQ(parse_error("[model]\nnlayer = 4\n"),
            "run.toml:2: unknown config key \"model.nlayer\" (did you mean \"model.n_layer\"?)");
}

TEST(ConfigErrors, UnknownKeySuggestsTheKeyUnderAnotherSection) {
  EXPECT_EQ(parse_error("[optimizer]\nlr = 0.1\nseq_len = 32\n"),
            "run.toml:3: unknown config key \"optimizer.seq_len\" (did you mean "
            "\"train.seq_len\"?)");
  EXPECT_EQ(parse_error("\n\nsteps = 5\n"),
            "run.toml:3: unknown config key \"steps\" (did you mean \"train.steps\"?)");
}

TEST(ConfigErrors, UnknownKeyWithNothingCloseHasNoSuggestion) {
  EXPECT_EQ(parse_error("[optimizer]\nblah = 1\n"),
            "run.toml:2: unknown config key \"optimizer.blah\"");
  EXPECT_EQ(parse_error("[train]\nsubtable.x = 1\n"),
            "run.toml:2: unknown config key \"train.subtable\"");
}

TEST(ConfigErrors, TheFirstProblemInTheFileIsReported) {
  // TOML++ iterates keys alphabetically; the error must still be the first line's.
  EXPECT_EQ(parse_error("[train]\nzzz = 1\naaa = 2\n"),
            "run.toml:2: unknown config key \"train.zzz\"");
}

TEST(ConfigErrors, UnknownSection) {
  EXPECT_EQ(parse_error("[train]\nsteps = 5\n\n[optimiser]\nlr = 0.1\n"),
            "run.toml:4: unknown config section \"optimiser\" (did you mean \"optimizer\"?)");
  EXPECT_EQ(parse_error("[logging]\nlevel = 1\n"),
            "run.toml:1: unknown config section \"logging\"");
}

TEST(ConfigErrors, SectionThatIsNotATable) {
  EXPECT_EQ(parse_error("train = 5\n"),
            "run.toml:1: train = 5 has the wrong type: expected a table ([train]), got an integer");
}

TEST(ConfigErrors, WrongType) {
  EXPECT_EQ(parse_error("[train]\nsteps = \"100\"\n"),
            "run.toml:2: train.steps = \"100\" has the wrong type: expected an integer, got a "
            "string");
  EXPECT_EQ(parse_error("[train]\nsteps = 1.5\n"),
            "run.toml:2: train.steps = 1.5 has the wrong type: expected an integer, got a float");
  EXPECT_EQ(parse_error("[optimizer]\nlr = true\n"),
            "run.toml:2: optimizer.lr = true has the wrong type: expected a number, got a "
            "boolean");
  EXPECT_EQ(parse_error("[train]\noverwrite = 1\n"),
            "run.toml:2: train.overwrite = 1 has the wrong type: expected true or false, got an "
            "integer");
  EXPECT_EQ(parse_error("[train]\nprecision = [\"bf16\"]\n"),
            "run.toml:2: train.precision = [\"bf16\"] has the wrong type: expected a string, "
            "got an array");
}

TEST(ConfigErrors, OutOfRange) {
  EXPECT_EQ(parse_error("[train]\nmicro_batch_size = 0\n"),
            "run.toml:2: train.micro_batch_size = 0 is out of range: must be >= 1");
  EXPECT_EQ(parse_error("[optimizer]\nbeta2 = 1.0\n"),
            "run.toml:2: optimizer.beta2 = 1.0 is out of range: must be in [0, 1)");
  EXPECT_EQ(parse_error("[optimizer]\nlr = 0\n"),
            "run.toml:2: optimizer.lr = 0.0 is out of range: must be > 0");
  EXPECT_EQ(parse_error("[optimizer]\nlr = inf\n"),
            "run.toml:2: optimizer.lr = inf is out of range: must be finite and > 0");
  EXPECT_EQ(parse_error("[optimizer]\nweight_decay = nan\n"),
            "run.toml:2: optimizer.weight_decay = nan is out of range: must be finite and >= 0");
  EXPECT_EQ(parse_error("[model]\nrotary_dim = -2\n"),
            "run.toml:2: model.rotary_dim = -2 is out of range: must be >= 0");
  EXPECT_EQ(parse_error("[train]\nout_dir = \"\"\n"),
            "run.toml:2: train.out_dir = \"\" is not allowed: must be non-empty");
}

TEST(ConfigErrors, EnumNotAllowed) {
  EXPECT_EQ(parse_error("[train]\nprecision = \"fp8\"\n"),
            "run.toml:2: train.precision = \"fp8\" is not allowed: use one of \"fp32\", \"bf16\", \"fp16\"");
  EXPECT_EQ(parse_error("[optimizer]\ndecay = \"step\"\n"),
            "run.toml:2: optimizer.decay = \"step\" is not allowed: use one of \"constant\", "
            "\"cosine\", \"linear\"");
  EXPECT_EQ(parse_error("[model]\npreset = \"gptj-7b\"\n"),
            "run.toml:2: model.preset = \"gptj-7b\" is not allowed: use one of \"gptj-6b\", "
            "\"gptj-tiny\"");
  EXPECT_EQ(parse_error("[data]\nsource = \"files\"\n"),
            "run.toml:2: data.source = \"files\" is not allowed: use one of \"synthetic\", \"hdf5\"");
}

TEST(ConfigErrors, InvalidToml) {
  const std::string message = parse_error("[train]\nsteps = 5\nseed = = 3\n");
  EXPECT_EQ(message.rfind("run.toml:3:", 0), 0u) << message;
  EXPECT_NE(message.find(": invalid TOML: "), std::string::npos) << message;

  const std::string duplicate = parse_error("[train]\nsteps = 5\nsteps = 6\n");
  EXPECT_EQ(duplicate.rfind("run.toml:3:", 0), 0u) << duplicate;
  EXPECT_NE(duplicate.find(": invalid TOML: "), std::string::npos) << duplicate;
}

TEST(ConfigErrors, MissingFile) {
  const std::string path = "/nonexistent/zerotrain/run.toml";
  EXPECT_EQ(user_error([&] { load_config(path, {}); }),
            "cannot read config file \"/nonexistent/zerotrain/run.toml\": No such file or "
            "directory; check the path, or run `zerotrain train --help` for the config keys");
  EXPECT_EQ(user_error([&] { load_config("/", {}); }),
            "cannot read config file \"/\": Is a directory; check the path, or run `zerotrain "
            "train --help` for the config keys");
}

TEST(ConfigErrors, LoadConfigNamesTheFileInErrors) {
  const std::string path = ::testing::TempDir() + "zt_test_config_bad.toml";
  {
    std::ofstream out(path);
    out << "[train]\n\nstep = 5\n";
  }
  EXPECT_EQ(user_error([&] { load_config(path, {}); }),
            path + ":3: unknown config key \"train.step\" (did you mean \"train.steps\"?)");
  std::remove(path.c_str());
}

TEST(ConfigErrors, OverrideErrors) {
  EXPECT_EQ(set_error("train.steps=abc"), "--set train.steps=abc: expected an integer");
  EXPECT_EQ(set_error("train.steps=1.5"), "--set train.steps=1.5: expected an integer");
  EXPECT_EQ(set_error("optimizer.lr=fast"), "--set optimizer.lr=fast: expected a number");
  EXPECT_EQ(set_error("train.overwrite=yes"), "--set train.overwrite=yes: expected true or false");
  EXPECT_EQ(set_error("trian.steps=5"),
            "--set trian.steps=5: unknown config key \"trian.steps\" (did you mean "
            "\"train.steps\"?)");
  EXPECT_EQ(set_error("optimizer.seq_len=5"),
            "--set optimizer.seq_len=5: unknown config key \"optimizer.seq_len\" (did you mean "
            "\"train.seq_len\"?)");
  EXPECT_EQ(set_error("train.steps"),
            "--set train.steps: expected section.key=value, e.g. --set train.steps=100");
  EXPECT_EQ(set_error("train.micro_batch_size=0"),
            "--set train.micro_batch_size=0: train.micro_batch_size = 0 is out of range: must be "
            ">= 1");
  EXPECT_EQ(set_error("optimizer.beta1=1"),
            "--set optimizer.beta1=1: optimizer.beta1 = 1.0 is out of range: must be in [0, 1)");
  EXPECT_EQ(set_error("train.precision=fp8"),
            "--set train.precision=fp8: train.precision = \"fp8\" is not allowed: use one of "
            "\"fp32\", \"bf16\", \"fp16\"");
  // Bytes that are not UTF-8 would make config.toml unreadable (and other ranks fail late).
  EXPECT_NE(set_error("train.out_dir=runs/a\xff" "b").find("must be UTF-8 text"), std::string::npos);
  EXPECT_EQ(set_error("train.threads=100000"),
            "--set train.threads=100000: train.threads = 100000 is out of range: must be in [0, 4096]");
}

// Sizes are int64 products of the shape and batch keys: values that would overflow them are
// refused (they crashed, or ran with a wrapped size).
TEST(ConfigErrors, SizesThatWouldOverflowAreRefused) {
  EXPECT_NE(set_error("model.d_ff=9223372036854775807").find("at most 2^48"), std::string::npos);
  EXPECT_NE(parse_error("", {"model.d_model=4611686018427387904", "model.n_head=1", "model.rotary_dim=0"})
                .find("at most 2^48"),
            std::string::npos);
  EXPECT_NE(set_error("model.n_positions=100000000").find("at most 2^24"), std::string::npos);
  EXPECT_NE(set_error("train.micro_batch_size=100000000000").find("would pass 2^48 elements"),
            std::string::npos);
  EXPECT_NE(set_error("train.global_batch_size=9223372036854775800").find("would pass 2^48"),
            std::string::npos);
  parse_config("", "run.toml", {"model.preset=gptj-6b", "train.micro_batch_size=64",
                                "train.seq_len=2048"});  // a large real run is fine
}

TEST(ConfigErrors, CrossKeyRules) {
  EXPECT_EQ(parse_error("[train]\nseq_len = 512\n"),
            "run.toml:2: train.seq_len = 512 is out of range: must be <= model.n_positions = 256");
  EXPECT_EQ(parse_error("[train]\nseq_len = 128\n", {"model.n_positions=100"}),
            "run.toml:2: train.seq_len = 128 is out of range: must be <= model.n_positions = 100");
  // Only n_positions was set: the error points at it.
  EXPECT_EQ(parse_error("", {"model.n_positions=32"}),
            "--set model.n_positions=32: train.seq_len = 64 is out of range: must be <= "
            "model.n_positions = 32");
  EXPECT_EQ(parse_error("[optimizer]\nlr = 0.001\nmin_lr = 0.01\n"),
            "run.toml:3: optimizer.min_lr = 0.01 is out of range: must be <= optimizer.lr = 0.001");
  EXPECT_EQ(parse_error("", {"optimizer.lr=1e-4"}),
            "--set optimizer.lr=1e-4: optimizer.min_lr = 0.0003 is out of range: must be <= "
            "optimizer.lr = 0.0001");
  EXPECT_EQ(parse_error("[fp16]\ninitial_scale = 2.0\nmin_scale = 4.0\n"),
            "run.toml:2: fp16.initial_scale = 2.0 is out of range: must be >= fp16.min_scale = 4.0");
}

TEST(ConfigErrors, KeptActivationsNeedCheckpointingAndAtMostEveryBlock) {
  // gptj-tiny has 2 blocks.
  EXPECT_EQ(parse_error("[model]\nactivation_checkpointing = true\nkeep_activations = 3\n"),
            "run.toml:3: model.keep_activations = 3 is out of range: must be <= model.n_layer = 2 "
            "(keeping every block's activations is model.activation_checkpointing = false)");
  EXPECT_EQ(parse_error("[model]\nkeep_activations = 1\n"),
            "run.toml:2: model.keep_activations = 1 needs model.activation_checkpointing = true: "
            "without checkpointing every block already keeps its activations; turn checkpointing "
            "on, or set model.keep_activations = 0");
  // Lowering n_layer under a kept count is caught too, at the key that set it.
  EXPECT_NE(parse_error("[model]\nactivation_checkpointing = true\nkeep_activations = 2\n",
                        {"model.n_layer=1"})
                .find("run.toml:3: model.keep_activations = 2 is out of range"),
            std::string::npos);
  EXPECT_NE(parse_error("[model]\nactivation_checkpointing = true\n", {"model.keep_activations=-1"})
                .find("model.keep_activations"),
            std::string::npos);
  const RunConfig ok = parse_config(
      "[model]\nactivation_checkpointing = true\nkeep_activations = 2\n", "run.toml", {});
  EXPECT_EQ(ok.model.keep_activations, 2);
  EXPECT_EQ(parse_config("", "run.toml", {}).model.keep_activations, 0);
}

// train.global_batch_size: a multiple of the micro-batch in the config; the accumulation follows
// from the rank count at launch (with_rank_count), and a conflicting grad_accum_steps is an error.
TEST(ConfigErrors, GlobalBatchSizeDerivesTheAccumulationForTheRankCount) {
  EXPECT_EQ(parse_error("[train]\nmicro_batch_size = 4\nglobal_batch_size = 10\n"),
            "run.toml:3: train.global_batch_size = 10 is not a multiple of train.micro_batch_size = "
            "4: each rank runs whole micro-batches (global = micro x grad_accum_steps x ranks)");
  const RunConfig c = parse_config("[train]\nmicro_batch_size = 4\nglobal_batch_size = 32\n", "run.toml", {});
  EXPECT_EQ(with_rank_count(c, 1).train.grad_accum_steps, 8);
  EXPECT_EQ(with_rank_count(c, 2).train.grad_accum_steps, 4);
  EXPECT_EQ(with_rank_count(c, 8).train.grad_accum_steps, 1);
  EXPECT_EQ(with_rank_count(c, 2).train.global_batch_size, 32);
  auto error = [](const RunConfig& config, int ranks) {
    try {
      with_rank_count(config, ranks);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(error(c, 3),
            "train.global_batch_size = 32 cannot be split into whole micro-batches on 3 ranks: it must "
            "be a multiple of train.micro_batch_size x ranks = 4 x 3 = 12; change the global batch, "
            "the micro-batch or the number of ranks");
  // More ranks than the global batch has micro-batches.
  EXPECT_NE(error(c, 16).find("on 16 ranks: it must be a multiple of train.micro_batch_size x ranks = "
                              "4 x 16 = 64"),
            std::string::npos);
  // An accumulation that agrees is fine; another one is refused.
  RunConfig both = c;
  both.train.grad_accum_steps = 4;
  EXPECT_EQ(with_rank_count(both, 2).train.grad_accum_steps, 4);
  EXPECT_EQ(error(both, 1),
            "train.grad_accum_steps = 4 disagrees with train.global_batch_size = 32, which on 1 rank of "
            "train.micro_batch_size = 4 needs 8: set only one of them (global_batch_size derives the "
            "accumulation)");
  // 0 leaves the config as it is.
  RunConfig plain = parse_config("[train]\ngrad_accum_steps = 3\n", "run.toml", {});
  EXPECT_EQ(with_rank_count(plain, 5).train.grad_accum_steps, 3);
}

// model.keep_activations = "auto" (the trainer picks the count; launch/estimate.h): the one word
// the key takes besides an integer, in the file and through --set, written back as "auto".
TEST(ConfigErrors, KeptActivationsTakeAutoAndNoOtherWord) {
  const std::string on = "[model]\nactivation_checkpointing = true\n";
  const RunConfig a = parse_config(on + "keep_activations = \"auto\"\n", "run.toml", {});
  EXPECT_EQ(a.model.keep_activations, kKeepActivationsAuto);
  EXPECT_NE(config_to_toml(a).find("keep_activations = \"auto\"\n"), std::string::npos);
  expect_same_config(parse_config(config_to_toml(a), "resolved.toml", {}), a);
  EXPECT_EQ(parse_config(on, "run.toml", {"model.keep_activations=auto"}).model.keep_activations,
            kKeepActivationsAuto);
  EXPECT_EQ(parse_config(on, "run.toml", {"model.keep_activations=\"auto\""}).model.keep_activations,
            kKeepActivationsAuto);
  // A number after "auto" replaces it.
  EXPECT_EQ(parse_config(on + "keep_activations = \"auto\"\n", "run.toml", {"model.keep_activations=1"})
                .model.keep_activations,
            1);
  EXPECT_EQ(parse_error(on + "keep_activations = \"max\"\n"),
            "run.toml:3: model.keep_activations = \"max\" is not allowed: use an integer or \"auto\"");
  EXPECT_EQ(parse_error(on, {"model.keep_activations=Auto"}),
            "--set model.keep_activations=Auto: model.keep_activations = \"Auto\" is not allowed: use "
            "an integer or \"auto\"");
  EXPECT_EQ(parse_error(on + "keep_activations = 1.5\n"),
            "run.toml:3: model.keep_activations = 1.5 has the wrong type: expected an integer or "
            "\"auto\", got a float");
  EXPECT_EQ(parse_error("[model]\nkeep_activations = \"auto\"\n"),
            "run.toml:2: model.keep_activations = \"auto\" needs model.activation_checkpointing = "
            "true: without checkpointing every block already keeps its activations; turn "
            "checkpointing on, or set model.keep_activations = 0");
  // Other integer keys still take no word.
  EXPECT_EQ(parse_error("[train]\nsteps = \"auto\"\n"),
            "run.toml:2: train.steps = \"auto\" has the wrong type: expected an integer, got a string");
  EXPECT_EQ(parse_error("", {"train.steps=auto"}), "--set train.steps=auto: expected an integer");
}

TEST(ConfigErrors, OffloadNeedsAPartitioningStage) {
  EXPECT_EQ(parse_error("[zero]\noffload_optimizer = \"cpu\"\n"),
            "run.toml:2: zero.offload_optimizer = \"cpu\" needs zero.stage 1, 2 or 3: stage 0 keeps "
            "the whole optimizer state on every rank; set zero.stage = 2 (the usual choice with "
            "offload)");
  EXPECT_EQ(parse_config("[zero]\nstage = 2\noffload_optimizer = \"cpu\"\n", "run.toml", {})
                .zero.offload_optimizer,
            "cpu");
  EXPECT_NE(parse_error("[zero]\noffload_optimizer = \"gpu\"\n").find("\"none\", \"cpu\""),
            std::string::npos);
}

TEST(ConfigErrors, OffloadedParametersNeedStageThreeAndTheOffloadedOptimizer) {
  const std::string tail =
      " (only stage 3 partitions the parameters, and the CPU AdamW writes them into host memory)";
  EXPECT_EQ(parse_error("[zero]\nstage = 3\noffload_params = \"cpu\"\n"),
            "run.toml:3: zero.offload_params = \"cpu\" needs zero.stage = 3 and "
            "zero.offload_optimizer = \"cpu\"" + tail + "; got zero.stage = 3 and "
            "zero.offload_optimizer = \"none\"");
  EXPECT_EQ(parse_error("[zero]\nstage = 2\noffload_optimizer = \"cpu\"\n"
                        "offload_params = \"cpu\"\n"),
            "run.toml:4: zero.offload_params = \"cpu\" needs zero.stage = 3 and "
            "zero.offload_optimizer = \"cpu\"" + tail + "; got zero.stage = 2 and "
            "zero.offload_optimizer = \"cpu\"");
  // Set by --set: the location is the override.
  EXPECT_NE(parse_error("[zero]\nstage = 3\noffload_optimizer = \"cpu\"\n",
                        {"zero.stage=1", "zero.offload_params=cpu"})
                .find("zero.offload_params = \"cpu\" needs zero.stage = 3"),
            std::string::npos);
  const RunConfig ok = parse_config(
      "[zero]\nstage = 3\noffload_optimizer = \"cpu\"\noffload_params = \"cpu\"\n", "run.toml", {});
  EXPECT_EQ(ok.zero.offload_params, "cpu");
  EXPECT_EQ(parse_config("", "run.toml", {}).zero.offload_params, "none");
  EXPECT_NE(parse_error("[zero]\noffload_params = \"gpu\"\n").find("\"none\", \"cpu\""),
            std::string::npos);
}

TEST(ConfigErrors, ZeroStageOutOfRange) {
  EXPECT_EQ(parse_error("[zero]\nstage = 4\n"),
            "run.toml:2: zero.stage = 4 is out of range: must be in [0, 3]");
}

TEST(ConfigErrors, ModelValidationSurfaces) {
  EXPECT_EQ(parse_error("[model]\nd_model = 100\nn_head = 3\n"),
            "model.d_model (100) must be divisible by model.n_head (3)");
  EXPECT_NE(parse_error("[model]\nrotary_dim = 3\n").find("model.rotary_dim = 3 must be even"),
            std::string::npos);
}

TEST(ConfigReference, TextListsEveryKey) {
  const std::string text = config_reference_text();
  for (const ConfigKey& k : config_schema()) {
    EXPECT_NE(text.find("  " + k.key + " "), std::string::npos) << k.key;
    EXPECT_NE(text.find(k.meaning), std::string::npos) << k.key;
  }
  for (const std::string& s : config_sections())
    EXPECT_NE(text.find("[" + s + "]\n"), std::string::npos) << s;
  EXPECT_NE(text.find("\"fp32\", \"bf16\""), std::string::npos);
  EXPECT_NE(text.find("[0, 1)"), std::string::npos);
}

TEST(ConfigReference, DefaultsComeFromTheStructs) {
  const RunConfig defaults;
  EXPECT_EQ(find_config_key("train.micro_batch_size")->default_text,
            std::to_string(defaults.train.micro_batch_size));
  EXPECT_EQ(find_config_key("optimizer.lr")->default_text, "0.003");
  EXPECT_EQ(find_config_key("model.preset")->default_text, "\"gptj-tiny\"");
  EXPECT_EQ(find_config_key("model.n_layer")->default_text, "from preset");
  EXPECT_NE(find_config_key("model.n_layer")->meaning.find("gptj-6b 28, gptj-tiny 2"),
            std::string::npos);
}

// docs/config.md is generated from the schema; ZT_UPDATE_DOCS=1 rewrites it.
TEST(ConfigDocs, MarkdownIsInSync) {
  const std::string path = std::string(ZT_SOURCE_DIR) + "/docs/config.md";
  const std::string expected = config_reference_markdown();
  const char* update = std::getenv("ZT_UPDATE_DOCS");
  if (update && std::string(update) == "1") {
    std::ofstream out(path, std::ios::binary);
    out << expected;
    ASSERT_TRUE(out.good()) << "cannot write " << path;
    return;
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream actual;
  actual << in.rdbuf();
  EXPECT_TRUE(in.is_open() && actual.str() == expected)
      << path << " is not what config_reference_markdown() gives (the config schema changed). "
      << "Regenerate it with: ZT_UPDATE_DOCS=1 zt_tests_launch --gtest_filter=ConfigDocs.*";
}

}  // namespace
}  // namespace zt::launch
