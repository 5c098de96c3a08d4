#!/usr/bin/env python
"""What one ``gpnat.train`` call costs besides its iterations: tracing, and its reuse.

A model keeps the loop its last ``train`` call traced (``gpnat.training.cache``),
and a later call with the same configuration reuses it. For each setting this
script builds an SVGP (N = 2000 synthetic points, D = 4, minibatch ``--batch``),
warms the process up on another model, then times whole ``train`` calls of 1 and
of ``--iterations`` iterations (wall clock around the call, checks included):

- *traced*: the loop dropped before each call (``cache.forget``), as every call
  was before the loop was kept, and as a call with a new configuration is;
- *reused*: the same call again.

Medians over ``--repeats`` calls. ``num_traces`` of each call confirms which
kind it was. Writes ``benchmarks/CALLS.md`` and ``benchmarks/calls.json``. A
benchmark, never a test. Run ``.venv/bin/python benchmarks/bench_calls.py``.
"""
import argparse
import json
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

import gpnat  # noqa: E402
from gpnat.training import cache  # noqa: E402

N, D = 2000, 4
SETTINGS = {
    "default, Bernoulli": (gpflow.likelihoods.Bernoulli, {}),
    "Adam only, Bernoulli": (gpflow.likelihoods.Bernoulli, dict(natgrad=None)),
    "default, Gaussian": (gpflow.likelihoods.Gaussian, {}),
}


def data(likelihood):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D))
    f = np.sin(X).sum(1, keepdims=True)
    Y = (f > 0).astype(float) if likelihood is gpflow.likelihoods.Bernoulli else f + 0.1 * rng.normal(size=(N, 1))
    return X, Y


def model(likelihood, X, M):
    return gpnat.SVGP(gpflow.kernels.SquaredExponential(lengthscales=np.ones(D)), likelihood(), X[:M].copy(),
                      num_data=N)


def timed(m, XY, iterations, batch, kwargs, anew):
    if anew:
        cache.forget(m)
    start = time.perf_counter()
    h = gpnat.train(m, XY, iterations=iterations, batch_size=batch, progress=False, **kwargs)
    return time.perf_counter() - start, h.num_traces


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--M", default="20,100,500")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output", default=str(HERE / "CALLS.md"))
    p.add_argument("--json", default=str(HERE / "calls.json"))
    args = p.parse_args(argv)
    Ms = [int(m) for m in args.M.split(",")]
    rows = []
    for name, (likelihood, kwargs) in SETTINGS.items():
        XY = data(likelihood)
        timed(model(likelihood, XY[0], Ms[0]), XY, 2, args.batch, kwargs, anew=True)  # the process's first trace
        for M in Ms:
            m = model(likelihood, XY[0], M)
            row = {"setting": name, "M": M}
            for iterations in (1, args.iterations):
                for anew in (True, False):
                    timed(m, XY, iterations, args.batch, kwargs, anew)  # the reused loop exists after this
                    runs = [timed(m, XY, iterations, args.batch, kwargs, anew) for _ in range(args.repeats)]
                    key = f"{'traced' if anew else 'reused'}_{iterations}"
                    row[key + "_s"] = statistics.median(t for t, _ in runs)
                    row[key + "_traces"] = sorted({n for _, n in runs})
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {**report_header("bench_calls.py", argv), "gpnat_source": git_state(), "tensorflow": tf.__version__,
            "gpflow": gpflow.__version__, "float": gpflow.default_float().__name__}
    k = args.iterations
    L = ["# What a train call costs besides its iterations", "",
         f"Written by `benchmarks/bench_calls.py` ({meta['command']}); do not edit by hand. "
         "What is timed and how: the script's docstring.", ""]
    L += [f"- **{key}**: {value}" for key, value in meta.items() if key != "command"]
    L += ["", f"SVGP, N = {N}, D = {D}, minibatch {args.batch}; seconds per whole `train` call (median of "
          f"{args.repeats}); *traced*: the loop traced anew at each call, *reused*: the model's loop from the "
          "call before. *traces*: `history.num_traces` of those calls.", "",
          f"| setting | M | 1 iteration: traced | reused | {k} iterations: traced | reused | saved per call "
          "| traces (traced / reused) |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['setting']} | {r['M']} | {r['traced_1_s']:.3f} | {r['reused_1_s']:.3f} "
                 f"| {r[f'traced_{k}_s']:.3f} | {r[f'reused_{k}_s']:.3f} "
                 f"| {r[f'traced_{k}_s'] - r[f'reused_{k}_s']:.2f} s "
                 f"| {r[f'traced_{k}_traces']} / {r[f'reused_{k}_traces']} |")
    text = "\n".join(L) + "\n"
    write_report(text, args.output, args.json, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
