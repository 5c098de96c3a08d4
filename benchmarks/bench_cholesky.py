#!/usr/bin/env python
"""Time a Cholesky and its gradient: TensorFlow's registered gradient against gpnat's blocked one.

Every SVGP iteration factorises K_uu and differentiates through the factor to
reach the kernel's hyperparameters. TensorFlow's gradient of
``tf.linalg.cholesky`` forms L⁻¹ and three dense products (about 7M³ flops);
:func:`gpnat.gaussian.cholesky` keeps the same forward op and recurses on
2 × 2 blocks from ``gpnat.gaussian.CHOLESKY_SPLIT_FROM`` on, per dtype (about 1.5M³ flops;
below it, it is TensorFlow's op and gradient). For each M and dtype this script
times one compiled call of ``A ↦ ∂ Σ(chol(A) ⊙ L̄)/∂A`` (the factorisation and
its reverse mode) with TensorFlow's gradient and with gpnat's for each
threshold in ``THRESHOLDS``, so that the default threshold is the measured
one; and the largest relative difference between the two gradients. Each time is the median
over ``--repeats`` blocks of ``--calls`` calls.

Writes ``benchmarks/CHOLESKY.md`` and ``benchmarks/cholesky.json``.
A benchmark, never a timed test. Run ``.venv/bin/python benchmarks/bench_cholesky.py``.
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_triangular import sweep, timed  # noqa: E402

from gpnat import gaussian  # noqa: E402

THRESHOLDS = (128, 192, 256, 384)
TENSORFLOW = "tensorflow"


def inputs(M, dtype, seed=0):
    """A well-conditioned SPD A and a cotangent L̄, as variables."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((M, M))
    A = X @ X.T / M + np.eye(M)
    return tf.Variable(A.astype(dtype)), tf.Variable(rng.standard_normal((M, M)).astype(dtype))


def gradient(chol, A, L_bar):
    with tf.GradientTape() as tape:
        tape.watch(A)
        loss = tf.reduce_sum(chol(A) * L_bar)
    return tape.gradient(loss, A)


def bench(M, dtype, calls, repeats):
    A, L_bar = inputs(M, dtype)
    row = {"M": M, "dtype": dtype}
    row[TENSORFLOW] = timed(lambda: gradient(tf.linalg.cholesky, A.value(), L_bar), calls, repeats)
    reference = gradient(tf.linalg.cholesky, A.value(), L_bar).numpy()
    row[f"relative difference {TENSORFLOW}"] = 0.0
    default = gaussian.CHOLESKY_SPLIT_FROM
    try:
        for setting in THRESHOLDS:
            gaussian.CHOLESKY_SPLIT_FROM = {name: setting for name in default}  # read when a function is traced
            row[str(setting)] = timed(lambda: gradient(gaussian.cholesky, A.value(), L_bar), calls, repeats)
            ours = gradient(gaussian.cholesky, A.value(), L_bar).numpy()
            row[f"relative difference {setting}"] = float(np.abs(ours - reference).max() / np.abs(reference).max())
    finally:
        gaussian.CHOLESKY_SPLIT_FROM = default
    return row


def render(rows, meta):
    settings = THRESHOLDS
    lines = ["# A Cholesky and its gradient: TensorFlow's against gpnat's", "",
             f"Written by `benchmarks/bench_cholesky.py` ({meta['command']}); do not edit by hand. "
             "What is timed: the script's docstring. Milliseconds per call (median over repeats) of the "
             "factorisation and its reverse mode; *tensorflow*: `tf.linalg.cholesky` and its registered "
             "gradient; a number: `gpnat.gaussian.cholesky` split into 2 × 2 blocks from that M on "
             "(`gaussian.CHOLESKY_SPLIT_FROM`; below it TensorFlow's own). "
             "*speed-up*: tensorflow over the default threshold of that dtype. "
             "*rel. diff.*: the largest difference between the two gradients over the largest entry, "
             "at the default threshold.", "", "## Machine", ""]
    lines += [f"- **{k}**: {v}" for k, v in meta.items() if k != "command"]
    defaults = meta["CHOLESKY_SPLIT_FROM in this code"]
    lines += ["", "| dtype | M | tensorflow | " + " | ".join(str(s) for s in settings)
              + " | fastest | speed-up | rel. diff. |", "|" + "---|" * (len(settings) + 6)]
    for r in rows:
        distinct = {TENSORFLOW: r[TENSORFLOW], **{s: r[str(s)] for s in settings if s <= r["M"]}}
        best = min(distinct, key=distinct.get)
        default = defaults.get(r["dtype"], defaults["float64"])
        chosen = default if default <= r["M"] else TENSORFLOW
        lines.append(
            f"| {r['dtype']} | {r['M']} | {r[TENSORFLOW]:.3g} | "
            + " | ".join(f"{r[str(s)]:.3g}" + ("" if s in distinct else " (tensorflow)") for s in settings)
            + f" | {best} | {r[TENSORFLOW] / r[str(chosen)]:.2f} | {r[f'relative difference {chosen}']:.1e} |")
    lines += ["", "*(tensorflow)*: that threshold is above M, so the code is TensorFlow's; the column shows the "
              "same code timed again (how much timings move), and *fastest* ignores it."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    return sweep("bench_cholesky.py", argv, bench, render, ("CHOLESKY_SPLIT_FROM", gaussian.CHOLESKY_SPLIT_FROM),
                 "32,64,128,192,256,384,512,768,1000,1500,2000", HERE / "CHOLESKY.md", HERE / "cholesky.json")


if __name__ == "__main__":
    sys.exit(main())
