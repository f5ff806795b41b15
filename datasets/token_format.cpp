// The token dataset format: dtype names, the zt64 checksum, and manifest.toml (written by hand
// so its keys keep a readable order; read with TOML++).
#include "datasets/token_format.h"

#include <toml++/toml.h>

#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "datasets/manifest_toml.h"
#include "runtime/error.h"
#include "runtime/file_io.h"
#include "runtime/rng.h"
#include "runtime/text.h"

namespace zt::datasets {

std::string_view token_dtype_name(TokenDType dtype) {
  return dtype == TokenDType::kUInt16 ? "uint16" : "uint32";
}

bool parse_token_dtype(std::string_view name, TokenDType* out) {
  if (name == "uint16") {
    *out = TokenDType::kUInt16;
  } else if (name == "uint32") {
    *out = TokenDType::kUInt32;
  } else {
    return false;
  }
  return true;
}

int token_dtype_size(TokenDType dtype) { return dtype == TokenDType::kUInt16 ? 2 : 4; }

TokenDType token_dtype_for_vocab(int64_t vocab_size) {
  return vocab_size <= 65536 ? TokenDType::kUInt16 : TokenDType::kUInt32;
}

std::string_view split_name(Split split) { return split == Split::kTrain ? "train" : "val"; }

// ---- zt64 ----

void Checksum64::mix_word(uint64_t w) {
  uint64_t m = w * 0x9e3779b97f4a7c15ull;
  m ^= m >> 29;
  h_ = std::rotl((h_ ^ m) * 0xbf58476d1ce4e5b9ull, 31);
}

void Checksum64::update(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  total_bytes_ += bytes;
  // Finish a word left incomplete by the previous call.
  while (pending_bytes_ > 0 && bytes > 0) {
    pending_ |= uint64_t(*p++) << (8 * pending_bytes_);
    --bytes;
    if (++pending_bytes_ == 8) {
      mix_word(pending_);
      pending_ = 0;
      pending_bytes_ = 0;
    }
  }
  // Whole words. memcpy reads them little-endian on the little-endian hosts we support.
  static_assert(std::endian::native == std::endian::little, "zt64 reads words little-endian");
  while (bytes >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    mix_word(w);
    p += 8;
    bytes -= 8;
  }
  while (bytes > 0) {
    pending_ |= uint64_t(*p++) << (8 * pending_bytes_++);
    --bytes;
  }
}

uint64_t Checksum64::value() const {
  Checksum64 copy = *this;
  if (copy.pending_bytes_ > 0) copy.mix_word(copy.pending_);  // zero-padded last word
  return fmix64(copy.h_ ^ total_bytes_);
}

std::string format_checksum(uint64_t checksum) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(checksum));
  return std::string(kChecksumPrefix) + buf;
}

bool parse_checksum(std::string_view text, uint64_t* out) {
  if (!text.starts_with(kChecksumPrefix)) return false;
  text.remove_prefix(kChecksumPrefix.size());
  if (text.size() != 16) return false;
  for (char c : text)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, 16);
  if (ec != std::errc() || end != text.data() + text.size()) return false;
  *out = v;
  return true;
}

// ---- manifest ----

int64_t Manifest::tokens(Split split) const {
  int64_t n = 0;
  for (const ShardInfo& s : shards(split)) n += s.tokens;
  return n;
}

int64_t Manifest::documents(Split split) const {
  int64_t n = 0;
  for (const ShardInfo& s : shards(split)) n += s.documents;
  return n;
}

namespace {

constexpr std::string_view kRemedy =
    "it is not a complete zerotrain dataset manifest: prepare the dataset again with `zerotrain "
    "prepare`";

[[noreturn]] void bad_manifest(const std::string& source, const std::string& what) {
  manifest_error(source, what, kRemedy);
}
int64_t require_int(const toml::table& t, const char* key, const std::string& where,
                    const std::string& source) {
  return manifest_int(t, key, where, source, kRemedy);
}
std::string require_string(const toml::table& t, const char* key, const std::string& where,
                           const std::string& source) {
  return manifest_string(t, key, where, source, kRemedy);
}

std::vector<ShardInfo> read_shards(const toml::table& root, Split split, const std::string& source) {
  std::vector<ShardInfo> out;
  const std::string name(split_name(split));
  const toml::node* node = root.get(name);
  if (node == nullptr) return out;  // an empty split
  const toml::array* array = node->as_array();
  if (array == nullptr || !array->is_array_of_tables())
    bad_manifest(source, "\"" + name + "\" must be an array of tables ([[" + name + "]])");
  for (size_t i = 0; i < array->size(); ++i) {
    const toml::table& t = *array->get(i)->as_table();
    const std::string where = "[[" + name + "]] #" + std::to_string(i + 1) + ": ";
    ShardInfo s;
    s.file = require_string(t, "file", where, source);
    s.tokens = require_int(t, "tokens", where, source);
    s.documents = require_int(t, "documents", where, source);
    const std::string checksum = require_string(t, "checksum", where, source);
    if (!parse_checksum(checksum, &s.checksum))
      bad_manifest(source, where + "checksum \"" + checksum + "\" is not zt64:<16 hex digits>");
    if (s.file.empty() || s.file.find('/') != std::string::npos || s.file.find('\\') != std::string::npos)
      bad_manifest(source, where + "file \"" + s.file + "\" must be a plain file name in the dataset folder");
    if (s.tokens < 0 || s.documents < 0)
      bad_manifest(source, where + "tokens and documents must be >= 0");
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

std::string manifest_to_toml(const Manifest& m) {
  std::ostringstream os;
  os << "# zerotrain token dataset: shards of token ids for training (see docs/data.md).\n"
     << "# Written last by `zerotrain prepare`: every shard listed here is complete.\n"
     << "format = " << toml_quote(kFormatName) << "\n"
     << "format_version = " << m.format_version << "\n"
     << "tokenizer = " << toml_quote(m.tokenizer) << "\n"
     << "vocab_size = " << m.vocab_size << "\n"
     << "eos_id = " << m.eos_id << "\n"
     << "token_dtype = " << toml_quote(token_dtype_name(m.token_dtype)) << "\n"
     << "val_fraction = " << toml_float(m.val_fraction) << "\n"
     << "split_seed = " << int64_t(m.split_seed & 0x7fffffffffffffffull) << "\n"
     << "train_tokens = " << m.tokens(Split::kTrain) << "\n"
     << "val_tokens = " << m.tokens(Split::kVal) << "\n";
  for (Split split : {Split::kTrain, Split::kVal}) {
    for (const ShardInfo& s : m.shards(split)) {
      os << "\n[[" << split_name(split) << "]]\n"
         << "file = " << toml_quote(s.file) << "\n"
         << "tokens = " << s.tokens << "\n"
         << "documents = " << s.documents << "\n"
         << "checksum = " << toml_quote(format_checksum(s.checksum)) << "\n";
    }
  }
  return os.str();
}

Manifest parse_manifest(std::string_view text, const std::string& source) {
  const toml::table root = parse_manifest_toml(text, source, kRemedy);
  Manifest m;
  m.format_version = manifest_format_version(root, kFormatName, kFormatVersion, source, kRemedy,
                                             ", or prepare the dataset again with this version");
  m.tokenizer = require_string(root, "tokenizer", "", source);
  m.vocab_size = require_int(root, "vocab_size", "", source);
  m.eos_id = require_int(root, "eos_id", "", source);
  if (m.vocab_size < 1) bad_manifest(source, "vocab_size must be >= 1");
  if (m.eos_id < 0 || m.eos_id >= m.vocab_size) bad_manifest(source, "eos_id must be in [0, vocab_size)");
  const std::string dtype = require_string(root, "token_dtype", "", source);
  if (!parse_token_dtype(dtype, &m.token_dtype))
    bad_manifest(source, "token_dtype = \"" + dtype + "\", expected \"uint16\" or \"uint32\"");
  if (m.token_dtype == TokenDType::kUInt16 && m.vocab_size > 65536)
    bad_manifest(source, "token_dtype uint16 cannot hold vocab_size " + std::to_string(m.vocab_size));
  m.val_fraction = root["val_fraction"].value<double>().value_or(0.0);
  m.split_seed = uint64_t(root["split_seed"].value<int64_t>().value_or(0));
  m.train = read_shards(root, Split::kTrain, source);
  m.val = read_shards(root, Split::kVal, source);
  return m;
}

Manifest read_manifest(const std::string& dataset_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dataset_dir, ec))
    throw_user_error("dataset folder \"", dataset_dir, "\" does not exist (or is not a folder): ",
                     "check data.path, or make it with `zerotrain prepare --tokenizer DIR --out ",
                     dataset_dir, " FILES...`");
  const std::string path = (fs::path(dataset_dir) / kManifestFile).string();
  if (!fs::is_regular_file(path, ec))
    throw_user_error(path, " is missing: \"", dataset_dir,
                     "\" is not a prepared dataset, or its `zerotrain prepare` did not finish; ",
                     "run `zerotrain prepare --tokenizer DIR --out ", dataset_dir, " FILES...`");
  return parse_manifest(read_file(path, "dataset manifest"), path);
}

}  // namespace zt::datasets
