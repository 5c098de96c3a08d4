"""Experiment 2: ill-conditioning — SVGP regression as the likelihood variance shrinks.

With a Gaussian likelihood and fixed hyperparameters the optimal q(u) is
known in closed form and the ELBO there equals SGPR's collapsed bound
(``gpflow.models.SGPR(...).elbo()``). For each likelihood variance σ² the
experiment counts the iterations and training seconds each method needs to
come within ``tolerance`` nats of that optimum:

* Adam-only on q(u) (mean/Cholesky, full batch) at each learning rate in
  ``adam_lrs``, up to ``max_iterations``;
* natural gradients on q(u) in natural parameters with γ = 1 (one step is
  exact in theory).

"Learned" variant: the kernel hyperparameters and inducing inputs are learned
with Adam (0.01) while σ² stays fixed (so that the conditioning stays what was
asked for); Adam-only against natural gradients (γ = 1) + Adam, for
``learned_iterations`` iterations. The optimum is no longer known in closed
form; the record keeps the final ELBO and the gap between it and SGPR's bound
at the final hyperparameters (how far q(u) is from optimal for them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Tuple

import gpflow

from .common import (
    Method,
    cell_path,
    initial_inducing,
    load_problem,
    make_kernel,
    make_svgp,
    run_cell,
    train_with_trace,
    uci_available,
)

__all__ = ["IllConditioningSettings", "run_ill_conditioning", "sgpr_optimum"]

EXPERIMENT = "ill"


@dataclass
class IllConditioningSettings:
    """Every setting of the ill-conditioning experiment."""

    dataset: str = "boston"
    splits: Tuple[int, ...] = (0, 1, 2)
    noise_variances: Tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
    num_inducing: int = 100
    adam_lrs: Tuple[float, ...] = (0.01, 0.1)
    max_iterations: int = 20000
    tolerance: float = 1.0
    learned: bool = True
    learned_noise_variances: Tuple[float, ...] = (1e-1, 1e-3, 1e-5)
    learned_iterations: int = 2000
    learned_adam_lr: float = 0.01

    @classmethod
    def quick(cls) -> "IllConditioningSettings":
        return cls(splits=(0, 1), num_inducing=50, adam_lrs=(0.01,), max_iterations=2500,
                   learned_noise_variances=(1e-1, 1e-3, 1e-5), learned_iterations=300)

    @classmethod
    def standard(cls) -> "IllConditioningSettings":
        return cls(max_iterations=5000, learned_iterations=1000)

    @classmethod
    def tiny(cls) -> "IllConditioningSettings":
        return cls(dataset="toy_regression", splits=(0,), noise_variances=(1e-1, 1e-4), num_inducing=10,
                   adam_lrs=(0.01,), max_iterations=150, learned_noise_variances=(1e-2,),
                   learned_iterations=20)


def sgpr_optimum(problem, kernel, Z, noise_variance: float) -> float:
    """The ELBO at the optimal q(u) for fixed hyperparameters: SGPR's collapsed bound."""
    model = gpflow.models.SGPR((problem.X_train, problem.Y_train), kernel, Z, noise_variance=noise_variance)
    return float(model.elbo())


def _freeze_hyperparameters(model, learn_kernel: bool) -> None:
    gpflow.set_trainable(model.likelihood, False)
    gpflow.set_trainable(model.kernel, learn_kernel)
    gpflow.set_trainable(model.inducing_variable, learn_kernel)


def _fixed_cell(settings, problem, split, noise, method: Method):
    model = make_svgp(problem, method, settings.num_inducing, seed=split, noise_variance=noise)
    _freeze_hyperparameters(model, learn_kernel=False)
    optimum = sgpr_optimum(problem, make_kernel(problem.X_train.shape[1]),
                           initial_inducing(problem.X_train, settings.num_inducing, split), noise)
    target = optimum - settings.tolerance
    reached = {}

    def stop_when(it, history):
        # history.elbo[i] is the full-batch ELBO before iteration i + 1's update: after i updates
        for i in range(reached.get("scanned", 0), len(history.elbo)):
            if history.elbo[i] >= target:
                reached.update(iterations=i, raw_seconds=history.time[i - 1] if i >= 1 else 0.0)
                return True
        reached["scanned"] = len(history.elbo)
        return False

    # calls of up to 100 iterations; the run stops after the call in which the tolerance is reached
    iterations = 5 if method.kind == "natgrad" else settings.max_iterations
    rec = train_with_trace(model, problem, method, iterations, eval_every=max(iterations, 1),
                           seed=split, stop_when=stop_when, evaluate=False, steps_per_call=100)
    final_elbo = float(model.elbo((problem.X_train, problem.Y_train)))
    rec.update(
        optimum=optimum,
        final_gap=optimum - final_elbo,
        final_relative_gap=abs(optimum - final_elbo) / abs(optimum),
        reached="iterations" in reached,
        iterations_to_tolerance=reached.get("iterations"),
        seconds_to_tolerance=(max(reached["raw_seconds"] - rec["compile_s"], 0.0)
                              if reached.get("iterations") else (0.0 if "iterations" in reached else None)),
    )
    return rec


def _learned_cell(settings, problem, split, noise, method: Method):
    model = make_svgp(problem, method, settings.num_inducing, seed=split, noise_variance=noise)
    _freeze_hyperparameters(model, learn_kernel=True)
    rec = train_with_trace(model, problem, method, settings.learned_iterations,
                           eval_every=max(settings.learned_iterations // 10, 1), seed=split)
    final_elbo = float(model.elbo((problem.X_train, problem.Y_train)))
    optimum = sgpr_optimum(problem, model.kernel, model.inducing_variable.Z.numpy(), noise)
    rec.update(final_elbo=final_elbo, optimum_at_final_hyperparameters=optimum,
               final_gap=optimum - final_elbo)
    return rec


def run_ill_conditioning(settings: IllConditioningSettings, out_dir, data_dir=None,
                         log: Callable[[str], None] = print) -> List[dict]:
    """Run (or read back) every cell; returns the cell records."""
    if not uci_available(settings.dataset, data_dir):
        log(f"ill-conditioning: {settings.dataset}: UCI file not found, skipped")
        return []
    records = []
    fixed_methods = [Method(f"adam_lr{lr:g}", "adam", adam_lr=lr) for lr in settings.adam_lrs]
    fixed_methods.append(Method("natgrad_gamma1", "natgrad", "natural", ("constant", 1.0), adam_lr=None))
    learned_methods = [
        Method("adam", "adam", adam_lr=settings.learned_adam_lr),
        Method("natgrad_gamma1", "natgrad", "natural", ("constant", 1.0), adam_lr=settings.learned_adam_lr),
    ]
    jobs = [("fixed", noise, m) for noise in settings.noise_variances for m in fixed_methods]
    if settings.learned:
        jobs += [("learned", noise, m) for noise in settings.learned_noise_variances for m in learned_methods]
    for split in settings.splits:
        problem = None
        for variant, noise, method in jobs:
            path = cell_path(out_dir, EXPERIMENT, settings.dataset, variant, f"noise{noise:g}",
                             method.name, f"split{split}")
            if problem is None and not path.exists():
                problem = load_problem(settings.dataset, split, data_dir=data_dir)

            def compute(variant=variant, noise=noise, method=method, problem=problem, split=split):
                cell = _fixed_cell if variant == "fixed" else _learned_cell
                rec = cell(settings, problem, split, noise, method)
                rec.update(experiment=EXPERIMENT, dataset=settings.dataset, variant=variant,
                           noise_variance=noise, method=method.name, description=method.describe(),
                           split=split, n_train=problem.X_train.shape[0],
                           num_inducing=settings.num_inducing, tolerance=settings.tolerance)
                return rec

            if not path.exists():
                log(f"ill-conditioning: {variant} σ²={noise:g} {method.name} split {split} ...")
            records.append(run_cell(path, compute, log))
    return records
