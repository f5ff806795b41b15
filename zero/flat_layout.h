// Where every parameter lives in the engine's flat buffers, and which part each rank owns
// (DESIGN.md section 4).
//
// Parameters are laid out in backward order (the head layer first, the embedding last) so the
// gradients backward produces first are contiguous at the front; within a layer in params.h
// order. A layer's parameters are grouped into buckets of at most `bucket_elements` elements
// (a larger parameter gets a bucket of its own); a bucket never spans two layers, so gathering
// or reducing a layer means gathering or reducing its buckets.
//
// Partitioning: each bucket is padded to a multiple of partitions * kAlign elements and split
// into `partitions` equal contiguous pieces; rank r owns piece r of every bucket. A rank's
// local shard buffers (fp32 master, Adam moments, sharded gradients or parameters) are the
// concatenation of its pieces in bucket order: bucket b's piece starts at b.shard_offset. So one
// reduce-scatter per bucket lands directly in the owner's shard, one all-gather per bucket
// rebuilds it, and each rank owns one contiguous equal range of every bucket. With one
// partition (ZeRO stage 0) every rank owns everything and local offsets equal flat offsets.
// Megatron-LM's distributed optimizer keeps the same per-bucket records.
#pragma once

#include <cstdint>
#include <vector>

#include "model/params.h"

namespace zt::zero {

// Parameters start, and rank pieces are sized, at multiples of kAlign elements: 32-byte
// alignment for 16-bit data and 64 bytes for fp32, as vector loads and cuBLASLt want.
inline constexpr int64_t kAlign = 16;

struct FlatParam {
  int spec_index;  // index into the spec list the layout was made from (forward order)
  int layer;
  int bucket;
  int64_t offset;  // first element in the flat buffers
  int64_t numel;
};

struct Bucket {
  int layer;
  int first_param;   // index into FlatLayout::params
  int end_param;     // one past the last
  int64_t begin;     // first element in the flat buffers
  int64_t padded;    // elements including padding: a multiple of partitions * kAlign
  int64_t shard;     // padded / partitions: the piece each rank owns
  int64_t shard_offset;  // where this bucket's piece starts in a rank's local shard buffers
  // Rank r owns flat elements [begin + r * shard, begin + (r + 1) * shard).
  int64_t piece_begin(int rank) const { return begin + int64_t(rank) * shard; }
};

// A run of one parameter's elements inside one rank's shard.
struct OwnedPiece {
  int param;            // index into FlatLayout::params
  int64_t param_begin;  // first element within the parameter (row-major flattening)
  int64_t flat_begin;   // the same element in the flat buffers
  int64_t local_begin;  // the same element in the rank's local shard buffers
  int64_t numel;
};

struct FlatLayout {
  int partitions = 1;
  std::vector<FlatParam> params;   // flat (backward) order
  std::vector<Bucket> buckets;     // flat order
  // Per provider layer: its buckets [first_bucket, end_bucket) and flat range [begin, end).
  std::vector<int> layer_first_bucket, layer_end_bucket;
  std::vector<int64_t> layer_begin, layer_end;
  int64_t total = 0;       // flat elements, padding included
  int64_t num_params = 0;  // parameter elements, padding excluded
  int64_t shard_size = 0;  // elements of every rank's local shard (sum of bucket pieces)

  // A layer's range in the local shard buffers: its buckets' pieces are contiguous there.
  int64_t layer_shard_begin(int layer) const;
  int64_t layer_shard_end(int layer) const;
  // The parameter runs rank `rank` owns, in local order (padding excluded).
  std::vector<OwnedPiece> owned_pieces(int rank) const;
};

// `specs` in forward order as gptj_param_specs returns them; num_layers = num_layers_total();
// partitions >= 1 (the ranks sharing the optimizer state); bucket_elements >= 1.
FlatLayout make_flat_layout(const std::vector<model::ParamSpec>& specs, int num_layers,
                            int partitions, int64_t bucket_elements);

}  // namespace zt::zero
