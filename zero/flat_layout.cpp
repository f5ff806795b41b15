// The flat layout: backward layer order, params.h order within a layer.
#include "zero/flat_layout.h"

#include "runtime/error.h"

namespace zt::zero {

FlatLayout make_flat_layout(const std::vector<model::ParamSpec>& specs, int num_layers) {
  FlatLayout layout;
  layout.layer_begin.assign(size_t(num_layers), 0);
  layout.layer_end.assign(size_t(num_layers), 0);
  layout.first_param_of_layer.assign(size_t(num_layers), 0);
  for (int layer = num_layers - 1; layer >= 0; --layer) {
    layout.layer_begin[size_t(layer)] = layout.total;
    layout.first_param_of_layer[size_t(layer)] = int(layout.params.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i].layer != layer) continue;
      layout.params.push_back(FlatParam{int(i), layer, layout.total, specs[i].numel()});
      layout.total += specs[i].numel();
    }
    layout.layer_end[size_t(layer)] = layout.total;
  }
  ZT_CHECK(layout.params.size() == specs.size(), "parameters outside layers 0..", num_layers - 1);
  return layout;
}

}  // namespace zt::zero
