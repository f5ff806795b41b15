// Where every parameter lives in the engine's flat buffers (DESIGN.md section 4).
//
// Parameters are laid out in backward order (the head layer first, the embedding last) so the
// gradients that backward produces first are contiguous at the front, and within a layer in
// params.h order. Every flat buffer the engine holds (16-bit params, grads, fp32 master, Adam
// moments) uses this one layout.
#pragma once

#include <cstdint>
#include <vector>

#include "model/params.h"

namespace zt::zero {

struct FlatParam {
  int spec_index;  // index into the spec list the layout was made from (forward order)
  int layer;
  int64_t offset;  // first element in the flat buffers
  int64_t numel;
};

struct FlatLayout {
  std::vector<FlatParam> params;             // in flat (backward) order
  std::vector<int64_t> layer_begin;          // per provider layer: first element
  std::vector<int64_t> layer_end;            // per provider layer: one past the last element
  std::vector<int> first_param_of_layer;     // per provider layer: index into `params`
  int64_t total = 0;                         // elements in every flat buffer
};

// `specs` in forward order as gptj_param_specs returns them; num_layers = num_layers_total().
FlatLayout make_flat_layout(const std::vector<model::ParamSpec>& specs, int num_layers);

}  // namespace zt::zero
