// Checking a token dataset against a run's needs, and reading token ranges of a split through
// HDF5 hyperslab reads (each rank reads only the samples it trains on).
#include "datasets/token_dataset.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <optional>

#include "datasets/hdf5_check.h"
#include "runtime/error.h"

namespace zt::datasets {

namespace fs = std::filesystem;

struct TokenDataset::Shard {
  std::string path;
  H5Handle file;
  H5Handle tokens;
  int64_t num_tokens = 0;
};

namespace {

constexpr int64_t kVerifyBlock = 1 << 20;  // tokens per read while checksumming

// "uint16", "int32", "float32", ... of an HDF5 type, for messages.
std::string describe_type(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t bits = H5Tget_size(type) * 8;
  if (cls == H5T_INTEGER)
    return (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + std::to_string(bits);
  if (cls == H5T_FLOAT) return "float" + std::to_string(bits);
  if (cls == H5T_STRING) return "string";
  return "a non-numeric HDF5 type";
}

bool has_link(hid_t file, const char* name) { return H5Lexists(file, name, H5P_DEFAULT) > 0; }

std::optional<int64_t> read_int_attribute(hid_t object, const char* name) {
  if (H5Aexists(object, name) <= 0) return std::nullopt;
  H5Handle attr(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  if (!attr) return std::nullopt;
  H5Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (!type || H5Tget_class(type.get()) != H5T_INTEGER) return std::nullopt;
  int64_t value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0) return std::nullopt;
  return value;
}

// Variable- or fixed-length string attributes both read back.
std::optional<std::string> read_string_attribute(hid_t object, const char* name) {
  if (H5Aexists(object, name) <= 0) return std::nullopt;
  H5Handle attr(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  if (!attr) return std::nullopt;
  H5Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (!type || H5Tget_class(type.get()) != H5T_STRING) return std::nullopt;
  if (H5Tis_variable_str(type.get()) > 0) {
    H5Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    char* text = nullptr;
    if (H5Aread(attr.get(), mem.get(), &text) < 0 || text == nullptr) return std::nullopt;
    std::string out(text);
    H5free_memory(text);
    return out;
  }
  const size_t size = H5Tget_size(type.get());
  std::string out(size, '\0');
  if (H5Aread(attr.get(), type.get(), out.data()) < 0) return std::nullopt;
  out.resize(std::strlen(out.c_str()));
  return out;
}

[[noreturn]] void bad_shard(const std::string& path, const std::string& what) {
  throw_user_error(path, ": ", what);
}

const char* kRedo = "prepare the dataset again with `zerotrain prepare`";

// Opens one shard and checks everything short of reading its tokens. Call with the HDF5 lock.
std::unique_ptr<TokenDataset::Shard> open_shard_locked(const std::string& dir, const std::string& manifest_path,
                                                       const Manifest& m, Split split, const ShardInfo& info) {
  const std::string path = (fs::path(dir) / info.file).string();
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw_user_error(path, " is missing (", manifest_path, " lists it in the ", split_name(split),
                     " split): the dataset is incomplete; copy the whole dataset folder again, or ", kRedo);
  if (H5Fis_hdf5(path.c_str()) <= 0)
    bad_shard(path, std::string("is not an HDF5 file (damaged, or replaced by another file); ") + kRedo);
  auto shard = std::make_unique<TokenDataset::Shard>();
  shard->path = path;
  shard->file = H5Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!shard->file) bad_shard(path, "cannot be opened (" + hdf5_error_message() + ")");
  const hid_t file = shard->file.get();

  const std::string tokens_name(kTokensDataset);
  if (!has_link(file, tokens_name.c_str()))
    bad_shard(path, "has no /tokens dataset: not a zerotrain token shard; " + std::string(kRedo));
  shard->tokens = H5Handle(H5Dopen2(file, tokens_name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!shard->tokens) bad_shard(path, "cannot open /tokens (" + hdf5_error_message() + ")");
  {
    H5Handle type(ZT_HDF5_CHECK(H5Dget_type(shard->tokens.get()), "reading the type of /tokens in ", path), H5Tclose);
    const bool ok = H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_sign(type.get()) == H5T_SGN_NONE &&
                    int(H5Tget_size(type.get())) == token_dtype_size(m.token_dtype);
    if (!ok)
      bad_shard(path, "/tokens has dtype " + describe_type(type.get()) + ", but " + manifest_path +
                          " says token_dtype = \"" + std::string(token_dtype_name(m.token_dtype)) +
                          "\": the shard does not belong to this dataset or was written by another tool; " + kRedo);
  }
  {
    H5Handle space(ZT_HDF5_CHECK(H5Dget_space(shard->tokens.get()), "reading the shape of /tokens in ", path), H5Sclose);
    if (H5Sget_simple_extent_ndims(space.get()) != 1)
      bad_shard(path, "/tokens must be 1-dimensional; " + std::string(kRedo));
    hsize_t dims[1] = {0};
    H5Sget_simple_extent_dims(space.get(), dims, nullptr);
    shard->num_tokens = int64_t(dims[0]);
  }
  if (shard->num_tokens != info.tokens)
    bad_shard(path, "holds " + std::to_string(shard->num_tokens) + " tokens, but " + manifest_path + " lists " +
                        std::to_string(info.tokens) + ": the file was changed or truncated; " + kRedo);
  const std::string offsets_name(kDocOffsetsDataset);
  if (!has_link(file, offsets_name.c_str()))
    bad_shard(path, "has no /doc_offsets dataset: not a complete zerotrain token shard; " + std::string(kRedo));

  // The shard's own attributes must agree with the manifest: a shard copied in from another
  // dataset (another tokenizer or vocabulary) is caught here even when sizes happen to match.
  const auto tokenizer = read_string_attribute(file, "tokenizer");
  const auto vocab = read_int_attribute(file, "vocab_size");
  const auto eos = read_int_attribute(file, "eos_id");
  if (!tokenizer || !vocab || !eos)
    bad_shard(path, "lacks the tokenizer/vocab_size/eos_id attributes: not a zerotrain token shard; " +
                        std::string(kRedo));
  if (*tokenizer != m.tokenizer)
    bad_shard(path, "was tokenized with \"" + *tokenizer + "\", but " + manifest_path + " says \"" +
                        m.tokenizer + "\": shards of different datasets are mixed; " + kRedo);
  if (*vocab != m.vocab_size || *eos != m.eos_id)
    bad_shard(path, "has vocab_size " + std::to_string(*vocab) + " and eos_id " + std::to_string(*eos) +
                        ", but " + manifest_path + " says " + std::to_string(m.vocab_size) + " and " +
                        std::to_string(m.eos_id) + ": shards of different datasets are mixed; " + kRedo);
  // The format attributes (the others, token_dtype, split, tokens and documents, repeat what the
  // checks of the arrays above already hold to the manifest).
  const auto format = read_string_attribute(file, "format");
  const auto version = read_int_attribute(file, "format_version");
  if (!format || *format != kFormatName || !version || *version < 1 || *version > kFormatVersion)
    bad_shard(path, "lacks the format = \"" + std::string(kFormatName) + "\" and format_version = " +
                        std::to_string(kFormatVersion) + " attributes: not a zerotrain token shard; " +
                        std::string(kRedo));
  return shard;
}

// Reads the whole shard once: checksum and id range. Takes the lock per block.
void verify_shard_tokens(const TokenDataset::Shard& shard, const Manifest& m, const std::string& manifest_path,
                         const ShardInfo& info) {
  const int size = token_dtype_size(m.token_dtype);
  const hid_t mem_type = m.token_dtype == TokenDType::kUInt16 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32;
  std::vector<unsigned char> block(size_t(std::min<int64_t>(kVerifyBlock, std::max<int64_t>(1, shard.num_tokens))) *
                                   size_t(size));
  Checksum64 checksum;
  uint32_t max_id = 0;
  int64_t max_at = -1;
  for (int64_t begin = 0; begin < shard.num_tokens; begin += kVerifyBlock) {
    const int64_t count = std::min(kVerifyBlock, shard.num_tokens - begin);
    {
      std::lock_guard<std::mutex> lock(hdf5_mutex());
      hdf5_quiet();
      H5Handle file_space(ZT_HDF5_CHECK(H5Dget_space(shard.tokens.get()), "reading ", shard.path), H5Sclose);
      const hsize_t start[1] = {hsize_t(begin)}, n[1] = {hsize_t(count)};
      ZT_HDF5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, n, nullptr),
                    "selecting tokens of ", shard.path);
      H5Handle mem_space(ZT_HDF5_CHECK(H5Screate_simple(1, n, nullptr), "creating a memory space"), H5Sclose);
      if (H5Dread(shard.tokens.get(), mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, block.data()) < 0)
        bad_shard(shard.path, "reading tokens [" + std::to_string(begin) + ", " + std::to_string(begin + count) +
                                  ") failed (" + hdf5_error_message() + "): the file is damaged; " + kRedo);
    }
    checksum.update(block.data(), size_t(count) * size_t(size));
    for (int64_t i = 0; i < count; ++i) {
      uint32_t id;
      if (size == 2) {
        uint16_t v;
        std::memcpy(&v, block.data() + 2 * i, 2);
        id = v;
      } else {
        std::memcpy(&id, block.data() + 4 * i, 4);
      }
      if (id > max_id || max_at < 0) {
        max_id = std::max(max_id, id);
        max_at = begin + i;
      }
    }
  }
  const uint64_t actual = checksum.value();
  if (actual != info.checksum)
    bad_shard(shard.path, "checksum mismatch: the tokens hash to " + format_checksum(actual) + ", but " +
                              manifest_path + " lists " + format_checksum(info.checksum) +
                              ": the file is corrupt or was modified after `zerotrain prepare`; copy it "
                              "again from the source, or " + kRedo);
  if (shard.num_tokens > 0 && int64_t(max_id) >= m.vocab_size)
    bad_shard(shard.path, "token id " + std::to_string(max_id) + " at position " + std::to_string(max_at) +
                              " is outside the vocabulary (vocab_size " + std::to_string(m.vocab_size) +
                              "); " + kRedo);
}

}  // namespace

Manifest check_dataset(const std::string& dataset_dir, const DatasetRequirements& req) {
  Manifest m = read_manifest(dataset_dir);
  const std::string manifest_path = (fs::path(dataset_dir) / kManifestFile).string();

  if (req.model_vocab_size > 0 && m.vocab_size > req.model_vocab_size)
    throw_user_error(manifest_path, ": the dataset's vocab_size ", m.vocab_size, " is larger than model.vocab_size = ",
                     req.model_vocab_size, ": the model cannot embed every token id; set model.vocab_size >= ",
                     m.vocab_size, " (GPT-J uses 50400 for the GPT-2 tokenizer), or use a dataset made with "
                     "a smaller vocabulary");
  if (!req.tokenizer_id.empty() && req.tokenizer_id != m.tokenizer)
    throw_user_error(manifest_path, ": the dataset was tokenized with \"", m.tokenizer, "\", but data.tokenizer",
                     req.tokenizer_source.empty() ? std::string() : " = \"" + req.tokenizer_source + "\"",
                     " is \"", req.tokenizer_id, "\": prepare the data again with that tokenizer "
                     "(zerotrain prepare --tokenizer ", req.tokenizer_source.empty() ? "DIR" : req.tokenizer_source,
                     "), or point data.tokenizer at the one the dataset was made with");

  for (Split split : {Split::kTrain, Split::kVal}) {
    for (const ShardInfo& info : m.shards(split)) {
      std::unique_ptr<TokenDataset::Shard> shard;
      {
        std::lock_guard<std::mutex> lock(hdf5_mutex());
        hdf5_quiet();
        shard = open_shard_locked(dataset_dir, manifest_path, m, split, info);
      }
      if (req.verify_checksums) verify_shard_tokens(*shard, m, manifest_path, info);
      std::lock_guard<std::mutex> lock(hdf5_mutex());
      shard.reset();
    }
  }

  // A split that is read must hold at least one sample of seq_len + 1 tokens.
  auto check_one_sample = [&](const char* split_name, int64_t tokens, const char* remedy) {
    if (req.seq_len > 0 && tokens < req.seq_len + 1)
      throw_user_error(manifest_path, ": the ", split_name, " split holds ", tokens, " tokens, fewer than one "
                       "sample of train.seq_len + 1 = ", req.seq_len + 1, " tokens; ", remedy);
  };
  const int64_t train_tokens = m.tokens(Split::kTrain);
  if (train_tokens == 0)
    throw_user_error(manifest_path, ": the dataset is empty (its train split holds no tokens): the inputs given "
                     "to `zerotrain prepare` held no documents, or all went to the validation split "
                     "(--val-fraction); prepare it again from the right files");
  check_one_sample("train", train_tokens, "lower train.seq_len or prepare more data");
  if (req.need_val) {
    const int64_t val_tokens = m.tokens(Split::kVal);
    if (val_tokens == 0)
      throw_user_error(manifest_path, ": train.eval_every asks for validation, but the dataset's validation split "
                       "is empty; prepare it with --val-fraction > 0 (e.g. 0.01) and enough documents, or set "
                       "train.eval_every = 0");
    check_one_sample("validation", val_tokens,
                     "prepare with a larger --val-fraction, lower train.seq_len, or set train.eval_every = 0");
  }
  return m;
}

std::shared_ptr<const TokenDataset> TokenDataset::open(const std::string& dataset_dir, Split split) {
  std::shared_ptr<TokenDataset> ds(new TokenDataset());
  ds->dir_ = dataset_dir;
  ds->split_ = split;
  ds->manifest_ = read_manifest(dataset_dir);
  const std::string manifest_path = (fs::path(dataset_dir) / kManifestFile).string();
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hdf5_quiet();
  for (const ShardInfo& info : ds->manifest_.shards(split)) {
    ds->shards_.push_back(open_shard_locked(dataset_dir, manifest_path, ds->manifest_, split, info));
    ds->shard_begin_.push_back(ds->shard_begin_.back() + info.tokens);
  }
  return ds;
}

TokenDataset::~TokenDataset() {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  shards_.clear();
}

int64_t TokenDataset::num_samples(int64_t seq_len) const {
  ZT_CHECK(seq_len > 0, "seq_len must be positive");
  const int64_t n = num_tokens();
  return n > seq_len ? (n - 1) / seq_len : 0;
}

void TokenDataset::read(int64_t begin, int64_t count, int32_t* out) const {
  ZT_CHECK(begin >= 0 && count >= 0 && begin + count <= num_tokens(), "token range [", begin, ", ",
           begin + count, ") outside the ", split_name(split_), " split of ", num_tokens(), " tokens");
  // The shard holding `begin`: the last one that starts at or before it (skipping empty ones).
  size_t s = size_t(std::upper_bound(shard_begin_.begin(), shard_begin_.end(), begin) - shard_begin_.begin()) - 1;
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hdf5_quiet();
  while (count > 0) {
    ZT_CHECK(s < shards_.size(), "token range runs past the last shard");
    const Shard& shard = *shards_[s];
    const int64_t local = begin - shard_begin_[s];
    const int64_t n = std::min(count, shard.num_tokens - local);
    if (n > 0) {
      H5Handle file_space(ZT_HDF5_CHECK(H5Dget_space(shard.tokens.get()), "reading ", shard.path), H5Sclose);
      const hsize_t start[1] = {hsize_t(local)}, dims[1] = {hsize_t(n)};
      ZT_HDF5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, dims, nullptr),
                    "selecting tokens of ", shard.path);
      H5Handle mem_space(ZT_HDF5_CHECK(H5Screate_simple(1, dims, nullptr), "creating a memory space"), H5Sclose);
      // HDF5 widens uint16/uint32 to int32 as it reads.
      ZT_HDF5_CHECK(H5Dread(shard.tokens.get(), H5T_NATIVE_INT32, mem_space.get(), file_space.get(), H5P_DEFAULT, out),
                    "reading tokens [", local, ", ", local + n, ") of ", shard.path);
      // What data.verify = true checks up front, here for the tokens read (the model would index
      // its embedding out of range): a few compares per token beside the HDF5 read.
      const int64_t vocab = manifest_.vocab_size;
      for (int64_t i = 0; i < n; ++i)
        if (out[i] < 0 || out[i] >= vocab) [[unlikely]]
          throw_user_error(shard.path, " holds token id ", out[i], " at position ", local + i,
                           ", outside the dataset's vocab_size ", vocab, ": the shard is corrupt. "
                           "Prepare it again (data.verify = true finds every such shard before "
                           "training)");
      out += n;
      begin += n;
      count -= n;
    }
    ++s;
  }
}

void TokenDataset::read_sample(int64_t index, int64_t seq_len, int32_t* out) const {
  ZT_CHECK(index >= 0 && index < num_samples(seq_len), "sample ", index, " outside [0, ", num_samples(seq_len), ")");
  read(index * seq_len, seq_len + 1, out);
}

}  // namespace zt::datasets
