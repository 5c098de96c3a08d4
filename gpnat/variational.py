r"""q(u): L independent Gaussians over the M inducing variables, stored in a chosen parametrisation.

``VariationalGaussian`` holds *what is stored*: two ``tf.Variable`` s, the
coordinates ξ of the user's :class:`~gpnat.parametrisations.Parametrisation`.
*How q(u) becomes q(f)* is the model's business (:class:`gpnat.SVGP`), which
only ever reads the mean/Cholesky view ``mean_cholesky()``.
"""
from typing import Optional, Tuple

import gpflow
import numpy as np
import tensorflow as tf
from check_shapes import check_shapes

from .checks import check_count
from .parametrisations import (
    DIAGONAL_PARAMETRISATIONS,
    DiagonalMeanStd,
    MeanCholesky,
    Natural,
    Parametrisation,
    check_conversions,
    get_parametrisation,
)

__all__ = ["VariationalGaussian", "GpflowQ", "InvalidGaussianError", "variational_distributions"]


class InvalidGaussianError(ValueError):
    """A q(u) state that is not a valid Gaussian (non-finite, not positive definite)."""


def _lower_triangular_is_valid(q_mu: np.ndarray, q_sqrt: np.ndarray) -> None:
    if not np.all(np.isfinite(q_mu)):
        raise InvalidGaussianError("q_mu contains NaN or inf")
    if not np.all(np.isfinite(q_sqrt)):
        raise InvalidGaussianError("q_sqrt contains NaN or inf")
    _check_form(q_sqrt, "q_sqrt", "lower triangular")
    if np.any(np.diagonal(q_sqrt, axis1=-2, axis2=-1) == 0):
        raise InvalidGaussianError(
            "q_sqrt has a zero on its diagonal: the covariance q_sqrt q_sqrtᵀ is singular"
        )


def _check_form(xi_2: np.ndarray, name: str, form) -> None:
    """Refuse a full-covariance ξ₂ ``[L, M, M]`` that is not of its parametrisation's form: a factor's
    upper triangle would be dropped silently, an asymmetric θ₂ or η₂ read by one triangle only."""
    if form == "lower triangular" and np.any(np.triu(xi_2, k=1) != 0):
        raise InvalidGaussianError(f"{name} must be lower triangular (its upper triangle is not zero)")
    if form == "symmetric":
        scale = max(float(np.max(np.abs(xi_2))), np.finfo(xi_2.dtype).tiny)
        if np.max(np.abs(xi_2 - np.swapaxes(xi_2, -1, -2))) > 1e-10 * scale:
            raise InvalidGaussianError(f"{name} must be symmetric")


def _diagonal_is_valid(q_mu: np.ndarray, q_sqrt: np.ndarray) -> None:
    if not np.all(np.isfinite(q_mu)):
        raise InvalidGaussianError("q_mu contains NaN or inf")
    if not np.all(np.isfinite(q_sqrt)):
        raise InvalidGaussianError("q_sqrt contains NaN or inf")
    if np.any(q_sqrt == 0):
        raise InvalidGaussianError("q_sqrt (the standard deviations of a diagonal q(u)) contains a zero")


class VariationalGaussian(gpflow.base.Module):
    r"""q(u) = ∏ₗ N(uₗ; mₗ, Sₗ) for L latent GPs over M inducing variables.

    :param num_inducing: M.
    :param num_latent_gps: L.
    :param parametrisation: the coordinates ξ to store q(u) in (default
        :class:`~gpnat.parametrisations.MeanCholesky`); an instance, a class or a name.
    :param q_mu: initial mean ``[M, L]`` (default zeros).
    :param q_sqrt: initial Cholesky factor of the covariance ``[L, M, M]``
        (default the identity); with ``q_diag`` the standard deviations ``[M, L]``
        (default ones).
    :param q_diag: a diagonal (mean-field) q(u), gpflow's ``q_diag``: a full-family
        parametrisation is replaced by its diagonal counterpart
        (:class:`~gpnat.parametrisations.DiagonalMeanStd` for the default).
        ``None`` (default): diagonal exactly when the parametrisation is.

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
        q_diag: Optional[bool] = None,
    ):
        super().__init__(name=name)
        parametrisation = get_parametrisation(parametrisation)
        if q_diag is None:
            q_diag = parametrisation.diagonal
        elif not q_diag and parametrisation.diagonal:
            raise ValueError(
                f"{parametrisation!r} stores a diagonal q(u), but q_diag=False asks for a full "
                "covariance; pass q_diag=True (or None), or a full-covariance parametrisation"
            )
        self.q_diag = bool(q_diag)
        if parametrisation.diagonal != self.q_diag and parametrisation.counterpart is None:
            raise ValueError(
                f"a diagonal q(u) (q_diag=True) cannot be stored in {parametrisation!r}: it has no diagonal "
                f"counterpart; choose one of {sorted(DIAGONAL_PARAMETRISATIONS)}, or q_diag=False")
        self.parametrisation = parametrisation.for_family(self.q_diag)
        check_conversions(self.parametrisation)
        self.num_inducing = check_count(num_inducing, "num_inducing (M)")
        self.num_latent_gps = check_count(num_latent_gps, "num_latent_gps")
        dtype = gpflow.default_float()
        M, L = self.num_inducing, self.num_latent_gps
        if q_mu is None:
            q_mu = np.zeros((M, L), dtype=dtype)
        if q_sqrt is None:
            q_sqrt = np.ones((M, L), dtype) if self.q_diag else np.tile(np.eye(M, dtype=dtype)[None], (L, 1, 1))
        names = self.parametrisation.names
        if (len(names) != 2 or len(set(names)) != 2 or not all(isinstance(n, str) and n.isidentifier() for n in names)
                or any(hasattr(type(self), n) or n in vars(self) for n in names)):
            raise ValueError(
                f"{type(self.parametrisation).__name__}.names must be two different identifiers, neither an "
                f"attribute of VariationalGaussian (q.<name> holds each variable), got {names!r}")
        xi = self._checked_coordinates(q_mu, q_sqrt)
        # held under the parametrisation's names only, so that gpflow's print_summary and parameter_dict
        # show each once (a tuple attribute of them showed them twice)
        for name, value in zip(self.parametrisation.names, xi):
            setattr(self, name, tf.Variable(value, dtype=dtype, name=name, trainable=True))

    @property
    def _xi(self) -> Tuple[tf.Variable, tf.Variable]:
        return tuple(getattr(self, name) for name in self.parametrisation.names)

    @property
    def xi(self) -> Tuple[tf.Variable, tf.Variable]:
        """The stored variables ξ = (ξ₁ [M, L], ξ₂ [L, M, M]; [M, L] with ``q_diag``)."""
        return self._xi

    #: the coordinates of natural steps on this q(u); ``None``: the optimizer's own
    coordinates: Optional[Parametrisation] = None

    @property
    def variables_to_watch(self) -> Tuple[tf.Variable, tf.Variable]:
        """What a tape watches for the gradients :meth:`xi_gradients` reads: here ξ itself."""
        return self._xi

    def xi_gradients(self, grads):
        """∇_ξ L from the gradients with respect to :attr:`variables_to_watch` (the same here)."""
        return tuple(grads)

    # ------------------------------------------------------------------ views
    @check_shapes(
        "return[0]: [M, L]",
        "return[1]: [L, M, M] if not self.q_diag",
        "return[1]: [M, L] if self.q_diag",
    )
    def mean_cholesky(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """(q_mu [M, L], q_sqrt [L, M, M]) with S = q_sqrt q_sqrtᵀ, as tensors.

        With ``q_diag``, gpflow's diagonal layout: q_sqrt ``[M, L]`` holds the
        standard deviations.
        """
        return self.parametrisation.to_meanchol(*self._xi)

    def checked_mean_cholesky(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """:meth:`mean_cholesky`, refused where it is not finite (a q(u) set without checks, e.g. by
        ``gpflow.utilities.multiple_assign``): eagerly an :class:`InvalidGaussianError`, compiled an
        assertion that gates the result. O(M²); for predictions, which would otherwise be NaN."""
        q_mu, q_sqrt = self.mean_cholesky()
        message = (f"q(u) is not a valid Gaussian: its mean/Cholesky view is not finite (stored as "
                   f"{self.parametrisation!r}; was it set without checks, e.g. by "
                   "gpflow.utilities.multiple_assign?); set it with q.assign or q.assign_mean_cholesky")
        if tf.executing_eagerly():
            if not (np.all(np.isfinite(q_mu.numpy())) and np.all(np.isfinite(q_sqrt.numpy()))):
                raise InvalidGaussianError(message)
            return q_mu, q_sqrt
        return tf.debugging.assert_all_finite(q_mu, message), tf.debugging.assert_all_finite(q_sqrt, message)

    @check_shapes(
        "return[0]: [M, L]",
        "return[1]: [L, M, M] if not self.q_diag",
        "return[1]: [M, L] if self.q_diag",
    )
    def natural(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """(θ₁ = S⁻¹m [M, L], θ₂ = −½S⁻¹ [L, M, M]); with ``q_diag`` elementwise, both [M, L]."""
        return self.parametrisation.to_natural(*self._xi)

    @check_shapes(
        "return[0]: [M, L]",
        "return[1]: [L, M, M] if not self.q_diag",
        "return[1]: [M, L] if self.q_diag",
    )
    def expectation(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """(η₁ = m [M, L], η₂ = S + m mᵀ [L, M, M]); with ``q_diag`` η₂ = s² + m² [M, L]."""
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
        if self.q_diag:
            if q_sqrt.shape != (M, L):
                raise ValueError(
                    f"a diagonal q(u) (q_diag=True) takes q_sqrt of shape [M, L] = {[M, L]} "
                    f"(standard deviations, gpflow's layout), got {list(q_sqrt.shape)}"
                )
            _diagonal_is_valid(q_mu, q_sqrt)
        else:
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

        With ``q_diag``, q_sqrt is the standard deviations ``[M, L]`` (gpflow's layout).

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
        _check_form(values[1], self.parametrisation.names[1],
                    None if self.q_diag else getattr(self.parametrisation, "xi_2_form", None))
        if not bool(self.parametrisation.is_valid(*values)):
            raise InvalidGaussianError(
                f"({', '.join(self.parametrisation.names)}) is not a valid Gaussian in "
                f"{self.parametrisation!r} (covariance not positive definite)"
            )
        for variable, value in zip(self._xi, values):
            variable.assign(value)

    def __repr__(self) -> str:
        diag = ", q_diag=True" if self.q_diag else ""
        return (
            f"VariationalGaussian(M={self.num_inducing}, L={self.num_latent_gps}, "
            f"parametrisation={self.parametrisation!r}{diag})"
        )


class _GpflowDiagonalMeanStd(DiagonalMeanStd):
    """gpflow's ``q_diag`` q_sqrt: standard deviations behind a positive transform, so s > 0."""

    def is_valid(self, xi_1: tf.Tensor, xi_2: tf.Tensor) -> tf.Tensor:
        return tf.logical_and(super().is_valid(xi_1, xi_2), tf.reduce_all(xi_2 > 0))

    def __repr__(self) -> str:
        return "DiagonalMeanStd()"


class _XiTransformCoordinates(Parametrisation):
    """A gpflow ``XiTransform`` (other than XiNat and XiSqrtMeanVar) as step coordinates."""

    names = ("xi_1", "xi_2")

    def __init__(self, xi_transform):
        self.xi_transform = xi_transform

    def to_meanchol(self, xi_1, xi_2):
        return self.xi_transform.xi_to_meanvarsqrt(xi_1, xi_2)

    def from_meanchol(self, q_mu, q_sqrt):
        return self.xi_transform.meanvarsqrt_to_xi(q_mu, q_sqrt)

    def from_natural(self, theta_1, theta_2):
        return self.xi_transform.naturals_to_xi(theta_1, theta_2)

    def __repr__(self) -> str:
        return f"{type(self.xi_transform).__name__}()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _XiTransformCoordinates) and other.xi_transform is self.xi_transform

    def __hash__(self) -> int:
        return id(self.xi_transform)


def step_coordinates(coordinates) -> Optional[Parametrisation]:
    """Step coordinates as given to :class:`gpnat.NaturalGradient` or as a ``var_list`` tuple's third
    element: a gpnat parametrisation (instance, class or name), or a gpflow ``XiTransform``."""
    if coordinates is None:
        return None
    from gpflow.optimizers import natgrad as gpflow_natgrad

    if isinstance(coordinates, gpflow_natgrad.XiNat):
        return Natural()
    if isinstance(coordinates, gpflow_natgrad.XiSqrtMeanVar):
        return MeanCholesky()
    if isinstance(coordinates, gpflow_natgrad.XiTransform):
        return _XiTransformCoordinates(coordinates)
    try:
        return get_parametrisation(coordinates)
    except TypeError as err:
        raise TypeError(f"step coordinates: {err}, or a gpflow XiTransform such as XiNat()") from None


class GpflowQ:
    r"""q(u) held in gpflow Parameters ``(q_mu, q_sqrt)``, as in gpflow's SVGP and VGP or a GPflux layer.

    Lets :class:`gpnat.NaturalGradient` (and :func:`gpnat.train`) step a gpflow
    model's q(u) with the same safeguards and schedules as gpnat's own:
    ``opt.minimize(loss, [(model.q_mu, model.q_sqrt)])``.

    :param q_mu: a ``gpflow.Parameter`` ``[M, L]``.
    :param q_sqrt: a ``gpflow.Parameter``: lower-triangular factors ``[L, M, M]``
        (storage :class:`~gpnat.parametrisations.MeanCholesky`), or the standard
        deviations ``[M, L]`` of gpflow's ``q_diag`` (storage
        :class:`~gpnat.parametrisations.DiagonalMeanStd`).
    :param coordinates: this q(u)'s step coordinates, overriding the optimizer's:
        a gpnat parametrisation or gpflow's ``XiNat()``, ``XiSqrtMeanVar()`` or
        any other ``XiTransform``.

    The loss is differentiated with respect to the Parameters' unconstrained
    variables (:attr:`variables_to_watch`); :meth:`xi_gradients` turns those
    gradients into gradients with respect to the constrained values by reverse
    mode through each Parameter's inverse transform (exact for any bijector).
    """

    def __init__(self, q_mu, q_sqrt, coordinates=None):
        for name, param in (("q_mu", q_mu), ("q_sqrt", q_sqrt)):
            if not isinstance(param, gpflow.Parameter):
                raise TypeError(
                    f"{name} must be a gpflow.Parameter (as in [(model.q_mu, model.q_sqrt)]), "
                    f"got {type(param).__name__}"
                )
        mu_shape, sqrt_shape = tuple(q_mu.shape), tuple(q_sqrt.shape)
        if len(mu_shape) != 2:
            raise ValueError(f"q_mu must have shape [M, L], got {list(mu_shape)}")
        M, L = mu_shape
        if sqrt_shape not in ((L, M, M), (M, L)):
            raise ValueError(
                f"q_sqrt must have shape [L, M, M] = {[L, M, M]} (or [M, L] = {[M, L]} for q_diag) "
                f"to match q_mu {list(mu_shape)}, got {list(sqrt_shape)}"
            )
        self.q_diag = sqrt_shape == (M, L)
        self.num_inducing, self.num_latent_gps = M, L
        self.parametrisation: Parametrisation = _GpflowDiagonalMeanStd() if self.q_diag else MeanCholesky()
        self.coordinates = step_coordinates(coordinates)
        self.xi = (q_mu, q_sqrt)
        self.variables_to_watch = (q_mu.unconstrained_variable, q_sqrt.unconstrained_variable)

    def xi_gradients(self, grads):
        """∇ with respect to (q_mu, q_sqrt) from the gradients of their unconstrained variables."""
        out = []
        for param, grad in zip(self.xi, grads):
            if grad is None or param.transform is None:
                out.append(grad)
                continue
            value = tf.identity(tf.convert_to_tensor(param))  # a new tensor: no bijector cache hit
            with tf.GradientTape() as tape:
                tape.watch(value)
                unconstrained = param.transform.inverse(value)
            out.append(tape.gradient(unconstrained, value, output_gradients=tf.convert_to_tensor(grad)))
        return tuple(out)

    def mean_cholesky(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """(q_mu, q_sqrt) as tensors."""
        return tuple(tf.convert_to_tensor(p) for p in self.xi)

    def is_valid(self) -> tf.Tensor:
        """Scalar bool tensor: a proper Gaussian that the Parameters' transforms can hold."""
        return self.parametrisation.is_valid(*self.mean_cholesky())

    def __repr__(self) -> str:
        return f"GpflowQ(M={self.num_inducing}, L={self.num_latent_gps}, q_diag={self.q_diag})"


def _is_parameter_tuple(item) -> bool:
    return isinstance(item, tuple) and len(item) in (2, 3) and isinstance(item[0], gpflow.Parameter)


def as_list(q) -> list:
    """One q(u) or a list of them, as a list of :class:`VariationalGaussian` / :class:`GpflowQ`.

    Accepts gpnat's q(u) (``model.q``) and gpflow's forms: a tuple
    ``(q_mu, q_sqrt)`` or ``(q_mu, q_sqrt, coordinates)`` of gpflow Parameters,
    or a list of such tuples.
    """
    if _is_parameter_tuple(q):
        q = [q]
    qs = list(q) if isinstance(q, (list, tuple)) else [q]
    out = []
    for item in qs:
        if isinstance(item, (VariationalGaussian, GpflowQ)):
            out.append(item)
        elif isinstance(item, tuple) and len(item) in (2, 3):
            out.append(GpflowQ(*item))
        else:
            raise TypeError(
                "expected a gpnat.VariationalGaussian (e.g. model.q) or a tuple (q_mu, q_sqrt) or "
                f"(q_mu, q_sqrt, coordinates) of gpflow Parameters, got {type(item).__name__}"
            )
    return out


def variational_distributions(model: tf.Module) -> list:
    """Every q(u) inside ``model``, or ``model`` itself if it is one.

    gpnat's :class:`VariationalGaussian` s; for a gpflow model without them, the
    ``(q_mu, q_sqrt)`` Parameters of the model and of its submodules (gpflow's
    SVGP or VGP, the layers of a GPflux deep GP), each as a :class:`GpflowQ`.
    """
    qs = [m for m in model.submodules if isinstance(m, VariationalGaussian)]
    if isinstance(model, VariationalGaussian):
        qs.insert(0, model)
    if qs:
        return qs
    for module in [model, *model.submodules]:
        q_mu, q_sqrt = getattr(module, "q_mu", None), getattr(module, "q_sqrt", None)
        if isinstance(q_mu, gpflow.Parameter) and isinstance(q_sqrt, gpflow.Parameter):
            qs.append(GpflowQ(q_mu, q_sqrt))
    return qs
