#!/usr/bin/env python
"""How accurate is the blocked Cholesky gradient on an ill-conditioned K_uu?

:func:`gpnat.gaussian.cholesky` differentiates the factorisation by 2 × 2
block recursion from ``CHOLESKY_SPLIT_FROM`` on (M = 192 in float64); below
it, and in gpflow's own SVGP, TensorFlow's registered gradient is used. On
well-conditioned matrices the two agree to round-off (``CHOLESKY.md``). This
script measures both against central finite differences where K_uu is
ill-conditioned: an unwhitened SVGP (N = 200, Gaussian likelihood of variance
0.1) with M inducing inputs evenly spaced on [−3, 3] (M = 192: one level of
blocks; M = 1000: three), a random q(u), and squared-exponential lengthscales
from 0.05 (K_uu nearly diagonal) to 0.8 (inducing inputs far denser than the
lengthscale). Per M and lengthscale: cond(K_uu + jitter), and the largest
difference of each gradient with respect to Z from finite differences (step
``h`` on every 8th inducing input, the better of two steps per entry), over
the largest entry of TensorFlow's gradient; also for the reverse mode
without blocks (``_cholesky_reverse_dense``, the formula the blocks use below
the threshold) and for the classic blocked form (:func:`classic`, gpnat's
until git 3ed8ee9), which folds the correction into the recursion on L₁₁.

Writes ``benchmarks/CHOLESKY_ACCURACY.md``. A benchmark, never a test::

    .venv/bin/python benchmarks/bench_cholesky_accuracy.py     # about eight minutes on 2 cores
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

N, EVERY = 200, 8
SIZES = (192, 1000)
LENGTHSCALES = (0.05, 0.1, 0.2, 0.4, 0.8)
STEPS = (1e-4, 1e-5)


def dense(L, L_bar):
    """The reverse mode without blocks: sym(L⁻ᵀ Φ(Lᵀ L̄) L⁻¹) by two triangular solves, at any M."""
    return gpnat.gaussian._cholesky_reverse_dense(L, L_bar)


def classic(L, L_bar):
    """The classic blocked form: S̄ = rev(L₂₂, L̄₂₂), Ā₂₁ = (L̄₂₁ − 2S̄L₂₁)L₁₁⁻¹, Ā₁₁ = rev(L₁₁, L̄₁₁ − Ā₂₁ᵀL₂₁)."""
    M = L.shape[-1]
    if M < gpnat.gaussian.cholesky_split_from(L.dtype):
        return dense(L, L_bar)
    h = M // 2
    L11, L21, L22 = L[..., :h, :h], L[..., h:, :h], L[..., h:, h:]
    S_bar = classic(L22, L_bar[..., h:, h:])
    L21_bar = L_bar[..., h:, :h] - 2.0 * tf.matmul(S_bar, L21)
    A21_bar = tf.linalg.adjoint(tf.linalg.triangular_solve(L11, tf.linalg.adjoint(L21_bar), lower=True, adjoint=True))
    A11_bar = classic(L11, L_bar[..., :h, :h] - tf.matmul(A21_bar, L21, transpose_a=True))
    return tf.concat([tf.concat([A11_bar, 0.5 * tf.linalg.adjoint(A21_bar)], -1),
                      tf.concat([0.5 * A21_bar, S_bar], -1)], -2)


def reverse_mode(model, data, reverse):
    """Z's gradient with gpnat's Cholesky taking ``reverse`` as its reverse mode."""
    ours, gpnat.gaussian._cholesky_reverse = gpnat.gaussian._cholesky_reverse, reverse
    try:
        return z_gradient(model, data)
    finally:
        gpnat.gaussian._cholesky_reverse = ours


def random_q(model, rng):
    M = model.q.num_inducing
    A = np.tril(rng.normal(size=(1, M, M)) * 0.2, -1) + np.eye(M)[None] * (0.5 + rng.uniform(size=(1, M, 1)))
    model.q.assign_mean_cholesky(rng.normal(size=(M, 1)), A)


def z_gradient(model, data):
    with tf.GradientTape() as tape:
        loss = model.training_loss(data)
    return tape.gradient(loss, model.inducing_variable.Z.unconstrained_variable).numpy()[:, 0]


def finite_differences(model, data, Z, h):
    M, out = len(Z), []
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
    assert min(SIZES) >= gpnat.gaussian.cholesky_split_from(tf.float64), "M must reach the blocked gradient"
    t0 = time.perf_counter()
    rng = np.random.default_rng(8)
    X = rng.uniform(-3, 3, (N, 1))
    data = (X, np.sin(2 * X) + 0.1 * rng.normal(size=(N, 1)))
    rows = []
    for M in SIZES:
        Z = np.linspace(-3, 3, M)[:, None]
        for ls in LENGTHSCALES:
            ours = gpnat.SVGP(gpflow.kernels.SquaredExponential(lengthscales=ls), gpflow.likelihoods.Gaussian(0.1),
                              Z, whiten=False)
            random_q(ours, rng)
            q_mu, q_sqrt = (t.numpy() for t in ours.q.mean_cholesky())
            theirs = gpflow.models.SVGP(gpflow.kernels.SquaredExponential(lengthscales=ls),
                                        gpflow.likelihoods.Gaussian(0.1), Z, whiten=False, q_mu=q_mu, q_sqrt=q_sqrt)
            g_tf_all = z_gradient(theirs, data)
            g_ours, g_tf = z_gradient(ours, data)[::EVERY], g_tf_all[::EVERY]
            g_dense = reverse_mode(ours, data, dense)[::EVERY]
            g_classic = reverse_mode(ours, data, classic)[::EVERY]
            fds = [finite_differences(theirs, data, Z, h) for h in STEPS]
            scale = np.max(np.abs(g_tf_all))

            def error(g):
                return float(np.max(np.min([np.abs(g - fd) for fd in fds], axis=0)) / scale)

            K = theirs.kernel(Z).numpy() + gpflow.config.default_jitter() * np.eye(M)
            rows.append((M, ls, np.linalg.cond(K), float(np.max(np.abs(g_ours - g_tf)) / scale), error(g_ours),
                         error(g_tf), error(g_dense), error(g_classic),
                         float(np.max(np.abs(g_classic - g_tf)) / scale)))
            print(rows[-1], flush=True)
    lines = ["# The blocked Cholesky gradient on an ill-conditioned K_uu", "",
             f"Written by `benchmarks/bench_cholesky_accuracy.py` ({git_state()}) on {cpu_model()}, TensorFlow "
             f"{tf.__version__}, gpflow {gpflow.__version__}, float64, in {time.perf_counter() - t0:.0f} s. What "
             "and how: the script's docstring. Errors are over the largest entry of TensorFlow's gradient; *vs FD*: "
             "against finite differences, whose own error is about TensorFlow's.", "",
             "| M | lengthscale | cond(K_uu + jitter) | gpnat vs TensorFlow | gpnat vs FD | TensorFlow vs FD | "
             "dense formula vs FD | classic blocked form vs FD | classic blocked form vs TensorFlow |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {M} | {ls} | {c:.1e} | {d:.1e} | {a:.1e} | {b:.1e} | {e:.1e} | {f:.1e} | {g:.1e} |"
              for M, ls, c, d, a, b, e, f, g in rows]
    (HERE / "CHOLESKY_ACCURACY.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'CHOLESKY_ACCURACY.md'}")


if __name__ == "__main__":
    main()
