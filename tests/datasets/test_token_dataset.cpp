// Reading prepared token datasets: the zt64 checksum and manifest, every bad-data error (with
// the file it names), the sample order (shuffle, rank split, exact resume), prefetching and the
// batch loader.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "datasets/batch_loader.h"
#include "datasets/hdf5_check.h"
#include "datasets/prefetch.h"
#include "datasets/prepare.h"
#include "datasets/sampler.h"
#include "datasets/token_dataset.h"
#include "datasets/token_format.h"
#include "runtime/error.h"
#include "tests/support/byte_tokenizer.h"
#include "tests/support/temp_dir.h"
#include "tests/support/user_error.h"

namespace zt::datasets {
namespace {

namespace fs = std::filesystem;
using testing::byte_tokenizer;
using testing::fresh_dir;
using testing::user_error_of;
using testing::write_file;

// A dataset of `docs` jsonl documents "document <d> ..." with train and val splits.
std::string make_dataset(const std::string& name, int docs = 60, int64_t shard_tokens = 400,
                         double val_fraction = 0.2) {
  const std::string dir = fresh_dir(name);
  std::string jsonl;
  for (int d = 0; d < docs; ++d) jsonl += "{\"text\": \"document " + std::to_string(d) + " has some words\"}\n";
  const std::string in = write_file(dir, "in.jsonl", jsonl);
  PrepareOptions o;
  o.inputs = {in};
  o.out_dir = (fs::path(dir) / "ds").string();
  o.format = InputFormat::kJsonl;
  o.shard_tokens = shard_tokens;
  o.val_fraction = val_fraction;
  o.progress = false;
  o.threads = 2;
  prepare_dataset(o, byte_tokenizer());
  return o.out_dir;
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  const std::string msg = user_error_of(f);
  for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing \"" << p << "\" in: " << msg;
}

// ---- format ----

TEST(TokenFormat, ChecksumIsStreamableAndPinned) {
  std::vector<unsigned char> bytes(1000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = (unsigned char)(i * 37 + 11);
  Checksum64 whole;
  whole.update(bytes.data(), bytes.size());
  for (size_t step : {1, 3, 7, 8, 13, 999}) {
    Checksum64 pieces;
    for (size_t i = 0; i < bytes.size(); i += step) pieces.update(bytes.data() + i, std::min(step, bytes.size() - i));
    EXPECT_EQ(pieces.value(), whole.value()) << step;
  }
  // Any single changed byte changes the checksum, and so does a trailing zero byte.
  for (size_t i : {0, 7, 8, 500, 999}) {
    std::vector<unsigned char> changed = bytes;
    changed[i] ^= 1;
    Checksum64 c;
    c.update(changed.data(), changed.size());
    EXPECT_NE(c.value(), whole.value()) << i;
  }
  Checksum64 longer;
  longer.update(bytes.data(), bytes.size());
  const unsigned char zero = 0;
  longer.update(&zero, 1);
  EXPECT_NE(longer.value(), whole.value());
  // The value docs/data.md's Python reference gives for bytes 0..9 (the algorithm must not drift).
  const unsigned char ten[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  Checksum64 pinned;
  pinned.update(ten, 10);
  EXPECT_EQ(format_checksum(pinned.value()), "zt64:f9bc03068d9b27d0");
  uint64_t parsed = 0;
  EXPECT_TRUE(parse_checksum(format_checksum(0x0123456789abcdefull), &parsed));
  EXPECT_EQ(parsed, 0x0123456789abcdefull);
  EXPECT_FALSE(parse_checksum("zt64:0123", &parsed));
  EXPECT_FALSE(parse_checksum("crc:0123456789abcdef", &parsed));
}

TEST(TokenFormat, ManifestRoundTripsAndRejectsOtherFormats) {
  Manifest m;
  m.tokenizer = "gpt2-bpe:0011223344556677";
  m.vocab_size = 50257;
  m.eos_id = 50256;
  m.val_fraction = 0.01;
  m.split_seed = 7;
  m.train = {{"train-00000.h5", 100, 3, 0xabcdefull}, {"train-00001.h5", 50, 1, 1}};
  m.val = {{"val-00000.h5", 10, 1, 2}};
  const std::string text = manifest_to_toml(m);
  EXPECT_EQ(manifest_to_toml(parse_manifest(text, "m.toml")), text);
  EXPECT_EQ(parse_manifest(text, "m.toml").tokens(Split::kTrain), 150);
  expect_error([] { parse_manifest("format = \"other\"\n", "x/manifest.toml"); }, {"x/manifest.toml", "format"});
  expect_error([] { parse_manifest("format = [", "x/manifest.toml"); }, {"x/manifest.toml", "invalid TOML"});
  std::string newer = text;
  newer.replace(newer.find("format_version = 1"), 18, "format_version = 9");
  expect_error([&] { parse_manifest(newer, "m.toml"); }, {"m.toml", "newer"});
}

// ---- bad data: each names the file and what is wrong ----

TEST(TokenDatasetErrors, MissingManifestOrFolder) {
  const std::string dir = fresh_dir("nomanifest");
  expect_error([&] { check_dataset(dir, {}); }, {dir + "/manifest.toml", "zerotrain prepare"});
  expect_error([&] { check_dataset(dir + "/nope", {}); }, {dir + "/nope", "does not exist"});
}

TEST(TokenDatasetErrors, MissingShard) {
  const std::string ds = make_dataset("missing");
  fs::remove(fs::path(ds) / "train-00001.h5");
  expect_error([&] { check_dataset(ds, {}); }, {ds + "/train-00001.h5", "missing", "manifest.toml"});
  expect_error([&] { TokenDataset::open(ds, Split::kTrain); }, {"train-00001.h5", "missing"});
}

// Overwrites token `index` of a shard in place (same dtype, same length).
void poke_token(const std::string& path, int64_t index, uint16_t value) {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
  H5Handle ds(H5Dopen2(file.get(), "tokens", H5P_DEFAULT), H5Dclose);
  H5Handle space(H5Dget_space(ds.get()), H5Sclose);
  const hsize_t start[1] = {hsize_t(index)}, count[1] = {1};
  H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
  H5Handle mem(H5Screate_simple(1, count, nullptr), H5Sclose);
  ASSERT_GE(H5Dwrite(ds.get(), H5T_NATIVE_UINT16, mem.get(), space.get(), H5P_DEFAULT, &value), 0);
}

TEST(TokenDatasetErrors, CorruptedTokenIsAChecksumMismatch) {
  const std::string ds = make_dataset("corrupt");
  check_dataset(ds, {});  // fine before
  poke_token((fs::path(ds) / "val-00000.h5").string(), 5, 'Z');
  expect_error([&] { check_dataset(ds, {}); }, {ds + "/val-00000.h5", "checksum mismatch", "zt64:"});
  // The cheap checks alone do not read the tokens.
  DatasetRequirements cheap;
  cheap.verify_checksums = false;
  check_dataset(ds, cheap);
}

TEST(TokenDatasetErrors, TokenIdOutsideTheVocabulary) {
  const std::string ds = make_dataset("outofrange");
  const std::string shard = (fs::path(ds) / "train-00000.h5").string();
  // Make the checksum match the poked shard so the range check is what fails.
  Manifest m = read_manifest(ds);
  {
    auto data = TokenDataset::open(ds, Split::kTrain);
    std::vector<int32_t> t(size_t(m.train[0].tokens));
    data->read(0, m.train[0].tokens, t.data());
    t[3] = 300;
    std::vector<uint16_t> u(t.begin(), t.end());
    Checksum64 c;
    c.update(u.data(), u.size() * 2);
    m.train[0].checksum = c.value();
  }
  poke_token(shard, 3, 300);
  write_file(ds, "manifest.toml", manifest_to_toml(m));
  expect_error([&] { check_dataset(ds, {}); }, {shard, "token id 300", "vocab_size 257"});
  // Without the up-front check (data.verify = false), reading it names the shard and the fix.
  auto data = TokenDataset::open(ds, Split::kTrain);
  std::vector<int32_t> t(8);
  data->read(0, 3, t.data());  // the tokens before it are fine
  expect_error([&] { data->read(0, 8, t.data()); },
               {shard, "token id 300 at position 3", "vocab_size 257", "data.verify = true"});
}

TEST(TokenDatasetErrors, WrongDtype) {
  const std::string ds = make_dataset("dtype");
  const std::string shard = (fs::path(ds) / "train-00000.h5").string();
  const Manifest m = read_manifest(ds);
  {
    // Replace /tokens with a float32 dataset of the same length.
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    H5Handle file(H5Fopen(shard.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
    ASSERT_GE(H5Ldelete(file.get(), "tokens", H5P_DEFAULT), 0);
    const hsize_t n[1] = {hsize_t(m.train[0].tokens)};
    H5Handle space(H5Screate_simple(1, n, nullptr), H5Sclose);
    H5Handle ds2(H5Dcreate2(file.get(), "tokens", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                 H5Dclose);
    ASSERT_TRUE(ds2);
  }
  expect_error([&] { check_dataset(ds, {}); }, {shard, "dtype float32", "uint16"});
}

TEST(TokenDatasetErrors, VocabularyLargerThanTheModel) {
  const std::string ds = make_dataset("vocab");
  DatasetRequirements req;
  req.model_vocab_size = 200;
  expect_error([&] { check_dataset(ds, req); }, {ds + "/manifest.toml", "vocab_size 257", "model.vocab_size = 200"});
  req.model_vocab_size = 257;
  check_dataset(ds, req);
}

TEST(TokenDatasetErrors, TokenizerMismatch) {
  const std::string ds = make_dataset("tokenizer");
  DatasetRequirements req;
  req.tokenizer_id = "gpt2-bpe:ffffffffffffffff";
  req.tokenizer_source = "/models/other";
  expect_error([&] { check_dataset(ds, req); }, {ds + "/manifest.toml", "bytes:test", "gpt2-bpe:ffffffffffffffff",
                                                  "/models/other"});
  // A shard of another dataset mixed in: its own attributes disagree with the manifest.
  Manifest m = read_manifest(ds);
  m.tokenizer = "bytes:other";
  write_file(ds, "manifest.toml", manifest_to_toml(m));
  expect_error([&] { check_dataset(ds, {}); }, {ds + "/train-00000.h5", "bytes:test", "bytes:other"});
}

TEST(TokenDatasetErrors, EmptyDatasetAndTooFewTokens) {
  // prepare refuses to write an empty dataset: its manifest, written here, lists no shards.
  const std::string empty = make_dataset("empty-ds", 60, 400, 0.0);
  Manifest m = read_manifest(empty);
  m.train.clear();
  write_file(empty, "manifest.toml", manifest_to_toml(m));
  expect_error([&] { check_dataset(empty, {}); }, {empty + "/manifest.toml", "empty"});

  const std::string ds = make_dataset("few", 60, 400, 0.0);
  DatasetRequirements req;
  req.seq_len = 100000;
  expect_error([&] { check_dataset(ds, req); }, {ds + "/manifest.toml", "fewer than one sample", "train.seq_len"});
  req.seq_len = 16;
  req.need_val = true;
  expect_error([&] { check_dataset(ds, req); }, {ds + "/manifest.toml", "validation split", "train.eval_every = 0"});
}

TEST(TokenDatasetErrors, ChangedShardLength) {
  const std::string ds = make_dataset("length");
  Manifest m = read_manifest(ds);
  m.train[0].tokens += 1;
  write_file(ds, "manifest.toml", manifest_to_toml(m));
  expect_error([&] { check_dataset(ds, {}); }, {ds + "/train-00000.h5", "holds", "lists"});
  write_file(ds, "train-00000.h5", "not hdf5");
  expect_error([&] { check_dataset(ds, {}); }, {ds + "/train-00000.h5", "not an HDF5 file"});
}

// ---- reading ----

TEST(TokenDataset, ReadsAcrossShardBoundaries) {
  const std::string ds = make_dataset("read", 60, 100, 0.0);
  const Manifest m = read_manifest(ds);
  ASSERT_GT(m.train.size(), 3u);
  auto data = TokenDataset::open(ds, Split::kTrain);
  std::vector<int32_t> all(size_t(data->num_tokens()));
  data->read(0, data->num_tokens(), all.data());
  std::string expect;
  std::vector<int32_t> want;
  for (int d = 0; d < 60; ++d) {
    for (unsigned char c : "document " + std::to_string(d) + " has some words") want.push_back(c);
    want.push_back(256);
  }
  EXPECT_EQ(all, want);
  // Every window equals the slice of the whole stream, wherever shards begin.
  std::vector<int32_t> window(77);
  for (int64_t begin = 0; begin + 77 <= data->num_tokens(); begin += 13) {
    data->read(begin, 77, window.data());
    ASSERT_TRUE(std::equal(window.begin(), window.end(), all.begin() + begin)) << begin;
  }
  // Samples overlap by one token (note "sample packing").
  const int64_t seq = 16;
  EXPECT_EQ(data->num_samples(seq), (data->num_tokens() - 1) / seq);
  std::vector<int32_t> s(seq + 1);
  data->read_sample(3, seq, s.data());
  EXPECT_TRUE(std::equal(s.begin(), s.end(), all.begin() + 3 * seq));
}

// ---- sample order ----

TEST(Sampler, PermutationsAreBijectionsForAnySize) {
  for (int64_t n : {1, 2, 3, 5, 16, 17, 1000, 4097}) {
    const Permutation p(n, 42);
    std::vector<char> seen(size_t(n), 0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = p(i);
      ASSERT_GE(v, 0);
      ASSERT_LT(v, n);
      ASSERT_FALSE(seen[size_t(v)]) << "n " << n << " value " << v << " twice";
      seen[size_t(v)] = 1;
    }
  }
}

TEST(Sampler, EveryEpochVisitsEverySampleOnceInANewOrder) {
  const int64_t n = 97;
  const Sampler s(n, 5);
  std::vector<std::vector<int64_t>> epochs(3);
  for (int64_t p = 0; p < 3 * n; ++p) epochs[size_t(p / n)].push_back(s.sample_at(p));
  for (const auto& e : epochs) {
    std::vector<int64_t> sorted = e;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[size_t(i)], i);
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
  // Not the identity, and another seed gives another order.
  std::vector<int64_t> identity(n);
  for (int64_t i = 0; i < n; ++i) identity[size_t(i)] = i;
  EXPECT_NE(epochs[0], identity);
  const Sampler other(n, 6);
  EXPECT_NE(other.sample_at(0) * 1000 + other.sample_at(1), epochs[0][0] * 1000 + epochs[0][1]);
  EXPECT_EQ(s.state_at(2 * n + 5), (SamplerState{5, 2, 2 * n + 5, n}));
}

// The rows each rank reads at each step, for a world of `world` ranks.
std::vector<int64_t> global_batch(const Sampler& s, int64_t b, int64_t accum, int64_t world, int64_t step) {
  std::vector<int64_t> out;
  const int64_t g = b * accum * world;
  for (int64_t micro = 0; micro < accum; ++micro)
    for (int64_t r = 0; r < world; ++r) {
      const BatchLayout layout{b, accum, world, r};
      for (int64_t row = 0; row < b; ++row) out.push_back(s.sample_at(layout.position((step - 1) * g, micro, row)));
    }
  return out;
}

TEST(Sampler, RanksPartitionTheGlobalBatchWhateverTheWorldSize) {
  const Sampler s(50, 3);
  for (int64_t step = 1; step <= 6; ++step) {
    // 8 samples per step: 1 rank x 2 micro x 4, 2 ranks x 2 micro x 2, 4 ranks x 1 micro x 2.
    std::vector<int64_t> a = global_batch(s, 4, 2, 1, step), b = global_batch(s, 2, 2, 2, step),
                         c = global_batch(s, 2, 1, 4, step);
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    std::sort(c.begin(), c.end());
    EXPECT_EQ(a, b) << "step " << step;
    EXPECT_EQ(a, c) << "step " << step;
  }
  // The ranks' rows are disjoint and together the step's positions.
  std::set<int64_t> seen;
  for (int64_t r = 0; r < 2; ++r) {
    const BatchLayout layout{3, 2, 2, r};
    for (int64_t micro = 0; micro < 2; ++micro)
      for (int64_t row = 0; row < 3; ++row) EXPECT_TRUE(seen.insert(layout.position(12, micro, row)).second);
  }
  EXPECT_EQ(*seen.begin(), 12);
  EXPECT_EQ(*seen.rbegin(), 23);
}

TEST(BatchLoader, WorldOneAndTwoGiveTheSameGlobalBatches) {
  const std::string ds = make_dataset("world");
  auto data = TokenDataset::open(ds, Split::kTrain);
  const int64_t seq = 8;
  BatchLoader one(data, seq, BatchLayout{4, 1, 1, 0}, SamplerState{11});
  BatchLoader r0(data, seq, BatchLayout{2, 1, 2, 0}, SamplerState{11});
  BatchLoader r1(data, seq, BatchLayout{2, 1, 2, 1}, SamplerState{11});
  for (int step = 1; step <= 30; ++step) {  // several epochs of this small split
    const MicroBatch a = one.next(), b0 = r0.next(), b1 = r1.next();
    std::vector<int32_t> joined = b0.inputs;
    joined.insert(joined.end(), b1.inputs.begin(), b1.inputs.end());
    EXPECT_EQ(a.inputs, joined) << "step " << step;
    EXPECT_EQ(a.step, step);
    // Targets are the inputs shifted by one within each sample.
    for (int64_t row = 0; row < 4; ++row)
      for (int64_t t = 0; t + 1 < seq; ++t) EXPECT_EQ(a.targets[size_t(row * seq + t)], a.inputs[size_t(row * seq + t + 1)]);
  }
  EXPECT_EQ(one.state().position, 30 * 4);
}

TEST(BatchLoader, ResumingAtStepKConsumesExactlyTheUninterruptedSamples) {
  const std::string ds = make_dataset("resume");
  auto data = TokenDataset::open(ds, Split::kTrain);
  const int64_t seq = 8;
  const BatchLayout layout{3, 2, 2, 1};  // rank 1 of 2, 2 micro-batches of 3
  BatchLoader full(data, seq, layout, SamplerState{77});
  std::vector<MicroBatch> reference;
  for (int i = 0; i < 2 * 25; ++i) reference.push_back(full.next());
  for (int64_t k : {0, 1, 7, 20}) {
    // A run that stopped after step k saved this state (read it from a loader that did k steps).
    BatchLoader first(data, seq, layout, SamplerState{77});
    for (int64_t i = 0; i < 2 * k; ++i) first.next();
    const SamplerState saved = first.state();
    EXPECT_EQ(saved.position, k * 12);
    EXPECT_EQ(saved.epoch, k * 12 / data->num_samples(seq));
    BatchLoader resumed(data, seq, layout, saved);
    for (int64_t i = 2 * k; i < 2 * 25; ++i) {
      const MicroBatch mb = resumed.next();
      ASSERT_EQ(mb.samples, reference[size_t(i)].samples) << "k " << k << " micro-batch " << i;
      ASSERT_EQ(mb.inputs, reference[size_t(i)].inputs);
      EXPECT_EQ(mb.step, reference[size_t(i)].step);
    }
  }
  // A state from another dataset (or seq_len) is refused.
  SamplerState other{77, 0, 0, 12345};
  expect_error([&] { BatchLoader(data, seq, layout, other); }, {"changed", "12345"});
}

TEST(BatchLoader, EvalBatchesAreFixedAndSplitAcrossRanks) {
  const std::string ds = make_dataset("eval");
  auto val = TokenDataset::open(ds, Split::kVal);
  const auto all = read_eval_batches(*val, 8, 4, 1, 0, 3);
  const auto r0 = read_eval_batches(*val, 8, 2, 2, 0, 3), r1 = read_eval_batches(*val, 8, 2, 2, 1, 3);
  for (size_t j = 0; j < 3; ++j) {
    std::vector<int32_t> joined = r0[j].inputs;
    joined.insert(joined.end(), r1[j].inputs.begin(), r1[j].inputs.end());
    EXPECT_EQ(all[j].inputs, joined);
  }
  EXPECT_EQ(read_eval_batches(*val, 8, 4, 1, 0, 3)[2].inputs, all[2].inputs);
}

// ---- prefetch ----

TEST(Prefetcher, DeliversInOrderAndStaysBounded) {
  std::atomic<int64_t> produced{0};
  {
    Prefetcher<int64_t> p(
        [&](int64_t i) {
          ++produced;
          return i * i;
        },
        3);
    for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(p.next(), i * i);
    EXPECT_LE(produced.load(), 20 + 3 + 1);
  }  // the destructor stops the producer
}

TEST(Prefetcher, PropagatesTheProducersErrorAfterEarlierValues) {
  Prefetcher<int> p(
      [](int64_t i) {
        if (i == 2) throw_user_error("shard x.h5 vanished");
        return int(i);
      },
      4);
  EXPECT_EQ(p.next(), 0);
  EXPECT_EQ(p.next(), 1);
  expect_error([&] { p.next(); }, {"x.h5 vanished"});
  expect_error([&] { p.next(); }, {"x.h5 vanished"});  // and again: it does not hang
}

}  // namespace
}  // namespace zt::datasets
