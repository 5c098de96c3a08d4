r"""VGP: the full variational GP over all N training points, q stored in a pluggable parametrisation.

Same model as :class:`gpflow.models.VGP`, whitened: with K + εI = Lₖ Lₖᵀ
(ε = ``gpflow.config.default_jitter()``) the latent values at the data are
f = m(X) + Lₖ v, p(v) = N(0, I) and q(v) = N(q_mu, q_sqrt q_sqrtᵀ), so

    ELBO = Σₙ E_q(fₙ)[log p(yₙ | fₙ)] − KL[q(v) ‖ N(0, I)].

The KL is gpflow's ``gauss_kl`` and predictions are gpflow's ``conditional``
(whitened, with the training inputs as inducing points); both read only the
mean/Cholesky view of q, so they are written once for every parametrisation.
"""
from typing import Optional, Tuple

import gpflow
import numpy as np
import tensorflow as tf
from check_shapes import check_shapes, inherit_check_shapes
from gpflow.conditionals import conditional
from gpflow.kullback_leiblers import gauss_kl
from gpflow.models import GPModel
from gpflow.models.training_mixins import InternalDataTrainingLossMixin
from gpflow.utilities.model_utils import assert_params_false

from .. import gaussian
from ..checks import as_likelihood_targets, check_outputs, check_targets, checked_targets
from ..parametrisations import MeanCholesky, Parametrisation, get_parametrisation
from ..variational import VariationalGaussian
from .svgp import _check_data

__all__ = ["VGP"]


def _as_float(a) -> tf.Tensor:
    """An array or tensor in gpflow's default float (float64 unless configured)."""
    dtype = gpflow.default_float()
    return tf.cast(a, dtype) if tf.is_tensor(a) else tf.constant(np.asarray(a, dtype=dtype))


def _checked_data(data) -> Tuple[np.ndarray, np.ndarray]:
    """(X [N, D], Y [N, P]) as arrays in gpflow's default float, or a ValueError naming the problem."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("data must be a tuple (X [N, D], Y [N, P])")
    X, Y = (np.asarray(a, dtype=gpflow.default_float()) for a in data)
    if X.ndim != 2:
        raise ValueError(f"X must have shape [N, D], got {list(X.shape)}")
    if Y.ndim != 2:
        raise ValueError(f"Y must have shape [N, P], got {list(Y.shape)}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows, got {X.shape[0]} and {Y.shape[0]}")
    if X.shape[0] == 0:
        raise ValueError("data must have at least one row")
    _check_data(X, Y)
    return X, Y


class VGP(GPModel, InternalDataTrainingLossMixin):
    r"""Full variational GP whose q over the N training points is stored in a chosen parametrisation.

    Same meaning and shapes as :class:`gpflow.models.VGP`:

    :param data: the training data (X ``[N, D]``, Y ``[N, P]``), held by the model
        (``model.data``, in gpflow's default float).
    :param kernel: a gpflow kernel (single-output, as for gpflow's VGP).
    :param likelihood: any gpflow likelihood.
    :param mean_function: a gpflow mean function (default zero).
    :param num_latent_gps: L; ``None``: the likelihood's ``latent_dim`` where it has one (C for
        ``MultiClass(C)``, as :class:`gpnat.SVGP`; gpflow's VGP infers 1 there and evaluates
        C classes on one latent GP), else inferred from Y as gpflow does.
    :param parametrisation: coordinates q is stored in (default
        :class:`~gpnat.parametrisations.MeanCholesky`); an instance, a class or a name.

    The variational distribution is ``model.q`` (a
    :class:`~gpnat.variational.VariationalGaussian` with M = N), over the whitened
    v: f(X) = m(X) + Lₖ v with K(X, X) + εI = Lₖ Lₖᵀ, p(v) = N(0, I).
    ``model.q.mean_cholesky()`` gives ``(q_mu [N, L], q_sqrt [L, N, N])``,
    initially zeros and identities as in gpflow. q(fₙ) has mean
    m(xₙ) + (Lₖ q_mu)ₙ and variance ‖(Lₖ q_sqrtₗ)ₙ‖² for each latent GP l.

    ELBO = Σₙ E_q(fₙ)[log p(yₙ | fₙ)] − KL[q(v) ‖ N(0, I)]. With a Gaussian
    likelihood its maximum over q is GPR's log marginal likelihood with noise
    σ² + ε, reached by one natural step of γ = 1 from any q.

    The model is full-batch: :meth:`elbo` and :meth:`training_loss` use the
    stored data; they also accept ``data`` (as :func:`gpnat.train` passes it,
    ``gpnat.train(model, data=(X, Y), ...)`` without ``batch_size``), which must
    be the model's own data: another shape is a ``ValueError``, other values too
    (or, for values known only inside a compiled graph, an ``InvalidArgumentError``
    when it runs).
    """

    def __init__(
        self,
        data: Tuple[np.ndarray, np.ndarray],
        kernel: gpflow.kernels.Kernel,
        likelihood: gpflow.likelihoods.Likelihood,
        *,
        mean_function: Optional[gpflow.mean_functions.MeanFunction] = None,
        num_latent_gps: Optional[int] = None,
        parametrisation: Parametrisation = MeanCholesky(),
    ):
        X, Y = _checked_data(data)
        check_targets(likelihood, Y)
        if isinstance(kernel, gpflow.kernels.MultioutputKernel):
            raise ValueError("VGP takes a single-output kernel (as gpflow's VGP); use gpnat.SVGP")
        parametrisation = get_parametrisation(parametrisation)
        if parametrisation.diagonal:
            raise ValueError(
                f"VGP's q is a full-covariance Gaussian (as in gpflow), not the diagonal {parametrisation!r}"
            )
        if num_latent_gps is None:
            num_latent_gps = getattr(likelihood, "latent_dim", None) or self.calc_num_latent_gps_from_data(
                (X, Y), kernel, likelihood)
        check_outputs(likelihood, kernel, num_latent_gps, Y)
        super().__init__(kernel, likelihood, mean_function, num_latent_gps)
        self.data = (tf.constant(X), tf.constant(Y))
        self.num_data = X.shape[0]
        self.q = VariationalGaussian(self.num_data, self.num_latent_gps, parametrisation=parametrisation)

    @property
    def parametrisation(self) -> Parametrisation:
        """The parametrisation q is stored in."""
        return self.q.parametrisation

    def _own_data(self, data) -> Tuple[tf.Tensor, tf.Tensor]:
        """``model.data``, after checking that ``data`` (if given) is the same."""
        if data is None:
            return self.data
        if len(data) != 2:
            raise ValueError("data must be a tuple (X [N, D], Y [N, P])")
        checks = []
        for name, given, own in zip("XY", data, self.data):
            given = _as_float(given)
            if not given.shape.is_compatible_with(own.shape):
                raise ValueError(
                    f"VGP is full-batch over its own data: {name} has shape {given.shape.as_list()} "
                    f"but model.data's has {own.shape.as_list()} (minibatches need gpnat.SVGP)"
                )
            value = tf.get_static_value(given)
            message = f"VGP is full-batch over its own data: the {name} given differs from model.data"
            if value is None:  # known only when the graph runs: checked then
                checks.append(tf.debugging.assert_equal(given, own, message=message))
            elif not np.array_equal(value, own.numpy()):
                raise ValueError(message)
        if not checks:
            return self.data
        with tf.control_dependencies(checks):
            return tuple(tf.identity(own) for own in self.data)

    @check_shapes("return: []")
    def training_loss(self, data: Optional[Tuple[tf.Tensor, tf.Tensor]] = None) -> tf.Tensor:
        """−(ELBO + log prior density of the hyperparameters) (``data``: see the class)."""
        return self._training_loss(data)

    @inherit_check_shapes
    def maximum_log_likelihood_objective(self, data=None) -> tf.Tensor:  # type: ignore[override]
        return self.elbo(data)

    @check_shapes("return: []")
    def elbo(self, data: Optional[Tuple[tf.Tensor, tf.Tensor]] = None) -> tf.Tensor:
        r"""Σₙ E_q(fₙ)[log p(yₙ | fₙ)] − KL[q(v) ‖ N(0, I)] on ``model.data``; ``data``: see the class."""
        X, Y = self._own_data(data)
        q_mu, q_sqrt = self.q.mean_cholesky()  # [N, L], [L, N, N]
        kl = gauss_kl(q_mu, q_sqrt)
        K = self.kernel(X) + gpflow.config.default_jitter() * tf.eye(self.num_data, dtype=X.dtype)
        Lk = gaussian.cholesky(K)  # [N, N]; its reverse mode is cheaper than TensorFlow's
        f_mean = tf.linalg.matmul(Lk, q_mu) + self.mean_function(X)  # [N, L]
        f_var = tf.transpose(tf.reduce_sum(tf.square(tf.linalg.matmul(Lk, q_sqrt)), -1))  # [N, L]
        var_exp = self.likelihood.variational_expectations(X, f_mean, f_var, as_likelihood_targets(self.likelihood, Y))
        return tf.reduce_sum(var_exp) - kl

    @inherit_check_shapes
    def predict_f(self, Xnew, full_cov: bool = False, full_output_cov: bool = False):
        """Mean and (co)variance of q(f*) at Xnew ``[N*, D]``, as in gpflow's VGP."""
        assert_params_false(self.predict_f, full_output_cov=full_output_cov)
        Xnew = _as_float(Xnew)
        X, _ = self.data
        if len(Xnew.shape) != 2:
            raise ValueError(f"Xnew must have shape [N, D], got {Xnew.shape.as_list()}")
        if Xnew.shape[-1] is not None and Xnew.shape[-1] != X.shape[-1]:
            raise ValueError(
                f"Xnew has {Xnew.shape[-1]} input dimensions but the training X have {X.shape[-1]}"
            )
        Xnew, _ = _check_data(Xnew)
        q_mu, q_sqrt = self.q.checked_mean_cholesky()
        mu, var = conditional(Xnew, X, self.kernel, q_mu, q_sqrt=q_sqrt, full_cov=full_cov, white=True)
        return mu + self.mean_function(Xnew), var

    @inherit_check_shapes
    def predict_log_density(self, data, full_cov: bool = False, full_output_cov: bool = False) -> tf.Tensor:
        """log p(Y* | X*) per point ``[N]`` under q, as in gpflow, after checking that Y* ``[N, P]`` is
        finite, has the columns the likelihood takes and lies in its support (X* is checked by
        :meth:`predict_f`)."""
        X, Y = _as_float(data[0]), _as_float(data[1])
        if len(Y.shape) != 2:
            raise ValueError(f"Y must have shape [N, P], got {Y.shape.as_list()}")
        if X.shape[0] is not None and Y.shape[0] is not None and X.shape[0] != Y.shape[0]:
            raise ValueError(f"X and Y must have the same number of rows, got {X.shape[0]} and {Y.shape[0]}")
        X, Y = _check_data(X, Y)
        Y = checked_targets(self.likelihood, Y)
        check_outputs(self.likelihood, self.kernel, self.num_latent_gps, Y)
        Y = as_likelihood_targets(self.likelihood, Y)
        return super().predict_log_density((X, Y), full_cov=full_cov, full_output_cov=full_output_cov)
