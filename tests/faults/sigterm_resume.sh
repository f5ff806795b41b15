#!/usr/bin/env bash
# End-to-end SIGTERM test (issue 8): `mpirun -np 2 zerotrain train` gets SIGTERM on both ranks a
# few steps in (as a scheduler sends before it kills a job); it must exit 0, say where its
# checkpoint is and how to resume, and leave `latest` on it. The same command relaunched with
# train.resume=auto must then continue the run's out_dir: its metrics.jsonl ends up with the
# losses, to the last printed digit, of a run that was never interrupted.
#
# The signal goes to the rank processes, not to mpirun: Open MPI 4.1's mpirun, on SIGTERM, exits
# 1 whatever the ranks do and sends them SIGTERM only odls_base_sigkill_timeout seconds later
# (default 1), then SIGKILL; a scheduler should signal the ranks (e.g. scancel --signal=TERM).
#
# usage: sigterm_resume.sh ZEROTRAIN MPIRUN
set -euo pipefail

zerotrain=$1
mpirun=$2
config=$(cd "$(dirname "$0")/../.." && pwd)/examples/tiny-cpu.toml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE

steps=120
fail() {
  echo "sigterm_resume: FAILED: $*" >&2
  exit 1
}
# Small batches: about 0.1 s a step on 2 shared cores, so the interrupted run lasts ~10 s.
train=("$mpirun" -np 2 --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 "$zerotrain" train "$config"
  --set train.steps=$steps --set train.micro_batch_size=2 --set train.seq_len=32
  --set train.log_every=1000 --set train.save_every=0)
# "step loss" of each line of a metrics.jsonl, the loss exactly as written.
losses() { sed -E 's/^\{"step": ([0-9]+), "loss": ([^,]+),.*/\1 \2/' "$1"; }

# The interrupted run, started first so the reference run does not delay the signal.
# Not through a function: $! must be mpirun itself, whose children are the ranks.
"${train[@]}" --set train.out_dir="$work/part" --set train.checkpoint_dir="$work/ck" >"$work/part.log" 2>&1 &
mpirun_pid=$!
for _ in $(seq 300); do  # up to 30 s for 5 steps
  [[ -f $work/part/metrics.jsonl && $(wc -l <"$work/part/metrics.jsonl") -ge 5 ]] && break
  sleep 0.1
done
ranks=$(pgrep -P "$mpirun_pid" || true)
[[ $(wc -w <<<"$ranks") == 2 ]] || fail "expected 2 rank processes under mpirun ($mpirun_pid), found: $ranks"
kill -TERM $ranks
rc=0
wait "$mpirun_pid" || rc=$?
[[ $rc == 0 ]] || { cat "$work/part.log" >&2; fail "the interrupted run exited $rc, not 0"; }

line=$(grep -a -o "interrupted by SIGTERM at step [0-9]* of $steps: .*" "$work/part.log") ||
  { cat "$work/part.log" >&2; fail "no 'interrupted by SIGTERM' message"; }
k=$(sed -E 's/interrupted by SIGTERM at step ([0-9]+) .*/\1/' <<<"$line")
name=$(printf 'step-%08d' "$k")
expected="interrupted by SIGTERM at step $k of $steps: checkpoint saved to $work/ck/$name; resume with --set train.checkpoint_dir=$work/ck --set train.resume=auto (it continues $work/part)"
[[ $line == "$expected" ]] || fail "message: '$line', expected '$expected'"
[[ $(cat "$work/ck/latest") == "$name" ]] || fail "latest names '$(cat "$work/ck/latest")', not $name"
(( k >= 5 && k < steps )) || fail "stopped at step $k"
echo "sigterm_resume: stopped at step $k with exit code 0; resuming"

"${train[@]}" --set train.out_dir="$work/part" --set train.checkpoint_dir="$work/ck" --set train.resume=auto \
  >"$work/resumed.log" 2>&1 || { cat "$work/resumed.log" >&2; fail "the resumed run failed"; }
grep -q "metrics: continuing $work/part/metrics.jsonl after step $k" "$work/resumed.log" ||
  { cat "$work/resumed.log" >&2; fail "the resumed run did not continue $work/part/metrics.jsonl"; }
"${train[@]}" --set train.out_dir="$work/full" --set train.checkpoint_dir="$work/full-ck" >"$work/full.log" 2>&1 ||
  { cat "$work/full.log" >&2; fail "the uninterrupted run failed"; }

diff <(losses "$work/part/metrics.jsonl") <(losses "$work/full/metrics.jsonl") ||
  fail "steps 1..$steps of the interrupted and continued run differ from the uninterrupted run's"
echo "sigterm_resume: steps 1..$k and the continued $((k + 1))..$steps match the uninterrupted run exactly"
