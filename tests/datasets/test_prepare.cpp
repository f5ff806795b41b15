// `zerotrain prepare`'s pipeline: shards and manifest from text and jsonl inputs, exact piece
// splitting, determinism over thread counts, the validation split, safe writing, and the jsonl
// string extractor.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "datasets/bpe_tokenizer.h"
#include "datasets/hdf5_check.h"
#include "datasets/jsonl.h"
#include "datasets/prepare.h"
#include "datasets/token_dataset.h"
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

std::vector<int32_t> expected_bytes(const std::vector<std::string>& docs, int32_t eos) {
  std::vector<int32_t> out;
  for (const std::string& d : docs) {
    for (unsigned char c : d) out.push_back(c);
    out.push_back(eos);
  }
  return out;
}

std::vector<int32_t> read_all(const std::string& dir, Split split) {
  auto ds = TokenDataset::open(dir, split);
  std::vector<int32_t> out(size_t(ds->num_tokens()));
  ds->read(0, ds->num_tokens(), out.data());
  return out;
}

std::vector<int64_t> read_doc_offsets(const std::string& path) {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  H5Handle ds(H5Dopen2(file.get(), "doc_offsets", H5P_DEFAULT), H5Dclose);
  H5Handle space(H5Dget_space(ds.get()), H5Sclose);
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space.get(), &n, nullptr);
  std::vector<int64_t> out(n);
  H5Dread(ds.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data());
  return out;
}

PrepareOptions options(const std::string& out, std::vector<std::string> inputs) {
  PrepareOptions o;
  o.out_dir = out;
  o.inputs = std::move(inputs);
  o.val_fraction = 0;
  o.progress = false;
  o.threads = 2;
  return o;
}

TEST(Prepare, TextFilesBecomeDocumentsWithEos) {
  const std::string dir = fresh_dir("text");
  const std::vector<std::string> docs = {"hello world", "second document\nwith two lines\n", "x"};
  std::vector<std::string> inputs;
  for (size_t i = 0; i < docs.size(); ++i) inputs.push_back(write_file(dir, "doc" + std::to_string(i) + ".txt", docs[i]));
  inputs.insert(inputs.begin() + 1, write_file(dir, "empty.txt", ""));  // no document
  const std::string out = (fs::path(dir) / "ds").string();
  const PrepareSummary s = prepare_dataset(options(out, inputs), byte_tokenizer());

  EXPECT_EQ(s.documents, 3);
  ASSERT_EQ(s.manifest.train.size(), 1u);
  EXPECT_TRUE(s.manifest.val.empty());
  EXPECT_EQ(s.manifest.token_dtype, TokenDType::kUInt16);
  const std::vector<int32_t> want = expected_bytes(docs, 256);
  EXPECT_EQ(read_all(out, Split::kTrain), want);
  EXPECT_EQ(s.manifest.train[0].tokens, int64_t(want.size()));
  EXPECT_EQ(s.manifest.train[0].documents, 3);
  EXPECT_EQ(read_doc_offsets((fs::path(out) / "train-00000.h5").string()),
            (std::vector<int64_t>{0, 12, 12 + 32, 12 + 32 + 2}));
  // The manifest on disk reads back to the same thing, and the dataset passes every check.
  const Manifest m = check_dataset(out, {});
  EXPECT_EQ(manifest_to_toml(m), manifest_to_toml(s.manifest));
  // No temporary file is left.
  for (const auto& e : fs::directory_iterator(out)) EXPECT_FALSE(e.path().string().ends_with(".tmp")) << e.path();
}

TEST(Prepare, JsonlLinesBecomeDocuments) {
  const std::string dir = fresh_dir("jsonl");
  const std::string path = write_file(dir, "data.jsonl",
                                      "\xef\xbb\xbf{\"id\": 1, \"text\": \"caf\\u00e9 \\ud83d\\ude00\", \"meta\": {\"a\": [1, 2]}}\n"
                                      "\n"
                                      "{\"text\": \"line\\nbreak \\\"quoted\\\"\"}\r\n"
                                      "{\"text\": \"\"}\n"
                                      "{\"body\": \"other\", \"text\": \"last\"}");
  const std::string out = (fs::path(dir) / "ds").string();
  PrepareOptions o = options(out, {path});
  o.format = InputFormat::kJsonl;
  const PrepareSummary s = prepare_dataset(o, byte_tokenizer());
  EXPECT_EQ(s.documents, 3);  // the blank line and the empty text are skipped
  EXPECT_EQ(read_all(out, Split::kTrain),
            expected_bytes({"caf\xc3\xa9 \xf0\x9f\x98\x80", "line\nbreak \"quoted\"", "last"}, 256));
}

TEST(Prepare, MalformedJsonlNamesFileAndLineAndLeavesNoManifest) {
  const std::string dir = fresh_dir("badjsonl");
  const std::string path = write_file(dir, "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
  const std::string out = (fs::path(dir) / "ds").string();
  PrepareOptions o = options(out, {path});
  o.format = InputFormat::kJsonl;
  const std::string msg = user_error_of([&] { prepare_dataset(o, byte_tokenizer()); });
  EXPECT_NE(msg.find(path + ":2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("malformed JSON"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(fs::path(out) / "manifest.toml"));
  EXPECT_TRUE(fs::is_empty(out));  // temporary shards removed

  const std::string nokey = write_file(dir, "nokey.jsonl", "{\"body\": \"x\"}\n");
  o.inputs = {nokey};
  const std::string msg2 = user_error_of([&] { prepare_dataset(o, byte_tokenizer()); });
  EXPECT_NE(msg2.find(nokey + ":1:"), std::string::npos) << msg2;
  EXPECT_NE(msg2.find("--jsonl-key"), std::string::npos) << msg2;
}

TEST(Prepare, SameOutputForAnyThreadCountPieceSizeAndShardSize) {
  const std::string dir = fresh_dir("threads");
  std::vector<std::string> inputs;
  std::vector<std::string> docs;
  for (int d = 0; d < 12; ++d) {
    std::string text;
    for (int w = 0; w < 40 + 17 * d; ++w) text += "word" + std::to_string((w * 7 + d) % 23) + (w % 9 == 8 ? "\n" : " ");
    docs.push_back(text);
    std::string name = "d";  // (appended piece by piece: GCC 12 warns falsely, -Wrestrict, on
    name += std::to_string(d);  // literal + string concatenations here)
    name += ".txt";
    inputs.push_back(write_file(dir, name, text));
  }
  auto run = [&](const std::string& name, int threads, int64_t piece_bytes) {
    PrepareOptions o = options((fs::path(dir) / name).string(), inputs);
    o.threads = threads;
    o.piece_bytes = piece_bytes;
    o.shard_tokens = 700;  // several shards per split
    o.val_fraction = 0.25;
    return manifest_to_toml(prepare_dataset(o, byte_tokenizer()).manifest);
  };
  const std::string one = run("t1", 1, 1 << 20);
  EXPECT_EQ(run("t4", 4, 1 << 20), one);
  EXPECT_EQ(run("t3_pieces", 3, 37), one);  // documents tokenized in many small pieces
  const Manifest m = read_manifest((fs::path(dir) / "t1").string());
  EXPECT_GT(m.train.size(), 1u);
  EXPECT_FALSE(m.val.empty());
  EXPECT_EQ(m.documents(Split::kTrain) + m.documents(Split::kVal), 12);
  // Every document is whole in exactly one split, in input order within it.
  std::vector<int32_t> train = read_all((fs::path(dir) / "t3_pieces").string(), Split::kTrain);
  std::vector<int32_t> val = read_all((fs::path(dir) / "t3_pieces").string(), Split::kVal);
  EXPECT_EQ(train.size() + val.size(), expected_bytes(docs, 256).size());
  for (size_t i = 0; i + 1 < m.train.size(); ++i) EXPECT_GE(m.train[i].tokens, 700);
}

TEST(Prepare, ValidationSplitIsByDocumentAndFollowsTheFraction) {
  const std::string dir = fresh_dir("val");
  std::string jsonl;
  for (int d = 0; d < 400; ++d) jsonl += "{\"text\": \"doc " + std::to_string(d) + "\"}\n";
  const std::string path = write_file(dir, "docs.jsonl", jsonl);
  PrepareOptions o = options((fs::path(dir) / "a").string(), {path});
  o.format = InputFormat::kJsonl;
  o.val_fraction = 0.2;
  const Manifest a = prepare_dataset(o, byte_tokenizer()).manifest;
  const int64_t val_docs = a.documents(Split::kVal);
  EXPECT_GT(val_docs, 50);  // 80 expected; binomial sd 8
  EXPECT_LT(val_docs, 110);
  EXPECT_EQ(a.documents(Split::kTrain) + val_docs, 400);
  // Another seed, another split; the same seed, the same split.
  o.out_dir = (fs::path(dir) / "b").string();
  o.split_seed = 99;
  EXPECT_NE(manifest_to_toml(prepare_dataset(o, byte_tokenizer()).manifest), manifest_to_toml(a));
  o.out_dir = (fs::path(dir) / "c").string();
  o.split_seed = a.split_seed;
  EXPECT_EQ(manifest_to_toml(prepare_dataset(o, byte_tokenizer()).manifest), manifest_to_toml(a));
}

TEST(Prepare, RefusesANonEmptyFolderUnlessOverwrite) {
  const std::string dir = fresh_dir("overwrite");
  const std::string in = write_file(dir, "a.txt", "first");
  const std::string out = (fs::path(dir) / "ds").string();
  prepare_dataset(options(out, {in}), byte_tokenizer());
  const std::string in2 = write_file(dir, "b.txt", "second text");
  const std::string msg = user_error_of([&] { prepare_dataset(options(out, {in2}), byte_tokenizer()); });
  EXPECT_NE(msg.find("not empty"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--overwrite"), std::string::npos) << msg;
  EXPECT_EQ(read_all(out, Split::kTrain), expected_bytes({"first"}, 256));
  write_file(out, "notes.txt", "user file");
  PrepareOptions o = options(out, {in2});
  o.overwrite = true;
  prepare_dataset(o, byte_tokenizer());
  EXPECT_EQ(read_all(out, Split::kTrain), expected_bytes({"second text"}, 256));
  EXPECT_TRUE(fs::exists(fs::path(out) / "notes.txt"));  // only our own files are replaced
}

TEST(Prepare, AFailureMidwayLeavesTheFolderAsItWas) {
  const std::string dir = fresh_dir("midway");
  std::vector<std::string> inputs;
  for (int d = 0; d < 30; ++d) {
    const std::string id = std::to_string(d);  // (two literal + string concatenations in one call
    std::string text = "doc ";                 // make GCC 12 warn falsely: -Wrestrict)
    text += id;
    inputs.push_back(write_file(dir, "d" + id + ".txt", text));
  }
  const std::string out = (fs::path(dir) / "ds").string();
  prepare_dataset(options(out, inputs), byte_tokenizer());  // an earlier, complete dataset
  TokenizerRef failing = byte_tokenizer();
  failing.encode_append = [](std::string_view text, std::vector<int32_t>& ids) {
    if (text == "doc 20") throw_user_error("cannot tokenize doc 20");
    for (unsigned char c : text) ids.push_back(c);
  };
  PrepareOptions o = options(out, inputs);
  o.overwrite = true;
  o.shard_tokens = 10;  // several shards are finished before the failure
  o.threads = 3;
  const std::vector<int32_t> before = read_all(out, Split::kTrain);
  EXPECT_NE(user_error_of([&] { prepare_dataset(o, failing); }).find("doc 20"), std::string::npos);
  // The earlier dataset is whole (--overwrite replaces it only once the new one is complete),
  // and no temporary file is left.
  EXPECT_EQ(read_all(out, Split::kTrain), before);
  check_dataset(out, {});
  for (const auto& entry : fs::directory_iterator(out))
    EXPECT_FALSE(entry.path().string().ends_with(".tmp")) << entry.path();
  // A stop request is such a failure too.
  o.stop = [] { return true; };
  const std::string msg = user_error_of([&] { prepare_dataset(o, byte_tokenizer()); });
  EXPECT_NE(msg.find("interrupted"), std::string::npos) << msg;
  EXPECT_NE(msg.find("as it was"), std::string::npos) << msg;
  EXPECT_EQ(read_all(out, Split::kTrain), before);
}

// A replaced dataset with more shards than the new one: the extra shards go; files that are not
// the dataset's stay. Temporary files of an interrupted run are named in the refusal, and
// --overwrite removes them.
TEST(Prepare, OverwriteRemovesTheOldShardsOnlyAfterTheNewOnesAndNamesLeftovers) {
  const std::string dir = fresh_dir("overwrite-shards");
  std::vector<std::string> inputs;
  for (int d = 0; d < 6; ++d) inputs.push_back(write_file(dir, "d" + std::to_string(d) + ".txt", "document"));
  const std::string out = (fs::path(dir) / "ds").string();
  PrepareOptions o = options(out, inputs);
  o.shard_tokens = 5;  // one shard per document
  prepare_dataset(o, byte_tokenizer());
  ASSERT_TRUE(fs::exists(fs::path(out) / "train-00005.h5"));
  o.inputs = {write_file(dir, "new.txt", "new")};
  o.overwrite = true;
  prepare_dataset(o, byte_tokenizer());
  EXPECT_EQ(read_all(out, Split::kTrain), expected_bytes({"new"}, 256));
  EXPECT_FALSE(fs::exists(fs::path(out) / "train-00001.h5"));
  check_dataset(out, {});

  const std::string left = (fs::path(dir) / "left").string();
  fs::create_directories(left);
  write_file(left, "train-00000.h5.tmp", "partial");
  o.out_dir = left;
  o.overwrite = false;
  const std::string msg = user_error_of([&] { prepare_dataset(o, byte_tokenizer()); });
  EXPECT_NE(msg.find("interrupted prepare (train-00000.h5.tmp"), std::string::npos) << msg;
  fs::create_directories(fs::path(left) / "notes");  // then it holds more than leftovers
  EXPECT_NE(user_error_of([&] { prepare_dataset(o, byte_tokenizer()); }).find("is not empty"),
            std::string::npos);
  fs::remove(fs::path(left) / "notes");
  o.overwrite = true;
  prepare_dataset(o, byte_tokenizer());
  EXPECT_EQ(read_all(left, Split::kTrain), expected_bytes({"new"}, 256));
}

// Inputs that give nothing to train on are an error, and nothing is written.
TEST(Prepare, NoDocumentsOrNoTrainingDocumentsIsAnError) {
  const std::string dir = fresh_dir("nothing");
  const std::string out = (fs::path(dir) / "ds").string();
  std::string msg = user_error_of(
      [&] { prepare_dataset(options(out, {write_file(dir, "empty.txt", "")}), byte_tokenizer()); });
  EXPECT_NE(msg.find("no documents in the inputs: every file is empty"), std::string::npos) << msg;
  EXPECT_TRUE(!fs::exists(out) || fs::is_empty(out));
  PrepareOptions o = options(out, {write_file(dir, "a.txt", "a")});
  o.val_fraction = 0.999999;
  msg = user_error_of([&] { prepare_dataset(o, byte_tokenizer()); });
  EXPECT_NE(msg.find("all 1 documents went to the validation split"), std::string::npos) << msg;
  EXPECT_TRUE(!fs::exists(out) || fs::is_empty(out));
}

TEST(Prepare, TextWithoutSpacesIsCutAtCharacterBoundaries) {
  const std::string dir = fresh_dir("nospace");
  std::string text;
  for (int i = 0; i < 300; ++i) text += "\xc3\xa9";  // 600 bytes of two-byte characters, no space
  const std::string out = (fs::path(dir) / "ds").string();
  PrepareOptions o = options(out, {write_file(dir, "a.txt", text)});
  o.piece_bytes = 16;
  std::vector<std::string> pieces;
  std::mutex m;
  TokenizerRef t = byte_tokenizer();
  t.encode_append = [&](std::string_view piece, std::vector<int32_t>& ids) {
    {
      std::lock_guard<std::mutex> lock(m);
      pieces.emplace_back(piece);
    }
    for (unsigned char c : piece) ids.push_back(c);
  };
  prepare_dataset(o, t);
  EXPECT_EQ(read_all(out, Split::kTrain), expected_bytes({text}, 256));
  EXPECT_GT(pieces.size(), 1u);
  for (const std::string& p : pieces) EXPECT_EQ(p.size() % 2, 0u) << "a piece split a character";
}

TEST(Prepare, MissingInputIsAClearError) {
  const std::string dir = fresh_dir("missing");
  const std::string msg = user_error_of(
      [&] { prepare_dataset(options((fs::path(dir) / "ds").string(), {dir + "/nope.txt"}), byte_tokenizer()); });
  EXPECT_NE(msg.find("nope.txt"), std::string::npos) << msg;
}

TEST(Prepare, WideVocabulariesUseUint32) {
  const std::string dir = fresh_dir("wide");
  const std::string in = write_file(dir, "a.txt", "abc");
  const std::string out = (fs::path(dir) / "ds").string();
  const Manifest m = prepare_dataset(options(out, {in}), byte_tokenizer(70000, 65600)).manifest;
  EXPECT_EQ(m.token_dtype, TokenDType::kUInt32);
  EXPECT_EQ(read_all(out, Split::kTrain), (std::vector<int32_t>{65600 + 'a', 65600 + 'b', 65600 + 'c', 69999}));
  check_dataset(out, {});
}

// A piece ends before a whitespace character that a non-whitespace one follows (Unicode
// White_Space, as the pre-tokenizer's \s): the last such point within the limit.
TEST(Prepare, PieceSplitsFallBeforeTheLastWhitespaceOfARun) {
  EXPECT_EQ(find_piece_end("hello world again", 100), 11u);
  EXPECT_EQ(find_piece_end("hello world again", 8), 5u);
  EXPECT_EQ(find_piece_end("hello  world", 100), 6u);  // "hello", " ", " world" either way
  EXPECT_EQ(find_piece_end("ab \n\n cd", 4), 0u);  // inside a run: " \n\n" is one word of it
  EXPECT_EQ(find_piece_end("a\n b", 100), 2u);
  EXPECT_EQ(find_piece_end("a\r\nb", 100), 2u);  // "\r", "\n" are two words either way
  EXPECT_EQ(find_piece_end("\xd0\xbf\xd1\x80\xd0\xb8 \xd0\xbc\xd0\xb8\xd1\x80", 100), 6u);  // Cyrillic
  EXPECT_EQ(find_piece_end("a\xc2\xa0" "b", 100), 1u);      // no-break space is White_Space
  EXPECT_EQ(find_piece_end("a \xe3\x80\x80" "b", 100), 2u);  // before U+3000, not before " "
  EXPECT_EQ(find_piece_end("a \xff" "b", 100), 1u);  // a stray byte is a non-whitespace character
  EXPECT_EQ(find_piece_end("abc def ", 100), 3u);  // trailing whitespace: nothing follows it
  EXPECT_EQ(find_piece_end(" abc", 100), 0u);      // no empty first piece
  EXPECT_EQ(find_piece_end("x", 100), 0u);
  EXPECT_EQ(find_piece_end("", 100), 0u);
}

// Reading a long text: with no split point in the first piece, one further on (within 16
// pieces) is taken before any cut inside a word.
TEST(Prepare, ReadingLooksAheadForASplitPointBeforeCuttingAWord) {
  const std::string dir = fresh_dir("lookahead");
  const std::string text = std::string(200, 'x') + " " + std::string(400, 'y');
  const std::string out = (fs::path(dir) / "ds").string();
  PrepareOptions o = options(out, {write_file(dir, "a.txt", text)});
  o.piece_bytes = 16;
  o.threads = 1;
  std::map<std::string, int> pieces;
  std::mutex m;
  TokenizerRef t = byte_tokenizer();
  t.encode_append = [&](std::string_view piece, std::vector<int32_t>& ids) {
    {
      std::lock_guard<std::mutex> lock(m);
      ++pieces[std::string(piece)];
    }
    for (unsigned char c : piece) ids.push_back(c);
  };
  prepare_dataset(o, t);
  EXPECT_EQ(read_all(out, Split::kTrain), expected_bytes({text}, 256));
  EXPECT_EQ(pieces.count(std::string(200, 'x')), 1u) << "the x run was cut inside";
}

// The real GPT-2 tokenizer: shards hold encode(document) + <|endoftext|>, and documents cut
// into pieces give exactly the tokens of the whole text.
TEST(Prepare, Gpt2TokensMatchTheTokenizer) {
  const std::string dir = fresh_dir("gpt2");
  const BpeTokenizer tok = BpeTokenizer::load(std::string(ZT_SOURCE_DIR) + "/tests/fixtures/gpt2-bpe");
  TokenizerRef ref;
  ref.id = tok.id();
  ref.vocab_size = tok.vocab_size();
  ref.eos_id = tok.eos_id();
  ref.encode_append = [&tok](std::string_view text, std::vector<int32_t>& out) { tok.encode_append(text, out); };
  std::string long_doc;
  for (int i = 0; i < 300; ++i)
    long_doc += "The quick brown fox's " + std::to_string(i * 37) + " jumps, over   the lazy dog!\n  ";
  // Non-Latin words, lines without spaces, CRLF, tabs, runs of mixed whitespace, Unicode spaces
  // and stray bytes: cut points of every kind.
  std::string mixed_doc;
  for (int i = 0; i < 200; ++i) {
    mixed_doc += "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xd0\xbc\xd0\xb8\xd1\x80 " +
                 std::to_string(i) + "\xe4\xb8\xad\xe6\x96\x87\xe3\x80\x82\n";
    mixed_doc += i % 3 == 0 ? "it's\r\n" : i % 3 == 1 ? "\t \xc2\xa0" "x\xe3\x80\x80" "y\n \n" : "\xff" " 's  \n\nz";
  }
  const std::vector<std::string> docs = {"Hello, world! It's   a test.\n\n", long_doc,
                                         "  caf\xc3\xa9 \xe2\x80\x94 end", mixed_doc};
  std::vector<std::string> inputs;
  for (size_t i = 0; i < docs.size(); ++i) inputs.push_back(write_file(dir, "d" + std::to_string(i) + ".txt", docs[i]));
  const std::string out = (fs::path(dir) / "ds").string();
  PrepareOptions o = options(out, inputs);
  o.piece_bytes = 64;  // cut the long document into ~300 pieces
  const Manifest m = prepare_dataset(o, ref).manifest;
  std::vector<int32_t> want;
  for (const std::string& d : docs) {
    tok.encode_append(d, want);
    want.push_back(50256);
  }
  EXPECT_EQ(read_all(out, Split::kTrain), want);
  EXPECT_EQ(m.tokenizer, tok.id());
  EXPECT_EQ(m.vocab_size, 50257);
  EXPECT_EQ(m.eos_id, 50256);
  EXPECT_EQ(m.token_dtype, TokenDType::kUInt16);
}

// ---- jsonl extractor ----

std::string extract(const std::string& line, const std::string& key = "text") {
  std::string out, error;
  const JsonExtract r = extract_json_string(line, key, &out, &error);
  return r == JsonExtract::kOk ? out : "ERR " + error;
}

TEST(Jsonl, DecodesEveryEscape) {
  EXPECT_EQ(extract(R"({"text": "a\"b\\c\/d\b\f\n\r\t"})"), "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(extract(R"({"text": "\u0041\u00e9\u20ac\ud83d\ude00"})"), "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  EXPECT_EQ(extract(R"({"text": "\ud800x"})"), "\xef\xbf\xbdx");          // lone high surrogate
  EXPECT_EQ(extract(R"({"text": "\udc00"})"), "\xef\xbf\xbd");            // lone low surrogate
  EXPECT_EQ(extract(R"({"text": "\ud800\u0041"})"), "\xef\xbf\xbd" "A");  // high + non-low
  EXPECT_EQ(extract("{\"text\": \"raw \xc3\xa9 utf8\"}"), "raw \xc3\xa9 utf8");
}

TEST(Jsonl, SkipsOtherValuesAndFindsTheKey) {
  EXPECT_EQ(extract(R"( { "n": -1.5e+3, "b": true, "z": null, "o": {"text": "inner"}, "a": [[], {}, "s"], "text": "x" } )"), "x");
  EXPECT_EQ(extract(R"({"text": "first", "text": "second"})"), "second");
  EXPECT_EQ(extract(R"({"body": "b", "content": "c"})", "content"), "c");
}

TEST(Jsonl, ReportsProblemsWithAColumn) {
  EXPECT_EQ(extract(R"({"body": "x"})"), "ERR no \"text\" key in the object");
  EXPECT_EQ(extract(R"({"text": 5})"), "ERR the value of \"text\" is not a string");
  for (const char* bad : {R"({"text": "x")", R"({"text" "x"})", R"(["text"])", R"({"text": "x"} extra)",
                          R"({"text": "\q"})", R"({"text": "\u12"})", R"({"a": tru, "text": "x"})",
                          R"({"a": 01x, "text": "x"})", "{\"text\": \"tab\there\"}", ""}) {
    const std::string r = extract(bad);
    EXPECT_TRUE(r.starts_with("ERR malformed JSON")) << bad << " -> " << r;
    EXPECT_NE(r.find("column"), std::string::npos) << r;
  }
}

}  // namespace
}  // namespace zt::datasets
