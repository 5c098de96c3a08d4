#!/usr/bin/env python
"""Time one training iteration of gpnat and of gpflow's own loops on kin8nm.

One run times, for each number of inducing points M (``--sizes``), on the same
model (SVGP, ARD SquaredExponential kernel, Gaussian likelihood, whitened,
float64, kin8nm 8192 x 8 standardised, batch size 1000, Z a fixed random subset
of X):

1. ``gpnat-adam``         gpnat.train, natgrad=None (Adam on everything, q(u) included)
2. ``gpnat-alternating``  gpnat.train, NaturalGradient(gamma=0.1), default alternating mode
3. ``gpnat-fused``        gpnat.train, NaturalGradient(gamma=0.1), fused=True
4. ``gpflow-hybrid``      gpflow.models.SVGP, gpflow NaturalGradient(0.1) on (q_mu, q_sqrt)
                          then tf_keras Adam(0.01) on the rest, both in ONE tf.function,
                          minibatch from a shuffled repeated tf.data iterator
5. ``gpflow-adam``        gpflow.models.SVGP, tf_keras Adam(0.01) on every variable

extra rows:

* ``gpnat-alternating-ad``, ``gpnat-fused-ad``: rows 2 and 3 with
  NaturalGradient(gamma=0.1, closed_form=False), the automatic reverse-mode route
  (only with a gpnat whose NaturalGradient has the closed_form option)
* ``gpnat-alternating-nat``, ``gpnat-fused-nat``: rows 2 and 3 with q(u) stored in
  gpnat.Natural coordinates (the algorithm of gpflow's default XiNat)

and, as reference units and to attribute the cost (not training loops):

* ``loss+grad``           one compiled float64 loss-and-gradient evaluation of the
                          gpnat model (all trainable variables) at a fixed batch of 1000
* ``gpnat-natstep``       NaturalGradient.apply_gradients alone, MeanCholesky (compiled,
                          fixed gradients, gamma 1e-9 so q(u) stays put)
* ``gpnat-natstep-ad``    the same with closed_form=False (automatic route)
* ``gpnat-natstep-nat``   the same with q(u) in Natural coordinates
* ``gpflow-natstep``      gpflow's NaturalGradient._natgrad_apply_gradients alone, XiNat
                          (as in row 4), same q(u) and gradients
* ``gpflow-natstep-sqrt`` the same with XiSqrtMeanVar (the MeanCholesky coordinates)

The MeanCholesky hybrids are first trained, untimed, with the warm-up schedule
LogLinear(1e-3, 0.1, 20) (a constant gamma = 0.1 from q(u) = N(0, I) diverges on
this problem; see GpnatTrain).

Timing: every configuration is warmed up first; then ``repeats`` blocks of
``iters`` iterations are timed, interleaving the configurations round-robin
(the order rotates every repeat) so that background load hits all alike; the
reported number is the median over repeats of the per-iteration time of a block.
For gpnat.train (which traces a fresh tf.function per call) each repeat is ONE
call ``train(iterations=warmup + iters)`` and the time is the difference of
``History.time`` between iterations ``warmup`` and ``warmup + iters``, so the
tracing iterations are excluded.

Run ``.venv/bin/python benchmarks/bench_training.py --help``. This is a
benchmark, never a timed test.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import gpflow  # noqa: E402
from gpflow.keras import tf_keras  # noqa: E402

import gpnat  # noqa: E402
from gpnat import datasets  # noqa: E402

GAMMA = 0.1
ADAM_LR = 0.01
BATCH = 1000
TRAIN_CONFIGS = ["gpnat-adam", "gpnat-alternating", "gpnat-fused", "gpflow-hybrid", "gpflow-adam",
                 "gpnat-fused-check",
                 "gpnat-alternating-ad", "gpnat-fused-ad", "gpnat-alternating-nat", "gpnat-fused-nat"]
REF_CONFIGS = ["loss+grad", "gpnat-natstep", "gpnat-natstep-ad", "gpnat-natstep-nat",
               "gpflow-natstep", "gpflow-natstep-sqrt"]


def _has_closed_form_option() -> bool:
    """Does this gpnat's NaturalGradient take closed_form= (closed-form natural gradients)?"""
    import inspect
    return "closed_form" in inspect.signature(gpnat.NaturalGradient.__init__).parameters


def make_natgrad(gamma, autodiff=False):
    """NaturalGradient(gamma); autodiff=True forces the automatic (reverse-mode) route."""
    if autodiff:
        if not _has_closed_form_option():
            raise RuntimeError("this gpnat has no NaturalGradient(closed_form=...) option")
        return gpnat.NaturalGradient(gamma=gamma, closed_form=False)
    return gpnat.NaturalGradient(gamma=gamma)
# untimed natural-gradient warm-up of the MeanCholesky hybrids (see GpnatTrain)
PRETRAIN_ITERATIONS = 20


# --------------------------------------------------------------------------- setup
def load_data():
    X, Y = datasets.load_uci("kin8nm")
    X, Y, _, _, _ = datasets.standardise(X, Y)
    return np.asarray(X, np.float64), np.asarray(Y, np.float64)


def inducing_inputs(X, M, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.choice(X.shape[0], size=M, replace=False)
    return X[np.sort(idx)].copy()


def make_kernel(D):
    return gpflow.kernels.SquaredExponential(lengthscales=np.ones(D))


def make_likelihood():
    return gpflow.likelihoods.Gaussian(variance=1.0)


def gpnat_model(X, Z, parametrisation=None):
    return gpnat.SVGP(make_kernel(X.shape[1]), make_likelihood(), Z.copy(), num_data=X.shape[0],
                      parametrisation=parametrisation or gpnat.MeanCholesky())


def gpflow_model(X, Z):
    return gpflow.models.SVGP(make_kernel(X.shape[1]), make_likelihood(), Z.copy(),
                              num_data=X.shape[0])


# ---------------------------------------------------------------------- runners
class GpnatTrain:
    """One repeat = one gpnat.train call of warmup + iters iterations on a persistent model.

    Hybrids whose steps are in mean/Cholesky coordinates (``coordinates=None``)
    overshoot at a constant gamma = 0.1 from q(u) = N(0, I) on this problem, so
    such models are first trained, untimed, with the warm-up schedule
    LogLinear(1e-3, 0.1, 20) for PRETRAIN_ITERATIONS iterations; the default
    (natural coordinates) needs no warm-up. The cost of an iteration does not
    depend on the values (dense linear algebra), only on rejected proposals and
    rolled-back iterations, which are counted.
    """

    def __init__(self, name, X, Y, Z):
        self.name = name
        self.data = (X, Y)
        natural = name.endswith("-nat")
        autodiff = name.endswith("-ad")
        self.model = gpnat_model(X, Z, gpnat.Natural() if natural else gpnat.MeanCholesky())
        base = name[:-4] if natural else name[:-3] if autodiff else name
        if base == "gpnat-adam":
            self.kwargs = dict(natgrad=None)
        elif base == "gpnat-alternating":
            self.kwargs = dict(natgrad=make_natgrad(GAMMA, autodiff))
        elif base == "gpnat-fused":
            self.kwargs = dict(natgrad=make_natgrad(GAMMA, autodiff), fused=True)
        elif base == "gpnat-fused-check":  # fused, plus the loss at the proposal (one more evaluation)
            self.kwargs = dict(natgrad=make_natgrad(GAMMA, autodiff), fused=True,
                               recovery=gpnat.Recovery(check_proposal=True))
        else:
            raise ValueError(name)
        self.autodiff = autodiff
        # steps in (m, L) coordinates cannot start at gamma = 0.1 from the prior (they
        # overshoot); steps in natural coordinates, the default, can
        coordinates = getattr(self.kwargs.get("natgrad"), "coordinates", "natural")
        self.pretrain = base != "gpnat-adam" and not natural and coordinates is None
        self.traces = []
        self.rejections = 0
        self.recoveries = 0
        self.last_elbo = float("nan")
        self.call_seconds = []

    def warm(self, warmup):
        if self.pretrain:
            warm_natgrad = gpnat.NaturalGradient(gamma=gpnat.schedules.LogLinear(1e-3, 0.1, 20))
            h = gpnat.train(self.model, self.data, iterations=PRETRAIN_ITERATIONS,
                            natgrad=warm_natgrad, adam_lr=ADAM_LR, batch_size=BATCH,
                            fused=self.kwargs.get("fused", False), progress=False, seed=12345)
            self.rejections += h.total_rejections
        # a first, separate call: first-use costs (check_shapes, Adam slots, ...)
        self.block(warmup, 1)
        self.traces.clear()

    def block(self, warmup, iters):
        t0 = time.perf_counter()
        h = gpnat.train(self.model, self.data, iterations=warmup + iters, adam_lr=ADAM_LR,
                        batch_size=BATCH, compile=True, progress=False, seed=len(self.traces),
                        **self.kwargs)
        self.call_seconds.append(time.perf_counter() - t0)
        self.traces.append(h.num_traces)
        self.rejections += h.total_rejections
        self.recoveries += h.recoveries
        self.last_elbo = h.elbo[-1]
        return (h.time[warmup + iters - 1] - h.time[warmup - 1]) / iters


class StepLoop:
    """A compiled step traced once; one repeat = iters calls of it."""

    def __init__(self, name, step, args_fn):
        self.name = name
        self.step = step
        self.args_fn = args_fn
        self.last = float("nan")

    def _run(self, n):
        out = None
        for _ in range(n):
            out = self.step(*self.args_fn())
            if out is not None:
                self.last = float(out)  # fetch, like a training loop that logs the loss

    def warm(self, warmup):
        self._run(warmup)

    def block(self, warmup, iters):
        t0 = time.perf_counter()
        self._run(iters)
        return (time.perf_counter() - t0) / iters

    @property
    def traces(self):
        return [self.step.experimental_get_tracing_count()]


def gpflow_runner(name, X, Y, Z):
    m = gpflow_model(X, Z)
    N = X.shape[0]
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).repeat().shuffle(N, seed=0).batch(BATCH)
    it = iter(ds)
    adam = tf_keras.optimizers.Adam(ADAM_LR)
    if name == "gpflow-hybrid":
        gpflow.set_trainable(m.q_mu, False)
        gpflow.set_trainable(m.q_sqrt, False)
        natgrad = gpflow.optimizers.NaturalGradient(gamma=GAMMA)

        @tf.function
        def step(batch):
            loss = m.training_loss_closure(batch, compile=False)
            natgrad.minimize(loss, [(m.q_mu, m.q_sqrt)])
            adam.minimize(loss, m.trainable_variables)
    elif name == "gpflow-adam":
        @tf.function
        def step(batch):
            loss = m.training_loss_closure(batch, compile=False)
            adam.minimize(loss, m.trainable_variables)
    else:
        raise ValueError(name)
    runner = StepLoop(name, step, lambda: (next(it),))
    runner.model = m
    return runner


def loss_grad_runner(X, Y, Z):
    model = gpnat_model(X, Z)
    variables = list(model.trainable_variables)
    batch = (tf.constant(X[:BATCH]), tf.constant(Y[:BATCH]))

    @tf.function
    def step(bx, by):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = model.training_loss((bx, by))
        grads = tape.gradient(loss, variables)
        return loss + 0.0 * tf.add_n([tf.reduce_sum(g) for g in grads])

    return StepLoop("loss+grad", step, lambda: batch), model


def natstep_runners(X, Y, Z):
    """Natural-gradient steps alone (no loss evaluation), gpnat and gpflow, same q(u), same gradients.

    Compiled steps with fixed gradients and a tiny gamma (1e-9): the work is that of
    a real step while q(u) stays put, so every call does the same thing.
    """
    model = gpnat_model(X, Z, gpnat.Natural())
    batch = (tf.constant(X[:BATCH]), tf.constant(Y[:BATCH]))
    warm_opt = gpnat.NaturalGradient(gamma=GAMMA)  # a realistic q(u): a few natural steps
    for _ in range(5):
        warm_opt.minimize(lambda: model.training_loss(batch), model.q)
    q_mu, q_sqrt = (np.array(t) for t in model.q.mean_cholesky())
    tiny = 1e-9
    runners = {}

    gpnat_steps = [("gpnat-natstep", gpnat.MeanCholesky(), False),
                   ("gpnat-natstep-nat", gpnat.Natural(), False)]
    if _has_closed_form_option():
        gpnat_steps.append(("gpnat-natstep-ad", gpnat.MeanCholesky(), True))
    for name, par, autodiff in gpnat_steps:
        q = gpnat.VariationalGaussian(Z.shape[0], 1, parametrisation=par, q_mu=q_mu, q_sqrt=q_sqrt)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(q.xi)
            loss = model_loss_at(model, batch, *q.mean_cholesky())
        grads = [tf.identity(g) for g in tape.gradient(loss, q.xi)]
        opt = make_natgrad(tiny, autodiff)

        def make(q=q, opt=opt):
            @tf.function
            def gpnat_step(g1, g2):
                return tf.cast(opt.apply_gradients(q, [g1, g2]), tf.float64)
            return gpnat_step
        runners[name] = StepLoop(name, make(), lambda grads=grads: grads)

    from gpflow.optimizers.natgrad import XiNat, XiSqrtMeanVar
    for name, xi in [("gpflow-natstep", XiNat()), ("gpflow-natstep-sqrt", XiSqrtMeanVar())]:
        gq_mu = gpflow.Parameter(q_mu)
        gq_sqrt = gpflow.Parameter(q_sqrt, transform=gpflow.utilities.triangular())
        gopt = gpflow.optimizers.NaturalGradient(gamma=tiny, xi_transform=xi)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([gq_mu.unconstrained_variable, gq_sqrt.unconstrained_variable])
            gloss = model_loss_at(model, batch, gq_mu, gq_sqrt)
        ggrads = [tf.identity(g) for g in tape.gradient(
            gloss, [gq_mu.unconstrained_variable, gq_sqrt.unconstrained_variable])]

        def make(gopt=gopt, gq_mu=gq_mu, gq_sqrt=gq_sqrt):
            @tf.function
            def gpflow_step(g1, g2):
                gopt._natgrad_apply_gradients(g1, g2, gq_mu, gq_sqrt)
            return gpflow_step
        runners[name] = StepLoop(name, make(), lambda ggrads=ggrads: ggrads)
    return runners


def model_loss_at(model, batch, q_mu, q_sqrt):
    """The gpnat model's loss with q(u) replaced by (q_mu, q_sqrt) (for gpflow's gradients)."""
    from gpflow import kullback_leiblers
    X, Y = batch
    q_mu, q_sqrt = tf.convert_to_tensor(q_mu), tf.convert_to_tensor(q_sqrt)
    kl = kullback_leiblers.prior_kl(model.inducing_variable, model.kernel, q_mu, q_sqrt,
                                    whiten=True)
    f_mean, f_var = model._conditional(X, q_mu, q_sqrt, full_cov=False, full_output_cov=False)
    var_exp = model.likelihood.variational_expectations(X, f_mean, f_var, Y)
    scale = tf.cast(model.num_data, kl.dtype) / tf.cast(tf.shape(X)[0], kl.dtype)
    return -(tf.reduce_sum(var_exp) * scale - kl)


# ----------------------------------------------------------------------- driver
PLAN_OVERRIDE = {}  # "iters" / "repeats" set from the command line


def plan_for(M, quick):
    """(warmup, iters per block, repeats) for the training loops at this M."""
    warmup, iters, repeats = _default_plan(M, quick)
    return warmup, PLAN_OVERRIDE.get("iters", iters), PLAN_OVERRIDE.get("repeats", repeats)


def _default_plan(M, quick):
    if quick:
        return 2, 3, 2
    if M <= 200:
        return 3, 25, 5
    if M <= 600:
        return 3, 6, 7
    return 2, 3, 4


def bench_size(M, X, Y, quick, log, selected=None, extra=None, with_refs=True):
    """Time every configuration at this M. ``extra``: {name: factory(name, X, Y, Z) -> runner}."""
    warmup, iters, repeats = plan_for(M, quick)
    Z = inducing_inputs(X, M)
    log(f"\n=== M = {M}: warmup {warmup}, {iters} iterations per block, {repeats} repeats")
    runners = {}
    errors = {}
    t_setup = time.perf_counter()
    for name in TRAIN_CONFIGS:
        if selected and name not in selected:
            continue
        try:
            runners[name] = GpnatTrain(name, X, Y, Z) if name.startswith("gpnat") \
                else gpflow_runner(name, X, Y, Z)
        except Exception as e:  # report, keep going
            errors[name] = f"{type(e).__name__}: {e}"
            log(traceback.format_exc())
    for name, factory in (extra or {}).items():
        try:
            runners[name] = factory(name, X, Y, Z)
        except Exception as e:
            errors[name] = f"{type(e).__name__}: {e}"
            log(traceback.format_exc())
    ref = {}
    if with_refs and not (selected and not selected & set(REF_CONFIGS)):
        try:
            ref["loss+grad"], _ = loss_grad_runner(X, Y, Z)
            ref.update(natstep_runners(X, Y, Z))
            ref = {k: v for k, v in ref.items() if not selected or k in selected}
        except Exception as e:
            errors["reference"] = f"{type(e).__name__}: {e}"
            log(traceback.format_exc())
    all_runners = {**runners, **ref}
    # warm up everything (traces the persistent steps once)
    for name, r in list(all_runners.items()):
        t0 = time.perf_counter()
        try:
            r.warm(warmup)
        except Exception as e:
            errors[name] = f"{type(e).__name__}: {e}"
            log(traceback.format_exc())
            del all_runners[name]
            continue
        log(f"  warm-up {name:18s} {time.perf_counter() - t0:7.2f} s")
    log(f"  setup + warm-up: {time.perf_counter() - t_setup:.1f} s")

    samples = {name: [] for name in all_runners}
    names = list(all_runners)
    ref_iters = max(iters, 5)
    for rep in range(repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            if name not in all_runners:
                continue
            r = all_runners[name]
            n = ref_iters if name in REF_CONFIGS else iters
            try:
                samples[name].append(r.block(warmup, n))
            except Exception as e:
                errors[name] = f"{type(e).__name__}: {e}"
                log(traceback.format_exc())
                del all_runners[name]
        log(f"  repeat {rep + 1}/{repeats}: " + ", ".join(
            f"{n}={samples[n][-1] * 1e3:.1f}" for n in names if samples.get(n)
            and len(samples[n]) == rep + 1) + " ms")

    result = {"M": M, "warmup": warmup, "iters": iters, "ref_iters": ref_iters,
              "repeats": repeats, "errors": errors, "configs": {}}
    for name, s in samples.items():
        if not s:
            continue
        r = all_runners.get(name) or runners.get(name) or ref.get(name)
        entry = {"median_ms": 1e3 * statistics.median(s), "min_ms": 1e3 * min(s),
                 "max_ms": 1e3 * max(s), "samples_ms": [1e3 * v for v in s]}
        if r is not None:
            entry["num_traces"] = r.traces
            if isinstance(r, GpnatTrain):
                entry["rejections"] = r.rejections
                entry["recoveries"] = r.recoveries
                entry["last_elbo"] = r.last_elbo
                entry["train_call_s"] = r.call_seconds
            elif getattr(r, "model", None) is not None:
                entry["last_elbo"] = float(r.model.elbo((X[:BATCH], Y[:BATCH])))
        result["configs"][name] = entry
    return result


# ----------------------------------------------------------------------- report
def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state():
    """Commit of the checkout and whether gpnat/ had uncommitted changes (read-only git calls)."""
    import subprocess
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gpnat"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"git {head or 'unknown'}" + (", gpnat/ has uncommitted changes" if dirty else
                                             ", gpnat/ clean")
    except Exception as e:  # no git
        return f"unknown ({type(e).__name__})"


def ratio(res, a, b):
    ca, cb = res["configs"].get(a), res["configs"].get(b)
    if not ca or not cb:
        return None
    return ca["median_ms"] / cb["median_ms"]


TARGETS = [  # (numerator, denominator, target, description)
    ("gpnat-fused", "gpnat-adam", 1.15, "fused hybrid / gpnat Adam-only"),
    ("gpnat-fused", "gpflow-hybrid", 0.75, "fused hybrid / gpflow hybrid"),
    ("gpnat-alternating", "gpflow-hybrid", 0.90, "alternating hybrid / gpflow hybrid"),
]
EXTRA_RATIOS = [
    ("gpnat-alternating", "gpnat-adam", "alternating hybrid / gpnat Adam-only"),
    ("gpnat-fused-check", "gpnat-adam", "fused hybrid with the loss check at the proposal / gpnat Adam-only"),
    ("gpnat-adam", "gpflow-adam", "gpnat Adam-only / gpflow Adam-only"),
    ("gpflow-hybrid", "gpflow-adam", "gpflow hybrid / gpflow Adam-only"),
    ("gpnat-adam", "loss+grad", "gpnat Adam-only / loss+grad"),
    ("gpnat-fused", "loss+grad", "fused hybrid / loss+grad"),
    ("gpnat-alternating", "loss+grad", "alternating hybrid / loss+grad"),
    ("gpflow-hybrid", "loss+grad", "gpflow hybrid / loss+grad"),
    ("gpnat-fused-ad", "gpnat-adam", "fused hybrid (autodiff) / gpnat Adam-only"),
    ("gpnat-fused-ad", "gpflow-hybrid", "fused hybrid (autodiff) / gpflow hybrid"),
    ("gpnat-alternating-ad", "gpflow-hybrid", "alternating hybrid (autodiff) / gpflow hybrid"),
    ("gpnat-fused-nat", "gpflow-hybrid", "fused hybrid (Natural) / gpflow hybrid"),
    ("gpnat-alternating-nat", "gpflow-hybrid", "alternating hybrid (Natural) / gpflow hybrid"),
    ("gpnat-fused-nat", "gpnat-adam", "fused hybrid (Natural) / gpnat Adam-only"),
    ("gpnat-natstep", "gpflow-natstep", "gpnat step (MeanCholesky) / gpflow step (XiNat)"),
    ("gpnat-natstep-ad", "gpflow-natstep", "gpnat step (MeanCholesky, autodiff) / gpflow step (XiNat)"),
    ("gpnat-natstep", "gpnat-natstep-ad", "gpnat step: closed form / autodiff (MeanCholesky)"),
    ("gpnat-natstep", "gpflow-natstep-sqrt",
     "gpnat step (MeanCholesky) / gpflow step (XiSqrtMeanVar)"),
    ("gpnat-natstep-nat", "gpflow-natstep", "gpnat step (Natural) / gpflow step (XiNat)"),
]


def render(results, meta, target_M=500):
    L = []
    L.append("# Training-iteration benchmark: gpnat vs gpflow (kin8nm)")
    L.append("")
    L.append(f"Written by `benchmarks/bench_training.py` ({meta['command']}); "
             "do not edit by hand. Benchmarks are never timed tests.")
    L.append("")
    L.append("## Machine")
    L.append("")
    for k in ["date", "cpu", "cores", "python", "tensorflow", "gpflow", "gpnat", "gpnat_source",
              "tf_threads",
              "loadavg_start", "loadavg_end", "wall_s"]:
        L.append(f"- **{k}**: {meta[k]}")
    L.append("")
    L.append("## Setup")
    L.append("")
    L.append("SVGP, SquaredExponential ARD kernel (lengthscales 1), Gaussian likelihood "
             "(variance 1), whitened, float64; kin8nm (8192 x 8, standardised), batch 1000; "
             "Z a fixed random subset of X (seed 0); gamma = 0.1, Adam lr = 0.01; "
             "gpnat q(u) in MeanCholesky, `NaturalGradient` with its defaults, steps in natural "
             "coordinates (rows 2, 3; alternating mode checks the loss at the proposal for free, "
             "row 3b adds that check to fused mode at one more loss evaluation; the "
             "`closed_form=False` rows force the automatic reverse-mode route, the `Natural` rows "
             "store q(u) in natural coordinates, the algorithm of gpflow's default XiNat); "
             "gpflow natgrad with its default XiNat.")
    L.append("")
    L.append("Every hybrid starts at q(u) = N(0, I) with a constant gamma = 0.1: steps in "
             "natural coordinates (the default) need no warm-up here. (Steps in mean/Cholesky "
             "coordinates, `coordinates=None`, overshoot from that start; a configuration "
             f"using them would first be trained, untimed, for {PRETRAIN_ITERATIONS} iterations "
             "with `LogLinear(1e-3, 0.1, 20)`.) An iteration's cost does not depend on the "
             "values (dense linear algebra) except through rejected proposals and rolled-back "
             "iterations, which are counted below.")
    L.append("Per-iteration time = median over repeats of (block time / iterations); "
             "configurations interleaved round-robin. gpnat rows: one `gpnat.train` call per "
             "repeat, `History.time` differences after the warm-up iterations (tracing "
             "excluded). gpflow rows: one `tf.function` traced once, minibatch from "
             "`iter(Dataset.from_tensor_slices((X, Y)).repeat().shuffle(N).batch(1000))` "
             "passed as its argument.")
    L.append("")
    sizes = [r["M"] for r in results]
    L.append("## Milliseconds per iteration (median; [min - max] over repeats)")
    L.append("")
    L.append("| configuration | " + " | ".join(f"M = {M}" for M in sizes) + " |")
    L.append("|---|" + "---|" * len(sizes))
    labels = {
        "gpnat-adam": "1. gpnat Adam-only",
        "gpnat-alternating": "2. gpnat alternating hybrid",
        "gpnat-fused": "3. gpnat fused hybrid",
        "gpnat-fused-check": "3b. gpnat fused hybrid, loss check at the proposal",
        "gpflow-hybrid": "4. gpflow natgrad + Adam",
        "gpflow-adam": "5. gpflow Adam-only",
        "loss+grad": "ref: gpnat loss+grad (compiled, B=1000)",
        "gpnat-alternating-ad": "extra: gpnat alternating hybrid, closed_form=False (autodiff)",
        "gpnat-fused-ad": "extra: gpnat fused hybrid, closed_form=False (autodiff)",
        "gpnat-alternating-nat": "extra: gpnat alternating hybrid, Natural param.",
        "gpnat-fused-nat": "extra: gpnat fused hybrid, Natural param.",
        "gpnat-natstep": "ref: gpnat natural step alone (MeanCholesky)",
        "gpnat-natstep-ad": "ref: gpnat natural step alone (MeanCholesky, closed_form=False)",
        "gpnat-natstep-nat": "ref: gpnat natural step alone (Natural)",
        "gpflow-natstep": "ref: gpflow natural step alone (XiNat, as row 4)",
        "gpflow-natstep-sqrt": "ref: gpflow natural step alone (XiSqrtMeanVar)",
    }
    for name in TRAIN_CONFIGS + REF_CONFIGS:
        cells = []
        for r in results:
            c = r["configs"].get(name)
            if c is None:
                cells.append("failed" if name in r["errors"] or "reference" in r["errors"]
                             else "not run")
            else:
                cells.append(f"{c['median_ms']:.1f} [{c['min_ms']:.1f} - {c['max_ms']:.1f}]")
        L.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Blocks: " + "; ".join(
        f"M = {r['M']}: {r['repeats']} repeats x {r['iters']} iterations "
        f"(reference rows {r['ref_iters']}), warm-up {r['warmup']}" for r in results) + ".")
    L.append("")
    L.append("## Ratios (of medians)")
    L.append("")
    L.append("| ratio | " + " | ".join(f"M = {M}" for M in sizes) + " |")
    L.append("|---|" + "---|" * len(sizes))
    for a, b, *rest in TARGETS + EXTRA_RATIOS:
        desc = rest[-1]
        cells = []
        for r in results:
            v = ratio(r, a, b)
            cells.append("n/a" if v is None else f"{v:.2f}")
        L.append(f"| {desc} | " + " | ".join(cells) + " |")
    L.append("")
    L.append(f"## Targets (at M = {target_M})")
    L.append("")
    at = [r for r in results if r["M"] == target_M]
    if not at:
        L.append(f"M = {target_M} was not run, so the targets were not checked.")
    else:
        for a, b, target, desc in TARGETS:
            v = ratio(at[0], a, b)
            if v is None:
                L.append(f"- {desc}: not measured (a configuration failed).")
            else:
                verdict = "MET" if v <= target else "NOT MET"
                L.append(f"- {desc} = **{v:.2f}** (target <= {target:.2f}): **{verdict}**")
    L.append("")
    L.append("## Checks")
    L.append("")
    for r in results:
        for name in TRAIN_CONFIGS + REF_CONFIGS:
            c = r["configs"].get(name)
            if c is None:
                continue
            bits = [f"traces {c.get('num_traces')}"]
            if "rejections" in c and name != "gpnat-adam":
                bits.append(f"natgrad rejections {c['rejections']}")
            if "recoveries" in c:
                bits.append(f"rolled-back iterations {c['recoveries']}")
            if "last_elbo" in c:
                bits.append(f"last minibatch ELBO {c['last_elbo']:.1f}")
            L.append(f"- M = {r['M']}, {name}: " + ", ".join(bits))
        for name, err in r["errors"].items():
            L.append(f"- M = {r['M']}, **{name} FAILED**: `{err}`")
    L.append("")
    L.append("`traces` is `num_traces` of each `gpnat.train` call (1 = no retracing), or the "
             "tracing count of the persistent `tf.function` for the other rows (2 for the gpflow "
             "loops: tf_keras Adam creates its slot variables on the first call, so "
             "its `tf.function` is traced twice, both times during warm-up).")
    L.append("")
    return "\n".join(L)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=str, default=None,
                   help="comma-separated numbers of inducing points (default 100,500,1000; "
                        "--quick: 50)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small M, few iterations; prints, writes no file unless --output")
    p.add_argument("--output", type=str, default=None,
                   help="Markdown report (default benchmarks/RESULTS.md; none with --quick)")
    p.add_argument("--json", type=str, default=None,
                   help="raw results as JSON (default benchmarks/results.json; none with --quick)")
    p.add_argument("--configs", type=str, default=None,
                   help="comma-separated subset of: " + ", ".join(TRAIN_CONFIGS + REF_CONFIGS))
    p.add_argument("--render", type=str, default=None, metavar="JSON",
                   help="only re-render the report from a results JSON written by an earlier run "
                        "(to --output, default benchmarks/RESULTS.md); times nothing")
    p.add_argument("--repeats", type=int, default=None, help="override the repeats per size")
    p.add_argument("--iters", type=int, default=None, help="override the iterations per block")
    args = p.parse_args(argv)
    if args.repeats:
        PLAN_OVERRIDE["repeats"] = args.repeats
    if args.iters:
        PLAN_OVERRIDE["iters"] = args.iters
    selected = set(args.configs.split(",")) if args.configs else None
    if selected and not selected <= set(TRAIN_CONFIGS + REF_CONFIGS):
        p.error(f"unknown configurations: {sorted(selected - set(TRAIN_CONFIGS + REF_CONFIGS))}")
    sizes = [int(s) for s in (args.sizes or ("50" if args.quick else "100,500,1000")).split(",")]
    output = args.output or (None if args.quick else str(HERE / "RESULTS.md"))
    json_out = args.json or (None if args.quick else str(HERE / "results.json"))

    if args.render:
        saved = json.loads(Path(args.render).read_text())
        text = render(saved["results"], saved["meta"])
        out = args.output or str(HERE / "RESULTS.md")
        Path(out).write_text(text)
        print(text + f"\nwrote {out} (re-rendered from {args.render})")
        return 0

    gpflow.config.set_default_float(np.float64)
    tf.get_logger().setLevel("ERROR")

    def log(msg):
        print(msg, flush=True)

    load_start = os.getloadavg()
    t_start = time.perf_counter()
    X, Y = load_data()
    log(f"kin8nm X {X.shape}, Y {Y.shape}; load average at start {load_start}")
    results = [bench_size(M, X, Y, args.quick, log, selected) for M in sizes]
    load_end = os.getloadavg()
    wall = time.perf_counter() - t_start
    meta = {
        "command": "`" + " ".join(["benchmarks/bench_training.py"] + (argv if argv is not None
                                                                       else sys.argv[1:])) + "`",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} logical (affinity {len(os.sched_getaffinity(0))})",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "gpflow": gpflow.__version__,
        "gpnat": gpnat.__version__ + (" (NaturalGradient closed_form default "
                                      f"{gpnat.NaturalGradient(0.1).closed_form})"
                                      if _has_closed_form_option() else " (no closed_form option)"),
        "gpnat_source": git_state(),
        "tf_threads": f"intra-op {tf.config.threading.get_intra_op_parallelism_threads()}, "
                      f"inter-op {tf.config.threading.get_inter_op_parallelism_threads()} "
                      "(0 = TensorFlow default)",
        "loadavg_start": " / ".join(f"{v:.2f}" for v in load_start) + " (1 / 5 / 15 min)",
        "loadavg_end": " / ".join(f"{v:.2f}" for v in load_end) + " (1 / 5 / 15 min)",
        "wall_s": f"{wall:.0f} s for the whole run",
    }
    text = render(results, meta)
    print("\n" + text)
    if output:
        Path(output).write_text(text)
        log(f"wrote {output}")
    if json_out:
        Path(json_out).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        log(f"wrote {json_out}")
    failed = any(r["errors"] for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
