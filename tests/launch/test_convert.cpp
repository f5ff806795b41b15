// `zerotrain convert` and `model.init_from` (CPU): the committed Hugging Face fixture
// (tests/fixtures/hf-gptj-tiny, written by transformers) goes to a zerotrain checkpoint and back
// bit for bit, a run starts from a Hugging Face folder, a converted checkpoint or another run's
// checkpoints with exactly their weights, and wrong inputs are refused before anything is written.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "launch/config.h"
#include "launch/convert_cmd.h"
#include "launch/init_weights.h"
#include "launch/trainer.h"
#include "model/hf_gptj.h"
#include "model/params.h"
#include "runtime/log.h"
#include "runtime/self_comm.h"
#include "tests/support/temp_dir.h"
#include "tests/support/user_error.h"
#include "zero/engine.h"

namespace zt::launch {
namespace {

namespace fs = std::filesystem;
using testing::fresh_dir;
using testing::user_error_of;

const std::string kFixture = std::string(ZT_SOURCE_DIR) + "/tests/fixtures/hf-gptj-tiny";

// Every parameter of `w`, concatenated in gptj_param_specs order (as gather_master_values()).
std::vector<float> all_weights(model::WeightSource& w) {
  std::vector<float> out;
  const std::vector<model::ParamSpec> specs = model::gptj_param_specs(w.config());
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t at = out.size();
    out.resize(at + size_t(specs[i].numel()));
    w.read(int(i), 0, specs[i].numel(), out.data() + at);
  }
  return out;
}

std::vector<float> fixture_weights() { return all_weights(*model::open_hf_gptj(kFixture + "/fp32")); }

std::string convert(const std::vector<std::string>& args) { return run_convert(parse_convert_args(args)); }

TEST(Convert, HfToZtAndBackIsBitExact) {
  log_configure(LogOptions{LogLevel::kWarn}, false);
  const std::string dir = fresh_dir("roundtrip");
  const std::string zt = dir + "/zt", hf = dir + "/hf";
  const std::string report = convert({"hf-to-zt", "--in", kFixture + "/fp32", "--out", zt});
  EXPECT_NE(report.find("model.init_from = \"" + zt + "\""), std::string::npos) << report;
  convert({"zt-to-hf", "--in", zt, "--out", hf});
  auto back = model::open_hf_gptj(hf);
  EXPECT_EQ(all_weights(*back), fixture_weights());
  // The sharded bf16 and the fp16 folder with the old mask buffers convert too.
  for (const char* variant : {"bf16-sharded", "fp16-legacy"}) {
    const std::string out = dir + "/" + variant;
    convert({"hf-to-zt", "--in", kFixture + "/" + variant, "--out", out});
    auto a = open_weights(out, "test");
    auto b = model::open_hf_gptj(kFixture + "/" + variant);
    EXPECT_EQ(all_weights(*a), all_weights(*b)) << variant;
  }
}

TEST(Convert, RefusesWhatItCannotDo) {
  log_configure(LogOptions{LogLevel::kWarn}, false);
  const std::string dir = fresh_dir("refuse");
  EXPECT_NE(user_error_of([] { parse_convert_args({}); }).find("needs a direction"), std::string::npos);
  EXPECT_NE(user_error_of([] { parse_convert_args({"hf-to-pt", "--in", "a", "--out", "b"}); })
                .find("the directions are hf-to-zt and zt-to-hf"),
            std::string::npos);
  EXPECT_NE(user_error_of([] { parse_convert_args({"zt-to-hf", "--in", "a"}); }).find("needs --out"),
            std::string::npos);
  EXPECT_NE(user_error_of([] { parse_convert_args({"zt-to-hf", "--in", "a", "--out", "b", "--dtype", "int8"}); })
                .find("--dtype int8: use fp32, bf16 or fp16"),
            std::string::npos);
  EXPECT_NE(user_error_of([] { parse_convert_args({"zt-to-hf", "--in", "a", "--out", "b", "--frobnicate"}); })
                .find("unknown option \"--frobnicate\""),
            std::string::npos);
  EXPECT_TRUE(parse_convert_args({"--help"}).help);

  // A checkpoint is not Hugging Face input, and a folder of something else names what it holds.
  const std::string zt = dir + "/zt";
  convert({"hf-to-zt", "--in", kFixture + "/fp32", "--out", zt});
  EXPECT_NE(user_error_of([&] { convert({"hf-to-zt", "--in", zt, "--out", dir + "/x"}); })
                .find("not Hugging Face weights"),
            std::string::npos);
  fs::create_directories(dir + "/other");
  testing::write_file(dir + "/other", "notes.txt", "hello");
  const std::string msg = user_error_of([&] { convert({"zt-to-hf", "--in", dir + "/other", "--out", dir + "/y"}); });
  EXPECT_NE(msg.find("neither Hugging Face GPT-J weights"), std::string::npos) << msg;
  EXPECT_NE(msg.find("notes.txt"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir + "/y"));
  // An existing output is kept unless --overwrite.
  EXPECT_NE(user_error_of([&] { convert({"hf-to-zt", "--in", kFixture + "/fp32", "--out", zt}); }), "");
  EXPECT_EQ(user_error_of([&] { convert({"hf-to-zt", "--in", kFixture + "/fp32", "--out", zt, "--overwrite"}); }), "");
}

// A run on the fixture's shapes; the hook records the master weights just before step 1's update.
RunConfig fixture_run(const std::string& init_from) {
  RunConfig c = parse_config("", "test", {});
  c.model.shape = model::gptj_config_from_hf(kFixture + "/fp32/config.json");
  c.model.init_from = init_from;
  c.train.steps = 3;
  c.train.micro_batch_size = 2;
  c.train.seq_len = 8;
  c.train.log_every = 1000;
  c.train.device = "cpu";
  return c;
}

std::vector<float> weights_at_first_step(const RunConfig& c, TrainSummary* summary = nullptr) {
  TrainOptions o;
  o.write_outputs = false;
  o.collect_final_params = true;
  std::vector<float> seen;
  o.before_optimizer_step = [&](int64_t step, zero::Engine& e) {
    if (step == 1) seen = e.gather_master_values();
  };
  SelfComm comm;
  TrainSummary s = train(c, comm, o);
  if (summary) *summary = s;
  return seen;
}

TEST(InitFrom, StartsFromHuggingFaceWeightsOrAnyCheckpoint) {
  log_configure(LogOptions{LogLevel::kWarn}, false);
  const std::string dir = fresh_dir("init");
  const std::vector<float> want = fixture_weights();
  EXPECT_EQ(weights_at_first_step(fixture_run(kFixture + "/fp32")), want);

  const std::string zt = dir + "/zt";
  convert({"hf-to-zt", "--in", kFixture + "/fp32", "--out", zt});
  EXPECT_EQ(weights_at_first_step(fixture_run(zt)), want);

  // At stage 3 on the converted checkpoint, saving its own checkpoints; then a run starts from
  // that run's checkpoint_dir (its `latest`), with the first run's final weights.
  RunConfig a = fixture_run(zt);
  a.zero.stage = 3;
  a.train.checkpoint_dir = dir + "/a";
  a.train.save_every = 3;
  TrainSummary first;
  weights_at_first_step(a, &first);
  EXPECT_NE(first.final_params, want);
  EXPECT_EQ(weights_at_first_step(fixture_run(dir + "/a")), first.final_params);

  // A random init differs (so the comparisons above can fail).
  EXPECT_NE(weights_at_first_step(fixture_run("")), want);
}

TEST(InitFrom, WrongWeightsAreRefusedBeforeAnythingIsWritten) {
  log_configure(LogOptions{LogLevel::kWarn}, false);
  const std::string dir = fresh_dir("wrong");
  RunConfig c = fixture_run(kFixture + "/fp32");
  c.model.shape.d_ff = 96;
  c.train.out_dir = dir + "/run";
  TrainOptions o;  // writes outputs: nothing may be created
  SelfComm comm;
  std::string msg = user_error_of([&] { train(c, comm, o); });
  EXPECT_NE(msg.find("d_ff = 80 but the run's model has d_ff = 96"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.init_from"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir + "/run"));

  c = fixture_run(dir + "/missing");
  c.train.out_dir = dir + "/run";
  msg = user_error_of([&] { train(c, comm, o); });
  EXPECT_NE(msg.find("no such folder"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir + "/run"));
}

}  // namespace
}  // namespace zt::launch
