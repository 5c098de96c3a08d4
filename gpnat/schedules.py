r"""Step-size schedules for the natural-gradient step: plain callables step -> γ.

A schedule is any callable that maps the step number t = 1, 2, 3, ... (an
integer tensor; the counter lives in the optimizer's state, so it is
checkpointed with it) to a positive γ. A number is the constant schedule.
"""
import math
from numbers import Real
from typing import Callable, Union

import gpflow
import tensorflow as tf

from .checks import check_count

__all__ = ["Schedule", "Constant", "IncreasingRate", "LogLinear", "warm_up", "as_schedule", "check_gamma"]

Schedule = Callable[[tf.Tensor], tf.Tensor]


def check_gamma(gamma, what: str = "gamma") -> float:
    """Return gamma as a float if it is a positive finite number; raise ValueError otherwise."""
    if isinstance(gamma, bool) or not isinstance(gamma, Real):
        raise TypeError(f"{what} must be a positive finite number or a schedule, got {gamma!r}")
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma <= 0.0:
        raise ValueError(f"{what} must be a positive finite number, got {gamma!r}")
    return gamma


def _float(t) -> tf.Tensor:
    return tf.cast(t, gpflow.default_float())


class Constant:
    """γₜ = gamma for every step."""

    def __init__(self, gamma: float):
        self.gamma = check_gamma(gamma)

    def __call__(self, step) -> tf.Tensor:
        return tf.constant(self.gamma, dtype=gpflow.default_float())

    def __repr__(self) -> str:
        return f"Constant({self.gamma!r})"


class IncreasingRate:
    """γₜ = α (1 − exp(−rate · t)): a warm-up from ≈ α·rate at t = 1 towards α.

    The rule used with natural gradients in Julia to make non-conjugate
    training safe: early steps are tiny, and γ approaches α as t grows.

    :param alpha: the limit α of γ.
    :param rate: how fast γ approaches α: γ ≈ α·rate·t while rate·t ≪ 1, and
        γ = α/2 at t = ln 2 / rate. The default 1e-8 (Julia's) keeps γ ≈ α·1e-8·t,
        tiny for any practical number of steps; pass a rate such as 0.01 to reach
        α/2 in about 70 steps and 0.99 α in about 460.
    """

    def __init__(self, alpha: float = 1.0, rate: float = 1e-8):
        self.alpha = check_gamma(alpha, "alpha")
        self.rate = check_gamma(rate, "rate")

    def __call__(self, step) -> tf.Tensor:
        t = _float(step)
        return self.alpha * -tf.math.expm1(-self.rate * t)

    def __repr__(self) -> str:
        return f"IncreasingRate(alpha={self.alpha!r}, rate={self.rate!r})"


class LogLinear:
    """γ grows log-linearly from ``start`` (t = 1) to ``stop`` (t = ``steps``), then stays at ``stop``.

    With ``steps`` = 1 it is the constant ``stop``.

    The schedule of Salimbeni et al. (2018) for stochastic natural gradients is
    ``LogLinear(1e-4, 1e-1, 5)`` (used by ``gpnat reproduce``); :func:`gpnat.train`'s
    default for non-Gaussian likelihoods and for minibatches is the gentler :func:`warm_up`,
    ``LogLinear(1e-3, 1e-1, 100)``, chosen by ``benchmarks/bench_warmup.py`` and
    ``benchmarks/bench_robustness.py``.
    """

    def __init__(self, start: float, stop: float, steps: int):
        self.start = check_gamma(start, "start")
        self.stop = check_gamma(stop, "stop")
        self.steps = check_count(steps, "steps")

    def __call__(self, step) -> tf.Tensor:
        t = _float(step)
        if self.steps == 1:  # stop from t = steps = 1 on
            return tf.constant(self.stop, dtype=gpflow.default_float())
        frac = tf.clip_by_value((t - 1.0) / (self.steps - 1), 0.0, 1.0)
        log_gamma = math.log(self.start) + frac * (math.log(self.stop) - math.log(self.start))
        return tf.exp(log_gamma)

    def __repr__(self) -> str:
        return f"LogLinear(start={self.start!r}, stop={self.stop!r}, steps={self.steps!r})"


WARM_UP_STEPS = 100
"""The length of :func:`warm_up`, measured in ``benchmarks/WARMUP.md``: of T ∈ {20, 50, 100, 200},
T = 100 ended at least as high as Adam-only training in the most runs (11 of 12 at 300 iterations,
8 of 10 at 3,000; T = 20: 9 and 6)."""

DIAGONAL_WARM_UP_STEPS = 20
"""The warm-up's length for a diagonal q(u) with a Gaussian likelihood on the full data, where
``benchmarks/DIAGONAL.md`` measured it ahead of the longer default."""

ALONE_WARM_UP_STEPS = 5
"""The warm-up's length when q(u) trains alone (``adam_lr=None`` in :func:`gpnat.train`): with
nothing for Adam to move, the reason for a slow start is gone; in ``benchmarks/WARMUP.md`` 5 steps
led 20 and 100 after 60 iterations in all 11 runs, and all three ended level."""


def warm_up(steps: int = WARM_UP_STEPS) -> LogLinear:
    r"""The default γ of :func:`gpnat.train` wherever a natural step is not the conjugate update
    (non-Gaussian likelihoods, minibatches): ``LogLinear(1e-3, 0.1, steps)``, ``steps`` = 100.

    γ grows log-linearly from 10⁻³ at t = 1 to 0.1 at t = ``steps`` and stays there.
    A slow start keeps q(u) near the prior while Adam moves the
    hyperparameters from where Adam-only training would; the paper's 0.1 at
    the end (``benchmarks/WARMUP.md``, ``benchmarks/ROBUSTNESS.md``). A
    diagonal q(u) with a Gaussian likelihood on the full data gets
    ``warm_up(DIAGONAL_WARM_UP_STEPS)`` (``benchmarks/DIAGONAL.md``), and q(u) trained alone
    ``warm_up(ALONE_WARM_UP_STEPS)`` (``benchmarks/WARMUP.md``).
    """
    return LogLinear(1e-3, 1e-1, steps)


def as_schedule(gamma: Union[float, Schedule]) -> Schedule:
    """A number becomes :class:`Constant`; a callable is returned as it is."""
    if callable(gamma):
        return gamma
    return Constant(gamma)
