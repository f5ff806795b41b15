// HDF5 error-stack text for ZT_HDF5_CHECK, and the project's HDF5 lock.
#include "datasets/hdf5_check.h"

namespace zt::datasets {

namespace {
herr_t innermost(unsigned n, const H5E_error2_t* err, void* data) {
  // H5E_WALK_DOWNWARD starts at the API call the user made; the deepest entry says what failed
  // underneath it. Keep overwriting so the last (deepest) one wins.
  auto* out = static_cast<std::string*>(data);
  if (err != nullptr && err->desc != nullptr) *out = err->desc;
  (void)n;
  return 0;
}
}  // namespace

std::string hdf5_error_message() {
  std::string message;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, &message);
  return message.empty() ? "no details" : message;
}

void hdf5_quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace zt::datasets
