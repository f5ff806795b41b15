#!/usr/bin/env bash
# Issue 9: scripts/scaling_sweep.py end to end on the CPU backend. The tiny model at 1 and 2
# ranks, ZeRO stages 1-3 plus stage 3 with both offloads at 2 ranks, 3 steps each (about 10 s):
# the CSV must hold one successful row per run (with its communication time) and both plots must
# be well-formed SVG (XML). Then --match-losses: stages 0 and 3 against 1 rank at stage 0, and a
# doctored reference that must be caught.
# Usage: scaling_sweep_test.sh ZEROTRAIN_BINARY [MPIEXEC]
set -euo pipefail

zerotrain=${1:?usage: scaling_sweep_test.sh ZEROTRAIN [MPIEXEC]}
mpiexec=${2:-mpirun}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# --dry-run prints one command per run and starts nothing.
dry=$(python3 "$root/scripts/scaling_sweep.py" --zerotrain "$zerotrain" --dry-run \
        --out "$tmp/dry" --gpus 1,2 --stages 1,2,3 --offload-stage3-at 2)
[ "$(grep -c -- ' train ' <<<"$dry")" -eq 7 ] || { echo "dry run: expected 7 commands"; echo "$dry"; exit 1; }
[ ! -e "$tmp/dry" ] || { echo "dry run wrote $tmp/dry"; exit 1; }

# bf16 so that the measured model state is the DESIGN.md formula's (fp32 has no master copy).
python3 "$root/scripts/scaling_sweep.py" --zerotrain "$zerotrain" --mpirun "$mpiexec" \
  --device cpu --config "$root/examples/tiny-cpu.toml" --gpus 1,2 --stages 1,2,3 \
  --offload-stage3-at 2 --steps 3 --set train.precision=bf16 --out "$tmp/sweep" >"$tmp/table.md"

python3 - "$tmp/sweep" "$tmp/table.md" <<'PY'
import csv, os, sys, xml.etree.ElementTree as ET
out, table = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(os.path.join(out, "scaling.csv"))))
got = sorted((int(r["gpus"]), int(r["stage"]), r["offload"]) for r in rows)
want = sorted([(g, s, "none") for g in (1, 2) for s in (1, 2, 3)] + [(2, 3, "cpu+params")])
assert got == want, f"rows {got}, expected {want}"
for r in rows:
    where = f'g{r["gpus"]} s{r["stage"]} {r["offload"]}'
    assert r["status"] == "ok", f'{where}: {r["status"]} {r["error"]}'
    assert float(r["tokens_per_s_per_gpu"]) > 0, where
    assert float(r["peak_mem_gib"]) > 0, where
    assert r["weak_scaling_efficiency"], where
    # The model state the run logs is the DESIGN.md table's, up to the layout's padding.
    run, design = float(r["model_state_gib"]), float(r["design_model_state_gib"])
    assert abs(run - design) <= 0.01 * design, f"{where}: model state {run} vs DESIGN.md {design}"
    if int(r["gpus"]) == 1:
        assert float(r["weak_scaling_efficiency"]) == 1.0, where
    # The communication time (mean busy seconds of the step's collectives) and its share of the
    # step: measured on every run, and positive wherever ranks talk to each other.
    assert r["comm_s"] and r["comm_share"], f"{where}: comm_s or comm_share missing"
    comm, share = float(r["comm_s"]), float(r["comm_share"])
    assert comm >= 0 and share >= 0, f"{where}: comm_s {comm}, comm_share {share}"
    if int(r["gpus"]) > 1:
        assert comm > 0 and share > 0, f"{where}: comm_s {comm}, comm_share {share}"
for name in ("throughput.svg", "memory.svg"):
    root = ET.parse(os.path.join(out, name)).getroot()
    assert root.tag.endswith("svg"), name
    assert any(e.tag.endswith("polyline") for e in root.iter()), f"{name}: no lines"
md = open(table).read()
assert md.count("\n| ") >= 8, md  # header + separator... + 7 rows
assert "comm s (share)" in md, md
print("scaling sweep OK:", len(rows), "runs")
PY

# --match-losses: stages 0 and 3 at 1 and 2 ranks against 1 rank at stage 0 with the same global
# batch (a reference run for 2 ranks with 2 micro-batches; at 1 rank the g1-s0 run itself), in
# fp32, whose only differences are the order of fp32 sums.
dry=$(python3 "$root/scripts/scaling_sweep.py" --zerotrain "$zerotrain" --dry-run --match-losses \
        --config "$root/examples/tiny-cpu.toml" --out "$tmp/dry" --gpus 1,2 --stages 0,3 \
        --offload-stage3-at 0)
[ "$(grep -c -- ' train ' <<<"$dry")" -eq 5 ] || { echo "dry run: expected 5 commands"; echo "$dry"; exit 1; }
grep -q -- "-np 1 .*grad_accum_steps=2" <<<"$dry" || { echo "dry run: no 2-micro-batch reference"; echo "$dry"; exit 1; }
python3 "$root/scripts/scaling_sweep.py" --zerotrain "$zerotrain" --mpirun "$mpiexec" \
  --device cpu --config "$root/examples/tiny-cpu.toml" --gpus 1,2 --stages 0,3 \
  --offload-stage3-at 0 --steps 3 --match-losses --out "$tmp/match" >"$tmp/match.md"

python3 - "$root/scripts" "$tmp/match" <<'PY'
import csv, math, os, sys
sys.path.insert(0, sys.argv[1])
import scaling_sweep as sw
rows = list(csv.DictReader(open(os.path.join(sys.argv[2], "scaling.csv"))))
assert len(rows) == 4, rows
for r in rows:
    where = f'g{r["gpus"]} s{r["stage"]}'
    assert r["status"] == "ok", f'{where}: {r["status"]} {r["error"]}'
    assert r["losses_match"] == "yes", f'{where}: {r["losses_match"]} ({r["loss_rel_diff"]})'
    assert float(r["loss_rel_diff"]) <= 1e-5, where
# The comparison itself: steps matched by number, the largest relative difference, a NaN loss
# infinitely far, no common step None.
run = [{"step": 1, "loss": 10.0}, {"step": 2, "loss": 9.0}, {"step": 3, "loss": 8.8}]
ref = [{"step": 1, "loss": 10.0}, {"step": 2, "loss": 9.9}]
assert abs(sw.loss_rel_diff(run, ref) - 0.9 / 9.9) < 1e-12
assert sw.loss_rel_diff(run, run) == 0.0
assert sw.loss_rel_diff([{"step": 1, "loss": float("nan")}], ref) == math.inf
assert sw.loss_rel_diff([{"step": 7, "loss": 1.0}], ref) is None
# train.eval_at_start's step-0 line has no loss: not a step to compare.
evals = [{"step": 0, "val_loss": 6.2, "val_ppl": 493.0}]
assert abs(sw.loss_rel_diff(evals + run, evals + ref) - 0.9 / 9.9) < 1e-12
assert sw.loss_rel_diff([{"step": 1, "loss": None}], ref) == math.inf  # JSON null: non-finite
print("loss matching OK")
PY

# A mismatch makes the script exit 1: the 2-rank reference's losses raised by 1%, then the same
# sweep read back (--skip-existing runs nothing) must flag both 2-rank runs and only them.
python3 - "$tmp/match/runs/ref-g2/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
with open(sys.argv[1], "w") as f:
    for r in rows:
        r["loss"] *= 1.01
        f.write(json.dumps(r) + "\n")
PY
if python3 "$root/scripts/scaling_sweep.py" --zerotrain "$zerotrain" --mpirun "$mpiexec" \
     --device cpu --config "$root/examples/tiny-cpu.toml" --gpus 1,2 --stages 0,3 \
     --offload-stage3-at 0 --steps 3 --match-losses --skip-existing --out "$tmp/match" \
     >"$tmp/mismatch.md" 2>"$tmp/mismatch.err"; then
  echo "a 1% loss difference was accepted"; cat "$tmp/mismatch.md"; exit 1
fi
python3 - "$tmp/match/scaling.csv" <<'PY'
import csv, sys
got = {(r["gpus"], r["stage"]): r["losses_match"] for r in csv.DictReader(open(sys.argv[1]))}
assert got == {("1", "0"): "yes", ("1", "3"): "yes", ("2", "0"): "no", ("2", "3"): "no"}, got
print("loss mismatch detected OK")
PY

