r"""q(u): L independent Gaussians over the M inducing variables, stored in a chosen parametrisation.

``VariationalGaussian`` holds *what is stored*: two ``tf.Variable`` s, the
coordinates ξ of the user's :class:`~gpnat.parametrisations.Parametrisation`.
*How q(u) becomes q(f)* is the model's business (:class:`gpnat.SVGP`), which
only ever reads the mean/Cholesky view ``mean_cholesky()``.
"""
from typing import List, Optional, Sequence, Tuple

import gpflow
import numpy as np
import tensorflow as tf
from check_shapes import check_shapes

from .parametrisations import MeanCholesky, Parametrisation, get_parametrisation

__all__ = ["VariationalGaussian", "InvalidGaussianError", "variational_distributions"]


class InvalidGaussianError(ValueError):
    """A q(u) state that is not a valid Gaussian (non-finite, not positive definite)."""


def _lower_triangular_is_valid(q_mu: np.ndarray, q_sqrt: np.ndarray) -> None:
    if not np.all(np.isfinite(q_mu)):
        raise InvalidGaussianError("q_mu contains NaN or inf")
    if not np.all(np.isfinite(q_sqrt)):
        raise InvalidGaussianError("q_sqrt contains NaN or inf")
    if np.any(np.triu(q_sqrt, k=1) != 0):
        raise InvalidGaussianError("q_sqrt must be lower triangular (its upper triangle is not zero)")
    if np.any(np.diagonal(q_sqrt, axis1=-2, axis2=-1) == 0):
        raise InvalidGaussianError(
            "q_sqrt has a zero on its diagonal: the covariance q_sqrt q_sqrtᵀ is singular"
        )


class VariationalGaussian(gpflow.base.Module):
    r"""q(u) = ∏ₗ N(uₗ; mₗ, Sₗ) for L latent GPs over M inducing variables.

    :param num_inducing: M.
    :param num_latent_gps: L.
    :param parametrisation: the coordinates ξ to store q(u) in (default
        :class:`~gpnat.parametrisations.MeanCholesky`); an instance, a class or a name.
    :param q_mu: initial mean ``[M, L]`` (default zeros).
    :param q_sqrt: initial Cholesky factor of the covariance ``[L, M, M]``
        (default the identity).

    The stored variables are available as ``xi`` (a tuple) and under the
    parametrisation's names, e.g. ``q.theta_1`` and ``q.theta_2`` for
    :class:`~gpnat.parametrisations.Natural`.
    """

    def __init__(
        self,
        num_inducing: int,
        num_latent_gps: int = 1,
        parametrisation: Parametrisation = MeanCholesky(),
        q_mu: Optional[np.ndarray] = None,
        q_sqrt: Optional[np.ndarray] = None,
        name: Optional[str] = None,
    ):
        super().__init__(name=name)
        self.parametrisation = get_parametrisation(parametrisation)
        self.num_inducing = int(num_inducing)
        self.num_latent_gps = int(num_latent_gps)
        dtype = gpflow.default_float()
        M, L = self.num_inducing, self.num_latent_gps
        if q_mu is None:
            q_mu = np.zeros((M, L), dtype=dtype)
        if q_sqrt is None:
            q_sqrt = np.tile(np.eye(M, dtype=dtype)[None], (L, 1, 1))
        xi = self._checked_coordinates(q_mu, q_sqrt)
        self._xi = tuple(
            tf.Variable(value, dtype=dtype, name=name, trainable=True)
            for value, name in zip(xi, self.parametrisation.names)
        )
        for name, variable in zip(self.parametrisation.names, self._xi):
            setattr(self, name, variable)

    @property
    def xi(self) -> Tuple[tf.Variable, tf.Variable]:
        """The stored variables ξ = (ξ₁ [M, L], ξ₂ [L, M, M])."""
        return self._xi

    # ------------------------------------------------------------------ views
    @check_shapes("return[0]: [M, L]", "return[1]: [L, M, M]")
    def mean_cholesky(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """(q_mu [M, L], q_sqrt [L, M, M]) with S = q_sqrt q_sqrtᵀ, as tensors."""
        return self.parametrisation.to_meanchol(*self._xi)

    @check_shapes("return[0]: [M, L]", "return[1]: [L, M, M]")
    def natural(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """(θ₁ = S⁻¹m [M, L], θ₂ = −½S⁻¹ [L, M, M])."""
        return self.parametrisation.to_natural(*self._xi)

    @check_shapes("return[0]: [M, L]", "return[1]: [L, M, M]")
    def expectation(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """(η₁ = m [M, L], η₂ = S + m mᵀ [L, M, M])."""
        return self.parametrisation.to_expectation(*self._xi)

    def is_valid(self) -> tf.Tensor:
        """Scalar bool tensor: does the stored state describe a proper Gaussian?"""
        return self.parametrisation.is_valid(*self._xi)

    # ------------------------------------------------------------ assignment
    def _checked_coordinates(self, q_mu, q_sqrt) -> Tuple[np.ndarray, np.ndarray]:
        """Validate a mean/Cholesky state and convert it to this q's coordinates."""
        dtype = gpflow.default_float()
        M, L = self.num_inducing, self.num_latent_gps
        q_mu = np.asarray(q_mu, dtype=dtype)
        q_sqrt = np.asarray(q_sqrt, dtype=dtype)
        if q_mu.shape != (M, L):
            raise ValueError(f"q_mu must have shape [M, L] = {[M, L]}, got {list(q_mu.shape)}")
        if q_sqrt.shape != (L, M, M):
            raise ValueError(
                f"q_sqrt must have shape [L, M, M] = {[L, M, M]}, got {list(q_sqrt.shape)}"
            )
        _lower_triangular_is_valid(q_mu, q_sqrt)
        xi = tuple(np.asarray(t) for t in self.parametrisation.from_meanchol(q_mu, q_sqrt))
        if not bool(self.parametrisation.is_valid(*xi)):
            raise InvalidGaussianError(
                f"this q(u) cannot be represented in {self.parametrisation!r}: its conversion "
                "is not finite (is the covariance badly conditioned?)"
            )
        return xi

    def assign_mean_cholesky(self, q_mu, q_sqrt) -> None:
        """Set q(u) from q_mu ``[M, L]`` and a lower-triangular q_sqrt ``[L, M, M]``.

        Raises ``ValueError`` (or :class:`InvalidGaussianError`) naming the problem,
        and leaves q(u) unchanged, when shapes or values are invalid.
        """
        xi = self._checked_coordinates(q_mu, q_sqrt)
        for variable, value in zip(self._xi, xi):
            variable.assign(value)

    def assign(self, xi_1, xi_2) -> None:
        """Set the stored coordinates ξ directly, after checking they are a valid Gaussian.

        On invalid input nothing is assigned and :class:`InvalidGaussianError` is raised.
        """
        values = []
        for variable, value, name in zip(self._xi, (xi_1, xi_2), self.parametrisation.names):
            value = np.asarray(value, dtype=gpflow.default_float())
            if value.shape != tuple(variable.shape):
                raise ValueError(
                    f"{name} must have shape {list(variable.shape)}, got {list(value.shape)}"
                )
            if not np.all(np.isfinite(value)):
                raise InvalidGaussianError(f"{name} contains NaN or inf")
            values.append(value)
        if not bool(self.parametrisation.is_valid(*values)):
            raise InvalidGaussianError(
                f"({', '.join(self.parametrisation.names)}) is not a valid Gaussian in "
                f"{self.parametrisation!r} (covariance not positive definite)"
            )
        for variable, value in zip(self._xi, values):
            variable.assign(value)

    def __repr__(self) -> str:
        return (
            f"VariationalGaussian(M={self.num_inducing}, L={self.num_latent_gps}, "
            f"parametrisation={self.parametrisation!r})"
        )


def as_list(q) -> Sequence[VariationalGaussian]:
    """One q(u), or a list/tuple of them, as a list."""
    qs = list(q) if isinstance(q, (list, tuple)) else [q]
    for item in qs:
        if not isinstance(item, VariationalGaussian):
            raise TypeError(
                f"expected a gpnat.VariationalGaussian (e.g. model.q), got {type(item).__name__}"
            )
    return qs


def variational_distributions(model: tf.Module) -> List[VariationalGaussian]:
    """Every q(u) (:class:`VariationalGaussian`) inside ``model``, or ``model`` itself if it is one."""
    qs = [m for m in model.submodules if isinstance(m, VariationalGaussian)]
    if isinstance(model, VariationalGaussian):
        qs.insert(0, model)
    return qs
