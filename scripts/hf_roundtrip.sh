#!/usr/bin/env bash
# Checks `zerotrain convert` against transformers itself (needs python3 with torch, transformers and
# safetensors; the GPU machine has them):
#   1. every committed fixture folder -> hf-to-zt -> zt-to-hf loads in GPTJForCausalLM.from_pretrained
#      with exactly the original weights (fp32 export of the fp32 folder, bf16 of the bf16 one);
#   2. a short zerotrain run started from the fixture (model.init_from) is exported and loaded by
#      transformers, which computes a finite loss with the trained weights.
# usage: scripts/hf_roundtrip.sh ZEROTRAIN_BINARY [WORK_DIR] [DEVICE cpu|cuda]
set -euo pipefail
zt=$(realpath "$1")
work=${2:-$(mktemp -d)}
device=${3:-cpu}
here=$(cd "$(dirname "$0")/.." && pwd)
fixture="$here/tests/fixtures/hf-gptj-tiny"
mkdir -p "$work"

"$zt" convert hf-to-zt --in "$fixture/fp32" --out "$work/zt-fp32" --overwrite
"$zt" convert zt-to-hf --in "$work/zt-fp32" --out "$work/hf-fp32" --overwrite
python3 "$here/scripts/hf_gptj_fixture.py" --check-export "$work/hf-fp32" "$fixture/fp32"

"$zt" convert hf-to-zt --in "$fixture/bf16-sharded" --out "$work/zt-bf16" --overwrite
"$zt" convert zt-to-hf --in "$work/zt-bf16" --out "$work/hf-bf16" --dtype bf16 --overwrite
python3 "$here/scripts/hf_gptj_fixture.py" --check-export "$work/hf-bf16" "$fixture/bf16-sharded"

precision=fp32
[ "$device" = cuda ] && precision=bf16
"$zt" train --set model.init_from="$fixture/fp32" --set model.vocab_size=96 --set model.n_positions=32 \
  --set model.d_model=32 --set model.n_layer=2 --set model.n_head=4 --set model.rotary_dim=4 \
  --set model.d_ff=80 --set train.device="$device" --set train.precision=$precision \
  --set train.seq_len=16 --set train.steps=30 --set train.log_every=10 --set train.overwrite=true \
  --set train.out_dir="$work/run" --set train.checkpoint_dir="$work/run-ckpt"
"$zt" convert zt-to-hf --in "$work/run-ckpt" --out "$work/hf-trained" --overwrite
python3 - "$work/hf-trained" "$fixture/fp32" <<'EOF'
import sys
import torch
from transformers import GPTJForCausalLM
trained = GPTJForCausalLM.from_pretrained(sys.argv[1]).eval()
start = GPTJForCausalLM.from_pretrained(sys.argv[2]).eval()
ids = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    a = trained(input_ids=ids, labels=ids).loss.item()
    b = start(input_ids=ids, labels=ids).loss.item()
moved = sum((p - q).abs().sum().item() for p, q in zip(trained.parameters(), start.parameters()))
print(f"trained export: loss {a:.4f} on a random batch (start weights {b:.4f}); sum |change| {moved:.3f}")
assert torch.isfinite(torch.tensor(a)) and moved > 0
EOF
echo "hf_roundtrip: all checks passed ($work)"
