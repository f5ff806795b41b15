// ZT_HDF5_CHECK (the HDF5 member of the check-macro family, DESIGN.md section 9), an owning
// handle for HDF5 ids, and the lock that serialises this project's HDF5 calls.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>

#include "runtime/error.h"

namespace zt::datasets {

// The innermost message of the calling thread's HDF5 error stack ("" when empty), e.g.
// "unable to open file". HDF5 keeps one stack per thread.
std::string hdf5_error_message();

// Stops HDF5 printing its error stack to stderr for the calling thread: our checks put the
// message into the exception instead. Cheap; called at the start of every entry point that
// touches HDF5 (the setting is per thread in thread-safe builds).
void hdf5_quiet();

// Held around every HDF5 call this project makes. Debian's serial libhdf5 is built thread-safe,
// but other builds are not, and the prefetch thread reads while the main thread may read the
// validation split.
std::mutex& hdf5_mutex();

// An HDF5 id closed with its matching H5?close when the handle goes.
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Handle() = default;
  H5Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~H5Handle() { reset(); }
  H5Handle(H5Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), closer_(o.closer_) {}
  H5Handle& operator=(H5Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      closer_ = o.closer_;
    }
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;

  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && closer_ != nullptr) closer_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// Scalar attributes of a file or object as h5py and h5dump show them plainly (the caller holds
// hdf5_mutex()): a variable-length UTF-8 string (h5py reads a Python str; fixed-length ones come
// back as bytes), and a little-endian int64.
void write_string_attribute(hid_t object, const char* name, const std::string& value);
void write_int_attribute(hid_t object, const char* name, int64_t value);

}  // namespace zt::datasets

// ZT_HDF5_CHECK(call, message parts...): `call` returns an herr_t or hid_t, negative on failure.
// Evaluates to the call's value; on failure throws zt::Error with the expression, file:line,
// rank, the message and HDF5's own description of the failure.
#define ZT_HDF5_CHECK(call, ...)                                                                \
  ([&]() {                                                                                      \
    const auto zt_h5_result_ = (call);                                                          \
    if (zt_h5_result_ < 0) [[unlikely]]                                                         \
      ::zt::detail::throw_check_failure(                                                        \
          __FILE__, __LINE__, #call,                                                            \
          ::zt::detail::concat(__VA_ARGS__ __VA_OPT__(,) " (HDF5: ", ::zt::datasets::hdf5_error_message(),   \
                               ")"));                                                           \
    return zt_h5_result_;                                                                       \
  }())
