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

The step ξ ← ξ − γ natgrad_ξ minimises the loss L (the negative ELBO). A
proposed step is checked before it is applied: if the new ξ is not a valid
Gaussian (not finite, covariance not positive definite), γ is halved, up to
``max_tries`` proposals, and if none is valid the step is rejected and q(u)
keeps its previous value exactly.
"""
from typing import Callable, List, Sequence

import gpflow
import tensorflow as tf

from .parametrisations import Parametrisation
from .schedules import Schedule, as_schedule, check_gamma
from .variational import as_list

__all__ = ["NaturalGradient", "NaturalGradientError", "natural_gradient", "jvp_by_reverse_twice"]


class NaturalGradientError(RuntimeError):
    """No valid natural-gradient step could be made; q(u) keeps its last valid state."""


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


def natural_gradient(
    parametrisation: Parametrisation,
    xi: Sequence[tf.Tensor],
    grads: Sequence[tf.Tensor],
    closed_form: bool = True,
) -> List[tf.Tensor]:
    r"""natgrad_ξ = (∂ξ/∂θ)(∂L/∂η) from the ordinary gradient ∇_ξ L.

    :param parametrisation: the coordinates ξ are stored in.
    :param xi: current (ξ₁ [M, L], ξ₂ [L, M, M]).
    :param grads: ∇_ξ L, same shapes (``None`` counts as zero).
    :param closed_form: use the parametrisation's closed form when it has one
        (:meth:`~gpnat.parametrisations.Parametrisation.natural_gradient`);
        ``False`` always takes the automatic route below.
    :return: natgrad_ξ, same shapes as ``xi``.
    """
    xi = [tf.convert_to_tensor(x) for x in xi]
    grads = _zeros_for_none(grads, xi)
    if closed_form:
        known = parametrisation.natural_gradient(*xi, *grads)
        if known is not None:
            return list(known)
    eta = list(parametrisation.to_expectation(*xi))
    with tf.GradientTape() as tape:
        tape.watch(eta)
        xi_of_eta = list(parametrisation.from_expectation(*eta))
    dL_deta = tape.gradient(
        xi_of_eta, eta, output_gradients=grads,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    if parametrisation.is_natural:  # ∂ξ/∂θ = I
        return dL_deta
    theta = parametrisation.to_natural(*xi)
    return jvp_by_reverse_twice(parametrisation.from_natural, theta, dL_deta)


class NaturalGradient(tf.Module):
    r"""Natural-gradient descent on one or several q(u): ξ ← ξ − γₜ natgrad_ξ.

    :param gamma: a positive finite step size, or a schedule (any callable
        step t -> γ, see :mod:`gpnat.schedules`), evaluated at t = 1, 2, ...
    :param max_tries: a proposed step that would leave q(u) invalid is retried
        with γ halved, up to this many proposals in all (default 16, down to γ/2¹⁵); if none is valid the
        step is rejected (q(u) is unchanged) and :class:`NaturalGradientError`
        is raised.
    :param closed_form: use a parametrisation's closed-form natural gradient
        where it has one (MeanCholesky, Natural, Expectation: matrix products
        instead of differentiating conversions); ``False`` always takes the
        automatic reverse-mode route, which gives the same result.

    State (``tf.Variable`` s, so it can be checkpointed): ``iterations`` (the
    step counter t of the schedule), and, for the last step, ``last_gamma``
    (γ used, 0 if rejected), ``last_rejections`` (proposals rejected) and
    ``last_accepted``.

    Example::

        opt = gpnat.NaturalGradient(gamma=1.0)
        loss_fn = model.training_loss_closure((X, Y))
        opt.minimize(loss_fn, model.q)
    """

    def __init__(
        self, gamma=1.0, *, max_tries: int = 16, closed_form: bool = True, name: str = "natural_gradient"
    ):
        if not callable(gamma):
            check_gamma(gamma)
        if isinstance(max_tries, bool) or int(max_tries) != max_tries or max_tries < 1:
            raise ValueError(f"max_tries must be a positive integer, got {max_tries!r}")
        super().__init__(name=name)
        self.gamma: Schedule = as_schedule(gamma)
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
        return (
            f"NaturalGradient(gamma={self.gamma!r}, max_tries={self.max_tries}, "
            f"closed_form={self.closed_form})"
        )

    # ----------------------------------------------------------------- public
    def minimize(self, loss_fn: Callable[[], tf.Tensor], q) -> tf.Tensor:
        """Take one natural-gradient step on q (one q(u) or a list of them).

        Evaluates ``loss_fn`` and its gradient once. Returns the loss *before*
        the step. Raises :class:`NaturalGradientError` if no valid step exists.
        """
        qs = as_list(q)
        variables = [v for qi in qs for v in qi.xi]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = loss_fn()
        grads = tape.gradient(loss, variables)
        accepted = self.apply_gradients(qs, grads)
        self._raise_if_rejected(accepted)
        return loss

    def apply_gradients(self, q, grads: Sequence[tf.Tensor]) -> tf.Tensor:
        """Step q(u) given ∇_ξ L for the variables of each q in order (``q.xi``).

        Does not raise on rejection: returns a scalar bool tensor, True when a
        valid step was applied (also stored in ``last_accepted``). Used by
        :func:`gpnat.train` to share one gradient evaluation with Adam.
        """
        qs = as_list(q)
        step = self.iterations + 1
        gamma = tf.cast(self.gamma(step), gpflow.default_float())
        self._check_gamma_value(gamma)

        olds = [tuple(tf.convert_to_tensor(v) for v in qi.xi) for qi in qs]
        xis = [qi.parametrisation.canonical(*old) for qi, old in zip(qs, olds)]
        directions = []
        offset = 0
        for qi, xi in zip(qs, xis):
            directions.append(
                natural_gradient(qi.parametrisation, xi, grads[offset:offset + 2], self.closed_form)
            )
            offset += 2

        def proposal(g):
            return [[x - g * d for x, d in zip(xi, ds)] for xi, ds in zip(xis, directions)]

        def valid_at(g):
            checks = [qi.parametrisation.is_valid(*new) for qi, new in zip(qs, proposal(g))]
            return tf.reduce_all(tf.stack(checks))

        tries, gamma_used, accepted = tf.while_loop(
            lambda k, g, ok: tf.logical_and(tf.logical_not(ok), k < self.max_tries),
            lambda k, g, ok: (k + 1, 0.5 * g, valid_at(0.5 * g)),
            (tf.constant(1, tf.int64), gamma, valid_at(gamma)),
            maximum_iterations=self.max_tries,
        )
        for qi, old_values, new in zip(qs, olds, proposal(gamma_used)):
            for variable, old, value in zip(qi.xi, old_values, new):
                variable.assign(tf.where(accepted, value, old))
        self.iterations.assign_add(1)
        self.last_gamma.assign(tf.where(accepted, gamma_used, tf.zeros_like(gamma_used)))
        self.last_rejections.assign(tf.where(accepted, tries - 1, tries))
        self.last_accepted.assign(accepted)
        return accepted

    def rejection_reason(self) -> str:
        """Why a step was rejected, and what to try instead (used in error messages)."""
        tries = (
            "the proposal" if self.max_tries == 1
            else f"all {self.max_tries} proposals (gamma halved each time)"
        )
        return (
            f"{tries} left q(u) invalid (non-finite, or covariance not positive definite); q(u) "
            "keeps its last valid state. Try a smaller gamma, a warm-up schedule "
            "(gpnat.schedules.LogLinear or IncreasingRate), a larger max_tries, or the "
            "MeanCholesky parametrisation."
        )

    # ---------------------------------------------------------------- helpers
    def _check_gamma_value(self, gamma: tf.Tensor) -> None:
        message = "the natural-gradient step size gamma must be a positive finite number"
        if tf.executing_eagerly():
            value = float(gamma.numpy())
            check_gamma(value, f"gamma (from schedule {self.gamma!r} at step {int(self.iterations.numpy()) + 1})")
        else:
            tf.debugging.assert_all_finite(gamma, message)
            tf.debugging.assert_positive(gamma, message)

    def _raise_if_rejected(self, accepted: tf.Tensor) -> None:
        message = f"no valid natural-gradient step: {self.rejection_reason()}"
        if tf.executing_eagerly():
            if not bool(accepted.numpy()):
                raise NaturalGradientError(message)
        else:
            tf.debugging.Assert(accepted, [message])
