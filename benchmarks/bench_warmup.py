#!/usr/bin/env python
"""The length of train's default warm-up: does a slower one reach Adam-only's ELBO where the default does not?

``train``'s default natural-gradient step size for anything but a Gaussian
likelihood on the full data is a warm-up ``LogLinear(1e-3, 0.1, T)``: γ
rises log-linearly from 10⁻³ to the paper's 0.1 over T iterations. This
script chose T: with T = 20, the default until then, ``ROBUSTNESS.md``'s
default ended at or above Adam-only training (Adam on every variable, q(u)
included) in 9 of 12 runs at 300 iterations; where it
ended below, refitting q(u) did not close the gap: it lay in the
hyperparameters, whose lengthscales ended shorter than Adam-only's. A warm-up
that keeps q(u) near the prior for longer lets Adam move the hyperparameters
from where Adam-only training starts them.

This script trains the problems of ``bench_robustness.py`` (default-built
models: whitened SVGP, q(u) = prior, gpflow's default kernel and likelihood
parameters), full batch and minibatches of 128, with Adam at train's default
rate on the hyperparameters and each candidate:

* ``Adam-only``;
* ``default``: all of train's defaults (the warm-up ``gpnat.schedules.warm_up()``,
  T = ``WARM_UP_STEPS``, 20 when ``WARMUP.md`` was first written; γ = 1 for a
  Gaussian likelihood on the full data, where the warm-ups below do not apply);
* ``warm-up T``: ``NaturalGradient(LogLinear(1e-3, 0.1, T))`` for T in
  ``WARMUPS``, everything else train's default,

at ``--iterations`` on every problem and at ``--long-iterations`` on the
problems of ``bench_robustness.LONG``. Then, at ``--iterations``, q(u) alone
(``adam_lr=None``, the hyperparameters fixed) with each warm-up length in
``ALONE_WARMUPS``: there Adam moves nothing, so the reason for a slow start is
gone, and the full-data ELBO after ``ALONE_EARLY`` iterations shows how soon
each gets there. Per run: the final full-data ELBO and
the iterations rolled back. Writes ``benchmarks/WARMUP.md`` and
``benchmarks/warmup.json``::

    python benchmarks/bench_warmup.py [--iterations 300] [--long-iterations 3000] [--only banana,poisson]
"""
import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import bench_robustness as robustness  # noqa: E402
from machine import fmt, git_state, report_header, write_report  # noqa: E402

import gpnat  # noqa: E402
from gpnat.experiments import common  # noqa: E402
from gpnat.schedules import WARM_UP_STEPS, LogLinear  # noqa: E402

WARMUPS = tuple(t for t in (20, 50, 100, 200) if t != WARM_UP_STEPS)  # the default is its own column
CANDIDATES = ("Adam-only", "default") + tuple(f"warm-up {t}" for t in WARMUPS)
#: q(u) alone (``adam_lr=None``, hyperparameters fixed at their defaults): warm-up lengths, at --iterations
ALONE_WARMUPS = (5, 20, WARM_UP_STEPS)
ALONE = tuple(f"q(u) alone, warm-up {t}" for t in ALONE_WARMUPS)
ALONE_EARLY = 60  # the full-data ELBO is also read after this many iterations
TIE = 1e-3  # nats: final ELBOs this close count as equally good


def applies(problem: str, batch: str, candidate: str) -> bool:
    """The warm-ups replace the default where it is a warm-up, not γ = 1 (Gaussian, full data)."""
    return not ((candidate.startswith("warm-up") or candidate in ALONE) and problem == "yacht" and batch == "full")


def run(problem, name: str, batch: str, iterations: int, candidate: str) -> dict:
    X, Y = problem[:2]
    model = robustness.build(problem, "mean_cholesky")
    kwargs, early = {}, []
    if candidate == "Adam-only":
        kwargs["natgrad"] = None
    elif candidate.startswith("warm-up"):
        kwargs["natgrad"] = gpnat.NaturalGradient(LogLinear(1e-3, 0.1, int(candidate.split()[1])))
    elif candidate in ALONE:
        def callback(it, history):
            if it == ALONE_EARLY:
                early.append(float(model.elbo((X, Y))))
        kwargs.update(natgrad=gpnat.NaturalGradient(LogLinear(1e-3, 0.1, int(candidate.split()[-1]))),
                      adam_lr=None, callbacks=[callback], steps_per_call=ALONE_EARLY)
    t0 = time.perf_counter()
    try:
        history = gpnat.train(model, (X, Y), iterations=iterations, progress=False,
                              batch_size=None if batch == "full" else robustness.BATCH, **kwargs)
        status = "finished"
    except (gpnat.NaturalGradientError, FloatingPointError) as err:
        history, status = err.history, "raised"
    return dict(problem=name, batch=batch, iterations=iterations, candidate=candidate, status=status,
                elbo=float(model.elbo((X, Y)).numpy()), rolled_back=int(np.count_nonzero(history.failure)),
                seconds=time.perf_counter() - t0, elbo_early=early[0] if early else None)


def report(records, meta) -> str:
    lines = ["# The length of the default warm-up", "",
             f"Written by {meta['command']} ({meta['code']}) on {meta['cpu']} ({meta['cores']}), Python "
             f"{meta['python']}, {meta['date'][:10]}, in {meta['minutes']:.0f} minutes. Default-built models as "
             "in ROBUSTNESS.md, Adam at train's default learning rate on the hyperparameters; *warm-up T*: "
             "`NaturalGradient(LogLinear(1e-3, 0.1, T))`, everything else train's default "
             f"(*default*: T = {WARM_UP_STEPS}, "
             "and γ = 1 for a Gaussian likelihood on the full data, where the warm-ups do not apply: –). "
             "Final full-data ELBO (iterations rolled back); ≥ Adam-only in bold.", ""]
    cells = {}
    for r in records:
        cells[(r["iterations"], r["problem"], r["batch"], r["candidate"])] = r
    runs = sorted({(r["iterations"], r["problem"], r["batch"]) for r in records})
    lines += ["| candidate | " + " | ".join(f"{its} iterations: ≥ Adam-only" for its in
                                           sorted({k[0] for k in runs})) + " |",
              "|---|" + "---|" * len({k[0] for k in runs})]
    alone = [r for r in records if r["candidate"] in ALONE]
    records = [r for r in records if r["candidate"] not in ALONE]
    for cand in CANDIDATES[1:]:
        row = []
        for its in sorted({k[0] for k in runs}):
            pairs = [(cells[(i, p, b, "Adam-only")], cells.get((i, p, b, cand), cells[(i, p, b, "default")]))
                     for i, p, b in runs if i == its]
            row.append(f"{sum(c['elbo'] >= a['elbo'] for a, c in pairs)} of {len(pairs)}")
        lines.append(f"| {cand} | " + " | ".join(row) + " |")
    lines += ["", "Where a warm-up does not apply (–), its count takes the default's run.", "",
              "| iterations | problem | batch | " + " | ".join(CANDIDATES) + " |",
              "|---|---|---|" + "---|" * len(CANDIDATES)]
    for its, problem, batch in runs:
        adam = cells[(its, problem, batch, "Adam-only")]["elbo"]
        row = []
        for cand in CANDIDATES:
            r = cells.get((its, problem, batch, cand))
            if r is None:
                row.append("–")
                continue
            text = f"{fmt(r['elbo'], '.6g')} ({r['rolled_back']})" + (" raised" if r["status"] == "raised" else "")
            row.append(f"**{text}**" if cand != "Adam-only" and r["elbo"] >= adam else text)
        lines.append(f"| {its} | {problem} | {batch} | " + " | ".join(row) + " |")
    return "\n".join(lines + alone_report(alone)) + "\n"


def alone_report(records) -> list:
    """q(u) alone: Markdown lines (the full-data ELBO after ALONE_EARLY iterations and at the end)."""
    if not records:
        return []
    cells = {}
    for r in records:
        cells.setdefault((r["iterations"], r["problem"], r["batch"]), {})[r["candidate"]] = r
    its = records[0]["iterations"]
    lines = ["", "## q(u) alone", "",
             f"`train(..., adam_lr=None)`: natural steps only, the hyperparameters fixed at the default-built "
             f"model's, with the warm-up `LogLinear(1e-3, 0.1, T)`; the full-data ELBO after {ALONE_EARLY} "
             f"iterations and after {its} (iterations rolled back). *best*: how often each T gave the highest "
             f"ELBO of the three (within {TIE} nats counts as a tie, for each).", "",
             "| T | best after " + str(ALONE_EARLY) + " | best at the end | rolled back |", "|---|---|---|---|"]
    for cand in ALONE:
        early = sum(c[cand]["elbo_early"] >= max(x["elbo_early"] for x in c.values()) - TIE for c in cells.values())
        final = sum(c[cand]["elbo"] >= max(x["elbo"] for x in c.values()) - TIE for c in cells.values())
        lines.append(f"| {cand.split()[-1]} | {early} of {len(cells)} | {final} of {len(cells)} | "
                     f"{sum(c[cand]['rolled_back'] for c in cells.values())} |")
    lines += ["", "| problem | batch | " + " | ".join(f"T = {c.split()[-1]}" for c in ALONE) + " |",
              "|---|---|" + "---|" * len(ALONE)]
    for (_, problem, batch), c in sorted(cells.items()):
        lines.append(f"| {problem} | {batch} | " + " | ".join(
            f"{fmt(c[k]['elbo_early'], '.6g')} → {fmt(c[k]['elbo'], '.6g')} ({c[k]['rolled_back']})" for k in ALONE)
            + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--long-iterations", type=int, default=3000, help="on bench_robustness.LONG; 0: none")
    parser.add_argument("--only", default="", help="comma-separated problem names")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "WARMUP.md"))
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "warmup.json"))
    args = parser.parse_args(argv)
    common.quiet_tensorflow()
    meta = report_header("bench_warmup.py", argv)
    meta["code"] = git_state()
    t0 = time.perf_counter()
    problems = robustness.problems()
    names = [n for n in problems if not args.only or n in args.only.split(",")]
    plan = [(args.iterations, n) for n in names]
    if args.long_iterations:
        plan += [(args.long_iterations, n) for n in names if n in robustness.LONG]
    records = []
    for iterations, name in plan:
        for batch in ("full", "minibatch"):
            for cand in CANDIDATES + (ALONE if iterations == args.iterations else ()):
                if applies(name, batch, cand):
                    records.append(run(problems[name], name, batch, iterations, cand))
                    r = records[-1]
                    print(f"{iterations} {name} {batch} {cand}: {r['elbo']:.6g} ({r['rolled_back']} rolled back, "
                          f"{r['seconds']:.1f} s)", file=sys.stderr, flush=True)
    meta["minutes"] = (time.perf_counter() - t0) / 60
    write_report(report(records, meta), args.output, args.json, dict(meta=meta, records=records))


if __name__ == "__main__":
    main()
