// The block order of the Hopper attention kernels (model/cuda/block_order.h), checked on the
// CPU: every (head, tile) pair exactly once for any head count, heaviest tiles first within a
// group of heads, and the groups one after the other. A pair handed out twice (or never) would
// leave part of an attention output unwritten; the GPU tests cover only a few head counts.
#include "model/cuda/block_order.h"

#include <gtest/gtest.h>

#include <set>
#include <utility>
#include <vector>

namespace zt::model::cuda {
namespace {

TEST(BlockOrder, EveryHeadAndTileExactlyOnce) {
  for (int heads : {1, 2, 6, 7, 8, 9, 12, 16, 17, 64, 100}) {
    for (int tiles : {1, 2, 3, 16, 32}) {
      std::set<std::pair<int, int>> seen;
      for (int x = 0; x < heads * tiles; ++x) {
        const BlockTile t = block_tile_of(x, tiles, heads);
        ASSERT_GE(t.bh, 0) << "heads " << heads << " tiles " << tiles << " x " << x;
        ASSERT_LT(t.bh, heads) << "heads " << heads << " tiles " << tiles << " x " << x;
        ASSERT_GE(t.rank, 0) << "heads " << heads << " tiles " << tiles << " x " << x;
        ASSERT_LT(t.rank, tiles) << "heads " << heads << " tiles " << tiles << " x " << x;
        ASSERT_TRUE(seen.insert({t.bh, t.rank}).second)
            << "heads " << heads << " tiles " << tiles << ": (" << t.bh << ", " << t.rank
            << ") twice";
      }
      EXPECT_EQ(seen.size(), size_t(heads) * size_t(tiles));
    }
  }
}

TEST(BlockOrder, GroupsOfHeadsInTurnHeaviestTilesFirst) {
  const int heads = 20, tiles = 5;  // groups of 8, 8 and 4 heads
  int prev_group = 0, prev_rank = 0;
  for (int x = 0; x < heads * tiles; ++x) {
    const BlockTile t = block_tile_of(x, tiles, heads);
    const int group = t.bh / kHeadsPerGroup;
    ASSERT_GE(group, prev_group) << "x " << x;  // a group starts once the previous one is out
    if (group == prev_group) {
      EXPECT_GE(t.rank, prev_rank) << "x " << x;
    }
    prev_group = group;
    prev_rank = t.rank;
  }
  // Worked example: 12 heads in groups of 8 and 4, two tiles each.
  std::vector<std::pair<int, int>> order;
  for (int x = 0; x < 24; ++x) {
    const BlockTile t = block_tile_of(x, 2, 12);
    order.emplace_back(t.bh, t.rank);
  }
  const std::vector<std::pair<int, int>> want = {
      {0, 0}, {1, 0}, {2, 0}, {3, 0}, {4, 0}, {5, 0}, {6, 0}, {7, 0},
      {0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 1}, {6, 1}, {7, 1},
      {8, 0}, {9, 0}, {10, 0}, {11, 0}, {8, 1}, {9, 1}, {10, 1}, {11, 1}};
  EXPECT_EQ(order, want);
}

}  // namespace
}  // namespace zt::model::cuda
