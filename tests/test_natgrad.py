"""NaturalGradient: exact identities, explicit Fisher matrices (built only here), safety."""
import gpflow
import numpy as np
import pytest
import tensorflow as tf

import gpnat
from gpnat.natgrad import NaturalGradientError, jvp_by_reverse_twice, natural_gradient

from .conftest import make_kernel, random_meanchol, regression_data

M = 5


def _gaussian_problem(rng, L=1, whiten=True, noise=1.0, N=20, parametrisation="natural"):
    X, Y = regression_data(rng, N=N, L=L)
    Z = X[:M].copy()
    kernel, likelihood = make_kernel(), gpflow.likelihoods.Gaussian(noise)
    model = gpnat.SVGP(kernel, likelihood, Z, num_latent_gps=L, whiten=whiten,
                       parametrisation=parametrisation)
    sgpr = gpflow.models.SGPR((X, Y), kernel, Z, noise_variance=noise)
    return model, (X, Y), sgpr


def _optimal_natural(model, data):
    """θ* of the SGPR posterior over u (or v when whitened), in closed form with NumPy."""
    X, Y = data
    Kuu = gpflow.covariances.Kuu(model.inducing_variable, model.kernel, jitter=gpflow.default_jitter()).numpy()
    Kuf = gpflow.covariances.Kuf(model.inducing_variable, model.kernel, X).numpy()
    noise = model.likelihood.variance.numpy()
    if model.whiten:
        A = np.linalg.solve(np.linalg.cholesky(Kuu), Kuf)  # Luu⁻¹ Kuf
        prior_precision = np.eye(len(Kuu))
    else:
        A = np.linalg.solve(Kuu, Kuf)  # Kuu⁻¹ Kuf
        prior_precision = np.linalg.inv(Kuu)
    precision = prior_precision + A @ A.T / noise
    theta_1 = A @ Y / noise
    L = Y.shape[1]
    return theta_1, np.tile(-0.5 * precision, (L, 1, 1))


@pytest.mark.parametrize("whiten", [True, False], ids=["whitened", "unwhitened"])
@pytest.mark.parametrize("L", [1, 3])
def test_one_natural_step_with_gamma_one_is_the_sgpr_optimum(rng, whiten, L):
    model, data, sgpr = _gaussian_problem(rng, L=L, whiten=whiten, noise=0.1)
    model.q.assign_mean_cholesky(*random_meanchol(rng, M, L))
    assert abs(model.elbo(data) - sgpr.elbo()) > 1.0
    gpnat.NaturalGradient(1.0).minimize(model.training_loss_closure(data, compile=False), model.q)
    np.testing.assert_allclose(model.elbo(data), sgpr.elbo(), rtol=1e-8)
    theta_1, theta_2 = _optimal_natural(model, data)
    np.testing.assert_allclose(model.q.natural()[0], theta_1, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(model.q.natural()[1], theta_2, rtol=1e-6, atol=1e-8)
    # at the optimum the natural gradient vanishes
    with tf.GradientTape() as tape:
        loss = model.training_loss(data)
    direction = natural_gradient(model.q.parametrisation, model.q.xi, tape.gradient(loss, model.q.xi))
    for d, scale in zip(direction, (theta_1, theta_2)):
        assert np.abs(d).max() < 1e-6 * np.abs(scale).max()


@pytest.mark.parametrize("whiten", [True, False], ids=["whitened", "unwhitened"])
@pytest.mark.parametrize("L", [1, 3])
def test_every_parametrisation_converges_to_the_sgpr_bound(rng, parametrisation, whiten, L):
    model, data, sgpr = _gaussian_problem(rng, L=L, whiten=whiten, parametrisation=parametrisation)
    if not whiten:  # start at the prior, as the whitened model's default q(v) = p(v) does
        Kuu = gpflow.covariances.Kuu(model.inducing_variable, model.kernel, jitter=gpflow.default_jitter())
        model.q.assign_mean_cholesky(np.zeros((M, L)), np.tile(np.linalg.cholesky(Kuu)[None], (L, 1, 1)))
    opt = gpnat.NaturalGradient(0.2)
    loss_fn = model.training_loss_closure(data, compile=True)
    step = tf.function(lambda: opt.minimize(loss_fn, model.q))
    for _ in range(80):
        step()
    np.testing.assert_allclose(model.elbo(data), sgpr.elbo(), rtol=1e-10)
    assert opt.iterations.numpy() == 80


COORDINATES = [None] + [cls() for cls in gpnat.parametrisations.PARAMETRISATIONS.values()]
COORDINATE_IDS = ["storage"] + [f"step-in-{cls.__name__}" for cls in gpnat.parametrisations.PARAMETRISATIONS.values()]


@pytest.mark.parametrize("coordinates", COORDINATES, ids=COORDINATE_IDS)
@pytest.mark.parametrize("whiten", [True, False], ids=["whitened", "unwhitened"])
@pytest.mark.parametrize("L", [1, 3])
def test_default_model_and_optimizer_are_exact_in_one_step(rng, whiten, L, coordinates):
    """A default-built SVGP and the default NaturalGradient(1.0) land on the SGPR bound in one step."""
    X, Y = regression_data(rng, N=30, L=L)
    Z = X[:M].copy()
    kernel = make_kernel()
    model = gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(0.1), Z, num_latent_gps=L, whiten=whiten)
    sgpr = gpflow.models.SGPR((X, Y), kernel, Z, noise_variance=0.1)
    assert isinstance(model.parametrisation, gpnat.MeanCholesky)
    assert abs(model.elbo((X, Y)) - sgpr.elbo()) > 1.0
    opt = gpnat.NaturalGradient(1.0)
    assert isinstance(opt.coordinates, gpnat.Natural)
    opt.minimize(model.training_loss_closure((X, Y), compile=False), model.q)
    np.testing.assert_allclose(model.elbo((X, Y)), sgpr.elbo(), rtol=1e-8)


@pytest.mark.parametrize("whiten", [True, False], ids=["whitened", "unwhitened"])
def test_natural_coordinates_are_exact_in_one_step_from_every_storage(rng, parametrisation, whiten):
    model, data, sgpr = _gaussian_problem(rng, L=2, whiten=whiten, noise=0.1, parametrisation=parametrisation)
    model.q.assign_mean_cholesky(*random_meanchol(rng, M, 2))
    for closed_form in (True, False):
        start = [v.numpy().copy() for v in model.q.xi]
        opt = gpnat.NaturalGradient(1.0, coordinates="natural", closed_form=closed_form)
        opt.minimize(model.training_loss_closure(data, compile=False), model.q)
        np.testing.assert_allclose(model.elbo(data), sgpr.elbo(), rtol=1e-8)
        for v, b in zip(model.q.xi, start):
            v.assign(b)


SIGNED_FACTORS = [gpnat.MeanCholesky(), gpnat.MeanPrecisionCholesky()]


def _flip_columns(model, signs):
    """Store the same q(u) with the factor's columns (and so its diagonal) multiplied by ``signs`` [M]."""
    factor = model.q.xi[1]
    factor.assign(factor.numpy() * signs[None, None, :])


@pytest.mark.parametrize("storage", SIGNED_FACTORS, ids=[type(p).__name__ for p in SIGNED_FACTORS])
@pytest.mark.parametrize("coordinates", COORDINATES, ids=COORDINATE_IDS)
@pytest.mark.parametrize("closed_form", [True, False], ids=["closed-form", "autodiff"])
def test_a_factor_with_negative_diagonal_steps_as_its_positive_twin(rng, storage, coordinates, closed_form):
    """L and L diag(±1) store the same q(u) (gpflow's q_sqrt may hold either): the step must not care."""
    Mt, L = 6, 2
    X, Y = regression_data(rng, N=20, L=L)
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Bernoulli(), X[:Mt].copy(),
                       num_latent_gps=L, parametrisation=storage)
    model.q.assign_mean_cholesky(*random_meanchol(rng, Mt, L, scale=0.5, jitter=0.7))
    data = (X, (Y > 0).astype(float))
    start = [v.numpy().copy() for v in model.q.xi]
    results = []
    for signs in (np.ones(Mt), np.array([1.0, -1.0, -1.0, 1.0, -1.0, 1.0])):
        for v, b in zip(model.q.xi, start):
            v.assign(b)
        _flip_columns(model, signs)
        assert bool(model.q.is_valid())
        opt = gpnat.NaturalGradient(0.3, coordinates=coordinates, closed_form=closed_form)
        opt.minimize(model.training_loss_closure(data, compile=False), model.q)
        mean, factor = (t.numpy() for t in model.q.mean_cholesky())
        results.append((mean, factor @ np.swapaxes(factor, 1, 2)))
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("storage", SIGNED_FACTORS, ids=[type(p).__name__ for p in SIGNED_FACTORS])
@pytest.mark.parametrize("closed_form", [True, False], ids=["closed-form", "autodiff"])
def test_natural_gradient_at_a_factor_with_negative_diagonal_is_its_twins_flipped(rng, storage, closed_form):
    """With L = L₊ D the chain rule gives ∇_L = ∇_{L₊} D and natgrad_L = natgrad_{L₊} D, on every route."""
    Mt, L = 5, 2
    xi = [np.asarray(t) for t in storage.from_meanchol(*random_meanchol(rng, Mt, L, scale=0.5))]
    g1, g2 = rng.normal(size=(Mt, L)), np.tril(rng.normal(size=(L, Mt, Mt)))
    D = np.array([1.0, -1.0, -1.0, 1.0, -1.0])
    twin = natural_gradient(storage, xi, [g1, g2], closed_form=closed_form)
    flipped = natural_gradient(storage, [xi[0], xi[1] * D], [g1, g2 * D], closed_form=closed_form)
    np.testing.assert_allclose(flipped[0], twin[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(flipped[1], twin[1].numpy() * D, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("storage", SIGNED_FACTORS, ids=[type(p).__name__ for p in SIGNED_FACTORS])
def test_one_natural_step_from_a_factor_with_negative_diagonal_is_the_sgpr_optimum(rng, storage):
    model, data, sgpr = _gaussian_problem(rng, L=2, noise=0.1, parametrisation=storage)
    model.q.assign_mean_cholesky(*random_meanchol(rng, M, 2))
    _flip_columns(model, np.array([-1.0, 1.0, -1.0, -1.0, 1.0]))
    gpnat.NaturalGradient(1.0).minimize(model.training_loss_closure(data, compile=False), model.q)
    np.testing.assert_allclose(model.elbo(data), sgpr.elbo(), rtol=1e-8)


def _natural_change_rate(model, data, gamma, coordinates=gpnat.Natural()):
    """(θ(after a step of size γ) − θ(before)) / γ, restoring q(u) afterwards."""
    before = [v.numpy().copy() for v in model.q.xi]
    theta0 = [t.numpy() for t in model.q.natural()]
    opt = gpnat.NaturalGradient(gamma, coordinates=coordinates)
    opt.minimize(model.training_loss_closure(data, compile=False), model.q)
    theta1 = [t.numpy() for t in model.q.natural()]
    for v, b in zip(model.q.xi, before):
        v.assign(b)
    return [(b - a) / gamma for a, b in zip(theta0, theta1)]


@pytest.mark.parametrize("coordinates", COORDINATES, ids=COORDINATE_IDS)
def test_every_storage_and_coordinates_move_along_the_same_natural_direction(rng, parametrisation, coordinates):
    """A small step changes θ by −γ ∂L/∂η, with ∂L/∂η = θ − θ* known in closed form (Gaussian)."""
    model, data, _ = _gaussian_problem(rng, L=2, parametrisation=parametrisation, noise=0.5)
    model.q.assign_mean_cholesky(*random_meanchol(rng, M, 2, scale=0.3, jitter=0.8))
    theta_star = _optimal_natural(model, data)
    theta = [t.numpy() for t in model.q.natural()]
    dL_deta = [t - s for t, s in zip(theta, theta_star)]
    gamma = 1e-5  # Richardson extrapolation removes the O(γ) term of the finite difference
    r1 = _natural_change_rate(model, data, gamma, coordinates)
    r2 = _natural_change_rate(model, data, gamma / 2, coordinates)
    for a, b, g in zip(r1, r2, dL_deta):
        np.testing.assert_allclose(2 * b - a, -g, rtol=1e-5, atol=1e-6 * np.abs(g).max())


def test_non_conjugate_direction_matches_expectation_gradient(rng, parametrisation):
    """Bernoulli: the θ change rate equals −∂L/∂η taken by autodiff in an η-stored model."""
    X, Y = regression_data(rng, N=25)
    Y = (Y > 0).astype(float)
    Z = X[:4].copy()
    q = random_meanchol(rng, 4, 1, scale=0.3, jitter=0.7)
    ref = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Bernoulli(), Z, parametrisation="expectation")
    ref.q.assign_mean_cholesky(*q)
    with tf.GradientTape() as tape:
        loss = ref.training_loss((X, Y))
    dL_deta = [g.numpy() for g in tape.gradient(loss, ref.q.xi)]
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Bernoulli(), Z, parametrisation=parametrisation)
    model.q.assign_mean_cholesky(*q)
    r1 = _natural_change_rate(model, (X, Y), 1e-4)
    r2 = _natural_change_rate(model, (X, Y), 5e-5)
    for a, b, g in zip(r1, r2, dL_deta):
        np.testing.assert_allclose(2 * b - a, -g, rtol=1e-5, atol=1e-6 * np.abs(g).max())


def _free_coordinates(parametrisation, M):
    """Index map from free coordinates to the flat (ξ₁, ξ₂), and the embedding matrix E (full = E free)."""
    symmetric = isinstance(parametrisation, (gpnat.Natural, gpnat.Expectation))
    rows, cols = np.tril_indices(M)
    n_full = M + M * M
    n_free = M + len(rows)
    E = np.zeros((n_full, n_free))
    E[:M, :M] = np.eye(M)
    for k, (i, j) in enumerate(zip(rows, cols)):
        E[M + i * M + j, M + k] = 1.0
        if symmetric and i != j:
            E[M + j * M + i, M + k] = 1.0
    return E, rows, cols


@pytest.mark.parametrize("closed_form", [True, False], ids=["closed-form", "autodiff"])
def test_natural_gradient_equals_inverse_fisher_times_gradient(rng, parametrisation, closed_form):
    """natgrad_ξ = F_ξ⁻¹ ∇_ξ L, with F_ξ = (∂θ/∂ξ)ᵀ (∂η/∂ξ) built explicitly (tiny M, test only)."""
    Mt = 3
    X, Y = regression_data(rng, N=15)
    Y = (Y > 0).astype(float)
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Bernoulli(), X[:Mt].copy(),
                       parametrisation=parametrisation)
    model.q.assign_mean_cholesky(*random_meanchol(rng, Mt, 1, scale=0.5, jitter=0.6))
    p = model.q.parametrisation
    E, rows, cols = _free_coordinates(p, Mt)
    xi0 = np.concatenate([model.q.xi[0].numpy().ravel(), model.q.xi[1].numpy().ravel()])

    def unflatten(flat):
        return tf.reshape(flat[:Mt], (Mt, 1)), tf.reshape(flat[Mt:], (1, Mt, Mt))

    free = tf.constant(np.linalg.lstsq(E, xi0, rcond=None)[0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(free)
        xi = unflatten(tf.linalg.matvec(tf.constant(E), free))
        theta = tf.concat([tf.reshape(t, [-1]) for t in p.to_natural(*xi)], 0)
        eta = tf.concat([tf.reshape(t, [-1]) for t in p.to_expectation(*xi)], 0)
    J_theta = tape.jacobian(theta, free).numpy()
    J_eta = tape.jacobian(eta, free).numpy()
    fisher = J_theta.T @ J_eta
    np.testing.assert_allclose(fisher, fisher.T, rtol=1e-8, atol=1e-10)

    with tf.GradientTape() as tape2:
        loss = model.training_loss((X, Y))
    grads = tape2.gradient(loss, model.q.xi)
    grad_full = np.concatenate([g.numpy().ravel() for g in grads])
    expected = np.linalg.solve(fisher, E.T @ grad_full)  # chain rule: ∇_free = Eᵀ ∇_full
    ours = natural_gradient(p, model.q.xi, grads, closed_form=closed_form)
    ours_free = np.concatenate([ours[0].numpy().ravel(), ours[1].numpy()[0][rows, cols]])
    np.testing.assert_allclose(ours_free, expected, rtol=1e-7, atol=1e-9 * np.abs(expected).max())


def test_jvp_by_reverse_twice_equals_explicit_jacobian(rng):
    x = tf.constant(rng.normal(size=4))
    A = tf.constant(rng.normal(size=(3, 4)))
    def fn(v):
        return (tf.sin(tf.linalg.matvec(A, v)) * tf.reduce_sum(v**2),)
    tangent = rng.normal(size=4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = fn(x)[0]
    J = tape.jacobian(out, x).numpy()
    (jvp,) = jvp_by_reverse_twice(fn, [x], [tf.constant(tangent)])
    np.testing.assert_allclose(jvp, J @ tangent, rtol=1e-12)


def test_bernoulli_elbo_increases_every_step(rng, parametrisation):
    X, Y = regression_data(rng, N=40)
    Y = (Y > 0).astype(float)
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Bernoulli(), X[:M].copy(),
                       parametrisation=parametrisation)
    opt = gpnat.NaturalGradient(0.1)
    loss_fn = model.training_loss_closure((X, Y), compile=True)
    elbos = [model.elbo((X, Y)).numpy()]
    for _ in range(15):
        opt.minimize(loss_fn, model.q)
        elbos.append(model.elbo((X, Y)).numpy())
    assert np.all(np.diff(elbos) > 0), elbos
    assert elbos[-1] - elbos[0] > 1.0


def test_one_loss_evaluation_per_step_and_only_q_changes(rng):
    model, data, _ = _gaussian_problem(rng, parametrisation="mean_cholesky")
    closure = model.training_loss_closure(data, compile=False)
    calls = []

    def loss_fn():
        calls.append(1)
        return closure()

    hyper = [v.numpy().copy() for v in model.trainable_variables if all(v is not w for w in model.q.xi)]
    before = [v.numpy().copy() for v in model.q.xi]
    returned = gpnat.NaturalGradient(0.1).minimize(loss_fn, model.q)
    assert len(calls) == 1
    np.testing.assert_allclose(returned, closure.__wrapped__() if hasattr(closure, "__wrapped__") else returned)
    after = [v.numpy() for v in model.q.xi]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(after, before))
    for v, h in zip([v for v in model.trainable_variables if all(v is not w for w in model.q.xi)], hyper):
        np.testing.assert_array_equal(v.numpy(), h)


def test_compiled_step_equals_eager_step(rng, parametrisation):
    results = []
    for compiled in (False, True):
        r = np.random.default_rng(3)
        model, data, _ = _gaussian_problem(r, L=2, parametrisation=parametrisation)
        model.q.assign_mean_cholesky(*random_meanchol(r, M, 2, scale=0.3, jitter=0.8))
        opt = gpnat.NaturalGradient(0.3)
        loss_fn = model.training_loss_closure(data, compile=False)
        def step():
            return (opt.minimize(loss_fn, model.q))
        step = tf.function(step) if compiled else step
        for _ in range(3):
            step()
        results.append([v.numpy() for v in model.q.mean_cholesky()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_several_q_at_once(rng):
    m1, d1, s1 = _gaussian_problem(rng, L=1, noise=0.2)
    m2, d2, s2 = _gaussian_problem(rng, L=2, noise=0.3)
    def loss_fn():
        return m1.training_loss(d1) + m2.training_loss(d2)
    gpnat.NaturalGradient(1.0).minimize(loss_fn, [m1.q, m2.q])
    np.testing.assert_allclose(m1.elbo(d1), s1.elbo(), rtol=1e-8)
    np.testing.assert_allclose(m2.elbo(d2), s2.elbo(), rtol=1e-8)


@pytest.mark.parametrize("gamma", [0.0, -0.1, float("nan"), float("inf"), "big", None, True])
def test_invalid_gamma_is_refused(gamma):
    with pytest.raises((ValueError, TypeError), match="gamma|positive"):
        gpnat.NaturalGradient(gamma)


@pytest.mark.parametrize("max_tries", [0, 2.5, None, "8", True])
def test_invalid_max_tries_is_refused_by_name(max_tries):
    with pytest.raises(ValueError, match="max_tries must be a positive integer"):
        gpnat.NaturalGradient(0.1, max_tries=max_tries)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), 0.0])
def test_invalid_gamma_from_a_schedule_is_refused_and_state_kept(rng, bad):
    model, data, _ = _gaussian_problem(rng)
    before = [v.numpy().copy() for v in model.q.xi]
    opt = gpnat.NaturalGradient(lambda t: tf.constant(bad, tf.float64))
    with pytest.raises(ValueError, match="gamma"):
        opt.minimize(model.training_loss_closure(data, compile=False), model.q)
    for v, b in zip(model.q.xi, before):
        np.testing.assert_array_equal(v.numpy(), b)


@pytest.mark.parametrize(
    "schedule, error, match",
    [
        (lambda t: tf.constant([0.1, 0.2], tf.float64), ValueError, r"must return a scalar, got shape \[2\]"),
        (lambda t: "fast", TypeError, "must return a number, got 'fast'"),
        (lambda t: True, TypeError, "must return a number, got True"),
    ],
    ids=["vector", "text", "bool"],
)
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_schedule_that_returns_no_scalar_number_is_refused_and_state_kept(rng, schedule, error, match, compiled):
    model, data, _ = _gaussian_problem(rng)
    before = [v.numpy().copy() for v in model.q.xi]
    opt = gpnat.NaturalGradient(schedule)
    step = lambda: opt.minimize(model.training_loss_closure(data, compile=False), model.q)  # noqa: E731
    with pytest.raises(error, match=match):
        tf.function(step)() if compiled else step()
    for v, b in zip(model.q.xi, before):
        np.testing.assert_array_equal(v.numpy(), b)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), 0.0])
def test_a_compiled_step_refused_for_its_gamma_leaves_the_optimizer_as_it_was(rng, bad):
    """Compiled, a γ that is not positive and finite fails an assertion; the optimizer's step count and
    records must not move either (the schedule's next γ depends on the count), as eagerly."""
    model, data, _ = _gaussian_problem(rng)
    value = tf.Variable(0.5, dtype=tf.float64)
    opt = gpnat.NaturalGradient(lambda t: tf.identity(value))
    loss_fn = model.training_loss_closure(data, compile=False)
    step = tf.function(lambda: opt.minimize(loss_fn, model.q))
    step()  # a good step: count 1
    value.assign(bad)
    state = [v.numpy().copy() for v in [*model.q.xi, *opt.variables]]
    for _ in range(4):  # nothing orders independent updates after the check but the check's own outputs
        with pytest.raises(tf.errors.InvalidArgumentError, match="gamma must be a positive finite number"):
            step()
        for v, b in zip([*model.q.xi, *opt.variables], state):
            np.testing.assert_array_equal(v.numpy(), b)
    assert opt.iterations.numpy() == 1


@pytest.mark.parametrize("scale", [-1.0, 0.0, float("nan"), float("inf")])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_scale_on_gamma_that_is_not_positive_and_finite_is_refused(rng, scale, compiled):
    """apply_gradients(scale=...) takes a positive factor: a negative one would step uphill (reported as
    accepted), zero not at all."""
    model, data, _ = _gaussian_problem(rng)
    opt = gpnat.NaturalGradient(0.5)
    with tf.GradientTape() as tape:
        loss = model.training_loss(data)
    grads = tape.gradient(loss, model.q.xi)
    state = [v.numpy().copy() for v in [*model.q.xi, *opt.variables]]
    if compiled:
        step = tf.function(lambda s: opt.apply_gradients(model.q, grads, scale=s))
        with pytest.raises(tf.errors.InvalidArgumentError, match="scale .* must be a positive finite number"):
            step(tf.constant(scale, tf.float64))
    else:
        with pytest.raises(ValueError, match=r"scale \(the factor on gamma\) must be a positive finite number"):
            opt.apply_gradients(model.q, grads, scale=scale)
    for v, b in zip([*model.q.xi, *opt.variables], state):
        np.testing.assert_array_equal(v.numpy(), b)
    opt.apply_gradients(model.q, grads, scale=0.5)  # a valid factor: γ·scale
    assert opt.last_gamma.numpy() == 0.25


def test_mistaken_calls_are_refused_by_name_and_state_kept(rng):
    """No q(u), a loss that is no tensor, or a gradient count that does not match the q(u)s."""
    model, data, _ = _gaussian_problem(rng)
    opt = gpnat.NaturalGradient(0.5)
    state = [v.numpy().copy() for v in [*model.q.xi, *opt.variables]]
    with pytest.raises(ValueError, match="at least one q\\(u\\) to step"):
        opt.minimize(model.training_loss_closure(data, compile=False), [])
    with pytest.raises(TypeError, match="loss_fn must return a scalar tensor .* got 1.0"):
        opt.minimize(lambda: 1.0, model.q)
    with tf.GradientTape() as tape:
        loss = model.training_loss(data)
    grads = tape.gradient(loss, model.q.xi)
    with pytest.raises(ValueError, match="3 gradients for 1 q\\(u\\)"):
        opt.apply_gradients(model.q, [*grads, grads[0]])
    with pytest.raises(FloatingPointError, match="the loss is nan at q\\(u\\)'s current state, before any step"):
        opt.minimize(lambda: model.training_loss(data) * np.nan, model.q)
    for v, b in zip([*model.q.xi, *opt.variables], state):
        np.testing.assert_array_equal(v.numpy(), b)


def test_a_schedule_returning_a_python_float_gives_that_gamma_exactly(rng):
    model, data, _ = _gaussian_problem(rng)
    opt = gpnat.NaturalGradient(lambda t: 0.1)
    opt.minimize(model.training_loss_closure(data, compile=False), model.q)
    assert opt.last_gamma.numpy() == 0.1  # not float32's 0.10000000149


def test_a_loss_that_is_not_a_scalar_is_refused_and_state_kept(rng):
    model, data, _ = _gaussian_problem(rng)
    before = [v.numpy().copy() for v in model.q.xi]
    loss = model.training_loss_closure(data, compile=False)
    with pytest.raises(ValueError, match=r"scalar loss, got shape \[3\]"):
        gpnat.NaturalGradient(0.5).minimize(lambda: loss() * tf.ones(3, tf.float64), model.q)
    for v, b in zip(model.q.xi, before):
        np.testing.assert_array_equal(v.numpy(), b)


def _overconfident(rng, parametrisation):
    """A start with S₀ = 10⁻² I, from which a γ = 3 step in θ or η leaves the PD cone."""
    model, data, _ = _gaussian_problem(rng, parametrisation=parametrisation, noise=0.5)
    q_mu = 0.1 * rng.normal(size=(M, 1))
    model.q.assign_mean_cholesky(q_mu, 0.1 * np.eye(M)[None])
    return model, data


@pytest.mark.parametrize("parametrisation", [gpnat.Natural(), gpnat.Expectation()], ids=["Natural", "Expectation"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_invalid_step_is_rejected_and_state_kept(rng, parametrisation, compiled):
    model, data = _overconfident(rng, parametrisation)
    loss_fn = model.training_loss_closure(data, compile=False)
    # the plain step really is invalid
    with tf.GradientTape() as tape:
        loss = loss_fn()
    xi = [tf.convert_to_tensor(v) for v in model.q.xi]
    d = natural_gradient(parametrisation, xi, tape.gradient(loss, model.q.xi))
    plain = [x - 3.0 * di for x, di in zip(xi, d)]
    assert not bool(parametrisation.is_valid(*plain))
    assert not np.all(np.isfinite(parametrisation.to_meanchol(*plain)[1]))

    before = [v.numpy().copy() for v in model.q.xi]
    opt = gpnat.NaturalGradient(3.0, max_tries=1)
    step = tf.function(lambda: opt.minimize(loss_fn, model.q)) if compiled else (lambda: opt.minimize(loss_fn, model.q))
    with pytest.raises((NaturalGradientError, tf.errors.InvalidArgumentError), match="no valid natural-gradient step"):
        step()
    for v, b in zip(model.q.xi, before):
        np.testing.assert_array_equal(v.numpy(), b)
    assert not bool(opt.last_accepted.numpy())

    # with halving allowed the same step succeeds at a smaller gamma
    opt = gpnat.NaturalGradient(3.0, max_tries=8)
    opt.minimize(loss_fn, model.q)
    assert bool(opt.last_accepted.numpy())
    assert opt.last_rejections.numpy() >= 1
    assert opt.last_gamma.numpy() == pytest.approx(3.0 / 2 ** opt.last_rejections.numpy())
    assert bool(model.q.is_valid())


@pytest.mark.parametrize("L", [1, 3])
def test_closed_form_equals_automatic_route(rng, parametrisation, L):
    """A parametrisation's closed-form natural gradient is only an optimisation of the autodiff route."""
    Mt = 7
    xi = [np.asarray(t) for t in parametrisation.from_meanchol(*random_meanchol(rng, Mt, L, scale=0.7))]
    g1, g2 = rng.normal(size=(Mt, L)), rng.normal(size=(L, Mt, Mt))
    grads = [g1, g2 + np.swapaxes(g2, 1, 2)]
    automatic = natural_gradient(parametrisation, xi, grads, closed_form=False)
    closed = natural_gradient(parametrisation, xi, grads, closed_form=True)
    for a, c in zip(automatic, closed):
        np.testing.assert_allclose(c, a, rtol=1e-9, atol=1e-11 * np.abs(a.numpy()).max())


@pytest.mark.parametrize("coordinates", COORDINATES[1:], ids=COORDINATE_IDS[1:])
@pytest.mark.parametrize("L", [1, 3])
def test_closed_form_steps_equal_the_general_route(rng, parametrisation, coordinates, L):
    """Every storage × coordinates step with closed forms equals convert -> autodiff step -> convert back."""
    Mt = 6
    X, Y = regression_data(rng, N=20, L=L)
    Y = (Y > 0).astype(float)
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Bernoulli(), X[:Mt].copy(),
                       num_latent_gps=L, parametrisation=parametrisation)
    model.q.assign_mean_cholesky(*random_meanchol(rng, Mt, L, scale=0.5, jitter=0.7))
    start = [v.numpy().copy() for v in model.q.xi]
    results = []
    for closed_form in (True, False):
        for v, b in zip(model.q.xi, start):
            v.assign(b)
        opt = gpnat.NaturalGradient(0.3, coordinates=coordinates, closed_form=closed_form)
        opt.minimize(model.training_loss_closure((X, Y), compile=False), model.q)
        results.append([t.numpy() for t in model.q.mean_cholesky()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("Mt", [60, gpnat.gaussian.SPLIT_FROM + 10], ids=["xla-transposes", "split"])
def test_closed_form_step_of_a_large_q_equals_the_general_route(rng, Mt):
    """At M = 60 the mean/Cholesky step transposes through XLA (gaussian.TRANSPOSE_BY_XLA), and from
    gaussian.SPLIT_FROM inducing points on it works on triangular blocks."""
    from gpnat.natgrad import convert, natural_direction
    from gpnat.parametrisations import MeanCholesky, Natural

    xi = [tf.constant(t) for t in random_meanchol(rng, Mt, 1, scale=0.5, jitter=0.7)]
    grads = [tf.constant(rng.normal(size=(Mt, 1))),
             tf.constant(np.tril(rng.normal(size=(1, Mt, Mt))) / Mt)]
    gamma = 0.3
    closed = MeanCholesky().natural_step(Natural(), *xi, *grads)(gamma)
    zeta, direction = natural_direction(MeanCholesky(), xi, grads, Natural(), closed_form=False)
    general = convert(Natural(), MeanCholesky(), [z - gamma * d for z, d in zip(zeta, direction)])
    for c, g in zip(closed, general):
        np.testing.assert_allclose(c.numpy(), g.numpy(), rtol=1e-8, atol=1e-10 * np.abs(g.numpy()).max())


@pytest.mark.parametrize("closed_form", [True, False], ids=["closed-form", "autodiff"])
def test_expectation_gradient_and_natural_tangent_factor_the_natural_gradient(rng, parametrisation, closed_form):
    """natgrad_ξ = natural_tangent(expectation_gradient(∇_ξ)), each factor checked against the other route."""
    from gpnat.natgrad import expectation_gradient, natural_tangent

    Mt = 5
    xi = [tf.constant(t) for t in parametrisation.from_meanchol(*random_meanchol(rng, Mt, 2, scale=0.6))]
    g1, g2 = rng.normal(size=(Mt, 2)), rng.normal(size=(2, Mt, Mt))
    grads = [tf.constant(g1), tf.constant(g2 + np.swapaxes(g2, 1, 2))]
    dL_deta = expectation_gradient(parametrisation, xi, grads, closed_form)
    reference = expectation_gradient(parametrisation, xi, grads, not closed_form)
    for a, b in zip(dL_deta, reference):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11 * np.abs(b.numpy()).max())
    composed = natural_tangent(parametrisation, xi, dL_deta, closed_form)
    for a, b in zip(composed, natural_gradient(parametrisation, xi, grads, closed_form=False)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11 * np.abs(b.numpy()).max())


def test_unknown_coordinates_are_refused():
    with pytest.raises(TypeError, match="parametrisation"):
        gpnat.NaturalGradient(0.1, coordinates="polar")


def test_an_optimizer_made_before_switching_to_float32_steps_a_float32_model(rng):
    """The optimizer's own variables keep the float of when it was made; a float32 model's step
    takes the model's float, exactly as with an optimizer made after the switch (before, the step
    wrote q(u) and then raised a dtype error)."""
    early = gpnat.NaturalGradient(1.0)  # made under float64
    X, Y = regression_data(rng, N=40)
    with gpflow.config.as_context(gpflow.config.Config(float=np.float32, jitter=1e-5)):
        states = []
        for opt in (early, gpnat.NaturalGradient(1.0)):
            model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.1), X[:6].copy(), num_data=40)
            opt.minimize(model.training_loss_closure((X, Y)), model.q)
            states.append([v.numpy() for v in model.q.xi])
            assert model.q.xi[0].dtype == tf.float32 and np.isfinite(model.elbo((X, Y)).numpy())
        for a, b in zip(*states):
            np.testing.assert_array_equal(a, b)
        assert early.last_gamma.dtype == tf.float64 and float(early.last_gamma.numpy()) == 1.0
        model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.1), X[:6].copy(), num_data=40)
        history = gpnat.train(model, (X, Y), iterations=3, natgrad=early, progress=False)
        assert history.gamma == [1.0, 1.0, 1.0] and np.isfinite(model.elbo((X, Y)).numpy())
