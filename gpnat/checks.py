"""Checks of the plain numbers users pass to gpnat (counts, rates), shared by
every public function that takes one.

Each returns the cleaned Python value or raises ``ValueError`` with a message
that names the argument and shows what was given, before anything changes.
``gpnat.schedules.check_gamma`` is the one for step sizes γ;
:func:`check_targets` checks targets Y against the likelihood's support, and
:func:`check_outputs` the model's outputs and Y's columns against the likelihood.
"""
import contextlib
from numbers import Real

import gpflow
import numpy as np
import tensorflow as tf


def _shown(value):
    return value.numpy() if tf.is_tensor(value) else value


def check_count(value, what: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` ≥ ``minimum`` (0 or 1), or a ValueError naming ``what``.

    Accepted: Python and NumPy integers, integer-valued floats (``1e4``) and
    scalar TensorFlow numbers. Refused: booleans, None, strings, fractions.
    """
    kind = "a positive integer" if minimum == 1 else "a non-negative integer"
    count = None
    if not isinstance(value, (bool, np.bool_, str, bytes)):
        try:
            number = _shown(value)
            count = int(number)
            if count != number:
                count = None
        except (TypeError, ValueError, OverflowError):
            count = None
    if count is None or count < minimum:
        raise ValueError(f"{what} must be {kind}, got {_shown(value)!r}")
    return count


def check_positive(value, what: str) -> float:
    """``value`` as a positive finite ``float`` (NumPy scalars included), or a ValueError naming ``what``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


def check_fraction(value, what: str) -> float:
    """``value`` as a ``float`` in [0, 1) (NumPy scalars included), or a ValueError naming ``what``.

    For decay rates such as Adam's β₁ and β₂.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) or not 0 <= value < 1:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


def _not_labels(Y: tf.Tensor, top: int) -> tf.Tensor:
    return (tf.not_equal(Y, tf.round(Y)) | tf.less(Y, 0.0)) | tf.greater(Y, float(top))


#: (gpflow likelihood class, the targets it takes, the entries of Y outside them, in TensorFlow
#: ops, so that streamed batches are checked in the graph): gpflow's likelihoods take any number
#: without complaint, and one outside their support gives a wrong or infinite ELBO, not an error
#: (labels 1..C for MultiClass, 1/2 for Bernoulli, a negative count)
_SUPPORT = (
    (gpflow.likelihoods.Bernoulli, "labels 1 (positive) and 0 or -1 (negative)",
     lambda Y, lik: tf.not_equal(Y, 1.0) & tf.not_equal(Y, 0.0) & tf.not_equal(Y, -1.0)),
    (gpflow.likelihoods.MultiClass, "class labels 0, 1, ..., num_classes - 1 in one column",
     lambda Y, lik: _not_labels(Y, lik.num_classes - 1)),
    (gpflow.likelihoods.Softmax, "class labels 0, 1, ..., num_classes - 1 in one column",
     lambda Y, lik: _not_labels(Y, lik.num_classes - 1)),
    (gpflow.likelihoods.Ordinal, "ordinal labels 0, 1, ..., len(bin_edges)",
     lambda Y, lik: _not_labels(Y, int(lik.bin_edges.shape[0]))),
    (gpflow.likelihoods.Poisson, "counts (numbers ≥ 0)", lambda Y, lik: tf.less(Y, 0.0)),
    (gpflow.likelihoods.Exponential, "numbers ≥ 0", lambda Y, lik: tf.less(Y, 0.0)),
    (gpflow.likelihoods.Gamma, "numbers > 0", lambda Y, lik: tf.less_equal(Y, 0.0)),
    (gpflow.likelihoods.Beta, "numbers in [0, 1]", lambda Y, lik: tf.less(Y, 0.0) | tf.greater(Y, 1.0)),
)
_ONE_COLUMN = (gpflow.likelihoods.MultiClass, gpflow.likelihoods.Softmax)


def _rule(likelihood):
    return next(((kind, takes, outside) for kind, takes, outside in _SUPPORT if isinstance(likelihood, kind)),
                None)


def support(likelihood) -> str:
    """What targets ``likelihood`` takes, in words ("" where gpnat knows no restriction)."""
    rule = _rule(likelihood)
    return "" if rule is None else rule[1]


def targets_fit(likelihood, Y: tf.Tensor) -> tf.Tensor:
    """Scalar bool tensor: every entry of ``Y`` ``[B, P]`` lies in ``likelihood``'s support (True
    where gpnat knows no restriction). In TensorFlow ops, for batches streamed in the graph."""
    rule = _rule(likelihood)
    if rule is None:
        return tf.constant(True)
    return tf.logical_not(tf.reduce_any(rule[2](tf.cast(Y, tf.float64), likelihood)))


def as_likelihood_targets(likelihood, Y: tf.Tensor) -> tf.Tensor:
    """Y ``[N, P]`` as ``likelihood`` takes it: gpnat holds targets in gpflow's default float, but
    gpflow's ``Softmax`` reads its class labels with a sparse cross-entropy, which takes integers
    only; for it the (checked, integer-valued) labels are cast to int64. Other likelihoods get Y."""
    if isinstance(likelihood, gpflow.likelihoods.Softmax) and Y.dtype.is_floating:
        return tf.cast(Y, tf.int64)
    return Y


def _check_one_column(kind, takes: str, name: str, columns) -> None:
    """Class labels (MultiClass, Softmax) come in one column: refuse more (a static shape; None passes)."""
    if kind in _ONE_COLUMN and columns is not None and columns != 1:
        raise ValueError(f"Y does not fit the {name} likelihood: it takes {takes}, "
                         f"Y has {columns} columns (one-hot labels? pass their argmax)")


def check_targets(likelihood, Y) -> None:
    """A ValueError naming the likelihood and the offending values if targets ``Y`` ``[N, P]`` lie
    outside the support of a gpflow likelihood that has one (Bernoulli, MultiClass, Softmax,
    Ordinal, Poisson, Exponential, Gamma, Beta); other likelihoods and symbolic tensors pass.

    gpflow computes a number for any target: ``Bernoulli`` treats every label but 1 as
    the negative class, ``MultiClass`` gives a label ≥ ``num_classes`` no class, ``Poisson``
    an ELBO of −inf for a negative count. Training on such data would run, or fail with
    no word on why.
    """
    rule = _rule(likelihood)
    if rule is None or (tf.is_tensor(Y) and not tf.executing_eagerly()):
        return
    kind, takes, outside = rule
    name = type(likelihood).__name__
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 2:
        _check_one_column(kind, takes, name, Y.shape[-1])
    if not Y.size:
        return
    bad = outside(tf.constant(Y), likelihood).numpy()
    if np.any(bad):
        values = np.unique(Y[bad])
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise ValueError(f"Y does not fit the {name} likelihood: it takes {takes}, but "
                         f"{int(np.sum(bad))} of Y's {Y.size} entries are not (values {shown})")


def output_count(kernel, num_latent_gps: int) -> int:
    """P, the number of latent functions f the likelihood sees: a ``LinearCoregionalization``
    kernel mixes its L latent GPs into ``W``'s P rows; otherwise P = L."""
    if isinstance(kernel, gpflow.kernels.LinearCoregionalization):
        return int(kernel.W.shape[0])
    return int(num_latent_gps)


#: how many ``targets_checked_by_caller`` contexts are open (a counter, not thread-local: a
#: distribution strategy traces its replicas in threads of its own)
_CALLER_CHECKED = [0]


@contextlib.contextmanager
def targets_checked_by_caller():
    """Within this context models do not check targets against their likelihood's support
    (:func:`checked_targets`). For :func:`gpnat.train`, which checks arrays before training and each
    streamed batch inside its loop, where a batch that does not fit fails the iteration with a clear
    error instead of an assertion inside the model."""
    _CALLER_CHECKED[0] += 1
    try:
        yield
    finally:
        _CALLER_CHECKED[0] -= 1


def checked_targets(likelihood, Y):
    """Y ``[N, P]`` after checking it against ``likelihood``'s support: eagerly :func:`check_targets`
    (a ValueError); in compiled code the returned tensor depends on an assertion with the same words,
    so that nothing computed from it (a loss, its gradients, an update) runs with targets that do not
    fit. Not checked inside :func:`targets_checked_by_caller`."""
    if _CALLER_CHECKED[0]:
        return Y
    if tf.executing_eagerly() or not tf.is_tensor(Y):
        check_targets(likelihood, Y)
        return Y
    rule = _rule(likelihood)
    if rule is None:
        return Y
    kind, takes, _ = rule
    name = type(likelihood).__name__
    _check_one_column(kind, takes, name, Y.shape[-1])
    fits = tf.debugging.Assert(targets_fit(likelihood, Y), [f"Y does not fit the {name} likelihood: it takes {takes}"])
    with tf.control_dependencies([fits]):
        return tf.identity(Y)


def check_outputs(likelihood, kernel, num_latent_gps: int, Y=None) -> None:
    """A ValueError when the model's outputs and ``likelihood`` (and targets ``Y`` ``[N, P]``) disagree.

    A likelihood with a ``latent_dim`` (``MultiClass(C)``, ``Softmax(C)``: C; heteroskedastic
    ones: 2) takes exactly that many latent functions; gpflow evaluates ``MultiClass(3)`` on one
    latent GP without a word, a wrong model. A likelihood with an ``observation_dim`` takes that many
    columns of Y; a scalar one (Gaussian, Bernoulli, ...) takes one column per latent function, or
    one column shared by all (gpflow broadcasts it). ``SwitchedLikelihood``'s extra index column
    and symbolic tensors are not checked here.
    """
    P = output_count(kernel, num_latent_gps)
    name = type(likelihood).__name__
    latent_dim = getattr(likelihood, "latent_dim", None)
    if latent_dim is not None and latent_dim != P:
        raise ValueError(
            f"the {name} likelihood takes {latent_dim} latent functions, but the model has {P} "
            f"(num_latent_gps = {num_latent_gps}): pass num_latent_gps={latent_dim}, or a kernel with as many outputs")
    if Y is None or (tf.is_tensor(Y) and not tf.executing_eagerly()) or len(Y.shape) != 2:
        return
    columns = Y.shape[-1]
    observation_dim = getattr(likelihood, "observation_dim", None)
    if observation_dim is not None and columns != observation_dim:
        raise ValueError(f"Y has {columns} columns but the {name} likelihood takes {observation_dim}")
    scalar = isinstance(likelihood, gpflow.likelihoods.ScalarLikelihood) and not isinstance(
        likelihood, gpflow.likelihoods.SwitchedLikelihood)
    if scalar and latent_dim is None and observation_dim is None and columns not in (1, P):
        raise ValueError(
            f"Y has {columns} columns but the model has {P} outputs: a {name} likelihood takes one column "
            f"per output (or one column for all); pass num_latent_gps={columns}, or a kernel with {columns} outputs")
