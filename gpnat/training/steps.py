r"""One training iteration per mode, each an explicit function ``step(parts, X, Y) -> StepResult``.

Every step is guarded by recovery (:class:`gpnat.recovery.Guard`):

1. evaluate the loss and its gradients on the batch, and check them
   (:meth:`~gpnat.recovery.Guard.acceptable`); a good state is saved;
2. take the mode's updates;
3. if anything failed, restore the saved state; update the guard's counters.

A run ends with a pass that checks the state the last iteration left as step
1 would (``check_only``), so that the last iteration's updates are checked
too: its updates are discarded (restored) whatever the check finds, and a
state that fails it is rolled back to the last good one (:func:`_checking`).

The modes:

* :func:`alternating`: natural step on q(u), then Adam on the hyperparameters
  with the gradient evaluated at the updated q(u) (two evaluations; the
  second also checks the loss at the proposal, for free);
* :func:`fused`: one evaluation feeds both updates;
* :func:`adam_only`: Adam on every trainable variable, q(u) included;
* :func:`natgrad_only`: natural steps on q(u), hyperparameters fixed.

They work eagerly and inside ``tf.function`` / ``tf.while_loop``.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import gpflow
import tensorflow as tf

from ..natgrad import NaturalGradient
from ..recovery import FATAL, Guard, _all_finite
from .distributed import loss_and_gradients

__all__ = ["StepResult", "Parts", "alternating", "fused", "adam_only", "natgrad_only", "STEPS"]


class StepResult(NamedTuple):
    """What one iteration did (scalar tensors)."""

    loss: tf.Tensor  #: the loss on the batch before the iteration's updates
    failure: tf.Tensor  #: int32: 0, or why the iteration was rolled back (gpnat.recovery.REASONS)
    gamma: tf.Tensor  #: γ used by the natural step (0 when rolled back or rejected; NaN without one)
    rejections: tf.Tensor  #: int64: natural-step proposals rejected
    scale: tf.Tensor  #: recovery's factor on γ (on Adam's rate in Adam-only training) in force


def result_dtypes() -> StepResult:
    """The dtypes of a StepResult's fields, for the buffers of the compiled loop."""
    f = gpflow.default_float()
    return StepResult(f, tf.int32, f, tf.int64, f)


@dataclass
class Parts:
    """What the step functions act on."""

    model: tf.Module  #: has ``training_loss((X, Y))`` (or ``training_loss()``, see ``takes_data``)
    qs: Sequence  #: every q(u): gpnat.VariationalGaussian or gpnat.variational.GpflowQ
    q_vars: List[tf.Variable]  #: every q(u)'s stored variables, in order
    adam_vars: List[tf.Variable]  #: what Adam trains
    natgrad: Optional[NaturalGradient]
    adam: Optional[tf.Module]  #: a built tf_keras Adam, or None
    adam_lr: Optional[float]
    guard: Guard
    #: roll back when the loss at the proposal rises (same batch), at iterations with γ ≥ this
    #: (0: every iteration; None: never)
    check_from_gamma: Optional[float]
    counter: tf.Variable  #: iterations run (int64)
    takes_data: bool = True  #: False for a gpflow model that holds its data (``training_loss()``)
    strategy: Optional[tf.distribute.Strategy] = None  #: data-parallel replicas, or None
    #: under ``strategy``: batches arrive as each replica's shard (a Dataset), not as global batches (arrays)
    sharded: bool = False

    def loss(self, batch) -> tf.Tensor:
        """The model's training loss on the batch (on this device; see :func:`_loss`)."""
        return self.model.training_loss(batch) if self.takes_data else self.model.training_loss()


# ----------------------------------------------------------------- helpers
def _cond(condition, true_fn, false_fn):
    """``true_fn()`` where ``condition`` holds, else ``false_fn()``: Python eagerly, ``tf.cond`` in a graph."""
    if tf.executing_eagerly():
        return true_fn() if bool(condition) else false_fn()
    return tf.cond(condition, true_fn, false_fn)


def _when(condition, fn) -> None:
    """Run ``fn`` only where ``condition`` holds (eagerly or in a graph)."""
    _cond(condition, lambda: (fn(), tf.constant(True))[1], lambda: tf.constant(False))


def _fail_unless(failure, ok, code):
    """The first failure wins: ``code`` where nothing failed before and ``ok`` is False."""
    return tf.where(tf.logical_and(tf.equal(failure, 0), tf.logical_not(ok)), code, failure)


def _loss_and_grads(p: Parts, batch, variables, data_ok=None):
    """(loss, gradients, data_ok): the batch's loss and its gradients; under a strategy, summed over
    the replicas' shards, and ``data_ok`` (per replica there) combined by the same all-reduce."""
    if p.strategy is not None:
        return loss_and_gradients(p.strategy, p.loss, batch, variables, p.sharded, data_ok)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(variables)
        loss = p.loss(batch)
    return loss, tape.gradient(loss, variables), data_ok


def _loss(p: Parts, batch) -> tf.Tensor:
    """The batch's loss alone (summed over the replicas' shards under a strategy)."""
    return p.loss(batch) if p.strategy is None else _loss_and_grads(p, batch, [])[0]


def _begin(p: Parts, batch, variables, data_ok=None):
    """Evaluate and check; save the state when it is good. Returns (loss, grads, failure).

    ``data_ok`` False (a streamed batch held NaN or inf, replaced by zeros
    before it reached the model) fails the iteration with code 7; the state
    is saved all the same (the batch is bad, not the state the last iteration
    left), so the rollback keeps the last iteration's updates.
    """
    loss, grads, data_ok = _loss_and_grads(p, batch, variables, data_ok)
    failure = p.guard.acceptable(loss, grads)
    save = tf.equal(failure, 0)
    if data_ok is not None:
        failure = tf.where(data_ok, failure, tf.constant(7, failure.dtype))
        save = tf.logical_or(save, tf.logical_not(data_ok))
    _when(save, p.guard.save)
    return loss, grads, failure


def _natural(p: Parts, grads, failure):
    """The natural step at recovery's γ factor. Returns (failure, γ, rejections).

    A γ from the schedule that is not positive and finite fails the iteration
    with code 6, whatever else failed: retrying cannot mend it.
    """
    step, gamma_valid = p.natgrad._step(p.qs, grads, p.guard.scale, check_gamma=False)
    failure = _fail_unless(failure, step.accepted, 3)
    return tf.where(gamma_valid, failure, tf.constant(6, failure.dtype)), step.gamma, step.rejections


def _adam(p: Parts, grads, failure) -> None:
    """An Adam step, at recovery's factor on the rate, where nothing has failed."""
    def apply():
        p.adam.learning_rate.assign(tf.cast(p.adam_lr * p.guard.adam_scale, p.adam.learning_rate.dtype))
        p.adam.apply_gradients(zip(grads, p.adam_vars))

    _when(tf.equal(failure, 0), apply)


def _check_proposal(p: Parts, batch, loss, failure, gamma):
    """One more loss evaluation at the proposal, at iterations with γ ≥ ``check_from_gamma``."""
    if p.check_from_gamma is None:
        return failure

    def check():
        return _fail_unless(failure, p.guard.proposal_acceptable(_loss(p, batch), loss), 4)

    if p.check_from_gamma <= 0.0:
        return check()
    return _cond(gamma >= tf.cast(p.check_from_gamma, gamma.dtype), check, lambda: tf.identity(failure))


#: the failure code that marks a checking pass inside a step: nothing may update, all is restored
CHECKING = -1


def _checking(failure, check_only):
    """The failure code the rest of a step works with: :data:`CHECKING` in a checking pass.

    A checking pass (``check_only`` True) evaluates and checks the state as
    every iteration begins, then runs the step with this code, so that Adam
    does not step and :func:`_end` restores the saved state: the state the
    check found good (saved by :func:`_begin`), or the last good one before
    it. The step's other work is done and discarded, once per run; a mask
    instead of a ``tf.cond`` around the step, which cost up to a fifth of a
    small fused iteration.
    """
    if check_only is None:
        return failure
    return tf.where(check_only, tf.constant(CHECKING, failure.dtype), failure)


def _end(p: Parts, loss, failure, gamma, rejections, blame_adam, check_only=None, checked=None) -> StepResult:
    """Restore the saved state after a failure, update recovery's counters, count the iteration.

    In a checking pass (``check_only``, see :func:`_checking`) the counters are
    kept and nothing is counted; the result's failure is the check's
    (``checked``), 0 for a streamed batch that is not finite, which says
    nothing about the state.
    """
    good = tf.equal(failure, 0)
    _when(tf.logical_not(good), p.guard.restore)
    scale = (p.guard.scale if p.natgrad is not None else p.guard.adam_scale).read_value()
    counters = [c.read_value() for c in p.guard.counters] if check_only is not None else []
    p.guard.update(good, loss, blame_adam)
    fatal = tf.reduce_any(tf.equal(failure, tf.constant(FATAL, failure.dtype)))  # stop the loop now
    limit = tf.constant(p.guard.policy.max_consecutive, p.guard.consecutive.dtype)
    p.guard.consecutive.assign(tf.where(fatal, limit, p.guard.consecutive))
    if p.natgrad is not None:
        gamma = tf.where(good, gamma, tf.zeros_like(gamma))
    if check_only is None:
        p.counter.assign_add(1)
        return StepResult(loss, failure, gamma, rejections, scale)
    for counter, value in zip(p.guard.counters, counters):
        counter.assign(tf.where(check_only, value, counter))
    p.counter.assign_add(tf.where(check_only, tf.constant(0, p.counter.dtype), tf.constant(1, p.counter.dtype)))
    found = tf.where(tf.equal(checked, 7), tf.zeros_like(checked), checked)
    return StepResult(loss, tf.where(check_only, found, failure), gamma, rejections, scale)


def _no_natural_step():
    return tf.constant(float("nan"), gpflow.default_float()), tf.constant(0, tf.int64)


# ------------------------------------------------------------------ modes
def alternating(p: Parts, X, Y, data_ok=None, check_only=None) -> StepResult:
    """Natural step on q(u), then Adam on the hyperparameters at the updated q(u)."""
    batch = (X, Y)
    loss, grads, checked = _begin(p, batch, p.q_vars, data_ok)
    failure, gamma, rejections = _natural(p, grads, _checking(checked, check_only))
    loss_at, hyper_grads, _ = _loss_and_grads(p, batch, p.adam_vars)
    if p.check_from_gamma is not None:  # 0 here: alternating mode checks every iteration
        fine = p.guard.proposal_acceptable(loss_at, loss, hyper_grads)
    else:
        fine = _all_finite([loss_at] + list(hyper_grads))
    failure = _fail_unless(failure, fine, 4)
    _adam(p, hyper_grads, failure)
    # Adam may be the cause only when the last iteration failed too
    return _end(p, loss, failure, gamma, rejections, p.guard.consecutive > 0, check_only, checked)


def fused(p: Parts, X, Y, data_ok=None, check_only=None) -> StepResult:
    """One loss-and-gradient evaluation feeds the natural step and Adam."""
    batch = (X, Y)
    n = len(p.q_vars)
    loss, grads, checked = _begin(p, batch, p.q_vars + p.adam_vars, data_ok)
    failure, gamma, rejections = _natural(p, grads[:n], _checking(checked, check_only))
    failure = _check_proposal(p, batch, loss, failure, gamma)
    _adam(p, grads[n:], failure)
    return _end(p, loss, failure, gamma, rejections, p.guard.consecutive > 0, check_only, checked)


def natgrad_only(p: Parts, X, Y, data_ok=None, check_only=None) -> StepResult:
    """Natural steps on q(u); the hyperparameters stay fixed."""
    batch = (X, Y)
    loss, grads, checked = _begin(p, batch, p.q_vars, data_ok)
    failure, gamma, rejections = _natural(p, grads, _checking(checked, check_only))
    failure = _check_proposal(p, batch, loss, failure, gamma)
    return _end(p, loss, failure, gamma, rejections, tf.constant(False), check_only, checked)


def adam_only(p: Parts, X, Y, data_ok=None, check_only=None) -> StepResult:
    """Adam on every trainable variable, q(u) included.

    Only here can a step leave q(u) outside the Gaussian family (e.g. natural
    storage with a precision that is no longer positive definite), so only
    here is q(u) checked after the step; for mean/Cholesky storage that check
    is O(M²) (finite, nonzero diagonal), not a Cholesky.
    """
    loss, grads, checked = _begin(p, (X, Y), p.adam_vars, data_ok)
    failure = _checking(checked, check_only)
    _adam(p, grads, failure)
    if p.qs:
        valid = tf.reduce_all(tf.stack([q.is_valid() for q in p.qs]))
        failure = _fail_unless(failure, valid, 5)
    gamma, rejections = _no_natural_step()
    return _end(p, loss, failure, gamma, rejections, tf.constant(True), check_only, checked)


#: the step function of each mode: (parts, X, Y, data_ok=None, check_only=None) -> StepResult, where
#: ``data_ok`` (a scalar bool tensor, or None) says whether a streamed batch was finite, and
#: ``check_only`` (a bool tensor, or None) makes the call a checking pass (:func:`_checking`)
STEPS: Dict[str, Callable[..., StepResult]] = {
    "alternating": alternating,
    "fused": fused,
    "natgrad": natgrad_only,
    "adam": adam_only,
}
