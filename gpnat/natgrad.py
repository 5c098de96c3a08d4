r"""The natural-gradient optimizer for q(u), in whatever parametrisation q(u) is stored.

For coordinates ξ of q(u), with natural parameters θ and expectation
parameters η, the natural gradient is

    natgrad_ξ = F_ξ⁻¹ ∇_ξ L = (∂ξ/∂θ) (∂L/∂η).

gpnat computes it with two autodiff products and never builds a Jacobian, a
Fisher matrix or an inverse of either:

1. ∂L/∂η = (∂ξ/∂η)ᵀ ∇_ξ L: reverse mode through the map η -> ξ, seeded with
   the ordinary gradient ∇_ξ L;
2. (∂ξ/∂θ) v with v = ∂L/∂η: a Jacobian-vector product (forward mode),
   obtained as *reverse mode twice*: g(u) = (∂ξ/∂θ)ᵀ u is linear in the dummy
   cotangent u, so its vector-Jacobian product with v is (∂ξ/∂θ) v.
   When ξ = θ (:class:`~gpnat.parametrisations.Natural`) this product is the
   identity and is skipped.

A parametrisation may also supply the same quantity in closed form
(:meth:`~gpnat.parametrisations.Parametrisation.natural_gradient`); the
optimizer uses it when present (``closed_form=True``), and the test battery
checks it against the automatic route above.

The step is taken in coordinates ζ chosen apart from the storage ξ
(``NaturalGradient(coordinates=...)``, natural coordinates by default): ξ -> ζ,
ζ ← ζ − γ natgrad_ζ, ζ -> ξ, with ∂L/∂η from the storage and (∂ζ/∂θ) from the
coordinates (:func:`natural_direction`). It minimises the loss L (the negative
ELBO). A proposed step is checked before it is applied: if the new ξ is not a
valid Gaussian (not finite, covariance not positive definite), γ is halved, up
to ``max_tries`` proposals, and if none is valid the step is rejected and q(u)
keeps its previous value exactly.
"""
from typing import Callable, List, NamedTuple, Optional, Sequence

import gpflow
import numpy as np
import tensorflow as tf

from .checks import check_count, check_positive
from .parametrisations import Natural, Parametrisation, check_conversions
from .schedules import Schedule, as_schedule, check_gamma
from .variational import as_list, step_coordinates

__all__ = [
    "NaturalGradient",
    "NaturalGradientError",
    "NaturalStep",
    "natural_gradient",
    "expectation_gradient",
    "natural_tangent",
    "natural_direction",
    "convert",
    "jvp_by_reverse_twice",
]


class NaturalGradientError(RuntimeError):
    """No valid natural-gradient step could be made; q(u) keeps its last valid state."""


class NaturalStep(NamedTuple):
    """What one natural-gradient step did (scalar tensors).

    ``accepted`` (bool): a valid proposal was applied; ``gamma``: the γ used
    (0 when rejected); ``rejections`` (int64): proposals rejected.
    """

    accepted: tf.Tensor
    gamma: tf.Tensor
    rejections: tf.Tensor


def _zeros_for_none(grads, like) -> List[tf.Tensor]:
    return [tf.zeros_like(x) if g is None else g for g, x in zip(grads, like)]


def jvp_by_reverse_twice(
    fn: Callable[..., Sequence[tf.Tensor]],
    primals: Sequence[tf.Tensor],
    tangents: Sequence[tf.Tensor],
) -> List[tf.Tensor]:
    """J·v for J = ∂fn/∂primals, by differentiating a vector-Jacobian product.

    ``u -> Jᵀu`` is computed with an inner tape for a dummy cotangent u; it is
    linear in u, so the gradient of ``<Jᵀu, v>`` with respect to u is J v.
    No Jacobian is formed.
    """
    primals = [tf.convert_to_tensor(p) for p in primals]
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(primals)
            outputs = list(fn(*primals))
        dummies = [tf.zeros_like(o) for o in outputs]
        outer.watch(dummies)
        vjps = inner.gradient(
            outputs, primals, output_gradients=dummies,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
    jvps = outer.gradient(
        vjps, dummies, output_gradients=list(tangents),
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return jvps


def expectation_gradient(
    parametrisation: Parametrisation,
    xi: Sequence[tf.Tensor],
    grads: Sequence[tf.Tensor],
    closed_form: bool = True,
) -> List[tf.Tensor]:
    r"""∂L/∂η = (∂ξ/∂η)ᵀ ∇_ξ L from the ordinary gradient in the stored coordinates ξ.

    This is the natural gradient in natural coordinates θ. Reverse mode through
    η -> ξ, or the parametrisation's closed form
    (:meth:`~gpnat.parametrisations.Parametrisation.expectation_gradient`).

    :param xi: (ξ₁ [M, L], ξ₂ [L, M, M]); ``grads``: ∇_ξ L, same shapes.
    :return: (∂L/∂η₁ [M, L], ∂L/∂η₂ [L, M, M]).
    """
    xi = [tf.convert_to_tensor(x) for x in xi]
    grads = _zeros_for_none(grads, xi)
    if closed_form:
        known = parametrisation.expectation_gradient(*xi, *grads)
        if known is not None:
            return list(known)
    eta = list(parametrisation.to_expectation(*xi))
    with tf.GradientTape() as tape:
        tape.watch(eta)
        xi_of_eta = list(parametrisation.from_expectation(*eta))
    return tape.gradient(
        xi_of_eta, eta, output_gradients=grads,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )


def natural_tangent(
    parametrisation: Parametrisation,
    xi: Sequence[tf.Tensor],
    v: Sequence[tf.Tensor],
    closed_form: bool = True,
) -> List[tf.Tensor]:
    r"""(∂ξ/∂θ) v: how the coordinates ξ move when θ moves along v.

    Forward mode as reverse mode twice through θ -> ξ, or the
    parametrisation's closed form
    (:meth:`~gpnat.parametrisations.Parametrisation.natural_tangent`).
    With v = ∂L/∂η this is the natural gradient in ξ.
    """
    xi = [tf.convert_to_tensor(x) for x in xi]
    if parametrisation.is_natural:  # ∂ξ/∂θ = I
        return list(v)
    if closed_form:
        known = parametrisation.natural_tangent(*xi, *v)
        if known is not None:
            return list(known)
    theta = parametrisation.to_natural(*xi)
    return jvp_by_reverse_twice(parametrisation.from_natural, theta, v)


def natural_gradient(
    parametrisation: Parametrisation,
    xi: Sequence[tf.Tensor],
    grads: Sequence[tf.Tensor],
    closed_form: bool = True,
) -> List[tf.Tensor]:
    r"""natgrad_ξ = (∂ξ/∂θ)(∂L/∂η) from the ordinary gradient ∇_ξ L, in the stored coordinates.

    :param parametrisation: the coordinates ξ are stored in.
    :param xi: current (ξ₁ [M, L], ξ₂ [L, M, M]).
    :param grads: ∇_ξ L, same shapes (``None`` counts as zero).
    :param closed_form: use the parametrisation's closed forms when it has them
        (:meth:`~gpnat.parametrisations.Parametrisation.natural_gradient`, or
        the two factors below); ``False`` always takes the automatic route:
        :func:`expectation_gradient` then :func:`natural_tangent`.
    :return: natgrad_ξ, same shapes as ``xi``.

    A stored ξ that is not its storage's canonical representative (a factor with
    negative entries on its diagonal) gets the natural gradient of its
    canonical twin, flipped back as the gradient was flipped there
    (:meth:`~gpnat.parametrisations.Parametrisation.canonical_gradients`):
    every route, closed form or automatic, then gives the same answer.
    """
    xi = [tf.convert_to_tensor(x) for x in xi]
    grads = _zeros_for_none(grads, xi)
    point, canonical_grads = _at_canonical(parametrisation, xi, grads)
    direction = _natural_gradient_at(parametrisation, point, canonical_grads, closed_form)
    return list(parametrisation.canonical_gradients(*xi, *direction))


def _natural_gradient_at(parametrisation: Parametrisation, xi, grads, closed_form: bool) -> List[tf.Tensor]:
    """:func:`natural_gradient` at a canonical ξ."""
    if closed_form:
        known = parametrisation.natural_gradient(*xi, *grads)
        if known is not None:
            return list(known)
    dL_deta = expectation_gradient(parametrisation, xi, grads, closed_form)
    return natural_tangent(parametrisation, xi, dL_deta, closed_form)


def convert(source: Parametrisation, target: Parametrisation, xi: Sequence[tf.Tensor]):
    """The same q(u) in ``target``'s coordinates (through θ when either side is natural)."""
    if source == target:
        return tuple(xi)
    if target.is_natural:
        return target.from_natural(*source.to_natural(*xi))
    if source.is_natural:
        return target.from_natural(*xi)
    return target.from_meanchol(*source.to_meanchol(*xi))


def _at_canonical(storage: Parametrisation, xi: Sequence[tf.Tensor], grads: Sequence[tf.Tensor]):
    """The storage's canonical point for ξ and ∇L there (a flipped column's gradient flips too)."""
    return storage.canonical(*xi), storage.canonical_gradients(*xi, *grads)


def natural_direction(
    storage: Parametrisation,
    xi: Sequence[tf.Tensor],
    grads: Sequence[tf.Tensor],
    coordinates: Optional[Parametrisation] = None,
    closed_form: bool = True,
):
    r"""The point and the natural gradient of a step taken in ``coordinates``.

    q(u) is stored as ξ in ``storage`` and ∇_ξ L is known. The step is taken in
    coordinates ζ (default: the storage's own): ζ ← ζ − γ (∂ζ/∂θ)(∂L/∂η).

    :return: (ζ, natgrad_ζ), each a pair (ζ₁ [M, L], ζ₂ [L, M, M]).
    """
    return _natural_direction_at(storage, *_at_canonical(storage, xi, grads), coordinates, closed_form)


def _natural_direction_at(storage: Parametrisation, point, grads, coordinates, closed_form: bool):
    """:func:`natural_direction` from the storage's canonical point and the gradient there."""
    coordinates = storage if coordinates is None else coordinates
    if coordinates == storage:
        return point, _natural_gradient_at(storage, point, grads, closed_form)
    dL_deta = expectation_gradient(storage, point, grads, closed_form)
    zeta = coordinates.canonical(*convert(storage, coordinates, point))
    return zeta, natural_tangent(coordinates, zeta, dL_deta, closed_form)


def _asserted_positive(x: tf.Tensor, message: str) -> tf.Tensor:
    """``x`` in compiled code, behind assertions that it is finite and positive: whatever is computed
    from the result (a step, the optimizer's counters) runs only once they passed."""
    x = tf.debugging.assert_all_finite(x, message)
    with tf.control_dependencies([tf.debugging.assert_positive(x, message)]):
        return tf.identity(x)


class NaturalGradient(tf.Module):
    r"""Natural-gradient descent on one or several q(u): ζ ← ζ − γₜ natgrad_ζ.

    The step is taken in coordinates ζ (``coordinates``), whatever coordinates
    ξ q(u) is stored in: storage ξ -> ζ, step, ζ -> storage ξ. The direction is
    the same for every choice of ζ (−∂L/∂η in θ to first order); the
    coordinates decide where a finite step lands.

    :param gamma: a positive finite step size, or a schedule (any callable
        step t -> γ, see :mod:`gpnat.schedules`), evaluated at t = 1, 2, ...
    :param coordinates: the coordinates ζ of the step: any
        :class:`~gpnat.parametrisations.Parametrisation` (instance, class or
        name), or one of gpflow's ``XiTransform`` s (``XiNat()`` is
        :class:`~gpnat.parametrisations.Natural`, ``XiSqrtMeanVar()``
        :class:`~gpnat.parametrisations.MeanCholesky`). Default :class:`~gpnat.parametrisations.Natural`: a step of
        γ = 1 on a Gaussian likelihood lands on the optimal q(u) (the SGPR
        bound) from any start, whatever the storage, as gpflow's ``XiNat``.
        A diagonal q(u) (``q_diag``) is stepped in the same coordinates of the
        diagonal family (:meth:`~gpnat.parametrisations.Parametrisation.for_family`).
        ``None`` steps in each q(u)'s storage coordinates. The default was
        chosen by ``benchmarks/bench_robustness.py`` (see ROBUSTNESS.md).
    :param max_tries: a proposed step that would leave q(u) invalid is retried
        with γ halved, up to this many proposals in all (default 16, down to
        γ/2¹⁵); if none is valid the step is rejected (q(u) is unchanged) and
        :meth:`minimize` raises :class:`NaturalGradientError`.
    :param closed_form: use a parametrisation's closed forms where it has them
        (matrix products and triangular solves instead of differentiating
        conversions); ``False`` always takes the automatic reverse-mode route,
        which gives the same result.

    State (``tf.Variable`` s, so it can be checkpointed): ``iterations`` (the
    step counter t of the schedule), and, for the last step, ``last_gamma``
    (γ used, 0 if rejected), ``last_rejections`` (proposals rejected) and
    ``last_accepted``.

    Example::

        opt = gpnat.NaturalGradient(gamma=1.0)
        loss_fn = model.training_loss_closure((X, Y))
        opt.minimize(loss_fn, model.q)
        # a gpflow model's q(u), in gpflow's own var_list form
        opt.minimize(gpflow_model.training_loss_closure((X, Y)),
                     [(gpflow_model.q_mu, gpflow_model.q_sqrt)])
    """

    def __init__(
        self,
        gamma=1.0,
        *,
        coordinates: Optional[Parametrisation] = Natural(),
        max_tries: int = 16,
        closed_form: bool = True,
        name: str = "natural_gradient",
    ):
        if not callable(gamma):
            check_gamma(gamma)
        max_tries = check_count(max_tries, "max_tries")
        super().__init__(name=name)
        self.gamma: Schedule = as_schedule(gamma)
        self.coordinates: Optional[Parametrisation] = (
            None if coordinates is None else step_coordinates(coordinates)
        )
        if self.coordinates is not None:
            check_conversions(self.coordinates)
        self.max_tries = int(max_tries)
        self.closed_form = bool(closed_form)
        dtype = gpflow.default_float()
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{name}/iterations")
        self.last_gamma = tf.Variable(0.0, dtype=dtype, trainable=False, name=f"{name}/last_gamma")
        self.last_rejections = tf.Variable(
            0, dtype=tf.int64, trainable=False, name=f"{name}/last_rejections"
        )
        self.last_accepted = tf.Variable(
            True, dtype=tf.bool, trainable=False, name=f"{name}/last_accepted"
        )

    def __repr__(self) -> str:
        coordinates = "None (storage)" if self.coordinates is None else repr(self.coordinates)
        return (
            f"NaturalGradient(gamma={self.gamma!r}, coordinates={coordinates}, "
            f"max_tries={self.max_tries}, closed_form={self.closed_form})"
        )

    # ----------------------------------------------------------------- public
    def minimize(self, loss_fn: Callable[[], tf.Tensor], q) -> tf.Tensor:
        """Take one natural-gradient step on q (one q(u) or a list of them).

        ``q`` is gpnat's ``model.q``, or gpflow's ``var_list`` form for a gpflow
        model (SVGP, VGP, a GPflux layer): ``[(q_mu, q_sqrt)]`` or
        ``[(q_mu, q_sqrt, coordinates)]`` of ``gpflow.Parameter`` s, where
        ``coordinates`` is a gpnat parametrisation or gpflow's ``XiNat()``,
        ``XiSqrtMeanVar()`` or another ``XiTransform``
        (see :class:`~gpnat.variational.GpflowQ`).

        Evaluates ``loss_fn`` and its gradient once. Returns the loss *before*
        the step. Raises :class:`NaturalGradientError` if no valid step exists, and
        (eagerly) ``FloatingPointError`` if the loss is NaN or inf before the step.
        """
        qs = as_list(q)
        if not qs:
            raise ValueError("minimize needs at least one q(u) to step (model.q, or a list of them); got none")
        variables = [v for qi in qs for v in qi.variables_to_watch]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = loss_fn()
        if not tf.is_tensor(loss):
            raise TypeError(f"loss_fn must return a scalar tensor computed from q(u)'s variables (so that it has "
                            f"a gradient), got {loss!r}; q(u) is unchanged")
        if loss.shape.rank not in (0, None):
            raise ValueError(f"loss_fn must return a scalar loss, got shape {loss.shape.as_list()}; q(u) is unchanged")
        if tf.executing_eagerly() and not np.isfinite(float(loss)):
            raise FloatingPointError(f"the loss is {float(loss)} at q(u)'s current state, "
                                     "before any step, so no step size can mend it; q(u) is unchanged. Check the "
                                     "data, the hyperparameters and q(u) (q.is_valid()).")
        grads = tape.gradient(loss, variables)
        accepted = self.apply_gradients(qs, grads)
        self._raise_if_rejected(accepted)
        return loss

    def apply_gradients(self, q, grads: Sequence[tf.Tensor], scale=None) -> tf.Tensor:
        """Step q(u) given the loss's gradients with respect to each q's ``variables_to_watch``, in order.

        For gpnat's q(u) these are the stored variables ``q.xi``, so ``grads`` is ∇_ξ L.

        :param scale: optional positive factor on the schedule's γ (used by
            :func:`gpnat.train` to keep γ lower after a recovery).

        Does not raise on rejection: returns a scalar bool tensor, True when a
        valid step was applied (also stored in ``last_accepted``). Used by
        :func:`gpnat.train` to share one gradient evaluation with Adam.
        """
        return self.step(q, grads, scale).accepted

    def step(self, q, grads: Sequence[tf.Tensor], scale=None) -> "NaturalStep":
        """:meth:`apply_gradients`, returning what the step did as a :class:`NaturalStep`."""
        if scale is not None:
            scale = self._checked_scale(scale)
        return self._step(q, grads, scale, check_gamma=True)[0]

    @staticmethod
    def _checked_scale(scale) -> tf.Tensor:
        """``scale`` as a scalar in gpflow's float, refused (eagerly) or failing an assertion (compiled)
        unless positive and finite: a negative factor would step uphill, zero not at all."""
        what = "scale (the factor on gamma)"
        if not tf.is_tensor(scale):
            return tf.constant(check_positive(scale, what), gpflow.default_float())
        if scale.shape.rank not in (0, None):
            raise ValueError(f"{what} must be a scalar, got shape {scale.shape.as_list()}")
        scale = tf.cast(scale, gpflow.default_float())
        if tf.executing_eagerly():
            check_positive(float(scale.numpy()), what)
            return scale
        return _asserted_positive(scale, f"{what} must be a positive finite number")

    def _step(self, q, grads, scale, check_gamma: bool):
        """:meth:`step`; returns (:class:`NaturalStep`, whether the schedule's γ was valid).

        ``check_gamma``: a γ that is not positive and finite raises (eagerly)
        or fails an assertion (compiled). Otherwise (:func:`gpnat.train`, which
        stops with a clear error at the iteration) it is reported: the step is
        rejected and nothing is applied.
        """
        qs, grads = as_list(q), list(grads)
        if len(grads) != 2 * len(qs):
            raise ValueError(f"{len(grads)} gradients for {len(qs)} q(u): one per variable of each q(u)'s "
                             f"variables_to_watch, {2 * len(qs)} in all; q(u) is unchanged")
        step = self.iterations + 1
        dtype = gpflow.default_float()
        gamma = self._gamma_at(step, check_gamma)
        gamma_valid = tf.logical_and(tf.math.is_finite(gamma), gamma > 0)
        if not check_gamma:
            gamma = tf.where(gamma_valid, gamma, tf.ones_like(gamma))  # the proposal is discarded
        if scale is not None:
            gamma = gamma * tf.cast(scale, dtype)

        olds = [tuple(tf.convert_to_tensor(v) for v in qi.xi) for qi in qs]
        steps = [
            self._step_function(
                qi.parametrisation, old, qi.xi_gradients(grads[2 * i:2 * i + 2]),
                qi.coordinates,
            )
            for i, (qi, old) in enumerate(zip(qs, olds))
        ]

        def proposal(g):  # the new stored values of every q, flattened
            return [t for step_fn in steps for t in step_fn(g)]

        def valid(new):
            checks = [qi.parametrisation.is_valid(*new[2 * i:2 * i + 2]) for i, qi in enumerate(qs)]
            return tf.reduce_all(tf.stack(checks))

        def attempt(k, g):  # loop state: (tries, γ, valid?, proposal)
            new = proposal(g)
            return k, g, valid(new), new

        tries, gamma_used, accepted, new = tf.while_loop(
            lambda k, g, ok, new: tf.logical_and(tf.logical_not(ok), k < self.max_tries),
            lambda k, g, ok, new: attempt(k + 1, 0.5 * g),
            attempt(tf.constant(1, tf.int64), gamma),
            maximum_iterations=self.max_tries,
        )
        accepted = tf.logical_and(accepted, gamma_valid)
        variables = [v for qi in qs for v in qi.xi]
        old_values = [t for old in olds for t in old]
        for variable, old, value in zip(variables, old_values, new):
            variable.assign(tf.where(accepted, value, old))
        # compiled, the optimizer's own state changes only once γ's checks passed (``accepted`` is
        # computed from the checked γ): a refused γ leaves the step count where it was, as eagerly
        with tf.control_dependencies([accepted]):
            self.iterations.assign_add(1)
            gamma_used = tf.where(accepted, gamma_used, tf.zeros_like(gamma_used))
            # the optimizer's float is gpflow's default when it was made, the step's the model's now
            self.last_gamma.assign(tf.cast(gamma_used, self.last_gamma.dtype))
            self.last_rejections.assign(tf.where(accepted, tries - 1, tries))
            self.last_accepted.assign(accepted)
        return NaturalStep(accepted, gamma_used, self.last_rejections.read_value()), gamma_valid

    def _step_function(self, storage: Parametrisation, xi, grads, coordinates=None):
        """γ -> new stored coordinates for a step in ``coordinates`` (closed form if known).

        ``coordinates`` (one q's own choice) defaults to ``self.coordinates``,
        taken in the storage's family (diagonal or full).
        """
        grads = _zeros_for_none(grads, xi)
        if coordinates is None:
            coordinates = self.coordinates
        coordinates = storage if coordinates is None else coordinates.for_family(storage.diagonal)
        point, grads = _at_canonical(storage, xi, grads)
        if self.closed_form and coordinates != storage:
            known = storage.natural_step(coordinates, *point, *grads)
            if known is not None:
                return known
        zeta, direction = _natural_direction_at(storage, point, grads, coordinates, self.closed_form)

        def step(gamma):
            stepped = [z - gamma * d for z, d in zip(zeta, direction)]
            return convert(coordinates, storage, stepped)

        return step

    def rejection_reason(self) -> str:
        """Why a step was rejected, and what to try instead (used in error messages)."""
        tries = (
            "the proposal" if self.max_tries == 1
            else f"all {self.max_tries} proposals (gamma halved each time)"
        )
        return (
            f"{tries} left q(u) invalid (non-finite, or covariance not positive definite; a loss or "
            f"gradient that is NaN or inf gives such proposals); q(u) "
            "keeps its last valid state. Try a smaller gamma, a warm-up schedule "
            "(gpnat.schedules.LogLinear or IncreasingRate), a larger max_tries, or "
            "gpnat.train, which rolls back and recovers."
        )

    # ---------------------------------------------------------------- helpers
    def _gamma_at(self, step, check_value: bool = True) -> tf.Tensor:
        """The schedule's γ at ``step`` in gpflow's float, refused by name unless a scalar number,
        and (``check_value``) unless positive and finite."""
        try:
            value = self.gamma(step)
        except NotImplementedError as error:  # NumPy's functions on a symbolic tensor
            if tf.executing_eagerly():
                raise
            raise TypeError(
                f"the gamma schedule {self.gamma!r} failed on a symbolic tensor t (it is called inside the "
                f"compiled loop): write it with TensorFlow's functions (tf.sqrt, not np.sqrt), use a "
                f"gpnat.schedules class, or pass compile=False to gpnat.train ({error})") from error
        try:  # a Python float stays exact; a bool is not a number here, as NaturalGradient(True) is not
            gamma = (None if isinstance(value, (bool, np.bool_))
                     else tf.convert_to_tensor(value, dtype_hint=gpflow.default_float()))
        except (TypeError, ValueError):
            gamma = None
        if gamma is None or not (gamma.dtype.is_floating or gamma.dtype.is_integer):
            raise TypeError(f"the gamma schedule {self.gamma!r} must return a number, got {value!r}")
        if gamma.shape.rank not in (0, None):
            raise ValueError(f"the gamma schedule {self.gamma!r} must return a scalar, got shape "
                             f"{gamma.shape.as_list()}")
        gamma = tf.cast(gamma, gpflow.default_float())
        if check_value:
            gamma = self._check_gamma_value(gamma)
        return gamma

    def _check_gamma_value(self, gamma: tf.Tensor) -> tf.Tensor:
        """``gamma``, refused unless positive and finite: eagerly a ValueError; compiled an assertion,
        and the returned tensor is computed only after it passed (so is everything computed from it)."""
        message = "the natural-gradient step size gamma must be a positive finite number"
        if tf.executing_eagerly():
            value = float(gamma.numpy())
            check_gamma(value, f"gamma (from schedule {self.gamma!r} at step {int(self.iterations.numpy()) + 1})")
            return gamma
        return _asserted_positive(gamma, message)

    def _raise_if_rejected(self, accepted: tf.Tensor) -> None:
        message = f"no valid natural-gradient step: {self.rejection_reason()}"
        if tf.executing_eagerly():
            if not bool(accepted.numpy()):
                raise NaturalGradientError(message)
        else:
            tf.debugging.Assert(accepted, [message])
