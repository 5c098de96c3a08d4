"""Shared pieces of the experiments: scale, resumable cells, models, methods, traces.

A *cell* is one experiment × data set × method × split. Each finished cell is
written as one JSON file under ``<out>/cells/<experiment>/`` the moment it
finishes (atomically: temporary file, then rename); a rerun reads it back
instead of recomputing it. :data:`COUNTERS` counts cells computed and cells
read back in this process (the tests use it).

Wall-clock times are training time only: the time spent evaluating test
metrics and full-data ELBOs at checkpoints is measured and subtracted, and the
one-off tracing of the compiled iteration is reported separately
(``compile_s``) and removed from the time axis.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import gpflow
import numpy as np
import tensorflow as tf

import gpnat
from gpnat import schedules

__all__ = [
    "SCALE_ENV_VAR",
    "SCALES",
    "COUNTERS",
    "Method",
    "Problem",
    "scale_from_env",
    "cell_path",
    "run_cell",
    "load_cells",
    "make_svgp",
    "make_natgrad",
    "train_with_trace",
    "first_reaching",
]

#: environment variable that overrides the run's scale (``full``, ``standard``, ``quick`` or ``tiny``)
SCALE_ENV_VAR = "GPNAT_REPRODUCE_SCALE"
SCALES = ("full", "standard", "quick", "tiny")

#: cells computed and cells read back from disk in this process
COUNTERS: Dict[str, int] = {"computed": 0, "loaded": 0}


def scale_from_env(default: str) -> str:
    """The scale to use: ``$GPNAT_REPRODUCE_SCALE`` if set, else ``default``."""
    scale = os.environ.get(SCALE_ENV_VAR, "").strip().lower() or default
    if scale not in SCALES:
        raise ValueError(f"{SCALE_ENV_VAR} must be one of {SCALES}, got {scale!r}")
    return scale


# ------------------------------------------------------------------------ cells
def _safe(name: str) -> str:
    return "".join(c if (c.isalnum() or c in "-_.=") else "_" for c in str(name))


def cell_path(out_dir, experiment: str, *parts) -> Path:
    """``<out>/cells/<experiment>/<part1>__<part2>__....json``."""
    return Path(out_dir) / "cells" / experiment / ("__".join(_safe(p) for p in parts) + ".json")


def _json_default(o):
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _clean(o):
    """NaN/inf -> None, recursively, so the files are strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def run_cell(path: Path, compute: Callable[[], dict], log: Optional[Callable[[str], None]] = None) -> dict:
    """Return the cell stored at ``path``, computing and saving it first if it is not there."""
    path = Path(path)
    if path.exists():
        try:
            record = json.loads(path.read_text())
            COUNTERS["loaded"] += 1
            return record
        except json.JSONDecodeError:  # a torn file from an old crash: recompute it
            pass
    t0 = time.perf_counter()
    record = compute()
    record["cell_wall_s"] = time.perf_counter() - t0
    record = _clean(json.loads(json.dumps(record, default=_json_default)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    COUNTERS["computed"] += 1
    if log is not None:
        log(f"  cell {path.parent.name}/{path.stem}: {record['cell_wall_s']:.1f} s")
    return record


def load_cells(out_dir, experiment: str) -> List[dict]:
    """Every finished cell of ``experiment`` in ``out_dir``, sorted by file name."""
    folder = Path(out_dir) / "cells" / experiment
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# ----------------------------------------------------------------------- models
@dataclass(frozen=True)
class Method:
    """How q(u) (and the hyperparameters) are trained.

    ``kind`` is ``"adam"`` (Adam on everything, q(u) in mean/Cholesky, as in
    gpflow's SVGP) or ``"natgrad"`` (natural-gradient steps on q(u) stored in
    ``parametrisation``, with γ from ``schedule`` — ``("constant", γ)``,
    ``("loglinear", start, stop, steps)`` or ``("increasing", alpha, rate)``
    — alternating with Adam on the hyperparameters when ``adam_lr`` is set).
    """

    name: str
    kind: str
    parametrisation: str = "mean_cholesky"
    schedule: Tuple = ()
    adam_lr: Optional[float] = 0.01
    batch_size: Optional[int] = None

    def describe(self) -> str:
        if self.kind == "adam":
            return f"Adam-only (lr {self.adam_lr})"
        return f"natgrad {self.parametrisation} γ={schedule_label(self.schedule)}"


def schedule_label(spec: Tuple) -> str:
    if not spec:
        return ""
    kind = spec[0]
    if kind == "constant":
        return f"{spec[1]:g}"
    if kind == "loglinear":
        return f"LogLinear({spec[1]:g}→{spec[2]:g}, {spec[3]} it)"
    if kind == "increasing":
        return f"IncreasingRate(α={spec[1]:g}, rate={spec[2]:g})"
    raise ValueError(f"unknown schedule {spec!r}")


def make_schedule(spec: Tuple):
    kind = spec[0]
    if kind == "constant":
        return schedules.Constant(spec[1])
    if kind == "loglinear":
        return schedules.LogLinear(spec[1], spec[2], int(spec[3]))
    if kind == "increasing":
        return schedules.IncreasingRate(spec[1], spec[2])
    raise ValueError(f"unknown schedule {spec!r}")


def make_natgrad(method: Method) -> Optional[gpnat.NaturalGradient]:
    if method.kind == "adam":
        return None
    # the paper compares the coordinates of the *step*: step in the storage's own coordinates
    return gpnat.NaturalGradient(make_schedule(method.schedule), coordinates=None, max_tries=8)


@dataclass
class Problem:
    """A train/test split ready for a model: standardised inputs, targets as the likelihood wants."""

    name: str
    split: int
    X_train: np.ndarray
    Y_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    likelihood: str  # gaussian | bernoulli | multiclass | studentt | poisson
    num_classes: int = 1
    y_mean: float = 0.0
    y_std: float = 1.0
    note: str = ""

    @property
    def num_latent_gps(self) -> int:
        return self.num_classes if self.likelihood == "multiclass" else 1


def make_likelihood(problem: Problem, noise_variance: float = 0.1):
    lik = problem.likelihood
    if lik == "gaussian":
        return gpflow.likelihoods.Gaussian(variance=noise_variance)
    if lik == "bernoulli":
        return gpflow.likelihoods.Bernoulli()
    if lik == "multiclass":
        return gpflow.likelihoods.MultiClass(problem.num_classes)
    if lik == "studentt":
        return gpflow.likelihoods.StudentT(scale=0.5, df=3.0)
    if lik == "poisson":
        return gpflow.likelihoods.Poisson()
    raise ValueError(f"unknown likelihood {lik!r}")


def initial_inducing(X: np.ndarray, M: int, seed: int) -> np.ndarray:
    """Z: M training inputs drawn without replacement with ``default_rng(seed)``."""
    M = min(M, X.shape[0])
    idx = np.random.default_rng(seed).choice(X.shape[0], M, replace=False)
    return X[np.sort(idx)].copy()


def make_kernel(D: int):
    """Squared exponential with ARD lengthscales √D (inputs standardised) and variance 1."""
    return gpflow.kernels.SquaredExponential(variance=1.0, lengthscales=np.full(D, math.sqrt(D)))


def make_svgp(problem: Problem, method: Method, M: int, seed: int, noise_variance: float = 0.1):
    parametrisation = "mean_cholesky" if method.kind == "adam" else method.parametrisation
    return gpnat.SVGP(
        make_kernel(problem.X_train.shape[1]),
        make_likelihood(problem, noise_variance),
        initial_inducing(problem.X_train, M, seed),
        num_data=problem.X_train.shape[0],
        parametrisation=gpnat.parametrisations.get_parametrisation(parametrisation),
        num_latent_gps=problem.num_latent_gps,
        whiten=True,
    )


# ---------------------------------------------------------------------- metrics
def test_metrics(model, problem: Problem) -> Dict[str, float]:
    """Mean test log predictive density (original units for regression) and RMSE or error rate."""
    Xte, Yte = problem.X_test, problem.Y_test
    lik = problem.likelihood
    if lik == "multiclass":
        probs, _ = model.predict_y(Xte)
        probs = np.asarray(probs)
        labels = Yte[:, 0].astype(int)
        p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-300, None)
        return {"test_loglik": float(np.mean(np.log(p_true))),
                "test_error": float(np.mean(np.argmax(probs, axis=1) != labels))}
    logdens = np.asarray(model.predict_log_density((Xte, Yte))).reshape(-1)
    mean, _ = model.predict_y(Xte)
    mean = np.asarray(mean)
    if lik == "bernoulli":
        return {"test_loglik": float(np.mean(logdens)),
                "test_error": float(np.mean((mean[:, 0] > 0.5) != (Yte[:, 0] > 0.5)))}
    if lik in ("gaussian", "studentt"):
        logdens = logdens - math.log(problem.y_std)
        err = (mean - Yte) * problem.y_std
        return {"test_loglik": float(np.mean(logdens)), "test_rmse": float(np.sqrt(np.mean(err ** 2)))}
    # poisson: counts are not standardised; a diverged run's mean exp(f + var/2) may overflow (rmse inf)
    with np.errstate(over="ignore"):
        rmse = float(np.sqrt(np.mean((mean - Yte) ** 2)))
    return {"test_loglik": float(np.mean(logdens)), "test_rmse": rmse}


def full_elbo(model, problem: Problem) -> float:
    return float(model.elbo((problem.X_train, problem.Y_train)))


# ---------------------------------------------------------------------- training
#: the experiments' policy: stop at the first iteration whose loss or gradients are not finite, whose
#: Adam step leaves q(u) invalid or that has no valid natural step. gpnat.train's collapse test (a minibatch
#: loss far above its running average) is off: the paper counts only divergence, and before the test had its
#: noise term (benchmarks/COLLAPSE.md) it stopped Adam-only runs on naval and power at noisy minibatches.
DIVERGENCE_ONLY = gpnat.Recovery(max_consecutive=1, check_proposal=False, collapse=math.inf)


class _Stop(Exception):
    """Raised by a callback to end training early (after the condition is met)."""


def _clock(times: List[float]) -> Tuple[float, float]:
    """(seconds per iteration, one-off tracing seconds) from History.time.

    :func:`gpnat.train`'s first call runs one iteration and includes the
    tracing; History spreads each later call's time evenly over its
    iterations, so the median step of the later times is the per-iteration
    cost, and the first call's excess over it is the tracing.
    """
    if len(times) < 2:  # one iteration (or none): tracing and the iteration cannot be told apart
        return float("nan"), (float(times[0]) if times else 0.0)
    per_it = float(np.median(np.diff(times)))
    return per_it, max(float(times[0]) - per_it, 0.0)


def train_with_trace(
    model,
    problem: Problem,
    method: Method,
    iterations: int,
    eval_every: int,
    seed: int = 0,
    stop_when: Optional[Callable[[int, "gpnat.History"], bool]] = None,
    evaluate: bool = True,
    steps_per_call: Optional[int] = None,
) -> dict:
    """Train with :func:`gpnat.train`, evaluating full-data ELBO and test metrics every ``eval_every`` iterations.

    After the first call (one iteration, which traces), the iterations run
    ``steps_per_call`` (default ``eval_every``) at a time inside one compiled
    call, as :func:`gpnat.train` runs by default, and the checkpoints are
    taken between calls. ``stop_when(iteration, history)``,
    asked after each call, ends the run early when it returns True.

    One clock serves every method: ``History.time`` (training seconds, not
    counting callbacks) less the one-off tracing (``compile_s``, see
    :func:`_clock`). Returns a record with the per-iteration ``elbo``
    estimates (the minibatch estimate before each iteration's update; at most
    2,000 of them, evenly subsampled, with their ``elbo_iterations`` and
    ``elbo_time``, the training seconds at the end of that iteration), the
    checkpoints ``trace`` (iteration, training seconds, ELBO, test metrics),
    ``gamma`` and ``rejections`` summaries, ``diverged`` and timing figures.
    """
    data = (problem.X_train, problem.Y_train)
    chunk = max(1, min(int(steps_per_call or eval_every), iterations))
    trace: List[dict] = []
    holder: Dict[str, gpnat.History] = {}

    def checkpoint(it: int, train_s: float):
        row = {"iteration": it, "time": train_s, "elbo": full_elbo(model, problem)}
        if evaluate:
            row.update(test_metrics(model, problem))
        trace.append(row)

    def callback(it, history):
        holder["h"] = history
        train_s = history.time[-1]  # History.time excludes the time spent in callbacks
        holder["train_s"] = train_s
        if stop_when is not None and stop_when(it, history):
            raise _Stop()
        if it % eval_every == 0 or it == iterations:
            checkpoint(it, train_s)

    checkpoint(0, 0.0)  # before training's clock starts
    natgrad = make_natgrad(method)
    diverged, error = False, ""
    try:
        gpnat.train(
            model, data, iterations=iterations, natgrad=natgrad, adam_lr=method.adam_lr,
            batch_size=method.batch_size, progress=False, seed=seed, callbacks=[callback],
            fused=False,  # the paper alternates: Adam's gradient at the updated q(u)
            recovery=DIVERGENCE_ONLY,  # the experiments count divergence, as the paper does
            steps_per_call=chunk,
        )
    except _Stop:
        pass
    except (gpnat.NaturalGradientError, FloatingPointError) as err:
        diverged, error = True, str(err).split(";")[0]
        holder["h"] = err.history  # includes the failing iteration and its rejections
        if len(err.history):
            holder["train_s"] = err.history.time[-1]
    except tf.errors.InvalidArgumentError as err:  # e.g. a Cholesky failure inside gpflow
        diverged, error = True, f"InvalidArgumentError: {err.message.splitlines()[0][:200]}"
    history = holder.get("h", gpnat.History())
    if diverged and len(history) and trace[-1]["iteration"] != len(history):
        try:  # the model keeps its last valid state: evaluate it
            checkpoint(len(history), holder["train_s"])
        except Exception:  # noqa: BLE001 - an invalid state cannot be evaluated
            pass
    times = list(history.time)
    per_it, compile_s = _clock(times)
    # shift every checkpoint by the one-off tracing cost
    for row in trace[1:]:
        row["time"] = max(row["time"] - compile_s, 0.0)
    elbo = list(history.elbo)
    keep = np.unique(np.linspace(0, len(elbo) - 1, min(len(elbo), 2000)).round().astype(int)) if elbo else []
    elbo_iterations = [int(history.iteration[i]) for i in keep]
    elbo_time = [max(times[i] - compile_s, 0.0) for i in keep]
    if elbo and not math.isfinite(elbo[-1]):
        diverged = True
        error = error or "ELBO became NaN/inf"
    final = trace[-1] if trace else {}
    if final and not (final.get("elbo") is not None and math.isfinite(final["elbo"])):
        diverged = True
        error = error or "ELBO became NaN/inf"
    total_rejections = history.total_rejections
    diverged_at = None
    if diverged:
        found = re.search(r"iteration (\d+)", error)
        diverged_at = int(found.group(1)) if found else len(history)
    gammas = [g for g in history.gamma if not math.isnan(g)]
    return {
        "iterations_run": len(history),
        "elbo": [elbo[i] for i in keep],
        "elbo_iterations": elbo_iterations,
        "elbo_time": elbo_time,
        "trace": trace,
        "final": final,
        "diverged": diverged,
        "error": error,
        "diverged_at": diverged_at,
        "total_rejections": total_rejections,
        "iterations_with_rejections": int(sum(1 for r in history.rejections if r > 0)),
        "gamma_first": gammas[0] if gammas else None,
        "gamma_last": gammas[-1] if gammas else None,
        "steps_per_call": chunk,
        "seconds_per_iteration": per_it,
        "compile_s": compile_s,
        "train_s": float(holder["train_s"] - compile_s) if times else 0.0,
    }


def first_reaching(iterations: List[int], values: List[Optional[float]], target: float) -> Optional[int]:
    """The first iteration whose value is ≥ target (None if never)."""
    for it, v in zip(iterations, values):
        if v is not None and math.isfinite(v) and v >= target:
            return int(it)
    return None


def quiet_tensorflow() -> None:
    """Fewer TensorFlow log lines (Cholesky-failure warnings are expected in divergence tests)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", category=UserWarning, module="gpnat.training")


def settings_dict(settings) -> dict:
    return asdict(settings)


# ------------------------------------------------------------------------- data
#: bundled / synthetic non-conjugate sets: name -> (likelihood, number of classes)
BUNDLED = {
    "banana": ("bernoulli", 1),
    "breast_cancer": ("bernoulli", 1),
    "wine_classes": ("multiclass", 3),
    "digits": ("multiclass", 10),
    "mnist": ("multiclass", 10),
    "studentt_synthetic": ("studentt", 1),
    "poisson_synthetic": ("poisson", 1),
}


def _studentt_synthetic(n: int, seed: int = 0):
    """y = sin(1.5 x₁) + 0.5 x₂ + 0.1 ε, with 10% of the targets replaced by U(−5, 5) outliers."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3.0, 3.0, size=(n, 2))
    y = np.sin(1.5 * X[:, :1]) + 0.5 * X[:, 1:] + 0.1 * rng.standard_normal((n, 1))
    outliers = rng.uniform(size=(n, 1)) < 0.1
    return X, np.where(outliers, rng.uniform(-5.0, 5.0, size=(n, 1)), y)


def _poisson_synthetic(n: int, seed: int = 0):
    """Counts y ~ Poisson(exp(1 + sin(1.5 x₁) + 0.3 x₂)), x ~ U(−3, 3)²."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3.0, 3.0, size=(n, 2))
    rate = np.exp(1.0 + np.sin(1.5 * X[:, :1]) + 0.3 * X[:, 1:])
    return X, rng.poisson(rate).astype(np.float64)


def load_problem(name: str, split: int, data_dir=None, n_synthetic: int = 1000,
                 test_fraction: Optional[float] = None) -> Problem:
    """One split of a named data set, standardised with the training part's statistics.

    UCI regression sets (:data:`gpnat.experiments.datasets.UCI_DATASETS`) use
    :func:`gpnat.experiments.datasets.uci_split` (test fraction 0.1, split s = seed s).
    The others are split with :func:`gpnat.experiments.datasets.train_test_split`
    (test fraction 0.2, seed = split; MNIST keeps its own train/test split)
    and their inputs are standardised; Student-t targets are standardised
    too, class labels and counts are not.
    """
    from . import datasets

    if name in datasets.UCI_DATASETS:
        s = datasets.uci_split(name, split, test_fraction=test_fraction or 0.1, data_dir=data_dir, download=False)
        return Problem(name, split, s.X_train, s.y_train, s.X_test, s.y_test, "gaussian",
                       y_mean=s.y_mean, y_std=s.y_std)
    if name == "toy_regression":  # a synthetic stand-in for tests without the UCI files
        X, y = datasets.toy_regression(n=n_synthetic, d=2, seed=0, noise_std=0.1)
        Xtr, ytr, Xte, yte = datasets.train_test_split(X, y, test_fraction=test_fraction or 0.1, seed=split)
        Xtr, ytr, Xte, yte, st = datasets.standardise(Xtr, ytr, Xte, yte)
        return Problem(name, split, Xtr, ytr, Xte, yte, "gaussian", y_mean=st.y_mean, y_std=st.y_std)
    if name not in BUNDLED:
        raise ValueError(f"unknown data set {name!r}")
    likelihood, C = BUNDLED[name]
    note = ""
    if name == "mnist":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d = datasets.load_mnist()
        note = d.source
        if d.is_fallback:
            note += " (MNIST could not be loaded offline; scikit-learn's 8x8 digits were used)"
        del caught
        Xtr, ytr, Xte, yte = d.X_train, d.y_train, d.X_test, d.y_test
    else:
        X, y = {
            "banana": lambda: datasets.banana(n=n_synthetic, seed=0),
            "breast_cancer": datasets.load_breast_cancer,
            "wine_classes": datasets.load_wine,
            "digits": datasets.load_digits,
            "studentt_synthetic": lambda: _studentt_synthetic(n_synthetic, seed=0),
            "poisson_synthetic": lambda: _poisson_synthetic(n_synthetic, seed=0),
        }[name]()
        Xtr, ytr, Xte, yte = datasets.train_test_split(X, y, test_fraction=test_fraction or 0.2, seed=split)
    stats = datasets.Standardiser.fit(Xtr, ytr if likelihood == "studentt" else None)
    Xtr, Xte = stats.transform_X(Xtr), stats.transform_X(Xte)
    y_mean, y_std = 0.0, 1.0
    if likelihood == "studentt":
        ytr, yte = stats.transform_y(ytr), stats.transform_y(yte)
        y_mean, y_std = stats.y_mean, stats.y_std
    return Problem(name, split, Xtr, ytr, Xte, yte, likelihood, num_classes=C, y_mean=y_mean,
                   y_std=y_std, note=note)


def uci_available(name: str, data_dir=None) -> bool:
    """True for non-UCI names, and for UCI names whose file is found locally."""
    from . import datasets

    if name not in datasets.UCI_DATASETS:
        return True
    try:
        datasets.find_uci_file(name, data_dir=data_dir, download=False)
        return True
    except Exception:  # noqa: BLE001
        return False
