#!/usr/bin/env python
"""γ for a kernel that mixes its latent GPs: train's default on a Gaussian likelihood on the full data.

q(u) = Π_l q(u_l) keeps the L latent GPs independent. With independent outputs
and a Gaussian likelihood one natural step of γ = 1 lands on the optimum, but
a kernel such as ``LinearCoregionalization`` (f = W g) couples the latent GPs
in the ELBO: each q(u_l)'s optimum depends on the others' means, and a step
of γ updates every latent GP towards its optimum given the others' current
means at once — damped block Jacobi on the means. Writing A for the precision
of the joint optimum over all means and D for its block diagonal, the step
converges if and only if γ < 2 / λ_max(D⁻¹A), and λ_max(D⁻¹A) ≤ L (A ⪯ L·D:
‖Σ_l A^{½} x_l‖² ≤ L Σ_l ‖A^{½} x_l‖²). So γ = 1 may diverge for L ≥ 3, while
γ ≤ 1/L never does.

This script trains default-built LinearCoregionalization SVGPs (gpflow's
default kernel and likelihood parameters, W drawn at random, whitened, q(u) =
prior) on synthetic data (N points, D = 1, P = L + 1 outputs y = W* g(x) + noise,
where W* mixes the latent functions g_l(x) = sin((l + 1) x) by ``mix``) with
``gpnat.train`` on the full data, Adam at train's default rate on the
hyperparameters, and each candidate for the natural step:

* ``γ = 1``: train's default for a Gaussian likelihood on the full data before this
  benchmark (fused: with a mixing kernel a step is not exact);
* ``γ = 1/L``, fused and alternating;
* ``warm-up to 0.1``: ``LogLinear(1e-3, 0.1, 20)``, train's default everywhere else,
  fused and alternating;
* ``Adam-only``: Adam on every variable, q(u) included.

*Fused* feeds the natural step and Adam from one loss-and-gradient evaluation;
*alternating* takes Adam's gradient again at the updated q(u).

Per run: the final full-data ELBO and the iterations rolled back by
recovery. Writes ``benchmarks/MIXING.md`` and ``benchmarks/mixing.json``::

    python benchmarks/bench_mixing.py [--iterations 300,1000] [--seeds 0,1]
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
from gpnat.schedules import LogLinear  # noqa: E402

gpflow.config.set_default_float(np.float64)
N, M = 500, 20
CANDIDATES = ("γ = 1", "γ = 1/L", "γ = 1/L, alternating", "warm-up to 0.1", "warm-up to 0.1, alternating",
              "Adam-only")


def make_problem(L: int, mix: float, seed: int):
    """(X [N, 1], Y [N, L + 1], W₀ [L + 1, L]): data from mixing strength ``mix``, and a random initial W."""
    rng = np.random.default_rng(seed)
    P = L + 1
    X = rng.uniform(-3.0, 3.0, (N, 1))
    G = np.hstack([np.sin((k + 1) * X) for k in range(L)])
    W = (1.0 - mix) * np.eye(P, L) + mix * rng.uniform(0.5, 1.0, (P, L))
    Y = G @ W.T + 0.1 * rng.standard_normal((N, P))
    return X, Y, rng.standard_normal((P, L))


def build(X, W0, L: int):
    kernel = gpflow.kernels.LinearCoregionalization(
        [gpflow.kernels.SquaredExponential() for _ in range(L)], W=W0.copy())
    Z = gpflow.inducing_variables.SharedIndependentInducingVariables(
        gpflow.inducing_variables.InducingPoints(X[:M].copy()))
    return gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(), Z, num_latent_gps=L, num_data=len(X))


def settings(candidate: str, L: int) -> dict:
    """train's ``natgrad`` and ``fused`` for a candidate."""
    gamma = {"γ = 1": 1.0, "γ = 1/L": 1.0 / L, "warm-up to 0.1": LogLinear(1e-3, 0.1, 20)}
    if candidate == "Adam-only":
        return dict(natgrad=None)
    name, _, mode = candidate.partition(", ")
    return dict(natgrad=gpnat.NaturalGradient(gamma[name]), fused=mode != "alternating")


def run(L, mix, seed, iterations, candidate):
    X, Y, W0 = make_problem(L, mix, seed)
    model = build(X, W0, L)
    t0 = time.perf_counter()
    history = gpnat.train(model, (X, Y), iterations=iterations, progress=False, seed=seed,
                          **settings(candidate, L))
    seconds = time.perf_counter() - t0
    return dict(L=L, mix=mix, seed=seed, iterations=iterations, candidate=candidate,
                elbo=float(model.elbo((X, Y))), recoveries=int(history.recoveries), mode=history.mode,
                seconds=seconds)


def render(records, meta):
    lines = [
        "# γ for a kernel that mixes its latent GPs",
        "",
        f"Written by {meta['command']} ({meta['code']}) on {meta['cpu']} ({meta['cores']}), "
        f"{meta['date']}, TensorFlow {tf.__version__}, gpflow {gpflow.__version__}, float64. "
        "Why and how: the script's docstring. Default-built LinearCoregionalization SVGPs "
        f"(N = {N}, M = {M}, P = L + 1 outputs, W drawn at random), the full data, Adam at train's default "
        "rate on the hyperparameters, recovery on. *Δ*: final full-data ELBO minus Adam-only's at equal "
        "iterations; *rolled back*: iterations recovery rolled back; *s per run*: the train call, "
        "tracing included.",
        "",
        "## Summary",
        "",
        "| iterations | candidate | runs | best of the candidates | ≥ Adam-only | mean Δ vs Adam-only "
        "| worst Δ vs Adam-only | runs rolled back | mean s per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cells = {}
    for r in records:
        cells.setdefault((r["iterations"], r["L"], r["mix"], r["seed"]), {})[r["candidate"]] = r
    for iterations in sorted({k[0] for k in cells}):
        group = [c for k, c in cells.items() if k[0] == iterations]
        for cand in CANDIDATES:
            deltas = [c[cand]["elbo"] - c["Adam-only"]["elbo"] for c in group]
            best = sum(c[cand]["elbo"] >= max(x["elbo"] for x in c.values()) for c in group)
            lines.append(
                f"| {iterations} | {cand} | {len(group)} | {best} | {sum(d >= 0 for d in deltas)} | "
                f"{fmt(float(np.mean(deltas)), '.4g')} | {fmt(min(deltas), '.4g')} | "
                f"{sum(c[cand]['recoveries'] > 0 for c in group)} | "
                f"{float(np.mean([c[cand]['seconds'] for c in group])):.1f} |")
    lines += [
        "",
        "## Every run",
        "",
        "Final full-data ELBO (iterations rolled back).",
        "",
        "| iterations | L | mix | seed | " + " | ".join(CANDIDATES) + " |",
        "|---|---|---|---|" + "---|" * len(CANDIDATES),
    ]
    for key in sorted(cells):
        c = cells[key]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | " + " | ".join(
            f"{fmt(c[cand]['elbo'], '.6g')} ({c[cand]['recoveries']})" for cand in CANDIDATES) + " |")
    lines += ["", f"Wall time: {meta['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--L", default="2,3,4,6", help="latent GPs, comma-separated")
    parser.add_argument("--mix", default="0.5,0.9", help="mixing strengths of the data, comma-separated")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--iterations", default="300,1000")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "MIXING.md"))
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "mixing.json"))
    args = parser.parse_args(argv)
    common.quiet_tensorflow()
    meta = report_header("bench_mixing.py", argv)
    meta["code"] = git_state()
    t0 = time.perf_counter()
    records = []
    for iterations in (int(i) for i in args.iterations.split(",")):
        for L in (int(v) for v in args.L.split(",")):
            for mix in (float(v) for v in args.mix.split(",")):
                for seed in (int(v) for v in args.seeds.split(",")):
                    for cand in CANDIDATES:
                        records.append(run(L, mix, seed, iterations, cand))
                        r = records[-1]
                        print(f"{iterations} L={L} mix={mix} seed={seed} {cand}: {r['elbo']:.6g} "
                              f"({r['recoveries']} rolled back, {r['seconds']:.1f} s)", file=sys.stderr, flush=True)
    meta["wall_s"] = time.perf_counter() - t0
    write_report(render(records, meta), args.output, args.json, dict(meta=meta, runs=records))


if __name__ == "__main__":
    main()
