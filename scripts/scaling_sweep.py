#!/usr/bin/env python3
"""Weak-scaling sweep for zerotrain: GPUs x ZeRO stages, one command, CSV + SVG plots.

For every GPU count G in --gpus and every ZeRO stage S in --stages the script runs

    mpirun -np G --bind-to none zerotrain train CONFIG --set zero.stage=S --set train.steps=N ...

with a fixed micro-batch per GPU (the config's), so the global batch grows with G (weak
scaling). With --offload-stage3-at G it also runs stage 3 with zero.offload_optimizer=cpu and
zero.offload_params=cpu at that GPU count (when G is in --gpus). Each run writes its
metrics.jsonl under OUT/runs/g{G}-s{S}[-offload]/ and its log under OUT/logs/. A run that fails
(out of memory, an error, a timeout) is recorded with its status and last error line and the
sweep goes on.

Outputs, in --out (default docs/scaling):
  scaling.csv     one row per run: throughput per GPU, MFU, peak memory, weak-scaling efficiency,
                  phase times, communication time and its share of the step, and the per-rank
                  memory `zerotrain estimate` predicts for it
  throughput.svg  tokens/s per GPU against GPUs (log2 axis), one line per stage
  memory.svg      peak memory per GPU against GPUs per stage, the estimate as dashed lines
and the table as Markdown on stdout (progress goes to stderr).

With --match-losses it also checks that the stages compute the same training: for every G it
runs a reference on 1 rank at stage 0 that processes the same global batch (grad_accum_steps
multiplied by G) and compares each run's per-step losses with it. The loss_rel_diff column is
the largest |loss - reference loss| / |reference loss| over the steps; above --loss-tol the run
counts as a mismatch and the script exits with status 1.

Usage:
  # GPT-J-6B on 1, 2, 4 and 8 H200s, stages 1-3, plus stage 3 with both offloads on 8
  scripts/scaling_sweep.py --zerotrain build/launch/zerotrain
  # the pipeline on the CPU backend with the tiny model (minutes on a laptop)
  scripts/scaling_sweep.py --zerotrain build/launch/zerotrain --device cpu \
      --config examples/tiny-cpu.toml --gpus 1,2,4 --steps 5 --out /tmp/scaling
  # see the commands without running them
  scripts/scaling_sweep.py --zerotrain build/launch/zerotrain --dry-run
  # 2 GPUs, stages 0-3, 20 steps, each against 1 GPU at stage 0 with the same global batch
  scripts/scaling_sweep.py --zerotrain build/launch/zerotrain --gpus 2 --stages 0,1,2,3 \
      --offload-stage3-at 0 --steps 20 --match-losses

Python 3 standard library only: CI machines have no numpy or matplotlib.
"""

import argparse
import csv
import datetime
import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
import tomllib
import xml.sax.saxutils

GIB = float(1 << 30)
# The first steps pay for allocator warm-up, NCCL communicator set-up and cuBLASLt heuristics;
# they are not steady state, so the means leave them out.
WARMUP_STEPS = 2

CSV_COLUMNS = [
    "gpus", "stage", "offload", "status", "tokens_per_s_per_gpu", "mfu", "peak_mem_gib",
    "weak_scaling_efficiency", "fwd_bwd_s", "optimizer_s", "comm_s", "comm_share", "est_model_state_gib",
    "design_model_state_gib", "model_state_gib", "est_total_gib", "peak_host_mem_gib", "steps_averaged",
    "loss_rel_diff", "losses_match", "error",
]
# --loss-tol defaults. fp32 on the CPU: ranks and accumulation change only the order of fp32
# sums (1e-5 leaves room for 20 steps of that). bf16 on GPUs: the 16-bit parameter copies are
# rounded from masters that differ in their last fp32 bits, so activations can differ by a bf16
# ulp (2^-8 = 0.4%); 1% over 20 steps allows that and still catches a wrong stage (a lost
# gradient shard or a missing all-gather moves the loss by tenths within a few steps).
LOSS_TOL = {"cpu": 1e-5, "cuda": 1e-2}


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def parse_int_list(text, minimum):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers: {text!r}")
    if not values or any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= {minimum}: {text!r}")
    return sorted(set(values))


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Run a zerotrain GPUs x ZeRO-stage sweep and write scaling.csv, "
                    "throughput.svg and memory.svg.")
    p.add_argument("--zerotrain", required=True, help="path of the zerotrain binary")
    p.add_argument("--config", default="examples/gptj-6b-2gpu.toml", help="training config")
    p.add_argument("--gpus", type=lambda t: parse_int_list(t, 1), default=[1, 2, 4, 8],
                   help="GPU (rank) counts, comma-separated (default 1,2,4,8)")
    p.add_argument("--stages", type=lambda t: parse_int_list(t, 0), default=[1, 2, 3],
                   help="ZeRO stages, comma-separated (default 1,2,3; 0 = plain data parallel)")
    p.add_argument("--offload-stage3-at", type=int, default=8, metavar="G",
                   help="also run stage 3 with optimizer and parameter offload at G GPUs "
                        "(when G is in --gpus; 0 = never; default 8)")
    p.add_argument("--steps", type=int, default=10,
                   help=f"training steps per run (default 10; the first {WARMUP_STEPS} are "
                        "warm-up and left out of the means)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed to every run (repeatable)")
    p.add_argument("--out", default="docs/scaling", help="output folder (default docs/scaling)")
    p.add_argument("--mpirun", default="mpirun", help="mpirun command (default mpirun)")
    p.add_argument("--timeout", type=float, default=3600,
                   help="seconds before a run counts as hung and is killed (default 3600)")
    p.add_argument("--skip-existing", action="store_true",
                   help="reuse a run whose metrics.jsonl in --out already has --steps steps "
                        "instead of running it again (to split a sweep over several calls)")
    p.add_argument("--match-losses", action="store_true",
                   help="compare every run's losses with 1 rank at stage 0 on the same global "
                        "batch; exit 1 on a mismatch")
    p.add_argument("--loss-tol", type=float, default=None,
                   help="largest relative loss difference --match-losses accepts (default "
                        f"{LOSS_TOL['cpu']:g} on cpu, {LOSS_TOL['cuda']:g} on cuda)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = p.parse_args(argv)
    if a.loss_tol is None:
        a.loss_tol = LOSS_TOL[a.device]
    elif not a.loss_tol >= 0:
        p.error("--loss-tol must be >= 0")
    if a.steps < 1:
        p.error("--steps must be >= 1")
    for s in a.stages:
        if s > 3:
            p.error(f"--stages: {s} is not a ZeRO stage (0-3)")
    for kv in a.sets:
        if "=" not in kv:
            p.error(f"--set {kv}: expected KEY=VALUE")
    return a


# ---------------------------------------------------------------------------------------------
# Running


def run_name(g, s, offload):
    return f"g{g}-s{s}" + ("-offload" if offload else "")


def plan_runs(a):
    runs = [(g, s, False) for s in a.stages for g in a.gpus]
    if a.offload_stage3_at > 0:
        if a.offload_stage3_at in a.gpus:
            runs.append((a.offload_stage3_at, 3, True))
        else:
            log(f"note: --offload-stage3-at {a.offload_stage3_at} is not in --gpus; "
                "no offload run")
    return runs


def run_env(a):
    env = dict(os.environ)
    # CI and the GPU machines run as root; Open MPI refuses that without these two.
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    if a.device == "cpu":
        # Oversubscribed ranks must sleep, not spin, while they wait for each other.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    else:
        # NVLink SHARP (multicast) is not available on the lent machines (KINDS.md).
        env["NCCL_NVLS_ENABLE"] = "0"
    return env


def train_command(a, g, s, offload, out_dir, extra_sets=()):
    cmd = shlex.split(a.mpirun) + ["-np", str(g), "--bind-to", "none"]
    if a.device == "cpu":
        # More ranks than cores on small machines; yield lets the waiting ranks give way.
        cmd += ["--oversubscribe", "--mca", "mpi_yield_when_idle", "1"]
    else:
        cmd += ["-x", "NCCL_NVLS_ENABLE=0"]
    cmd += [a.zerotrain, "train", a.config,
            "--set", f"zero.stage={s}",
            "--set", f"train.device={a.device}",
            "--set", f"train.steps={a.steps}",
            "--set", f"train.out_dir={out_dir}",
            "--set", "train.overwrite=true",
            "--set", "train.log_every=1",
            # A sweep measures steps; a checkpoint write (and a 6B one is 70+ GB) would only
            # cost time and disk, and the tiny config's default would land inside the repository.
            "--set", "train.checkpoint_dir=",
            "--set", "train.save_every=0"]
    if offload:
        cmd += ["--set", "zero.offload_optimizer=cpu", "--set", "zero.offload_params=cpu"]
    for kv in list(a.sets) + list(extra_sets):  # later --set values win
        cmd += ["--set", kv]
    return cmd


def train_setting(a, name, default):
    """An integer train.<name> of the runs: the last --set of it, else the config's, else default."""
    for kv in reversed(a.sets):
        key, value = kv.split("=", 1)
        if key.strip() == "train." + name:
            return int(value)
    try:
        with open(a.config, "rb") as f:
            return int(tomllib.load(f).get("train", {}).get(name, default))
    except (OSError, tomllib.TOMLDecodeError) as e:
        sys.exit(f"scaling_sweep.py: cannot read {a.config}: {e}")


def reference_runs(a, runs):
    """{G: (name, extra --set values)} of the --match-losses references: 1 rank, stage 0, the
    global batch of G ranks. At G = 1 the sweep's own 1-GPU stage-0 run is the reference. With
    train.global_batch_size the global batch is the same at every G, and the 1-rank run derives
    its accumulation from it."""
    fixed_global = train_setting(a, "global_batch_size", 0) > 0
    accum = train_setting(a, "grad_accum_steps", 1)
    refs = {}
    for g in sorted({g for g, _, _ in runs}):
        if g == 1 and (1, 0, False) in runs:
            refs[g] = (run_name(1, 0, False), None)
        else:
            refs[g] = (f"ref-g{g}", ["train.grad_accum_steps=" + ("1" if fixed_global else str(g * accum))])
    return refs


def last_error_line(text):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # zerotrain reports failures as "zerotrain: error: ..." (or a CUDA/NCCL message); mpirun
    # then adds its own boilerplate ("the job has been aborted"), which says nothing, so
    # zerotrain's line wins, then any error-like line that is not mpirun's, then the last line.
    for ln in reversed(lines):
        if re.search(r"zerotrain.*error|out of memory", ln, re.IGNORECASE):
            return ln
    for ln in reversed(lines):
        if (re.search(r"\berror\b|exception|terminate called|signal", ln, re.IGNORECASE)
                and not re.search(r"mpirun|Per user-direction|^-+$", ln)):
            return ln
    return lines[-1] if lines else ""


def execute(cmd, env, log_path, timeout):
    """Runs one job; returns (return code or None on timeout, combined output)."""
    with open(log_path, "w") as f:
        f.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        f.flush()
        try:
            # start_new_session: on a timeout the whole mpirun process group is killed, ranks too.
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        except OSError as e:
            f.write(f"cannot start: {e}\n")
            return 127, f"cannot start {cmd[0]}: {e}"
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = None
    with open(log_path, errors="replace") as f:
        return rc, f.read()


# ---------------------------------------------------------------------------------------------
# Reading results


def read_metrics(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a run killed mid-write leaves a partial last line
    return rows


def loss_rel_diff(metrics, reference):
    """Largest |loss - reference loss| / |reference loss| over the steps both logged (None when
    they share no step). A non-finite loss on either side counts as infinitely far."""
    # Lines without a "loss" key are evaluations outside a step (train.eval_at_start's step 0).
    ref = {m["step"]: m.get("loss") for m in reference if "step" in m and "loss" in m}
    worst = None
    for m in metrics:
        if m.get("step") not in ref or "loss" not in m:
            continue
        x, r = m.get("loss"), ref[m["step"]]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (x, r)):
            d = math.inf
        else:
            d = abs(x - r) / abs(r) if r != 0 else abs(x - r)
        worst = d if worst is None else max(worst, d)
    return worst


def mean(values):
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(values) / len(values) if values else None


_UNITS = {"B": 1, "KiB": 1024.0, "MiB": 1024.0 ** 2, "GiB": 1024.0 ** 3, "TiB": 1024.0 ** 4}


def measured_model_state_bytes(log_text):
    """Largest per-rank 'model state ... (total X MiB)' that zerotrain logs at start-up."""
    best = None
    for m in re.finditer(r"rank \d+ model state:.*\(total ([\d.]+) (B|KiB|MiB|GiB|TiB)\)", log_text):
        v = float(m.group(1)) * _UNITS[m.group(2)]
        best = v if best is None else max(best, v)
    return best


def summarize(metrics, g):
    """Means over the steady-state steps (after warm-up) of one run's metrics.jsonl."""
    if not metrics:
        return None
    steady = [m for m in metrics if m.get("step", 0) > WARMUP_STEPS]
    if not steady:  # a run shorter than the warm-up: its last step is the best there is
        steady = metrics[-1:]
    tps = mean([m.get("tokens_per_s") for m in steady])
    comm = mean([m.get("comm_s") for m in steady])
    # Step time: the two phases (the trainer's step timer also holds the loss all-reduce, which
    # takes microseconds). comm_s overlaps them, so the share is of the step's wall time.
    step = mean([m["fwd_bwd_s"] + m["optimizer_s"] for m in steady
                 if isinstance(m.get("fwd_bwd_s"), (int, float))
                 and isinstance(m.get("optimizer_s"), (int, float))])
    peak = max((m.get("peak_mem_bytes") or 0) for m in metrics)
    host = [m.get("peak_host_mem_bytes") for m in metrics if m.get("peak_host_mem_bytes")]
    return {
        # tokens_per_s in metrics.jsonl counts the whole job's tokens.
        "tokens_per_s_per_gpu": tps / g if tps is not None else None,
        "mfu": mean([m.get("mfu") for m in steady]),
        "peak_mem_gib": peak / GIB,
        "fwd_bwd_s": mean([m.get("fwd_bwd_s") for m in steady]),
        "optimizer_s": mean([m.get("optimizer_s") for m in steady]),
        "comm_s": comm,
        "comm_share": comm / step if comm is not None and step else None,
        "peak_host_mem_gib": max(host) / GIB if host else None,
        "steps_averaged": len(steady),
    }


def parse_estimate_table(text):
    """{(stage, offload name): {column: bytes}} from `zerotrain estimate`'s text table, plus
    the parameter count under the key "psi" (from its first line)."""
    rows = {}
    m = re.match(r"\s*(\d+) parameters", text)
    if m:
        rows["psi"] = int(m.group(1))
    header = None
    for line in text.splitlines():
        cols = line.split()
        if cols[:2] == ["stage", "offload"]:
            header = cols
            continue
        if header is None or not cols or not cols[0].isdigit():
            continue
        # "11.27 GiB" is two tokens; pair them back up behind stage and offload.
        values = {}
        rest = cols[2:]
        names = ["params", "grads", "optimizer", "activations", "buffers", "total", "cpu"]
        i = 0
        for name in names:
            if i < len(rest) and rest[i] == "-":
                values[name] = None
                i += 1
            elif i + 1 < len(rest) and rest[i + 1] in _UNITS:
                values[name] = float(rest[i]) * _UNITS[rest[i + 1]]
                i += 2
        rows[(int(cols[0]), cols[1])] = values
    return rows


_estimate_cache = {}


def estimate(a, config_path, g, keep=None):
    key = (config_path, g, keep)
    if key not in _estimate_cache:
        cmd = [a.zerotrain, "estimate", "--config", config_path, "--gpus", str(g), "--offload"]
        for kv in a.sets:  # the runs' overrides (micro-batch, kept blocks, ...) size them too
            cmd += ["--set", kv]
        if keep is not None:  # what model.keep_activations = "auto" chose in the run
            cmd += ["--keep-activations", str(keep)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            _estimate_cache[key] = parse_estimate_table(p.stdout) if p.returncode == 0 else {}
            if p.returncode != 0:
                log(f"  estimate failed: {last_error_line(p.stderr + p.stdout)}")
        except (OSError, subprocess.TimeoutExpired) as e:
            log(f"  estimate failed: {e}")
            _estimate_cache[key] = {}
    return _estimate_cache[key]


def estimate_for_run(a, run_config, g, s, offload, log_text=""):
    # The resolved config.toml the run wrote carries every --set (n_layer, micro-batch, ...);
    # the base config is the fallback for a run that died before writing it. A run with
    # model.keep_activations = "auto" logged the count it chose for its GPUs.
    config_path = run_config if os.path.exists(run_config) else a.config
    chosen = re.search(r'model\.keep_activations = "auto" keeping (\d+) of', log_text)
    table = estimate(a, config_path, g, int(chosen.group(1)) if chosen else None)
    design = design_model_state_bytes(table["psi"], g, s, offload) if "psi" in table else None
    row = table.get((s, "cpu+params" if offload else "none"))
    if not row or row.get("total") is None:
        return None, None, design / GIB if design is not None else None
    state = sum(row.get(k) or 0.0 for k in ("params", "grads", "optimizer"))
    return state / GIB, row["total"] / GIB, design / GIB if design is not None else None


def design_model_state_bytes(psi, n, stage, offload):
    """Per-rank GPU model state by DESIGN.md section 4's table: 16-bit parameters and gradients,
    K = 12 bytes of fp32 master + Adam moments per parameter. The estimate's table prints GiB
    to two decimals; this exact figure is what a small model's run can be compared with."""
    k = 12
    if offload:  # stage 3, optimizer and 16-bit parameter shards in host memory: grads only
        return 2 * psi / n
    return {0: (2 + 2 + k) * psi,
            1: (2 + 2) * psi + k * psi / n,
            2: 2 * psi + (2 + k) * psi / n,
            3: (2 + 2 + k) * psi / n}[stage]


# ---------------------------------------------------------------------------------------------
# SVG line chart


def nice_step(span, target_ticks=5):
    raw = span / target_ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt_tick(v):
    if v == 0:
        return "0"
    if abs(v) >= 10000:
        return f"{v / 1000:g}k"
    return f"{v:.6g}"


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


def line_chart(path, title, xlabel, ylabel, series, log2_x=True):
    """Writes an SVG line chart. series: [{label, points [(x, y)], color, dashed}]."""
    W, H = 800, 460
    left, right, top, bottom = 80, 240, 50, 60  # the legend lives in the right margin
    pw, ph = W - left - right, H - top - bottom
    esc = xml.sax.saxutils.escape

    pts = [p for s in series for p in s["points"]]
    xs = sorted({p[0] for p in pts}) or [1]
    ymax = max([p[1] for p in pts] + [0.0])
    if log2_x:
        lo, hi = math.log2(min(xs)), math.log2(max(xs))
        xticks = [2 ** k for k in range(int(math.floor(lo)), int(math.ceil(hi)) + 1)]
    else:
        lo, hi = min(xs), max(xs)
        xticks = xs
    if hi == lo:  # one GPU count: centre it
        lo, hi = lo - 1, hi + 1
        if log2_x:
            xticks = [2 ** lo, 2 ** ((lo + hi) / 2), 2 ** hi]
    ystep = nice_step(ymax if ymax > 0 else 1.0)
    ytop = ystep * math.ceil((ymax if ymax > 0 else 1.0) / ystep * 1.05)
    yticks = [i * ystep for i in range(int(round(ytop / ystep)) + 1)]

    def X(x):
        v = math.log2(x) if log2_x else x
        return left + (v - lo) / (hi - lo) * pw

    def Y(y):
        return top + ph - y / ytop * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{left + pw / 2}" y="24" text-anchor="middle" font-size="15" '
           f'font-weight="bold">{esc(title)}</text>']
    # Grid and ticks.
    for y in yticks:
        out.append(f'<line x1="{left}" y1="{Y(y):.1f}" x2="{left + pw}" y2="{Y(y):.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{Y(y) + 4:.1f}" text-anchor="end">'
                   f'{esc(fmt_tick(y))}</text>')
    for x in xticks:
        out.append(f'<line x1="{X(x):.1f}" y1="{top}" x2="{X(x):.1f}" y2="{top + ph}" '
                   f'stroke="#eee"/>')
        out.append(f'<line x1="{X(x):.1f}" y1="{top + ph}" x2="{X(x):.1f}" y2="{top + ph + 5}" '
                   f'stroke="black"/>')
        out.append(f'<text x="{X(x):.1f}" y="{top + ph + 18}" text-anchor="middle">'
                   f'{esc(fmt_tick(x))}</text>')
    # Axes and labels.
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<text x="{left + pw / 2}" y="{H - 18}" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text x="18" y="{top + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {top + ph / 2})">{esc(ylabel)}</text>')
    # Lines, markers and the legend.
    for i, s in enumerate(series):
        color = s.get("color", COLORS[i % len(COLORS)])
        dash = ' stroke-dasharray="6 4"' if s.get("dashed") else ""
        ps = sorted(s["points"])
        if len(ps) > 1:
            d = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in ps)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for x, y in ps:
            if s.get("dashed"):
                out.append(f'<rect x="{X(x) - 3:.1f}" y="{Y(y) - 3:.1f}" width="6" height="6" '
                           f'fill="white" stroke="{color}"/>')
            else:
                out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3.5" fill="{color}"/>')
        ly = top + 10 + 20 * i
        lx = left + pw + 16
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 28}" y2="{ly}" stroke="{color}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + 34}" y="{ly + 4}">{esc(s["label"])}</text>')
    if not series:
        out.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle">'
                   'no successful runs</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def series_key(r):
    return (r["stage"], r["offload"])


def series_label(stage, offload):
    return f"ZeRO-{stage}" + (" + offload" if offload == "cpu+params" else "")


def write_plots(out_dir, rows):
    ok = [r for r in rows if r["status"] == "ok"]
    keys = sorted({series_key(r) for r in ok}, key=lambda k: (k[0], k[1] != "none"))
    color = {k: COLORS[i % len(COLORS)] for i, k in enumerate(keys)}
    tput, mem = [], []
    for k in keys:
        rs = [r for r in ok if series_key(r) == k]
        tp = [(r["gpus"], r["tokens_per_s_per_gpu"]) for r in rs
              if r["tokens_per_s_per_gpu"] is not None]
        if tp:
            tput.append({"label": series_label(*k), "points": tp, "color": color[k]})
        pm = [(r["gpus"], r["peak_mem_gib"]) for r in rs if r["peak_mem_gib"] is not None]
        if pm:
            mem.append({"label": series_label(*k) + " peak", "points": pm, "color": color[k]})
        est = [(r["gpus"], r["est_total_gib"]) for r in rs if r["est_total_gib"] is not None]
        if est:
            mem.append({"label": series_label(*k) + " estimate", "points": est,
                        "color": color[k], "dashed": True})
    line_chart(os.path.join(out_dir, "throughput.svg"), "Throughput per GPU (weak scaling)",
               "GPUs (ranks)", "tokens/s per GPU", tput)
    line_chart(os.path.join(out_dir, "memory.svg"), "Peak memory per GPU",
               "GPUs (ranks)", "GiB per GPU", mem)


# ---------------------------------------------------------------------------------------------
# Tables


def fmt(v, digits=4):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.0f}"
    return str(v)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow([fmt(r.get(c), 6) for c in CSV_COLUMNS])


def gib_cell(v):
    if v is None:
        return "-"
    return f"{v:.2f} GiB" if v >= 1 else f"{v * 1024:.2f} MiB"


def est_cell(v):
    # The estimate's table prints GiB to two decimals: keep its resolution, not a false MiB one.
    return "-" if v is None else f"{v:.2f} GiB"


def comm_cell(seconds, share):
    if seconds is None:
        return "-"
    return f"{seconds:.3f}" + (f" ({100 * share:.0f}%)" if share is not None else "")


def loss_cell(r):
    if r["losses_match"] is None:
        return "-"
    d = r["loss_rel_diff"]
    return (f"{d:.1e} " if d is not None else "") + r["losses_match"]


def markdown(rows, loss_tol=None):
    head = ["GPUs", "stage", "offload", "status", "tokens/s per GPU", "MFU", "peak mem/GPU",
            "weak-scaling eff.", "fwd+bwd s", "optimizer s", "comm s (share)",
            "model state/rank: run / DESIGN.md / estimate", "estimate total/GPU"]
    if loss_tol is not None:
        head.append(f"loss vs 1 GPU stage 0 (tol {loss_tol:g})")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f'{r["status"]}: {r["error"]}'
        tps = r["tokens_per_s_per_gpu"]
        cells = [
            str(r["gpus"]), str(r["stage"]), r["offload"], status.replace("|", "/"),
            f"{tps:,.0f}" if tps is not None else "-",
            f'{100 * r["mfu"]:.1f}%' if r["mfu"] else "-",
            gib_cell(r["peak_mem_gib"]),
            f'{r["weak_scaling_efficiency"]:.2f}' if r["weak_scaling_efficiency"] else "-",
            f'{r["fwd_bwd_s"]:.3f}' if r["fwd_bwd_s"] is not None else "-",
            f'{r["optimizer_s"]:.3f}' if r["optimizer_s"] is not None else "-",
            comm_cell(r["comm_s"], r["comm_share"]),
            f'{gib_cell(r["model_state_gib"])} / {gib_cell(r["design_model_state_gib"])} / '
            + est_cell(r["est_model_state_gib"]),
            est_cell(r["est_total_gib"]),
        ]
        if loss_tol is not None:
            cells.append(loss_cell(r))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------


def main(argv):
    a = parse_args(argv)
    runs = plan_runs(a)
    env = run_env(a)
    runs_dir = os.path.join(a.out, "runs")
    logs_dir = os.path.join(a.out, "logs")

    if a.dry_run:
        for g, (name, extra) in (reference_runs(a, runs) if a.match_losses else {}).items():
            if extra is not None:
                cmd = train_command(a, 1, 0, False, os.path.join(runs_dir, name), extra)
                print(" ".join(shlex.quote(c) for c in cmd))
        for g, s, off in runs:
            out_dir = os.path.join(runs_dir, run_name(g, s, off))
            print(" ".join(shlex.quote(c) for c in train_command(a, g, s, off, out_dir)))
        return 0

    os.makedirs(runs_dir, exist_ok=True)
    os.makedirs(logs_dir, exist_ok=True)

    def run(label, name, cmd):
        """Runs (or, with --skip-existing, reads back) one job: (status, error, text, metrics)."""
        out_dir = os.path.join(runs_dir, name)
        metrics_path = os.path.join(out_dir, "metrics.jsonl")
        log_path = os.path.join(logs_dir, name + ".log")
        if (a.skip_existing and len(read_metrics(metrics_path)) >= a.steps
                and os.path.exists(log_path)):
            # A machine's time limit may end a call before the sweep does: the finished runs
            # of the earlier calls are read back, not repeated.
            log(f"[{label}] {name}: reusing {metrics_path}")
            rc = 0
            with open(log_path, errors="replace") as f:
                text = f.read()
        else:
            log(f"[{label}] {name}: " + " ".join(shlex.quote(c) for c in cmd))
            # A stale metrics.jsonl from an earlier sweep must not pass for this run's results.
            if os.path.exists(metrics_path):
                os.remove(metrics_path)
            rc, text = execute(cmd, env, log_path, a.timeout)
        metrics = read_metrics(metrics_path)
        if rc is None:
            status, error = "timeout", f"killed after {a.timeout:g} s"
        elif rc != 0:
            oom = re.search(r"out of memory|cudaErrorMemoryAllocation|bad_alloc", text, re.I)
            status, error = ("oom" if oom else f"failed (rc {rc})"), last_error_line(text)
        elif len(metrics) < a.steps:
            status, error = "incomplete", f"{len(metrics)} of {a.steps} steps in metrics.jsonl"
        else:
            status, error = "ok", ""
        return status, error, text, metrics

    # --match-losses: the reference runs that are not part of the sweep come first.
    refs = reference_runs(a, runs) if a.match_losses else {}
    ref_metrics = {}  # G -> metrics of its reference, once it ran successfully
    for g, (name, extra) in refs.items():
        if extra is None:
            continue  # the sweep's own g1-s0 run
        status, error, _, metrics = run(
            f"reference for {g} GPUs", name,
            train_command(a, 1, 0, False, os.path.join(runs_dir, name), extra))
        log(f"  {status}" + (f": {error}" if error else ""))
        if status == "ok":
            ref_metrics[g] = metrics

    rows = []
    run_metrics = []  # metrics.jsonl of each row's run
    for g, s, off in runs:
        name = run_name(g, s, off)
        out_dir = os.path.join(runs_dir, name)
        status, error, text, metrics = run(
            f"{len(rows) + 1}/{len(runs)}", name, train_command(a, g, s, off, out_dir))
        summary = summarize(metrics, g) or {}
        if g in refs and refs[g][0] == name and status == "ok":  # the sweep's g1-s0
            ref_metrics[g] = metrics
        est_state, est_total, design_state = estimate_for_run(a, os.path.join(out_dir, "config.toml"), g, s, off, text)
        state = measured_model_state_bytes(text)
        row = {
            "gpus": g, "stage": s, "offload": "cpu+params" if off else "none",
            "status": status, "error": error,
            "tokens_per_s_per_gpu": None, "mfu": None, "peak_mem_gib": None,
            "fwd_bwd_s": None, "optimizer_s": None, "comm_s": None, "comm_share": None,
            "peak_host_mem_gib": None, "loss_rel_diff": None, "losses_match": None,
            "steps_averaged": None, "weak_scaling_efficiency": None,
            "est_model_state_gib": est_state, "est_total_gib": est_total,
            "design_model_state_gib": design_state,
            "model_state_gib": state / GIB if state is not None else None,
        }
        if status == "ok":
            row.update(summary)
        rows.append(row)
        run_metrics.append(metrics)
        tps = row["tokens_per_s_per_gpu"]
        log(f"  {status}" + (f": {error}" if error else "") +
            (f"; {tps:,.0f} tokens/s per GPU, peak {row['peak_mem_gib']:.3f} GiB" if tps else ""))

    # Losses against the reference of the same global batch.
    mismatches = 0
    if a.match_losses:
        for r, metrics in zip(rows, run_metrics):
            if r["status"] != "ok":
                continue
            if r["gpus"] not in ref_metrics:
                r["losses_match"] = "no reference"
                mismatches += 1
                continue
            d = loss_rel_diff(metrics, ref_metrics[r["gpus"]])
            r["loss_rel_diff"] = d
            r["losses_match"] = "yes" if d is not None and d <= a.loss_tol else "no"
            if r["losses_match"] != "yes":
                mismatches += 1

    # Weak-scaling efficiency: per-GPU throughput against the smallest GPU count that ran with
    # the same stage and offload (1.0 is perfect scaling).
    for r in rows:
        base = [b for b in rows if series_key(b) == series_key(r) and b["status"] == "ok"
                and b["tokens_per_s_per_gpu"]]
        if r["status"] == "ok" and base and r["tokens_per_s_per_gpu"]:
            ref = min(base, key=lambda b: b["gpus"])
            r["weak_scaling_efficiency"] = r["tokens_per_s_per_gpu"] / ref["tokens_per_s_per_gpu"]

    write_csv(os.path.join(a.out, "scaling.csv"), rows)
    write_plots(a.out, rows)
    host = socket.gethostname()
    print(f"<!-- scripts/scaling_sweep.py, {datetime.date.today()}, host {host}, "
          f"device {a.device}, config {a.config}, {a.steps} steps "
          f"(means over steps > {WARMUP_STEPS}) -->")
    print(markdown(rows, a.loss_tol if a.match_losses else None))
    log(f"wrote {os.path.join(a.out, 'scaling.csv')}, throughput.svg, memory.svg")
    if mismatches:
        log(f"{mismatches} run(s) without losses matching the 1-rank stage-0 reference "
            f"(tolerance {a.loss_tol:g})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
