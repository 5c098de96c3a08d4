#!/usr/bin/env python
"""What repeated ``gpnat.train`` calls leave behind, with and without XLA (``jit_compile``).

TensorFlow's XLA compilation cache has no eviction (tensorflow/tensorflow#64170),
and every ``train`` call that traces its loop (with ``jit_compile=True``:
compiles its iteration) adds to it. A later call with the same configuration
reuses the model's traced loop (:mod:`gpnat.training.cache`); the rows
"traced anew" drop it before each call (``cache.forget``), as a call with
another configuration would. For each setting this script trains one SVGP (M = ``--M``,
D = 8, Gaussian likelihood, minibatch ``--batch`` of N = 2000 synthetic
points, Adam only) with ``--calls`` calls of 3 iterations each, in a fresh
process, and records after each call the process's resident memory (VmRSS)
and its number of memory maps (lines of /proc/self/maps), against the kernel's
limit on maps (vm.max_map_count): the process crashes when it is reached.
The growth per call is the least-squares slope over the calls after the first.

Linux only (/proc). Writes ``benchmarks/XLA_MEMORY.md`` and
``benchmarks/xla_memory.json``. A benchmark, never a test.
Run ``.venv/bin/python benchmarks/bench_xla_memory.py``.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from machine import git_state, report_header, write_report  # noqa: E402


def resident_mb_and_maps():
    rss = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS"))
    with open("/proc/self/maps", "rb") as maps:
        count = sum(1 for _ in maps)
    return int(rss.split()[1]) / 1024, count


def child(jit: bool, anew: bool, calls: int, M: int, batch: int) -> dict:
    import gpflow

    import gpnat
    from gpnat.training import cache

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 8))
    Y = np.sin(X).sum(1, keepdims=True) + 0.1 * rng.normal(size=(2000, 1))
    model = gpnat.SVGP(gpflow.kernels.SquaredExponential(lengthscales=np.ones(8)), gpflow.likelihoods.Gaussian(),
                       X[:M].copy(), num_data=2000)
    rows = []
    for _ in range(calls):
        if anew:
            cache.forget(model)
        gpnat.train(model, (X, Y), iterations=3, batch_size=batch, natgrad=None, jit_compile=jit, progress=False)
        rows.append(resident_mb_and_maps())
    return {"jit_compile": jit, "loop": "traced anew" if anew else "reused",
            "rss_mb": [r[0] for r in rows], "maps": [r[1] for r in rows]}


def slope(values):
    y = np.asarray(values[1:], dtype=float)
    return float(np.polyfit(np.arange(y.size), y, 1)[0]) if y.size > 1 else float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--M", type=int, default=100)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--output", default=str(HERE / "XLA_MEMORY.md"))
    p.add_argument("--json", default=str(HERE / "xla_memory.json"))
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # 1: jit_compile=True
    p.add_argument("--anew", type=int, default=0, help=argparse.SUPPRESS)  # 1: trace the loop at every call
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(bool(args.child), bool(args.anew), args.calls, args.M, args.batch)), flush=True)
        return 0
    limit = int(Path("/proc/sys/vm/max_map_count").read_text())
    runs = []
    for jit, anew in ((0, 1), (0, 0), (1, 1), (1, 0)):
        out = subprocess.run([sys.executable, __file__, "--child", str(jit), "--anew", str(anew),
                              "--calls", str(args.calls),
                              "--M", str(args.M), "--batch", str(args.batch)], capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode or not lines:
            raise SystemExit(f"the child process failed: {out.stderr[-1000:]}")
        runs.append(json.loads(lines[-1]))
    meta = {**report_header("bench_xla_memory.py", argv), "gpnat_source": git_state(),
            "vm.max_map_count": limit}
    L = ["# Memory left behind by repeated train calls, with and without XLA", "",
         f"Written by `benchmarks/bench_xla_memory.py` ({meta['command']}); do not edit by hand. "
         "What is measured and how: the script's docstring.", ""]
    L += [f"- **{k}**: {v}" for k, v in meta.items() if k != "command"]
    L += ["", f"SVGP, M = {args.M}, minibatch {args.batch}, Adam only, {args.calls} calls of 3 iterations, "
          "one fresh process per row.", "",
          "| jit_compile | loop | resident MB after call 1 | after the last | MB per call | maps after call 1 "
          "| after the last | maps per call | calls to the map limit at that rate |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        per_call = slope(r["maps"])
        to_limit = f"{(limit - r['maps'][-1]) / per_call + len(r['maps']):.0f}" if per_call > 1 else "none"
        L.append(f"| {r['jit_compile']} | {r['loop']} | {r['rss_mb'][0]:.0f} | {r['rss_mb'][-1]:.0f} "
                 f"| {slope(r['rss_mb']):.1f} "
                 f"| {r['maps'][0]} | {r['maps'][-1]} | {per_call:.0f} | {to_limit} |")
    text = "\n".join(L) + "\n"
    write_report(text, args.output, args.json, {"meta": meta, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
