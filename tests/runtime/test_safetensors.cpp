// safetensors: writer/reader round trips in fp32, bf16, fp16 and fp64 (odd shapes, a scalar, an
// empty tensor, chunked writes), the committed Hugging Face fixtures, and the exact message for
// each way a file can be malformed.
#include "runtime/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"
#include "tests/support/user_error.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using zt::testing::user_error_of;

const std::string kFixtures = std::string(ZT_SOURCE_DIR) + "/tests/fixtures/hf-gptj-tiny";

uint32_t bits(float f) { return float_to_bits(f); }

// Values with every case the conversions must keep: signed zeros, infinities, a NaN, fp16
// subnormals and overflow, a bf16 rounding tie, and ordinary numbers.
std::vector<float> test_values(size_t n) {
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, std::nanf(""), 1.0f,
                            -2.5f, 6.0e-8f, 70000.0f, bits_to_float(0x3f808000u), 1e-30f, 3.14159f};
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = i < std::size(specials) ? specials[i] : std::sin(float(i) * 0.37f) * float(i);
  return v;
}

// What the reader must return for a value stored in `dtype`: fp32 rounded once (RNE).
float stored_as(float v, DType dtype) {
  switch (dtype) {
    case DType::kF32: return v;
    case DType::kBF16: return bf16_to_float(float_to_bf16(v));
    case DType::kF16: return f16_to_float(float_to_f16(v));
    case DType::kF64: return v;  // fp32 -> fp64 -> fp32 is exact
  }
  return v;
}

TEST(Safetensors, RoundTripsEveryFloatDtypeInChunks) {
  const std::string dir = zt::testing::fresh_dir("roundtrip");
  const std::string path = dir + "/t.safetensors";
  const std::vector<SafetensorsTensorSpec> specs = {
      {"odd.f32", DType::kF32, {3, 5, 7}},
      {"odd.bf16", DType::kBF16, {7, 1, 13}},
      {"scalar.f16", DType::kF16, {}},
      {"empty", DType::kBF16, {2, 0, 3}},
      {"vec.f16", DType::kF16, {29}},
      {"vec.f64", DType::kF64, {5}},
  };
  {
    SafetensorsWriter w(path, specs, {{"format", "pt"}, {"note", "quote \" and \\ kept"}});
    // The header is padded with spaces so that the data starts at a multiple of 8.
    EXPECT_EQ((8 + w.header().size()) % 8, 0u);
    for (const SafetensorsTensorSpec& s : specs) {
      int64_t n = 1;
      for (int64_t d : s.shape) n *= d;
      const std::vector<float> v = test_values(size_t(n));
      // Chunks of 1, 2, 3, ... elements: a chunk boundary falls everywhere.
      int64_t done = 0;
      for (int64_t k = 1; done < n; ++k) {
        const int64_t m = std::min(k, n - done);
        w.write(s.name, v.data() + done, m);
        done += m;
      }
    }
    EXPECT_FALSE(fs::exists(path)) << "the file appears only at finish()";
    EXPECT_TRUE(fs::exists(path + ".tmp"));
    w.finish();
  }
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const SafetensorsFile f(path);
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.name);
  EXPECT_EQ(f.names(), names);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"},
                                                              {"note", "quote \" and \\ kept"}}));
  for (const SafetensorsTensorSpec& s : specs) {
    const SafetensorsEntry& e = f.at(s.name);
    EXPECT_EQ(e.dtype, safetensors_dtype_name(s.dtype)) << s.name;
    ASSERT_EQ(e.float_dtype, s.dtype) << s.name;
    EXPECT_EQ(e.shape, s.shape) << s.name;
    const int64_t n = e.numel();
    EXPECT_EQ(int64_t(e.bytes.size()), n * int64_t(dtype_size(s.dtype))) << s.name;
    EXPECT_EQ(f.data(e).data(), e.bytes.data());
    const std::vector<float> v = test_values(size_t(n));
    std::vector<float> got(size_t(n), -7.0f);
    f.read_f32(e, 0, n, got.data());
    for (int64_t i = 0; i < n; ++i) {
      const float want = stored_as(v[size_t(i)], s.dtype);
      if (std::isnan(want))
        EXPECT_TRUE(std::isnan(got[size_t(i)])) << s.name << "[" << i << "]";
      else
        EXPECT_EQ(bits(got[size_t(i)]), bits(want)) << s.name << "[" << i << "] = " << v[size_t(i)];
    }
    // A sub-range reads the same elements.
    if (n >= 3) {
      float mid = 0;
      f.read_f32(e, 2, 3, &mid);
      EXPECT_EQ(bits(mid), bits(got[2])) << s.name;
    }
  }
  EXPECT_EQ(f.at("scalar.f16").numel(), 1);
  EXPECT_EQ(f.at("empty").numel(), 0);
  EXPECT_EQ(f.find("absent"), nullptr);
  EXPECT_EQ(user_error_of([&] { f.at("absent"); }),
            "safetensors file " + path + " has no tensor \"absent\"");
}

TEST(Safetensors, WriterWithoutFinishLeavesNothing) {
  const std::string dir = zt::testing::fresh_dir("abandon");
  const std::string path = dir + "/t.safetensors";
  {
    SafetensorsWriter w(path, {{"a", DType::kF32, {4}}});
    const float v[2] = {1, 2};
    w.write("a", v, 2);
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  // finish() refuses an incomplete tensor (a caller's bug, so zt::Error, not a UserError).
  SafetensorsWriter w(path, {{"a", DType::kF32, {4}}, {"b", DType::kF16, {1}}});
  const float v[4] = {1, 2, 3, 4};
  w.write("a", v, 4);
  EXPECT_THROW(w.write("a", v, 1), Error);  // "a" is complete: "b" is next
  EXPECT_THROW(w.finish(), Error);

  // A directory that does not exist: a UserError naming the file.
  const std::string bad = dir + "/absent/t.safetensors";
  EXPECT_EQ(user_error_of([&] { SafetensorsWriter x(bad, {{"a", DType::kF32, {1}}}); }),
            "cannot create " + bad + ".tmp (for " + bad + "): No such file or directory: check "
            "the disk space and permissions of the output directory");
}

TEST(Safetensors, ReadsTheCommittedFixtures) {
  // expected.safetensors (safetensors.torch.save_file): int32 inputs, fp32 results, metadata.
  const SafetensorsFile expected(kFixtures + "/expected.safetensors");
  EXPECT_EQ(expected.metadata(), (std::map<std::string, std::string>{
                                     {"torch", "2.11.0+cu130"}, {"transformers", "5.17.0"}}));
  const SafetensorsEntry& ids = expected.at("input_ids");
  EXPECT_EQ(ids.dtype, "I32");
  EXPECT_FALSE(ids.float_dtype.has_value());
  EXPECT_EQ(ids.shape, (std::vector<int64_t>{2, 11}));
  std::vector<int32_t> id_values(22);
  std::memcpy(id_values.data(), expected.data(ids).data(), 22 * 4);
  EXPECT_EQ(id_values, (std::vector<int32_t>{47, 53, 55, 94, 35, 22, 3, 75, 59, 61, 73,
                                             49, 15, 41, 12, 70, 17, 11, 81, 95, 18, 34}));
  EXPECT_EQ(user_error_of([&] {
              float x;
              expected.read_f32(ids, 0, 1, &x);
            }),
            "safetensors file " + kFixtures + "/expected.safetensors: tensor \"input_ids\" has "
            "dtype I32, which zerotrain cannot read as floats (F32, BF16, F16 or F64 only)");
  float loss = 0;
  expected.read_f32(expected.at("loss"), 0, 1, &loss);
  EXPECT_EQ(bits(loss), 1083984842u);  // 4.884251594543457, from Python's struct module
  EXPECT_EQ(expected.at("logits").shape, (std::vector<int64_t>{2, 11, 96}));
  EXPECT_EQ(expected.names().size(), 4u + 25u);  // 4 tensors and 25 parameter gradients

  // fp16-legacy: old GPT-J mask buffers in the header order save_file chose, BOOL kept opaque.
  const SafetensorsFile legacy(kFixtures + "/fp16-legacy/model.safetensors");
  EXPECT_EQ(legacy.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(legacy.names().front(), "transformer.h.0.attn.masked_bias");
  EXPECT_EQ(legacy.names().back(), "transformer.h.1.attn.bias");
  const SafetensorsEntry& mask = legacy.at("transformer.h.0.attn.bias");
  EXPECT_EQ(mask.dtype, "BOOL");
  EXPECT_EQ(mask.shape, (std::vector<int64_t>{1, 1, 32, 32}));
  const std::span<const std::byte> m = mask.bytes;
  ASSERT_EQ(m.size(), 1024u);
  for (int r = 0; r < 32; ++r)
    for (int c = 0; c < 32; ++c)
      ASSERT_EQ(int(m[size_t(r * 32 + c)]), c <= r ? 1 : 0) << r << "," << c;  // tril
  const SafetensorsEntry& masked_bias = legacy.at("transformer.h.1.attn.masked_bias");
  EXPECT_TRUE(masked_bias.shape.empty());
  float mb = 0;
  legacy.read_f32(masked_bias, 0, 1, &mb);
  EXPECT_EQ(mb, -1e9f);
  EXPECT_EQ(legacy.at("lm_head.weight").dtype, "F16");

  const SafetensorsFile shard(kFixtures + "/bf16-sharded/model-00002-of-00002.safetensors");
  EXPECT_EQ(shard.at("lm_head.weight").float_dtype, DType::kBF16);
  EXPECT_EQ(shard.find("transformer.wte.weight"), nullptr);  // in the other shard
}

// A file with header length field `n` (the JSON's own length unless given), the JSON, and
// `data_bytes` bytes of data.
std::string file_bytes(const std::string& json, size_t data_bytes, uint64_t n = UINT64_MAX) {
  if (n == UINT64_MAX) n = json.size();
  std::string s(8, '\0');
  std::memcpy(s.data(), &n, 8);
  return s + json + std::string(data_bytes, '\x01');
}

TEST(Safetensors, MalformedFilesGiveTheirProblem) {
  const std::string dir = zt::testing::fresh_dir("malformed");
  struct Case {
    const char* what;
    std::string bytes;
    std::string message;  // after "safetensors file PATH"
  };
  const std::string corrupt = ": the file is corrupt or was not written as safetensors";
  const std::string t = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const Case cases[] = {
      {"short", std::string(5, '\0'),
       " is 5 bytes long, too short to hold the 8-byte header length: the file is truncated or "
       "not safetensors"},
      {"past_end", file_bytes("{}", 0, 200),
       ": header length 200 runs past the end of the file (10 bytes): the file is truncated or "
       "not safetensors"},
      {"huge", file_bytes("{}", 0, uint64_t(1) << 40),
       ": header length 1099511627776 is over the limit of 100000000 bytes: the file is corrupt "
       "or not safetensors"},
      {"bad_json",
       file_bytes("{\n\"t\":{\"dtype\":\"F32\",\n\"shape\":[2] \"data_offsets\":[0,8]}}", 8),
       ": bad header JSON at line 3, column 13: expected ',' or '}', found '\"': the file is "
       "corrupt or not safetensors"},
      {"not_object", file_bytes("[]", 0),
       ": bad header JSON at line 1, column 1: expected '{' (the header is one JSON object), "
       "found '[': the file is corrupt or not safetensors"},
      {"trailing", file_bytes("{} {}", 0),
       ": bad header JSON at line 1, column 4: unexpected text after the header object: the "
       "file is corrupt or not safetensors"},
      {"unknown_key",
       file_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"stride":[1]}})", 8),
       ": tensor \"t\" has unknown key \"stride\" (expected dtype, shape and data_offsets)" +
           corrupt},
      {"missing_key", file_bytes(R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", 8),
       ": tensor \"t\" lacks \"shape\"" + corrupt},
      {"repeated_key",
       file_bytes(R"({"t":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})", 8),
       ": tensor \"t\" has key \"dtype\" twice" + corrupt},
      {"past_data", file_bytes("{" + t + "}", 4),
       ": tensor \"t\" (F32 [2], data_offsets [0, 8]): offsets run past the data area of 4 bytes" +
           corrupt},
      {"end_before_begin",
       file_bytes(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8),
       ": tensor \"t\" (F32 [0], data_offsets [8, 4]): the end offset is before the begin offset" +
           corrupt},
      {"negative_offset",
       file_bytes(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 8),
       ": tensor \"t\" (F32 [1], data_offsets [-4, 0]): negative offset" + corrupt},
      {"three_offsets",
       file_bytes(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 8),
       ": tensor \"t\": data_offsets must be [begin, end], got 3 numbers" + corrupt},
      {"wrong_size", file_bytes(R"({"t":{"dtype":"BF16","shape":[3,2],"data_offsets":[0,8]}})", 8),
       ": tensor \"t\" (BF16 [3, 2], data_offsets [0, 8]): holds 8 bytes, but 6 elements of BF16 "
       "need 12" + corrupt},
      {"negative_dim", file_bytes(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0),
       ": tensor \"t\" has a negative dimension -1" + corrupt},
      {"overlap",
       file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"I32","shape":[2],"data_offsets":[4,12]}})", 12),
       ": tensors \"a\" (bytes 0..8) and \"b\" (bytes 4..12) overlap" + corrupt},
      {"duplicate", file_bytes("{" + t + "," + t + "}", 8),
       ": tensor \"t\" is listed twice" + corrupt},
      {"metadata_not_string", file_bytes(R"({"__metadata__":{"step":3}})", 0),
       ": bad header JSON at line 1, column 25: __metadata__ values must be strings, found '3': "
       "the file is corrupt or not safetensors"},
  };
  for (const Case& c : cases) {
    const std::string path =
        zt::testing::write_file(dir, std::string(c.what) + ".safetensors", c.bytes);
    EXPECT_EQ(user_error_of([&] { SafetensorsFile f(path); }),
              "safetensors file " + path + c.message)
        << c.what;
  }

  // Unknown dtypes (and empty tensors sharing an offset) open fine; only reading them as floats
  // fails.
  const std::string path = zt::testing::write_file(
      dir, "opaque.safetensors",
      file_bytes(R"({"q":{"dtype":"Q7","shape":[3],"data_offsets":[0,5]},)"
                 R"("e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})", 5));
  const SafetensorsFile f(path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"q", "e"}));
  EXPECT_EQ(f.data(f.at("q")).size(), 5u);
  EXPECT_FALSE(f.at("q").float_dtype.has_value());
  EXPECT_NE(user_error_of([&] {
              float x;
              f.read_f32(f.at("q"), 0, 1, &x);
            }).find("has dtype Q7, which zerotrain cannot read as floats"),
            std::string::npos);
}

}  // namespace
}  // namespace zt
