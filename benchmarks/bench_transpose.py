#!/usr/bin/env python
"""What M × M transposes cost on a CPU, and what routing them through XLA saves.

TensorFlow's CPU Transpose kernel hands a tensor above some size to its thread
pool; the hand-off costs tens of microseconds, more than the copy itself at the
M of a typical SVGP. ``gpnat.gaussian.transpose`` runs XLA's transpose above
``TRANSPOSE_BY_XLA`` instead (a range of sizes per dtype). Three measurements, each the
median over ``--repeats`` (float64 unless said):

1. one transpose of ``[1, M, M]``, float64 and float32: TensorFlow's kernel
   (``tf.linalg.adjoint``), XLA's, and ``gaussian.transpose`` (µs per call,
   ``--calls`` calls in one compiled loop, less the loop's own cost);
2. the proposal of one natural step in its closed form (mean/Cholesky storage,
   natural coordinates), with ``gaussian.transpose`` and with it replaced by
   ``tf.linalg.adjoint`` (µs per proposal);
3. ``gpnat.train`` per iteration (ms; synthetic regression, N = 20000, D = 8,
   batch 256, ``--iterations`` iterations, tracing excluded): fused mode with
   either transpose, and Adam-only training, interleaved within each repeat.

Writes ``benchmarks/TRANSPOSE.md`` and ``benchmarks/transpose.json``. A benchmark,
never a test. Run ``.venv/bin/python benchmarks/bench_transpose.py``.
"""
import argparse
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

import gpflow  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from machine import fmt, git_state, report_header, write_report  # noqa: E402

import gpnat  # noqa: E402
from gpnat import gaussian  # noqa: E402
from gpnat.parametrisations import MeanCholesky, Natural  # noqa: E402

_xla = tf.function(lambda A: tf.linalg.adjoint(A), jit_compile=True)
TRANSPOSES = {"TensorFlow": tf.linalg.adjoint, "XLA": _xla, "gaussian.transpose": gaussian.transpose}


def per_call_us(f, x, calls: int) -> float:
    """µs per call of f in a compiled loop of ``calls`` calls (each call's input depends on the last)."""
    def loop(x):
        return tf.while_loop(lambda i, a: i < calls, lambda i, a: (i + 1, a + tf.reduce_sum(f(x + a * 0)) * 0),
                             (0, tf.zeros([], x.dtype)))[1]
    g = tf.function(loop)
    g(x)
    t0 = time.perf_counter()
    g(x).numpy()
    return 1e6 * (time.perf_counter() - t0) / calls


def transposes(Ms, calls, repeats):
    rows = []
    rng = np.random.default_rng(0)
    for dtype in ("float64", "float32"):
        for M in Ms:
            x = tf.constant(rng.standard_normal((1, M, M)), dtype)
            times = {name: [] for name in ("loop",) + tuple(TRANSPOSES)}
            for _ in range(repeats):
                times["loop"].append(per_call_us(lambda a: a, x, calls))
                for name, f in TRANSPOSES.items():
                    times[name].append(per_call_us(f, x, calls))
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"dtype": dtype, "M": M, **{k: med[k] - med["loop"] for k in TRANSPOSES}, "loop": med["loop"]})
            print(rows[-1], flush=True)
    return rows


def proposals(Ms, calls, repeats):
    rows = []
    rng = np.random.default_rng(1)
    for M in Ms:
        A = rng.standard_normal((M, M))
        L = tf.constant(np.linalg.cholesky(A @ A.T / M + np.eye(M))[None])
        m = tf.constant(rng.standard_normal((M, 1)))
        grads = (tf.constant(1e-3 * rng.standard_normal((M, 1))),
                 tf.constant(np.tril(1e-3 * rng.standard_normal((1, M, M)))))

        def proposal(L_):
            new = MeanCholesky().natural_step(Natural(), m, L_, *grads)(tf.constant(0.1, tf.float64))
            return new[1]

        times = {"gaussian.transpose": [], "tf.linalg.adjoint": []}
        for _ in range(repeats):
            for name in times:
                with _transpose_as(name):
                    times[name].append(per_call_us(proposal, L, calls))
        rows.append({"M": M, **{k: statistics.median(v) for k, v in times.items()}})
        print(rows[-1], flush=True)
    return rows


class _transpose_as:
    """Within the block, gpnat's maths transposes with ``name`` (traced inside the block)."""

    def __init__(self, name):
        self.f = gaussian.transpose if name == "gaussian.transpose" else tf.linalg.adjoint

    def __enter__(self):
        self.saved, gaussian.transpose = gaussian.transpose, self.f

    def __exit__(self, *exc):
        gaussian.transpose = self.saved


def training(Ms, iterations, repeats):
    rng = np.random.default_rng(0)
    N, D = 20000, 8
    X = rng.standard_normal((N, D))
    Y = np.sin(X).sum(1, keepdims=True) + 0.1 * rng.standard_normal((N, 1))
    configs = {"fused, gaussian.transpose": ("gaussian.transpose", True),
               "fused, tf.linalg.adjoint": ("tf.linalg.adjoint", True),
               "Adam-only": ("gaussian.transpose", None)}

    def ms(M, transpose, fused):
        model = gpnat.SVGP(gpflow.kernels.SquaredExponential(lengthscales=np.ones(D)), gpflow.likelihoods.Gaussian(),
                           X[:M].copy(), num_data=N)
        kw = dict(natgrad=None) if fused is None else dict(natgrad=gpnat.NaturalGradient(0.1), fused=True)
        with _transpose_as(transpose):
            h = gpnat.train(model, (X, Y), iterations=iterations, batch_size=256, adam_lr=0.01, progress=False, **kw)
        t = np.asarray(h.time)
        skip = iterations // 5  # the first call's iterations include tracing
        return 1e3 * (t[-1] - t[skip]) / (iterations - 1 - skip)

    rows = []
    for M in Ms:
        times = {name: [] for name in configs}
        for _ in range(repeats):
            for name, (transpose, fused) in configs.items():
                times[name].append(ms(M, transpose, fused))
        rows.append({"M": M, **{k: statistics.median(v) for k, v in times.items()},
                     "ratios": [a / b for a, b in zip(times["fused, gaussian.transpose"],
                                                     times["fused, tf.linalg.adjoint"])]})
        print(rows[-1], flush=True)
    return rows


def render(t_rows, p_rows, r_rows, meta) -> str:
    L = ["# Transposes on a CPU: TensorFlow's kernel against XLA's", "",
         f"Written by `benchmarks/bench_transpose.py` ({meta['command']}); do not edit by hand. "
         "Benchmarks are never timed tests. What is timed and how: the script's docstring.", "", "## Machine", ""]
    L += [f"- **{k}**: {v}" for k, v in meta.items() if k != "command"]
    L += ["", "## One transpose of [1, M, M] (µs per call, less the loop's own cost)", "",
          "`gaussian.transpose` runs XLA's on a CPU where the element count n of the tensor lies in "
          f"TRANSPOSE_BY_XLA = {gaussian.TRANSPOSE_BY_XLA} (above < n ≤ up to), TensorFlow's elsewhere.", "",
          "| dtype | M | TensorFlow | XLA | gaussian.transpose | loop |", "|---|---|---|---|---|---|"]
    L += [f"| {r['dtype']} | {r['M']} | {fmt(r['TensorFlow'])} | {fmt(r['XLA'])} | {fmt(r['gaussian.transpose'])} "
          f"| {fmt(r['loop'])} |" for r in t_rows]
    L += ["", "## The natural step's closed-form proposal (mean/Cholesky storage, natural coordinates; µs)", "",
          "| M | with gaussian.transpose | with tf.linalg.adjoint | ratio |", "|---|---|---|---|"]
    L += [f"| {r['M']} | {fmt(r['gaussian.transpose'])} | {fmt(r['tf.linalg.adjoint'])} "
          f"| {fmt(r['gaussian.transpose'] / r['tf.linalg.adjoint'], '.2f')} |" for r in p_rows]
    L += ["", "## gpnat.train, ms per iteration (Gaussian, N = 20000, batch 256, float64)", "",
          "*ratio*: fused with gaussian.transpose over fused with tf.linalg.adjoint, per repeat (lowest–highest); "
          "the two ran back to back in each repeat.", "",
          "| M | fused, gaussian.transpose | fused, tf.linalg.adjoint | Adam-only | ratio (median, range) |",
          "|---|---|---|---|---|"]
    for r in r_rows:
        q = r["ratios"]
        L.append(f"| {r['M']} | {fmt(r['fused, gaussian.transpose'])} | {fmt(r['fused, tf.linalg.adjoint'])} "
                 f"| {fmt(r['Adam-only'])} | {statistics.median(q):.2f} ({min(q):.2f}–{max(q):.2f}) |")
    return "\n".join(L) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--M", default="32,48,49,50,64,100,150,200,300,500", help="M of the transposes")
    p.add_argument("--proposal-M", default="32,48,50,64,100,150,200", help="M of the natural-step proposals")
    p.add_argument("--train-M", default="20,50,64,100", help="M of the training runs ('' skips them)")
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output", default=str(HERE / "TRANSPOSE.md"))
    p.add_argument("--json", default=str(HERE / "transpose.json"))
    args = p.parse_args(argv)
    gpflow.config.set_default_float(np.float64)
    ints = lambda s: [int(m) for m in s.split(",") if m]  # noqa: E731
    t0 = time.perf_counter()
    t_rows = transposes(ints(args.M), args.calls, args.repeats)
    p_rows = proposals(ints(args.proposal_M), args.calls // 4, args.repeats)
    r_rows = training(ints(args.train_M), args.iterations, args.repeats)
    meta = {**report_header("bench_transpose.py", argv), "tensorflow": tf.__version__, "gpflow": gpflow.__version__,
            "gpnat_source": git_state(), "loadavg": " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " at the end",
            "wall_s": f"{time.perf_counter() - t0:.0f}"}
    write_report(render(t_rows, p_rows, r_rows, meta), args.output, args.json,
                 {"meta": meta, "transposes": t_rows, "proposals": p_rows, "training": r_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
