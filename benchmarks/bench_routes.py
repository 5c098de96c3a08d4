#!/usr/bin/env python
"""Time one natural step by its closed forms and by the automatic route, against a loss-and-gradient evaluation.

``NaturalGradient(closed_form=True)`` (the default) uses a parametrisation's
closed forms where it has them; ``closed_form=False`` always converts,
differentiates the conversions (reverse mode, and reverse mode twice for the
tangent of θ -> ξ) and converts back. Both give the same step.

For each M, and each storage of q(u) (``MeanCholesky``, ``Natural``,
``Expectation``, and ``MeanPrecisionCholesky``, which has no closed form and
so shows what a parametrisation a user adds without one costs), this script
times, in float64:

* *loss+grad*: one minibatch loss-and-gradient evaluation of the model (SVGP,
  whitened, ARD SquaredExponential, Gaussian likelihood, the synthetic problem
  of ``benchmarks/problem.py``, N = 20,000, minibatch ``--batch``), with respect
  to every trainable variable: what every training iteration pays;
* *closed form* and *automatic*: one ``NaturalGradient(0.5).step`` (default
  coordinates: natural) with the gradient fixed, validity check and
  assignment included, q(u) restored after each call.

q(u) is first set to the optimal q(u) for the full data (one step of γ = 1),
so that the step starts from a realistic point. Each time is the median over
``--repeats`` blocks of a compiled function called for about ``--seconds``
each (traced and warmed first). *rel. diff.*: the largest difference between the two routes'
new q(u) (in storage coordinates) over the largest entry.

Writes ``benchmarks/ROUTES.md`` and ``benchmarks/routes.json``.
A benchmark, never a timed test. Run ``.venv/bin/python benchmarks/bench_routes.py``.
"""
import argparse
import os
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
from bench_triangular import timed  # noqa: E402
from machine import git_state, report_header, write_report  # noqa: E402
from problem import D, make_data  # noqa: E402

import gpnat  # noqa: E402
from gpnat.parametrisations import Expectation, MeanCholesky, MeanPrecisionCholesky, Natural  # noqa: E402

STORAGES = (MeanCholesky(), Natural(), Expectation(), MeanPrecisionCholesky())
N = 20_000


def model_at_optimum(storage, M, X, Y):
    """A default-built SVGP stored in ``storage``, q(u) moved to the optimum for the full data."""
    model = gpnat.SVGP(gpflow.kernels.SquaredExponential(lengthscales=np.ones(D)), gpflow.likelihoods.Gaussian(),
                       X[:M].copy(), num_data=len(X), parametrisation=storage)
    gpnat.NaturalGradient(1.0).minimize(model.training_loss_closure((X, Y)), model.q)
    return model


def closed_parts(storage, xi, grads):
    """What ``closed_form=True`` writes out for a step in natural coordinates from ``storage``."""
    if storage.is_natural:
        return "whole step" if storage.natural_gradient(*xi, *grads) is not None else "none"
    if storage.natural_step(Natural(), *xi, *grads) is not None:
        return "whole step"
    return "∂L/∂η" if storage.expectation_gradient(*xi, *grads) is not None else "none"


def bench(M, batch, seconds, repeats):
    X, Y = make_data(N)
    rng = np.random.default_rng(1)
    idx = rng.choice(N, size=batch, replace=False)
    Xb, Yb = tf.constant(X[idx]), tf.constant(Y[idx])
    rows = []
    for storage in STORAGES:
        model = model_at_optimum(storage, M, X, Y)
        q = model.q
        loss = model.training_loss_closure((Xb, Yb))

        def loss_and_grad():
            with tf.GradientTape() as tape:
                value = loss()
            return value, tape.gradient(value, model.trainable_variables)

        with tf.GradientTape() as tape:
            tape.watch(q.variables_to_watch)
            value = loss()
        grads = [tf.constant(g) for g in tape.gradient(value, q.variables_to_watch)]
        start = [tf.constant(v) for v in q.xi]

        def stepper(closed_form):
            opt = gpnat.NaturalGradient(0.5, closed_form=closed_form)

            def step():
                accepted = opt.step(q, grads).accepted
                new = [tf.identity(v) for v in q.xi]
                for v, s in zip(q.xi, start):
                    v.assign(s)
                return accepted, new
            return step

        row = {"M": M, "batch": batch, "storage": type(storage).__name__,
               "in closed form": closed_parts(storage, start, grads),
               "loss+grad": timed(loss_and_grad, 3, repeats, seconds)}
        results = {}
        for name, closed_form in (("closed form", True), ("automatic", False)):
            step = stepper(closed_form)
            row[name] = timed(step, 3, repeats, seconds)
            accepted, new = tf.function(step)()
            if not bool(accepted):
                raise RuntimeError(f"{name} step rejected for {row['storage']} at M = {M}")
            results[name] = [t.numpy() for t in new]
        scale = max(np.abs(t).max() for t in results["automatic"])
        row["rel. diff."] = float(max(np.abs(a - b).max() for a, b in zip(results["closed form"],
                                                                          results["automatic"])) / scale)
        rows.append(row)
        print(", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
              flush=True)
    return rows


def render(rows, meta):
    lines = ["# The natural step: closed forms against the automatic route", "",
             f"Written by `benchmarks/bench_routes.py` ({meta['command']}); do not edit by hand. "
             "What is timed: the script's docstring. Milliseconds per call (median over repeats), float64. "
             "*loss+grad*: one minibatch loss-and-gradient evaluation of the model; *closed form*, "
             "*automatic*: one `NaturalGradient(0.5).step` in natural coordinates with "
             "`closed_form=True` (the default) and `False`; the ratios are over *loss+grad*.", "",
             "## Machine", ""]
    lines += [f"- **{k}**: {v}" for k, v in meta.items() if k != "command"]
    lines += ["", "| M | batch | storage | in closed form | loss+grad | closed form | automatic "
              "| closed form / loss+grad | automatic / loss+grad | rel. diff. |", "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['M']} | {r['batch']} | {r['storage']} | {r['in closed form']} "
            f"| {r['loss+grad']:.3g} | {r['closed form']:.3g} | {r['automatic']:.3g} "
            f"| {r['closed form'] / r['loss+grad']:.2f} | {r['automatic'] / r['loss+grad']:.2f} "
            f"| {r['rel. diff.']:.1e} |")
    lines += ["", "*in closed form*: what `closed_form=True` writes out; the rest takes the automatic route "
              "in both columns. *whole step*: the storage's own `natural_step` to natural coordinates and back "
              "(or, for natural storage, its `natural_gradient`); *∂L/∂η*: the gradient with respect to the "
              "expectation parameters (`expectation_gradient`), after which the step in natural coordinates is "
              "a subtraction and one conversion back. From `Expectation` storage ∂L/∂η is the stored gradient "
              "itself; the automatic route gets the same through a tape."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description="benchmarks/bench_routes.py: see its docstring")
    p.add_argument("--M", default="50,200,500,1000")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=0.3, help="length of a timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output", default=str(HERE / "ROUTES.md"))
    p.add_argument("--json", default=str(HERE / "routes.json"))
    args = p.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    gpflow.config.set_default_float(np.float64)
    t0 = time.perf_counter()
    rows = []
    for M in (int(x) for x in args.M.split(",")):
        rows += bench(M, args.batch, args.seconds, args.repeats)
    meta = {
        **report_header("bench_routes.py", argv),
        "tensorflow": tf.__version__,
        "gpflow": gpflow.__version__,
        "gpnat_source": git_state(),
        "wall_s": f"{time.perf_counter() - t0:.0f}",
    }
    text = render(rows, meta)
    write_report(text, args.output, args.json, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
