// Tensor views: a pointer, a dtype, a shape (up to 4 dims, row-major) and a device.
//
// A Tensor never owns memory; Buffer (memory.h) does. Views are cheap to copy and pass by value.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/error.h"

namespace zt {

class Shape {
 public:
  static constexpr int kMaxRank = 4;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t numel() const;
  std::string str() const;  // "[2, 3]"
  friend bool operator==(const Shape& a, const Shape& b);

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::kF32; }
template <>
constexpr DType dtype_of<double>() { return DType::kF64; }
template <>
constexpr DType dtype_of<bf16>() { return DType::kBF16; }
template <>
constexpr DType dtype_of<f16>() { return DType::kF16; }

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Shape shape;
  Device device;

  Tensor() = default;
  Tensor(void* data, DType dtype, const Shape& shape, Device device = Device::cpu())
      : data(data), dtype(dtype), shape(shape), device(device) {}

  int64_t numel() const { return shape.numel(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  bool defined() const { return data != nullptr; }

  // Typed pointer; checks that T matches the dtype.
  template <class T>
  T* as() const {
    ZT_CHECK(dtype_of<T>() == dtype, "tensor of dtype ", dtype_name(dtype), " read as ",
             dtype_name(dtype_of<T>()));
    return static_cast<T*>(data);
  }
  // The same memory with another shape of the same element count.
  Tensor reshape(const Shape& new_shape) const;
  // Elements [offset, offset + new_shape.numel()) of the flat tensor, with new_shape.
  Tensor slice(int64_t offset, const Shape& new_shape) const;
  std::string str() const;  // "fp32[2, 3]@cpu"
};

}  // namespace zt
