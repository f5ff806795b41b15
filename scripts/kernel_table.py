#!/usr/bin/env python3
"""Per-kernel GPU time from an Nsight Compute CSV (scripts/profile-kernels.sh writes one).

Groups kernels into families (GEMM, attention, LayerNorm, ...) and prints total milliseconds,
share, count and mean per launch, so a step's GPU time can be read at a glance and set against
its wall time (the difference is time the GPU sat idle).

usage: kernel_table.py NCU_CSV [--steps S]   (S: how many training steps the capture covers)
"""
import csv
import re
import sys
from collections import defaultdict

FAMILIES = [
    ("gemm (cuBLASLt)", r"gemm|sm90_xmma|cutlass|nvjet|xmma"),
    ("attention", r"attention"),
    ("layernorm", r"layernorm"),
    ("gelu, residual add", r"gelu|map_kernel"),
    ("bias gradient", r"bias_grad"),
    ("rotary", r"rotary"),
    ("cross-entropy", r"cross_entropy"),
    ("embedding", r"embedding|radix|Radix|cub::|DeviceSegmented|DeviceScan"),
    ("adamw", r"adamw"),
    ("sum of squares", r"sum_of_squares|squares"),
    ("accumulate/convert", r"accumulate|convert"),
    ("nccl", r"nccl"),
    ("memset/copy", r"memset|memcpy|Memset|fill"),
]


def family(name):
    for fam, pattern in FAMILIES:
        if re.search(pattern, name):
            return fam
    return "other"


def main():
    args = sys.argv[1:]
    steps = 1
    if "--steps" in args:
        i = args.index("--steps")
        steps = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    rows = []
    with open(args[0], newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # skip ncu's own log lines
    reader = csv.DictReader(lines)
    for r in reader:
        value = r.get("gpu__time_duration.sum", "")
        try:
            ns = float(value.replace(",", ""))
        except ValueError:
            continue  # the units row
        rows.append((r["Kernel Name"], ns))
    by_family = defaultdict(lambda: [0.0, 0])
    by_kernel = defaultdict(lambda: [0.0, 0])
    for name, ns in rows:
        by_family[family(name)][0] += ns
        by_family[family(name)][1] += 1
        short = re.sub(r"\(.*", "", name)[:70]
        by_kernel[short][0] += ns
        by_kernel[short][1] += 1
    total = sum(ns for _, ns in rows)
    print(f"{len(rows)} kernels, {total / 1e6 / steps:.2f} ms GPU time per step ({steps} steps captured)")
    print(f"{'family':24s} {'ms/step':>9s} {'share':>7s} {'launches':>9s} {'us/launch':>10s}")
    for fam, (ns, n) in sorted(by_family.items(), key=lambda kv: -kv[1][0]):
        print(f"{fam:24s} {ns / 1e6 / steps:9.2f} {100 * ns / total:6.1f}% {n // steps:9d} {ns / n / 1e3:10.1f}")
    print("\ntop kernels:")
    for name, (ns, n) in sorted(by_kernel.items(), key=lambda kv: -kv[1][0])[:25]:
        print(f"  {ns / 1e6 / steps:8.2f} ms/step {n // steps:6d}x  {name}")


if __name__ == "__main__":
    main()
