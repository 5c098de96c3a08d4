#!/usr/bin/env python
"""γ for a diagonal q(u) (``q_diag=True``) with a Gaussian likelihood on the full data: train's default there.

A mean-field q(u) = Π_m N(m_m, s_m²) is its own exponential family, and its
natural step is not exact even for a Gaussian likelihood: the ELBO couples
the means through A, the precision of the joint optimum over the means (in
whitened coordinates A = I + Kᵤᵤ^{-½} Kᵤf Kfᵤ Kᵤᵤ^{-½} / σ²), while each
diagonal step sees only D = diag(A). One step of γ sets every variance to its
optimum 1/A_mm (at γ = 1) and moves the means by damped Jacobi,
m ← m + γ D⁻¹ (b − A m), which converges if and only if
γ < 2 / λ_max(D⁻¹ A). That bound depends on how strongly the inducing
points correlate: it is 2 for independent ones and can fall to 2/M (λ_max(D⁻¹A)
≤ M). So the full family's default, γ = 1 (exact there), can diverge.

This script trains default-built ``gpnat.SVGP(..., q_diag=True)`` models
(whitened, gpflow's SquaredExponential with ARD lengthscales √D, Gaussian
likelihood of variance 0.1, Z = M training inputs drawn at random) with
``gpnat.train`` on the full data, Adam at train's default rate on the
hyperparameters, and each candidate for the natural step (fused, but γ = 1):

* ``γ = 1``, alternating: train's default before this benchmark (as for the full family);
* constant ``γ = 0.5``, ``0.2`` and ``0.1``;
* ``warm-up T``: ``gpnat.schedules.warm_up(T)``, ``LogLinear(1e-3, 0.1, T)``, for T = 20
  and T = ``WARM_UP_STEPS`` (train's default everywhere else);
* ``Adam-only``: Adam on every variable, q(u) included.

Per run: the final full-data ELBO, the ELBO after a third of the iterations,
and the iterations recovery rolled back. Writes ``benchmarks/DIAGONAL.md``
and ``benchmarks/diagonal.json``::

    GPNAT_DATA_DIR=... python benchmarks/bench_diagonal.py [--iterations 300] [--M 20,50,100]
"""
import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import gpflow  # noqa: E402
import tensorflow as tf  # noqa: E402
from machine import fmt, git_state, report_header, write_report  # noqa: E402

import gpnat  # noqa: E402
from gpnat.experiments import common  # noqa: E402
from gpnat.schedules import WARM_UP_STEPS, warm_up  # noqa: E402

gpflow.config.set_default_float(np.float64)
CANDIDATES = ("γ = 1", "γ = 0.5", "γ = 0.2", "γ = 0.1") + tuple(f"warm-up {t}" for t in sorted({20, WARM_UP_STEPS})) + (
    "Adam-only",)


def settings(candidate: str) -> dict:
    """train's ``natgrad`` for a candidate."""
    if candidate == "Adam-only":
        return dict(natgrad=None)
    if candidate.startswith("warm-up"):
        return dict(natgrad=gpnat.NaturalGradient(warm_up(int(candidate.split()[1]))))
    gamma = float(candidate.split("= ")[1])
    return dict(natgrad=gpnat.NaturalGradient(gamma), fused=gamma != 1.0)


def run(problem, M: int, seed: int, iterations: int, candidate: str) -> dict:
    X, Y = problem.X_train, problem.Y_train
    model = gpnat.SVGP(common.make_kernel(X.shape[1]), gpflow.likelihoods.Gaussian(variance=0.1),
                       common.initial_inducing(X, M, seed), num_data=len(X), q_diag=True)
    third = []

    def callback(it, history):
        if it == iterations // 3:
            third.append(float(model.elbo((X, Y))))

    t0 = time.perf_counter()
    history = gpnat.train(model, (X, Y), iterations=iterations, progress=False, seed=seed,
                          callbacks=[callback], steps_per_call=iterations // 3, **settings(candidate))
    seconds = time.perf_counter() - t0
    return dict(problem=problem.name, N=len(X), M=M, seed=seed, iterations=iterations, candidate=candidate,
                elbo=float(model.elbo((X, Y))), elbo_third=third[0], recoveries=int(history.recoveries),
                mode=history.mode, seconds=seconds)


def render(records, meta):
    lines = [
        "# γ for a diagonal q(u) with a Gaussian likelihood on the full data",
        "",
        f"Written by {meta['command']} ({meta['code']}) on {meta['cpu']} ({meta['cores']}), "
        f"{meta['date']}, TensorFlow {tf.__version__}, gpflow {gpflow.__version__}, float64. "
        "Why and how: the script's docstring. Default-built `SVGP(..., q_diag=True)`, the full data "
        "(training part of split 0), Adam at train's default rate on the hyperparameters, recovery on. "
        "*Δ*: final full-data ELBO minus Adam-only's at equal iterations; *rolled back*: iterations "
        "recovery rolled back; *s per run*: the train call, tracing included.",
        "",
        "## Summary",
        "",
        "| candidate | runs | best of the candidates | ≥ Adam-only | mean Δ vs Adam-only | worst Δ vs Adam-only "
        "| runs rolled back | iterations rolled back | mean s per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cells = {}
    for r in records:
        cells.setdefault((r["problem"], r["M"], r["seed"]), {})[r["candidate"]] = r
    group = list(cells.values())
    for cand in CANDIDATES:
        deltas = [c[cand]["elbo"] - c["Adam-only"]["elbo"] for c in group]
        best = sum(c[cand]["elbo"] >= max(x["elbo"] for x in c.values()) - 1e-6 * abs(c[cand]["elbo"])
                   for c in group)
        lines.append(
            f"| {cand} | {len(group)} | {best} | {sum(d >= 0 for d in deltas)} | "
            f"{fmt(float(np.mean(deltas)), '.4g')} | {fmt(min(deltas), '.4g')} | "
            f"{sum(c[cand]['recoveries'] > 0 for c in group)} | {sum(c[cand]['recoveries'] for c in group)} | "
            f"{float(np.mean([c[cand]['seconds'] for c in group])):.1f} |")
    iterations = records[0]["iterations"]
    lines += [
        "",
        "## Every run",
        "",
        f"Final full-data ELBO after {iterations} iterations (after {iterations // 3} in brackets; "
        "iterations rolled back after the slash).",
        "",
        "| problem | N | M | seed | " + " | ".join(CANDIDATES) + " |",
        "|---|---|---|---|" + "---|" * len(CANDIDATES),
    ]
    for key in sorted(cells):
        c = cells[key]
        lines.append(f"| {key[0]} | {c['Adam-only']['N']} | {key[1]} | {key[2]} | " + " | ".join(
            f"{fmt(c[cand]['elbo'], '.6g')} ({fmt(c[cand]['elbo_third'], '.5g')}) / {c[cand]['recoveries']}"
            for cand in CANDIDATES) + " |")
    lines += ["", f"Wall time: {meta['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", default="toy_regression,yacht,energy,concrete")
    parser.add_argument("--M", default="20,50,100", help="inducing points, comma-separated")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "DIAGONAL.md"))
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "diagonal.json"))
    args = parser.parse_args(argv)
    common.quiet_tensorflow()
    meta = report_header("bench_diagonal.py", argv)
    meta["code"] = git_state()
    t0 = time.perf_counter()
    records = []
    for name in args.problems.split(","):
        if not common.uci_available(name):
            print(f"skipping {name}: not found (set GPNAT_DATA_DIR)", file=sys.stderr)
            continue
        problem = common.load_problem(name, 0, n_synthetic=300)
        for M in (int(v) for v in args.M.split(",")):
            for seed in (int(v) for v in args.seeds.split(",")):
                for cand in CANDIDATES:
                    records.append(run(problem, M, seed, args.iterations, cand))
                    r = records[-1]
                    print(f"{name} M={M} seed={seed} {cand}: {r['elbo']:.6g} ({r['elbo_third']:.6g}; "
                          f"{r['recoveries']} rolled back, {r['seconds']:.1f} s)", file=sys.stderr, flush=True)
    meta["wall_s"] = time.perf_counter() - t0
    write_report(render(records, meta), args.output, args.json, dict(meta=meta, runs=records))


if __name__ == "__main__":
    main()
