#!/usr/bin/env python3
"""Writes the Hugging Face GPT-J fixtures under OUT (tests/fixtures/hf-gptj-tiny by default):
a small random GPTJForCausalLM saved by transformers in the layouts `zerotrain convert hf-to-zt`
and `model.init_from` read, and what transformers computes for it.

    OUT/fp32/            save_pretrained: model.safetensors + config.json (fp32)
    OUT/bf16-sharded/    save_pretrained in bf16 with a small max_shard_size:
                         model-0000K-of-0000N.safetensors + model.safetensors.index.json
    OUT/fp16-legacy/     fp16 weights plus the mask buffers old checkpoints hold
                         (h.{i}.attn.bias bool [1,1,P,P], h.{i}.attn.masked_bias f32 []), written
                         with safetensors.torch.save_file, + config.json
    OUT/expected.safetensors
                         input_ids, labels (int32 [B, T], labels -100 where ignored), logits (fp32
                         [B, T, V]), loss (fp32 [1]) and "grad:<name>" for every parameter (fp32),
                         from the fp32 model in fp32 (eager attention)

Run where torch and transformers are installed (the GPU machine has them; CPU is enough):
    python3 scripts/hf_gptj_fixture.py [OUT]

With --check-export DIR ORIGINAL it instead loads DIR (a `zerotrain convert zt-to-hf` output)
with GPTJForCausalLM.from_pretrained and compares every weight with ORIGINAL's bit for bit.
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import GPTJConfig, GPTJForCausalLM

SHAPES = dict(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4, rotary_dim=4,
              n_inner=80)
BATCH, SEQ = 2, 11


def make_model():
    torch.manual_seed(1234)
    config = GPTJConfig(**SHAPES, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                        initializer_range=0.02)
    config._attn_implementation = "eager"
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
    return model


def write_fixture(out):
    model = make_model()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(os.path.join(out, "fp32"), safe_serialization=True)

    bf16 = make_model().to(torch.bfloat16)
    bf16.save_pretrained(os.path.join(out, "bf16-sharded"), safe_serialization=True,
                         max_shard_size="40KB")

    legacy_dir = os.path.join(out, "fp16-legacy")
    os.makedirs(legacy_dir, exist_ok=True)
    tensors = {n: p.detach().to(torch.float16).contiguous() for n, p in model.named_parameters()}
    p = SHAPES["n_positions"]
    mask = torch.tril(torch.ones((p, p), dtype=torch.bool)).view(1, 1, p, p)
    for i in range(SHAPES["n_layer"]):
        tensors[f"transformer.h.{i}.attn.bias"] = mask.clone()
        tensors[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e9)
    save_file(tensors, os.path.join(legacy_dir, "model.safetensors"), metadata={"format": "pt"})
    model.config.to_json_file(os.path.join(legacy_dir, "config.json"))

    input_ids = torch.randint(0, SHAPES["vocab_size"], (BATCH, SEQ))
    labels = input_ids.clone()
    labels[0, 3] = -100  # ignored positions: must not count in the mean
    labels[1, 7] = -100
    result = model(input_ids=input_ids, labels=labels)
    result.loss.backward()
    expected = {
        "input_ids": input_ids.to(torch.int32),
        "labels": labels.to(torch.int32),
        "logits": result.logits.detach().float().contiguous(),
        "loss": result.loss.detach().float().reshape(1),
    }
    for name, prm in model.named_parameters():
        expected["grad:" + name] = prm.grad.float().contiguous()
    save_file(expected, os.path.join(out, "expected.safetensors"),
              metadata={"transformers": transformers.__version__, "torch": torch.__version__})
    print(f"wrote {out}: loss {result.loss.item():.6f}, {len(expected)} expected tensors")
    for root, _, files in sorted(os.walk(out)):
        for f in sorted(files):
            print("  ", os.path.join(root, f), os.path.getsize(os.path.join(root, f)))


def check_export(exported, original):
    a = GPTJForCausalLM.from_pretrained(exported)
    b = GPTJForCausalLM.from_pretrained(original)
    sa, sb = a.state_dict(), b.state_dict()
    names = [n for n, _ in b.named_parameters()]
    bad = 0
    for n in names:
        x, y = sa[n], sb[n]
        same = x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
        if not same:
            bad += 1
            print(f"DIFFERENT {n}: {x.dtype} {tuple(x.shape)} vs {y.dtype} {tuple(y.shape)}")
    print(f"check-export {exported} vs {original}: {len(names) - bad}/{len(names)} parameters "
          f"identical; dtype {next(a.parameters()).dtype}; config "
          f"{json.dumps({k: getattr(a.config, k) for k in SHAPES})}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--check-export":
        sys.exit(check_export(sys.argv[2], sys.argv[3]))
    write_fixture(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/hf-gptj-tiny")
