"""Experiment 1: conjugate regression (SVGP + Gaussian likelihood on UCI sets).

Adam-only (Adam at 0.01 on q(u) in mean/Cholesky and on the hyperparameters)
against natural gradients on q(u) (stored in natural parameters) alternating
with Adam at 0.01 on the hyperparameters:

* full batch: natural-gradient γ = 1 (constant), Adam-only full batch;
* minibatches of ``batch_size``: γ log-linear from 1e-4 to 1e-1 over the first
  K iterations (K = 5, 40 for naval — the paper's setting), Adam-only with the
  same minibatches.

ELBO (full training set), test log-likelihood and RMSE (original units) are
recorded every ``eval_every`` iterations, against iterations and training
wall-clock seconds, for each split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

from .common import (
    Method,
    cell_path,
    load_problem,
    make_svgp,
    run_cell,
    train_with_trace,
    uci_available,
)

__all__ = ["ConjugateSettings", "conjugate_methods", "run_conjugate"]

EXPERIMENT = "conjugate"


@dataclass
class ConjugateSettings:
    """Every setting of the conjugate-regression experiment."""

    datasets: Tuple[str, ...] = (
        "yacht", "boston", "energy", "concrete", "wine", "kin8nm", "power", "naval", "protein",
    )
    splits: Tuple[int, ...] = (0, 1, 2, 3, 4)
    num_inducing: int = 100
    iterations: int = 5000
    eval_every: int = 100
    batch_size: int = 256
    adam_lr: float = 0.01
    #: K of the LogLinear(1e-4, 1e-1, K) warm-up, per data set (default 5, the paper's)
    loglinear_steps: Dict[str, int] = field(default_factory=lambda: {"naval": 40})
    #: full-batch methods run only when N_train is at most this
    full_batch_max_n: int = 12000
    #: minibatch methods run only when N_train is above this (and above ``batch_size``)
    minibatch_min_n: int = 0
    noise_variance: float = 0.1

    @classmethod
    def quick(cls) -> "ConjugateSettings":
        return cls(datasets=("boston", "energy", "concrete"), splits=(0, 1), num_inducing=50, iterations=500,
                   eval_every=25)

    @classmethod
    def standard(cls) -> "ConjugateSettings":
        """All nine sets, M=100, 3 splits: full batch on the five small sets, minibatch 256 on the four large."""
        return cls(splits=(0, 1, 2), iterations=5000, eval_every=250, full_batch_max_n=2000,
                   minibatch_min_n=2000)

    @classmethod
    def tiny(cls) -> "ConjugateSettings":
        return cls(datasets=("boston",), splits=(0,), num_inducing=15, iterations=30, eval_every=10)


def conjugate_methods(settings: ConjugateSettings, dataset: str, n_train: int) -> List[Method]:
    K = settings.loglinear_steps.get(dataset, 5)
    methods = []
    if n_train <= settings.full_batch_max_n:
        methods += [
            Method("adam_full", "adam", adam_lr=settings.adam_lr),
            Method("natgrad_full", "natgrad", "natural", ("constant", 1.0), adam_lr=settings.adam_lr),
        ]
    if settings.batch_size < n_train and n_train > settings.minibatch_min_n:
        B = settings.batch_size
        methods += [
            Method("adam_minibatch", "adam", adam_lr=settings.adam_lr, batch_size=B),
            Method("natgrad_minibatch", "natgrad", "natural", ("loglinear", 1e-4, 0.1, K),
                   adam_lr=settings.adam_lr, batch_size=B),
        ]
    return methods


def run_conjugate(settings: ConjugateSettings, out_dir, data_dir=None,
                  log: Callable[[str], None] = print) -> List[dict]:
    """Run (or read back) every cell; returns the cell records."""
    records = []
    for dataset in settings.datasets:
        if not uci_available(dataset, data_dir):
            log(f"conjugate: {dataset}: UCI file not found, skipped")
            continue
        for split in settings.splits:
            problem = None
            n_train = None
            for method_name in ("adam_full", "natgrad_full", "adam_minibatch", "natgrad_minibatch"):
                path = cell_path(out_dir, EXPERIMENT, dataset, method_name, f"split{split}")
                if path.exists():
                    record = run_cell(path, lambda: {})
                    if "y_std" not in record:  # cells written before y_std was recorded
                        record["y_std"] = load_problem(dataset, split, data_dir=data_dir).y_std
                    records.append(record)
                    continue
                if problem is None:
                    problem = load_problem(dataset, split, data_dir=data_dir)
                    n_train = problem.X_train.shape[0]
                methods = {m.name: m for m in conjugate_methods(settings, dataset, n_train)}
                if method_name not in methods:
                    continue
                method = methods[method_name]

                def compute(method=method, problem=problem, split=split):
                    model = make_svgp(problem, method, settings.num_inducing, seed=split,
                                      noise_variance=settings.noise_variance)
                    rec = train_with_trace(model, problem, method, settings.iterations,
                                           settings.eval_every, seed=split)
                    rec.update(experiment=EXPERIMENT, dataset=dataset, method=method.name,
                               description=method.describe(), split=split,
                               n_train=problem.X_train.shape[0], n_test=problem.X_test.shape[0],
                               num_inducing=settings.num_inducing, batch_size=method.batch_size,
                               y_std=problem.y_std)
                    return rec

                log(f"conjugate: {dataset} split {split} {method.name} ...")
                records.append(run_cell(path, compute, log))
    return records
