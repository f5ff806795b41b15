// safetensors files (the Hugging Face weight format): a validating memory-mapped reader and a
// streaming writer.
//
// Layout: an 8-byte little-endian u64 N, then N bytes of JSON header, then the data area. The
// header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} with byte
// offsets relative to the data area, plus an optional "__metadata__" of string -> string.
// Tensors are stored row-major, little-endian.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/dtype.h"

namespace zt {

// "[2, 3]": a shape as messages print it (safetensors shapes may have any rank).
std::string shape_str(const std::vector<int64_t>& shape);

// Bytes per element of a safetensors dtype string ("F32" -> 4, "BOOL" -> 1, ...); 0 when the
// string is not one this reader knows (such tensors are kept, opaque).
size_t safetensors_dtype_size(std::string_view dtype);
// "F32", "BF16", "F16", "F64": the safetensors spelling of a float DType.
std::string_view safetensors_dtype_name(DType dtype);

// One tensor of a safetensors file.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;             // as the file spells it: "F32", "BF16", "BOOL", "I32", ...
  std::optional<DType> float_dtype;  // set for F32, BF16, F16 and F64: the ones read_f32 reads
  std::vector<int64_t> shape;    // [] for a scalar
  int64_t data_begin = 0;        // byte offsets in the data area (after the header)
  int64_t data_end = 0;
  std::span<const std::byte> bytes;  // the raw little-endian data, inside the file's mapping
                                     // (not necessarily aligned); valid while the file is open
  int64_t numel() const;         // 1 for a scalar
};

// A safetensors file opened read-only and memory-mapped. The constructor checks the whole header
// (sizes, JSON, keys, dtypes, offsets, overlaps, duplicate names) and throws zt::UserError naming
// the file and the problem; after that every entry's bytes lie inside the mapping.
class SafetensorsFile {
 public:
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // as the reference implementation

  explicit SafetensorsFile(std::string path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Tensor names in the order the header lists them.
  const std::vector<std::string>& names() const { return names_; }
  // The entry named `name`, or nullptr.
  const SafetensorsEntry* find(const std::string& name) const;
  // The entry named `name`; throws zt::UserError naming the file when there is none.
  const SafetensorsEntry& at(const std::string& name) const;
  // "__metadata__" (empty when the header has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // entry.bytes, after checking that the entry is one of this file's.
  std::span<const std::byte> data(const SafetensorsEntry& entry) const;

  // Elements [begin, end) of a float entry (flattened row-major) into out[0 .. end-begin) as
  // fp32: F32, BF16 and F16 exactly, F64 rounded to nearest even. Throws zt::UserError naming
  // the file for any other dtype.
  void read_f32(const SafetensorsEntry& entry, int64_t begin, int64_t end, float* out) const;

 private:
  void parse_header(std::string_view header, uint64_t data_size);

  std::string path_;
  const std::byte* map_ = nullptr;
  size_t map_size_ = 0;
  const std::byte* data_ = nullptr;  // start of the data area inside the mapping
  std::vector<std::string> names_;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// What SafetensorsWriter is told about each tensor before any data.
struct SafetensorsTensorSpec {
  std::string name;
  DType dtype;                 // storage dtype in the file
  std::vector<int64_t> shape;  // [] for a scalar
};

// Writes a safetensors file without holding its tensors in memory: the header is computed from
// the declared tensors up front, then values arrive in declared order, in chunks of any size,
// and are rounded from fp32 to each tensor's dtype (round to nearest even, runtime/dtype.h).
// Data goes to PATH.tmp; finish() checks that every tensor was written in full, fsyncs and
// renames to PATH, so PATH is either absent, old, or complete. Without finish() (an exception
// on the way) the destructor removes PATH.tmp.
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::string path, std::vector<SafetensorsTensorSpec> tensors,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next n values of tensor `name`, which must be the first declared tensor not yet fully
  // written; n may not exceed what is left of it.
  void write(const std::string& name, const float* values, int64_t n);
  void finish();

  // The header JSON as it will be stored (padded with spaces to make the data area start at a
  // multiple of 8 bytes from the start of the file).
  const std::string& header() const { return header_; }

 private:
  void skip_complete();  // advances current_ past fully written (or empty) tensors
  void put(const void* bytes, size_t n);
  [[noreturn]] void io_error(const char* what) const;

  std::string path_, tmp_path_;
  std::vector<SafetensorsTensorSpec> tensors_;
  std::string header_;
  std::FILE* file_ = nullptr;
  size_t current_ = 0;        // index of the tensor being written
  int64_t written_ = 0;       // elements of tensors_[current_] written so far
  std::vector<std::byte> buffer_;  // conversion buffer for 16-bit and fp64 dtypes
  bool finished_ = false;
};

}  // namespace zt
