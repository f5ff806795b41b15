// Shape and Tensor view helpers.
#include "runtime/tensor.h"

#include <sstream>

namespace zt {

Shape::Shape(std::initializer_list<int64_t> dims) {
  ZT_CHECK(dims.size() <= size_t(kMaxRank), "shapes have at most ", kMaxRank, " dims, got ",
           dims.size());
  for (int64_t d : dims) {
    ZT_CHECK(d >= 0, "negative dimension ", d);
    dims_[rank_++] = d;
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

std::string Shape::str() const {
  std::ostringstream os;
  os << "[";
  for (int i = 0; i < rank_; ++i) os << (i ? ", " : "") << dims_[i];
  os << "]";
  return os.str();
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.rank_ != b.rank_) return false;
  for (int i = 0; i < a.rank_; ++i)
    if (a.dims_[i] != b.dims_[i]) return false;
  return true;
}

Tensor Tensor::reshape(const Shape& new_shape) const {
  ZT_CHECK(new_shape.numel() == numel(), "cannot reshape ", shape.str(), " to ", new_shape.str());
  return Tensor(data, dtype, new_shape, device);
}

Tensor Tensor::slice(int64_t offset, const Shape& new_shape) const {
  ZT_CHECK(offset >= 0 && offset + new_shape.numel() <= numel(), "slice [", offset, ", ",
           offset + new_shape.numel(), ") out of range for ", str());
  return Tensor(static_cast<char*>(data) + size_t(offset) * dtype_size(dtype), dtype, new_shape,
                device);
}

std::string Tensor::str() const {
  return std::string(dtype_name(dtype)) + shape.str() + "@" + device.str();
}

}  // namespace zt
