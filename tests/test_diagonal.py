"""A diagonal (mean-field) q(u), gpflow's q_diag: its own exponential family under natural gradients.

The battery here is the diagonal family's version of the full family's:
conversions, closed forms against autodiff, an explicit Fisher matrix (built
only here), the step direction against −∂L/∂η of the diagonal family,
agreement with gpflow's q_diag SVGP, and convergence to the best diagonal q(u).
"""
import gpflow
import numpy as np
import pytest
import tensorflow as tf

import gpnat
from gpnat.natgrad import expectation_gradient, natural_gradient, natural_tangent
from gpnat.parametrisations import (
    DIAGONAL_PARAMETRISATIONS,
    DiagonalExpectation,
    DiagonalMeanStd,
    DiagonalNatural,
)

from .conftest import make_kernel, regression_data

M = 5
DIAGONAL = [cls() for cls in DIAGONAL_PARAMETRISATIONS.values()]
IDS = [type(p).__name__ for p in DIAGONAL]
STEP_COORDINATES = [None] + DIAGONAL
STEP_IDS = ["storage"] + [f"step-in-{i}" for i in IDS]


def random_meanstd(rng, M, L):
    """A random diagonal q(u): (q_mu [M, L], q_sqrt [M, L] standard deviations)."""
    return rng.normal(size=(M, L)), 0.4 + np.abs(rng.normal(size=(M, L)))


def _model(rng, parametrisation, likelihood="bernoulli", L=1, whiten=True, N=25):
    X, Y = regression_data(rng, N=N, L=L)
    lik = gpflow.likelihoods.Gaussian(0.3) if likelihood == "gaussian" else gpflow.likelihoods.Bernoulli()
    if likelihood != "gaussian":
        Y = (Y > 0).astype(float)
    model = gpnat.SVGP(make_kernel(), lik, X[:M].copy(), num_latent_gps=L, whiten=whiten,
                       parametrisation=parametrisation, q_diag=True)
    model.q.assign_mean_cholesky(*random_meanstd(rng, M, L))
    return model, (X, Y)


# --------------------------------------------------------------- conversions
@pytest.mark.parametrize("p", DIAGONAL, ids=IDS)
def test_round_trip_and_views(rng, p):
    q_mu, q_sqrt = random_meanstd(rng, 6, 3)
    xi = p.from_meanchol(q_mu, q_sqrt)
    assert [tuple(t.shape) for t in xi] == [(6, 3), (6, 3)]
    m, s = p.to_meanchol(*xi)
    np.testing.assert_allclose(m, q_mu, rtol=1e-12)
    np.testing.assert_allclose(np.abs(s), q_sqrt, rtol=1e-12)
    theta = p.to_natural(*xi)
    np.testing.assert_allclose(theta[0], q_mu / q_sqrt**2, rtol=1e-12)
    np.testing.assert_allclose(theta[1], -0.5 / q_sqrt**2, rtol=1e-12)
    eta = p.to_expectation(*xi)
    np.testing.assert_allclose(eta[1], q_sqrt**2 + q_mu**2, rtol=1e-12)
    for back in (p.from_natural(*theta), p.from_expectation(*eta)):
        for a, b in zip(back, xi):
            np.testing.assert_allclose(a, b, rtol=1e-10)
    assert bool(p.is_valid(*xi))


def test_invalid_diagonal_states_are_invalid():
    assert not bool(DiagonalNatural().is_valid(np.zeros((2, 1)), np.array([[-1.0], [0.5]])))
    assert not bool(gpnat.parametrisations.DiagonalExpectation().is_valid(np.ones((2, 1)), np.ones((2, 1))))
    assert not bool(DiagonalMeanStd().is_valid(np.zeros((2, 1)), np.array([[1.0], [0.0]])))


@pytest.mark.parametrize("p", DIAGONAL, ids=IDS)
@pytest.mark.parametrize("closed_form", [True, False], ids=["closed-form", "autodiff"])
def test_closed_forms_equal_the_automatic_route(rng, p, closed_form):
    xi = [tf.constant(t) for t in p.from_meanchol(*random_meanstd(rng, 7, 2))]
    grads = [tf.constant(rng.normal(size=(7, 2))) for _ in range(2)]
    for fn in (natural_gradient, expectation_gradient):
        a = fn(p, xi, grads, closed_form=closed_form)
        b = fn(p, xi, grads, closed_form=not closed_form)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12 * np.abs(y.numpy()).max())
    composed = natural_tangent(p, xi, expectation_gradient(p, xi, grads, closed_form), closed_form)
    for x, y in zip(composed, natural_gradient(p, xi, grads, closed_form=False)):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12 * np.abs(y.numpy()).max())


@pytest.mark.parametrize("p", DIAGONAL, ids=IDS)
@pytest.mark.parametrize("closed_form", [True, False], ids=["closed-form", "autodiff"])
def test_natural_gradient_equals_inverse_diagonal_fisher_times_gradient(rng, p, closed_form):
    """natgrad_ξ = F_ξ⁻¹ ∇_ξ L with the diagonal family's Fisher F_ξ = (∂θ/∂ξ)ᵀ(∂η/∂ξ), built explicitly."""
    model, data = _model(rng, p, L=2)
    xi = tf.concat([tf.reshape(v, [-1]) for v in model.q.xi], 0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xi)
        parts = (tf.reshape(xi[:2 * M], (M, 2)), tf.reshape(xi[2 * M:], (M, 2)))
        theta = tf.concat([tf.reshape(t, [-1]) for t in p.to_natural(*parts)], 0)
        eta = tf.concat([tf.reshape(t, [-1]) for t in p.to_expectation(*parts)], 0)
    fisher = tape.jacobian(theta, xi).numpy().T @ tape.jacobian(eta, xi).numpy()
    np.testing.assert_allclose(fisher, fisher.T, atol=1e-10 * np.abs(fisher).max())
    with tf.GradientTape() as tape2:
        loss = model.training_loss(data)
    grads = tape2.gradient(loss, model.q.xi)
    flat_grad = np.concatenate([g.numpy().ravel() for g in grads])
    expected = np.linalg.solve(fisher, flat_grad)
    ours = natural_gradient(p, model.q.xi, grads, closed_form=closed_form)
    ours = np.concatenate([t.numpy().ravel() for t in ours])
    np.testing.assert_allclose(ours, expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())


def _theta_change_rate(model, data, gamma, coordinates):
    before = [v.numpy().copy() for v in model.q.xi]
    theta0 = [t.numpy() for t in model.q.natural()]
    gpnat.NaturalGradient(gamma, coordinates=coordinates).minimize(
        model.training_loss_closure(data, compile=False), model.q)
    theta1 = [t.numpy() for t in model.q.natural()]
    for v, b in zip(model.q.xi, before):
        v.assign(b)
    return [(b - a) / gamma for a, b in zip(theta0, theta1)]


@pytest.mark.parametrize("p", DIAGONAL, ids=IDS)
@pytest.mark.parametrize("coordinates", STEP_COORDINATES, ids=STEP_IDS)
def test_every_storage_and_coordinates_move_along_minus_the_diagonal_expectation_gradient(rng, p, coordinates):
    """dθ/dγ = −∂L/∂η of the diagonal family, ∂L/∂η taken by autodiff in an η-stored diagonal model."""
    model, data = _model(rng, p)
    reference = gpnat.SVGP(model.kernel, model.likelihood, model.inducing_variable.Z.numpy(),
                           parametrisation="diagonal_expectation")
    reference.q.assign_mean_cholesky(*[t.numpy() for t in model.q.mean_cholesky()])
    with tf.GradientTape() as tape:
        loss = reference.training_loss(data)
    dL_deta = [g.numpy() for g in tape.gradient(loss, reference.q.xi)]
    r1 = _theta_change_rate(model, data, 1e-4, coordinates)
    r2 = _theta_change_rate(model, data, 5e-5, coordinates)
    for a, b, g in zip(r1, r2, dL_deta):
        np.testing.assert_allclose(2 * b - a, -g, rtol=1e-5, atol=1e-6 * np.abs(g).max())


# ------------------------------------------------------------------- models
@pytest.mark.parametrize("p", DIAGONAL, ids=IDS)
@pytest.mark.parametrize("whiten", [True, False], ids=["whitened", "unwhitened"])
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_elbo_and_predictions_equal_gpflow_q_diag(rng, p, whiten, likelihood):
    model, (X, Y) = _model(rng, p, likelihood=likelihood, L=2, whiten=whiten)
    q_mu, q_sqrt = [t.numpy() for t in model.q.mean_cholesky()]
    ref = gpflow.models.SVGP(model.kernel, model.likelihood, model.inducing_variable, num_latent_gps=2,
                             whiten=whiten, q_diag=True, q_mu=q_mu, q_sqrt=q_sqrt)
    np.testing.assert_allclose(model.elbo((X, Y)), ref.elbo((X, Y)), rtol=1e-10)
    for full_cov in (False, True):
        for a, b in zip(model.predict_f(X[:6], full_cov=full_cov), ref.predict_f(X[:6], full_cov=full_cov)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def _best_diagonal_elbo(model, data):
    """gpflow's q_diag SVGP with the same hyperparameters, q(u) alone optimised by L-BFGS."""
    q_mu, q_sqrt = [t.numpy() for t in model.q.mean_cholesky()]
    ref = gpflow.models.SVGP(model.kernel, model.likelihood, model.inducing_variable, whiten=model.whiten,
                             num_latent_gps=model.num_latent_gps, q_diag=True, q_mu=q_mu, q_sqrt=q_sqrt)
    variables = [ref.q_mu.unconstrained_variable, ref.q_sqrt.unconstrained_variable]
    gpflow.optimizers.Scipy().minimize(ref.training_loss_closure(data), variables,
                                       options=dict(maxiter=5000, gtol=1e-12, ftol=1e-16))
    return ref.elbo(data).numpy()


#: every storage, and every (whiten, likelihood) pair, at least once (the full product took a minute)
CONVERGENCE_CASES = [
    (DiagonalMeanStd(), True, "gaussian"),
    (DiagonalNatural(), False, "gaussian"),
    (DiagonalExpectation(), True, "bernoulli"),
    (DiagonalMeanStd(), False, "bernoulli"),
]


@pytest.mark.parametrize("p, whiten, likelihood", CONVERGENCE_CASES,
                         ids=[f"{type(p).__name__}-{'whitened' if w else 'unwhitened'}-{lik}"
                              for p, w, lik in CONVERGENCE_CASES])
def test_natural_steps_converge_to_the_best_diagonal_q(rng, p, whiten, likelihood):
    model, data = _model(rng, p, likelihood=likelihood, whiten=whiten)
    best = _best_diagonal_elbo(model, data)
    opt = gpnat.NaturalGradient(0.5)
    loss_fn = model.training_loss_closure(data, compile=True)
    step = tf.function(lambda: opt.minimize(loss_fn, model.q))
    for _ in range(150):
        step()
    assert model.q.q_diag and [tuple(v.shape) for v in model.q.xi] == [(M, 1), (M, 1)]
    np.testing.assert_allclose(model.elbo(data), best, rtol=1e-8)


@pytest.mark.parametrize("coordinates", STEP_COORDINATES, ids=STEP_IDS)
@pytest.mark.parametrize("closed_form", [True, False], ids=["closed-form", "autodiff"])
def test_negative_standard_deviations_step_as_their_positive_twins(rng, coordinates, closed_form):
    """s and −s store the same q(u) (gpflow's q_diag q_sqrt may hold either): the step must not care."""
    model, data = _model(rng, DiagonalMeanStd(), L=2)
    start = [v.numpy().copy() for v in model.q.xi]
    results = []
    for signs in (np.ones((M, 2)), np.where(rng.normal(size=(M, 2)) < 0, -1.0, 1.0)):
        for v, b in zip(model.q.xi, start):
            v.assign(b)
        model.q.xi[1].assign(start[1] * signs)
        opt = gpnat.NaturalGradient(0.3, coordinates=coordinates, closed_form=closed_form)
        opt.minimize(model.training_loss_closure(data, compile=False), model.q)
        mean, std = (t.numpy() for t in model.q.mean_cholesky())
        results.append((mean, std**2))
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-11)


def test_default_model_and_optimizer_step_in_the_diagonal_natural_coordinates(rng):
    X, Y = regression_data(rng, N=20)
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.3), X[:M].copy(), q_diag=True)
    assert isinstance(model.parametrisation, DiagonalMeanStd)
    np.testing.assert_array_equal(model.q.mean_cholesky()[1], np.ones((M, 1)))
    opt = gpnat.NaturalGradient(1.0)
    start = model.elbo((X, Y)).numpy()
    opt.minimize(model.training_loss_closure((X, Y), compile=False), model.q)
    assert model.elbo((X, Y)).numpy() > start
    # the step is the general route through DiagonalNatural
    reference = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.3), X[:M].copy(),
                           parametrisation=DiagonalNatural())
    gpnat.NaturalGradient(1.0, coordinates=None).minimize(
        reference.training_loss_closure((X, Y), compile=False), reference.q)
    for a, b in zip(model.q.mean_cholesky(), reference.q.mean_cholesky()):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_train_with_a_diagonal_q(rng):
    X, Y = regression_data(rng, N=60)
    Y = (Y > 0).astype(float)
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Bernoulli(), X[:M].copy(), q_diag=True, num_data=60)
    start = model.elbo((X, Y)).numpy()
    history = gpnat.train(model, (X, Y), iterations=60, batch_size=30, progress=False)
    assert model.elbo((X, Y)).numpy() > start + 1.0
    assert np.all(np.isfinite(history.elbo))
    assert tuple(model.q.xi[1].shape) == (M, 1)


# ---------------------------------------------------------------- bad input
def test_q_diag_with_a_full_q_sqrt_is_refused(rng):
    with pytest.raises(ValueError, match=r"q_sqrt of shape \[M, L\]"):
        gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(), np.zeros((M, 2)), q_diag=True,
                   q_sqrt=np.tile(np.eye(M), (1, 1, 1)))
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(), rng.normal(size=(M, 2)), q_diag=True)
    before = [v.numpy().copy() for v in model.q.xi]
    for bad in (np.tile(np.eye(M), (1, 1, 1)), np.ones((M, 2)), np.zeros((M, 1))):
        with pytest.raises(ValueError, match="q_sqrt"):
            model.q.assign_mean_cholesky(np.zeros((M, 1)), bad)
    for v, b in zip(model.q.xi, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_q_diag_false_with_a_diagonal_parametrisation_is_refused():
    with pytest.raises(ValueError, match="q_diag=False"):
        gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(), np.zeros((M, 2)),
                   parametrisation="diagonal_natural", q_diag=False)
    # a storage with no diagonal counterpart is named as a storage, not as step coordinates
    with pytest.raises(ValueError, match=r"\(q_diag=True\) cannot be stored in MeanPrecisionCholesky"):
        gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(), np.zeros((M, 2)),
                   parametrisation="mean_precision_cholesky", q_diag=True)


def test_coordinates_without_a_diagonal_counterpart_are_refused_and_state_kept(rng):
    model, data = _model(rng, DiagonalMeanStd())
    before = [v.numpy().copy() for v in model.q.xi]
    opt = gpnat.NaturalGradient(0.1, coordinates=gpnat.MeanPrecisionCholesky())
    with pytest.raises(ValueError, match="no diagonal counterpart"):
        opt.minimize(model.training_loss_closure(data, compile=False), model.q)
    for v, b in zip(model.q.xi, before):
        np.testing.assert_array_equal(v.numpy(), b)
