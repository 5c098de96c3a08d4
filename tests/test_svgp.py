"""gpnat.SVGP against gpflow.models.SVGP, for every parametrisation and many likelihoods."""
import contextlib

import gpflow
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from check_shapes import disable_check_shapes

import gpnat
from gpnat.variational import InvalidGaussianError

from .conftest import make_kernel, random_meanchol, regression_data

N, M, D = 30, 6, 2


def _likelihood_cases(rng):
    X = rng.uniform(-2, 2, size=(N, D))
    f = np.sin(2 * X[:, :1]) + 0.5 * X[:, 1:]
    Z = X[:M].copy()
    cases = {}
    cases["gaussian"] = (make_kernel(), gpflow.likelihoods.Gaussian(0.2), Z, 1, f + 0.1 * rng.normal(size=(N, 1)))
    cases["gaussian-L3"] = (make_kernel(), gpflow.likelihoods.Gaussian(0.2), Z, 3,
                            np.hstack([f, -f, 2 * f]) + 0.1 * rng.normal(size=(N, 3)))
    cases["bernoulli"] = (make_kernel(), gpflow.likelihoods.Bernoulli(), Z, 1, (f > 0).astype(float))
    cases["student-t"] = (make_kernel(), gpflow.likelihoods.StudentT(scale=0.3, df=3.0), Z, 1,
                          f + 0.3 * rng.standard_t(3.0, size=(N, 1)))
    cases["poisson"] = (make_kernel(), gpflow.likelihoods.Poisson(), Z, 1,
                        rng.poisson(np.exp(f)).astype(float))
    cases["multiclass"] = (make_kernel(), gpflow.likelihoods.MultiClass(3), Z, 3,
                           np.digitize(f, [-0.5, 0.5]).astype(float))
    het_kernel = gpflow.kernels.SeparateIndependent([make_kernel(), make_kernel()])
    het_lik = gpflow.likelihoods.HeteroskedasticTFPConditional(
        distribution_class=tfp.distributions.Normal, scale_transform=tfp.bijectors.Exp()
    )
    het_Z = gpflow.inducing_variables.SharedIndependentInducingVariables(
        gpflow.inducing_variables.InducingPoints(Z)
    )
    cases["heteroscedastic"] = (het_kernel, het_lik, het_Z, 2, f + 0.1 * np.abs(X[:, :1]) * rng.normal(size=(N, 1)))
    return X, cases


CASES = ["gaussian", "gaussian-L3", "bernoulli", "student-t", "poisson", "multiclass", "heteroscedastic"]


@pytest.mark.parametrize("whiten", [True, False], ids=["whitened", "unwhitened"])
@pytest.mark.parametrize("case", CASES)
def test_elbo_and_predictions_match_gpflow(parametrisation, case, whiten, rng):
    """ELBO, minibatch ELBO, predictions and log densities equal gpflow's.

    The heteroscedastic case goes through gpflow's separate-independent
    conditional, whose shape checks cost about 1 s per eager call (see
    ``no_shape_checks`` in test_multioutput.py): they stay on for mean/Cholesky
    storage, whitened, and are off for the other storages' runs of that case.
    """
    checked = case != "heteroscedastic" or (type(parametrisation).__name__ == "MeanCholesky" and whiten)
    with contextlib.nullcontext() if checked else disable_check_shapes():
        _assert_matches_gpflow(parametrisation, case, whiten, rng)


def _assert_matches_gpflow(parametrisation, case, whiten, rng):
    X, cases = _likelihood_cases(rng)
    kernel, likelihood, Z, L, Y = cases[case]
    q_mu, q_sqrt = random_meanchol(rng, M, L, scale=0.5)
    ours = gpnat.SVGP(kernel, likelihood, Z, num_latent_gps=L, whiten=whiten,
                      parametrisation=parametrisation, num_data=N)
    ours.q.assign_mean_cholesky(q_mu, q_sqrt)
    ref = gpflow.models.SVGP(kernel, likelihood, Z, num_latent_gps=L, whiten=whiten,
                             q_mu=q_mu, q_sqrt=q_sqrt, num_data=N)

    def evaluate(model):
        values = dict(elbo=model.elbo((X, Y)), loss=model.training_loss((X, Y)),
                      minibatch=model.elbo((X[:10], Y[:10])),  # scaled by N / B, as in gpflow
                      log_density=model.predict_log_density((X[:7], Y[:7])))
        for full_cov in (False, True):
            values[f"f{full_cov:d}"] = model.predict_f(X[:7], full_cov=full_cov)
        if case != "heteroscedastic":  # gpflow's heteroscedastic likelihood has no predict_mean_and_var for L=2 f
            values["y"] = model.predict_y(X[:7])
        return values

    got = evaluate(ours)
    with disable_check_shapes():  # gpflow's own annotations are gpflow's to check
        want = evaluate(ref)
    assert got.keys() == want.keys()
    for name in ("elbo", "loss", "minibatch"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, err_msg=name)
    np.testing.assert_allclose(got["log_density"], want["log_density"], rtol=1e-9)
    for name in set(got) - {"elbo", "loss", "minibatch", "log_density"}:
        for a, b in zip(got[name], want[name]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=name)


def _gradients(model, data, variables):
    with tf.GradientTape() as tape:
        loss = model.training_loss(data)
    return [g.numpy() for g in tape.gradient(loss, variables)]


@pytest.mark.parametrize("whiten", [True, False], ids=["whitened", "unwhitened"])
@pytest.mark.parametrize("case", ["gaussian-L3", "bernoulli", "heteroscedastic", "large-M", "large-M-shared"])
def test_hyperparameter_gradients_match_gpflow(case, whiten, rng):
    """K_uu is factorised by gaussian.cholesky where one K_uu serves all latent GPs: same loss, same gradients
    with respect to the kernel, the likelihood and Z (large-M: the gradient's blocks are used)."""
    if case == "large-M-shared":
        M_ = gpnat.gaussian.cholesky_split_from(tf.float64) + 8
        X = rng.uniform(-3, 3, size=(300, D))
        Y = np.hstack([np.sin(2 * X[:, :1]), np.cos(X[:, 1:])]) + 0.1 * rng.normal(size=(300, 2))
        kernel = gpflow.kernels.SharedIndependent(
            gpflow.kernels.SquaredExponential(variance=1.3, lengthscales=[0.2, 0.3]), output_dim=2)
        Z = gpflow.inducing_variables.SharedIndependentInducingVariables(
            gpflow.inducing_variables.InducingPoints(X[:M_].copy()))
        likelihood, L = gpflow.likelihoods.Gaussian(0.1), 2
    elif case == "large-M":
        M_ = gpnat.gaussian.cholesky_split_from(tf.float64) + 8
        X = rng.uniform(-3, 3, size=(300, D))
        Y = np.sin(2 * X[:, :1]) + 0.1 * rng.normal(size=(300, 1))
        kernel = gpflow.kernels.SquaredExponential(variance=1.3, lengthscales=[0.2, 0.3])  # K_uu well conditioned
        likelihood, Z, L = gpflow.likelihoods.Gaussian(0.1), X[:M_].copy(), 1
    else:
        X, cases = _likelihood_cases(rng)
        kernel, likelihood, Z, L, Y = cases[case]
        M_ = M
    q_mu, q_sqrt = random_meanchol(rng, M_, L, scale=0.5)
    ours = gpnat.SVGP(kernel, likelihood, Z, num_latent_gps=L, whiten=whiten, num_data=len(X))
    ours.q.assign_mean_cholesky(q_mu, q_sqrt)
    ref = gpflow.models.SVGP(kernel, likelihood, Z, num_latent_gps=L, whiten=whiten,
                             q_mu=q_mu, q_sqrt=q_sqrt, num_data=len(X))
    assert (ours._shared_kuu_kernel() is None) == (case == "heteroscedastic")
    shared = list(kernel.trainable_variables + likelihood.trainable_variables)
    Z_ours = list(ours.inducing_variable.trainable_variables)
    Z_ref = list(ref.inducing_variable.trainable_variables)
    got = _gradients(ours, (X, Y), shared + Z_ours)
    expected = _gradients(ref, (X, Y), shared + Z_ref)
    np.testing.assert_allclose(ours.training_loss((X, Y)), ref.training_loss((X, Y)), rtol=1e-10)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9 * np.abs(b).max())


def test_training_loss_closure_compiled_matches_eager(rng):
    X, Y = regression_data(rng)
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.1), X[:M].copy(),
                       parametrisation=gpnat.Natural())
    eager = model.training_loss_closure((X, Y), compile=False)()
    compiled = model.training_loss_closure((X, Y), compile=True)()
    np.testing.assert_allclose(eager, compiled, rtol=1e-12)


def _model(rng, L=1):
    X, Y = regression_data(rng, L=L)
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.1), X[:M].copy(), num_latent_gps=L)
    return model, X, Y


@pytest.mark.parametrize(
    "mangle, match",
    [
        (lambda X, Y: (X[:, :1], Y), "input dimensions"),
        (lambda X, Y: (X, Y[:-1]), "same number of rows|N"),
        (lambda X, Y: (X[:, 0], Y), r"X must have shape \[N, D\]|shape mismatch"),
        (lambda X, Y: (np.where(X > 1.5, np.nan, X), Y), "X contains NaN or inf"),
        (lambda X, Y: (X, np.where(Y > 0.5, np.inf, Y)), "Y contains NaN or inf"),
    ],
)
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_bad_data_is_a_clear_error(rng, mangle, match, compiled):
    model, X, Y = _model(rng)
    bad = mangle(X, Y)
    before = [v.numpy().copy() for v in model.trainable_variables]
    fn = model.training_loss_closure(bad, compile=compiled)
    with pytest.raises(Exception, match=match):
        fn()
    with pytest.raises(Exception, match=match):
        gpnat.NaturalGradient(0.5).minimize(fn, model.q)
    for v, b in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_inducing_inputs_with_nan_or_inf_are_a_clear_error(bad):
    Z = np.zeros((3, D))
    Z[1, 0] = bad
    with pytest.raises(ValueError, match="the inducing inputs Z contain NaN or inf"):
        gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(), Z)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"Z": np.zeros((0, D))}, r"Z must have shape \[M, D\] with M ≥ 1, got \[0, 2\]"),
        ({"Z": np.zeros(3)}, r"Z must have shape \[M, D\] with M ≥ 1, got \[3\]"),
        ({"num_latent_gps": 0}, "num_latent_gps must be a positive integer, got 0"),
        ({"num_latent_gps": 1.5}, "num_latent_gps must be a positive integer, got 1.5"),
        ({"num_data": "many"}, "num_data must be a positive integer, got 'many'"),
        ({"num_data": 0}, "num_data must be a positive integer, got 0"),
    ],
    ids=["no-inducing-points", "Z-not-2d", "no-latent-gps", "fractional-latent-gps", "num_data-text", "num_data-0"],
)
def test_a_model_without_inducing_points_or_latent_gps_is_refused(kwargs, match):
    """An SVGP with M = 0 or L = 0 used to build and report an ELBO (0.0 for L = 0)."""
    Z = kwargs.pop("Z", np.zeros((3, D)))
    with pytest.raises(ValueError, match=match):
        gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(), Z, **kwargs)


def test_q_is_exposed_and_parametrisation_named(rng):
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(), np.zeros((3, D)),
                       parametrisation="expectation", num_latent_gps=2)
    assert isinstance(model.parametrisation, gpnat.Expectation)
    q_mu, q_sqrt = model.q.mean_cholesky()
    assert q_mu.shape == (3, 2) and q_sqrt.shape == (2, 3, 3)
    assert all(any(v is w for w in model.trainable_variables) for v in model.q.xi)


@pytest.mark.parametrize("model_class", ["svgp", "vgp"])
def test_predict_log_density_checks_the_test_targets(rng, model_class):
    """NaN in Y* and labels outside the likelihood's support are errors that name them, not NaN or
    wrong densities; good test data give gpflow's numbers (compared in the model-equality tests)."""
    X = rng.normal(size=(20, 2))
    Y = (X[:, :1] > 0).astype(float) + (X[:, 1:] > 0)  # labels 0, 1, 2
    likelihood = gpflow.likelihoods.MultiClass(3)
    if model_class == "svgp":
        model = gpnat.SVGP(make_kernel(), likelihood, X[:5].copy(), num_latent_gps=3)
    else:
        model = gpnat.VGP((X, Y), make_kernel(), likelihood, num_latent_gps=3)
    assert np.all(np.isfinite(model.predict_log_density((X, Y)).numpy()))
    with pytest.raises(ValueError, match="Y contains NaN or inf"):
        model.predict_log_density((X, np.where(Y > 1, np.nan, Y)))
    with pytest.raises(ValueError, match=r"MultiClass likelihood.*values 3"):
        model.predict_log_density((X, Y + 1))


def test_softmax_takes_its_class_labels_as_integers(rng):
    """gpflow's Softmax reads labels with a sparse cross-entropy (integers only); gpnat holds targets
    in the default float and hands Softmax integer labels: the same Monte-Carlo ELBO and log
    densities as gpflow's SVGP on integer labels (same random draws), and train runs. Training a
    gpflow model with Softmax is refused by name, the model unchanged."""
    X = rng.uniform(-3.0, 3.0, size=(60, 1))
    labels = np.digitize(np.sin(2 * X), [-0.5, 0.5])  # 0, 1, 2 in one column
    Z, q = X[:6].copy(), random_meanchol(rng, 6, 3, scale=0.5)
    ref = gpflow.models.SVGP(gpflow.kernels.Matern32(), gpflow.likelihoods.Softmax(3), Z, num_latent_gps=3,
                             q_mu=q[0], q_sqrt=q[1], num_data=60)
    model = gpnat.SVGP(gpflow.kernels.Matern32(), gpflow.likelihoods.Softmax(3), Z, num_latent_gps=3,
                       num_data=60)
    model.q.assign_mean_cholesky(*q)

    def seeded(fn):
        tf.random.set_seed(7)
        return fn().numpy()

    data = (X, labels.astype(np.int64))
    np.testing.assert_allclose(seeded(lambda: model.elbo((X, labels.astype(float)))),
                               seeded(lambda: ref.elbo(data)), rtol=1e-12)
    np.testing.assert_allclose(seeded(lambda: model.predict_log_density((X[:5], labels[:5].astype(float)))),
                               seeded(lambda: ref.predict_log_density((X[:5], data[1][:5]))), rtol=1e-12)
    history = gpnat.train(model, (X, labels.astype(float)), iterations=3, progress=False)
    assert len(history) == 3 and np.all(np.isfinite(history.elbo))
    before = [v.numpy().copy() for v in ref.trainable_variables]
    with pytest.raises(ValueError, match="Softmax likelihood reads integer class labels"):
        gpnat.train(ref, data, iterations=3, progress=False)
    for v, b in zip(ref.trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_a_compiled_step_on_data_with_nan_raises_before_it_changes_anything(rng):
    """The in-graph data check gates what is computed from the data: a step written gpflow's way in a
    tf.function, on an X with NaN in a column the kernel does not read, raises and changes neither
    q(u) nor the optimizer (it used to apply the step in about half the calls)."""
    X, Y = regression_data(rng, N=N)
    X[3, 1] = np.nan
    model = gpnat.SVGP(gpflow.kernels.SquaredExponential(active_dims=[0]), gpflow.likelihoods.Gaussian(0.1),
                       np.column_stack([np.linspace(-1, 1, M), np.zeros(M)]), num_data=N)
    _compiled_step_is_refused(model, gpnat.NaturalGradient(1.0), X, Y, "X contains NaN or inf", calls=6)


def _compiled_step_is_refused(model, opt, X, Y, match, calls):
    """A natural step written gpflow's way in a tf.function raises ``match`` in each of ``calls`` calls,
    leaving q(u) and the optimizer bitwise as they were; returns the traced step."""
    step = tf.function(lambda x, y: opt.minimize(lambda: model.training_loss((x, y)), model.q))
    state = [v.numpy().copy() for v in [*model.q.xi, *opt.variables]]
    for _ in range(calls):
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            step(tf.constant(X), tf.constant(Y))
        for v, b in zip([*model.q.xi, *opt.variables], state):
            np.testing.assert_array_equal(v.numpy(), b)
    return step


def test_compiled_code_checks_targets_against_the_likelihood_before_it_changes_anything(rng):
    """Compiled (gpflow's default training_loss_closure, a user's tf.function), targets outside the
    likelihood's support are an error with the eager words, and a step on them changes neither q(u)
    nor the optimizer; they used to give a finite loss and an accepted step."""
    X = rng.uniform(-2, 2, (40, 1))
    Y = rng.integers(1, 3, (40, 1)).astype(float)  # labels 1 and 2: 2 is no Bernoulli label
    Z = np.linspace(-2, 2, 5)[:, None]
    model = gpnat.SVGP(gpflow.kernels.SquaredExponential(), gpflow.likelihoods.Bernoulli(), Z)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Y does not fit the Bernoulli likelihood: it takes"):
        model.training_loss_closure((X, Y))()
    before = model.q.xi[0].numpy().copy()
    step = _compiled_step_is_refused(model, gpnat.NaturalGradient(0.1), X, Y,
                                     "Y does not fit the Bernoulli likelihood", calls=4)
    step(tf.constant(X), tf.constant(Y - 1.0))  # labels 0 and 1 fit: the same traced step runs
    assert not np.array_equal(model.q.xi[0].numpy(), before)
    counts = gpnat.SVGP(gpflow.kernels.SquaredExponential(), gpflow.likelihoods.Poisson(), Z)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Y does not fit the Poisson likelihood: it takes counts"):
        tf.function(counts.elbo)((X, -Y))


def test_predictions_from_a_q_set_without_checks_are_refused_by_name(parametrisation, rng):
    """A q(u) made invalid behind the checks (a variable's assign, gpflow's multiple_assign) gives a named
    error from predict_f, predict_y and predict_log_density, eagerly and compiled, where it gave NaN."""
    X, Y = regression_data(rng, N=N)
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.1), X[:M].copy(), num_data=N,
                       parametrisation=parametrisation)
    assert np.all(np.isfinite(model.predict_f(X[:3])[0].numpy()))
    model.q.xi[1].assign(np.full(model.q.xi[1].shape, np.nan))
    for predict in (lambda: model.predict_f(X[:3]), lambda: model.predict_y(X[:3]),
                    lambda: model.predict_log_density((X[:3], Y[:3]))):
        with pytest.raises(InvalidGaussianError, match="q\\(u\\) is not a valid Gaussian: its mean/Cholesky view"):
            predict()
    with pytest.raises(tf.errors.InvalidArgumentError, match="q\\(u\\) is not a valid Gaussian"):
        tf.function(model.predict_f)(X[:3])


@pytest.fixture
def grouping(monkeypatch):
    """Columns grouped at any size, over ``threads`` threads (3 unless set)."""
    from gpnat.models import svgp
    monkeypatch.setattr(svgp, "GROUP_MIN_COLUMNS", 4)
    monkeypatch.setattr(svgp, "GROUP_MIN_WORK", 0.0)
    threads = {"n": 3}
    monkeypatch.setattr(svgp, "_threads", lambda: threads["n"])
    calls = []
    grouped = svgp._grouped_conditional
    monkeypatch.setattr(svgp, "_grouped_conditional", lambda *a: calls.append(a[-1]) or grouped(*a))
    return threads, calls


@pytest.mark.parametrize("whiten", [True, False], ids=["whitened", "unwhitened"])
@pytest.mark.parametrize("L", [1, 3])
def test_grouped_columns_give_gpflows_numbers(grouping, whiten, L, rng):
    """K_uf's columns in 3 groups (31 columns: padded to 33): ELBO, every gradient and predict_f as
    without groups (to 1e-12) and as gpflow's SVGP computes them, eagerly and compiled."""
    threads, calls = grouping
    X, Y = regression_data(rng, N=31, L=L)
    Z = X[:7].copy()
    q_mu, q_sqrt = random_meanchol(rng, 7, L, scale=0.5)
    ours = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.2), Z, num_latent_gps=L, whiten=whiten,
                      num_data=100)
    ours.q.assign_mean_cholesky(q_mu, q_sqrt)
    ref = gpflow.models.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.2), Z.copy(), num_latent_gps=L,
                             whiten=whiten, q_mu=q_mu, q_sqrt=q_sqrt, num_data=100)
    ours_vars, ref_vars = ([m.kernel.variance.unconstrained_variable, m.kernel.lengthscales.unconstrained_variable,
                            m.likelihood.variance.unconstrained_variable, m.inducing_variable.Z.unconstrained_variable]
                           for m in (ours, ref))

    def both(model, variables):
        with tf.GradientTape() as tape:
            loss = model.training_loss((X, Y))
        return [loss] + tape.gradient(loss, variables) + list(model.predict_f(X[:13]))

    tol = 1e-12 if whiten else 1e-10
    for run in (lambda m, v: both(m, v), tf.function(lambda m, v: both(m, v))):
        threads["n"] = 3
        calls.clear()
        grouped = run(ours, ours_vars)
        assert calls == [3, 3]  # the ELBO's 31 columns, then predict_f's 13
        threads["n"] = 1  # one thread: no groups
        ungrouped, expected = run(ours, ours_vars), run(ref, ref_vars)
        assert calls == [3, 3]
        for a, b, c in zip(grouped, ungrouped, expected):  # unwhitened: rounding scaled by cond(K_uu)
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b.numpy()).max())
            np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-9 * np.abs(c.numpy()).max())


def test_columns_are_grouped_only_where_it_pays(monkeypatch):
    """Groups only for marginal variances with a full q_sqrt, in float64, on a CPU, from
    GROUP_MIN_COLUMNS columns per group and GROUP_MIN_WORK = M²·N/T, at most one per thread."""
    from gpnat.models import svgp
    monkeypatch.setattr(svgp, "_threads", lambda: 4)
    f64, f32 = tf.zeros([100, 10000], tf.float64), tf.zeros([100, 10000], tf.float32)
    full, diag = tf.zeros([1, 100, 100], tf.float64), tf.zeros([100, 1], tf.float64)
    full200 = tf.zeros([1, 200, 200], tf.float64)
    assert svgp._column_groups(f64, full, full_cov=False) == (1 if tf.config.list_logical_devices("GPU") else 4)
    assert svgp._column_groups(f64, full, full_cov=True) == 1
    assert svgp._column_groups(f64, diag, full_cov=False) == 1
    assert svgp._column_groups(f32, full, full_cov=False) == 1
    assert svgp._column_groups(tf.zeros([200, 1200], tf.float64), full200, False) == 2  # 600 columns a group
    assert svgp._column_groups(tf.zeros([200, 999], tf.float64), full200, False) == 1  # 499 a group
    assert svgp._column_groups(tf.zeros([100, 1200], tf.float64), full, False) == 1  # M²N/T = 6e6
    assert svgp._column_groups(tf.zeros([20, 10000], tf.float64), full, False) == 1  # M²N/T = 1e6
    unknown = tf.function(lambda K: tf.constant(svgp._column_groups(K, full, False)))
    assert unknown.get_concrete_function(tf.TensorSpec([100, None], tf.float64))(f64).numpy() == 1  # N unknown
