// Checkpoints of a training run (note "trainer checkpoints" in launch/run_checkpoints.h): the
// settings fingerprint, finding where a run resumes, and publishing and pruning step folders.
#include "launch/run_checkpoints.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "launch/config_schema.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "zero/checkpoint.h"

namespace zt::launch {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kFingerprint = "fingerprint.";
constexpr std::string_view kStepPrefix = "step-";

std::string fingerprint_field(const std::string& key) {
  const std::string name = key.substr(kFingerprint.size());
  if (name == "global_batch")
    return "the global batch (train.micro_batch_size x train.grad_accum_steps x ranks)";
  return name;
}

// The step of a "step-NNNNNNNN" folder name; -1 for any other name (e.g. a save's .tmp folder).
int64_t step_of_dir_name(const std::string& name) {
  if (name.size() < kStepPrefix.size() + 8 || name.compare(0, kStepPrefix.size(), kStepPrefix) != 0) return -1;
  int64_t step = 0;
  for (size_t i = kStepPrefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || step > (int64_t(1) << 58)) return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

int64_t extra_int(const std::map<std::string, std::string>& extra, const std::string& key, const std::string& dir) {
  const auto it = extra.find(key);
  if (it == extra.end())
    throw_user_error("checkpoint ", dir, " has no meta.extra \"", key, "\" (it was not saved by `zerotrain train` "
                     "with this data source), so the run cannot continue exactly");
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    if (used == it->second.size()) return int64_t(v);
  } catch (const std::exception&) {
  }
  throw_user_error("checkpoint ", dir, ": meta.extra \"", key, "\" = \"", it->second, "\" is not an integer");
}

}  // namespace

std::map<std::string, std::string> checkpoint_fingerprint(const RunConfig& c, int world) {
  const TrainSection& t = c.train;
  std::string path;
  if (c.data.source == "hdf5") {
    std::error_code ec;
    const fs::path canonical = fs::weakly_canonical(c.data.path, ec);
    path = ec ? c.data.path : canonical.string();
  }
  return {
      {"fingerprint.train.seq_len", std::to_string(t.seq_len)},
      {"fingerprint.global_batch", std::to_string(t.micro_batch_size * t.grad_accum_steps * world)},
      {"fingerprint.train.seed", std::to_string(t.seed)},
      {"fingerprint.data.source", c.data.source},
      {"fingerprint.data.path", path},
  };
}

std::map<std::string, std::string> checkpoint_settings(const RunConfig& c) {
  std::map<std::string, std::string> settings;
  for (const ConfigKey& k : config_schema())
    if (k.section == "optimizer" || k.section == "fp16")
      settings["setting." + k.key] = format_config_value(k.get(c));
  return settings;
}

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%08lld", static_cast<long long>(step));
  return buf;
}




std::string latest_checkpoint(const std::string& checkpoint_dir, const std::string& what) {
  const fs::path latest = fs::path(checkpoint_dir) / "latest";
  std::error_code ec;
  if (!fs::exists(latest, ec)) return {};
  std::ifstream in(latest);
  std::string name;
  std::getline(in, name);
  while (!name.empty() && (name.back() == '\r' || name.back() == ' ')) name.pop_back();
  const std::string dir = (fs::path(checkpoint_dir) / name).string();
  if (name.empty() || !zero::is_complete_checkpoint(dir)) {
    // A save that replaced DIR on a filesystem without an atomic exchange and died between its
    // two renames leaves the complete old and new folders beside it (runtime/file_io.h).
    std::string beside;
    for (const auto& entry : fs::directory_iterator(checkpoint_dir, ec)) {
      const std::string other = entry.path().filename().string();
      if (!name.empty() &&
          (other.starts_with(name + ".old-") || other.starts_with(name + ".tmp-")) &&
          zero::is_complete_checkpoint(entry.path().string()))
        beside += (beside.empty() ? "" : ", ") + entry.path().string();
    }
    throw_user_error(what, ": ", latest.string(), " names \"", name, "\", but ", dir,
                     fs::exists(dir, ec) ? " is not a complete checkpoint (it has no manifest.toml)"
                                         : " does not exist",
                     beside.empty() ? std::string()
                                    : "; a save replacing it was interrupted, and complete "
                                      "checkpoints are beside it: " + beside +
                                      " (rename the one to keep to " + dir + ")");
  }
  return dir;
}

namespace {

// A save there would fail only after the steps before it: refuse a checkpoint_dir that is a file,
// or under one, or whose nearest existing folder this process cannot write into.
void check_checkpoint_dir(const std::string& dir) {
  if (dir.empty()) return;
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  while (!p.empty() && !fs::exists(p, ec) && p.has_parent_path() && p.parent_path() != p)
    p = p.parent_path();
  if (!fs::is_directory(p, ec))
    throw_user_error("train.checkpoint_dir \"", dir, "\": ", p.string(), " is not a folder, so "
                     "no checkpoint could be saved there; choose another train.checkpoint_dir");
  if (::access(p.c_str(), W_OK | X_OK) != 0)
    throw_user_error("train.checkpoint_dir \"", dir, "\": ", p.string(), " is not writable (",
                     std::strerror(errno), "), so no checkpoint could be saved there; choose "
                     "another train.checkpoint_dir");
}

}  // namespace

std::optional<ResumePoint> find_resume_point(const RunConfig& config, int world) {
  const TrainSection& t = config.train;
  std::error_code ec;
  check_checkpoint_dir(t.checkpoint_dir);
  // checkpoint_dir holds a run's checkpoints, which this run's saves would replace and prune.
  const fs::path latest = fs::path(t.checkpoint_dir) / "latest";
  const bool holds_checkpoints = !t.checkpoint_dir.empty() && !t.overwrite && fs::exists(latest, ec);
  if (t.resume.empty()) {
    if (holds_checkpoints)
      throw_user_error("train.checkpoint_dir \"", t.checkpoint_dir, "\" already holds checkpoints (", latest.string(),
                       "); set train.resume = \"auto\" to continue that run, choose another "
                       "train.checkpoint_dir, or set train.overwrite = true to replace them");
    return std::nullopt;
  }
  ResumePoint p;
  if (t.resume == "auto" && t.checkpoint_dir.empty())
    throw_user_error("train.resume = \"auto\" needs train.checkpoint_dir, the folder whose `latest` "
                     "checkpoint to continue from");
  if (t.resume == "auto") {
    p.dir = latest_checkpoint(t.checkpoint_dir, "train.resume = \"auto\"");
    if (p.dir.empty()) {
      log_info("resume: no checkpoint in ", t.checkpoint_dir, " yet (no ", latest.string(),
               "); starting fresh");
      return std::nullopt;
    }
  } else {
    p.dir = t.resume;
    if (!fs::is_directory(p.dir, ec))
      throw_user_error("train.resume = \"", p.dir, "\": no such checkpoint folder");
    // A checkpoint of another folder: its run is not the one checkpoint_dir holds.
    if (holds_checkpoints &&
        fs::weakly_canonical(p.dir, ec).parent_path() != fs::weakly_canonical(t.checkpoint_dir, ec))
      throw_user_error("train.resume = \"", p.dir, "\" is not in train.checkpoint_dir \"",
                       t.checkpoint_dir, "\", which holds another run's checkpoints (",
                       latest.string(), "), and this run's saves would replace and prune them: "
                       "choose another train.checkpoint_dir, or set train.overwrite = true to "
                       "replace them");
    if (!zero::is_complete_checkpoint(p.dir))
      throw_user_error("train.resume = \"", p.dir, "\" is not a complete checkpoint: it has no ",
                       (fs::path(p.dir) / "manifest.toml").string(),
                       " (written last, so the save that made this folder did not finish)");
  }

  // The manifest, read once: its kind, shape and precision checked, its meta for the rest.
  const zero::CheckpointMeta meta = zero::check_resumable(p.dir, config.model.shape, t.precision);
  p.step = meta.step;
  const std::map<std::string, std::string>& extra = meta.extra;
  if (p.step >= t.steps)
    throw_user_error("checkpoint ", p.dir, " is at step ", p.step, " but train.steps = ", t.steps,
                     ": nothing is left to run; raise train.steps to train further");
  for (const auto& [key, value] : checkpoint_fingerprint(config, world)) {
    const auto it = extra.find(key);
    if (it == extra.end())
      throw_user_error("checkpoint ", p.dir, " has no meta.extra \"", key, "\" (it was not saved by "
                       "`zerotrain train`), so the run cannot continue exactly");
    if (it->second != value)
      throw_user_error("checkpoint ", p.dir, " was saved with ", fingerprint_field(key), " = \"", it->second,
                       "\", but this run has \"", value, "\": an exact resume needs the same value (change it "
                       "back, or start a fresh run)");
  }
  for (const auto& [key, value] : checkpoint_settings(config)) {
    const auto it = extra.find(key);  // absent in checkpoints saved before they were recorded
    if (it != extra.end() && it->second != value)
      log_warn("resume: ", key.substr(8), " was ", it->second, " when ", p.dir, " was saved; this run "
               "uses ", value, " from step ", p.step + 1, " on (the run is no longer the one it "
               "continues; change it back to continue exactly)");
  }
  if (config.data.source == "hdf5") {
    datasets::SamplerState s;
    s.seed = uint64_t(extra_int(extra, "data.seed", p.dir));
    s.epoch = extra_int(extra, "data.epoch", p.dir);
    s.position = extra_int(extra, "data.position", p.dir);
    s.num_samples = extra_int(extra, "data.num_samples", p.dir);
    p.data_state = s;
  }
  return p;
}

void publish_latest(const fs::path& dir, const std::string& name) {
  const fs::path tmp = dir / "latest.tmp";
  const std::string text = name + "\n";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw_user_error("cannot write ", tmp.string(), " (check that train.checkpoint_dir is writable)");
  const bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) throw_user_error("cannot write ", tmp.string());
  fs::rename(tmp, dir / "latest");
}

void prune_checkpoints(const fs::path& dir, int64_t keep_last, int64_t step, const std::string& keep) {
  std::vector<std::pair<int64_t, fs::path>> found;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    const int64_t s = step_of_dir_name(e.path().filename().string());
    // Only complete checkpoints count (and go): a step-N folder without a manifest is no
    // checkpoint of this run's, and must not push out one that is.
    if (s >= 0 && s <= step && e.is_directory() && zero::is_complete_checkpoint(e.path().string()))
      found.emplace_back(s, e.path());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = size_t(keep_last); i < found.size(); ++i)
    if (found[i].second.filename() != keep) fs::remove_all(found[i].second);
}

}  // namespace zt::launch
