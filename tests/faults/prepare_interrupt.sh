#!/usr/bin/env bash
# `zerotrain prepare --overwrite` stopped by SIGTERM midway: it must exit 128 + 15, say it was
# interrupted, remove its temporary files and leave the dataset it was replacing as it was.
#
# usage: prepare_interrupt.sh ZEROTRAIN TOKENIZER_DIR
set -euo pipefail

zerotrain=$1
tokenizer=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "prepare_interrupt: FAILED: $*" >&2
  exit 1
}
printf 'An earlier dataset.\n' >"$work/small.txt"
"$zerotrain" prepare --quiet --tokenizer "$tokenizer" --out "$work/ds" --val-fraction 0 "$work/small.txt" >/dev/null
cp -a "$work/ds" "$work/before"
# About 60 MB: several seconds of tokenizing on 2 cores, cut short below.
head -c 60000000 < <(yes 'The quick brown fox jumps over the lazy dog, and it is not the first time.') >"$work/big.txt"
"$zerotrain" prepare --quiet --tokenizer "$tokenizer" --out "$work/ds" --overwrite --threads 2 \
  --shard-tokens 100k "$work/big.txt" >"$work/prepare.log" 2>&1 &
pid=$!
for _ in $(seq 300); do  # until the first new shard is on disk (up to 30 s)
  compgen -G "$work/ds/*.tmp" >/dev/null && break
  sleep 0.1
done
compgen -G "$work/ds/*.tmp" >/dev/null || fail "no temporary shard appeared: $(cat "$work/prepare.log")"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[[ $status == 143 ]] || fail "exit status $status, expected 143 (128 + SIGTERM): $(cat "$work/prepare.log")"
grep -q "interrupted.*as it was.*(SIGTERM)" "$work/prepare.log" || fail "no interruption message: $(cat "$work/prepare.log")"
! compgen -G "$work/ds/*.tmp" >/dev/null || fail "temporary files left: $(ls "$work/ds")"
diff -r "$work/before" "$work/ds" >/dev/null || fail "the earlier dataset changed: $(ls "$work/ds")"
echo "prepare_interrupt: passed"
