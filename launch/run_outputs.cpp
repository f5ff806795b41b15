// train.out_dir: the refusal to overwrite, and a resumed run continuing its own metrics.
#include "launch/run_outputs.h"

#include <cstdio>
#include <exception>
#include <filesystem>
#include <system_error>
#include <vector>

#include "runtime/error.h"
#include "runtime/file_io.h"
#include "runtime/log.h"

namespace zt::launch {

namespace {

namespace fs = std::filesystem;

fs::path metrics_path(const TrainSection& t) { return fs::path(t.out_dir) / "metrics.jsonl"; }

bool same_path(const std::string& a, const std::string& b) {
  std::error_code ec;
  const fs::path pa = fs::weakly_canonical(fs::absolute(a), ec);
  if (ec) return false;
  const fs::path pb = fs::weakly_canonical(fs::absolute(b), ec);
  return !ec && pa == pb;
}

// True when this run resumes from its own checkpoints and out_dir holds the outputs of that run:
// train.resume is set and out_dir's config.toml names the same train.checkpoint_dir. An earlier
// run without one saved on a stop signal to <out_dir>/checkpoints, which its resume names.
bool continues_out_dir(const TrainSection& t) {
  if (t.resume.empty() || t.checkpoint_dir.empty()) return false;
  const fs::path saved = fs::path(t.out_dir) / "config.toml";
  std::error_code ec;
  if (!fs::is_regular_file(saved, ec)) return false;
  try {
    const TrainSection earlier = load_config(saved.string(), {}).train;
    const std::string root = earlier.checkpoint_dir.empty()
                                 ? (fs::path(t.out_dir) / "checkpoints").string()
                                 : earlier.checkpoint_dir;
    return same_path(root, t.checkpoint_dir);
  } catch (const std::exception&) {
    return false;  // not a config this version reads: not provably the same run
  }
}

constexpr const char* kOutDirHint = "check that train.out_dir is writable and has space";

void create_out_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw_user_error("cannot create train.out_dir \"", dir, "\": ",
                     ec ? ec.message() : std::string("a file of that name exists"));
}

// The step of a metrics line ({"step": N, ...}), or none.
std::optional<int64_t> step_of(const std::string& line) {
  long long step = 0;
  if (std::sscanf(line.c_str(), "{\"step\": %lld,", &step) != 1) return std::nullopt;
  return int64_t(step);
}

// check_out_dir's checks; returns whether this run continues out_dir's run.
bool checked_continuation(const TrainSection& t) {
  std::error_code ec;
  if (fs::exists(t.out_dir, ec) && !fs::is_directory(t.out_dir, ec))
    throw_user_error("train.out_dir \"", t.out_dir, "\" is a file, not a folder: choose another train.out_dir");
  if (!fs::exists(metrics_path(t), ec)) return false;
  const bool continues = continues_out_dir(t);
  if (!continues && !t.overwrite)
    throw_user_error("train.out_dir \"", t.out_dir, "\" already holds a run (", metrics_path(t).string(),
                     "); choose another train.out_dir, or set train.overwrite = true to replace it, "
                     "or continue that run from its checkpoints with train.resume = \"auto\" and "
                     "its train.checkpoint_dir");
  return continues;
}

}  // namespace

void check_out_dir(const TrainSection& t) { checked_continuation(t); }

int64_t drop_metrics_after(const std::string& path, int64_t step) {
  const std::string text = read_file(path, "the metrics file");
  std::string kept;
  int64_t dropped = 0;
  size_t begin = 0;
  while (begin < text.size()) {
    const size_t end = text.find('\n', begin);
    if (end == std::string::npos) {  // cut short by a crash while it was written
      ++dropped;
      break;
    }
    const std::string line = text.substr(begin, end - begin);
    const std::optional<int64_t> s = step_of(line);
    if (s && *s > step) {
      ++dropped;
    } else {
      kept += line;
      kept += '\n';
    }
    begin = end + 1;
  }
  if (dropped == 0) return 0;
  replace_file(path, kept, kOutDirHint);
  return dropped;
}

MetricsWriter open_run_outputs(const TrainSection& t, const std::string& resolved,
                               std::optional<int64_t> resume_step) {
  // Checked again: nothing may be overwritten, even if the folder changed since.
  const bool continuing = checked_continuation(t);
  create_out_dir(t.out_dir);
  replace_file(fs::path(t.out_dir) / "config.toml", resolved, kOutDirHint);
  if (!continuing) return MetricsWriter(metrics_path(t).string(), MetricsWriter::Mode::kCreate);
  // train.resume = "auto" without a checkpoint yet (a job stopped before its first save) starts
  // the run over: every step runs again.
  const int64_t step = resume_step.value_or(0);
  const int64_t dropped = drop_metrics_after(metrics_path(t).string(), step);
  const std::string what = " (" + std::to_string(dropped) + " lines dropped: those steps run again)";
  if (resume_step)
    log_info("metrics: continuing ", metrics_path(t).string(), " after step ", step,
             dropped > 0 ? what : std::string());
  else
    log_info("metrics: no checkpoint in ", t.checkpoint_dir, " yet, so the run starts over in ",
             metrics_path(t).string(), what);
  return MetricsWriter(metrics_path(t).string(), MetricsWriter::Mode::kAppend);
}

}  // namespace zt::launch
