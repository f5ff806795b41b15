#!/bin/bash
# The CUDA backend's 2-GPU acceptance (issue 4) from one command, on one host with 2 GPUs:
#   scripts/acceptance-2gpu.sh BUILD_DIR OUT_DIR
# 1. the CUDA tests (ctest -L cuda) and the MPI suite at 2 ranks, whose ranks run their GPU tests;
# 2. GPT-J-6B (examples/gptj-6b-2gpu.toml: bf16, 4 x 2048 tokens per GPU, every block recomputed)
#    on 2 GPUs at ZeRO stages 0-3 for 20 steps, each run's losses against 1 GPU at stage 0 on the
#    same global batch (scripts/scaling_sweep.py --match-losses, bf16 tolerance): tokens/s per
#    GPU, MFU, peak memory and communication time in OUT_DIR/recomputed/scaling.csv;
# 3. the same at stages 2 and 3 with model.keep_activations = "auto" (every block kept on 80 GB
#    and larger GPUs), 10 steps, in OUT_DIR/kept/.
# The runs keep NCCL_NVLS_ENABLE=0 and may run as root (the sweep sets both). Every run uses
# OUT_DIR/gemms.txt as train.gemm_choices: the first run tunes cuBLASLt's algorithms for this GPU
# (its first step takes a few seconds longer), the others read them. About 7 minutes on
# 2 x H200. Exits non-zero when a test fails, a run fails, or the losses do not match.
set -uo pipefail
if [ $# -ne 2 ]; then sed -n '2,12p' "$0"; exit 2; fi
build=$1; out=$2
root=$(cd "$(dirname "$0")/.." && pwd)
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
mkdir -p "$out"
status=0
(cd "$build" && ctest -L cuda --output-on-failure > "$out/ctest-cuda.txt" 2>&1) || status=1
tail -3 "$out/ctest-cuda.txt"
(cd "$build" && ctest -R '^mpi_np2$' --output-on-failure > "$out/ctest-mpi-np2.txt" 2>&1) || status=1
tail -3 "$out/ctest-mpi-np2.txt"
sweep() {  # NAME ARGS...
  local name=$1; shift
  python3 "$root/scripts/scaling_sweep.py" --zerotrain "$build/launch/zerotrain" \
      --config "$root/examples/gptj-6b-2gpu.toml" --gpus 2 --offload-stage3-at 0 --timeout 600 \
      --out "$out/$name" --set train.gemm_choices="$out/gemms.txt" "$@" > "$out/$name.md" 2> "$out/$name.log" || status=1
  echo "== $name"; cat "$out/$name.md"
}
sweep recomputed --stages 0,1,2,3 --steps 20 --match-losses
sweep kept --stages 2,3 --steps 10 --set model.keep_activations=auto
echo "acceptance: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
