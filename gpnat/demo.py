"""The headline demo: one natural-gradient step against Adam on a real regression set.

Run with ``make demo`` (or ``python -m gpnat.demo --out DIR``; outside ``make demo``
the data need scikit-learn: ``pip install 'gpnat[experiments]'``). On scikit-learn's
bundled diabetes data (442 patients, 10 inputs; no download), with kernel and
noise hyperparameters fitted once by gpflow's SGPR, it trains q(u) of a
``gpnat.SVGP`` and prints

* the ELBO after **one** natural-gradient step with γ = 1 (natural parameters),
* the optimum, the collapsed bound of ``gpflow.models.SGPR``,
* the ELBO of Adam on q(u) after 1,000 steps,

and writes a PNG plot of the ELBO traces.
"""
import argparse
import time
from pathlib import Path

import gpflow
import numpy as np
import tensorflow as tf

import gpnat
from gpnat.experiments import datasets


def fitted_sgpr(X, Y, num_inducing: int, seed: int = 0):
    """SGPR with hyperparameters fitted by L-BFGS; inducing inputs a fixed random subset."""
    rng = np.random.default_rng(seed)
    Z = X[rng.choice(len(X), num_inducing, replace=False)].copy()
    kernel = gpflow.kernels.SquaredExponential(lengthscales=np.full(X.shape[1], 2.0))
    sgpr = gpflow.models.SGPR((X, Y), kernel, Z, noise_variance=0.5)
    gpflow.set_trainable(sgpr.inducing_variable, False)
    gpflow.optimizers.Scipy().minimize(sgpr.training_loss, sgpr.trainable_variables, options=dict(maxiter=200))
    return sgpr


def run(out: Path, adam_steps: int = 1000, num_inducing: int = 50, seed: int = 0) -> dict:
    X, y = datasets.load_diabetes()
    X, Y, _, _, _ = datasets.standardise(X, y)
    sgpr = fitted_sgpr(X, Y, num_inducing, seed)
    optimum = float(sgpr.elbo())
    kernel, likelihood, Z = sgpr.kernel, sgpr.likelihood, sgpr.inducing_variable.Z.numpy()

    # one natural-gradient step, q(u) stored in natural parameters
    natural = gpnat.SVGP(kernel, likelihood, Z, parametrisation=gpnat.Natural())
    natgrad_trace = [float(natural.elbo((X, Y)))]
    gpnat.NaturalGradient(gamma=1.0).minimize(natural.training_loss_closure((X, Y)), natural.q)
    natgrad_trace.append(float(natural.elbo((X, Y))))

    # Adam on q(u) only (mean/Cholesky, the usual choice), same start
    adam_model = gpnat.SVGP(kernel, likelihood, Z, parametrisation=gpnat.MeanCholesky())
    adam = tf.keras.optimizers.Adam(learning_rate=0.01)
    loss_fn = adam_model.training_loss_closure((X, Y), compile=False)

    @tf.function
    def adam_step():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        adam.apply_gradients(zip(tape.gradient(loss, adam_model.q.xi), adam_model.q.xi))
        return loss

    adam_trace = [float(adam_model.elbo((X, Y)))]
    start = time.perf_counter()
    for _ in range(adam_steps):
        adam_trace.append(-float(adam_step()))
    adam_trace[-1] = float(adam_model.elbo((X, Y)))  # the ELBO after the last step
    adam_seconds = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    plot = out / "elbo_traces.png"
    _plot(plot, natgrad_trace, adam_trace, optimum)
    return dict(
        optimum=optimum,
        natgrad_one_step=natgrad_trace[-1],
        adam=adam_trace[-1],
        adam_steps=adam_steps,
        adam_seconds=adam_seconds,
        start=natgrad_trace[0],
        plot=plot,
        N=len(X),
        M=num_inducing,
    )


def _plot(path: Path, natgrad_trace, adam_trace, optimum) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = np.arange(len(adam_trace))
    floor = 1e-12  # differences below this are round-off
    def gap(trace):
        return np.maximum(optimum - np.asarray(trace), floor)
    ax.loglog(steps[1:], gap(adam_trace)[1:], label="Adam on q(u), lr 0.01")
    ax.loglog([1], gap(natgrad_trace)[1:], "o", ms=9, label="natural gradient, 1 step, γ = 1 (gap at round-off)")
    ax.set_xlabel("step")
    ax.set_ylabel("SGPR optimum − ELBO (nats)")
    ax.set_title("q(u) on diabetes (N = 442): natural gradient vs Adam")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--adam-steps", type=int, default=1000)
    args = parser.parse_args(argv)
    r = run(args.out, adam_steps=args.adam_steps)
    print(f"gpnat demo: SVGP on scikit-learn's diabetes data (N = {r['N']}, M = {r['M']}), "
          "hyperparameters fitted by SGPR and held fixed")
    print(f"  ELBO at the start (q(u) = prior)      : {r['start']:12.6f}")
    print(f"  ELBO after 1 natural-gradient step    : {r['natgrad_one_step']:12.6f}")
    print(f"  SGPR optimum (collapsed bound)        : {r['optimum']:12.6f}")
    print(f"  {'ELBO after %d Adam steps on q(u)' % r['adam_steps']:<38}: {r['adam']:12.6f}"
          f"   ({r['adam_seconds']:.1f} s)")
    print(f"  gap to optimum: natural gradient {r['optimum'] - r['natgrad_one_step']:.2e} nats, "
          f"Adam {r['optimum'] - r['adam']:.2e} nats")
    print(f"  plot of the ELBO traces: {r['plot']}")
    return r


if __name__ == "__main__":
    main()
