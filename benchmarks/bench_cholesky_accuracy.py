#!/usr/bin/env python
"""How accurate is the blocked Cholesky gradient on an ill-conditioned K_uu?

:func:`gpnat.gaussian.cholesky` differentiates the factorisation by 2 × 2
block recursion from ``CHOLESKY_SPLIT_FROM`` on (M = 192 in float64); below
it, and in gpflow's own SVGP, TensorFlow's registered gradient is used. On
well-conditioned matrices the two agree to round-off (``CHOLESKY.md``). This
script measures both against central finite differences where K_uu is
ill-conditioned: an unwhitened SVGP (N = 200, Gaussian likelihood of variance
0.1) with M = 192 inducing inputs evenly spaced on [−3, 3], a random q(u), and
squared-exponential lengthscales from 0.05 (K_uu nearly diagonal) to 0.8
(inducing inputs far denser than the lengthscale). Per lengthscale: cond(K_uu
+ jitter), and the largest difference of each gradient with respect to Z from
finite differences (step ``h`` on every 8th inducing input, the better of two
steps per entry), over the largest entry of TensorFlow's gradient; also for
gpnat's reverse mode without blocks (``_cholesky_reverse_dense``, the
formula its blocks use below the threshold) at M = 192.

Writes ``benchmarks/CHOLESKY_ACCURACY.md``. A benchmark, never a test::

    .venv/bin/python benchmarks/bench_cholesky_accuracy.py     # about a minute on 2 cores
"""
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gpflow  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from machine import cpu_model, git_state  # noqa: E402

import gpnat  # noqa: E402

N, M, EVERY = 200, 192, 8
LENGTHSCALES = (0.05, 0.1, 0.2, 0.4, 0.8)
STEPS = (1e-4, 1e-5)


def dense(L, L_bar):
    """The reverse mode without blocks: sym(L⁻ᵀ Φ(Lᵀ L̄) L⁻¹) by two triangular solves, at any M."""
    return gpnat.gaussian._cholesky_reverse_dense(L, L_bar)


def random_q(model, rng):
    A = np.tril(rng.normal(size=(1, M, M)) * 0.2, -1) + np.eye(M)[None] * (0.5 + rng.uniform(size=(1, M, 1)))
    model.q.assign_mean_cholesky(rng.normal(size=(M, 1)), A)


def z_gradient(model, data):
    with tf.GradientTape() as tape:
        loss = model.training_loss(data)
    return tape.gradient(loss, model.inducing_variable.Z.unconstrained_variable).numpy()[:, 0]


def finite_differences(model, data, Z, h):
    out = []
    for i in range(0, M, EVERY):
        values = []
        for sign in (1.0, -1.0):
            Zs = Z.copy()
            Zs[i, 0] += sign * h
            model.inducing_variable.Z.assign(Zs)
            values.append(float(model.training_loss(data)))
        model.inducing_variable.Z.assign(Z)
        out.append((values[0] - values[1]) / (2 * h))
    return np.array(out)


def main():
    assert M >= gpnat.gaussian.cholesky_split_from(tf.float64), "M must reach the blocked gradient"
    t0 = time.perf_counter()
    rng = np.random.default_rng(8)
    X = rng.uniform(-3, 3, (N, 1))
    data = (X, np.sin(2 * X) + 0.1 * rng.normal(size=(N, 1)))
    Z = np.linspace(-3, 3, M)[:, None]
    rows = []
    for ls in LENGTHSCALES:
        ours = gpnat.SVGP(gpflow.kernels.SquaredExponential(lengthscales=ls), gpflow.likelihoods.Gaussian(0.1),
                          Z, whiten=False)
        random_q(ours, rng)
        q_mu, q_sqrt = (t.numpy() for t in ours.q.mean_cholesky())
        theirs = gpflow.models.SVGP(gpflow.kernels.SquaredExponential(lengthscales=ls),
                                    gpflow.likelihoods.Gaussian(0.1), Z, whiten=False, q_mu=q_mu, q_sqrt=q_sqrt)
        g_ours, g_tf = z_gradient(ours, data)[::EVERY], z_gradient(theirs, data)[::EVERY]
        blocked, gpnat.gaussian._cholesky_reverse = gpnat.gaussian._cholesky_reverse, dense
        try:
            g_dense = z_gradient(ours, data)[::EVERY]
        finally:
            gpnat.gaussian._cholesky_reverse = blocked
        fds = [finite_differences(theirs, data, Z, h) for h in STEPS]
        scale = np.max(np.abs(z_gradient(theirs, data)))
        def error(g):
            return float(np.max(np.min([np.abs(g - fd) for fd in fds], axis=0)) / scale)
        K = theirs.kernel(Z).numpy() + gpflow.config.default_jitter() * np.eye(M)
        rows.append((ls, np.linalg.cond(K), float(np.max(np.abs(g_ours - g_tf)) / scale), error(g_ours), error(g_tf),
                     error(g_dense)))
        print(rows[-1], flush=True)
    lines = ["# The blocked Cholesky gradient on an ill-conditioned K_uu", "",
             f"Written by `benchmarks/bench_cholesky_accuracy.py` ({git_state()}) on {cpu_model()}, TensorFlow "
             f"{tf.__version__}, gpflow {gpflow.__version__}, float64, in {time.perf_counter() - t0:.0f} s. What "
             "and how: the script's docstring. Errors are over the largest entry of TensorFlow's gradient.", "",
             "| lengthscale | cond(K_uu + jitter) | gpnat vs TensorFlow | gpnat vs finite differences | "
             "TensorFlow vs finite differences | dense formula vs finite differences |", "|---|---|---|---|---|---|"]
    lines += [f"| {ls} | {c:.1e} | {d:.1e} | {a:.1e} | {b:.1e} | {e:.1e} |" for ls, c, d, a, b, e in rows]
    (HERE / "CHOLESKY_ACCURACY.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'CHOLESKY_ACCURACY.md'}")


if __name__ == "__main__":
    main()
