// train.gemm_choices (launch/run_gemm_choices.h).
#include "launch/run_gemm_choices.h"

#include <cstdlib>
#include <filesystem>

#include "runtime/error.h"
#include "runtime/log.h"

#ifdef ZT_WITH_CUDA
#include "model/gemm_choices.h"
#include "model/ops_cuda.h"
#endif

namespace zt::launch {

namespace fs = std::filesystem;

RunGemmChoices::RunGemmChoices(const std::string& path, const Device& device, bool writes_file)
    : path_(path), device_(device.index), writes_file_(writes_file) {
  if (path.empty()) return;
  const char* env = std::getenv("ZT_GEMM_CHOICES");
  if (env != nullptr && *env != '\0')
    throw_user_error("train.gemm_choices = \"", path, "\" and ZT_GEMM_CHOICES=", env,
                     " both name GEMM choices: unset ZT_GEMM_CHOICES, or set "
                     "train.gemm_choices = \"\"");
  if (!device.is_cuda()) {
    log_info("train.gemm_choices = \"", path, "\" is not used: it chooses cuBLASLt algorithms, "
             "and this run computes on the CPU");
    return;
  }
#ifdef ZT_WITH_CUDA
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw_user_error("train.gemm_choices = \"", path, "\" is a folder: name a file (it is created "
                     "by the run when it does not exist)");
  if (fs::exists(path, ec)) {
    const model::GemmChoices choices = model::read_gemm_choices(path);
    try {
      model::cuda::use_gemm_choices(choices, device_);
    } catch (const UserError& e) {
      log_warn("train.gemm_choices = \"", path, "\": not used, not tuned and not replaced (", e.what(),
               "). Name another file to tune for this GPU, one file per GPU kind");
      return;
    }
    log_info("GEMM choices from ", path, ": ", choices.index.size(),
             " problems; any other problem is tuned when first met and added to the file");
  } else {
    if (writes_file_ && fs::path(path).has_parent_path())
      fs::create_directories(fs::path(path).parent_path(), ec);  // a failure shows at the write
    log_info("GEMM choices: ", path, " does not exist, so each GEMM problem is tuned when first "
             "met (the first step takes longer) and the choices are written there");
  }
  tuning_ = true;
  tuned_written_ = model::cuda::gemm_problems_tuned();
  model::cuda::set_gemm_tuning(true);
#endif
}

RunGemmChoices::~RunGemmChoices() {
#ifdef ZT_WITH_CUDA
  if (tuning_) model::cuda::set_gemm_tuning(false);
#endif
}

void RunGemmChoices::after_step() {
#ifdef ZT_WITH_CUDA
  if (!tuning_ || !writes_file_) return;
  const int64_t tuned = model::cuda::gemm_problems_tuned();
  if (tuned == tuned_written_) return;
  // With the file's choices for problems this run has not met (another micro-batch size...).
  const model::GemmChoices choices = model::cuda::gemm_choices_in_use(device_);
  const int64_t new_problems = tuned - tuned_written_;
  tuned_written_ = tuned;  // a failed write is tried again when more problems are tuned
  try {
    model::write_gemm_choices(path_, choices);
  } catch (const UserError& e) {
    log_warn("GEMM choices not written: ", e.what(), "; the run goes on");
    return;
  }
  int moved = 0;
  for (const auto& [key, index] : choices.index) moved += index != 0;
  log_info("GEMM choices: ", new_problems, " problems tuned, ", choices.index.size(),
           " written to ", path_, " (", moved, " differ from the heuristic's pick)");
#endif
}

}  // namespace zt::launch
