#!/usr/bin/env bash
# Fault injection (issue 8): `kill -9` one of 4 ranks of a CPU training run. mpirun and every
# other rank must end within 60 s with a non-zero status, the output must name the killed rank,
# and no zerotrain process may be left behind. Prints how long the job took to end.
# Usage: kill_rank.sh ZEROTRAIN MPIRUN   (CTest test faults_kill_rank, label mpi)
set -uo pipefail
zerotrain=$1
mpirun=$2
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
kVictimRank=2
kExitLimitS=60

work=$(mktemp -d)
rank_pids=()
mpirun_pid=
fail() {
  echo "FAIL: $*"
  echo "---- job output ----"
  cat "$work/out.log" 2>/dev/null
  exit 1
}
# Whatever happens, nothing this test started outlives it (only our own pids, never by name).
cleanup() {
  for pid in "${rank_pids[@]}" $mpirun_pid; do kill -9 "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

# 100000 steps: the run is still training whenever the kill comes. One OpenMP thread per rank and
# passive waits keep 4 ranks usable on a 2-core machine.
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE \
  "$mpirun" -np 4 --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 \
  "$zerotrain" train "$source_dir/examples/tiny-cpu.toml" \
  --set train.steps=100000 --set train.log_every=1 --set train.out_dir="$work/run" \
  --set train.checkpoint_dir="$work/checkpoints" --set train.save_every=0 --set train.threads=1 \
  > "$work/out.log" 2>&1 &
mpirun_pid=$!

# Training has started once metrics.jsonl has a few steps (rank 0 writes it after each logged step).
for _ in $(seq 300); do
  [ "$(cat "$work/run/metrics.jsonl" 2>/dev/null | wc -l)" -ge 3 ] && break
  kill -0 "$mpirun_pid" 2>/dev/null || fail "the job ended before training started"
  sleep 0.1
done
[ "$(cat "$work/run/metrics.jsonl" 2>/dev/null | wc -l)" -ge 3 ] || fail "no training steps logged within 30 s"

# The ranks are mpirun's children; Open MPI gives each its rank in the environment.
victim=
for pid in $(pgrep -P "$mpirun_pid"); do
  rank=$(tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
  [ -n "$rank" ] || continue
  rank_pids+=("$pid")
  [ "$rank" = "$kVictimRank" ] && victim=$pid
done
[ "${#rank_pids[@]}" -eq 4 ] || fail "expected 4 rank processes under mpirun, found ${#rank_pids[@]}"
[ -n "$victim" ] || fail "no process with OMPI_COMM_WORLD_RANK=$kVictimRank"

echo "killing rank $kVictimRank (pid $victim) after $(wc -l < "$work/run/metrics.jsonl") logged steps"
start_ms=$(($(date +%s%N) / 1000000))
kill -9 "$victim"
for _ in $(seq $((kExitLimitS * 10))); do
  kill -0 "$mpirun_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$mpirun_pid" 2>/dev/null && fail "mpirun still running ${kExitLimitS} s after rank $kVictimRank was killed"
wait "$mpirun_pid"
status=$?
mpirun_pid=
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
echo "job ended $((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000))) s after the kill, exit status $status"

[ "$status" -ne 0 ] || fail "exit status 0 after a rank was killed"
grep -Eq "rank $kVictimRank .*(signal 9|Killed)" "$work/out.log" ||
  fail "the output does not name rank $kVictimRank and signal 9"
# A rank that has exited but whose parent (mpirun, gone) left it to an init that does not reap
# is a zombie: ended, so it counts as gone. Ranks mpirun has just signalled get 5 s to leave.
running_ranks() {
  for pid in "${rank_pids[@]}"; do
    state=$(ps -o stat= -p "$pid" 2>/dev/null)
    [ -n "$state" ] && [ "${state:0:1}" != Z ] && echo "$pid"
  done
}
for _ in $(seq 50); do
  [ -z "$(running_ranks)" ] && break
  sleep 0.1
done
[ -z "$(running_ranks)" ] || fail "rank processes still running after mpirun ended: $(running_ranks)"
echo "---- mpirun's report ----"
grep -E "rank $kVictimRank .*(signal 9|Killed)" "$work/out.log"
echo "PASS"
