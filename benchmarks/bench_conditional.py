#!/usr/bin/env python
"""Time an SVGP ELBO and its gradient with K_uf's columns in one group and in groups, one per thread.

TensorFlow's CPU triangular solve runs each matrix of a batch on one thread,
so the solve L_m⁻¹ K_uf of gpflow's ``base_conditional_with_lm`` (and its
adjoint in the gradient) uses one core however many there are. ``gpnat.SVGP``
can hand that function K_uf ``[M, N]`` as ``[M, T, N / T]``, its documented
leading dimensions (``gpnat.models.svgp._grouped_conditional``): the same
operations per column, on T threads. This script decides where that pays.

For every cell (dtype, M, batch N), on the synthetic regression problem of
``benchmarks/problem.py`` (20,000 points; whitened ``gpnat.SVGP``, ARD SquaredExponential,
Gaussian likelihood, Z the first M points, the batch the first N), it compiles one ``tf.function``
returning the training loss and its gradient with respect to every trainable
variable, once with one group (*one*) and once with T = the number of threads
(*grouped*; for a batch not divisible by T the last group is padded with zero
columns), and times calls in blocks of about ``--seconds``, the two
interleaved with their order alternating, ``--repeats`` blocks each; reported
is the median time per call and the ratio of the medians. It also records the
largest relative difference of the loss and gradients between the two.

Writes ``benchmarks/CONDITIONAL.md`` and ``benchmarks/conditional.json``
(``--output``, ``--json``). A benchmark, never a timed test.
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
from machine import git_state, report_header, write_report  # noqa: E402
from problem import D, make_data  # noqa: E402

import gpnat  # noqa: E402
from gpnat.models import svgp  # noqa: E402

JITTER = {"float64": 1e-6, "float32": 1e-4}
#: points in the problem: Z is the first M, a batch the first N
NUM_DATA = 20000


def loss_and_gradient(M, N, groups: int):
    """A compiled (loss, gradients) on a batch of N points of a fresh whitened SVGP with M inducing
    points, with K_uf in ``groups`` groups."""
    X, Y = make_data(NUM_DATA)
    kernel = gpflow.kernels.SquaredExponential(lengthscales=np.ones(D))
    model = gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(), X[:M].copy(), num_data=NUM_DATA)
    f = gpflow.default_float()
    data = (tf.constant(X[:N], f), tf.constant(Y[:N], f))
    original = svgp._column_groups

    def grouped(Kmn, q_sqrt, full_cov):  # this number of groups for this function's trace, whatever the rule
        return groups if not full_cov and q_sqrt.shape.rank == 3 else 1

    @tf.function
    def fn():
        with tf.GradientTape() as tape:
            loss = model.training_loss(data)
        return [loss] + list(tape.gradient(loss, model.trainable_variables))

    svgp._column_groups = grouped
    try:
        out = fn()  # traced here, with this number of groups
    finally:
        svgp._column_groups = original
    return fn, [o.numpy() for o in out]


def block(fn, seconds: float) -> float:
    """Seconds per call over calls lasting about ``seconds``."""
    t0, k = time.perf_counter(), 0
    while True:
        out = fn()
        k += 1
        if time.perf_counter() - t0 >= seconds:
            break
    out[0].numpy()
    return (time.perf_counter() - t0) / k


def bench(dtype, M, N, threads, repeats, seconds):
    gpflow.config.set_default_float(dtype)
    gpflow.config.set_default_jitter(JITTER[dtype])
    one, a = loss_and_gradient(M, N, 1)
    grouped, b = loss_and_gradient(M, N, threads)
    diff = max(float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-300)) for x, y in zip(a, b))
    times = {"one": [], "grouped": []}
    block(one, seconds / 3), block(grouped, seconds / 3)  # warm
    for r in range(repeats):
        for name in (("one", "grouped") if r % 2 == 0 else ("grouped", "one")):
            times[name].append(block(one if name == "one" else grouped, seconds))
    med = {k: statistics.median(v) for k, v in times.items()}
    row = dict(dtype=dtype, M=M, N=N, groups=threads, one_ms=1e3 * med["one"], grouped_ms=1e3 * med["grouped"],
               ratio=med["grouped"] / med["one"], relative_difference=diff,
               rule=svgp._column_groups(tf.zeros([M, N], dtype), tf.zeros([1, M, M], dtype), False) > 1,
               per_repeat=[g / o for g, o in zip(times["grouped"], times["one"])])
    print(f"{dtype} M={M} N={N}: one {row['one_ms']:.3f} ms, grouped {row['grouped_ms']:.3f} ms, "
          f"ratio {row['ratio']:.3f}, rule groups: {row['rule']}", flush=True)
    return row


def render(rows, meta) -> str:
    lines = ["# K_uf's columns in groups, one per thread, in gpflow's conditional", "",
             f"Written by `benchmarks/bench_conditional.py` ({meta['command']}); do not edit by hand. What is "
             "timed and how: the script's docstring. Milliseconds per loss-and-gradient call (median over "
             "repeats); *ratio*: grouped / one group (below 1: grouping is faster), in brackets the lowest and "
             "highest per-repeat ratio; *rule groups*: whether `gpnat.SVGP` groups this cell "
             f"(`GROUPED_DTYPES` = {svgp.GROUPED_DTYPES}, `GROUP_MIN_COLUMNS` = {svgp.GROUP_MIN_COLUMNS}, "
             f"`GROUP_MIN_WORK` = {svgp.GROUP_MIN_WORK:g}, T = {meta['threads']} threads); *difference*: the "
             "largest relative difference of the loss and gradients between the two.", "", "## Machine", ""]
    lines += [f"- **{k}**: {v}" for k, v in meta.items() if k != "command"]
    lines += ["", "| dtype | M | batch N | one group | grouped | ratio | rule groups | difference |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = min(r["per_repeat"]), max(r["per_repeat"])
        lines.append(f"| {r['dtype']} | {r['M']} | {r['N']} | {r['one_ms']:.3g} | {r['grouped_ms']:.3g} | "
                     f"{r['ratio']:.2f} ({lo:.2f}–{hi:.2f}) | {'yes' if r['rule'] else 'no'} | "
                     f"{r['relative_difference']:.1e} |")
    for dtype in sorted({r["dtype"] for r in rows}):
        ruled = [r for r in rows if r["dtype"] == dtype and r["rule"]]
        others = [r for r in rows if r["dtype"] == dtype and not r["rule"]]
        if ruled:
            lines += ["", f"{dtype}, cells the rule groups: ratio {min(r['ratio'] for r in ruled):.2f} to "
                          f"{max(r['ratio'] for r in ruled):.2f} ({len(ruled)} cells)."]
        if others:
            lines += ["", f"{dtype}, cells it leaves in one group: ratio {min(r['ratio'] for r in others):.2f} "
                          f"to {max(r['ratio'] for r in others):.2f} ({len(others)} cells)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--M", default="20,50,100,200,500,1000")
    parser.add_argument("--batch", default="256,1000,10000")
    parser.add_argument("--dtype", default="float64,float32")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.4)
    parser.add_argument("--max-work", type=float, default=2e9, help="skip cells with M²·N above this")
    parser.add_argument("--output", default=str(HERE / "CONDITIONAL.md"))
    parser.add_argument("--json", default=str(HERE / "conditional.json"))
    args = parser.parse_args(argv)
    threads = svgp._threads()
    meta = dict(report_header("bench_conditional.py", argv), tensorflow=tf.__version__, gpflow=gpflow.__version__,
                gpnat_source=git_state(), threads=threads)
    if threads < 2:
        print("one thread: nothing to group", file=sys.stderr)
        return 1
    rows = []
    t0 = time.perf_counter()
    for dtype in args.dtype.split(","):
        for M in (int(m) for m in args.M.split(",")):
            for N in (int(n) for n in args.batch.split(",")):
                if M * M * N <= args.max_work:
                    rows.append(bench(dtype, M, N, threads, args.repeats, args.seconds))
    meta["wall_s"] = round(time.perf_counter() - t0)
    write_report(render(rows, meta), args.output, args.json, dict(machine=meta, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
