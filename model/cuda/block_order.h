// The order in which the Hopper attention kernels (model/cuda/attention_sm90.cu) hand out their
// blocks. Plain C++ usable on host and device, so the mapping is unit-tested on the CPU
// (tests/model/test_block_order.cpp).
//
// A kernel's 1-D grid has one block per (b, h) pair ("bh") and tile of one head; a tile's rank
// says how much work it has (0 = the most: the last query tile of the forward and dQ kernels,
// the first key tile of the dK/dV kernel). Heads go in groups of kHeadsPerGroup; within a group
// the ranks go heaviest first, each rank over the group's heads. The blocks resident at one time
// then cover a few heads, whose K and V (forward, dQ) or Q and dO (dK/dV) every block streams,
// so those reads hit L2 (2 MiB of them per head at T 2048): across all heads at once they did
// not (a 39% L2 hit rate in the dK/dV kernel, 83% grouped). Heaviest first within a group keeps
// the long blocks from being the last to start.
#pragma once

#include "runtime/dtype.h"  // ZT_HOST_DEVICE

namespace zt::model::cuda {

inline constexpr int kHeadsPerGroup = 8;

struct BlockTile {
  int bh, rank;
};

// The (bh, rank) of block x of a grid of tiles * heads_total blocks. Every pair comes exactly
// once; the last group may have fewer than kHeadsPerGroup heads.
ZT_HOST_DEVICE inline BlockTile block_tile_of(int x, int tiles, int heads_total) {
  const int group = x / (kHeadsPerGroup * tiles);
  const int in_group = x - group * kHeadsPerGroup * tiles;
  const int rest = heads_total - group * kHeadsPerGroup;
  const int heads_here = rest < kHeadsPerGroup ? rest : kHeadsPerGroup;
  return {group * kHeadsPerGroup + in_group % heads_here, in_group / heads_here};
}

}  // namespace zt::model::cuda
