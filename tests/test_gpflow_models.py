"""gpflow's own models under gpnat's NaturalGradient: gpflow's (q_mu, q_sqrt) Parameter tuples.

The first tests carry over gpflow's natural-gradient tests (VGP vs GPR, SVGP vs
SGPR, a small q_sqrt, other coordinates after 500 steps of γ = 0.01), run
against gpnat's optimizer, with tolerances set by the jitter rather than 1e-4.
"""
import gpflow
import numpy as np
import pytest
import tensorflow as tf
from gpflow.optimizers import XiNat, XiSqrtMeanVar, XiTransform
from gpflow.optimizers import natgrad as gpflow_natgrad

import gpnat
from gpnat.variational import GpflowQ

from .conftest import make_kernel, regression_data

N, M, D = 8, 4, 2
NOISE = 0.1


@pytest.fixture
def problem(rng):
    X = rng.normal(size=(N, D))
    Y = rng.normal(size=(N, 1))
    Z = rng.normal(size=(M, D))
    return X, Y, Z


def _gpr(X, Y):
    """GPR matching a VGP's prior at the data, K + εI, so the comparison is exact."""
    return gpflow.models.GPR((X, Y), gpflow.kernels.SquaredExponential(),
                             noise_variance=NOISE + gpflow.config.default_jitter())


def _vgp(X, Y):
    vgp = gpflow.models.VGP((X, Y), gpflow.kernels.SquaredExponential(), gpflow.likelihoods.Gaussian(NOISE))
    gpflow.set_trainable(vgp, False)
    gpflow.set_trainable(vgp.q_mu, True)
    gpflow.set_trainable(vgp.q_sqrt, True)
    return vgp


def _steps(opt, loss, var_list, n):
    step = tf.function(lambda: opt.minimize(loss, var_list))
    for _ in range(n):
        step()


class XiEtaForTests(XiTransform):
    """Expectation coordinates written as a gpflow XiTransform (a user's own transform)."""

    @staticmethod
    def meanvarsqrt_to_xi(mean, varsqrt):
        return gpflow_natgrad.meanvarsqrt_to_expectation(mean, varsqrt)

    @staticmethod
    def xi_to_meanvarsqrt(xi1, xi2):
        return gpflow_natgrad.expectation_to_meanvarsqrt(xi1, xi2)

    @staticmethod
    def naturals_to_xi(nat1, nat2):
        return gpflow_natgrad.natural_to_expectation(nat1, nat2)


# ------------------------------------------------- gpflow's tests, ported
def test_vgp_vs_gpr(problem):
    X, Y, _ = problem
    vgp, gpr = _vgp(X, Y), _gpr(X, Y)
    assert abs(vgp.elbo() - gpr.log_marginal_likelihood()) > 1.0
    _steps(gpnat.NaturalGradient(1.0), vgp.training_loss, [(vgp.q_mu, vgp.q_sqrt)], 1)
    np.testing.assert_allclose(vgp.elbo(), gpr.log_marginal_likelihood(), rtol=1e-10)


def test_small_q_sqrt_is_handled(problem, rng):
    """gpflow #767: a step from q_sqrt = 1e-3 I."""
    X, Y, _ = problem
    vgp, gpr = _vgp(X, Y), _gpr(X, Y)
    vgp.q_mu.assign(rng.normal(size=(N, 1)))
    vgp.q_sqrt.assign(1e-3 * np.eye(N)[None])
    _steps(gpnat.NaturalGradient(1.0), vgp.training_loss, [(vgp.q_mu, vgp.q_sqrt)], 1)
    np.testing.assert_allclose(vgp.elbo(), gpr.log_marginal_likelihood(), rtol=1e-8)
    for a, b in zip(vgp.predict_f(X), gpr.predict_f(X)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("whiten", [True, False], ids=["whitened", "unwhitened"])
def test_svgp_vs_sgpr(problem, whiten):
    X, Y, Z = problem
    kernel = gpflow.kernels.SquaredExponential()
    svgp = gpflow.models.SVGP(kernel, gpflow.likelihoods.Gaussian(NOISE), Z, whiten=whiten)
    sgpr = gpflow.models.SGPR((X, Y), kernel, Z, noise_variance=NOISE)
    assert abs(svgp.elbo((X, Y)) - sgpr.elbo()) > 1.0
    gpnat.NaturalGradient(1.0).minimize(svgp.training_loss_closure((X, Y)), [(svgp.q_mu, svgp.q_sqrt)])
    np.testing.assert_allclose(svgp.elbo((X, Y)), sgpr.elbo(), rtol=1e-10)


@pytest.mark.parametrize(
    "coordinates", [XiSqrtMeanVar(), XiEtaForTests(), gpnat.Expectation(), "mean_precision_cholesky"],
    ids=["XiSqrtMeanVar", "users-XiTransform", "gpnat-Expectation", "by-name"],
)
def test_other_coordinates_reach_gpr_after_500_small_steps(problem, coordinates):
    X, Y, _ = problem
    vgp, gpr = _vgp(X, Y), _gpr(X, Y)
    _steps(gpnat.NaturalGradient(0.01), vgp.training_loss, [(vgp.q_mu, vgp.q_sqrt, coordinates)], 500)
    # 500 steps of γ = 0.01 leave (1 − 0.01)^500 ≈ 0.7% of the initial gap in θ (gpflow's test: atol 1e-4)
    np.testing.assert_allclose(vgp.elbo(), gpr.log_marginal_likelihood(), rtol=1e-3)
    _steps(gpnat.NaturalGradient(1.0), vgp.training_loss, [(vgp.q_mu, vgp.q_sqrt)], 1)
    np.testing.assert_allclose(vgp.elbo(), gpr.log_marginal_likelihood(), rtol=1e-10)


# ----------------------------------------------- the same steps as gpnat's
@pytest.mark.parametrize("q_diag", [False, True], ids=["full", "q_diag"])
@pytest.mark.parametrize("coordinates", [None, XiNat(), XiSqrtMeanVar()], ids=["default", "XiNat", "XiSqrtMeanVar"])
def test_steps_on_gpflow_parameters_equal_steps_on_gpnat_q(rng, q_diag, coordinates):
    """A gpflow SVGP's q(u), stepped through its Parameters, follows gpnat.SVGP's q(u) (Bernoulli)."""
    X, Y = regression_data(rng, N=30)
    Y = (Y > 0).astype(float)
    kernel, likelihood, Z = make_kernel(), gpflow.likelihoods.Bernoulli(), X[:M].copy()
    ours = gpnat.SVGP(kernel, likelihood, Z, q_diag=q_diag)
    theirs = gpflow.models.SVGP(kernel, likelihood, Z, q_diag=q_diag)
    coords = {None: gpnat.Natural(), "XiNat": gpnat.Natural(), "XiSqrtMeanVar": gpnat.MeanCholesky()}
    ours_coords = coords[None if coordinates is None else type(coordinates).__name__]
    opt_ours = gpnat.NaturalGradient(0.3, coordinates=ours_coords)
    opt_theirs = gpnat.NaturalGradient(0.3)
    var_list = [(theirs.q_mu, theirs.q_sqrt)] if coordinates is None else [(theirs.q_mu, theirs.q_sqrt, coordinates)]
    loss_ours = ours.training_loss_closure((X, Y), compile=False)
    loss_theirs = theirs.training_loss_closure((X, Y), compile=False)
    for _ in range(5):
        opt_ours.minimize(loss_ours, ours.q)
        opt_theirs.minimize(loss_theirs, var_list)
    np.testing.assert_allclose(theirs.elbo((X, Y)), ours.elbo((X, Y)), rtol=1e-10)
    for a, b in zip((theirs.q_mu, theirs.q_sqrt), ours.q.mean_cholesky()):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-8, atol=1e-10)


def test_gpflow_xi_transforms_are_step_coordinates_of_natural_gradient(rng):
    """NaturalGradient(coordinates=XiNat()) is Natural coordinates and XiSqrtMeanVar() mean/Cholesky, as in the
    var_list form; any other XiTransform steps through its own maps; an object of neither kind is refused."""
    assert gpnat.NaturalGradient(coordinates=XiNat()).coordinates == gpnat.Natural()
    assert gpnat.NaturalGradient(coordinates=XiSqrtMeanVar()).coordinates == gpnat.MeanCholesky()

    class Doubled(gpflow.optimizers.natgrad.XiTransform):  # ξ = (m, 2L): the same step as mean/Cholesky
        def meanvarsqrt_to_xi(self, mean, varsqrt):
            return mean, 2.0 * varsqrt

        def xi_to_meanvarsqrt(self, xi_1, xi_2):
            return xi_1, 0.5 * xi_2

        def naturals_to_xi(self, nat_1, nat_2):
            mean, varsqrt = gpflow.optimizers.natgrad.natural_to_meanvarsqrt(nat_1, nat_2)
            return mean, 2.0 * varsqrt

    X, Y = regression_data(rng, N=20)
    Y = (Y > 0).astype(float)
    models = [gpnat.SVGP(make_kernel(), gpflow.likelihoods.Bernoulli(), X[:M].copy()) for _ in range(2)]
    for model, coordinates in zip(models, (Doubled(), gpnat.MeanCholesky())):
        opt = gpnat.NaturalGradient(0.3, coordinates=coordinates)
        for _ in range(3):
            opt.minimize(model.training_loss_closure((X, Y), compile=False), model.q)
    for a, b in zip(*(m.q.mean_cholesky() for m in models)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    with pytest.raises(TypeError, match="step coordinates: parametrisation must be .* or a gpflow XiTransform"):
        gpnat.NaturalGradient(coordinates=object())


@pytest.mark.parametrize("q_diag", [False, True], ids=["full", "q_diag"])
def test_gradients_are_taken_through_the_parameters_transforms(rng, q_diag):
    """∇ with respect to the constrained (q_mu, q_sqrt) equals the gradient of the same loss written on tensors."""
    X, Y = regression_data(rng, N=20)
    kernel, likelihood, Z = make_kernel(), gpflow.likelihoods.Gaussian(0.2), X[:M].copy()
    model = gpflow.models.SVGP(kernel, likelihood, Z, q_diag=q_diag, whiten=False,
                               q_mu=rng.normal(size=(M, 1)))
    q = GpflowQ(model.q_mu, model.q_sqrt)
    with tf.GradientTape() as tape:
        loss = model.training_loss((X, Y))
    ours = q.xi_gradients(tape.gradient(loss, q.variables_to_watch))
    q_mu, q_sqrt = (tf.identity(tf.convert_to_tensor(p)) for p in (model.q_mu, model.q_sqrt))
    with tf.GradientTape() as tape:
        tape.watch([q_mu, q_sqrt])
        f_mean, f_var = gpflow.conditionals.conditional(X, model.inducing_variable, kernel, q_mu,
                                                        q_sqrt=q_sqrt, white=False)
        kl = gpflow.kullback_leiblers.prior_kl(model.inducing_variable, kernel, q_mu, q_sqrt, whiten=False)
        negative_elbo = kl - tf.reduce_sum(likelihood.variational_expectations(X, f_mean, f_var, Y))
    expected = tape.gradient(negative_elbo, [q_mu, q_sqrt])
    np.testing.assert_allclose(ours[0], expected[0], rtol=1e-10)
    keep = (lambda a: a) if q_diag else np.tril  # only the lower triangle of q_sqrt is a coordinate
    np.testing.assert_allclose(keep(ours[1].numpy()), keep(expected[1].numpy()), rtol=1e-10, atol=1e-12)


def test_gpflow_q_diag_converges_to_the_best_diagonal_q(rng):
    X, Y = regression_data(rng, N=25)
    Y = (Y > 0).astype(float)
    model = gpflow.models.SVGP(make_kernel(), gpflow.likelihoods.Bernoulli(), X[:M].copy(), q_diag=True)
    reference = gpflow.models.SVGP(make_kernel(), gpflow.likelihoods.Bernoulli(), X[:M].copy(), q_diag=True)
    gpflow.optimizers.Scipy().minimize(
        reference.training_loss_closure((X, Y)),
        [reference.q_mu.unconstrained_variable, reference.q_sqrt.unconstrained_variable],
        options=dict(maxiter=5000, gtol=1e-12, ftol=1e-16))
    _steps(gpnat.NaturalGradient(0.5), model.training_loss_closure((X, Y)), [(model.q_mu, model.q_sqrt)], 150)
    np.testing.assert_allclose(model.elbo((X, Y)), reference.elbo((X, Y)), rtol=1e-8)
    assert np.all(model.q_sqrt.numpy() > 0)


# --------------------------------------------------- gpnat.train on gpflow models
def test_train_a_gpflow_svgp(rng):
    X, Y = regression_data(rng, N=80)
    model = gpflow.models.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.5), X[:6].copy(), num_data=80)
    start = model.elbo((X, Y)).numpy()
    history = gpnat.train(model, (X, Y), iterations=60, batch_size=40, progress=False)
    assert model.elbo((X, Y)).numpy() > start + 10.0
    assert np.all(np.isfinite(history.elbo))
    assert model.likelihood.variance.numpy() != 0.5  # Adam trained the hyperparameters too


def test_train_a_gpflow_vgp_full_batch_on_its_own_data(rng):
    X, Y = regression_data(rng, N=25)
    Y = (Y > 0).astype(float)
    model = gpflow.models.VGP((X, Y), make_kernel(), gpflow.likelihoods.Bernoulli())
    start = model.elbo().numpy()
    gpnat.train(model, model.data, iterations=40, progress=False)
    assert model.elbo().numpy() > start + 1.0
    before = [v.numpy().copy() for v in model.trainable_variables]
    with pytest.raises(ValueError, match="data must be model.data"):
        gpnat.train(model, (X, 1.0 - Y), iterations=5, progress=False)
    with pytest.raises(ValueError, match="full batch"):
        gpnat.train(model, model.data, iterations=5, batch_size=5, progress=False)
    for v, b in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_train_finds_the_q_of_every_gpflow_submodule(rng):
    """A module holding several gpflow SVGPs (as a GPflux deep GP holds layers): each q(u) gets natural steps."""
    X, Y = regression_data(rng, N=40)

    class TwoModels(tf.Module):
        def __init__(self):
            super().__init__()
            self.likelihood = gpflow.likelihoods.Gaussian(0.3)
            self.first = gpflow.models.SVGP(make_kernel(), self.likelihood, X[:4].copy(), num_data=40)
            self.second = gpflow.models.SVGP(make_kernel(), self.likelihood, X[4:9].copy(), num_data=40)

        def training_loss(self, data):
            return self.first.training_loss(data) + self.second.training_loss(data)

    model = TwoModels()
    qs = gpnat.training.variational_distributions(model)
    assert [q.num_inducing for q in qs] == [4, 5]
    gpnat.train(model, (X, Y), iterations=1, adam_lr=None, natgrad=gpnat.NaturalGradient(1.0), progress=False)
    for svgp in (model.first, model.second):  # one step of γ = 1: each on its own SGPR bound
        sgpr = gpflow.models.SGPR((X, Y), svgp.kernel, svgp.inducing_variable.Z.numpy(), noise_variance=0.3)
        np.testing.assert_allclose(svgp.elbo((X, Y)), sgpr.elbo(), rtol=1e-10)


# --------------------------------------------------------------- bad input
def test_var_lists_that_are_not_parameter_tuples_are_refused(problem):
    X, Y, Z = problem
    svgp = gpflow.models.SVGP(gpflow.kernels.SquaredExponential(), gpflow.likelihoods.Gaussian(NOISE), Z)
    before = [svgp.q_mu.numpy().copy(), svgp.q_sqrt.numpy().copy()]
    loss = svgp.training_loss_closure((X, Y))
    opt = gpnat.NaturalGradient(1.0)
    other = gpflow.Parameter(np.zeros((M + 1, 1)))
    cases = [
        ([(svgp.q_mu.numpy(), svgp.q_sqrt)], TypeError, "q_mu must be a gpflow.Parameter"),
        ([(svgp.q_mu, other)], ValueError, r"q_sqrt must have shape \[L, M, M\]"),
        ([(other, svgp.q_sqrt)], ValueError, r"q_sqrt must have shape"),
        ([(gpflow.Parameter(np.zeros(M)), svgp.q_sqrt)], ValueError, r"q_mu must have shape \[M, L\]"),
        ([svgp.q_mu], TypeError, "tuple"),
        ([(svgp.q_mu, svgp.q_sqrt, "polar")], TypeError, "parametrisation"),
    ]
    for var_list, error, match in cases:
        with pytest.raises(error, match=match):
            opt.minimize(loss, var_list)
        np.testing.assert_array_equal(svgp.q_mu.numpy(), before[0])
        np.testing.assert_array_equal(svgp.q_sqrt.numpy(), before[1])
    assert opt.iterations.numpy() == 0
