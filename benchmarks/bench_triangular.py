#!/usr/bin/env python
"""Time the natural step from mean/Cholesky storage with dense and with blocked triangular algebra.

``MeanCholesky.natural_step`` needs the lower triangle of Lᵀ∇_L (a product of
two lower triangles) and V⁻¹Lᵀ (a solve with an upper-triangular right-hand
side). :func:`gpnat.gaussian.lower_of_transpose_product` and
:func:`gpnat.gaussian.solve_upper_triangular` split both into 2 × 2 blocks
from ``gpnat.gaussian.SPLIT_FROM`` on. This script times, for each M and
dtype, the product, the solve and one whole step (one proposal, γ = 0.5) with
the split switched off (``dense``) and with ``SPLIT_FROM`` ∈ ``THRESHOLDS``,
so that the default threshold is the measured one. Each time is the median
over ``--repeats`` blocks of a compiled function called ``--calls`` times.

Writes ``benchmarks/TRIANGULAR.md`` and ``benchmarks/triangular.json``.
A benchmark, never a timed test. Run ``.venv/bin/python benchmarks/bench_triangular.py``.
"""
import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from machine import git_state, report_header, write_report  # noqa: E402

from gpnat import gaussian  # noqa: E402
from gpnat.parametrisations import MeanCholesky, Natural  # noqa: E402

THRESHOLDS = (256, 384, 512)
DENSE = "dense"


def inputs(M, dtype, seed=0):
    """A well-conditioned q(u) (m, L) and a small gradient, as variables."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((1, M, M))
    S = A @ np.swapaxes(A, 1, 2) / M + np.eye(M)
    L = np.linalg.cholesky(S)
    grad_L = np.tril(rng.standard_normal((1, M, M))) / M
    return [tf.Variable(x.astype(dtype)) for x in (rng.standard_normal((M, 1)), L, rng.standard_normal((M, 1)),
                                                    grad_L)]


def timed(fn, calls, repeats, seconds=None):
    """Median ms per call of a compiled ``fn`` (traced and warmed first), over ``repeats`` blocks of
    ``calls`` calls; with ``seconds``, of at least enough calls for a block to take about that long."""
    compiled = tf.function(fn)
    tf.nest.map_structure(lambda t: t.numpy(), compiled())
    if seconds is not None:
        t0 = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), compiled())
        calls = max(calls, math.ceil(seconds / (time.perf_counter() - t0)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = compiled()
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append((time.perf_counter() - t0) / calls)
    return 1e3 * statistics.median(times)


def bench(M, dtype, calls, repeats):
    m, L, grad_m, grad_L = inputs(M, dtype)
    Lt = tf.linalg.adjoint(L)
    row = {"M": M, "dtype": dtype}
    default = gaussian.SPLIT_FROM
    try:
        for setting in (DENSE,) + THRESHOLDS:
            gaussian.SPLIT_FROM = 10 ** 9 if setting == DENSE else setting  # read when a function is traced
            row[f"product {setting}"] = timed(lambda: gaussian.lower_of_transpose_product(L, grad_L), calls, repeats)
            row[f"solve {setting}"] = timed(lambda: gaussian.solve_upper_triangular(Lt, Lt), calls, repeats)
            row[f"step {setting}"] = timed(
                lambda: MeanCholesky().natural_step(Natural(), m, L, grad_m, grad_L)(0.5), calls, repeats)
    finally:
        gaussian.SPLIT_FROM = default
    return row


def render(rows, meta):
    lines = ["# Dense against blocked triangular algebra in the natural step", "",
             f"Written by `benchmarks/bench_triangular.py` ({meta['command']}); do not edit by hand. "
             "What is timed: the script's docstring. Milliseconds per call (median over repeats); "
             "*dense*: no split; a number: `gaussian.SPLIT_FROM` (split into 2 × 2 blocks from that M on, "
             "recursively).", "", "## Machine", ""]
    lines += [f"- **{k}**: {v}" for k, v in meta.items() if k != "command"]
    settings = (DENSE,) + THRESHOLDS
    for what in ("step", "product", "solve"):
        lines += ["", f"## {what}", "", "| dtype | M | " + " | ".join(str(s) for s in settings) + " | fastest |",
                  "|" + "---|" * (len(settings) + 3)]
        for r in rows:
            times = {s: r[f"{what} {s}"] for s in settings}
            # a threshold above M runs the dense code: timed again, but not a choice of its own
            distinct = {s: t for s, t in times.items() if s == DENSE or s <= r["M"]}
            best = min(distinct, key=distinct.get)
            lines.append(f"| {r['dtype']} | {r['M']} | " + " | ".join(
                f"{times[s]:.3g}" + ("" if s in distinct else " (dense)") for s in settings) + f" | {best} |")
    lines += ["", "*(dense)*: that threshold is above M, so the code is the dense one; the column shows the "
              "same code timed again (how much timings move), and *fastest* ignores it."]
    return "\n".join(lines) + "\n"


def sweep(script, argv, bench, render, constant, default_M, output, json_path):
    """The command line of a threshold sweep (this script's and bench_cholesky's).

    Runs ``bench(M, dtype, calls, repeats)`` for every M and dtype asked for,
    prints each row, and writes ``render(rows, meta)`` and the JSON;
    ``constant`` is the (name, value) of the threshold in the code.
    """
    p = argparse.ArgumentParser(description=f"benchmarks/{script}: see its docstring")
    p.add_argument("--M", default=default_M)
    p.add_argument("--dtype", default="float64,float32")
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output", default=str(output))
    p.add_argument("--json", default=str(json_path))
    args = p.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    t0 = time.perf_counter()
    rows = []
    for dtype in args.dtype.split(","):
        for M in (int(x) for x in args.M.split(",")):
            rows.append(bench(M, dtype, args.calls, args.repeats))
            print(", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()),
                  flush=True)
    meta = {
        **report_header(script, argv),
        "tensorflow": tf.__version__,
        "gpnat_source": git_state(),
        f"{constant[0]} in this code": constant[1],
        "wall_s": f"{time.perf_counter() - t0:.0f}",
    }
    text = render(rows, meta)
    write_report(text, args.output, args.json, {"meta": meta, "rows": rows})
    return 0


def main(argv=None):
    return sweep("bench_triangular.py", argv, bench, render, ("SPLIT_FROM", gaussian.SPLIT_FROM),
                 "128,256,320,384,512,768,1000,1500,2000", HERE / "TRIANGULAR.md", HERE / "triangular.json")


if __name__ == "__main__":
    sys.exit(main())
