r"""Parametrisations of q(u) = N(m, S): the coordinates ξ that q(u) stores.

A parametrisation is a small stateless object with conversions between its
coordinates ξ = (ξ₁, ξ₂) and the mean/Cholesky, natural and expectation
coordinates. Only :meth:`~Parametrisation.to_meanchol` and
:meth:`~Parametrisation.from_meanchol` are required; the other conversions
default to going through mean/Cholesky and may be overridden with a direct
route. The maths lives in :mod:`gpnat.gaussian`.

Shapes (GPflow layout): ξ₁ is ``[M, L]`` and ξ₂ is ``[L, M, M]`` for the
full-covariance family. A diagonal (mean-field) q(u), gpflow's ``q_diag``, is
an exponential family of its own, with ξ₁ and ξ₂ both ``[M, L]``: its
parametrisations derive from :class:`DiagonalParametrisation`, and their
"mean/Cholesky" view is gpflow's ``(q_mu [M, L], q_sqrt [M, L])``.

The natural-gradient step ξ ← ξ − γ (∂ξ/∂θ)(∂L/∂η) is taken in these
coordinates; :class:`gpnat.NaturalGradient` needs nothing else from a
parametrisation, so adding one does not touch the model or the optimizer.
"""
from typing import Optional, Tuple

import gpflow
import numpy as np
import tensorflow as tf

from . import gaussian

__all__ = [
    "Parametrisation",
    "MeanCholesky",
    "Natural",
    "Expectation",
    "MeanPrecisionCholesky",
    "DiagonalParametrisation",
    "DiagonalMeanStd",
    "DiagonalNatural",
    "DiagonalExpectation",
    "PARAMETRISATIONS",
    "DIAGONAL_PARAMETRISATIONS",
    "get_parametrisation",
    "check_conversions",
]

Pair = Tuple[tf.Tensor, tf.Tensor]


class Parametrisation:
    """Base class: coordinates ξ of q(u) and their conversions.

    Subclasses set :attr:`names` (names of the two stored variables) and
    implement :meth:`to_meanchol` and :meth:`from_meanchol`.
    """

    #: names of the stored variables (ξ₁ [M, L], ξ₂ [L, M, M])
    names: Tuple[str, str] = ("xi_1", "xi_2")
    #: True when ξ are the natural parameters θ, so that ∂ξ/∂θ = I
    is_natural: bool = False
    #: True for the diagonal family (ξ₂ ``[M, L]``), False for full covariances (ξ₂ ``[L, M, M]``)
    diagonal: bool = False
    #: the same coordinates in the other family (full <-> diagonal), if there are any
    counterpart: Optional[type] = None
    #: what a full-covariance ξ₂ ``[L, M, M]`` must be: "lower triangular" (a factor whose upper
    #: triangle the conversions ignore), "symmetric", or None (no constraint; a user's default).
    #: :meth:`gpnat.VariationalGaussian.assign` refuses a ξ₂ that is not.
    xi_2_form: Optional[str] = None

    def to_meanchol(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        """ξ -> (q_mu [M, L], q_sqrt [L, M, M])."""
        raise NotImplementedError(self._missing("to_meanchol(xi_1, xi_2) -> (q_mu, q_sqrt)"))

    def from_meanchol(self, q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
        """(q_mu [M, L], q_sqrt [L, M, M]) -> ξ."""
        raise NotImplementedError(self._missing("from_meanchol(q_mu, q_sqrt) -> (xi_1, xi_2)"))

    def _missing(self, method: str) -> str:
        return (f"the parametrisation {type(self).__name__} does not define {method}: a subclass of "
                "gpnat.Parametrisation implements to_meanchol and from_meanchol (see the guide)")

    def to_natural(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        """ξ -> (θ₁ [M, L], θ₂ [L, M, M])."""
        return gaussian.meanchol_to_natural(*self.to_meanchol(xi_1, xi_2))

    def from_natural(self, theta_1: tf.Tensor, theta_2: tf.Tensor) -> Pair:
        """(θ₁, θ₂) -> ξ."""
        return self.from_meanchol(*gaussian.natural_to_meanchol(theta_1, theta_2))

    def to_expectation(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        """ξ -> (η₁ [M, L], η₂ [L, M, M])."""
        return gaussian.meanchol_to_expectation(*self.to_meanchol(xi_1, xi_2))

    def from_expectation(self, eta_1: tf.Tensor, eta_2: tf.Tensor) -> Pair:
        """(η₁, η₂) -> ξ."""
        return self.from_meanchol(*gaussian.expectation_to_meanchol(eta_1, eta_2))

    def canonical(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        """The representative of the same q(u) that the ``from_*`` conversions return.

        Natural gradients are computed at, and stepped from, this point, so
        that the conversions are differentiated on the branch the stored
        coordinates lie on. The default is the identity; a parametrisation
        that overrides it also overrides :meth:`canonical_gradients`.
        """
        return xi_1, xi_2

    def canonical_gradients(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        """∇L at :meth:`canonical` (ξ), from ∇L (``grad_1``, ``grad_2``) at the stored ξ.

        The chain rule through the map from the canonical point back to ξ: for
        a flip of the factor's column signs, the same flip of the gradient's
        columns. The default, for the identity :meth:`canonical`, is the identity.
        """
        return grad_1, grad_2

    def natural_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Optional[Pair]:
        """natgrad_ξ in closed form, if this parametrisation knows one; else ``None``.

        :class:`gpnat.NaturalGradient` then uses the automatic route
        (∂ξ/∂θ)(∂L/∂η) by reverse-mode autodiff, which works for any
        parametrisation. A closed form is only an optimisation: the test
        battery checks it against the automatic route.
        """
        return None

    def expectation_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Optional[Pair]:
        """∂L/∂η from the ordinary gradient ∇_ξ L, in closed form if known; else ``None``.

        ∂L/∂η = (∂ξ/∂η)ᵀ ∇_ξ L is the natural gradient in natural coordinates.
        ``None`` makes :func:`gpnat.natgrad.expectation_gradient` take reverse
        mode through η -> ξ instead.
        """
        return None

    def natural_tangent(self, xi_1, xi_2, v_1, v_2) -> Optional[Pair]:
        """(∂ξ/∂θ) v, the tangent of θ -> ξ in direction v, in closed form if known; else ``None``.

        ``None`` makes :func:`gpnat.natgrad.natural_tangent` take reverse mode
        twice through θ -> ξ instead.
        """
        return None

    def natural_step(self, coordinates: "Parametrisation", xi_1, xi_2, grad_1, grad_2):
        """A closed-form step taken in ``coordinates`` from these stored coordinates, if known.

        Returns ``None`` (the optimizer then converts, steps and converts back)
        or a function γ -> new stored (ξ₁, ξ₂) equal to that route. Only an
        optimisation: the test battery checks it against the general route.
        """
        return None

    def is_valid(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> tf.Tensor:
        """Scalar bool tensor: do these coordinates describe a proper Gaussian?

        Works eagerly and in compiled code (it never raises).
        """
        return gaussian.is_valid_cholesky(*self.to_meanchol(xi_1, xi_2))

    def for_family(self, diagonal: bool) -> "Parametrisation":
        """These coordinates for the diagonal (``True``) or full family: self or its counterpart.

        Lets ``NaturalGradient(coordinates=Natural())`` step a diagonal q(u) in
        :class:`DiagonalNatural`. Raises ``ValueError`` when there is no counterpart.
        """
        if self.diagonal == bool(diagonal):
            return self
        if self.counterpart is None:
            family = "diagonal" if diagonal else "full-covariance"
            raise ValueError(
                f"{self!r} has no {family} counterpart, so it cannot be the coordinates of a step "
                f"on a {family} q(u); choose one of "
                f"{sorted(DIAGONAL_PARAMETRISATIONS if diagonal else PARAMETRISATIONS)}"
            )
        return self.counterpart()

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"{type(self).__name__}({settings})"

    def __eq__(self, other: object) -> bool:
        """Same class and same settings (instance attributes): a step in coordinates equal to the
        storage is taken without converting, so instances that convert differently must differ."""
        if type(self) is not type(other):
            return False
        mine, theirs = vars(self), vars(other)
        return mine.keys() == theirs.keys() and all(_same_setting(mine[k], theirs[k]) for k in mine)

    def __hash__(self) -> int:
        return hash(type(self))


def _same_setting(a, b) -> bool:
    """Equal values, arrays compared elementwise; objects that cannot be compared only to themselves."""
    if a is b:
        return True
    try:
        return bool(np.array_equal(a, b))
    except Exception:  # noqa: BLE001 - an object whose == does not give a truth value
        return False


def _column_signs(factor: tf.Tensor) -> tf.Tensor:
    """D = sign(diag L) ``[..., 1, M]`` (+1 where the diagonal is 0), to scale L's columns."""
    diagonal = tf.linalg.diag_part(factor)
    return tf.where(diagonal < 0, -tf.ones_like(diagonal), tf.ones_like(diagonal))[..., None, :]


def _positive_diagonal(factor: tf.Tensor) -> tf.Tensor:
    """L D with D = diag(sign(diag L)): the same L Lᵀ, with a non-negative diagonal."""
    factor = tf.linalg.band_part(factor, -1, 0)
    return factor * _column_signs(factor)


class _SignedFactor:
    """Mixin for (m, factor) storages whose factor's columns may carry any sign.

    The canonical point is (m, L D), D = diag(sign(diag L)); since L = (L D) D,
    the gradient there is ∇_L D: the same columns flipped.
    """

    def canonical(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        # L and L diag(±1) are the same q(u); conversions return the positive diagonal
        return xi_1, _positive_diagonal(xi_2)

    def canonical_gradients(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        return grad_1, grad_2 * _column_signs(xi_2)


class MeanCholesky(_SignedFactor, Parametrisation):
    """ξ = (m, L) with S = L Lᵀ, L lower triangular (GPflow's ``q_mu``, ``q_sqrt``).

    The parametrisation recommended by Salimbeni et al. (2018) for
    non-conjugate likelihoods: any finite L with a non-zero diagonal is valid.
    """

    names = ("q_mu", "q_sqrt")
    xi_2_form = "lower triangular"

    def to_meanchol(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return xi_1, tf.linalg.band_part(xi_2, -1, 0)

    def from_meanchol(self, q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
        return q_mu, tf.linalg.band_part(q_sqrt, -1, 0)

    def natural_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        r"""Closed form: natgrad_m = S ∇_m L,  natgrad_L = L Φ(P + Pᵀ) with P = Φ(Lᵀ ∇_L L).

        Φ keeps the lower triangle and halves the diagonal. It follows from
        ∂L/∂η (the Cholesky's reverse-mode rule) and the tangent of θ -> (m, L)
        (dS = dL Lᵀ + L dLᵀ), whose triangular solves cancel: two matrix
        products per latent GP, no solve.
        """
        L = tf.linalg.band_part(xi_2, -1, 0)
        grad_L = tf.linalg.band_part(grad_2, -1, 0)
        P = gaussian.phi(gaussian.matmul(L, grad_L, transpose_a=True))
        nat_L = gaussian.matmul(L, gaussian.phi(P + tf.linalg.adjoint(P)))
        Lt_g = gaussian.matmul(L, gaussian._col_to_batch(grad_1), transpose_a=True)
        nat_m = gaussian._batch_to_col(gaussian.matmul(L, Lt_g))
        return nat_m, nat_L

    def expectation_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        r"""Closed form: ∂L/∂η₂ = ∇_S = ½ L⁻ᵀ (P + Pᵀ) L⁻¹,  ∂L/∂η₁ = ∇_m − 2 ∇_S m.

        P = Φ(Lᵀ ∇_L L) as in :meth:`natural_gradient`; this is the Cholesky's
        reverse-mode rule for L = chol(η₂ − η₁η₁ᵀ): two triangular solves.
        """
        L = tf.linalg.band_part(xi_2, -1, 0)
        grad_L = tf.linalg.band_part(grad_2, -1, 0)
        P = gaussian.phi(gaussian.matmul(L, grad_L, transpose_a=True))
        A = tf.linalg.triangular_solve(L, P + tf.linalg.adjoint(P), lower=True, adjoint=True)  # L⁻ᵀ(P+Pᵀ)
        grad_S = 0.5 * tf.linalg.adjoint(
            tf.linalg.triangular_solve(L, tf.linalg.adjoint(A), lower=True, adjoint=True)
        )  # ½ L⁻ᵀ (P+Pᵀ) L⁻¹, symmetric
        grad_S = gaussian.symmetrise(grad_S)
        m = gaussian._col_to_batch(xi_1)
        v1 = gaussian._col_to_batch(grad_1) - 2.0 * gaussian.matmul(grad_S, m)
        return gaussian._batch_to_col(v1), grad_S

    def natural_step(self, coordinates, xi_1, xi_2, grad_1, grad_2):
        r"""Closed form of a step in natural coordinates, stored as (m, L).

        With Q = P + Pᵀ, P = Φ(Lᵀ ∇_L L) (so that 2 ∂L/∂η₂ = L⁻ᵀ Q L⁻¹), the new
        precision is Λ' = Λ + 2γ ∂L/∂η₂ = L⁻ᵀ (I + γQ) L⁻¹. With
        I + γQ = V Vᵀ, V upper triangular (a Cholesky of the reversed matrix,
        as in :func:`~gpnat.gaussian.reverse_cholesky`), (I + γQ)⁻¹ = R Rᵀ
        with R = V⁻ᵀ lower, so the new factor is L' = L R = (V⁻¹ Lᵀ)ᵀ and the
        new mean is m' = L' Rᵀ t = L' V⁻¹ t with
        t = Lᵀθ₁' = L⁻¹m − γ (Lᵀ∇_m − Q L⁻¹m).
        Per γ: one Cholesky and one triangular solve, whose operands are all
        triangular (:func:`~gpnat.gaussian.solve_upper_triangular`; P comes from
        :func:`~gpnat.gaussian.lower_of_transpose_product`). If I + γQ is
        not positive definite the result is NaN, so the proposal is invalid.
        """
        if not coordinates.is_natural:
            return None
        L = tf.linalg.band_part(xi_2, -1, 0)
        grad_L = tf.linalg.band_part(grad_2, -1, 0)
        P = gaussian.phi(gaussian.lower_of_transpose_product(L, grad_L))
        Q = P + gaussian.transpose(P)
        m = gaussian._col_to_batch(xi_1)
        a = tf.linalg.triangular_solve(L, m, lower=True)  # L⁻¹ m = Lᵀ θ₁
        c = gaussian.matmul(L, gaussian._col_to_batch(grad_1), transpose_a=True) - gaussian.matmul(Q, a)
        eye = tf.eye(tf.shape(L)[-1], batch_shape=tf.shape(L)[:-2], dtype=L.dtype)
        Lt = gaussian.transpose(L)
        reverse = lambda A: tf.reverse(A, axis=[-2, -1])  # noqa: E731  (J A J)

        def step(gamma):
            # V = J chol(J (I + γQ) J) J is upper with V Vᵀ = I + γQ; L'ᵀ = V⁻¹ Lᵀ and Rᵀ t = V⁻¹ t
            V = reverse(tf.linalg.cholesky(reverse(eye + gamma * Q)))
            L_new_t = gaussian.solve_upper_triangular(V, Lt)
            Rt_t = tf.linalg.triangular_solve(V, a - gamma * c, lower=False)
            m_new = gaussian.matmul(L_new_t, Rt_t, transpose_a=True)
            return gaussian._batch_to_col(m_new), tf.linalg.band_part(gaussian.transpose(L_new_t), -1, 0)

        return step

    def natural_tangent(self, xi_1, xi_2, v_1, v_2) -> Pair:
        r"""Closed form: dm = S v₁ + 2 S v₂ m,  dL = 2 L Φ(Lᵀ v₂ L) (v₂ symmetrised).

        From S = (−2θ₂)⁻¹: dS = 2 S v₂ S, m = S θ₁, and the Cholesky's tangent
        dL = L Φ(L⁻¹ dS L⁻ᵀ), whose solves cancel against S = L Lᵀ.
        """
        L = tf.linalg.band_part(xi_2, -1, 0)
        v2 = gaussian.symmetrise(v_2)
        m = gaussian._col_to_batch(xi_1)
        inner = gaussian._col_to_batch(v_1) + 2.0 * gaussian.matmul(v2, m)
        dm = gaussian.matmul(L, gaussian.matmul(L, inner, transpose_a=True))
        dL = 2.0 * gaussian.matmul(L, gaussian.phi(gaussian.matmul(L, gaussian.matmul(v2, L), transpose_a=True)))
        return gaussian._batch_to_col(dm), dL


class Natural(Parametrisation):
    """ξ = θ: θ₁ = S⁻¹m ``[M, L]``, θ₂ = −½S⁻¹ ``[L, M, M]``.

    In these coordinates the natural gradient is ∂L/∂η and one step with
    γ = 1 on a conjugate (Gaussian) likelihood lands on the optimum.
    Valid while −2θ₂ is positive definite.
    """

    names = ("theta_1", "theta_2")
    is_natural = True
    xi_2_form = "symmetric"

    def to_meanchol(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return gaussian.natural_to_meanchol(xi_1, xi_2)

    def from_meanchol(self, q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
        return gaussian.meanchol_to_natural(q_mu, q_sqrt)

    def to_natural(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return xi_1, gaussian.symmetrise(xi_2)

    def from_natural(self, theta_1: tf.Tensor, theta_2: tf.Tensor) -> Pair:
        return theta_1, gaussian.symmetrise(theta_2)

    def from_expectation(self, eta_1: tf.Tensor, eta_2: tf.Tensor) -> Pair:
        return gaussian.expectation_to_natural(eta_1, eta_2)

    def is_valid(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> tf.Tensor:
        # −2θ₂ must be positive definite: one Cholesky, no inverse needed
        return gaussian.is_valid_cholesky(xi_1, tf.linalg.cholesky(-2.0 * gaussian.symmetrise(xi_2)))

    def natural_tangent(self, xi_1, xi_2, v_1, v_2) -> Pair:
        """∂θ/∂θ = I."""
        return v_1, v_2

    def natural_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        """In natural coordinates the natural gradient is ∂L/∂η (:meth:`expectation_gradient`)."""
        return self.expectation_gradient(xi_1, xi_2, grad_1, grad_2)

    def expectation_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        r"""Closed form of ∂L/∂η, the reverse-mode rule of η -> θ written out.

        With P = −2θ₂ = S⁻¹, m = P⁻¹θ₁ and G = sym(∇_θ₁ mᵀ) − ½ sym(∇_θ₂):
        ∂L/∂η₂ = −P G P and ∂L/∂η₁ = P ∇_θ₁ − 2 (∂L/∂η₂) m.
        One Cholesky (for m) and matrix products.
        """
        P = -2.0 * gaussian.symmetrise(xi_2)
        chol = tf.linalg.cholesky(P)
        m = tf.linalg.cholesky_solve(chol, gaussian._col_to_batch(xi_1))  # [L, M, 1]
        g1 = gaussian._col_to_batch(grad_1)
        G = gaussian.symmetrise(gaussian.matmul(g1, m, transpose_b=True)) - 0.5 * gaussian.symmetrise(grad_2)
        v2 = -gaussian.matmul(P, gaussian.matmul(G, P))
        v1 = gaussian.matmul(P, g1) - 2.0 * gaussian.matmul(v2, m)
        return gaussian._batch_to_col(v1), v2


class Expectation(Parametrisation):
    """ξ = η: η₁ = m ``[M, L]``, η₂ = S + m mᵀ ``[L, M, M]``.

    Valid while η₂ − η₁η₁ᵀ is positive definite.
    """

    names = ("eta_1", "eta_2")
    xi_2_form = "symmetric"

    def to_meanchol(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return gaussian.expectation_to_meanchol(xi_1, xi_2)

    def from_meanchol(self, q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
        return gaussian.meanchol_to_expectation(q_mu, q_sqrt)

    def to_expectation(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return xi_1, gaussian.symmetrise(xi_2)

    def from_expectation(self, eta_1: tf.Tensor, eta_2: tf.Tensor) -> Pair:
        return eta_1, gaussian.symmetrise(eta_2)

    def to_natural(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return gaussian.expectation_to_natural(xi_1, xi_2)

    def expectation_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        """ξ = η: ∂L/∂η is the gradient itself (symmetrised, as η₂ is read symmetrised)."""
        return grad_1, gaussian.symmetrise(grad_2)

    def natural_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        """(∂η/∂θ) ∇_η L: :meth:`natural_tangent` applied to :meth:`expectation_gradient`."""
        return self.natural_tangent(xi_1, xi_2, *self.expectation_gradient(xi_1, xi_2, grad_1, grad_2))

    def natural_tangent(self, xi_1, xi_2, v_1, v_2) -> Pair:
        r"""Closed form of (∂η/∂θ) v, the tangent of θ -> η written out.

        With S = η₂ − mmᵀ and v₂ symmetrised: dS = 2 S v₂ S,
        dm = S v₁ + 2 S v₂ m and dη₂ = dS + dm mᵀ + m dmᵀ. Matrix products only.
        """
        m = gaussian._col_to_batch(xi_1)
        S = gaussian.symmetrise(xi_2) - gaussian.matmul(m, m, transpose_b=True)
        v1 = gaussian._col_to_batch(v_1)
        v2 = gaussian.symmetrise(v_2)
        S_v2 = gaussian.matmul(S, v2)
        dS = 2.0 * gaussian.matmul(S_v2, S)
        dm = gaussian.matmul(S, v1) + 2.0 * gaussian.matmul(S_v2, m)
        dm_mT = gaussian.matmul(dm, m, transpose_b=True)
        return gaussian._batch_to_col(dm), dS + dm_mT + tf.linalg.adjoint(dm_mT)


class MeanPrecisionCholesky(_SignedFactor, Parametrisation):
    """ξ = (m, R) with S⁻¹ = R Rᵀ, R lower triangular.

    The Cholesky factor of the precision: like :class:`MeanCholesky`, any finite
    R with a non-zero diagonal is a valid Gaussian.
    """

    names = ("q_mu", "q_prec_sqrt")
    xi_2_form = "lower triangular"

    def to_meanchol(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return gaussian.precision_cholesky_to_meanchol(xi_1, xi_2)

    def from_meanchol(self, q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
        mu, prec_sqrt = gaussian.meanchol_to_precision_cholesky(q_mu, q_sqrt)
        return mu, tf.linalg.band_part(prec_sqrt, -1, 0)

    def expectation_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        r"""Closed form: ∂L/∂η₂ = ∇_S = −½ R (P + Pᵀ) Rᵀ,  ∂L/∂η₁ = ∇_m − 2 ∇_S m.

        P = Φ(Rᵀ ∇_R): the Cholesky's reverse-mode rule gives
        ∇_Λ = ½ R⁻ᵀ (P + Pᵀ) R⁻¹ for the precision Λ = R Rᵀ, and
        ∇_S = −Λ ∇_Λ Λ, in which every solve cancels. Matrix products only,
        and S = η₂ − η₁η₁ᵀ is never formed (that difference loses digits when
        S is small against the mean).
        """
        R = tf.linalg.band_part(xi_2, -1, 0)
        grad_R = tf.linalg.band_part(grad_2, -1, 0)
        P = gaussian.phi(gaussian.matmul(R, grad_R, transpose_a=True))
        grad_S = -0.5 * gaussian.matmul(R, gaussian.matmul(P + tf.linalg.adjoint(P), R, transpose_b=True))
        grad_S = gaussian.symmetrise(grad_S)
        m = gaussian._col_to_batch(xi_1)
        v1 = gaussian._col_to_batch(grad_1) - 2.0 * gaussian.matmul(grad_S, m)
        return gaussian._batch_to_col(v1), grad_S

    def is_valid(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> tf.Tensor:
        # valid iff R itself is finite with a non-zero diagonal; the converted
        # factor is checked too, as it is what the model will use
        return tf.logical_and(
            gaussian.is_valid_cholesky(xi_1, tf.linalg.band_part(xi_2, -1, 0)),
            super().is_valid(xi_1, xi_2),
        )


class DiagonalParametrisation(Parametrisation):
    r"""Base class of the diagonal (mean-field) family: q(u) = ∏ₗ ∏ₘ N(u_ml; m_ml, s_ml²).

    Both coordinates are ``[M, L]`` (gpflow's ``q_diag`` layout). The family is
    an exponential family of its own, with θ₁ = m / s², θ₂ = −1 / (2s²) and
    η₁ = m, η₂ = s² + m² elementwise, so its natural gradient (the Fisher
    matrix of the diagonal family, not a projection of the full one's) is
    elementwise too. :meth:`to_meanchol` and :meth:`from_meanchol` read and
    return gpflow's ``(q_mu [M, L], q_sqrt [M, L])``.
    """

    diagonal = True

    def to_natural(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return gaussian.diag_meanstd_to_natural(*self.to_meanchol(xi_1, xi_2))

    def from_natural(self, theta_1: tf.Tensor, theta_2: tf.Tensor) -> Pair:
        return self.from_meanchol(*gaussian.diag_natural_to_meanstd(theta_1, theta_2))

    def to_expectation(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return gaussian.diag_meanstd_to_expectation(*self.to_meanchol(xi_1, xi_2))

    def from_expectation(self, eta_1: tf.Tensor, eta_2: tf.Tensor) -> Pair:
        return self.from_meanchol(*gaussian.diag_expectation_to_meanstd(eta_1, eta_2))

    def is_valid(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> tf.Tensor:
        return gaussian.is_valid_diag(*self.to_meanchol(xi_1, xi_2))


class DiagonalMeanStd(DiagonalParametrisation):
    """ξ = (m, s), the means and standard deviations ``[M, L]``: gpflow's ``q_mu`` and ``q_sqrt`` with ``q_diag=True``.

    Any finite s without zeros is valid (s and −s are the same Gaussian).
    """

    names = ("q_mu", "q_sqrt")

    def to_meanchol(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return xi_1, xi_2

    def from_meanchol(self, q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
        return q_mu, q_sqrt

    def canonical(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return xi_1, tf.abs(xi_2)

    def canonical_gradients(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        # s = |s| sign(s): ∇ at |s| is ∇_s sign(s)
        return grad_1, tf.where(xi_2 < 0, -grad_2, grad_2)

    def natural_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        """Closed form: natgrad_m = s² ∇_m L, natgrad_s = ½ s² ∇_s L (the Fisher is diag(1/s², 2/s²))."""
        variance = tf.square(xi_2)
        return variance * grad_1, 0.5 * variance * grad_2

    def expectation_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        """Closed form: ∂L/∂η₂ = ∇_s / (2s), ∂L/∂η₁ = ∇_m − ∇_s m / s, from s = (η₂ − η₁²)^½."""
        return grad_1 - grad_2 * xi_1 / xi_2, 0.5 * grad_2 / xi_2

    def natural_tangent(self, xi_1, xi_2, v_1, v_2) -> Pair:
        """Closed form: dm = s² (v₁ + 2 m v₂), ds = s³ v₂, from s = (−2θ₂)^(−½), m = θ₁ s²."""
        variance = tf.square(xi_2)
        return variance * (v_1 + 2.0 * xi_1 * v_2), variance * xi_2 * v_2


class DiagonalNatural(DiagonalParametrisation):
    """ξ = θ of the diagonal family: θ₁ = m / s², θ₂ = −1 / (2s²), both ``[M, L]``.

    Valid while θ₂ < 0. Unlike the full family, a diagonal q(u) is not
    conjugate to a Gaussian likelihood (the ELBO couples the means), so no
    step size is exact in one step; steps of γ < 1 converge to the best
    diagonal q(u).
    """

    names = ("theta_1", "theta_2")
    is_natural = True

    def to_meanchol(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return gaussian.diag_natural_to_meanstd(xi_1, xi_2)

    def from_meanchol(self, q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
        return gaussian.diag_meanstd_to_natural(q_mu, q_sqrt)

    def to_natural(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return xi_1, xi_2

    def from_natural(self, theta_1: tf.Tensor, theta_2: tf.Tensor) -> Pair:
        return theta_1, theta_2

    def natural_tangent(self, xi_1, xi_2, v_1, v_2) -> Pair:
        """∂θ/∂θ = I."""
        return v_1, v_2

    def natural_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        """In natural coordinates the natural gradient is ∂L/∂η (:meth:`expectation_gradient`)."""
        return self.expectation_gradient(xi_1, xi_2, grad_1, grad_2)

    def expectation_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        r"""Closed form of (∂θ/∂η)ᵀ ∇_θ L with v = s² = η₂ − η₁², m = η₁, elementwise:

        ∂L/∂η₁ = ∇_θ₁ (1/v + 2m²/v²) − ∇_θ₂ m / v²,  ∂L/∂η₂ = (½ ∇_θ₂ − ∇_θ₁ m) / v².
        """
        variance = tf.math.reciprocal(-2.0 * xi_2)
        m = xi_1 * variance
        v2 = tf.square(variance)
        d1 = grad_1 * (variance + 2.0 * tf.square(m)) / v2 - grad_2 * m / v2
        d2 = (0.5 * grad_2 - grad_1 * m) / v2
        return d1, d2


class DiagonalExpectation(DiagonalParametrisation):
    """ξ = η of the diagonal family: η₁ = m, η₂ = s² + m², both ``[M, L]``. Valid while η₂ > η₁²."""

    names = ("eta_1", "eta_2")

    def to_meanchol(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return gaussian.diag_expectation_to_meanstd(xi_1, xi_2)

    def from_meanchol(self, q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
        return gaussian.diag_meanstd_to_expectation(q_mu, q_sqrt)

    def to_expectation(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> Pair:
        return xi_1, xi_2

    def from_expectation(self, eta_1: tf.Tensor, eta_2: tf.Tensor) -> Pair:
        return eta_1, eta_2

    def expectation_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        """ξ = η: ∂L/∂η is the gradient itself."""
        return grad_1, grad_2

    def natural_gradient(self, xi_1, xi_2, grad_1, grad_2) -> Pair:
        """(∂η/∂θ) ∇_η L: :meth:`natural_tangent` applied to the gradient."""
        return self.natural_tangent(xi_1, xi_2, grad_1, grad_2)

    def natural_tangent(self, xi_1, xi_2, v_1, v_2) -> Pair:
        """Closed form: with v = s²: dm = v (v₁ + 2 m v₂), dη₂ = 2 v² v₂ + 2 m dm."""
        variance = xi_2 - tf.square(xi_1)
        dm = variance * (v_1 + 2.0 * xi_1 * v_2)
        return dm, 2.0 * tf.square(variance) * v_2 + 2.0 * xi_1 * dm


MeanCholesky.counterpart, DiagonalMeanStd.counterpart = DiagonalMeanStd, MeanCholesky
Natural.counterpart, DiagonalNatural.counterpart = DiagonalNatural, Natural
Expectation.counterpart, DiagonalExpectation.counterpart = DiagonalExpectation, Expectation

#: every parametrisation shipped with gpnat, by name
PARAMETRISATIONS = {
    "mean_cholesky": MeanCholesky,
    "natural": Natural,
    "expectation": Expectation,
    "mean_precision_cholesky": MeanPrecisionCholesky,
}

#: the diagonal (``q_diag``) family's parametrisations, by name
DIAGONAL_PARAMETRISATIONS = {
    "diagonal_mean_std": DiagonalMeanStd,
    "diagonal_natural": DiagonalNatural,
    "diagonal_expectation": DiagonalExpectation,
}


def get_parametrisation(p) -> Parametrisation:
    """A :class:`Parametrisation` from an instance, a class or a name in :data:`PARAMETRISATIONS`."""
    if isinstance(p, Parametrisation):
        return p
    if isinstance(p, type) and issubclass(p, Parametrisation):
        return p()
    known = {**PARAMETRISATIONS, **DIAGONAL_PARAMETRISATIONS}
    if isinstance(p, str) and p.lower() in known:
        return known[p.lower()]()
    raise TypeError(
        f"parametrisation must be a gpnat.Parametrisation or one of {sorted(known)}, "
        f"got {p!r}"
    )


def check_conversions(parametrisation: Parametrisation) -> None:
    """Try a user's parametrisation once on a small valid q(u) (M = 3, L = 2) in gpflow's default float.

    Every conversion (ξ <-> mean/Cholesky, natural, expectation) must take
    tensors and return two TensorFlow tensors of the documented shapes: a
    NumPy result cuts the gradients and fails in compiled steps, far from its
    cause. Raises ``TypeError`` or ``ValueError`` naming the conversion;
    gpnat's own parametrisations are not tried (the tests cover them), and a
    conversion not defined raises its ``NotImplementedError``.
    """
    if type(parametrisation).__module__.split(".")[0] == "gpnat":
        return
    name, dtype = type(parametrisation).__name__, tf.as_dtype(gpflow.config.default_float())
    q_mu = tf.constant([[0.1, -0.2], [0.3, 0.0], [-0.5, 0.4]], dtype)
    if parametrisation.diagonal:
        q_sqrt = tf.constant([[1.0, 0.5], [0.8, 1.2], [0.6, 0.9]], dtype)
    else:
        q_sqrt = tf.constant([[[1.0, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.2, 0.1, 0.6]],
                              [[0.5, 0.0, 0.0], [0.0, 1.2, 0.0], [0.4, -0.3, 0.9]]], dtype)
    shapes = ((3, 2), tuple(q_sqrt.shape))

    def call(method, *args):
        try:
            out = getattr(parametrisation, method)(*args)
        except NotImplementedError:
            raise
        except Exception as err:  # noqa: BLE001 - re-raised with the conversion named
            raise ValueError(f"{name}.{method} raised {type(err).__name__} on a small valid q(u) "
                             f"(M = 3, L = 2, {dtype.name} tensors): {err}") from err
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(f"{name}.{method} must return a pair of tensors, got {type(out).__name__}")
        for i, (x, shape) in enumerate(zip(out, shapes), start=1):
            if not tf.is_tensor(x):
                raise TypeError(
                    f"{name}.{method} returned a {type(x).__module__}.{type(x).__name__} as its output {i}: "
                    "conversions must be written with TensorFlow ops (e.g. tf.linalg.band_part, not np.tril), "
                    "so that gradients flow through them and they run in compiled steps")
            if x.dtype != dtype or tuple(x.shape) != shape:
                raise ValueError(
                    f"{name}.{method} returned its output {i} as {x.dtype.name} {list(x.shape)} from {dtype.name} "
                    f"inputs; expected {dtype.name} {list(shape)} (ξ₁, θ₁, η₁ [M, L]; the second "
                    f"{'[M, L] in a diagonal family' if parametrisation.diagonal else '[L, M, M]'})")
        return out

    xi = call("from_meanchol", q_mu, q_sqrt)
    call("to_meanchol", *xi)
    call("from_natural", *call("to_natural", *xi))
    call("from_expectation", *call("to_expectation", *xi))
