r"""``train``: the training loop, many iterations per compiled call.

The loop is short: validate the arguments, pick the mode's step function
(:mod:`gpnat.training.steps`), compile a chunk of iterations as one
``tf.while_loop`` inside one ``tf.function``, then call it chunk by chunk. The
host reads the per-iteration records back once per chunk and there runs the
progress bar, callbacks, checkpoints and the check that recovery is still
possible; recovery itself (rollback, backoff) runs inside the compiled loop.
"""
import inspect
import os
import time
import warnings
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import gpflow
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from gpflow.keras import tf_keras
from tensorflow.python.framework import ops as tf_ops

from ..checks import (
    check_count,
    check_fraction,
    check_outputs,
    check_positive,
    check_targets,
    support,
    targets_checked_by_caller,
    targets_fit,
)
from ..natgrad import NaturalGradient, NaturalGradientError
from ..parametrisations import Natural
from ..recovery import NO_RECOVERY, REASONS, Guard, Recovery
from ..schedules import ALONE_WARM_UP_STEPS, DIAGONAL_WARM_UP_STEPS, WARM_UP_STEPS, Constant, warm_up
from ..variational import variational_distributions
from .batches import NO_BATCHES, ArrayBatches, check_arrays, dataset_batches
from .cache import Compiled, configuration, forget, keep, lookup
from .checkpoints import latest_checkpoint, remove_unfinished_saves, restore, signature, write_checkpoint
from .distributed import call_size_agreement, check_strategy, distributed_batches, worker_checkpoint_dir
from .history import History
from .steps import STEPS, Parts, result_dtypes

__all__ = ["train"]


class _DefaultNaturalGradient:
    """Sentinel for train's default optimizer, chosen by the likelihood, the batch and the kernel
    (``benchmarks/ROBUSTNESS.md``, ``benchmarks/MIXING.md``).

    A Gaussian likelihood on the full data gets γ = 1 from the first step
    (exact in one step; a warm-up only lets the hyperparameters move while
    q(u) is still poor), or γ = 1/L where a kernel such as
    ``LinearCoregionalization`` mixes L latent GPs: a step is then damped
    block Jacobi, which converges for γ < 2/L at most (``bench_mixing.py``);
    γ = 1 diverged there. Everything else, a Gaussian likelihood on
    minibatches included, gets the paper's γ = 0.1 reached by the warm-up
    :func:`gpnat.schedules.warm_up` from 1e-3 over ``WARM_UP_STEPS`` = 100 steps
    (``benchmarks/WARMUP.md``): with minibatches γ = 1 jumps to each batch's
    optimal q(u), and ended 50 to 2,036 nats below the warm-up (and below
    Adam-only training) on UCI yacht, concrete and kin8nm, batch 128. A
    diagonal q(u) (``q_diag``) gets a warm-up on a Gaussian likelihood on
    the full data as well, over ``DIAGONAL_WARM_UP_STEPS`` = 20 steps: its
    natural step is not exact but damped Jacobi on the coupled means, and in
    ``benchmarks/DIAGONAL.md`` γ = 1 was rolled back in all 12 runs and ended
    below Adam-only in 7, where the short warm-up ended at or above Adam-only
    in all 12, without a rollback, and ahead of the 100-step one.
    """

    def __repr__(self) -> str:
        return ("NaturalGradient(1.0) for a Gaussian likelihood on the full data and a full-covariance q(u) "
                f"(1/L where a kernel mixes L latent GPs; {warm_up(DIAGONAL_WARM_UP_STEPS)!r} for a diagonal one), "
                f"else NaturalGradient({warm_up(WARM_UP_STEPS)!r}) ({ALONE_WARM_UP_STEPS} steps with adam_lr=None)")

    @staticmethod
    def make(model=None, full_batch: bool = True, hyperparameters_trained: bool = True) -> "NaturalGradient":
        if _conjugate(model, full_batch):
            return NaturalGradient(gamma=1.0 / _mixed_latent_gps(model))
        if _gaussian_full_data(model, full_batch):  # a diagonal q(u): benchmarks/DIAGONAL.md
            return NaturalGradient(gamma=warm_up(DIAGONAL_WARM_UP_STEPS))
        if not hyperparameters_trained:  # q(u) alone: benchmarks/WARMUP.md, "q(u) alone"
            return NaturalGradient(gamma=warm_up(ALONE_WARM_UP_STEPS))
        return NaturalGradient(gamma=warm_up())


def _gaussian_full_data(model, full_batch: bool) -> bool:
    return full_batch and isinstance(getattr(model, "likelihood", None), gpflow.likelihoods.Gaussian)


def _conjugate(model, full_batch: bool) -> bool:
    """Is a natural step of the right constant γ the conjugate update of q(u)? For a Gaussian
    likelihood on the full data with full-covariance q(u)s; a diagonal one (``q_diag``) is not
    conjugate even to a Gaussian likelihood."""
    return (_gaussian_full_data(model, full_batch)
            and not any(getattr(q, "q_diag", False) for q in variational_distributions(model)))


def _mixed_latent_gps(model) -> int:
    """L where the model's kernel mixes L latent GPs into its outputs (``LinearCoregionalization``), else 1."""
    kernel = getattr(model, "kernel", None)
    if isinstance(kernel, gpflow.kernels.IndependentLatent):
        return max(1, int(kernel.num_latent_gps))
    return 1


def _full_batch(data, batch_size) -> bool:
    """Does every iteration see all the data? Arrays with no ``batch_size`` (or one ≥ N) do;
    a ``tf.data.Dataset`` counts as minibatches."""
    if isinstance(data, tf.data.Dataset):
        return False
    if batch_size is None:
        return True
    try:
        return batch_size >= np.shape(data[0])[0]
    except (TypeError, IndexError, KeyError):
        return False


_DEFAULT = _DefaultNaturalGradient()


def _exact_step(model, natgrad: NaturalGradient, full_batch: bool) -> bool:
    """Is each natural step the conjugate update of q(u) for the current hyperparameters?

    It is for a Gaussian likelihood on the full data and full-covariance q(u)s
    with a constant γ in natural coordinates of 1, or of 1/L where a kernel such as
    ``LinearCoregionalization`` mixes L latent GPs (train's defaults there).
    With γ = 1 and unmixed latent GPs the step lands on the optimum, and
    alternating mode's Adam gradient, taken at the updated q(u), is the
    collapsed (SGPR) bound's, where fused mode's is taken at the optimum for
    the previous hyperparameters; in ``benchmarks/ROBUSTNESS.md`` ("A
    Gaussian likelihood on the full data") alternating ended higher on all
    six UCI sets and was ahead at equal time on four. With mixed latent GPs
    the step is damped block Jacobi; fused runs of γ = 1/L collapsed where
    alternating ones did not (``benchmarks/MIXING.md``). So ``fused=None``
    alternates there.
    """
    gamma = natgrad.gamma
    return (_conjugate(model, full_batch)
            and isinstance(gamma, Constant) and gamma.gamma == 1.0 / _mixed_latent_gps(model)
            and isinstance(natgrad.coordinates, Natural))


#: with ``steps_per_call="auto"``, a compiled call aims at this many seconds
#: (the progress bar and a KeyboardInterrupt answer within about that long)
SECONDS_PER_CALL = 0.25
#: and runs at most this many iterations
MAX_STEPS_PER_CALL = 1000


# ---------------------------------------------------------------------------- train
def train(
    model,
    data,
    *,
    iterations: int,
    natgrad: Optional[NaturalGradient] = _DEFAULT,  # type: ignore[assignment]
    adam_lr: Optional[float] = 0.03,
    adam_betas: Tuple[float, float] = (0.9, 0.999),
    batch_size: Optional[int] = None,
    fused: Optional[bool] = None,
    compile: bool = True,
    jit_compile: bool = False,
    callbacks: Union[Callable[[int, History], None], Sequence[Callable[[int, History], None]]] = (),
    progress: bool = True,
    checkpoint_dir: Optional[Union[str, Path]] = None,
    checkpoint_every: int = 100,
    seed: Optional[int] = None,
    recovery: Optional[Recovery] = Recovery(),
    steps_per_call: Union[int, str] = "auto",
    strategy: Optional[tf.distribute.Strategy] = None,
) -> History:
    r"""Train ``model`` by natural gradients on q(u) and Adam on its other variables.

    :param model: a model with q(u)s (e.g. :class:`gpnat.SVGP`) and a
        ``training_loss(data)`` method.
    :param data: ``(X [N, D], Y [N, P])`` arrays, or a ``tf.data.Dataset`` of
        single examples (with ``batch_size``) or of batches.
    :param iterations: total number of iterations (a run resumed from a
        checkpoint continues up to this number).
    :param natgrad: the :class:`~gpnat.NaturalGradient` optimizer (its γ may be
        a schedule). The default depends on the likelihood and the batch:
        ``NaturalGradient(1.0)`` for a Gaussian likelihood on the full data
        (exact in one step; ``NaturalGradient(1/L)`` where a kernel such as
        ``LinearCoregionalization`` mixes L latent GPs, where γ = 1 can
        diverge: ``benchmarks/MIXING.md``), else
        ``NaturalGradient(schedules.warm_up())``, ``LogLinear(1e-3, 0.1, 100)``,
        a warm-up to the paper's γ = 0.1 (also for a Gaussian likelihood on
        minibatches, where γ = 1 jumps to each batch's optimum), and for a
        diagonal q(u), whose step is never exact, the shorter
        ``LogLinear(1e-3, 0.1, 20)`` on the full data of a Gaussian
        likelihood (``benchmarks/DIAGONAL.md``), the default elsewhere. With
        ``adam_lr=None`` (q(u) alone) the warm-up takes 5 steps, not 100: the
        slow start only lets Adam move the hyperparameters
        (``benchmarks/WARMUP.md``).
        ``None`` trains everything, q(u) included, with Adam alone.
    :param adam_lr: Adam's learning rate for the hyperparameters (for every
        variable when ``natgrad=None``); ``None`` keeps them fixed (natural
        gradients only). The default 0.03 was chosen by
        ``benchmarks/bench_robustness.py`` (ROBUSTNESS.md, "Adam's learning
        rate"): it ended above 0.01 in all 44 runs of Adam-only and of the
        default training (300 and 3,000 iterations); 0.1 was ahead at 300
        iterations, but at 3,000 behind 0.03 in six of ten Adam-only runs,
        with rollbacks.
    :param adam_betas: Adam's decay rates (β₁, β₂) of its first and second
        moment estimates, each in [0, 1); the default is Adam's usual
        (0.9, 0.999), as in gpflow and the paper. In ROBUSTNESS.md ("Adam's
        β₂") β₂ = 0.9 moved the hyperparameters faster and ended higher in
        most runs of Adam-only and of the default training alike, lower in
        some; it is not the default because the UCI reproduction was not run
        with it.
    :param batch_size: B; ``None`` uses all data each iteration. Minibatches
        are drawn shuffled, epoch by epoch, from ``seed``; the model's
        ``num_data`` must be N so the ELBO is scaled by N / B.
    :param fused: ``True``: one loss-and-gradient evaluation feeds both
        updates; ``False``: alternating, Adam's gradient evaluated again at
        the updated q(u) (two evaluations per iteration, the paper's scheme).
        ``None`` (default) is fused wherever both optimizers train: per
        iteration it is 15-30 % cheaper, and in ``benchmarks/ROBUSTNESS.md``
        it is ahead of alternating at equal wall-clock time. The exception is
        a Gaussian likelihood on the full data with a constant γ = 1 in
        natural coordinates (the default there), where each natural step
        lands on the optimal q(u) and the second gradient is the collapsed
        bound's: alternating ended higher on all six UCI sets of
        ROBUSTNESS.md and was ahead at equal time on four; and, where a
        kernel mixes L latent GPs, a constant γ = 1/L (the default there),
        where fused runs collapsed and alternating ones did not (MIXING.md).
    :param compile: run the iterations inside one ``tf.function`` (traced
        once), as a ``tf.while_loop`` of ``steps_per_call`` iterations per call.
        The model keeps the traced loop: a later call with the same
        configuration (settings, data shape, the model's structure) reuses it
        with its state reset, so it skips tracing (seconds) and gives what a
        new loop would (:mod:`gpnat.training.cache`).
    :param jit_compile: compile each iteration with XLA. On a CPU it was faster
        only at small M against the batch (M = 20; M = 50 with batch 10⁴) in
        ``benchmarks/XLA.md``, and slower elsewhere. TensorFlow never frees
        XLA's compilations, so each call that traces (not one that reuses the
        model's loop) adds memory and memory maps for good;
        ``train`` warns when half the kernel's limit on maps is used and refuses
        (a RuntimeError, nothing changed) at 90 %, before the process would crash.
    :param callbacks: a callable or a sequence of callables, each called as
        ``callback(iteration, history)`` after each compiled call, with the last
        iteration run (every iteration when ``steps_per_call`` is 1, which
        ``"auto"`` picks when there are callbacks). An exception a callback
        raises (or Ctrl-C) stops training after the final check of the last
        updates, with the call's History as its ``history`` attribute.
    :param progress: show a tqdm progress bar with the ELBO estimate and γ.
    :param checkpoint_dir: save model, optimizers' state and step counter every
        ``checkpoint_every`` iterations (and at the end, before the final
        check); training resumes from the latest checkpoint found there, and
        equals the uninterrupted run.
    :param seed: seed of the minibatch order (default 0).
    :param recovery: what to do with a bad iteration (non-finite loss or
        gradient, collapsed ELBO, no valid natural step, an Adam step that
        leaves q(u) invalid): the default :class:`~gpnat.recovery.Recovery`
        rolls back to the last good state (model, both optimizers), lowers γ
        (and Adam's learning rate where Adam may be the cause) for a while, records it in the History
        (``failure``, ``scale``) and goes on. ``None`` rolls back and raises
        at the first bad iteration.
    :param steps_per_call: iterations per compiled call. An integer k: after
        the first call (one iteration), calls end at multiples of k. ``"auto"`` (default)
        runs the first call with one iteration (it includes tracing), then
        sizes calls to take about ``SECONDS_PER_CALL`` (0.25 s; at most 1000
        iterations), so the progress bar stays alive; it is 1 when there are
        callbacks. Calls also end at every checkpoint. The results do not
        depend on it.
    :param strategy: a ``tf.distribute.Strategy`` (``MirroredStrategy``,
        ``MultiWorkerMirroredStrategy``) for data-parallel training; the model
        must be built under ``strategy.scope()`` and know ``num_data``, and the
        global batch must divide among the replicas. Each replica evaluates
        the loss and gradients on its shard of the global batch, one
        all-reduce sums them, and both updates (and recovery) run identically
        on the mirrored variables: the result is the single-device run's
        with the same global batches (:mod:`gpnat.training.distributed`).
    :return: a :class:`History`.
    :raises NaturalGradientError: when recovery is impossible because no valid
        natural-gradient step can be made. The model holds its last good
        state; the History so far is attached as ``error.history``.
    :raises ValueError: when ``natgrad``'s γ schedule gives a step size that is
        not positive and finite, or a minibatch streamed from a
        ``tf.data.Dataset`` holds NaN or inf, at that iteration (rolled back;
        the History is attached as ``error.history``), besides the argument
        checks before anything runs.
    :raises FloatingPointError: when recovery is impossible for another reason
        (the loss stays non-finite or collapsed, or Adam keeps leaving q(u)
        invalid); the model holds its last good state (``error.history`` as above).
    """
    def scope():  # variables made here are mirrored like the model's under a strategy
        return strategy.scope() if strategy is not None else nullcontext()

    _check_before_scope(model, recovery, strategy, seed, checkpoint_dir)
    if compile and jit_compile:
        _check_room_for_xla()
    callbacks = _checked_callbacks(callbacks)
    default_natgrad = natgrad is _DEFAULT
    with scope():  # the default optimizer's variables are mirrored too
        iterations, natgrad, adam_lr, batch_size, fused, checkpoint_every, steps_per_call = _check_arguments(
            model, data, iterations, natgrad, adam_lr, batch_size, fused, callbacks, checkpoint_every, steps_per_call)
    adam_betas = _checked_betas(adam_betas)
    seed = 0 if seed is None else int(seed)

    qs = variational_distributions(model)
    if natgrad is not None and not qs:
        raise ValueError("the model has no q(u) (gpnat.VariationalGaussian) for natural gradients")
    q_vars = [v for q in qs for v in q.variables_to_watch]
    q_ids = {id(v) for v in q_vars}
    hyper_vars = [v for v in model.trainable_variables if id(v) not in q_ids]
    adam_vars = hyper_vars if natgrad is not None else list(model.trainable_variables)
    if adam_lr is not None and not adam_vars:
        if natgrad is None:
            raise ValueError("nothing to train: natgrad is None and no variable is trainable "
                             "(every one was frozen with gpflow.set_trainable(..., False))")
        adam_lr = None  # nothing for Adam to do

    takes_data = _loss_takes_data(model, data, batch_size)
    source, iterator = _batches(model, data, batch_size, seed, strategy)
    if strategy is not None:
        if not takes_data:
            raise ValueError(f"{type(model).__name__} holds its data and cannot be sharded; use an SVGP")
        rows = batch_size if batch_size is not None else (None if source is None else source.N)
        check_strategy(strategy, list(model.trainable_variables) + q_vars, rows, getattr(model, "num_data", None))

    mode = _mode_name(natgrad, adam_lr, fused)
    policy = NO_RECOVERY if recovery is None else recovery
    if natgrad is None or policy.check_proposal is False:
        check_from_gamma = None
    elif policy.check_proposal or mode == "alternating":
        check_from_gamma = 0.0  # every iteration; free in alternating mode (its Adam half evaluates there)
    elif _full_batch(data, batch_size):
        check_from_gamma = None
    else:  # minibatches at large γ, where bench_robustness found it worth one more evaluation
        check_from_gamma = policy.proposal_check_gamma

    # a loop traced by an earlier call with this configuration is reused, its state reset (gpnat.training.cache)
    key = entry = None
    if compile and strategy is None:
        rows = None if source is None else (source.N, source.X.shape[1:], source.Y.shape[1:])
        key = configuration(model, natgrad, default_natgrad, mode=mode, adam_lr=adam_lr, adam_betas=adam_betas,
                            batch_size=batch_size, seed=seed, rows=rows, jit_compile=jit_compile, policy=policy,
                            check_from_gamma=check_from_gamma, takes_data=takes_data)
        entry = lookup(model, key)
    if entry is not None:
        adam, counter, guard, parts = (entry.objects[k] for k in ("adam", "counter", "guard", "parts"))
        natgrad = parts.natgrad  # the same object, or the default made by the call that traced the loop
        run_chunk, traced, release = entry.run, entry.traced, entry.release
    else:
        forget(model)  # the old loop's graphs go before a new one is traced
        with scope():  # Adam's slots, the counter and recovery's snapshot are mirrored like the model
            adam = None
            if adam_lr is not None:
                adam = tf_keras.optimizers.Adam(learning_rate=adam_lr, beta_1=adam_betas[0], beta_2=adam_betas[1])
                adam.build(adam_vars)
            counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_iteration")
        # a q(u) frozen gpflow's way (set_trainable(..., False), so that Adam leaves it) is still the
        # natural step's: its variables are saved and rolled back with the rest
        stepped = list(model.trainable_variables) + (q_vars if natgrad is not None else [])
        state = _unique(stepped) + (list(adam.variables) if adam is not None else [])
        if natgrad is not None:
            state.append(natgrad.iterations)
        with scope():
            guard = Guard(policy, state)
        parts = Parts(model, qs, q_vars, adam_vars, natgrad, adam, adam_lr, guard, check_from_gamma, counter,
                      takes_data, strategy, sharded=strategy is not None and source is None)
        run_chunk, traced, release = _compiled_loop(parts, STEPS[mode], source, compile, jit_compile)
        if key is not None:
            fresh = [*(adam.variables if adam is not None else ()), counter, *guard.counters,
                     *(natgrad.variables if default_natgrad and natgrad is not None else ())]
            keep(model, Compiled(key, run_chunk, traced, release,
                                 dict(adam=adam, counter=counter, guard=guard, parts=parts), fresh))
    traces = traced()

    history = History(mode=mode)
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        trackables = dict(model=model, step=counter, recovery=guard, natgrad=natgrad, adam=adam, data=iterator)
        saved = _unique([*model.variables, counter, *guard.variables,
                         *(natgrad.variables if natgrad is not None else ()),
                         *(adam.variables if adam is not None else ())])
        current = signature(model, [repr(q.parametrisation) for q in qs], mode, saved)
        checkpoint, history = _resume(checkpoint_dir, trackables, history, current, saved,
                                      partial(_restored_problem, model, qs))
        checkpoint_dir = worker_checkpoint_dir(strategy, checkpoint_dir)  # where this process writes

    # the loop: one compiled call per chunk of iterations; the host acts between calls
    agree = call_size_agreement(strategy)  # workers must run calls of the same sizes
    done = int(counter.numpy())
    resumed = done > 0  # from a checkpoint, whose recovery state holds the last good state before it
    bar = _progress_bar(iterations, done, mode) if progress else None
    clock = _TrainingClock(history.time[-1] if history.time else 0.0)
    size, first = 1, True  # the first call traces: one iteration, so that compile_time is that call

    def check_last(recorded: bool = True) -> None:
        """The last iteration's updates, checked as the next iteration would; rolled back if bad.
        ``recorded``: History holds that iteration (else only the model is checked)."""
        last = int(run_chunk(0, iterator, source, check=True)[1].numpy()[-1])
        if recorded and last and history.failure and not history.failure[-1]:
            history.roll_back_last(last)
            # one more bad iteration in a row, as the next iteration would have counted it
            if int(guard.consecutive.numpy()) + 1 >= policy.max_consecutive:
                error = _training_error(done, last, recovery, policy, natgrad, qs, history, model)
                error.history = history
                raise error

    def interrupted(error: BaseException, recorded: bool) -> None:
        """A callback's exception or Ctrl-C stops the call before its final check: run that check, so
        that the model is left in a checked state (rolled back if the last updates were bad), and hand
        the call's History to the exception. ``recorded``: History holds the iterations run (Ctrl-C
        inside a compiled call loses that call's records; its updates are checked all the same)."""
        try:
            check_last(recorded)
        except (NaturalGradientError, FloatingPointError):
            pass  # rolled back all the same; the exception that stopped the call goes on
        if getattr(error, "history", None) is None:
            try:
                error.history = history
            except AttributeError:  # an exception type that takes no attributes
                pass

    try:
        if done >= iterations and done > 0:  # resumed with nothing left to run: the checkpoint is unchecked
            if done > iterations:
                warnings.warn(f"the checkpoint in {checkpoint_dir} is at iteration {done}, past iterations="
                              f"{iterations}: nothing was trained, and the model holds the checkpoint's state "
                              f"(iteration {done}), not that of iteration {iterations}", stacklevel=2)
            check_last()
        while done < iterations:
            n = min(size, iterations - done)
            if steps_per_call != "auto":  # calls end at multiples of steps_per_call
                n = min(n, steps_per_call - done % steps_per_call)
            if checkpoint is not None:
                n = min(n, checkpoint_every - done % checkpoint_every)
            start = clock.now()
            try:
                records = [r.numpy() for r in run_chunk(n, iterator, source)]
            except KeyboardInterrupt as error:
                interrupted(error, recorded=False)
                raise
            end = clock.now()
            history.extend(done + 1, *records, start=start, end=end)
            if first and compile:
                history.compile_time = end - start
            k, failure = len(records[0]), int(records[1][-1]) if len(records[0]) else 0
            done += k
            # a loss that is not finite at the state training starts from: no step can mend it (a checkpoint's
            # state is the last iteration's, unchecked: rolled back like any other, as in the uninterrupted run)
            broken = first and not resumed and failure == 1 and not np.isfinite(history.elbo[-1])
            if broken or (failure and int(guard.consecutive.numpy()) >= policy.max_consecutive):
                error = _training_error(done, failure, recovery, policy, natgrad, qs, history, model, broken)
                error.history = history
                raise error
            # a checkpoint holds the state the iterations left, before the final check: a resumed run
            # checks it as its next iteration, as the uninterrupted run did (so it equals that run)
            if checkpoint is not None and (done % checkpoint_every == 0 or done == iterations):
                with clock.paused():  # checkpoints are not training time
                    write_checkpoint(checkpoint, checkpoint_dir, done, history, current=current)
            if done == iterations:
                check_last()
            if bar is not None:
                _show(bar, k, history, natgrad is not None)
            with clock.paused():  # callbacks are not training time
                try:
                    for callback in callbacks:
                        callback(done, history)
                except BaseException as error:
                    if done < iterations:  # else the final check has run
                        interrupted(error, recorded=True)
                    raise
            size = agree(_next_size(steps_per_call, k, end - start, first=first))
            first = False
    finally:
        if bar is not None:
            bar.close()
        history.num_traces = traced() - traces
        release()
    return history


def _check_before_scope(model, recovery, strategy, seed, checkpoint_dir) -> None:
    """The model, recovery policy, strategy, seed and checkpoint folder are what train needs, or an
    error naming which is not."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not -2 ** 63 <= seed < 2 ** 63):
        raise ValueError(f"seed must be an integer (int64) or None, got {seed!r}")
    if not isinstance(model, tf.Module) or not callable(getattr(model, "training_loss", None)):
        raise TypeError(f"model must be a gpnat or gpflow model (a tf.Module with training_loss), got {model!r}")
    if recovery is not None and not isinstance(recovery, Recovery):
        raise TypeError(f"recovery must be a gpnat.Recovery or None, got {recovery!r}")
    if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(f"strategy must be a tf.distribute.Strategy or None, got {strategy!r}")
    if checkpoint_dir is not None:
        if not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a path (str or os.PathLike) or None, got {checkpoint_dir!r}")
        folder = Path(checkpoint_dir).absolute()
        existing = next(p for p in (folder, *folder.parents) if p.exists())  # it, or where saves would create it
        if existing == folder and not folder.is_dir():
            raise ValueError(f"checkpoint_dir must be a folder, but {str(checkpoint_dir)!r} is a file")
        if not existing.is_dir():
            raise ValueError(f"checkpoint_dir {str(checkpoint_dir)!r} cannot be created: {str(existing)!r} is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"checkpoint_dir {str(checkpoint_dir)!r} cannot be written: {str(existing)!r} is not "
                             "writable")


def _checked_callbacks(callbacks) -> tuple:
    """``callbacks`` as a tuple of callables; a single callable counts as one."""
    if callable(callbacks):
        return (callbacks,)
    try:
        callbacks = tuple(callbacks)
    except TypeError:
        raise TypeError(f"callbacks must be a sequence of callables, got {callbacks!r}") from None
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"each callback must be callable as callback(iteration, history), got {callback!r}")
    return callbacks


def _checked_betas(betas) -> Tuple[float, float]:
    """Adam's (β₁, β₂), each in [0, 1), or a ValueError naming adam_betas."""
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"adam_betas must be a pair (beta_1, beta_2), got {betas!r}")
    return (check_fraction(betas[0], "adam_betas[0] (beta_1)"), check_fraction(betas[1], "adam_betas[1] (beta_2)"))


def _check_arguments(model, data, iterations, natgrad, adam_lr, batch_size, fused, callbacks, checkpoint_every,
                     steps_per_call):
    """Validate train's arguments before anything changes; returns the resolved
    (iterations, natgrad, adam_lr, batch_size, fused, checkpoint_every, steps_per_call)."""
    iterations = check_count(iterations, "iterations", minimum=0)
    if (isinstance(getattr(model, "likelihood", None), gpflow.likelihoods.Softmax)
            and type(model).__module__.startswith("gpflow.")):
        raise ValueError("gpflow's Softmax likelihood reads integer class labels, and train passes targets in "
                         "gpflow's default float to a gpflow model; train a gpnat.SVGP or gpnat.VGP, which hand "
                         "Softmax its labels as integers")
    if batch_size is not None:
        batch_size = check_count(batch_size, "batch_size (or None)")
    checkpoint_every = check_count(checkpoint_every, "checkpoint_every")
    if natgrad is _DEFAULT:
        natgrad = _DEFAULT.make(model, _full_batch(data, batch_size), hyperparameters_trained=adam_lr is not None)
    if natgrad is not None and not isinstance(natgrad, NaturalGradient):
        raise TypeError(f"natgrad must be a gpnat.NaturalGradient or None, got {natgrad!r}")
    if adam_lr is not None:
        adam_lr = check_positive(adam_lr, "adam_lr (or None)")
    if natgrad is None and adam_lr is None:
        raise ValueError("nothing to train: natgrad and adam_lr are both None")
    if not (fused is None or isinstance(fused, (bool, np.bool_))):
        raise TypeError(f"fused must be True, False or None, got {fused!r}")
    if fused and (natgrad is None or adam_lr is None):
        raise ValueError("fused=True needs both natgrad and adam_lr")
    if fused is None:  # fused wherever both train, but alternating after an exact natural step
        fused = (natgrad is not None and adam_lr is not None
                 and not _exact_step(model, natgrad, _full_batch(data, batch_size)))
    if not (isinstance(steps_per_call, str) and steps_per_call == "auto"):
        steps_per_call = check_count(steps_per_call, "steps_per_call (or 'auto')")
    if callbacks and steps_per_call == "auto":
        steps_per_call = 1  # callbacks see every iteration
    return iterations, natgrad, adam_lr, batch_size, fused, checkpoint_every, steps_per_call


def _loss_takes_data(model, data, batch_size) -> bool:
    """Does ``model.training_loss`` take the batch? A gpflow model that holds its data does not.

    Such a model (gpflow's VGP, say) trains full batch on its own data, so
    ``data`` must be ``model.data``; anything else is a ValueError.
    """
    if inspect.signature(model.training_loss).parameters:
        return True
    own = getattr(model, "data", None)
    problem = None
    if own is None:
        problem = "it has no model.data"
    elif batch_size is not None or isinstance(data, tf.data.Dataset):
        problem = "it trains full batch (no batch_size, no tf.data.Dataset)"
    elif len(data) != 2 or any(
        np.shape(given) != tuple(np.shape(held)) or not np.array_equal(np.asarray(given), np.asarray(held))
        for given, held in zip(data, own)
    ):
        problem = "data must be model.data"
    if problem is not None:
        raise ValueError(
            f"{type(model).__name__}.training_loss() takes no data, as the model holds its own: "
            f"{problem}; call gpnat.train(model, model.data, ...)"
        )
    return False


def _unique(variables) -> list:
    """``variables`` without repeats (by identity), in order."""
    seen = set()
    return [v for v in variables if not (id(v) in seen or seen.add(id(v)))]


def _restored_problem(model, qs) -> Optional[str]:
    """What is wrong with a model just restored from a checkpoint, or None."""
    if not all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables):
        return "the restored model has NaN or inf in its variables"
    if not all(bool(q.is_valid()) for q in qs):
        return "the restored q(u) is not a valid Gaussian"
    return None


def _resume(directory: Path, trackables: dict, history: History, current: dict, variables, problem):
    """A checkpoint of ``trackables`` (None entries left out), restored from ``directory`` if it has one
    (:func:`~gpnat.training.checkpoints.restore`: checked against ``current``, all or nothing)."""
    remove_unfinished_saves(directory)
    checkpoint = tf.train.Checkpoint(**{k: v for k, v in trackables.items() if v is not None})
    latest = latest_checkpoint(directory)
    if latest is not None:
        restore(checkpoint, latest, current, variables, problem)
        saved = latest.parent / "history.json"
        if saved.exists():
            restored = History.from_json(saved)
            restored.mode, restored.num_traces = history.mode, 0
            history = restored
    return checkpoint, history


class _TrainingClock:
    """Seconds of training: wall-clock time since the start, less the time spent paused."""

    def __init__(self, offset: float):
        self.t0 = time.perf_counter() - offset
        self.outside = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.t0 - self.outside

    @contextmanager
    def paused(self):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.outside += time.perf_counter() - t


def _progress_bar(iterations: int, done: int, mode: str):
    if iterations <= done:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=iterations, initial=done, desc=f"gpnat {mode}", leave=True)


def _show(bar, k: int, history: History, natural: bool) -> None:
    bar.update(k)
    postfix = {"elbo": f"{history.elbo[-1]:.4g}"}
    if natural:
        postfix["gamma"] = f"{history.gamma[-1]:.3g}"
    if history.recoveries:
        postfix["recovered"] = history.recoveries
    bar.set_postfix(postfix, refresh=False)


def _next_size(steps_per_call, last: int, seconds: float, first: bool) -> int:
    """Iterations in the next compiled call."""
    if steps_per_call != "auto":
        return steps_per_call
    if first:  # the first call included tracing: its time says nothing
        return 2
    per_iteration = seconds / max(last, 1)
    wanted = SECONDS_PER_CALL / per_iteration if per_iteration > 0 else MAX_STEPS_PER_CALL
    return int(max(1, min(MAX_STEPS_PER_CALL, 4 * last, wanted)))


def _batches(model, data, batch_size, seed, strategy=None):
    """(in-graph ArrayBatches, None) for arrays, or (None, an iterator) for a Dataset.

    Under a strategy a Dataset's iterator yields per-replica shards
    (:func:`~gpnat.training.distributed.distributed_batches`).
    """
    if isinstance(data, tf.data.Dataset):
        if getattr(model, "num_data", 0) is None:
            raise ValueError(
                "a tf.data.Dataset yields minibatches, so the model needs num_data = N (the "
                "number of training points) to scale the ELBO by N / B: construct it with num_data=N"
            )
        batches = dataset_batches(data, batch_size, seed)
        x_shape, y_shape = (spec.shape for spec in batches.element_spec)
        if x_shape.rank == 2 and y_shape.rank == 2 and None not in (x_shape[1], y_shape[1]):
            _check_against_model(model, np.zeros((0, x_shape[1])), np.zeros((0, y_shape[1])), own_data=False)
        if strategy is not None:
            return None, distributed_batches(strategy, batches)
        return None, iter(batches)
    X, Y = check_arrays(data)
    _check_against_model(model, X, Y)
    N = X.shape[0]
    num_data = getattr(model, "num_data", None)
    if tf.is_tensor(num_data) or isinstance(num_data, tf.Variable):  # gpflow's VGP holds a Parameter
        num_data = int(np.asarray(num_data))
    if batch_size is not None and batch_size < N and num_data is None:
        raise ValueError(
            f"minibatch training needs the model's num_data = N = {N} to scale the ELBO "
            "by N / B: construct it with num_data=N"
        )
    if num_data is not None and num_data != N:  # the likelihood term is scaled by num_data / rows in a batch
        warnings.warn(f"model.num_data = {num_data} but the data have N = {N} rows: the ELBO's data term "
                      f"is scaled by {num_data} / (rows in a batch)")
    return ArrayBatches(X, Y, batch_size, seed), None


def _check_against_model(model, X: np.ndarray, Y: np.ndarray, own_data: bool = True) -> None:
    """The model's own checks of the data (input dimension; with ``own_data``, VGP's own data) and
    of Y against the likelihood's support (:func:`~gpnat.checks.check_targets`), run on the host
    before anything is traced, so a mismatch is a plain error that names it."""
    if Y.ndim == 2 and getattr(model, "likelihood", None) is not None:  # gpflow's models too, all rows
        check_targets(model.likelihood, Y)
        if getattr(model, "kernel", None) is not None and getattr(model, "num_latent_gps", None) is not None:
            check_outputs(model.likelihood, model.kernel, model.num_latent_gps, Y)
    check_inputs = getattr(model, "_check_inputs", None)  # gpnat.SVGP
    if check_inputs is not None:
        check_inputs(X[:1], Y[:1])
    check_own = getattr(model, "_own_data", None)  # gpnat.VGP
    if own_data and check_own is not None:
        check_own((X, Y))


#: the fractions of the kernel's limit on a process's memory maps (vm.max_map_count) at which
#: ``train(jit_compile=True)`` warns and refuses. TensorFlow's XLA compilation cache has no eviction
#: (tensorflow/tensorflow#64170): on a 2-core CPU each such call that traced its loop (an SVGP, M = 100,
#: minibatch 256; a reused loop compiles nothing) left 435 maps and 33 MB behind for good
#: (benchmarks/XLA_MEMORY.md), and at the limit (65,530 maps, some 150 calls) the process crashed in
#: LLVM ("Cannot allocate memory", then a segfault)
XLA_WARN_AT, XLA_REFUSE_AT = 0.5, 0.9


def _memory_maps() -> Optional[Tuple[int, int]]:
    """(memory maps of this process, the kernel's limit) on Linux, else None."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            count = sum(1 for _ in maps)
        limit = int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return None
    return count, limit


def _check_room_for_xla() -> None:
    """Refuse ``jit_compile=True`` before anything changes when XLA's compilations, which TensorFlow
    never frees, have nearly used up the process's memory maps (the next ones would crash it, and
    the model with it); warn from half of them."""
    maps = _memory_maps()
    if maps is None:
        return
    count, limit = maps
    advice = ("TensorFlow never frees XLA's compilations (tensorflow/tensorflow#64170), and each "
              "train(jit_compile=True) call adds some; train in fewer, longer calls, with "
              "jit_compile=False, or in a new process")
    if count >= XLA_REFUSE_AT * limit:
        raise RuntimeError(f"jit_compile=True refused: this process holds {count} memory maps of the "
                           f"kernel's limit {limit} (vm.max_map_count), and more XLA compilations would "
                           f"crash it. {advice}. Nothing was changed.")
    if count >= XLA_WARN_AT * limit:
        warnings.warn(f"this process holds {count} memory maps of the kernel's limit {limit}: {advice}.",
                      ResourceWarning, stacklevel=3)


def _compiled_loop(parts: Parts, step, source, compile: bool, jit_compile: bool):
    """``run(n, iterator, source, check=False) -> [loss, failure, gamma, rejections, scale]`` arrays of up
    to n iterations.

    The iterations run in one ``tf.while_loop`` (inside one ``tf.function``
    when ``compile``), each writing its :class:`~gpnat.training.steps.StepResult`
    into buffers that are read back once. The loop stops early when recovery
    has failed ``max_consecutive`` times in a row. With ``check``, one more
    record follows, of a checking pass (:func:`gpnat.training.steps._checking`):
    the state the last iteration left, checked as the next iteration would
    begin, the step's updates discarded, the last good state restored if
    the check fails (``run(0, ..., check=True)`` is that pass alone: the same
    traced function). Returns also a function
    counting the traces and one freeing what tracing left in TensorFlow's registries.

    ``source`` fixes how arrays are batched (row count, batch size, seed);
    the arrays themselves are arguments of each call, so that a later
    ``train`` call can run the same loop on data of the same shape
    (:mod:`gpnat.training.cache`).
    """
    iteration = partial(step, parts)
    source = None if source is None else source.layout()  # the loop keeps no arrays: they are arguments
    if compile and jit_compile:  # XLA compiles each iteration; the loop around it stays a graph
        iteration = tf.function(iteration, jit_compile=True)
    guard = parts.guard
    limit = guard.policy.max_consecutive
    # arrays were checked for NaN, inf and Y's support before training; a Dataset's batches as they come
    # (under a strategy each replica checks its shard, and the gradients' all-reduce combines the flags)
    check_streamed = source is None
    checked_batch = partial(_checked_batch, getattr(parts.model, "likelihood", None))

    def chunk(n, check, X, Y, iterator):
        with targets_checked_by_caller():  # checked above, or by checked_batch: not again in the model
            return unchecked_chunk(n, check, X, Y, iterator)

    def unchecked_chunk(n, check, X, Y, iterator):
        def batch():
            return source.batch(parts.counter, X, Y) if source is not None else next(iterator)

        # with ``check``, one more pass after the n iterations: a checking pass (steps.CHECKING)
        total = n + tf.cast(check, n.dtype)

        def go_on(i, *buffers):
            return tf.logical_and(i < total, guard.consecutive < limit)

        def body(i, *buffers):
            check_only = i >= n
            if check_streamed and parts.strategy is not None:
                result = iteration(*parts.strategy.run(checked_batch, args=batch()), check_only=check_only)
            elif check_streamed:
                result = iteration(*checked_batch(*batch()), check_only=check_only)
            else:
                result = iteration(*batch(), check_only=check_only)
            return (i + 1,) + tuple(b.write(i, r) for b, r in zip(buffers, result))

        buffers = tuple(tf.TensorArray(d, size=0, dynamic_size=True) for d in result_dtypes())
        _, *buffers = tf.while_loop(go_on, body, (tf.constant(0), *buffers))
        return [b.stack() for b in buffers]

    # The loop's own control flow is explicit (tf.while_loop, tf.cond), so it is traced without AutoGraph,
    # whose conversion of every function called added to each trace. A model whose code needs AutoGraph
    # (Python control flow on tensors, e.g. in a user's kernel or mean function) is traced again with it.
    functions = [tf.function(chunk, reduce_retracing=True, autograph=False)] if compile else [chunk]
    registered = set()  # tf.custom_gradient's registry entries made by tracing

    def call(n, check, X, Y, iterator):
        try:
            return functions[-1](n, check, X, Y, iterator)
        except tf.errors.OperatorNotAllowedInGraphError:
            if not compile or len(functions) > 1:
                raise
            functions.append(tf.function(chunk, reduce_retracing=True))
            return functions[-1](n, check, X, Y, iterator)

    def run(n, iterator, data_source, check=False):
        before = _custom_gradients()
        X, Y = (data_source.X, data_source.Y) if data_source is not None else (None, None)
        try:
            return call(tf.constant(n), tf.constant(check), X, Y, iterator)
        except (tf.errors.OutOfRangeError, StopIteration) as error:  # a Dataset of unknown size, empty
            raise ValueError(NO_BATCHES) from error
        finally:
            registered.update(_custom_gradients() - before)

    def traced():
        if not compile:
            return 0
        count = sum(f.experimental_get_tracing_count() for f in functions)
        if isinstance(iteration, tf.types.experimental.GenericFunction):
            count = max(count, iteration.experimental_get_tracing_count())
        return count

    def release():
        _forget_custom_gradients(registered)
        _clear_bijector_caches(parts.model)

    return run, traced, release


def _checked_batch(likelihood, X, Y):
    """(X, Y, fits?): a batch that holds NaN or inf, or targets outside the likelihood's support
    (:func:`~gpnat.checks.targets_fit`), is replaced by zeros, so that the iteration can fail with
    code 7 (and stop training with a clear error) instead of an assertion inside the model or a
    wrong ELBO."""
    checks = [tf.reduce_all(tf.math.is_finite(t)) for t in (X, Y) if t.dtype.is_floating]
    if likelihood is not None:
        checks.append(targets_fit(likelihood, Y))
    ok = tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)
    return tuple(tf.where(ok, t, tf.zeros_like(t)) for t in (X, Y)) + (ok,)


def _gradient_registry() -> dict:
    """TensorFlow's global registry of gradient functions (op type -> entry), or {} if it moved."""
    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else {}


def _custom_gradients() -> set:
    return {key for key in _gradient_registry() if key.startswith("CustomGradient-")}


def _forget_custom_gradients(keys) -> None:
    """Remove these ``tf.custom_gradient`` entries from TensorFlow's gradient registry.

    Traced in a graph, every ``tf.custom_gradient`` call (ops of gpflow and
    TFP use some, and so does :func:`gpnat.gaussian.cholesky`) registers a
    gradient function under a new op type, which TensorFlow never removes and
    whose closure holds the traced graph (tensorflow/tensorflow#87414). Each
    ``train`` call with a new configuration traces its loop anew, so without
    this every such call kept its graphs alive (with the bijector caches
    below): 15 MB per call for an SVGP with M = 50 on the full data. Once
    tracing is done nothing differentiates those graphs again (a reused loop
    runs its traced gradients), so their entries go; the model keeps only its
    latest loop (:mod:`gpnat.training.cache`).
    """
    registry = _gradient_registry()
    for key in keys:
        registry.pop(key, None)


def _clear_bijector_caches(model) -> None:
    """Empty the TFP bijector caches of the model's parameters (each bijector's own entries).

    TFP caches every ``forward`` of a bijector, holding its input strongly. In
    a chain (gpflow's positive transform: Softplus then Shift) the input of one
    bijector is a tensor of the traced graph, so the cache kept every graph
    that ``train`` traced alive after the call. Only a cache: values are
    recomputed when next needed.
    """
    def walk(bijector):
        yield bijector
        inner = getattr(bijector, "bijectors", None) or [getattr(bijector, "bijector", None)]
        for b in inner:
            if isinstance(b, tfp.bijectors.Bijector):
                yield from walk(b)

    for parameter in getattr(model, "parameters", ()):
        transform = getattr(parameter, "transform", None)
        if isinstance(transform, tfp.bijectors.Bijector):
            for bijector in walk(transform):
                cache = getattr(bijector, "_cache", None)
                if hasattr(cache, "clear"):
                    cache.clear()


def _training_error(it, reason, recovery, policy, natgrad, qs, history, model, broken=False) -> Exception:
    """The error raised when recovery is impossible (or disabled), naming what failed; ``broken``:
    the loss is not finite at the state training started from."""
    what = REASONS[reason]
    invalid = [i for i, q in enumerate(qs) if not bool(q.is_valid())] if broken else []
    if invalid:
        which = "q(u)" if len(qs) == 1 else f"the q(u)s at {invalid} of {len(qs)}"
        return FloatingPointError(
            f"iteration {it}: {which} is not a valid Gaussian at the state training starts from (NaN or inf, "
            f"or a covariance that is not positive definite), so the ELBO is not finite (estimate "
            f"{history.elbo[-1]:.4g}) and no step can mend it; the model is unchanged. Assign a valid q(u) "
            f"(q.assign_mean_cholesky checks it; gpflow.utilities.multiple_assign does not)."
        )
    if broken:
        return FloatingPointError(
            f"iteration {it}: the ELBO is not finite at the state training starts from (ELBO estimate "
            f"{history.elbo[-1]:.4g}), before any step, so no step size can mend it; the model is "
            f"unchanged. Check the model's initial hyperparameters and mean function against the data "
            f"(their scale, e.g. gpnat.SVGP.elbo((X, Y)) should be finite)."
        )
    if recovery is None:
        tried = "recovery is off (recovery=None), so training stops at the first bad iteration"
    else:
        tried = (
            f"{policy.max_consecutive} iterations in a row were rolled back, with the step size "
            f"lowered to {history.scale[-1] * policy.backoff:.3g} of its value"
        )
    state = "the model holds its last good state (every variable and optimizer slot as it was)"
    if reason == 6:
        try:  # the value, for the message: the schedule at the step it was asked for
            value = f" {float(natgrad.gamma(int(natgrad.iterations.numpy()) + 1)):.4g}"
        except Exception:  # noqa: BLE001 - only the message's detail
            value = ""
        return ValueError(
            f"iteration {it}: the gamma schedule {natgrad.gamma!r} gave the step size{value}, which is not "
            f"a positive finite number; training stopped there and {state}."
        )
    if reason == 7:
        likelihood = getattr(model, "likelihood", None)
        takes = support(likelihood)
        outside = f", or a Y outside the {type(likelihood).__name__} likelihood's support ({takes})" if takes else ""
        return ValueError(
            f"iteration {it}: the minibatch contains NaN or inf{outside} (a tf.data.Dataset is checked "
            f"batch by batch as it streams); training stopped there and {state}. Clean or filter the dataset."
        )
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
