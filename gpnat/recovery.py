r"""Recovery: roll a failed training iteration back to the last good state and go on with smaller steps.

A natural-gradient step can be valid (q(u) a proper Gaussian) and still send
the ELBO to −1e200; an Adam step can leave a q(u) stored in natural
coordinates outside the positive-definite cone. :func:`gpnat.train` guards
every iteration with a :class:`Recovery` policy:

* an iteration is **bad** when the loss or a gradient is not finite, when the
  minibatch loss collapses (rises above the running reference by more than
  ``collapse`` × max(abs(reference), 1) + ``noise`` × spread, where the spread
  is a running average of the good losses' distance from the reference: the
  minibatch noise), when no valid natural step exists, when
  the loss at the natural step's proposal (on the same batch) is not finite or
  rises by more than ``proposal_rtol`` × max(abs(loss), 1), or when an Adam step
  leaves q(u) invalid;
* a bad iteration restores the last good state (every model variable, both
  optimizers' slots and counters) bitwise, multiplies γ by ``backoff`` (and
  Adam's learning rate too where Adam may be the cause: in Adam-only
  training, or after two bad iterations in a row), and keeps them lower until
  ``patience`` good iterations in a row have passed (then each factor is
  divided by ``backoff`` again, up to 1);
* training raises only after ``max_consecutive`` bad iterations in a row; the
  model then holds its last good state.

The last good state is the state at the start of the last iteration whose loss
and gradients were found acceptable; keeping a copy costs one copy of the
variables per iteration, no extra evaluation.
"""
import math
from dataclasses import dataclass
from numbers import Real
from typing import Optional, Sequence

import gpflow
import numpy as np
import tensorflow as tf

from .checks import check_count

__all__ = ["Recovery", "REASONS"]

#: why an iteration was rolled back (the codes recorded in ``History.failure``)
REASONS = {
    0: "",
    1: "the loss or a gradient is not finite",
    2: "the minibatch ELBO collapsed",
    3: "no valid natural-gradient step",
    4: "the loss at the natural step's proposal is not finite or rose",
    5: "the Adam step left q(u) invalid (not a proper Gaussian)",
    6: "the gamma schedule gave a step size that is not a positive finite number",
    7: "the minibatch from the tf.data.Dataset contains NaN or inf, or a Y outside the likelihood's support",
}

#: failures that retrying cannot mend: training rolls back and stops at once
FATAL = (6, 7)


@dataclass(frozen=True)
class Recovery:
    """Settings of the rollback-and-retry policy of :func:`gpnat.train` (see the module docs).

    :param backoff: factor in (0, 1) applied to γ after each bad iteration, and
        to Adam's learning rate where Adam may be the cause (Adam-only
        training, an Adam step that left q(u) invalid, or a second bad
        iteration in a row).
    :param patience: good iterations in a row before the factor is divided by
        ``backoff`` again (never above 1).
    :param max_consecutive: bad iterations in a row after which training
        raises (recovery is impossible).
    :param collapse: a minibatch loss above reference + collapse ×
        max(abs(reference), 1) + noise × spread counts as a collapse; the
        reference is an exponential moving average (weight ``smoothing``) of
        good losses, the spread one (weight ``noise_smoothing``) of their
        distances abs(loss − reference) from it, each counted at most
        ``noise`` spreads (so excursions accepted under the collapse ×
        max(abs(reference), 1) term cannot widen the limit step by step).
        ``math.inf`` turns the test off.
    :param smoothing: weight of the old reference in that average.
    :param noise: how many spreads of minibatch noise a loss may rise above
        the reference on top of ``collapse`` × max(abs(reference), 1). Without
        this term a loss near zero, or a heavy-tailed minibatch (naval, power),
        was rolled back as a collapse. In ``benchmarks/COLLAPSE.md`` minibatch
        noise rose at most 14 spreads; natural-gradient blow-ups on naval rose
        up to 2,080.
    :param noise_smoothing: weight of the old spread in its average.
    :param check_proposal: evaluate the loss at the natural step's proposal on
        the same batch and roll back when it is not finite or rises.
        ``True`` checks every iteration, ``False`` never. ``None`` (default)
        checks where it is free, in alternating mode, whose Adam half
        evaluates the loss there anyway; and in fused and natural-only mode
        on minibatches, at the iterations whose γ (after recovery's factor)
        is at least ``proposal_check_gamma``, where it costs one more loss
        evaluation. Chosen by ``benchmarks/bench_robustness.py``: on
        minibatches at γ = 1 it raised the final ELBO of 3 runs of 6, by up
        to 31 nats, and lifted a Student-t run from 19 nats below Adam-only
        to 2 above it (it lowered one by 5); on full batches, and at
        γ ≤ 0.1 (the default schedules), it changed little or nothing for
        about a fifth more time per iteration (see ROBUSTNESS.md).
    :param proposal_check_gamma: the γ from which ``check_proposal=None``
        checks in fused and natural-only mode on minibatches.
    :param proposal_rtol: the rise allowed at the proposal, relative to
        max(abs(loss), 1).
    """

    backoff: float = 0.5
    patience: int = 50
    max_consecutive: int = 25
    collapse: float = 1.0
    smoothing: float = 0.9
    noise: float = 20.0
    noise_smoothing: float = 0.99
    check_proposal: Optional[bool] = None
    proposal_check_gamma: float = 0.5
    proposal_rtol: float = 1e-3

    def __post_init__(self):
        for name in ("patience", "max_consecutive"):  # stored as int (the dataclass is frozen)
            object.__setattr__(self, name, check_count(getattr(self, name), f"Recovery.{name}"))
        for name in ("backoff", "collapse", "smoothing", "noise", "noise_smoothing", "proposal_check_gamma",
                     "proposal_rtol"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
                raise ValueError(f"Recovery.{name} must be a number, got {value!r}")
        if not (self.check_proposal is None or isinstance(self.check_proposal, (bool, np.bool_))):
            raise ValueError(f"Recovery.check_proposal must be True, False or None, got {self.check_proposal!r}")
        if not 0.0 < self.backoff < 1.0:
            raise ValueError(f"Recovery.backoff must be in (0, 1), got {self.backoff!r}")
        if not self.collapse > 0.0:
            raise ValueError(f"Recovery.collapse must be positive, got {self.collapse!r}")
        if not self.noise >= 0.0:
            raise ValueError(f"Recovery.noise must be non-negative, got {self.noise!r}")
        for name in ("smoothing", "noise_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"Recovery.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not (self.proposal_check_gamma >= 0.0 and math.isfinite(self.proposal_check_gamma)):
            raise ValueError(
                f"Recovery.proposal_check_gamma must be finite and non-negative, got {self.proposal_check_gamma!r}")
        if not self.proposal_rtol >= 0.0:
            raise ValueError(f"Recovery.proposal_rtol must be non-negative, got {self.proposal_rtol!r}")


#: what ``recovery=None`` means: the first bad iteration is rolled back and raises
NO_RECOVERY = Recovery(max_consecutive=1, check_proposal=False)


def _all_finite(tensors) -> tf.Tensor:
    checks = [tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


class Guard(tf.Module):
    """The state of a :class:`Recovery` policy during one call of :func:`gpnat.train`.

    Holds a copy of ``variables`` (the last good state) and the policy's
    counters, all as ``tf.Variable`` s, so that it works inside the compiled
    iteration and is checkpointed with it.
    """

    def __init__(self, policy: Recovery, variables: Sequence[tf.Variable]):
        super().__init__(name="recovery")
        self.policy = policy
        self._state = list(variables)
        self.snapshot = [
            tf.Variable(v.read_value(), trainable=False, shape=v.shape, dtype=v.dtype) for v in self._state
        ]
        dtype = gpflow.default_float()
        self.scale = tf.Variable(1.0, dtype=dtype, trainable=False, name="scale")  # on γ
        self.adam_scale = tf.Variable(1.0, dtype=dtype, trainable=False, name="adam_scale")
        self.reference = tf.Variable(0.0, dtype=dtype, trainable=False, name="reference")
        self.has_reference = tf.Variable(False, trainable=False, name="has_reference")
        self.spread = tf.Variable(0.0, dtype=dtype, trainable=False, name="spread")
        self.has_spread = tf.Variable(False, trainable=False, name="has_spread")
        self.streak = tf.Variable(0, dtype=tf.int64, trainable=False, name="streak")
        self.consecutive = tf.Variable(0, dtype=tf.int64, trainable=False, name="consecutive")
        self.total = tf.Variable(0, dtype=tf.int64, trainable=False, name="total")

    @property
    def counters(self) -> list:
        """The policy's state besides the snapshot: γ's and Adam's factors, the reference loss, its
        spread and the streak counters."""
        return [self.scale, self.adam_scale, self.reference, self.has_reference, self.spread, self.has_spread,
                self.streak, self.consecutive, self.total]

    # ------------------------------------------------------------- checks
    def acceptable(self, loss: tf.Tensor, grads) -> tf.Tensor:
        """Reason code (int32): 0 when loss and gradients are finite and the loss has not collapsed."""
        finite = _all_finite([loss] + list(grads))
        p = self.policy
        limit = self.reference + p.collapse * tf.maximum(tf.abs(self.reference), 1.0) + p.noise * self.spread
        collapsed = tf.logical_and(self.has_reference, loss > limit)
        return tf.where(finite, tf.where(collapsed, 2, 0), 1)

    def proposal_acceptable(self, loss_at: tf.Tensor, loss: tf.Tensor, grads=()) -> tf.Tensor:
        """True when the loss at a proposal (same batch) is finite and has not risen."""
        rise = self.policy.proposal_rtol * tf.maximum(tf.abs(loss), 1.0)
        return tf.logical_and(_all_finite([loss_at] + list(grads)), loss_at <= loss + rise)

    # ------------------------------------------------------------- state
    def save(self) -> None:
        for copy, variable in zip(self.snapshot, self._state):
            copy.assign(variable)

    def restore(self) -> None:
        for copy, variable in zip(self.snapshot, self._state):
            variable.assign(copy)

    def update(self, good: tf.Tensor, loss: tf.Tensor, blame_adam: tf.Tensor) -> None:
        """Counters after an iteration: back off after a bad one, recover after ``patience`` good ones.

        γ's factor backs off after every bad iteration; Adam's only when
        ``blame_adam`` (Adam may have caused it).
        """
        p = self.policy
        dtype = self.scale.dtype
        streak = tf.where(good, self.streak + 1, tf.zeros_like(self.streak))
        regrow = streak >= p.patience
        one = tf.ones([], dtype)

        def next_factor(factor, back_off):
            grown = tf.where(regrow, tf.minimum(factor / p.backoff, one), factor)
            return tf.where(back_off, factor * p.backoff, grown)

        bad = tf.logical_not(good)
        self.scale.assign(next_factor(self.scale, bad))
        self.adam_scale.assign(next_factor(self.adam_scale, tf.logical_and(bad, blame_adam)))
        self.streak.assign(tf.where(regrow, tf.zeros_like(streak), streak))
        self.consecutive.assign(tf.where(good, tf.zeros_like(self.consecutive), self.consecutive + 1))
        self.total.assign_add(tf.where(good, tf.constant(0, tf.int64), tf.constant(1, tf.int64)))
        loss = tf.cast(loss, dtype)
        # the spread (minibatch noise) from the distance to the reference before this loss joins it,
        # counted at most `noise` spreads: the part of a rise that only the collapse × |reference| term
        # let through is not noise, and must not widen the limit for the next one
        distance = tf.abs(loss - self.reference)
        distance = tf.where(self.has_spread, tf.minimum(distance, p.noise * self.spread), distance)
        spread = tf.where(self.has_spread, p.noise_smoothing * self.spread + (1 - p.noise_smoothing) * distance,
                          distance)
        gets_spread = tf.logical_and(good, self.has_reference)
        self.spread.assign(tf.where(gets_spread, spread, self.spread))
        self.has_spread.assign(tf.logical_or(self.has_spread, gets_spread))
        average = tf.where(self.has_reference, p.smoothing * self.reference + (1 - p.smoothing) * loss, loss)
        self.reference.assign(tf.where(good, average, self.reference))
        self.has_reference.assign(tf.logical_or(self.has_reference, good))
