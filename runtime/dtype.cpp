// Dtype names and sizes, and the bulk host conversions built on dtype.h's scalar ones.
#include "runtime/dtype.h"

#include "runtime/error.h"

namespace zt {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kF64: return 8;
  }
  ZT_FAIL("unknown dtype ", int(dtype));
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "fp32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "fp16";
    case DType::kF64: return "fp64";
  }
  return "unknown";
}

bool parse_dtype(std::string_view name, DType* out) {
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kF64}) {
    if (name == dtype_name(d)) {
      *out = d;
      return true;
    }
  }
  return false;
}

namespace {

template <class Load, class Store>
void convert_loop(size_t n, Load load, Store store) {
  const int64_t count = int64_t(n);
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) store(i, load(i));
}

}  // namespace

void convert_cpu(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n) {
  if (src == dst && src_dtype == dst_dtype) return;
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, n * dtype_size(src_dtype));
    return;
  }
  // Going through fp64 is exact for every source dtype, and the single rounding happens at the
  // store, so fp32 -> 16-bit is the RNE conversion of dtype.h. fp64 -> 16-bit rounds twice
  // (fp64 -> fp32 -> 16-bit); that path only exists for tests.
  convert_loop(
      n, [&](int64_t i) { return load_as_double(src, src_dtype, size_t(i)); },
      [&](int64_t i, double v) { store_from_double(dst, dst_dtype, size_t(i), v); });
}

void accumulate_cpu(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n,
                    double scale) {
  convert_loop(
      n,
      [&](int64_t i) {
        return load_as_double(dst, dst_dtype, size_t(i)) +
               scale * load_as_double(src, src_dtype, size_t(i));
      },
      [&](int64_t i, double v) { store_from_double(dst, dst_dtype, size_t(i), v); });
}

}  // namespace zt
