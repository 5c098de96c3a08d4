"""Experiment 3: non-conjugate likelihoods, parametrisations and γ schedules compared.

For each data set (binary classification with Bernoulli, multiclass with
MultiClass and one latent GP per class, robust regression with Student-t,
counts with Poisson) SVGP is trained by

* Adam-only (Adam at 0.01 on q(u) in mean/Cholesky and on everything else);
* natural gradients on q(u) stored in each of ``parametrisations``, with each
  γ schedule of ``schedules`` (constants and warm-ups), alternating with Adam
  at 0.01 on the hyperparameters.

Each cell records the ELBO trace, final ELBO and test metrics, whether the run
diverged (:class:`gpnat.NaturalGradientError`, or a NaN ELBO) and how many
proposals were rejected (γ halved) along the way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from .common import Method, cell_path, load_problem, make_svgp, run_cell, train_with_trace

__all__ = ["NonConjugateSettings", "nonconjugate_methods", "run_nonconjugate"]

EXPERIMENT = "nonconjugate"


def _default_schedules() -> Dict[str, Tuple]:
    return {
        "const0.1": ("constant", 0.1),
        "const1": ("constant", 1.0),
        "loglinear": ("loglinear", 1e-4, 0.1, 5),  # the paper's warm-up
        "increasing": ("increasing", 1.0, 0.01),   # γ_t = 1 - exp(-0.01 t): 0.01 at t=1, 0.63 at t=100
    }


@dataclass
class NonConjugateSettings:
    """Every setting of the non-conjugate experiment."""

    datasets: Tuple[str, ...] = (
        "banana", "breast_cancer", "wine_classes", "mnist", "studentt_synthetic", "poisson_synthetic",
    )
    splits: Tuple[int, ...] = (0, 1, 2)
    num_inducing: int = 100
    iterations: int = 2000
    eval_every: int = 50
    adam_lr: float = 0.01
    parametrisations: Tuple[str, ...] = ("natural", "expectation", "mean_cholesky")
    schedules: Dict[str, Tuple] = field(default_factory=_default_schedules)
    #: minibatch size per data set (others: full batch)
    batch_sizes: Dict[str, int] = field(default_factory=lambda: {"mnist": 1024})
    #: the paper's MNIST schedule: LogLinear(1e-6, 2e-2) over this many iterations, replacing "loglinear"
    mnist_loglinear: Tuple = ("loglinear", 1e-6, 2e-2, 2000)
    #: size of banana and of the synthetic Student-t and Poisson sets
    n_synthetic: int = 1000

    @classmethod
    def quick(cls) -> "NonConjugateSettings":
        """Four sets, one split, M=30, 250 iterations; the 8x8 digits (minibatch 256) stand in for MNIST."""
        return cls(
            datasets=("banana", "digits", "studentt_synthetic", "poisson_synthetic"),
            splits=(0,), num_inducing=30, iterations=250, eval_every=25, n_synthetic=500,
            batch_sizes={"digits": 256},
        )

    @classmethod
    def standard(cls) -> "NonConjugateSettings":
        """Six sets, 3 splits, M=50, 500 iterations; scikit-learn's 8x8 digits (minibatch 256) stand in for MNIST.

        The digits are bundled with scikit-learn, so this scale gives the same
        cells with or without a network (MNIST needs a download).
        """
        return cls(datasets=("banana", "breast_cancer", "wine_classes", "digits", "studentt_synthetic",
                             "poisson_synthetic"),
                   num_inducing=50, iterations=500, eval_every=50, batch_sizes={"digits": 256})

    @classmethod
    def tiny(cls) -> "NonConjugateSettings":
        return cls(
            datasets=("banana", "wine_classes"), splits=(0,), num_inducing=8, iterations=20, eval_every=10,
            parametrisations=("natural", "mean_cholesky"), n_synthetic=100,
            schedules={"loglinear": ("loglinear", 1e-4, 0.1, 5)},
        )


def nonconjugate_methods(settings: NonConjugateSettings, dataset: str) -> List[Method]:
    B: Optional[int] = settings.batch_sizes.get(dataset)
    methods = [Method("adam", "adam", adam_lr=settings.adam_lr, batch_size=B)]
    for p in settings.parametrisations:
        for label, spec in settings.schedules.items():
            if dataset == "mnist" and label == "loglinear":
                spec = tuple(settings.mnist_loglinear)
            methods.append(Method(f"{p}-{label}", "natgrad", p, tuple(spec), adam_lr=settings.adam_lr,
                                  batch_size=B))
    return methods


def run_nonconjugate(settings: NonConjugateSettings, out_dir, data_dir=None,
                     log: Callable[[str], None] = print) -> List[dict]:
    """Run (or read back) every cell; returns the cell records."""
    records = []
    for dataset in settings.datasets:
        methods = nonconjugate_methods(settings, dataset)
        for split in settings.splits:
            problem = None
            for method in methods:
                path = cell_path(out_dir, EXPERIMENT, dataset, method.name, f"split{split}")
                if problem is None and not path.exists():
                    problem = load_problem(dataset, split, data_dir=data_dir, n_synthetic=settings.n_synthetic)

                def compute(method=method, problem=problem, split=split):
                    model = make_svgp(problem, method, settings.num_inducing, seed=split)
                    rec = train_with_trace(model, problem, method, settings.iterations,
                                           settings.eval_every, seed=split)
                    rec.update(experiment=EXPERIMENT, dataset=dataset, likelihood=problem.likelihood,
                               method=method.name, kind=method.kind,
                               parametrisation=method.parametrisation if method.kind == "natgrad" else "",
                               schedule=list(method.schedule), description=method.describe(),
                               split=split, n_train=problem.X_train.shape[0], n_test=problem.X_test.shape[0],
                               num_inducing=settings.num_inducing, batch_size=method.batch_size,
                               data_source=problem.note or dataset)
                    return rec

                if not path.exists():
                    log(f"nonconjugate: {dataset} split {split} {method.name} ...")
                records.append(run_cell(path, compute, log))
    return records
