// Fault injection into the gradients an Engine's next step() reads (Engine::step_grads()), for
// tests of skipped steps: a non-finite value in a parameter of a chosen provider layer.
#pragma once

#include "runtime/dtype.h"
#include "runtime/tensor.h"
#include "zero/engine.h"

namespace zt::testing {

// Writes `value` over the first gradient element this rank holds of provider layer `layer`
// (model/params.h numbering); false when this rank holds none of that layer.
inline bool poison_layer_grad(zero::Engine& engine, int layer, float value) {
  const Tensor g = engine.step_grads();
  for (const zero::OwnedPiece& p : engine.owned_pieces()) {
    if (engine.layout().params[size_t(p.param)].layer != layer) continue;
    const int64_t at = engine.stage() == 0 ? p.flat_begin : p.local_begin;
    switch (g.dtype) {
      case DType::kF32: static_cast<float*>(g.data)[at] = value; break;
      case DType::kBF16: static_cast<bf16*>(g.data)[at] = float_to_bf16(value); break;
      case DType::kF16: static_cast<f16*>(g.data)[at] = float_to_f16(value); break;
      default: return false;
    }
    return true;
  }
  return false;
}

}  // namespace zt::testing
