// The model's only view of where parameters and gradients live (DESIGN.md section 2).
//
// The model walks its layers (numbered as in params.h: 0 embedding, 1..n_layer blocks,
// n_layer+1 head) and asks the provider for each layer's parameter and gradient tensors between
// before_layer and after_layer. zero/ implements it: stage 3 gathers a layer's parameters in
// before_layer and releases them in after_layer; stage 2 reduce-scatters in grad_ready.
#pragma once

#include <span>

#include "runtime/tensor.h"

namespace zt::model {

enum class Pass { kForward, kBackward };

// Whether the model reads layer `layer`'s parameters in `pass`: always, except the embedding in
// the backward, whose gradient is a scatter-add of the incoming gradient by token id (GPT-J's
// lm_head is not tied to it). A provider need not make those parameters available then (stage 3
// gathers nothing for it).
inline bool reads_params(int layer, Pass pass) { return layer != 0 || pass == Pass::kForward; }

class ParamProvider {
 public:
  virtual ~ParamProvider() = default;

  // Before the model touches layer `layer`'s parameters in `pass`. Views returned by
  // layer_params / layer_grads stay valid until the matching after_layer.
  virtual void before_layer(int layer, Pass pass) = 0;
  virtual void after_layer(int layer, Pass pass) = 0;

  // The layer's parameters in params.h order, in the provider's storage dtype.
  virtual std::span<const Tensor> layer_params(int layer) = 0;
  // The layer's gradient accumulators in params.h order. The model ADDS its gradients for the
  // current micro-batch into them (it never overwrites), so accumulation over micro-batches is
  // the provider's choice of when to zero them.
  virtual std::span<const Tensor> layer_grads(int layer) = 0;
  // All of the layer's gradients for this micro-batch have been added (backward pass only).
  virtual void grad_ready(int layer) = 0;
};

}  // namespace zt::model
