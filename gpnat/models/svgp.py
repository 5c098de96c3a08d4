r"""SVGP: the sparse variational GP with q(u) stored in a pluggable parametrisation.

The model maps q(u) to q(f) with gpflow's conditionals and computes the KL with
gpflow's ``prior_kl``; both read only the mean/Cholesky view of q(u), so they
are written once for every parametrisation. Where gpflow's conditional would
use one K_uu ``[M, M]`` for all latent GPs (a single-output kernel, or a
``SharedIndependent`` kernel with shared inducing variables), the model
factorises K_uu once per ELBO with :func:`gpnat.gaussian.cholesky`, whose
reverse mode is cheaper than TensorFlow's, and hands the factor to gpflow's
``base_conditional_with_lm`` and ``gauss_kl``: the same numbers, a faster
gradient for the hyperparameters. On a CPU, in float64, a large batch's columns
of K_uf go to that function in groups, one per thread (:func:`_column_groups`).

    ELBO = (N / B) Σ_b E_q(f_b)[log p(y_b | f_b)] − KL[q(u) ‖ p(u)]
"""
import os
from typing import Optional, Tuple

import gpflow
import numpy as np
import tensorflow as tf
from check_shapes import check_shapes, inherit_check_shapes
from gpflow import covariances, kullback_leiblers
from gpflow.conditionals import conditional
from gpflow.conditionals.util import base_conditional_with_lm, expand_independent_outputs
from gpflow.config import default_jitter
from gpflow.inducing_variables import InducingVariables, SharedIndependentInducingVariables
from gpflow.models import GPModel
from gpflow.models.training_mixins import ExternalDataTrainingLossMixin
from gpflow.models.util import inducingpoint_wrapper
from gpflow.posteriors import IndependentPosteriorMultiOutput, IndependentPosteriorSingleOutput, get_posterior_class

from .. import gaussian
from ..checks import as_likelihood_targets, check_count, check_outputs, checked_targets
from ..parametrisations import MeanCholesky, Parametrisation
from ..variational import VariationalGaussian

__all__ = ["SVGP"]

#: TensorFlow's CPU triangular solve runs each matrix of a batch on one thread, so the solve
#: L_m⁻¹ K_uf ``[M, N]`` of gpflow's conditional (and its adjoint in the gradient) uses one core
#: however many there are. Handed K_uf as ``[M, T, N / T]`` (its documented leading dimensions),
#: gpflow's ``base_conditional_with_lm`` solves T groups of columns on T threads: the same
#: operations per column. In ``benchmarks/CONDITIONAL.md`` (2-core CPU) an ELBO and its gradient
#: took 0.86 to 0.99 of the time in one group in float64 wherever the rule below groups, against
#: up to 1.15 below it (small batches: the reshapes and padding cost more than they save); in
#: float32 from 0.89 to 1.31, so only these dtypes group.
GROUPED_DTYPES = ("float64",)
#: group only with at least this many columns per group ...
GROUP_MIN_COLUMNS = 500
#: ... and at least this much solve work per group: M² · N / T
GROUP_MIN_WORK = 1e7


def _threads() -> int:
    """The CPU threads a TensorFlow op may use: the intra-op setting, else the cores this process may run on."""
    threads = tf.config.threading.get_intra_op_parallelism_threads()
    if threads > 0:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _column_groups(Kmn: tf.Tensor, q_sqrt: tf.Tensor, full_cov: bool) -> int:
    """How many groups of columns K_uf ``[M, N]`` goes to gpflow's conditional in: 1 (as it is), or T ≥ 2.

    Grouping applies to marginal variances (not ``full_cov``) with a full q_sqrt ``[L, M, M]``, in
    :data:`GROUPED_DTYPES`, where no GPU is visible and M and N are known when tracing; T is the
    number of threads, lowered until each group has :data:`GROUP_MIN_COLUMNS` columns, and the
    work per group must reach :data:`GROUP_MIN_WORK`.
    """
    M, N = Kmn.shape
    if (full_cov or q_sqrt.shape.rank != 3 or M is None or N is None
            or Kmn.dtype.name not in GROUPED_DTYPES or tf.config.list_logical_devices("GPU")):
        return 1
    T = min(_threads(), N // GROUP_MIN_COLUMNS)
    if T < 2 or M * M * (N / T) < GROUP_MIN_WORK:
        return 1
    return T


@check_shapes(
    "Kmn: [M, N]",
    "Lm: [M, M]",
    "Knn: [N]",
    "q_mu: [M, R]",
    "q_sqrt: [R, M, M]",
    "return[0]: [N, R]",
    "return[1]: [N, R]",
)
def _grouped_conditional(Kmn, Lm, Knn, q_mu, q_sqrt, white: bool, groups: int):
    """gpflow's ``base_conditional_with_lm`` (marginal variances) with the N columns in ``groups``
    groups: K_uf ``[M, N]`` padded with zero columns to ``[M, T·n]`` and read as ``[M, T, n]``,
    K_ff's diagonal likewise; the padding (mean 0, variance 0) is cut off the result."""
    M, N = Kmn.shape
    n = -(-N // groups)
    pad = n * groups - N
    Kmn = tf.reshape(tf.pad(Kmn, [[0, 0], [0, pad]]), [M, groups, n])
    Knn = tf.reshape(tf.pad(Knn, [[0, pad]]), [groups, n])
    mu, var = base_conditional_with_lm(Kmn, Lm, Knn, q_mu, full_cov=False, q_sqrt=q_sqrt, white=white)
    R = tf.shape(q_mu)[-1]
    return tf.reshape(mu, [groups * n, R])[:N], tf.reshape(var, [groups * n, R])[:N]


def _check_data(X, Y=None):
    """Finite inputs and targets: a clear error, eagerly or in compiled code. Returns (X, Y) to compute
    with: in compiled code the checked tensors, so that everything computed from them (a loss, its
    gradients, a step's variable updates) runs only after the check passed."""
    if tf.executing_eagerly():
        if not np.all(np.isfinite(np.asarray(X))):
            raise ValueError("X contains NaN or inf")
        if Y is not None and not np.all(np.isfinite(np.asarray(Y))):
            raise ValueError("Y contains NaN or inf")
        return X, Y
    X = tf.debugging.assert_all_finite(X, "X contains NaN or inf")
    if Y is not None:
        Y = tf.debugging.assert_all_finite(Y, "Y contains NaN or inf")
    return X, Y


def _latent_gps(kernel, likelihood, num_latent_gps: Optional[int]) -> int:
    """L: the multi-output kernel's own count; for a single-output kernel the likelihood's
    ``latent_dim`` (C for ``MultiClass(C)``), else 1; checked against the argument and the
    likelihood (:func:`~gpnat.checks.check_outputs`)."""
    if isinstance(kernel, gpflow.kernels.MultioutputKernel):
        if num_latent_gps is None:
            num_latent_gps = kernel.num_latent_gps
        elif num_latent_gps != kernel.num_latent_gps:
            raise ValueError(
                f"num_latent_gps = {num_latent_gps} but the {type(kernel).__name__} kernel has "
                f"{kernel.num_latent_gps} latent GPs"
            )
    elif num_latent_gps is None:
        num_latent_gps = getattr(likelihood, "latent_dim", None) or 1
    num_latent_gps = check_count(num_latent_gps, "num_latent_gps")
    check_outputs(likelihood, kernel, num_latent_gps)
    return num_latent_gps


class SVGP(GPModel, ExternalDataTrainingLossMixin):
    r"""Sparse variational GP whose q(u) is stored in a chosen parametrisation.

    Same meaning and shapes as :class:`gpflow.models.SVGP`:

    :param kernel: a gpflow kernel (multi-output kernels included).
    :param likelihood: any gpflow likelihood.
    :param inducing_variable: Z ``[M, D]`` or a gpflow inducing variable.
    :param num_data: N, the total number of data points (to scale minibatch
        ELBOs by N / B); ``None`` means every call sees all data.
    :param parametrisation: coordinates q(u) is stored in (default
        :class:`~gpnat.parametrisations.MeanCholesky`).
    :param whiten: if True q(u) is over v with u = chol(Kuu) v and p(v) = N(0, I).
    :param num_latent_gps: L; ``None`` (default) takes a multi-output kernel's own
        number of latent GPs, else the likelihood's ``latent_dim`` (C for
        ``MultiClass(C)``), else 1. A number that disagrees with a multi-output
        kernel or with the likelihood's ``latent_dim`` is a ``ValueError`` (a
        single latent GP would silently model P outputs, or C classes).
    :param mean_function: a gpflow mean function (default zero).
    :param q_mu: initial mean ``[M, L]`` (default 0).
    :param q_sqrt: initial Cholesky factor ``[L, M, M]`` (default I), or with
        ``q_diag`` the standard deviations ``[M, L]`` (default ones).
    :param q_diag: a diagonal (mean-field) q(u), as gpflow's ``q_diag``; natural
        gradients then step in the diagonal family's own coordinates
        (:class:`~gpnat.parametrisations.DiagonalParametrisation`), so q(u) stays
        diagonal. ``None`` (default): diagonal exactly when ``parametrisation`` is.

    The variational distribution is ``model.q`` (a
    :class:`~gpnat.variational.VariationalGaussian`);
    ``model.q.mean_cholesky()`` gives ``(q_mu [M, L], q_sqrt [L, M, M])``
    (``q_sqrt [M, L]`` with ``q_diag``), the form gpflow's conditionals and KL take.
    """

    def __init__(
        self,
        kernel: gpflow.kernels.Kernel,
        likelihood: gpflow.likelihoods.Likelihood,
        inducing_variable,
        *,
        num_data: Optional[int] = None,
        parametrisation: Parametrisation = MeanCholesky(),
        whiten: bool = True,
        num_latent_gps: Optional[int] = None,
        mean_function: Optional[gpflow.mean_functions.MeanFunction] = None,
        q_mu: Optional[np.ndarray] = None,
        q_sqrt: Optional[np.ndarray] = None,
        q_diag: Optional[bool] = None,
    ):
        num_latent_gps = _latent_gps(kernel, likelihood, num_latent_gps)
        super().__init__(kernel, likelihood, mean_function, num_latent_gps)
        self.num_data = None if num_data is None else check_count(num_data, "num_data")
        self.whiten = bool(whiten)
        if not isinstance(inducing_variable, gpflow.inducing_variables.InducingVariables):
            Z = np.asarray(inducing_variable, dtype=np.float64)
            if Z.ndim != 2 or Z.shape[0] == 0:
                raise ValueError(f"the inducing inputs Z must have shape [M, D] with M ≥ 1, got {list(Z.shape)}")
            if not np.all(np.isfinite(Z)):
                raise ValueError("the inducing inputs Z contain NaN or inf")
        self.inducing_variable = inducingpoint_wrapper(inducing_variable)
        self.q = VariationalGaussian(
            self.inducing_variable.num_inducing,
            num_latent_gps,
            parametrisation=parametrisation,
            q_mu=q_mu,
            q_sqrt=q_sqrt,
            q_diag=q_diag,
        )

    @property
    def parametrisation(self) -> Parametrisation:
        """The parametrisation q(u) is stored in."""
        return self.q.parametrisation

    def _input_dim(self) -> Optional[int]:
        iv = self.inducing_variable
        if hasattr(iv, "inducing_variable"):  # shared multi-output inducing variables
            iv = iv.inducing_variable
        elif hasattr(iv, "inducing_variable_list"):  # separate multi-output inducing variables
            iv = iv.inducing_variable_list[0]
        Z = getattr(iv, "Z", None)
        return None if Z is None else Z.shape[-1]

    def _check_inputs(self, X, Y=None):
        """Shapes, NaN and inf, and Y against the likelihood; returns (X, Y) to compute with (:func:`_check_data`)."""
        D = self._input_dim()
        if len(X.shape) != 2:
            raise ValueError(f"X must have shape [N, D], got {list(X.shape)}")
        if D is not None and X.shape[-1] is not None and X.shape[-1] != D:
            raise ValueError(
                f"X has {X.shape[-1]} input dimensions but the inducing inputs Z have {D}"
            )
        if Y is not None:
            if len(Y.shape) != 2:
                raise ValueError(f"Y must have shape [N, P], got {list(Y.shape)}")
            if X.shape[0] is not None and Y.shape[0] is not None and X.shape[0] != Y.shape[0]:
                raise ValueError(
                    f"X and Y must have the same number of rows, got {X.shape[0]} and {Y.shape[0]}"
                )
        X, Y = _check_data(X, Y)
        if Y is not None:
            Y = checked_targets(self.likelihood, Y)
            check_outputs(self.likelihood, self.kernel, self.num_latent_gps, Y)
        return X, Y

    @staticmethod
    def _as_default_float(*arrays):
        """Arrays or tensors in gpflow's default float (float64 unless configured)."""
        dtype = gpflow.default_float()
        return tuple(
            tf.cast(a, dtype) if tf.is_tensor(a) else tf.convert_to_tensor(np.asarray(a, dtype=dtype))
            for a in arrays
        )

    @check_shapes("return: []")
    def prior_kl(self) -> tf.Tensor:
        """KL[q(u) ‖ p(u)], by gpflow's ``prior_kl`` on the mean/Cholesky view."""
        return self._prior_kl(*self.q.mean_cholesky(), None if self.whiten else self._kuu_cholesky())

    def _shared_kuu_kernel(self) -> Optional[gpflow.kernels.Kernel]:
        """The kernel of K_ff if gpflow's conditional would use one K_uu ``[M, M]`` for all latent GPs.

        That is its single-output route, and its route for a ``SharedIndependent``
        kernel with ``SharedIndependentInducingVariables``; None otherwise.
        """
        kernel, iv = self.kernel, self.inducing_variable
        route = conditional.dispatch(object, type(iv), type(kernel), object)
        posterior = get_posterior_class(kernel, iv)
        if (route is conditional.dispatch(object, InducingVariables, gpflow.kernels.Kernel, object)
                and posterior is IndependentPosteriorSingleOutput):
            return kernel
        shared = (SharedIndependentInducingVariables, gpflow.kernels.SharedIndependent)
        if (isinstance(iv, shared[0]) and isinstance(kernel, shared[1])
                and route is conditional.dispatch(object, *shared, object)
                and posterior is IndependentPosteriorMultiOutput):
            return kernel.kernel
        return None

    def _kuu_cholesky(self) -> Optional[tf.Tensor]:
        """chol(K_uu + jitter I) ``[M, M]`` where one K_uu serves all latent GPs, else None (gpflow factorises)."""
        if self._shared_kuu_kernel() is None:
            return None
        Kuu = covariances.Kuu(self.inducing_variable, self.kernel, jitter=default_jitter())
        return gaussian.cholesky(Kuu)

    def _prior_kl(self, q_mu, q_sqrt, Lm=None) -> tf.Tensor:
        if Lm is None:
            return kullback_leiblers.prior_kl(self.inducing_variable, self.kernel, q_mu, q_sqrt, whiten=self.whiten)
        if self.whiten:
            return kullback_leiblers.gauss_kl(q_mu, q_sqrt, None)
        return kullback_leiblers.gauss_kl(q_mu, q_sqrt, K_cholesky=Lm)

    @inherit_check_shapes
    def maximum_log_likelihood_objective(self, data) -> tf.Tensor:  # type: ignore[override]
        return self.elbo(data)

    @check_shapes("data[0]: [N, D]", "data[1]: [N, P]", "return: []")
    def elbo(self, data: Tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        r"""The evidence lower bound for data (X ``[B, D]``, Y ``[B, P]``), scaled by N / B."""
        X, Y = self._check_inputs(*self._as_default_float(*data))
        q_mu, q_sqrt = self.q.mean_cholesky()  # converted once, used by the KL and q(f)
        Lm = self._kuu_cholesky()  # factorised once, used by the KL and q(f)
        kl = self._prior_kl(q_mu, q_sqrt, Lm)
        f_mean, f_var = self._conditional(X, q_mu, q_sqrt, full_cov=False, full_output_cov=False, Lm=Lm)
        var_exp = self.likelihood.variational_expectations(X, f_mean, f_var, as_likelihood_targets(self.likelihood, Y))
        if self.num_data is not None:
            scale = tf.cast(self.num_data, kl.dtype) / tf.cast(tf.shape(X)[0], kl.dtype)
        else:
            scale = tf.cast(1.0, kl.dtype)
        return tf.reduce_sum(var_exp) * scale - kl

    def _conditional(self, X, q_mu, q_sqrt, full_cov: bool, full_output_cov: bool, Lm=None):
        """q(f) at X: gpflow's steps for one K_uu with the given chol(K_uu) ``Lm``, else gpflow's conditional."""
        if Lm is None:
            mu, var = conditional(
                X,
                self.inducing_variable,
                self.kernel,
                q_mu,
                q_sqrt=q_sqrt,
                full_cov=full_cov,
                white=self.whiten,
                full_output_cov=full_output_cov,
            )
        else:
            Kmn = covariances.Kuf(self.inducing_variable, self.kernel, X)  # [M, N]
            Knn = self._shared_kuu_kernel()(X, full_cov=full_cov)
            groups = _column_groups(Kmn, q_sqrt, full_cov)
            if groups > 1:  # the same numbers, the triangular solves on several threads
                mu, var = _grouped_conditional(Kmn, Lm, Knn, q_mu, q_sqrt, self.whiten, groups)
            else:
                mu, var = base_conditional_with_lm(Kmn, Lm, Knn, q_mu, full_cov=full_cov, q_sqrt=q_sqrt,
                                                   white=self.whiten)
            var = expand_independent_outputs(var, full_cov, full_output_cov)
        return mu + self.mean_function(X), var

    @inherit_check_shapes
    def predict_f(self, Xnew, full_cov: bool = False, full_output_cov: bool = False):
        """Mean and (co)variance of q(f*) at Xnew ``[N, D]``, as in gpflow."""
        Xnew, _ = self._check_inputs(*self._as_default_float(Xnew))
        q_mu, q_sqrt = self.q.checked_mean_cholesky()
        return self._conditional(Xnew, q_mu, q_sqrt, full_cov, full_output_cov, Lm=self._kuu_cholesky())

    @inherit_check_shapes
    def predict_log_density(self, data, full_cov: bool = False, full_output_cov: bool = False) -> tf.Tensor:
        """log p(Y* | X*) per point ``[N]`` under q, as in gpflow, after checking the test data as
        training data are checked (shapes, NaN and inf, Y against the likelihood's support)."""
        X, Y = self._check_inputs(*self._as_default_float(*data))
        Y = as_likelihood_targets(self.likelihood, Y)
        return super().predict_log_density((X, Y), full_cov=full_cov, full_output_cov=full_output_cov)
