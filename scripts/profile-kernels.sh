#!/bin/bash
# Per-kernel GPU time of a few training steps under Nsight Compute (one metric, one replay pass):
#   scripts/profile-kernels.sh OUT_CSV STEPS zerotrain train CONFIG [--set ...]
# Clocks are left free (--clock-control none), so the sums compare with the wall time of the
# same run without the profiler; their difference is time the GPU sat idle.
# Captures every kernel of the run (keep the run short: few layers, few steps), then prints the
# table of scripts/kernel_table.py divided by STEPS. The first step also holds warm-up kernels;
# run 2-3 steps and read the table as an upper bound per step.
set -euo pipefail
out=$1; steps=$2; shift 2
ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw --print-units base "$@" > "$out" 2> "$out.log"
python3 "$(dirname "$0")/kernel_table.py" "$out" --steps "$steps"
