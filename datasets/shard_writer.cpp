// Writing one HDF5 token shard: /tokens grows in chunks as tokens arrive; /doc_offsets and the
// attributes are written at finish().
#include "datasets/shard_writer.h"

#include <cstring>
#include <filesystem>

namespace zt::datasets {

namespace {

constexpr int64_t kBufferTokens = 1 << 20;  // tokens gathered before one HDF5 write

hid_t file_type(TokenDType dtype) {
  return dtype == TokenDType::kUInt16 ? H5T_STD_U16LE : H5T_STD_U32LE;
}
hid_t memory_type(TokenDType dtype) {
  return dtype == TokenDType::kUInt16 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32;
}

}  // namespace

ShardWriter::ShardWriter(const std::string& path, const ShardAttributes& attributes,
                         const ShardWriterOptions& options)
    : path_(path), attributes_(attributes), options_(options) {
  ZT_CHECK(options.chunk_tokens > 0, "chunk_tokens must be positive");
  ZT_CHECK(options.compression >= 0 && options.compression <= 9, "gzip level must be in [0, 9]");
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hdf5_quiet();
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file < 0)
    throw_user_error("cannot create \"", path, "\" (", hdf5_error_message(),
                     "): check that the output folder is writable and has space");
  file_ = H5Handle(file, H5Fclose);

  const hsize_t dims[1] = {0}, max_dims[1] = {H5S_UNLIMITED};
  H5Handle space(ZT_HDF5_CHECK(H5Screate_simple(1, dims, max_dims), "creating the tokens space"), H5Sclose);
  H5Handle dcpl(ZT_HDF5_CHECK(H5Pcreate(H5P_DATASET_CREATE), "creating a dataset property list"), H5Pclose);
  const hsize_t chunk[1] = {hsize_t(options.chunk_tokens)};
  ZT_HDF5_CHECK(H5Pset_chunk(dcpl.get(), 1, chunk), "setting the tokens chunk size");
  if (options.compression > 0) {
    // Byte shuffle first: the high bytes of token ids are alike, so gzip finds them.
    ZT_HDF5_CHECK(H5Pset_shuffle(dcpl.get()), "enabling the shuffle filter");
    ZT_HDF5_CHECK(H5Pset_deflate(dcpl.get(), unsigned(options.compression)), "enabling gzip");
  }
  tokens_dataset_ = H5Handle(
      ZT_HDF5_CHECK(H5Dcreate2(file_.get(), std::string(kTokensDataset).c_str(), file_type(options.dtype),
                               space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                    "creating /tokens in ", path),
      H5Dclose);
  buffer_.resize(size_t(kBufferTokens) * size_t(token_dtype_size(options.dtype)));
}

ShardWriter::~ShardWriter() {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  tokens_dataset_.reset();
  file_.reset();
}

void ShardWriter::append(std::span<const int32_t> tokens) {
  ZT_CHECK(!finished_, "append after finish");
  const int size = token_dtype_size(options_.dtype);
  for (const int32_t t : tokens) {
    ZT_CHECK(t >= 0 && t < attributes_.vocab_size, "token id ", t, " outside [0, ",
             attributes_.vocab_size, ")");
    unsigned char* dst = buffer_.data() + size_t(buffered_) * size_t(size);
    if (size == 2) {
      const uint16_t v = uint16_t(t);
      std::memcpy(dst, &v, 2);
    } else {
      const uint32_t v = uint32_t(t);
      std::memcpy(dst, &v, 4);
    }
    ++tokens_;
    if (++buffered_ == kBufferTokens) flush();
  }
}

void ShardWriter::end_document() { doc_offsets_.push_back(tokens_); }

void ShardWriter::flush() {
  if (buffered_ == 0) return;
  const size_t bytes = size_t(buffered_) * size_t(token_dtype_size(options_.dtype));
  checksum_.update(buffer_.data(), bytes);
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hdf5_quiet();
  const hsize_t new_size[1] = {hsize_t(written_ + buffered_)};
  ZT_HDF5_CHECK(H5Dset_extent(tokens_dataset_.get(), new_size), "growing /tokens in ", path_);
  H5Handle file_space(ZT_HDF5_CHECK(H5Dget_space(tokens_dataset_.get()), "getting the tokens space"), H5Sclose);
  const hsize_t start[1] = {hsize_t(written_)}, count[1] = {hsize_t(buffered_)};
  ZT_HDF5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
                "selecting the tokens to write");
  H5Handle mem_space(ZT_HDF5_CHECK(H5Screate_simple(1, count, nullptr), "creating a memory space"), H5Sclose);
  ZT_HDF5_CHECK(H5Dwrite(tokens_dataset_.get(), memory_type(options_.dtype), mem_space.get(),
                         file_space.get(), H5P_DEFAULT, buffer_.data()),
                "writing tokens to ", path_);
  written_ += buffered_;
  buffered_ = 0;
}

ShardInfo ShardWriter::finish() {
  ZT_CHECK(!finished_, "finish called twice");
  ZT_CHECK(doc_offsets_.back() == tokens_, "a document of ", path_, " was not ended");
  flush();
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hdf5_quiet();
  const hid_t root = file_.get();
  {
    const hsize_t dims[1] = {hsize_t(doc_offsets_.size())};
    H5Handle space(ZT_HDF5_CHECK(H5Screate_simple(1, dims, nullptr), "creating the offsets space"), H5Sclose);
    H5Handle ds(ZT_HDF5_CHECK(H5Dcreate2(root, std::string(kDocOffsetsDataset).c_str(), H5T_STD_I64LE,
                                         space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                              "creating /doc_offsets in ", path_),
                H5Dclose);
    ZT_HDF5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, doc_offsets_.data()),
                  "writing /doc_offsets to ", path_);
  }
  write_string_attribute(root, "format", std::string(kFormatName));
  write_int_attribute(root, "format_version", kFormatVersion);
  write_string_attribute(root, "tokenizer", attributes_.tokenizer);
  write_int_attribute(root, "vocab_size", attributes_.vocab_size);
  write_int_attribute(root, "eos_id", attributes_.eos_id);
  write_string_attribute(root, "token_dtype", std::string(token_dtype_name(options_.dtype)));
  write_string_attribute(root, "split", std::string(split_name(attributes_.split)));
  write_int_attribute(root, "tokens", tokens_);
  write_int_attribute(root, "documents", documents());
  tokens_dataset_.reset();
  ZT_HDF5_CHECK(H5Fflush(root, H5F_SCOPE_GLOBAL), "flushing ", path_);
  file_.reset();
  finished_ = true;

  ShardInfo info;
  info.file = std::filesystem::path(path_).filename().string();
  info.tokens = tokens_;
  info.documents = documents();
  info.checksum = checksum_.value();
  return info;
}

}  // namespace zt::datasets
