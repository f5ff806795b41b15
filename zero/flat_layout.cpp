// The flat layout: backward layer order, layer-aligned buckets, per-bucket rank pieces.
#include "zero/flat_layout.h"

#include <algorithm>

#include "runtime/error.h"

namespace zt::zero {

namespace {
int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
}  // namespace

FlatLayout make_flat_layout(const std::vector<model::ParamSpec>& specs, int num_layers,
                            int partitions, int64_t bucket_elements) {
  ZT_CHECK(partitions >= 1, "partitions must be >= 1, got ", partitions);
  ZT_CHECK(bucket_elements >= 1, "bucket_elements must be >= 1, got ", bucket_elements);
  FlatLayout l;
  l.partitions = partitions;
  l.layer_first_bucket.assign(size_t(num_layers), 0);
  l.layer_end_bucket.assign(size_t(num_layers), 0);
  l.layer_begin.assign(size_t(num_layers), 0);
  l.layer_end.assign(size_t(num_layers), 0);

  // Closes the open bucket: pads it so it splits into `partitions` aligned pieces.
  auto close_bucket = [&]() {
    Bucket& b = l.buckets.back();
    const int64_t used = l.total - b.begin;
    b.padded = round_up(std::max<int64_t>(used, 1), int64_t(partitions) * kAlign);
    b.shard = b.padded / partitions;
    b.shard_offset = l.shard_size;
    l.shard_size += b.shard;
    l.total = b.begin + b.padded;
  };

  for (int layer = num_layers - 1; layer >= 0; --layer) {
    l.layer_begin[size_t(layer)] = l.total;
    l.layer_first_bucket[size_t(layer)] = int(l.buckets.size());
    bool open = false;
    int64_t open_elements = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i].layer != layer) continue;
      const int64_t n = specs[i].numel();
      if (open && open_elements + n > bucket_elements) {
        close_bucket();
        open = false;
      }
      if (!open) {
        l.buckets.push_back(Bucket{layer, int(l.params.size()), int(l.params.size()), l.total, 0, 0, 0});
        open = true;
        open_elements = 0;
      }
      l.total = round_up(l.total, kAlign);
      l.params.push_back(FlatParam{int(i), layer, int(l.buckets.size()) - 1, l.total, n});
      l.buckets.back().end_param = int(l.params.size());
      l.total += n;
      l.num_params += n;
      open_elements += n;
    }
    if (open) close_bucket();
    l.layer_end_bucket[size_t(layer)] = int(l.buckets.size());
    l.layer_end[size_t(layer)] = l.total;
  }
  ZT_CHECK(l.params.size() == specs.size(), "parameters outside layers 0..", num_layers - 1);
  return l;
}

int64_t FlatLayout::layer_shard_begin(int layer) const {
  const int first = layer_first_bucket[size_t(layer)];
  return first < int(buckets.size()) ? buckets[size_t(first)].shard_offset : shard_size;
}

int64_t FlatLayout::layer_shard_end(int layer) const {
  const int end = layer_end_bucket[size_t(layer)];
  return end < int(buckets.size()) ? buckets[size_t(end)].shard_offset : shard_size;
}

std::vector<OwnedPiece> FlatLayout::owned_pieces(int rank) const {
  ZT_CHECK(0 <= rank && rank < partitions, "rank ", rank, " outside ", partitions, " partitions");
  std::vector<OwnedPiece> pieces;
  for (const Bucket& b : buckets) {
    const int64_t lo = b.piece_begin(rank), hi = lo + b.shard;
    for (int p = b.first_param; p < b.end_param; ++p) {
      const FlatParam& fp = params[size_t(p)];
      const int64_t begin = std::max(lo, fp.offset), end = std::min(hi, fp.offset + fp.numel);
      if (begin >= end) continue;
      pieces.push_back(OwnedPiece{p, begin - fp.offset, begin, b.shard_offset + (begin - lo), end - begin});
    }
  }
  return pieces;
}

}  // namespace zt::zero
