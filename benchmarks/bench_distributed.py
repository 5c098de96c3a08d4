#!/usr/bin/env python
"""Training throughput against the number of replicas: gpnat.train under tf.distribute on logical CPU devices.

For every R in ``--replicas`` (default 1, 2, 4) a fresh process configures R
logical CPU devices (this must happen before TensorFlow starts, hence one
process per R) and, for every M in ``--M``, trains the same synthetic
regression problem (N = ``--num-data`` points in D = 8 dimensions,
y = Σ_d sin(x_d) + noise with a fixed seed; ``gpnat.SVGP`` with an ARD
SquaredExponential kernel, Gaussian likelihood, Z the first M points, float64;
global batch ``--batch``) with ``gpnat.train``'s defaults (for this Gaussian
likelihood on minibatches: fused, the warm-up schedule, recovery on,
``steps_per_call="auto"``, minibatches drawn in-graph) twice:

``single``
    no strategy: one device (``/cpu:0``), as everyone trains today;
``mirrored``
    ``tf.distribute.MirroredStrategy`` over the R logical devices, the model
    built under ``strategy.scope()``: each replica evaluates the loss and
    gradients on its B / R rows, one all-reduce sums them, both updates run
    on the mirrored variables. With R = 1 this is the strategy's overhead alone.

``--workers 2`` (the default; 0 skips it) also starts that many worker
processes on 127.0.0.1 ports, each with its ``TF_CONFIG``, under
``tf.distribute.MultiWorkerMirroredStrategy`` (one replica per worker, the
all-reduce over gRPC), on the same problem.

Timing, as in ``bench_training.py``: a block is one ``train`` call of 1 + k
iterations on the same model; its first compiled call runs one iteration and
includes tracing (its length is reported as the tracing time), and the block's
time per iteration is (``History.time[-1]`` − ``History.time[0]``) / k. Every
model first runs one untimed block of 1 + 3 iterations (the warm-up; the single
device's sets k so that a block takes about ``--seconds``). Then the two
configurations alternate, the order swapping every repeat, so background load
hits both alike; the number reported is the median over ``--repeats`` blocks.
Both models see the same calls and the same global batches, so at the end
their variables must agree (the report gives the largest relative difference:
a check that the timed code did the same work).

The workers time differently: a worker's block is one ``train`` call of 2k
iterations with ``steps_per_call=k``, so that the timed call has exactly k
iterations on every worker (with ``"auto"`` the workers run the chief's call
sizes, ``gpnat.training.distributed.call_size_agreement``; this benchmark found
the hang that agreement prevents). The first call (k iterations and tracing)
is not timed, the second is, (``History.time[-1]`` −
``History.time[k-1]``) / k; tracing is reported as the first call's time less
k iterations. The workers agree on k by an all-reduce (mean) of their warm-up
estimates.

Logical CPU devices are not extra hardware: all replicas share the machine's
cores and TensorFlow's thread pools. On a machine with few cores this measures
what the strategy costs (slicing the batch, R smaller evaluations instead of
one, the all-reduce, the cross-replica update), not what it could gain.

Writes ``--output`` (Markdown) and ``--json`` (every repeat). A benchmark,
never a timed test. Run ``.venv/bin/python benchmarks/bench_distributed.py --help``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402  (the children import TensorFlow themselves, after their device set-up)
from machine import fmt, git_state, report_header, write_report  # noqa: E402
from problem import D, make_data  # noqa: E402

RESULT = "RESULT "  # a child's last line: RESULT {json}
CONFIGS = ["single", "mirrored"]


# --------------------------------------------------------------------------- problem
def build_model(gpflow, gpnat, X, M):
    kernel = gpflow.kernels.SquaredExponential(lengthscales=np.ones(D))
    return gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(), X[:M].copy(), num_data=X.shape[0])


class Runner:
    """One model trained by blocks of ``gpnat.train`` calls (every call traces its loop once)."""

    def __init__(self, gpflow, gpnat, X, Y, M, batch, strategy=None):
        self.gpnat, self.data, self.batch, self.strategy = gpnat, (X, Y), batch, strategy
        if strategy is None:
            self.model = build_model(gpflow, gpnat, X, M)
        else:
            with strategy.scope():
                self.model = build_model(gpflow, gpnat, X, M)
        self.times, self.trace_s, self.calls, self.traces = [], [], [], []
        self.recoveries = 0
        self.elbo = None

    def block(self, k: int, record: bool = True, fixed_calls: bool = False) -> float:
        """One ``train`` call; its time per iteration, tracing excluded.

        Default: 1 + k iterations with ``steps_per_call="auto"`` (the first call
        runs one iteration and traces). ``fixed_calls``: 2k iterations in two
        calls of k (``steps_per_call=k``), the second one timed: the workers' timed
        calls are then the same k iterations (see the module docstring).
        """
        if fixed_calls:
            h = self.gpnat.train(self.model, self.data, iterations=2 * k, batch_size=self.batch, progress=False,
                                 strategy=self.strategy, steps_per_call=k)
            t = (h.time[-1] - h.time[k - 1]) / k
            trace = h.compile_time - k * t  # the first call ran k iterations besides tracing
        else:
            h = self.gpnat.train(self.model, self.data, iterations=1 + k, batch_size=self.batch, progress=False,
                                 strategy=self.strategy)
            t = (h.time[-1] - h.time[0]) / k
            trace = h.compile_time
        self.recoveries += h.recoveries
        self.elbo = h.elbo[-1]
        if record:
            self.times.append(t)
            self.trace_s.append(trace)
            self.calls.append(h.calls)
            self.traces.append(h.num_traces)
        return t

    def variables(self):
        return [np.asarray(v.numpy()) for v in self.model.trainable_variables]

    def summary(self, k: int) -> dict:
        ts = self.times
        return {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts), "max_ms": 1e3 * max(ts),
                "repeats_ms": [1e3 * t for t in ts], "iterations": k,
                "trace_s": statistics.median(self.trace_s), "calls": self.calls, "traces": self.traces,
                "recoveries": self.recoveries, "final_elbo": self.elbo}


def block_length(t: float, seconds: float) -> int:
    return int(min(300, max(3, round(seconds / max(t, 1e-6)))))


def max_relative_difference(a, b) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        scale = max(float(np.max(np.abs(y))), 1e-300)
        worst = max(worst, float(np.max(np.abs(x - y))) / scale)
    return worst


def versions(tf, gpflow) -> dict:
    return {"tensorflow": tf.__version__, "gpflow": gpflow.__version__}


# ------------------------------------------------------------------- children: R replicas
def replicas_child(R: int, Ms, batch: int, N: int, repeats: int, seconds: float) -> dict:
    """One process: R logical CPU devices; for each M, single device against MirroredStrategy over all R."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    if R > 1:  # before anything initialises the runtime
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * R)
    import gpflow

    import gpnat

    tf.get_logger().setLevel("ERROR")
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(R)])
    X, Y = make_data(N)
    out = {"replicas": R, "devices": devices, "num_replicas_in_sync": strategy.num_replicas_in_sync,
           "loadavg_start": os.getloadavg(), "cells": [], **versions(tf, gpflow)}
    for M in Ms:
        t0 = time.perf_counter()
        runners = {"single": Runner(gpflow, gpnat, X, Y, M, batch),
                   "mirrored": Runner(gpflow, gpnat, X, Y, M, batch, strategy)}
        k = block_length(runners["single"].block(3, record=False), seconds)  # warm-up, sets k
        runners["mirrored"].block(3, record=False)  # warm-up
        for r in range(repeats):
            for name in (CONFIGS if r % 2 == 0 else CONFIGS[::-1]):
                runners[name].block(k)
        cell = {"M": M, "batch": batch, "configs": {n: run.summary(k) for n, run in runners.items()},
                "max_rel_diff": max_relative_difference(runners["mirrored"].variables(),
                                                        runners["single"].variables()),
                "seconds": time.perf_counter() - t0}
        out["cells"].append(cell)
        s, m = (cell["configs"][n]["median_ms"] for n in CONFIGS)
        print(f"  R={R} M={M}: k={k}, single {s:.3g} ms, mirrored {m:.3g} ms per iteration "
              f"(speed-up {s / m:.2f}; variables agree to {cell['max_rel_diff']:.1e}; {cell['seconds']:.0f} s)",
              flush=True)
    out["loadavg_end"] = os.getloadavg()
    return out


# ----------------------------------------------------------------- children: one worker
def worker_child(Ms, batch: int, N: int, repeats: int, seconds: float) -> dict:
    """One worker of MultiWorkerMirroredStrategy (TF_CONFIG set by the parent); every worker runs the same."""
    import tensorflow as tf

    from gpnat.training.distributed import multi_worker_strategy

    strategy = multi_worker_strategy()  # first: it starts the collective runtime
    import gpflow

    import gpnat

    tf.get_logger().setLevel("ERROR")
    X, Y = make_data(N)
    task = strategy.cluster_resolver.task_id
    out = {"task": task, "workers": len(json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"]),
           "num_replicas_in_sync": strategy.num_replicas_in_sync, "loadavg_start": os.getloadavg(),
           "cells": [], **versions(tf, gpflow)}
    for M in Ms:
        t0 = time.perf_counter()
        run = Runner(gpflow, gpnat, X, Y, M, batch, strategy)
        mine = block_length(run.block(3, record=False, fixed_calls=True), seconds)  # warm-up
        print(f"task {task} M={M}: warm-up done, k = {mine} here", file=sys.stderr, flush=True)
        # every worker must run the same iterations: agree on the mean of the estimates (one all-reduce)
        mean = strategy.reduce(tf.distribute.ReduceOp.MEAN,
                               strategy.run(lambda: tf.constant(float(mine), tf.float64)), axis=None)
        k = int(round(float(mean.numpy())))
        print(f"task {task} M={M}: k = {k} agreed", file=sys.stderr, flush=True)
        for _ in range(repeats):
            run.block(k, fixed_calls=True)
        out["cells"].append({"M": M, "batch": batch, "config": run.summary(k), "seconds": time.perf_counter() - t0})
    return out


# ------------------------------------------------------------------------- the parent
def child_env(**extra):
    # CPU only, so that "single device" is a CPU on a machine with a GPU too
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def common_args(args):
    return ["--M", args.M, "--batch", str(args.batch), "--num-data", str(args.num_data),
            "--repeats", str(args.repeats), "--seconds", str(args.seconds)]


def parse_result(text: str):
    lines = [ln[len(RESULT):] for ln in text.splitlines() if ln.startswith(RESULT)]
    return json.loads(lines[-1]) if lines else None


def run_replicas(R: int, args, log) -> dict:
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child-replicas", str(R), *common_args(args)],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=child_env())
        lines = []
        for line in proc.stdout:  # progress lines pass through
            lines.append(line)
            if not line.startswith(RESULT):
                log(line.rstrip())
        try:
            code = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timeout"
        result = parse_result("".join(lines))
        if code != 0 or result is None:
            err.seek(0)
            return {"replicas": R, "error": f"exit {code}: {err.read()[-1500:]}"}
    return result


def run_workers(n: int, args, log) -> dict:
    from gpnat.training.distributed import local_cluster  # (imports TensorFlow; this process runs no op)

    procs = []
    for config in local_cluster(n):
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        procs.append((subprocess.Popen([sys.executable, __file__, "--child-worker", *common_args(args)],
                                       stdout=out, stderr=err, text=True, env=child_env(TF_CONFIG=config)),
                      out, err))
    deadline = time.time() + args.timeout
    results, errors = [], []
    for i, (proc, out, err) in enumerate(procs):
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = "timeout"
        out.seek(0)
        err.seek(0)
        result = parse_result(out.read())
        if code != 0 or result is None:
            errors.append(f"worker {i}: exit {code}: {err.read()[-1500:]}")
        else:
            results.append(result)
        out.close()
        err.close()
    if errors:
        for proc, _, _ in procs:  # a peer left waiting on a dead worker
            if proc.poll() is None:
                proc.kill()
        return {"workers": n, "addresses": "127.0.0.1", "error": "\n".join(errors)}
    for cell in results[0]["cells"]:
        c = cell["config"]
        log(f"  {n} workers M={cell['M']}: k={c['iterations']}, {c['median_ms']:.3g} ms per iteration "
            f"(worker 0; {cell['seconds']:.0f} s)")
    return {"workers": n, "results": results}


# ---------------------------------------------------------------------------- report






def loads(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def render(replica_runs, workers, meta, cores: int) -> str:
    L = ["# Distributed-training benchmark: throughput against the number of replicas", "",
         f"Written by `benchmarks/bench_distributed.py` ({meta['command']}); do not edit by hand. "
         "Benchmarks are never timed tests. What is timed and how: the script's docstring.", "",
         "## Machine", ""]
    L += [f"- **{k}**: {v}" for k, v in meta.items() if k != "command"]
    largest = max([r.get("replicas", 1) for r in replica_runs] + [workers.get("workers", 1) if workers else 1])
    L += ["", "## Read this first", ""]
    if cores <= largest:
        L += [f"This machine has **{cores} CPU cores**. Logical CPU devices are not extra hardware: the R "
              "replicas of `MirroredStrategy` (and the worker processes of `MultiWorkerMirroredStrategy`) "
              f"all run on the same {cores} cores, which one device already keeps busy (TensorFlow spreads "
              "each operation over the cores). More replicas therefore cannot make training faster here: "
              "what these tables measure is what data-parallel training costs, namely the "
              "batch sliced into R shards, R smaller evaluations instead of one, one all-reduce of the loss "
              "and gradients per iteration and the update in cross-replica context on mirrored variables "
              "(for the workers also the gRPC all-reduce between processes). A speed-up below 1 is the "
              "expected result on this machine, not a defect; it says nothing about how real devices "
              "(several GPUs, several hosts) would scale.", ""]
    else:
        L += [f"This machine has {cores} CPU cores. Logical CPU devices are not extra hardware: all replicas "
              "share these cores and TensorFlow's thread pools, so a speed-up here only says that one device "
              "left cores idle; it says nothing about how real devices (several GPUs, several hosts) "
              "would scale.", ""]
    L += ["Another process may have been running on the machine at the same time: see the load average "
          "above (it counts this benchmark's own process too, about 1 to 2 while it runs). The two "
          "configurations of a row alternate block by block, so load hits both alike; rows measured in "
          "different processes (different R, the workers) are less comparable.", ""]
    L += ["## MirroredStrategy over R logical CPU devices, against one device in the same process", "",
          "Milliseconds per iteration (median over repeats, min–max in brackets); iterations per second; "
          "speed-up = single / mirrored time per iteration (above 1: the strategy is faster). Tracing: the "
          "first compiled call of a `train` call (median), not in the time per iteration. Agreement: the "
          "largest relative difference between the two models' variables after the same calls.", "",
          "| R | M | batch | iterations per block | single (ms) | mirrored (ms) | single (it/s) | mirrored (it/s) "
          "| speed-up | tracing single / mirrored (s) | agreement |",
          "|" + "---|" * 11]
    errors, recoveries = [], []
    for run in replica_runs:
        if "error" in run:
            errors.append(f"R = {run['replicas']}: {run['error'][-600:]}")
            L.append(f"| {run['replicas']} | error (below) | | | | | | | | | |")
            continue
        for cell in run["cells"]:
            s, m = cell["configs"]["single"], cell["configs"]["mirrored"]
            for name, c in cell["configs"].items():
                if c["recoveries"]:
                    recoveries.append(f"R = {run['replicas']}, M = {cell['M']}, {name}: {c['recoveries']}")
            L.append(f"| {run['replicas']} | {cell['M']} | {cell['batch']} | {s['iterations']} | "
                     f"{s['median_ms']:.3g} ({s['min_ms']:.3g}–{s['max_ms']:.3g}) | "
                     f"{m['median_ms']:.3g} ({m['min_ms']:.3g}–{m['max_ms']:.3g}) | "
                     f"{1e3 / s['median_ms']:.3g} | {1e3 / m['median_ms']:.3g} | "
                     f"{s['median_ms'] / m['median_ms']:.2f} | {s['trace_s']:.1f} / {m['trace_s']:.1f} | "
                     f"{cell['max_rel_diff']:.1e} |")
    speedups = [(run["replicas"], cell["M"], cell["configs"]["single"]["median_ms"] / cell["configs"]["mirrored"]
                 ["median_ms"]) for run in replica_runs if "cells" in run for cell in run["cells"]]
    if speedups:
        low, high = min(s for _, _, s in speedups), max(s for _, _, s in speedups)
        top = max(R for R, _, _ in speedups)
        L += ["", f"Speed-ups measured: {low:.2f} to {high:.2f}; at R = {top}: "
              + ", ".join(f"{s:.2f} (M = {M})" for R, M, s in speedups if R == top) + ". "
              "Load average (1 min) when each process started: "
              + ", ".join(f"R = {run['replicas']}: {run['loadavg_start'][0]:.2f}"
                          for run in replica_runs if "loadavg_start" in run) + "."]
    if workers:
        n = workers["workers"]
        L += ["", f"## MultiWorkerMirroredStrategy: {n} worker processes on 127.0.0.1", "",
              f"One replica per worker process ({n} in all), the all-reduce over gRPC on the loopback "
              "interface; every process has its own TensorFlow thread pools, all on the same cores. "
              "Relative to one device: the R = 1 process's single-device median at the same M (another "
              "process, measured earlier), single / workers time per iteration. A worker's block is two calls "
              "of k iterations (`steps_per_call=k`), the second timed, so that every worker times the same k "
              "iterations.", "",
              "| workers | M | batch | timed iterations per block | worker 0 (ms) | worker 1 (ms) | it/s (worker 0) "
              "| relative to one device | tracing (s) |", "|" + "---|" * 9]
        single = {cell["M"]: cell["configs"]["single"]["median_ms"]
                  for run in replica_runs if run.get("replicas") == 1 and "cells" in run for cell in run["cells"]}
        if "error" in workers:
            errors.append(f"{n} workers: {workers['error'][-1200:]}")
            L.append(f"| {n} | error (below) | | | | | | | |")
        else:
            by_task = {r["task"]: r for r in workers["results"]}
            for i, cell in enumerate(by_task[0]["cells"]):
                c = cell["config"]
                others = [by_task[t]["cells"][i]["config"]["median_ms"] for t in sorted(by_task) if t]
                base = single.get(cell["M"])
                if c["recoveries"]:
                    recoveries.append(f"{n} workers, M = {cell['M']}: {c['recoveries']}")
                L.append(f"| {n} | {cell['M']} | {cell['batch']} | {c['iterations']} | "
                         f"{c['median_ms']:.3g} ({c['min_ms']:.3g}–{c['max_ms']:.3g}) | "
                         f"{', '.join(f'{o:.3g}' for o in others) or '–'} | {1e3 / c['median_ms']:.3g} | "
                         f"{fmt(None if base is None else base / c['median_ms'], '.2f')} | {c['trace_s']:.1f} |")
    if workers and "results" in workers:
        L += ["", "Load average (1 min) when worker 0 started: "
              f"{workers['results'][0].get('loadavg_start', [float('nan')])[0]:.2f}."]
    L += ["", f"Rolled-back iterations during timing: {'; '.join(recoveries) if recoveries else 'none'}.", ""]
    if errors:
        L += ["## Errors", ""] + [f"```\n{e}\n```" for e in errors] + [""]
    return "\n".join(L) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", default="1,2,4", help="R values, comma-separated (one process each)")
    p.add_argument("--M", default="100,500", help="inducing points, comma-separated")
    p.add_argument("--batch", type=int, default=1024, help="global batch (a multiple of every R and of --workers)")
    p.add_argument("--num-data", type=int, default=20000, help="N of the synthetic problem")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes under MultiWorkerMirroredStrategy on 127.0.0.1 (0: skip)")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per configuration")
    p.add_argument("--seconds", type=float, default=1.0, help="target seconds per block on one device")
    p.add_argument("--timeout", type=float, default=900, help="seconds before a child process is killed")
    p.add_argument("--output", default=str(HERE / "DISTRIBUTED.md"))
    p.add_argument("--json", default=str(HERE / "distributed.json"))
    p.add_argument("--child-replicas", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    Ms = [int(m) for m in args.M.split(",")]
    if args.child_replicas is not None:
        result = replicas_child(args.child_replicas, Ms, args.batch, args.num_data, args.repeats, args.seconds)
        print(RESULT + json.dumps(result), flush=True)
        return 0
    if args.child_worker:
        result = worker_child(Ms, args.batch, args.num_data, args.repeats, args.seconds)
        print(RESULT + json.dumps(result), flush=True)
        return 0
    replicas = [int(r) for r in args.replicas.split(",") if r]
    for n in replicas + ([args.workers] if args.workers else []):
        if n < 1 or args.batch % n:
            p.error(f"the global batch {args.batch} must divide among {n} replicas")
    if args.batch > args.num_data:
        p.error("--num-data must be at least --batch")

    def log(msg):
        print(msg, flush=True)

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    replica_runs = []
    for R in replicas:
        log(f"R = {R}: one process, {R} logical CPU device{'s' if R > 1 else ''}")
        replica_runs.append(run_replicas(R, args, log))
        if "error" in replica_runs[-1]:
            log(f"  error: {replica_runs[-1]['error'][-500:]}")
    workers = None
    if args.workers:
        log(f"{args.workers} worker processes, MultiWorkerMirroredStrategy")
        workers = run_workers(args.workers, args, log)
        if "error" in workers:
            log(f"  error: {workers['error'][-500:]}")
    done = [r for r in replica_runs if "error" not in r] + (workers or {}).get("results", [])
    cores = os.cpu_count() or 1
    meta = {
        **report_header("bench_distributed.py", argv),
        "accelerator": "none used (CUDA_VISIBLE_DEVICES empty in every child process)",
        "tensorflow": done[0]["tensorflow"] if done else "unknown",
        "gpflow": done[0]["gpflow"] if done else "unknown",
        "gpnat_source": git_state(),
        "problem": f"synthetic regression, N = {args.num_data}, D = {D}, seed 0, float64; gpnat.SVGP, ARD "
                   f"SquaredExponential, Gaussian likelihood; global batch {args.batch}; gpnat.train's defaults "
                   "(on minibatches: fused, the warm-up schedule, train's default Adam learning rate)",
        "loadavg": f"{loads(load_start)} at the start, {loads(os.getloadavg())} at the end (1 / 5 / 15 min)",
        "wall_s": f"{time.perf_counter() - t0:.0f}",
    }
    text = render(replica_runs, workers, meta, cores)
    write_report(text, args.output, args.json, {"meta": meta, "replicas": replica_runs, "workers": workers})
    log(f"wrote {Path(args.output).name} and {Path(args.json).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
