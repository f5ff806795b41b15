#!/usr/bin/env python3
"""Writes tests/fixtures/gptj_hf_tiny.bin: a small random Hugging Face GPTJForCausalLM, a batch,
and what transformers computes for it (logits, loss, every parameter's gradient), all in fp32.

Run where torch and transformers are installed (the GPU machine has them; CPU is enough):
    python3 scripts/hf_fixture.py OUT_PATH

File format (read by tests/model/test_hf_parity.cpp): ASCII header lines
    <name> <dtype f32|i32> <ndim> <dim0> <dim1> ...
ending with a line "end", then each tensor's raw little-endian data in header order.
"""
import sys

import numpy as np
import torch
import transformers
from transformers import GPTJConfig, GPTJForCausalLM

SHAPES = dict(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4, rotary_dim=4,
              n_inner=80)
BATCH, SEQ = 2, 11


def main(out_path):
    torch.manual_seed(1234)
    config = GPTJConfig(**SHAPES, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                        initializer_range=0.02)
    model = GPTJForCausalLM(config).float().eval()
    # Larger-than-init weights so every path carries a gradient well above fp32 noise, and
    # non-zero biases and LayerNorm parameters so their handling is tested too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    input_ids = torch.randint(0, SHAPES["vocab_size"], (BATCH, SEQ))
    labels = input_ids.clone()
    labels[0, 3] = -100  # ignored positions: must not count in the mean
    labels[1, 7] = -100
    out = model(input_ids=input_ids, labels=labels)
    out.loss.backward()

    tensors = []
    cfg = [SHAPES["vocab_size"], SHAPES["n_positions"], SHAPES["n_embd"], SHAPES["n_layer"],
           SHAPES["n_head"], SHAPES["rotary_dim"], SHAPES["n_inner"]]
    tensors.append(("config", np.array(cfg, dtype=np.int32)))
    tensors.append(("input_ids", input_ids.numpy().astype(np.int32)))
    tensors.append(("labels", labels.numpy().astype(np.int32)))
    tensors.append(("logits", out.logits.detach().numpy().astype(np.float32)))
    tensors.append(("loss", np.array([out.loss.item()], dtype=np.float32)))
    for name, p in model.named_parameters():
        tensors.append((name, p.detach().numpy().astype(np.float32)))
        tensors.append(("grad:" + name, p.grad.numpy().astype(np.float32)))

    with open(out_path, "wb") as f:
        f.write(f"# transformers {transformers.__version__} torch {torch.__version__}\n".encode())
        for name, a in tensors:
            kind = "i32" if a.dtype == np.int32 else "f32"
            f.write(f"{name} {kind} {a.ndim} {' '.join(map(str, a.shape))}\n".encode())
        f.write(b"end\n")
        for _, a in tensors:
            f.write(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes())
    print(f"wrote {out_path}: loss {out.loss.item():.6f}, {len(tensors)} tensors")


if __name__ == "__main__":
    main(sys.argv[1])
