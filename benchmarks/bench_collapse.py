"""The collapse test of gpnat.train's recovery: does it fire on minibatch noise, and does it catch blow-ups?

An iteration "collapses" when its minibatch loss rises above the running
reference (an average of good losses) by more than
``collapse`` × max(|reference|, 1) + ``noise`` × spread, the spread being a
running average of the good losses' distance from the reference
(:class:`gpnat.Recovery`). Before the spread term (``noise=0``) the test fired
on ordinary minibatches of naval and power and on losses near zero.

Each case trains the same model three times, on the same batches:

* ``off``: ``Recovery(collapse=inf)``, no collapse test (non-finite losses are still rolled back);
* ``old``: ``Recovery(noise=0)``, the test without the spread term;
* ``default``: ``Recovery()``.

From the ``off`` run's minibatch losses, replayed through a guard with the
test off, it also reports the largest rise above the reference in spreads:
what minibatch noise looks like, and what a blow-up looks like.

Writes ``benchmarks/COLLAPSE.md`` and ``benchmarks/collapse.json``. Usage::

    python benchmarks/bench_collapse.py [--iterations 3000]

The UCI sets are read from ``GPNAT_DATA_DIR`` or the usual data directories;
without them only the synthetic case runs.
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import gpflow  # noqa: E402
import tensorflow as tf  # noqa: E402
from machine import cpu_model, fmt, git_state  # noqa: E402

import gpnat  # noqa: E402
from gpnat.experiments import common  # noqa: E402
from gpnat.recovery import REASONS, Guard  # noqa: E402

gpflow.config.set_default_float(np.float64)
HERE = Path(__file__).resolve().parent
POLICIES = {
    "off": gpnat.Recovery(collapse=math.inf),
    "old": gpnat.Recovery(noise=0.0),
    "default": gpnat.Recovery(),
}


def _heavy_tailed():
    """y = sin(2x) + 0.05 ε with 1 % of targets shifted by 2: heavy-tailed minibatch losses once σ² is small."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, (1000, 1))
    Y = np.sin(2 * X) + 0.05 * rng.standard_normal(X.shape)
    Y[rng.uniform(size=1000) < 0.01] += 2.0
    return common.Problem("heavy_tailed", 0, X, Y, X[:0], Y[:0], "gaussian")


def cases(iterations):
    """(label, problem, method, M): the conjugate experiment's settings (M=100, batch 256 where minibatch)."""
    out = [("heavy-tailed synthetic, batch 50", _heavy_tailed(), 20, 50)]
    for name, batch in (("naval", 256), ("power", 256), ("yacht", None)):
        if not common.uci_available(name):
            print(f"{name} skipped: UCI files not found", file=sys.stderr)
            continue
        out.append((f"{name}, {'batch 256' if batch else 'full batch'}", common.load_problem(name, 0), 100, batch))
    runs = []
    for label, problem, M, batch in out:
        adam = common.Method("adam", "adam", batch_size=batch)
        schedule = ("loglinear", 1e-4, 0.1, min(500, iterations)) if batch else ("constant", 1.0)
        natgrad = common.Method("natgrad", "natgrad", "natural", schedule, batch_size=batch)
        runs += [(label, problem, M, adam), (label, problem, M, natgrad)]
    return runs


def rises_in_spreads(losses):
    """Each loss's rise above the reference, in spreads, as a guard with the collapse test off sees it."""
    guard = Guard(POLICIES["off"], [])
    out = []
    for loss in losses:
        loss = tf.constant(loss, tf.float64)
        if bool(guard.has_spread.numpy()) and float(guard.spread.numpy()) > 0:
            out.append(float((loss - guard.reference) / guard.spread))
        guard.update(tf.constant(True), loss, tf.constant(False))
    return np.array(out)


def run(problem, M, method, policy, iterations):
    model = common.make_svgp(problem, method, M, seed=0)
    t0 = time.perf_counter()
    history = gpnat.train(model, (problem.X_train, problem.Y_train), iterations=iterations,
                          natgrad=common.make_natgrad(method), batch_size=method.batch_size, progress=False,
                          recovery=POLICIES[policy], seed=0)
    seconds = time.perf_counter() - t0
    reasons = {REASONS[c]: history.failure.count(c) for c in sorted(set(history.failure)) if c}
    return dict(recoveries=history.recoveries, reasons=reasons, first=history.recovered_at()[:5],
                elbo=common.full_elbo(model, problem), seconds=seconds, losses=[-e for e in history.elbo])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()
    common.quiet_tensorflow()
    records = []
    for label, problem, M, method in cases(args.iterations):
        for policy in POLICIES:
            r = run(problem, M, method, policy, args.iterations)
            if policy == "off":
                z = rises_in_spreads(r["losses"])
                r["rise_quantiles"] = [float(q) for q in np.quantile(z, [0.5, 0.99, 0.999, 1.0])]
                r["rises_over_20"] = int((z > 20).sum())
            del r["losses"]
            r.update(case=label, method=method.describe(), policy=policy)
            records.append(r)
            print(f"{label:34s} {method.describe():45s} {policy:8s} recoveries {r['recoveries']:5d} "
                  f"ELBO {r['elbo']:12.2f}  {r['seconds']:6.1f} s", flush=True)
    info = dict(code=git_state(), cpu=cpu_model(), cores=os.cpu_count(), iterations=args.iterations,
                tensorflow=tf.__version__, gpflow=gpflow.__version__)
    (HERE / "collapse.json").write_text(json.dumps(dict(machine=info, runs=records), indent=1))
    write_report(records, info)


def write_report(records, info):
    lines = [
        "# The collapse test against minibatch noise",
        "",
        f"Written by `benchmarks/bench_collapse.py` ({info['code']}) on {info['cpu']} ({info['cores']} cores), "
        f"TensorFlow {info['tensorflow']}, gpflow {info['gpflow']}, float64, {info['iterations']} iterations "
        "per run, seed 0 (the same batches in every run of a case). Models as in the conjugate experiment "
        "(`gpnat.experiments.common.make_svgp`: whitened, q(u) = prior, noise variance 0.1, Adam lr 0.01); "
        "natural gradients step in the natural coordinates q(u) is stored in, γ LogLinear(1e-4 → 0.1, 500 "
        "iterations) on minibatches and 1 on a full batch.",
        "",
        "*off*: `Recovery(collapse=inf)`; *old*: `Recovery(noise=0)`, the test before the spread term; "
        "*default*: `Recovery()`. *rollbacks*: iterations rolled back (the first ones in brackets), by reason. "
        "*final ELBO*: on all training data. *rise in spreads*: each minibatch loss of the *off* run minus "
        "the reference before it, in spreads (median, 99 %, 99.9 %, max), and how many exceed 20 (the default "
        "`noise`).",
        "",
        "| case | method | policy | rollbacks | reasons | final ELBO | s | rise in spreads (50 %, 99 %, 99.9 %, max) "
        "| rises > 20 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        reasons = "; ".join(f"{k}: {v}" for k, v in r["reasons"].items()) or "–"
        more = ", …" if r["recoveries"] > 5 else ""
        first = f" ({', '.join(str(i) for i in r['first'])}{more})" if r["first"] else ""
        rises = ", ".join(fmt(q, ".3g") for q in r["rise_quantiles"]) if "rise_quantiles" in r else ""
        lines.append(f"| {r['case']} | {r['method']} | {r['policy']} | {r['recoveries']}{first} | {reasons} | "
                     f"{r['elbo']:.6g} | {r['seconds']:.1f} | {rises} | {r.get('rises_over_20', '')} |")
    (HERE / "COLLAPSE.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'COLLAPSE.md'}")


if __name__ == "__main__":
    main()
