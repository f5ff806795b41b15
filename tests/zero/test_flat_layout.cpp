// The flat layout as a pure function: order, alignment, buckets, and exact ownership of every
// parameter element by exactly one rank, for awkward (prime) sizes and world sizes 1, 2, 3, 8.
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "model/params.h"
#include "zero/flat_layout.h"

namespace zt::zero {
namespace {

using model::ParamKind;
using model::ParamSpec;

// Three layers of prime-sized parameters (layer 1 has one larger than the bucket size).
std::vector<ParamSpec> prime_specs() {
  std::vector<ParamSpec> s;
  auto add = [&](int64_t n, int layer) {
    int index = 0;
    for (const ParamSpec& p : s) index += p.layer == layer;
    std::string name = "p";  // (not "p" + to_string: GCC 12 warns falsely on that, -Wrestrict)
    name += std::to_string(s.size());
    s.push_back(ParamSpec{name, Shape{n}, ParamKind::kLinearWeight, layer, index});
  };
  add(7, 0);
  add(13, 0);
  add(1009, 1);
  add(3, 1);
  add(101, 1);
  add(2, 2);
  add(997, 2);
  add(5, 2);
  return s;
}

void check_layout(const std::vector<ParamSpec>& specs, int layers, int n, int64_t bucket_elements) {
  SCOPED_TRACE("partitions " + std::to_string(n) + ", bucket " + std::to_string(bucket_elements));
  const FlatLayout l = make_flat_layout(specs, layers, n, bucket_elements);
  ASSERT_EQ(l.params.size(), specs.size());
  int64_t count = 0;
  for (const ParamSpec& s : specs) count += s.numel();
  EXPECT_EQ(l.num_params, count);

  // Backward layer order, params.h order within a layer, aligned, non-overlapping.
  int64_t prev_end = 0;
  for (size_t i = 0; i < l.params.size(); ++i) {
    const FlatParam& p = l.params[i];
    EXPECT_EQ(p.offset % kAlign, 0);
    EXPECT_GE(p.offset, prev_end);
    prev_end = p.offset + p.numel;
    if (i > 0) {
      const FlatParam& q = l.params[i - 1];
      EXPECT_TRUE(q.layer > p.layer || (q.layer == p.layer && q.spec_index < p.spec_index));
    }
    const Bucket& b = l.buckets[size_t(p.bucket)];
    EXPECT_EQ(b.layer, p.layer);
    EXPECT_GE(p.offset, b.begin);
    EXPECT_LE(p.offset + p.numel, b.begin + b.padded);
  }
  EXPECT_LE(prev_end, l.total);

  // Buckets: one layer each, padded to whole aligned pieces, no larger than asked unless a
  // single parameter is, and their pieces tile the local shard in order.
  int64_t shard_offset = 0, flat = 0;
  for (const Bucket& b : l.buckets) {
    EXPECT_EQ(b.begin, flat);
    EXPECT_EQ(b.padded % (int64_t(n) * kAlign), 0);
    EXPECT_EQ(b.shard * n, b.padded);
    EXPECT_EQ(b.shard_offset, shard_offset);
    int64_t elements = 0;
    for (int p = b.first_param; p < b.end_param; ++p) elements += l.params[size_t(p)].numel;
    if (b.end_param - b.first_param > 1) {
      EXPECT_LE(elements, bucket_elements);
    }
    shard_offset += b.shard;
    flat += b.padded;
  }
  EXPECT_EQ(l.shard_size, shard_offset);
  EXPECT_EQ(l.total, flat);
  for (int layer = 0; layer < layers; ++layer) {
    EXPECT_EQ(l.layer_begin[size_t(layer)], l.buckets[size_t(l.layer_first_bucket[size_t(layer)])].begin);
    EXPECT_EQ(l.layer_shard_end(layer) - l.layer_shard_begin(layer),
              (l.layer_end[size_t(layer)] - l.layer_begin[size_t(layer)]) / n);
  }

  // Every parameter element is owned by exactly one rank, at a local offset inside that rank's
  // shard that no other element of the rank uses, and consistent with the bucket's piece.
  std::vector<int> owner(size_t(l.total), -1);
  for (int r = 0; r < n; ++r) {
    std::set<int64_t> local_used;
    for (const OwnedPiece& piece : l.owned_pieces(r)) {
      const FlatParam& p = l.params[size_t(piece.param)];
      const Bucket& b = l.buckets[size_t(p.bucket)];
      EXPECT_EQ(piece.flat_begin, p.offset + piece.param_begin);
      EXPECT_GE(piece.flat_begin, b.piece_begin(r));
      EXPECT_LE(piece.flat_begin + piece.numel, b.piece_begin(r) + b.shard);
      EXPECT_EQ(piece.local_begin, b.shard_offset + piece.flat_begin - b.piece_begin(r));
      EXPECT_LE(piece.local_begin + piece.numel, l.shard_size);
      for (int64_t k = 0; k < piece.numel; ++k) {
        EXPECT_EQ(owner[size_t(piece.flat_begin + k)], -1) << "element owned twice";
        owner[size_t(piece.flat_begin + k)] = r;
        EXPECT_TRUE(local_used.insert(piece.local_begin + k).second);
      }
    }
  }
  for (const FlatParam& p : l.params)
    for (int64_t k = 0; k < p.numel; ++k) ASSERT_NE(owner[size_t(p.offset + k)], -1) << "unowned";
}

TEST(FlatLayout, PrimeSizesAtEveryWorldSize) {
  for (int n : {1, 2, 3, 8})
    for (int64_t bucket : {1, 500, 1000000}) check_layout(prime_specs(), 3, n, bucket);
}

TEST(FlatLayout, GptjTinyAtEveryWorldSize) {
  model::GptjConfig c;
  c.d_model = 36;  // awkward: not a multiple of the alignment
  c.n_head = 4;
  c.d_ff = 83;
  c.vocab_size = 101;
  const auto specs = model::gptj_param_specs(c);
  for (int n : {1, 2, 3, 8})
    for (int64_t bucket : {int64_t(1000), int64_t(1) << 30})
      check_layout(specs, model::num_layers_total(c), n, bucket);
}

TEST(FlatLayout, OnePartitionOwnsEverythingAtFlatOffsets) {
  const FlatLayout l = make_flat_layout(prime_specs(), 3, 1, 100);
  EXPECT_EQ(l.shard_size, l.total);
  for (const OwnedPiece& p : l.owned_pieces(0)) {
    EXPECT_EQ(p.local_begin, p.flat_begin);
    EXPECT_EQ(p.param_begin, 0);
    EXPECT_EQ(p.numel, l.params[size_t(p.param)].numel);
  }
}

TEST(FlatLayout, PaddingIsSmall) {
  const auto specs = model::gptj_param_specs(model::gptj_preset("gptj-6b"));
  const FlatLayout l = make_flat_layout(specs, 30, 64, 25'000'000);
  EXPECT_EQ(l.num_params, 6050882784LL);
  // Per bucket at most 64 * 16 elements, plus per-parameter alignment: well under 0.01%.
  EXPECT_LT(double(l.total - l.num_params), 1e-4 * double(l.num_params));
}

}  // namespace
}  // namespace zt::zero
