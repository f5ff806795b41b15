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

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  H5Handle type(ZT_HDF5_CHECK(H5Tcopy(H5T_C_S1), "copying the string type"), H5Tclose);
  ZT_HDF5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE), "making a variable-length string type");
  ZT_HDF5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), "setting UTF-8 on the string type");
  H5Handle space(ZT_HDF5_CHECK(H5Screate(H5S_SCALAR), "creating a scalar space"), H5Sclose);
  H5Handle attr(ZT_HDF5_CHECK(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                              "creating attribute ", name),
                H5Aclose);
  const char* text = value.c_str();
  ZT_HDF5_CHECK(H5Awrite(attr.get(), type.get(), &text), "writing attribute ", name);
}

void write_int_attribute(hid_t object, const char* name, int64_t value) {
  H5Handle space(ZT_HDF5_CHECK(H5Screate(H5S_SCALAR), "creating a scalar space"), H5Sclose);
  H5Handle attr(ZT_HDF5_CHECK(H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                              "creating attribute ", name),
                H5Aclose);
  ZT_HDF5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), "writing attribute ", name);
}

}  // namespace zt::datasets
