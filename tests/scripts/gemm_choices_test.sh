#!/usr/bin/env bash
# train.gemm_choices end to end on a GPU (launch/run_gemm_choices.h): a run without the file
# tunes every GEMM problem and writes it; a second run reads it, tunes nothing, and computes the
# same losses to the last written digit (tuning must not disturb the step that tunes, the
# accumulating weight-gradient GEMMs included); a partial file is completed without losing the
# lines of problems the run does not meet; a file from another GPU kind is warned about and
# left as it was; ZT_GEMM_CHOICES beside the key, or a folder as the path, is a config error
# (exit 2) that names the key; `bench --tune-gemms` into the file it reads keeps its lines. Exits
# 77 (skipped) without a GPU.
#
# usage: gemm_choices_test.sh ZEROTRAIN
set -euo pipefail

zerotrain=$1
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gemm_choices_test: no GPU, skipped"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "gemm_choices_test: FAILED: $*" >&2
  exit 1
}
train() {  # train NAME [--set ...]: the tiny model on the GPU, 3 steps; log in $work/NAME.log
  local name=$1
  shift
  "$zerotrain" train --set train.device=cuda --set train.precision=bf16 --set train.steps=3 \
    --set train.log_every=1 --set train.out_dir="$work/$name" "$@" >"$work/$name.log" 2>&1
}
losses() { sed -E 's/^\{"step": ([0-9]+), "loss": ([^,]+),.*/\1 \2/' "$1/metrics.jsonl"; }
choices=$work/sub/gemms.txt  # its folder does not exist yet: the run creates it

# 1. Tuning: the file appears with a choice per GEMM problem of the step.
train tune --set train.gemm_choices="$choices" || fail "the tuning run failed: $(tail -5 "$work/tune.log")"
[[ -f $choices ]] || fail "the tuning run wrote no $choices"
problems=$(grep -c '^choice ' "$choices")
(( problems >= 6 )) || fail "only $problems problems in $choices"
grep -q "problems tuned, $problems written to $choices" "$work/tune.log" || fail "no line about the written file in tune.log"

# 2. Reading: nothing tuned, the file unchanged, the same losses.
cp "$choices" "$work/before.txt"
train read --set train.gemm_choices="$choices" || fail "the run reading the file failed"
grep -q "GEMM choices from $choices: $problems problems" "$work/read.log" || fail "read.log does not say it used the file"
! grep -q "problems tuned" "$work/read.log" || fail "the run with a complete file tuned again"
cmp -s "$choices" "$work/before.txt" || fail "the run with a complete file rewrote it"
[[ "$(losses "$work/tune")" == "$(losses "$work/read")" ]] ||
  fail "losses differ: tuning run $(losses "$work/tune" | tr '\n' ' ') against $(losses "$work/read" | tr '\n' ' ')"

# 3. A file that lacks one problem and lists one this run never meets: the run tunes the missing
#    one and writes it, and the other line stays.
unmet="choice 3 bf16>bf16 NN m=7 n=8 k=9 lda=9 ldb=8 ldc=8 epilogue=none aux_ld=0 align=16,16,16,16,16 workspace=1"
{ grep -v '^choice' "$work/before.txt"; grep '^choice' "$work/before.txt" | tail -n +2; echo "$unmet"; } >"$choices"
train partial --set train.gemm_choices="$choices" || fail "the run with a partial file failed"
grep -q "1 problems tuned, $((problems + 1)) written to $choices" "$work/partial.log" ||
  fail "the partial file was not completed: $(grep 'GEMM choices' "$work/partial.log")"
grep -qxF "$unmet" "$choices" || fail "the rewrite dropped a problem this run did not meet"

# 4. Another GPU kind's file: a warning, the heuristic's picks, the file left as it was.
sed 's/^device .*/device Some Other GPU/' "$work/before.txt" >"$work/other.txt"
cp "$work/other.txt" "$work/other-before.txt"
train other --set train.gemm_choices="$work/other.txt" || fail "the run with another GPU's file failed"
grep -q "not used, not tuned and not replaced" "$work/other.log" || fail "no warning about another GPU's file"
cmp -s "$work/other.txt" "$work/other-before.txt" || fail "another GPU's file was changed"

# 5. Config errors: exit status 2, naming what to change.
status=0
ZT_GEMM_CHOICES="$choices" train both --set train.gemm_choices="$choices" || status=$?
[[ $status == 2 ]] || fail "ZT_GEMM_CHOICES with train.gemm_choices: exit $status, expected 2"
grep -q "unset ZT_GEMM_CHOICES" "$work/both.log" || fail "the error does not say what to unset"
status=0
train folder --set train.gemm_choices="$work" || status=$?
[[ $status == 2 ]] || fail "a folder as train.gemm_choices: exit $status, expected 2"
grep -q "is a folder" "$work/folder.log" || fail "the error does not say the path is a folder"
# 6. `bench --tune-gemms FILE` with ZT_GEMM_CHOICES=FILE (the same file) adds its problems to
#    the file and keeps the lines of problems the bench does not run.
bench_file=$work/bench-gemms.txt
cp "$choices" "$bench_file"
ZT_GEMM_CHOICES="$bench_file" "$zerotrain" bench --model gptj-tiny --micro-batch 1 --seq-len 64 \
  --iters 2 --tune-gemms "$bench_file" >"$work/bench.log" 2>&1 || fail "the tuning bench failed: $(tail -5 "$work/bench.log")"
grep -qxF "$unmet" "$bench_file" || fail "bench --tune-gemms dropped a line of the file it read"
while read -r line; do
  grep -qxF "$line" "$bench_file" || fail "bench --tune-gemms changed or dropped: $line"
done < <(grep '^choice' "$choices")
(( $(grep -c '^choice ' "$bench_file") > problems + 1 )) || fail "bench --tune-gemms added no problems to $bench_file"
echo "gemm_choices_test: passed ($problems GEMM problems; losses $(losses "$work/read" | tr '\n' ' '))"
