// The single-process training loop over the synthetic corpus.
#include "launch/trainer.h"

#include <omp.h>

#include <filesystem>
#include <fstream>
#include <system_error>

#include "datasets/synthetic.h"
#include "model/gptj.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/memory.h"
#include "runtime/timer.h"
#include "zero/engine.h"

namespace zt::launch {

namespace {

namespace fs = std::filesystem;

// Creates out_dir and checks that it does not hold an earlier run (unless overwrite is set).
void prepare_out_dir(const TrainSection& t) {
  const fs::path dir(t.out_dir);
  const fs::path metrics = dir / "metrics.jsonl";
  std::error_code ec;
  if (fs::exists(metrics, ec) && !t.overwrite)
    throw_user_error("train.out_dir \"", t.out_dir, "\" already holds a run (", metrics.string(),
                     "); choose another train.out_dir, or set train.overwrite = true to replace it");
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw_user_error("cannot create train.out_dir \"", t.out_dir, "\": ",
                     ec ? ec.message() : std::string("a file of that name exists"));
}

void write_text_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw_user_error("cannot write \"", path.string(), "\" (check that train.out_dir is writable)");
}

}  // namespace

TrainSummary train(const RunConfig& config) {
  const TrainSection& t = config.train;
  const model::GptjConfig& shape = config.model.shape;
  if (t.threads > 0) omp_set_num_threads(int(t.threads));

  prepare_out_dir(t);  // first: a refused out_dir must stop the run before it prints anything
  const std::string resolved = config_to_toml(config);
  log_info("resolved config:\n", resolved);
  write_text_file(fs::path(t.out_dir) / "config.toml", resolved);
  MetricsWriter metrics((fs::path(t.out_dir) / "metrics.jsonl").string());

  model::ModelOptions model_options;
  model_options.activation_checkpointing = config.model.activation_checkpointing;
  std::unique_ptr<model::GptjModel> model = model::make_cpu_gptj(shape, model_options);

  zero::EngineOptions engine_options;
  engine_options.param_dtype = t.precision;
  engine_options.optimizer = config.optimizer;
  engine_options.total_steps = t.steps;
  engine_options.seed = uint64_t(t.seed);
  zero::Engine engine(shape, engine_options);

  const datasets::SyntheticCorpus corpus(shape.vocab_size, uint64_t(t.seed));
  TrainSummary summary;
  summary.num_params = engine.num_params();
  summary.loss_floor = corpus.entropy_rate();

  const int64_t b = t.micro_batch_size, seq = t.seq_len;
  const int64_t tokens_per_step = b * seq * t.grad_accum_steps;
  const MemStats init_mem = MemoryTracker::of(Device::cpu()).stats();
  log_info("model gptj (", config.model.preset, " shapes): ", summary.num_params, " parameters, ",
           shape.n_layer, " layers, d_model ", shape.d_model, "; precision ", dtype_name(t.precision),
           "; device cpu (", omp_get_max_threads(), " threads); world size 1, zero stage 0");
  log_info("model state in memory: ", init_mem.describe_current());
  log_info("data: synthetic Markov corpus over ", shape.vocab_size, " tokens (best possible loss ~",
           summary.loss_floor, " nats/token); ", tokens_per_step, " tokens per step = ", b,
           " sequences x ", seq, " tokens x ", t.grad_accum_steps, " accumulation steps");

  std::vector<int32_t> sample(size_t(seq + 1));
  std::vector<int32_t> inputs(size_t(b * seq)), targets(size_t(b * seq));
  uint64_t next_sample = 0;
  ProgressLine progress;
  Timer run_timer;
  for (int64_t step = 1; step <= t.steps; ++step) {
    Timer step_timer;
    engine.zero_grads();
    double loss_sum = 0.0;
    for (int64_t micro = 0; micro < t.grad_accum_steps; ++micro) {
      for (int64_t row = 0; row < b; ++row) {
        corpus.sample(next_sample++, seq + 1, sample.data());
        std::copy(sample.begin(), sample.end() - 1, inputs.begin() + row * seq);
        std::copy(sample.begin() + 1, sample.end(), targets.begin() + row * seq);
      }
      const model::Batch batch{inputs.data(), targets.data(), b, seq};
      // Each micro-batch contributes 1/grad_accum_steps of its mean-loss gradient, so the step
      // follows the mean loss over all micro-batches.
      const model::LossSum loss =
          model->forward_backward(batch, engine, 1.0 / double(t.grad_accum_steps));
      loss_sum += loss.mean();
    }
    const zero::StepStats stats = engine.step();

    StepMetrics m;
    m.step = step;
    m.loss = loss_sum / double(t.grad_accum_steps);
    m.lr = stats.lr;
    m.grad_norm = stats.grad_norm;
    m.tokens_per_s = double(tokens_per_step) / step_timer.seconds();
    m.peak_mem_bytes = MemoryTracker::of(Device::cpu()).stats().peak_total;
    m.elapsed_s = run_timer.seconds();
    m.skipped = stats.skipped;
    metrics.write(m);
    summary.steps.push_back(m);
    if (step % t.log_every == 0 || step == t.steps || step == 1) {
      progress.clear();
      log_info(format_step_line(m, t.steps));
    } else {
      progress.update(m, t.steps);
    }
  }
  progress.clear();
  const StepMetrics& last = summary.steps.back();
  log_info("done: ", t.steps, " steps in ", run_timer.seconds(), " s; loss ", summary.steps.front().loss,
           " -> ", last.loss, "; metrics in ", (fs::path(t.out_dir) / "metrics.jsonl").string());
  return summary;
}

}  // namespace zt::launch
