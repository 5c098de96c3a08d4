#!/usr/bin/env python
"""Time a training iteration of gpnat against bare gpflow loops, over M, batch size and dtype.

For every cell (M inducing points, batch size B, float64 or float32) of the
matrix, on the same synthetic regression problem (N = ``--num-data`` points in
D = 8 dimensions, y = Σ_d sin(x_d) + noise with a fixed seed; SVGP with an ARD
SquaredExponential kernel, Gaussian likelihood, whitened; Z the first M
points), it times:

``gpflow-adam``
    ``gpflow.models.SVGP`` with ``tf_keras`` Adam(0.01) on every variable, one
    ``tf.function`` per iteration that draws the batch in-graph (``tf.gather``
    of random indices); the host reads the loss back every iteration.
``gpflow-hybrid``
    the same loop with ``gpflow.optimizers.NaturalGradient(0.1)`` on
    ``[(q_mu, q_sqrt)]`` (its default ``XiNat``) then Adam on the rest, in the
    same ``tf.function``: gpflow's recipe.
``gpnat-adam``
    ``gpnat.train(natgrad=None, adam_lr=0.01)``: Adam on every variable, q(u) included.
``gpnat-fused``
    ``gpnat.train(natgrad=NaturalGradient(0.1), fused=True, adam_lr=0.01)``.
``gpnat-default``
    ``gpnat.train`` with all its defaults (fused mode, on minibatches the
    warm-up schedule, Adam at 0.03, recovery): the default hybrid. The
    learning rate does not change the cost of an iteration.
``gpnat-adam-xla``, ``gpnat-fused-xla`` (only with ``--configs``)
    ``gpnat-adam`` and ``gpnat-fused`` with ``jit_compile=True``: each
    iteration compiled by XLA. The report then adds their ratios to the same
    runs without XLA, and the first call's time (tracing and compiling).
    TensorFlow never frees XLA's compilations, so with these each cell runs
    in a fresh process (one process ran out of memory maps after 11 cells).

Every gpnat row runs with all of ``train``'s defaults (recovery on,
``steps_per_call="auto"``, in-graph minibatches).

Timing: the configurations are interleaved round-robin, the order rotating
each repeat, so background load hits all alike; the number reported is the
median over repeats of a block's time per iteration. gpflow loops are traced
and warmed once. A gpnat block is one ``train`` call of 1 + k iterations
(its first compiled call runs the first iteration and includes tracing) and
its time per iteration is (History.time[-1] − History.time[0]) / k.
Blocks last ``--seconds`` (default 1.5): with 0.5 s, cells at M ≥ 500 held
3 to 5 iterations per block, and their ratios moved by up to 40 % between
runs on the same machine (gpnat-fused / gpflow-adam at M = 500, B = 256,
float64: 1.64 with 0.5 s blocks of 5 iterations, 1.19 with 1.5 s blocks of 28).

Peak memory: TensorFlow's allocator statistics on the device
(``tf.config.experimental.get_memory_info``) where it keeps them (GPUs), else
the process's resident memory (VmRSS, and VmHWM reset through
``/proc/self/clear_refs``; TensorFlow keeps no statistics for its CPU
allocator). The peak is reset before the last block of each configuration;
reported is the peak above the memory in use before that block (the data and
models are allocated, tracing is done).

``--memory-scaling 1e5,1e6,1e7`` trains ``gpnat-fused`` (M = 100, B = 1000,
float64) on N synthetic points, each N in a fresh process, and reports the
peak during training above the memory in use before it. ``train`` holds one
copy of the data (see ``gpnat.training.batches.as_tensor``); beyond that copy
the peak should not grow with N. ``--M ""`` runs only this.

Writes ``--output`` (Markdown) and ``--json``. A benchmark, never a timed test.
Run ``.venv/bin/python benchmarks/bench_training.py --help``.
"""
import argparse
import json
import os
import statistics
import subprocess
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
from gpflow.keras import tf_keras  # noqa: E402
from machine import fmt, git_state, report_header, write_report  # noqa: E402
from problem import D, make_data  # noqa: E402

import gpnat  # noqa: E402
from gpnat.training import cache  # noqa: E402

GAMMA = 0.1
ADAM_LR = 0.01
CONFIGS = ["gpflow-adam", "gpflow-hybrid", "gpnat-adam", "gpnat-fused", "gpnat-default"]
#: run only when --configs names them: gpnat-adam and gpnat-fused with jit_compile=True
XLA_CONFIGS = ["gpnat-adam-xla", "gpnat-fused-xla"]
#: (numerator, denominator, target): the targets of the speed issue, at M <= 1000 and B >= 256
TARGETS = [
    ("gpnat-adam", "gpflow-adam", 1.0),
    ("gpnat-fused", "gpflow-hybrid", 0.8),
    ("gpnat-fused", "gpflow-adam", 1.1),
    ("gpnat-default", "gpflow-adam", 1.25),
]
JITTER = {"float64": 1e-6, "float32": 1e-4}


# --------------------------------------------------------------------------- problem
def set_precision(dtype: str):
    gpflow.config.set_default_float(np.float64 if dtype == "float64" else np.float32)
    gpflow.config.set_default_jitter(JITTER[dtype])


def kernel():
    return gpflow.kernels.SquaredExponential(lengthscales=np.ones(D))


def device_name() -> str:
    return "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"


#: what memory_source's answers measure, in the reports' words
MEMORY_SOURCES = {"allocator": "TensorFlow's allocator on the device",
                  "resident": "the process's resident memory (TensorFlow keeps no allocator statistics on a "
                              "CPU; pages that allocators keep or return make tens of MiB of noise)"}


def memory_source() -> str | None:
    """What the peaks measure: TensorFlow's allocator on the device where it keeps statistics (GPUs),
    else the process's resident memory (Linux; TensorFlow keeps no statistics for its CPU allocator)."""
    try:
        tf.config.experimental.get_memory_info(device_name())
        return "allocator"
    except (ValueError, RuntimeError):
        return "resident" if _resident() is not None else None


def memory_reset():
    """Start a new peak: the allocator's, or the resident peak (VmHWM) through /proc/self/clear_refs."""
    try:
        tf.config.experimental.reset_memory_stats(device_name())
    except (ValueError, RuntimeError):
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def memory_info():
    """{"current", "peak"} in bytes from `memory_source`, or None where neither can be read."""
    try:
        return tf.config.experimental.get_memory_info(device_name())
    except (ValueError, RuntimeError):
        return _resident()


def _resident():
    """This process's resident memory now and its peak since the last reset (VmRSS, VmHWM), in bytes."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
                      if line.startswith(("VmRSS:", "VmHWM:")))
        return {"current": 1024 * int(fields["VmRSS"].split()[0]), "peak": 1024 * int(fields["VmHWM"].split()[0])}
    except (OSError, KeyError, ValueError):
        return None


# -------------------------------------------------------------------------- runners
class GpflowLoop:
    """A bare gpflow loop: one tf.function per iteration, batch drawn in-graph, loss read back."""

    def __init__(self, name, X, Y, Z, B):
        self.name = name
        f = gpflow.default_float()
        self.X, self.Y = tf.constant(X, f), tf.constant(Y, f)
        N = X.shape[0]
        self.model = gpflow.models.SVGP(kernel(), gpflow.likelihoods.Gaussian(), Z.copy(), num_data=N)
        adam = tf_keras.optimizers.Adam(ADAM_LR)
        model = self.model
        if name == "gpflow-hybrid":
            gpflow.set_trainable(model.q_mu, False)
            gpflow.set_trainable(model.q_sqrt, False)
            natgrad = gpflow.optimizers.NaturalGradient(gamma=GAMMA)
        full = B >= N

        @tf.function
        def step(i):
            if full:
                batch = (self.X, self.Y)
            else:
                idx = tf.random.stateless_uniform([B], seed=tf.stack([i, i]), maxval=N, dtype=tf.int64)
                batch = (tf.gather(self.X, idx), tf.gather(self.Y, idx))
            loss_fn = lambda: model.training_loss(batch)  # noqa: E731
            if name == "gpflow-hybrid":  # the Adam half below evaluates at the updated q(u)
                natgrad.minimize(loss_fn, [(model.q_mu, model.q_sqrt)])
            with tf.GradientTape() as tape:
                loss = loss_fn()
            grads = tape.gradient(loss, model.trainable_variables)
            adam.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        self.step = step
        self.i = 0
        self.recoveries = 0

    def block(self, k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            self.i += 1
            float(self.step(tf.constant(self.i, tf.int64)))
        return (time.perf_counter() - t0) / k

    def warm(self):
        self.block(2)


class GpnatTrain:
    """gpnat.train, one call per block (the first iteration of each call includes tracing)."""

    def __init__(self, name, X, Y, Z, B):
        self.name = name
        self.data = (X, Y)
        self.B = None if B >= X.shape[0] else B
        self.model = gpnat.SVGP(kernel(), gpflow.likelihoods.Gaussian(), Z.copy(), num_data=X.shape[0])
        self.recoveries = 0
        self.calls = []
        self.traces = []
        self.first_calls = []  # seconds of each block's first call: one iteration, tracing and compiling

    def kwargs(self):
        xla = dict(jit_compile=True) if self.name.endswith("-xla") else {}
        if self.name.startswith("gpnat-adam"):
            return dict(natgrad=None, adam_lr=ADAM_LR, **xla)
        if self.name.startswith("gpnat-fused"):
            return dict(natgrad=gpnat.NaturalGradient(GAMMA), fused=True, adam_lr=ADAM_LR, **xla)
        return {}  # gpnat-default

    def block(self, k: int) -> float:
        cache.forget(self.model)  # each block's first call traces, as the report says (no reused loop)
        h = gpnat.train(self.model, self.data, iterations=1 + k, batch_size=self.B, progress=False,
                        **self.kwargs())
        self.recoveries += h.recoveries
        self.calls.append(h.calls)
        self.first_calls.append(h.compile_time)
        self.traces.append(h.num_traces)
        return (h.time[-1] - h.time[0]) / k

    def warm(self):
        pass


def runner(name, X, Y, Z, B):
    return (GpflowLoop if name.startswith("gpflow") else GpnatTrain)(name, X, Y, Z, B)


# ---------------------------------------------------------------------------- cells
def bench_cell(M, B, dtype, X, Y, configs, repeats, seconds, log):
    set_precision(dtype)
    Xc, Yc = X.astype(dtype), Y.astype(dtype)
    Z = Xc[:M]
    cell = {"M": M, "batch": B, "dtype": dtype, "configs": {}}
    runners = {}
    for name in configs:
        try:
            runners[name] = runner(name, Xc, Yc, Z, B)
            runners[name].warm()
        except Exception as e:  # report, do not hide
            cell["configs"][name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            log(f"  {name}: {cell['configs'][name]['error']}")
    # iterations per block from the slowest gpflow loop's warm-up speed
    probe = runners.get("gpflow-hybrid") or next(iter(runners.values()))
    t_probe = probe.block(2) if isinstance(probe, GpflowLoop) else probe.block(3)
    k = int(min(300, max(3, round(seconds / max(t_probe, 1e-6)))))
    times = {name: [] for name in runners}
    peaks = {}
    names = list(runners)
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            last = r == repeats - 1  # peaks of the last round: tracing and first-time allocations are past
            if last:
                memory_reset()
            before = memory_info() if last else None
            try:
                times[name].append(runners[name].block(k))
            except Exception as e:
                cell["configs"][name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                log(f"  {name}: {cell['configs'][name]['error']}")
                runners.pop(name)
                names.remove(name)
                continue
            after = memory_info() if last else None
            if before is not None and after is not None:
                peaks[name] = (after["peak"] - before["current"]) / 2 ** 20
    for name, ts in times.items():
        if name in runners and ts:
            entry = {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts),
                     "max_ms": 1e3 * max(ts), "repeats_ms": [1e3 * t for t in ts], "iterations": k,
                     "peak_mb": peaks.get(name), "recoveries": runners[name].recoveries}
            if isinstance(runners[name], GpnatTrain):
                entry["calls"] = runners[name].calls
                entry["traces"] = runners[name].traces
                entry["first_call_s"] = statistics.median(runners[name].first_calls)
            cell["configs"][name] = entry
    line = ", ".join(f"{n} {c['median_ms']:.3g}" for n, c in cell["configs"].items() if "median_ms" in c)
    log(f"M={M} B={B} {dtype}: k={k}: {line} (ms)")
    return cell


def ratio(cell, a, b):
    ca, cb = cell["configs"].get(a, {}), cell["configs"].get(b, {})
    if "median_ms" not in ca or "median_ms" not in cb:
        return None
    return ca["median_ms"] / cb["median_ms"]


def paired_ratios(cell, a, b):
    """a / b within each repeat (their blocks ran back to back in one round), or [] if a repeat is missing."""
    ra = cell["configs"].get(a, {}).get("repeats_ms") or []
    rb = cell["configs"].get(b, {}).get("repeats_ms") or []
    return [x / y for x, y in zip(ra, rb)] if ra and len(ra) == len(rb) else []


# ---------------------------------------------------------------------- memory in N
def memory_child(N: int, iterations: int) -> dict:
    set_precision("float64")
    X, Y = make_data(N)
    data_mb = (X.nbytes + Y.nbytes) / 2 ** 20
    model = gpnat.SVGP(kernel(), gpflow.likelihoods.Gaussian(), X[:100].copy(), num_data=N)
    memory_reset()
    before = memory_info()
    t0 = time.perf_counter()
    h = gpnat.train(model, (X, Y), iterations=iterations, batch_size=1000, fused=True,
                    natgrad=gpnat.NaturalGradient(GAMMA), progress=False)
    wall = time.perf_counter() - t0
    after = memory_info()
    result = {"N": N, "data_mb": data_mb, "iterations": iterations,
              "ms_per_iteration": 1e3 * (h.time[-1] - h.time[0]) / (iterations - 1),
              "wall_s": wall}
    if before is not None and after is not None:
        result["memory_source"] = memory_source()
        result["before_mb"] = before["current"] / 2 ** 20
        result["peak_mb"] = after["peak"] / 2 ** 20
        result["peak_above_before_mb"] = (after["peak"] - before["current"]) / 2 ** 20
    return result


def cell_child(M, B, dtype, args, log) -> dict:
    """bench_cell in a fresh process (same arguments), for runs that compile with XLA."""
    command = [sys.executable, __file__, "--cell-child", f"{M},{B},{dtype}", "--configs", args.configs,
               "--num-data", str(args.num_data), "--repeats", str(args.repeats), "--seconds", str(args.seconds)]
    out = subprocess.run(command, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        log(f"M={M} B={B} {dtype}: the cell's process failed: {out.stderr[-300:]}")
        return {"M": M, "batch": B, "dtype": dtype, "configs": {}, "error": out.stderr[-500:]}
    log(next((ln for ln in out.stderr.splitlines() if ln.startswith(f"M={M} B={B}")), f"M={M} B={B} {dtype}"))
    return json.loads(lines[-1])


def memory_scaling(sizes, iterations, log):
    rows = []
    for N in sizes:
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(N), "--iterations", str(iterations)],
                             capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode or not lines:
            rows.append({"N": N, "error": out.stderr[-500:]})
        else:
            rows.append(json.loads(lines[-1]))
        log(f"memory N={N}: {rows[-1]}")
    return rows


# ---------------------------------------------------------------------------- report


def accelerator():
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "none (CPU)"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"{details.get('device_name', 'GPU')} ({len(gpus)} visible)"






def xla_section(cells, ran):
    """With XLA configurations run: each against the same run without XLA, and the first calls."""
    pairs = [(x, x[: -len("-xla")]) for x in XLA_CONFIGS if x in ran and x[: -len("-xla")] in ran]
    if not pairs:
        return []
    L = ["## XLA (`jit_compile=True`)", "",
         "Per-iteration time with XLA over the same training without it (same cell, same rounds; in "
         "brackets the per-repeat range), and the median time of a `train` call's first call (one "
         "iteration: tracing, and with XLA compiling), in seconds.", "",
         "| dtype | M | batch | " + " | ".join(f"{x} / {b}" for x, b in pairs) + " | "
         + " | ".join(f"first call s: {b} → {x}" for x, b in pairs) + " |",
         "|" + "---|" * (2 * len(pairs) + 3)]
    faster = {x: [0, 0] for x, _ in pairs}
    for c in (c for c in cells if not c.get("skipped")):
        row = [c["dtype"], str(c["M"]), str(c["batch"])]
        for x, b in pairs:
            r, per_repeat = ratio(c, x, b), paired_ratios(c, x, b)
            if r is not None:
                faster[x][0] += r < 1
                faster[x][1] += 1
            spread = f" ({min(per_repeat):.2f}–{max(per_repeat):.2f})" if per_repeat else ""
            row.append(fmt(r, ".2f") + spread)
        for x, b in pairs:
            first = [c["configs"].get(n, {}).get("first_call_s") for n in (b, x)]
            row.append(" → ".join(fmt(f, ".2f") for f in first))
        L.append("| " + " | ".join(row) + " |")
    L += ["", "XLA faster: " + "; ".join(f"{x} in {n} of {m} cells" for x, (n, m) in faster.items()) + ".", ""]
    return L


def render_cells(cells, meta):
    """The timing matrix: times, ratios against the targets, XLA, peaks per block."""
    L = ["## Milliseconds per iteration (median over repeats)", ""]
    ran = [n for n in CONFIGS + XLA_CONFIGS if any(n in c["configs"] for c in cells)] or CONFIGS
    header = "| dtype | M | batch | " + " | ".join(ran) + " | iterations per block |"
    L += [header, "|" + "---|" * (len(ran) + 4)]
    for c in cells:
        row = [c["dtype"], str(c["M"]), str(c["batch"])]
        for name in ran:
            e = c["configs"].get(name)
            if c.get("skipped"):
                row.append("skipped")
            else:
                row.append("not run" if e is None else ("error" if "error" in e else fmt(e["median_ms"])))
        k = next((e.get("iterations") for e in c["configs"].values() if "iterations" in e), None)
        L.append("| " + " | ".join(row + [str(k)]) + " |")
    L += ["", "## Ratios against the targets", "",
          "Targets hold at every M ≤ 1000 with batch ≥ 256; cells with M > 1000 are reported, not judged. "
          "Each cell: the ratio of the medians above, judged against the target, and in brackets the "
          "lowest and highest of the per-repeat ratios (the two blocks of one repeat ran in the same "
          "round): how much the ratio moves from round to round on this machine.", ""]
    L += ["| dtype | M | batch | " + " | ".join(f"{a} / {b} (≤ {t})" for a, b, t in TARGETS) + " |",
          "|" + "---|" * (len(TARGETS) + 3)]
    met = {t: [0, 0, 0] for t in range(len(TARGETS))}  # met, judged, missed but met in some repeat
    for c in cells:
        if c.get("skipped"):
            continue
        row = [c["dtype"], str(c["M"]), str(c["batch"])]
        for i, (a, b, t) in enumerate(TARGETS):
            r, per_repeat = ratio(c, a, b), paired_ratios(c, a, b)
            judged = c["M"] <= 1000 and c["batch"] >= 256 and r is not None
            if judged:
                met[i][1] += 1
                met[i][0] += r <= t
                met[i][2] += r > t and bool(per_repeat) and min(per_repeat) <= t
            spread = f" ({min(per_repeat):.2f}–{max(per_repeat):.2f})" if per_repeat else ""
            row.append(fmt(r, ".2f") + ("" if not judged else (" ✓" if r <= t else " ✗")) + spread)
        L.append("| " + " | ".join(row) + " |")
    L += ["", "Met: " + "; ".join(f"{a} / {b} ≤ {t} in {met[i][0]} of {met[i][1]} cells "
                                  f"(of the others, {met[i][2]} met it in at least one repeat)"
                                  for i, (a, b, t) in enumerate(TARGETS)) + ".", ""]
    L += xla_section(cells, ran)
    L += ["## Peak memory during a block (MiB above what was in use before it)", "",
          f"Of {MEMORY_SOURCES.get(meta.get('memory'), 'memory (not measurable here)')}; the last block "
          "of each configuration.", "",
          "| dtype | M | batch | " + " | ".join(ran) + " |", "|" + "---|" * (len(ran) + 3)]
    for c in (c for c in cells if not c.get("skipped")):
        row = [c["dtype"], str(c["M"]), str(c["batch"])]
        row += [fmt(c["configs"].get(n, {}).get("peak_mb"), ".1f") for n in ran]
        L.append("| " + " | ".join(row) + " |")
    rec = [(c["dtype"], c["M"], c["batch"], n, e["recoveries"]) for c in cells for n, e in c["configs"].items()
           if e.get("recoveries")]
    traces = {t for c in cells for e in c["configs"].values() for t in e.get("traces", [])}
    L += ["", f"Rolled-back iterations during timing: {rec if rec else 'none'}. "
          f"Traces per gpnat.train call: {sorted(traces)} (1 = no retracing).", ""]
    return L


def render(cells, scaling, meta):
    title = "Training-iteration benchmark: gpnat against bare gpflow loops" if cells else "Training memory against N"
    L = [f"# {title}", "",
         f"Written by `benchmarks/bench_training.py` ({meta['command']}); do not edit by hand. "
         "Benchmarks are never timed tests. What is timed and how: the script's docstring.", "",
         "## Machine", ""]
    L += [f"- **{k}**: {v}" for k, v in meta.items() if k != "command"]
    L.append("")
    if cells:
        L += render_cells(cells, meta)
    if scaling:
        source = next((s["memory_source"] for s in scaling if s.get("memory_source")), None)
        L += ["## Memory against N (gpnat fused, M = 100, batch 1000, float64, one process per N)", "",
              f"MiB of {MEMORY_SOURCES.get(source, 'memory (not measurable here)')}. *before*: in use after the "
              "data and the model were made; *peak*: the highest during `train`, above *before*; *beyond the "
              "data*: the peak less one copy of the data, which `train` holds while it runs.", "",
              "| N | data | before | peak | beyond the data | ms per iteration |", "|---|---|---|---|---|---|"]
        for s in scaling:
            if "error" in s:
                L.append(f"| {s['N']} | error: {s['error'][-200:]!r} | | | | |")
            else:
                above = s.get("peak_above_before_mb")
                beyond = None if above is None else above - s["data_mb"]
                L.append(f"| {s['N']:.0e} | {s['data_mb']:.1f} | {fmt(s.get('before_mb'), '.0f')} | "
                         f"{fmt(above, '.0f')} | {fmt(beyond, '.0f')} | {s['ms_per_iteration']:.3g} |")
        L.append("")
    return "\n".join(L) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--M", default="20,50,100,200,500,1000,2000", help="inducing points, comma-separated")
    p.add_argument("--batch", default="256,1000,10000", help="batch sizes, comma-separated")
    p.add_argument("--dtype", default="float64,float32", help="float64 and/or float32")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help="subset of " + ", ".join(CONFIGS + XLA_CONFIGS) + " (default: all but the XLA ones)")
    p.add_argument("--num-data", type=int, default=20000, help="N of the timing problem (>= every batch)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.5, help="target seconds per block (sets iterations)")
    p.add_argument("--max-work", type=float, default=0,
                   help="skip cells with M^2 * batch above this (0: none), to keep a CPU run short")
    p.add_argument("--memory-scaling", default="", help="N values, e.g. 1e5,1e6,1e7 (one process each)")
    p.add_argument("--iterations", type=int, default=200, help="iterations of each memory-scaling run")
    p.add_argument("--output", default=str(HERE / "RESULTS.md"))
    p.add_argument("--json", default=str(HERE / "results.json"))
    p.add_argument("--memory-child", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--cell-child", default=None, help=argparse.SUPPRESS)  # "M,B,dtype": one cell, as JSON
    args = p.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    if args.memory_child is not None:
        print(json.dumps(memory_child(int(args.memory_child), args.iterations)), flush=True)
        return 0
    configs = args.configs.split(",")
    if not set(configs) <= set(CONFIGS + XLA_CONFIGS):
        p.error(f"unknown configurations {sorted(set(configs) - set(CONFIGS + XLA_CONFIGS))}")
    if args.cell_child is not None:
        M, B, dtype = args.cell_child.split(",")
        X, Y = make_data(args.num_data)
        cell = bench_cell(int(M), int(B), dtype, X, Y, configs, args.repeats, args.seconds,
                          lambda msg: print(msg, file=sys.stderr, flush=True))
        print(json.dumps(cell), flush=True)
        return 0
    Ms = [int(m) for m in args.M.split(",") if m]
    batches = [int(b) for b in args.batch.split(",")]
    if max(batches) > args.num_data:
        p.error("--num-data must be at least the largest batch")

    def log(msg):
        print(msg, flush=True)

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    X, Y = make_data(args.num_data) if Ms else (None, None)
    cells = []
    for dtype in args.dtype.split(","):
        for B in batches:
            for M in Ms:
                if args.max_work and M * M * B > args.max_work:
                    cells.append({"M": M, "batch": B, "dtype": dtype, "configs": {}, "skipped": True})
                    log(f"M={M} B={B} {dtype}: skipped (M^2 B > --max-work {args.max_work:g})")
                    continue
                if set(configs) & set(XLA_CONFIGS):  # a fresh process per cell: XLA's compilations stay
                    cells.append(cell_child(M, B, dtype, args, log))
                else:
                    cells.append(bench_cell(M, B, dtype, X, Y, configs, args.repeats, args.seconds, log))
    scaling = memory_scaling([int(float(n)) for n in args.memory_scaling.split(",") if n], args.iterations, log)
    meta = {
        **report_header("bench_training.py", argv),
        "accelerator": accelerator(),
        "memory": memory_source(),
        "tensorflow": tf.__version__,
        "gpflow": gpflow.__version__,
        "gpnat_source": git_state(),
        "problem": "; ".join(
            ([f"timing: synthetic regression, N = {args.num_data}, D = {D}, seed 0; gamma {GAMMA}, "
              f"Adam lr {ADAM_LR} (gpnat-default: all of train's defaults)"] if Ms else [])
            + ([f"memory against N: synthetic regression, N in its table, D = {D}, seed 0; gamma {GAMMA}, "
                "Adam at train's default learning rate"] if scaling else [])),
        "loadavg": f"{' / '.join(f'{v:.2f}' for v in load_start)} at the start, "
                   f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())} at the end (1 / 5 / 15 min)",
        "wall_s": f"{time.perf_counter() - t0:.0f}",
    }
    text = render(cells, scaling, meta)
    write_report(text, args.output, args.json, {"meta": meta, "cells": cells, "memory_scaling": scaling})
    log(f"wrote {Path(args.output).name} and {Path(args.json).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
