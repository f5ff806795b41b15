// safetensors reader (mmap + header validation) and streaming writer (tmp file, fsync, rename).
#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "runtime/error.h"
#include "runtime/file_io.h"
#include "runtime/json_reader.h"

namespace zt {

// The format and this code are little-endian; so is every machine zerotrain runs on.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes little-endian");

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {

struct DTypeInfo {
  std::string_view name;
  size_t size;
};
// The dtypes of the reference implementation whose element size is whole bytes.
constexpr DTypeInfo kDTypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2},
    {"U16", 2},  {"F16", 2}, {"BF16", 2}, {"I32", 4},    {"U32", 4},     {"F32", 4},
    {"F64", 8},  {"I64", 8}, {"U64", 8},
};

std::optional<DType> float_dtype_of(std::string_view s) {
  if (s == "F32") return DType::kF32;
  if (s == "BF16") return DType::kBF16;
  if (s == "F16") return DType::kF16;
  if (s == "F64") return DType::kF64;
  return std::nullopt;
}

// Product of the dims, or -1 when it does not fit int64 (no real file gets near that).
int64_t checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d != 0 && n > INT64_MAX / d) return -1;
    n *= d;
  }
  return n;
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  out += '"';
}

}  // namespace

size_t safetensors_dtype_size(std::string_view dtype) {
  for (const DTypeInfo& d : kDTypes)
    if (d.name == dtype) return d.size;
  return 0;
}

std::string_view safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF64: return "F64";
  }
  return "?";
}

int64_t SafetensorsEntry::numel() const { return checked_numel(shape); }

// ---------------------------------------------------------------------------------------------
// Reader

SafetensorsFile::SafetensorsFile(std::string path) : path_(std::move(path)) {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw_user_error("cannot open safetensors file ", path_, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw_user_error("cannot read safetensors file ", path_, ": not a regular file");
  }
  const uint64_t size = uint64_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw_user_error("safetensors file ", path_, " is ", size,
                     " bytes long, too short to hold the 8-byte header length: the file is "
                     "truncated or not safetensors");
  }
  void* m = ::mmap(nullptr, size_t(size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file open
  if (m == MAP_FAILED)
    throw_user_error("cannot memory-map safetensors file ", path_, ": ", std::strerror(map_errno));
  map_ = static_cast<const std::byte*>(m);
  map_size_ = size_t(size);
  try {
    uint64_t n = 0;
    std::memcpy(&n, map_, 8);
    if (n > kMaxHeaderBytes)
      throw_user_error("safetensors file ", path_, ": header length ", n, " is over the limit of ",
                       kMaxHeaderBytes, " bytes: the file is corrupt or not safetensors");
    if (n > size - 8)
      throw_user_error("safetensors file ", path_, ": header length ", n, " runs past the end of "
                       "the file (", size, " bytes): the file is truncated or not safetensors");
    data_ = map_ + 8 + n;
    parse_header(std::string_view(reinterpret_cast<const char*>(map_) + 8, size_t(n)),
                 size - 8 - n);
  } catch (...) {
    ::munmap(const_cast<std::byte*>(map_), map_size_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<std::byte*>(map_), map_size_);
}

void SafetensorsFile::parse_header(std::string_view header, uint64_t data_size) {
  auto bad = [&](const std::string& what) -> void {
    throw_user_error("safetensors file ", path_, ": ", what,
                     ": the file is corrupt or was not written as safetensors");
  };
  try {
    JsonReader r(header);
    if (r.peek() != '{') r.fail("expected '{' (the header is one JSON object)" + r.found());
    r.object([&](const std::string& name) {
      if (name == "__metadata__") {
        r.object([&](const std::string& key) {
          if (r.peek() != '"') r.fail("__metadata__ values must be strings" + r.found());
          metadata_[key] = r.string();
        });
        return;
      }
      if (entries_.count(name)) bad("tensor \"" + name + "\" is listed twice");
      SafetensorsEntry e;
      e.name = name;
      bool has_dtype = false, has_shape = false, has_offsets = false;
      if (r.peek() != '{') r.fail("expected '{' for tensor \"" + name + "\"" + r.found());
      r.object([&](const std::string& key) {
        auto once = [&](bool& seen) {
          if (seen) bad("tensor \"" + name + "\" has key \"" + key + "\" twice");
          seen = true;
        };
        if (key == "dtype") {
          once(has_dtype);
          e.dtype = r.string();
        } else if (key == "shape") {
          once(has_shape);
          r.array([&] {
            const int64_t d = r.integer();
            if (d < 0) bad("tensor \"" + name + "\" has a negative dimension " + std::to_string(d));
            e.shape.push_back(d);
          });
        } else if (key == "data_offsets") {
          once(has_offsets);
          std::vector<int64_t> o;
          r.array([&] { o.push_back(r.integer()); });
          if (o.size() != 2)
            bad("tensor \"" + name + "\": data_offsets must be [begin, end], got " +
                std::to_string(o.size()) + " numbers");
          e.data_begin = o[0];
          e.data_end = o[1];
        } else {
          bad("tensor \"" + name + "\" has unknown key \"" + key +
              "\" (expected dtype, shape and data_offsets)");
        }
      });
      if (!has_dtype || !has_shape || !has_offsets)
        bad("tensor \"" + name + "\" lacks " +
            (!has_dtype ? "\"dtype\"" : !has_shape ? "\"shape\"" : "\"data_offsets\""));
      const std::string where = "tensor \"" + name + "\" (" + e.dtype + " " + shape_str(e.shape) +
                                ", data_offsets [" + std::to_string(e.data_begin) + ", " +
                                std::to_string(e.data_end) + "])";
      if (e.data_begin < 0) bad(where + ": negative offset");
      if (e.data_end < e.data_begin) bad(where + ": the end offset is before the begin offset");
      if (uint64_t(e.data_end) > data_size)
        bad(where + ": offsets run past the data area of " + std::to_string(data_size) + " bytes");
      const int64_t numel = checked_numel(e.shape);
      if (numel < 0) bad(where + ": the shape's element count overflows");
      const size_t elem = safetensors_dtype_size(e.dtype);
      if (elem != 0 && (numel > INT64_MAX / int64_t(elem) ||
                        e.data_end - e.data_begin != numel * int64_t(elem)))
        bad(where + ": holds " + std::to_string(e.data_end - e.data_begin) + " bytes, but " +
            std::to_string(numel) + " elements of " + e.dtype + " need " +
            std::to_string(numel * int64_t(elem)));
      e.float_dtype = float_dtype_of(e.dtype);
      e.bytes = {data_ + e.data_begin, size_t(e.data_end - e.data_begin)};
      names_.push_back(name);
      entries_.emplace(name, std::move(e));
    });
    if (!r.at_end()) r.fail("unexpected text after the header object");
  } catch (const JsonError& e) {
    throw_user_error("safetensors file ", path_, ": bad header JSON at line ", e.line(),
                     ", column ", e.column(), ": ", e.problem(),
                     ": the file is corrupt or not safetensors");
  }
  // No two tensors may share bytes (empty tensors hold none).
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& [name, e] : entries_)
    if (e.data_end > e.data_begin) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return a->data_begin < b->data_begin;
  });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->data_begin < by_offset[i - 1]->data_end)
      bad("tensors \"" + by_offset[i - 1]->name + "\" (bytes " +
          std::to_string(by_offset[i - 1]->data_begin) + ".." +
          std::to_string(by_offset[i - 1]->data_end) + ") and \"" + by_offset[i]->name +
          "\" (bytes " + std::to_string(by_offset[i]->data_begin) + ".." +
          std::to_string(by_offset[i]->data_end) + ") overlap");
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  const auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

const SafetensorsEntry& SafetensorsFile::at(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  if (e == nullptr) throw_user_error("safetensors file ", path_, " has no tensor \"", name, "\"");
  return *e;
}

std::span<const std::byte> SafetensorsFile::data(const SafetensorsEntry& entry) const {
  ZT_CHECK(find(entry.name) == &entry, "entry ", entry.name, " is not from ", path_);
  return entry.bytes;
}

void SafetensorsFile::read_f32(const SafetensorsEntry& entry, int64_t begin, int64_t end,
                               float* out) const {
  if (!entry.float_dtype)
    throw_user_error("safetensors file ", path_, ": tensor \"", entry.name, "\" has dtype ",
                     entry.dtype, ", which zerotrain cannot read as floats (F32, BF16, F16 or "
                     "F64 only)");
  ZT_CHECK(0 <= begin && begin <= end && end <= entry.numel(), "range [", begin, ", ", end,
           ") outside tensor ", entry.name, " of ", entry.numel(), " elements in ", path_);
  // An empty range reads nothing; `out` (and an empty tensor's bytes) may then be null, which
  // memcpy does not allow even for 0 bytes.
  if (begin == end) return;
  const DType dt = *entry.float_dtype;
  const size_t elem = dtype_size(dt);
  const std::byte* src = data(entry).data() + size_t(begin) * elem;
  const size_t n = size_t(end - begin);
  if (dt == DType::kF32) {
    std::memcpy(out, src, n * 4);
  } else if (reinterpret_cast<uintptr_t>(src) % elem == 0) {
    convert_cpu(src, dt, out, DType::kF32, n);
  } else {
    // Writers other than the reference one need not align the data area: read through memcpy.
    for (size_t i = 0; i < n; ++i) {
      alignas(8) std::byte one[8];
      std::memcpy(one, src + i * elem, elem);
      out[i] = float(load_as_double(one, dt, 0));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {
constexpr size_t kWriteChunk = size_t(1) << 20;  // elements converted per fwrite
}

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<SafetensorsTensorSpec> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp"), tensors_(std::move(tensors)) {
  std::set<std::string> seen;
  std::string json = "{";
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) json += ',';
      first = false;
      append_json_string(json, k);
      json += ':';
      append_json_string(json, v);
    }
    json += '}';
  }
  int64_t offset = 0;
  for (const SafetensorsTensorSpec& t : tensors_) {
    ZT_CHECK(!t.name.empty() && t.name != "__metadata__" && seen.insert(t.name).second,
             "bad or repeated tensor name \"", t.name, "\" for ", path_);
    const int64_t numel = checked_numel(t.shape);
    ZT_CHECK(numel >= 0, "tensor ", t.name, " has a bad shape ", shape_str(t.shape));
    const int64_t bytes = numel * int64_t(dtype_size(t.dtype));
    if (json.size() > 1) json += ',';
    append_json_string(json, t.name);
    json += ":{\"dtype\":\"";
    json += safetensors_dtype_name(t.dtype);
    json += "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (i > 0) json += ',';
      json += std::to_string(t.shape[i]);
    }
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," +
            std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  json += '}';
  // Pad with spaces (valid JSON whitespace) so the data area starts 8-byte aligned, as the
  // reference implementation does: readers can then map fp64 tensors in place.
  json.append((8 - json.size() % 8) % 8, ' ');
  header_ = std::move(json);

  file_ = std::fopen(tmp_path_.c_str(), "wb");
  if (file_ == nullptr) io_error("cannot create");
  try {
    const uint64_t n = header_.size();
    put(&n, 8);
    put(header_.data(), header_.size());
  } catch (...) {
    // The destructor does not run for a constructor that throws.
    std::fclose(file_);
    std::remove(tmp_path_.c_str());
    throw;
  }
  skip_complete();
}

SafetensorsWriter::~SafetensorsWriter() {
  if (finished_) return;
  if (file_ != nullptr) std::fclose(file_);
  std::remove(tmp_path_.c_str());
}

void SafetensorsWriter::io_error(const char* what) const {
  throw_user_error(what, " ", tmp_path_, " (for ", path_, "): ", std::strerror(errno),
                   ": check the disk space and permissions of the output directory");
}

void SafetensorsWriter::put(const void* bytes, size_t n) {
  if (n != 0 && std::fwrite(bytes, 1, n, file_) != n) io_error("cannot write");
}

void SafetensorsWriter::skip_complete() {
  while (current_ < tensors_.size() && written_ == checked_numel(tensors_[current_].shape)) {
    ++current_;
    written_ = 0;
  }
}

void SafetensorsWriter::write(const std::string& name, const float* values, int64_t n) {
  ZT_CHECK(!finished_, "write after finish to ", path_);
  ZT_CHECK(current_ < tensors_.size(), "write of \"", name, "\" to ", path_,
           " after every declared tensor was written");
  const SafetensorsTensorSpec& t = tensors_[current_];
  ZT_CHECK(name == t.name, "write of \"", name, "\" to ", path_, " while \"", t.name,
           "\" is the next tensor in declared order");
  const int64_t left = checked_numel(t.shape) - written_;
  ZT_CHECK(0 <= n && n <= left, "write of ", n, " values to \"", name, "\" in ", path_, " with ",
           left, " left");
  if (t.dtype == DType::kF32) {
    put(values, size_t(n) * 4);
  } else {
    const size_t elem = dtype_size(t.dtype);
    for (int64_t done = 0; done < n;) {
      const size_t k = size_t(std::min<int64_t>(n - done, int64_t(kWriteChunk)));
      buffer_.resize(k * elem);
      convert_cpu(values + done, DType::kF32, buffer_.data(), t.dtype, k);
      put(buffer_.data(), k * elem);
      done += int64_t(k);
    }
  }
  written_ += n;
  skip_complete();
}

void SafetensorsWriter::finish() {
  ZT_CHECK(!finished_, "finish called twice for ", path_);
  if (current_ < tensors_.size())
    ZT_FAIL("safetensors writer for ", path_, " finished with tensor \"", tensors_[current_].name,
            "\" written ", written_, " of ", checked_numel(tensors_[current_].shape),
            " elements (and ", tensors_.size() - current_ - 1, " tensors after it not at all)");
  if (std::fflush(file_) != 0) io_error("cannot write");
  if (::fsync(fileno(file_)) != 0) io_error("cannot sync");
  const int rc = std::fclose(file_);
  file_ = nullptr;
  if (rc != 0) io_error("cannot close");
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) io_error("cannot rename into place");
  sync_path(std::filesystem::path(path_).parent_path());  // makes the rename durable
  finished_ = true;
}

}  // namespace zt
