r"""Hybrid training: natural-gradient steps on q(u) alternating with Adam on everything else.

:func:`train` runs the recipe of Salimbeni, Eleftheriadis & Hensman (2018):
each iteration takes a natural-gradient step on every q(u) of the model and an
Adam step on all other trainable variables (kernel, likelihood, inducing
inputs, mean function). The whole iteration is one compiled ``tf.function``.

Modes (chosen by the arguments):

* alternating (default): natural-gradient step, then an Adam step evaluated at
  the updated q(u) (two loss-and-gradient evaluations);
* fused (``fused=True``): one loss-and-gradient evaluation feeds both updates;
* Adam-only (``natgrad=None``): Adam on all trainable variables, q(u) included;
* natgrad-only (``adam_lr=None``): hyperparameters stay fixed.
"""
import json
import math
import os
import shutil
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import gpflow
import numpy as np
import tensorflow as tf
from gpflow.keras import tf_keras

from .natgrad import NaturalGradient, NaturalGradientError
from .recovery import NO_RECOVERY, REASONS, Guard, Recovery, _all_finite
from .schedules import LogLinear
from .variational import VariationalGaussian

__all__ = ["train", "History", "variational_distributions"]



class _DefaultNaturalGradient:
    """Sentinel for train's default optimizer: a fresh NaturalGradient with a short warm-up."""

    def __repr__(self) -> str:
        return "NaturalGradient(gamma=LogLinear(1e-3, 0.1, 20))"

    @staticmethod
    def make() -> "NaturalGradient":
        return NaturalGradient(gamma=LogLinear(1e-3, 1e-1, 20))


_DEFAULT = _DefaultNaturalGradient()


@dataclass
class History:
    """What happened in each iteration of :func:`train`.

    Lists have one entry per iteration run (including those restored from a
    checkpoint): ``iteration`` (1-based), ``elbo`` (the minibatch ELBO estimate,
    −loss, before the iteration's updates), ``gamma`` (γ used by the natural
    step; 0 when rejected; NaN without natural gradients), ``rejections``
    (proposals rejected), ``time`` (wall-clock seconds since the start of
    training at the end of the iteration, excluding callbacks and checkpoint
    writing; the first iteration includes tracing and compiling the step,
    which ``compile_time`` reports), ``failure`` (0, or why the iteration was
    rolled back to the last good state: a code of :data:`gpnat.recovery.REASONS`)
    and ``scale`` (the factor recovery puts on γ, or on Adam's learning rate in
    Adam-only training; below 1 after a recovery). ``mode`` names the training mode and ``num_traces`` counts how
    often the compiled iteration was traced (1 means no retracing).
    """

    iteration: List[int] = field(default_factory=list)
    elbo: List[float] = field(default_factory=list)
    gamma: List[float] = field(default_factory=list)
    rejections: List[int] = field(default_factory=list)
    time: List[float] = field(default_factory=list)
    failure: List[int] = field(default_factory=list)
    scale: List[float] = field(default_factory=list)
    mode: str = ""
    num_traces: int = 0
    compile_time: float = 0.0

    @property
    def recoveries(self) -> int:
        """Iterations rolled back to the last good state (``failure`` not 0)."""
        return int(sum(1 for f in self.failure if f))

    def recovered_at(self) -> List[int]:
        """The iterations that were rolled back, each with its reason in :data:`gpnat.recovery.REASONS`."""
        return [it for it, f in zip(self.iteration, self.failure) if f]

    @property
    def total_rejections(self) -> int:
        """Rejected proposals over the whole run."""
        return int(sum(self.rejections))

    def __len__(self) -> int:
        return len(self.iteration)

    def to_json(self, path: Union[str, Path]) -> None:
        """Write the history to a JSON file (NaN written as null)."""
        data = asdict(self)
        data["gamma"] = [None if math.isnan(g) else g for g in self.gamma]
        Path(path).write_text(json.dumps(data))

    @classmethod
    def from_json(cls, path: Union[str, Path]) -> "History":
        data = json.loads(Path(path).read_text())
        data["gamma"] = [math.nan if g is None else g for g in data["gamma"]]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def plot(self, ax=None, x: str = "iteration", label: Optional[str] = None):
        """Draw the ELBO trace with matplotlib (optional dependency); returns the axes.

        :param x: ``"iteration"`` or ``"time"`` (wall-clock seconds).
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - matplotlib is an install requirement
            raise ImportError("History.plot needs matplotlib: pip install matplotlib") from e
        if x not in ("iteration", "time"):
            raise ValueError(f"x must be 'iteration' or 'time', got {x!r}")
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        ax.plot(getattr(self, x), self.elbo, label=label or self.mode)
        ax.set_xlabel("iteration" if x == "iteration" else "wall-clock time (s)")
        ax.set_ylabel("ELBO estimate")
        if label or self.mode:
            ax.legend()
        return ax


def variational_distributions(model: tf.Module) -> List[VariationalGaussian]:
    """Every q(u) (:class:`~gpnat.variational.VariationalGaussian`) inside ``model``."""
    qs = [m for m in model.submodules if isinstance(m, VariationalGaussian)]
    if isinstance(model, VariationalGaussian):
        qs.insert(0, model)
    return qs


# ----------------------------------------------------------------------------- data
def _as_float(a) -> np.ndarray:
    return np.asarray(a, dtype=gpflow.default_float())


def _check_arrays(data) -> Tuple[np.ndarray, np.ndarray]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("data must be a tuple (X [N, D], Y [N, P]) or a tf.data.Dataset")
    X, Y = (_as_float(a) for a in data)
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(f"X must be [N, D] and Y [N, P], got shapes {list(X.shape)} and {list(Y.shape)}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows, got {X.shape[0]} and {Y.shape[0]}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or inf")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y contains NaN or inf")
    return X, Y


class _ArrayBatches:
    """Minibatches of arrays held on the device, drawn in-graph.

    Batch t of epoch e is a slice of a permutation that depends only on (seed, e),
    so training resumed from a checkpoint draws exactly the same batches.
    """

    def __init__(self, X, Y, batch_size: Optional[int], seed: int):
        self.X, self.Y = tf.constant(X), tf.constant(Y)
        self.N = X.shape[0]
        self.batch_size = batch_size
        self.seed = seed
        if batch_size is not None:
            self.batches_per_epoch = max(self.N // batch_size, 1)
            # the current epoch's permutation, recomputed only when the epoch changes
            self._epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)
            self._perm = tf.Variable(tf.range(self.N, dtype=tf.int32), trainable=False)

    def _permutation(self, epoch: tf.Tensor) -> tf.Tensor:
        keys = tf.random.stateless_uniform(
            [self.N], seed=tf.stack([tf.constant(self.seed, tf.int64), epoch]), dtype=tf.float64
        )
        return tf.argsort(keys)  # a random permutation, also under XLA

    def batch(self, step: tf.Tensor):
        if self.batch_size is None or self.batch_size >= self.N:
            return self.X, self.Y
        step = tf.cast(step, tf.int64)
        epoch = step // self.batches_per_epoch
        k = step % self.batches_per_epoch
        perm = tf.cond(
            tf.equal(epoch, self._epoch),
            lambda: self._perm.read_value(),
            lambda: self._perm.assign(self._permutation(epoch)),
        )
        self._epoch.assign(epoch)
        idx = perm[k * self.batch_size:(k + 1) * self.batch_size]
        return tf.gather(self.X, idx), tf.gather(self.Y, idx)


def _dataset_batches(dataset: tf.data.Dataset, batch_size: Optional[int], seed: int):
    element_rank = len(dataset.element_spec[0].shape)
    if element_rank == 1:  # single examples
        if batch_size is None:
            raise ValueError("a Dataset of single examples needs batch_size")
        dataset = dataset.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size, drop_remainder=True)
    elif batch_size is not None:
        raise ValueError("the Dataset already yields batches: leave batch_size=None")
    dtype = gpflow.default_float()
    return dataset.map(lambda x, y: (tf.cast(x, dtype), tf.cast(y, dtype))).repeat()


# ---------------------------------------------------------------------- checkpoints
def _latest_checkpoint(directory: Path) -> Optional[Path]:
    pointer = directory / "latest"
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    prefix = directory / name / "ckpt"
    return prefix if (directory / name).is_dir() else None


def _remove_unfinished_saves(directory: Path) -> None:
    """Remove the temporary folders and pointer files of saves that were killed midway."""
    if not directory.is_dir():
        return
    for path in list(directory.glob(".tmp-*")) + list(directory.glob(".latest-*")):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _write_checkpoint(checkpoint: tf.train.Checkpoint, directory: Path, step: int,
                      history: History, keep: int = 2) -> Path:
    """Write to a temporary folder, rename it into place, then move the 'latest' pointer."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    checkpoint.write(str(tmp / "ckpt"))
    history.to_json(tmp / "history.json")
    final = directory / f"ckpt-{step:09d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer_tmp = directory / f".latest-{uuid.uuid4().hex}"
    pointer_tmp.write_text(final.name)
    os.replace(pointer_tmp, directory / "latest")
    old = sorted(p for p in directory.glob("ckpt-*") if p.is_dir())
    for p in old[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------- train
def train(
    model,
    data,
    *,
    iterations: int,
    natgrad: Optional[NaturalGradient] = _DEFAULT,  # type: ignore[assignment]
    adam_lr: Optional[float] = 0.01,
    batch_size: Optional[int] = None,
    fused: bool = False,
    compile: bool = True,
    jit_compile: bool = False,
    callbacks: Sequence[Callable[[int, History], None]] = (),
    progress: bool = True,
    checkpoint_dir: Optional[Union[str, Path]] = None,
    checkpoint_every: int = 100,
    seed: Optional[int] = None,
    recovery: Optional[Recovery] = Recovery(),
) -> History:
    r"""Train ``model`` by natural gradients on q(u) and Adam on its other variables.

    :param model: a model with q(u)s (e.g. :class:`gpnat.SVGP`) and a
        ``training_loss(data)`` method.
    :param data: ``(X [N, D], Y [N, P])`` arrays, or a ``tf.data.Dataset`` of
        single examples (with ``batch_size``) or of batches.
    :param iterations: total number of iterations (a run resumed from a
        checkpoint continues up to this number).
    :param natgrad: the :class:`~gpnat.NaturalGradient` optimizer (its γ may be
        a schedule); default ``NaturalGradient(gamma=LogLinear(1e-3, 0.1, 20))``,
        a short warm-up that keeps early steps small; ``None`` trains
        everything, q(u) included, with Adam alone.
    :param adam_lr: Adam's learning rate for the hyperparameters; ``None``
        keeps them fixed (natural gradients only).
    :param batch_size: B; ``None`` uses all data each iteration. Minibatches
        are drawn shuffled, epoch by epoch, from ``seed``; the model's
        ``num_data`` must be N so the ELBO is scaled by N / B.
    :param fused: one loss-and-gradient evaluation feeds both updates.
    :param compile: run each iteration as one ``tf.function`` (traced once).
    :param jit_compile: compile that function with XLA.
    :param callbacks: called as ``callback(iteration, history)`` after each iteration.
    :param progress: show a tqdm progress bar with the ELBO estimate and γ.
    :param checkpoint_dir: save model, optimizers' state and step counter every
        ``checkpoint_every`` iterations (and at the end); training resumes from
        the latest checkpoint found there.
    :param seed: seed of the minibatch order (default 0).
    :param recovery: what to do with a bad iteration (non-finite loss or
        gradient, collapsed ELBO, no valid natural step, an Adam step that
        leaves q(u) invalid): the default :class:`~gpnat.recovery.Recovery`
        rolls back to the last good state (model, both optimizers), lowers γ
        (and Adam's learning rate where Adam may be the cause) for a while, records it in the History
        (``failure``, ``scale``) and goes on. ``None`` rolls back and raises
        at the first bad iteration.
    :return: a :class:`History`.
    :raises NaturalGradientError: when recovery is impossible because no valid
        natural-gradient step can be made. The model holds its last good
        state; the History so far is attached as ``error.history``.
    :raises FloatingPointError: when recovery is impossible for another reason
        (the loss stays non-finite or collapsed, or Adam keeps leaving q(u)
        invalid); the model holds its last good state (``error.history`` as above).
    """
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    iterations = int(iterations)
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    if natgrad is _DEFAULT:
        natgrad = _DEFAULT.make()
    if natgrad is not None and not isinstance(natgrad, NaturalGradient):
        raise TypeError(f"natgrad must be a gpnat.NaturalGradient or None, got {natgrad!r}")
    if adam_lr is not None and not (isinstance(adam_lr, (int, float)) and math.isfinite(adam_lr) and adam_lr > 0):
        raise ValueError(f"adam_lr must be a positive finite number or None, got {adam_lr!r}")
    if natgrad is None and adam_lr is None:
        raise ValueError("nothing to train: natgrad and adam_lr are both None")
    if fused and (natgrad is None or adam_lr is None):
        raise ValueError("fused=True needs both natgrad and adam_lr")
    seed = 0 if seed is None else int(seed)

    qs = variational_distributions(model)
    if natgrad is not None and not qs:
        raise ValueError("the model has no q(u) (gpnat.VariationalGaussian) for natural gradients")
    q_vars = [v for q in qs for v in q.xi]
    q_ids = {id(v) for v in q_vars}
    hyper_vars = [v for v in model.trainable_variables if id(v) not in q_ids]
    adam_vars = hyper_vars if natgrad is not None else list(model.trainable_variables)
    if adam_lr is not None and not adam_vars:
        adam_lr = None  # nothing for Adam to do

    # data
    if isinstance(data, tf.data.Dataset):
        if getattr(model, "num_data", 0) is None:
            raise ValueError(
                "a tf.data.Dataset yields minibatches, so the model needs num_data = N (the "
                "number of training points) to scale the ELBO by N / B: construct it with num_data=N"
            )
        iterator = iter(_dataset_batches(data, batch_size, seed))
        source = None
    else:
        X, Y = _check_arrays(data)
        N = X.shape[0]
        if batch_size is not None and batch_size < N:
            num_data = getattr(model, "num_data", None)
            if num_data is None:
                raise ValueError(
                    f"minibatch training needs the model's num_data = N = {N} to scale the ELBO "
                    "by N / B: construct it with num_data=N"
                )
            if num_data != N:
                warnings.warn(f"model.num_data = {num_data} but the data have N = {N} rows")
        source = _ArrayBatches(X, Y, batch_size, seed)
        iterator = None

    adam = None
    if adam_lr is not None:
        adam = tf_keras.optimizers.Adam(learning_rate=adam_lr)
        adam.build(adam_vars)
    step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_iteration")
    mode = _mode_name(natgrad, adam, fused)
    policy = NO_RECOVERY if recovery is None else recovery
    check_proposal = policy.check_proposal
    if check_proposal is None:  # where it is free: the alternating Adam half evaluates there anyway
        check_proposal = mode == "alternating"
    if natgrad is None:
        check_proposal = False
    state = list(model.trainable_variables)
    if adam is not None:
        state += list(adam.variables)
    if natgrad is not None:
        state.append(natgrad.iterations)
    guard = Guard(policy, state)
    nan = tf.constant(float("nan"), gpflow.default_float())
    zero_int = tf.constant(0, tf.int64)

    def when(condition, fn):
        """Run ``fn`` only where ``condition`` holds (eagerly or in the compiled graph)."""
        if tf.executing_eagerly():
            if bool(condition):
                fn()
            return
        tf.cond(condition, lambda: (fn(), tf.constant(True))[1], lambda: tf.constant(False))

    def adam_step(grads):
        adam.learning_rate.assign(tf.cast(adam_lr * guard.adam_scale, adam.learning_rate.dtype))
        adam.apply_gradients(zip(grads, adam_vars))

    def loss_and_grads(batch, variables):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = model.training_loss(batch)
        return loss, tape.gradient(loss, variables)

    def fail_unless(reason, ok, code):
        """The first failure wins: ``code`` where nothing failed before and ``ok`` is False."""
        return tf.where(tf.logical_and(tf.equal(reason, 0), tf.logical_not(ok)), code, reason)

    def iteration(batch_X, batch_Y):
        """One guarded iteration; returns (loss, reason, γ used, rejections, scale)."""
        batch = (batch_X, batch_Y)
        if mode == "adam":
            watched = adam_vars
        elif mode == "fused":
            watched = q_vars + adam_vars
        else:
            watched = q_vars
        loss, grads = loss_and_grads(batch, watched)
        reason = guard.acceptable(loss, grads)
        when(tf.equal(reason, 0), guard.save)  # a good state: the one to come back to
        gamma, rejections = nan, zero_int
        if natgrad is not None:
            accepted = natgrad.apply_gradients(qs, grads[: len(q_vars)], scale=guard.scale)
            reason = fail_unless(reason, accepted, 3)
            gamma, rejections = natgrad.last_gamma.read_value(), natgrad.last_rejections.read_value()
        if mode == "adam":
            hyper_grads = grads
        elif mode == "fused":
            hyper_grads = grads[len(q_vars):]
        if mode == "alternating":  # Adam at the updated q(u)
            loss_at, hyper_grads = loss_and_grads(batch, adam_vars)
            fine = guard.proposal_acceptable(loss_at, loss, hyper_grads) if check_proposal else (
                _all_finite([loss_at] + list(hyper_grads)))
            reason = fail_unless(reason, fine, 4)
        elif check_proposal:  # fused or natgrad-only: one more evaluation, loss only
            fine = guard.proposal_acceptable(model.training_loss(batch), loss)
            reason = fail_unless(reason, fine, 4)
        if adam is not None:
            when(tf.equal(reason, 0), lambda: adam_step(hyper_grads))
        if mode == "adam" and qs:  # only here can a step leave q(u) invalid
            valid = tf.reduce_all(tf.stack([q.is_valid() for q in qs]))
            reason = fail_unless(reason, valid, 5)
        good = tf.equal(reason, 0)
        when(tf.logical_not(good), guard.restore)
        scale_used = guard.scale.read_value() if natgrad is not None else guard.adam_scale.read_value()
        # Adam may be the cause where it steps q(u), or when the last iteration failed too
        blame_adam = tf.constant(True) if mode == "adam" else guard.consecutive > 0
        guard.update(good, loss, blame_adam)
        step_counter.assign_add(1)
        gamma = tf.where(good, gamma, tf.zeros_like(gamma)) if natgrad is not None else gamma
        return loss, reason, gamma, rejections, scale_used

    if source is not None:  # arrays: the batch is drawn inside the (compiled) iteration
        def step_fn():
            return iteration(*source.batch(step_counter))
    else:
        step_fn = iteration
    if compile:
        step_fn = tf.function(step_fn, jit_compile=jit_compile, reduce_retracing=True)
    if source is not None:
        run_iteration = step_fn
    else:
        def run_iteration():
            return step_fn(*next(iterator))

    # checkpoints: restore if there is one
    history = History(mode=mode)
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        _remove_unfinished_saves(checkpoint_dir)
        trackables = dict(model=model, step=step_counter, recovery=guard)
        if natgrad is not None:
            trackables["natgrad"] = natgrad
        if adam is not None:
            trackables["adam"] = adam
        if iterator is not None:
            trackables["data"] = iterator
        checkpoint = tf.train.Checkpoint(**trackables)
        latest = _latest_checkpoint(checkpoint_dir)
        if latest is not None:
            checkpoint.read(str(latest)).assert_existing_objects_matched()
            saved = latest.parent / "history.json"
            if saved.exists():
                restored = History.from_json(saved)
                restored.mode, restored.num_traces = history.mode, 0
                history = restored

    start_step = int(step_counter.numpy())
    time_offset = history.time[-1] if history.time else 0.0
    bar = None
    if progress and iterations > start_step:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, initial=start_step, desc=f"gpnat {history.mode}", leave=True)
    t0 = time.perf_counter()
    outside = 0.0  # seconds spent in callbacks and checkpoints, not counted as training time
    try:
        for it in range(start_step + 1, iterations + 1):
            loss, reason, gamma, rejections, scale = run_iteration()
            reason = int(reason)
            history.iteration.append(it)
            history.elbo.append(-float(loss))
            history.gamma.append(float(gamma))
            history.rejections.append(int(rejections))
            history.failure.append(reason)
            history.scale.append(float(scale))
            history.time.append(time_offset + time.perf_counter() - t0 - outside)
            if it == start_step + 1 and compile:
                history.compile_time = history.time[-1] - time_offset
            if reason and int(guard.consecutive.numpy()) >= policy.max_consecutive:
                error = _training_error(it, reason, recovery, policy, natgrad, qs, history)
                error.history = history
                raise error
            if bar is not None:
                bar.update(1)
                postfix = {"elbo": f"{history.elbo[-1]:.4g}"}
                if natgrad is not None:
                    postfix["gamma"] = f"{history.gamma[-1]:.3g}"
                if history.recoveries:
                    postfix["recovered"] = history.recoveries
                bar.set_postfix(postfix, refresh=False)
            t_outside = time.perf_counter()
            for callback in callbacks:
                callback(it, history)
            if checkpoint is not None and (it % checkpoint_every == 0 or it == iterations):
                _write_checkpoint(checkpoint, checkpoint_dir, it, history)
            outside += time.perf_counter() - t_outside
    finally:
        if bar is not None:
            bar.close()
        if compile:
            history.num_traces = step_fn.experimental_get_tracing_count()
    return history


def _training_error(it, reason, recovery, policy, natgrad, qs, history) -> Exception:
    """The error raised when recovery is impossible (or disabled), naming what failed."""
    what = REASONS[reason]
    if recovery is None:
        tried = "recovery is off (recovery=None), so training stops at the first bad iteration"
    else:
        tried = (
            f"{policy.max_consecutive} iterations in a row were rolled back, with the step size "
            f"lowered to {history.scale[-1] * policy.backoff:.3g} of its value"
        )
    state = "the model holds its last good state (every variable and optimizer slot as it was)"
    if reason == 3:
        return NaturalGradientError(
            f"iteration {it}: no valid natural-gradient step: {natgrad.rejection_reason()} "
            f"{tried}; {state}."
        )
    if reason == 5:
        advice = (f"Use a smaller adam_lr, the MeanCholesky parametrisation (q(u) is stored in "
                  f"{[q.parametrisation for q in qs]}), or natural gradients for q(u).")
    else:
        advice = ("The steps have probably diverged, or the model cannot be evaluated at its "
                  "start: try a smaller gamma or adam_lr, or a warm-up schedule "
                  "(gpnat.schedules.LogLinear or IncreasingRate).")
    last = history.elbo[-1]
    return FloatingPointError(
        f"iteration {it}: {what} (ELBO estimate {last:.4g}); {tried}; {state}. {advice}"
    )


def _mode_name(natgrad, adam, fused) -> str:
    if natgrad is None:
        return "adam"
    if adam is None:
        return "natgrad"
    return "fused" if fused else "alternating"
