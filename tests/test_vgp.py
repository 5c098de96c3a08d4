"""gpnat.VGP against gpflow.models.VGP and GPR, for every parametrisation."""
import dataclasses

import gpflow
import numpy as np
import pytest
import tensorflow as tf

import gpnat

from .conftest import make_kernel, random_meanchol, regression_data

N, D = 30, 2


def _cases(rng):
    X = rng.uniform(-2, 2, size=(N, D))
    f = np.sin(2 * X[:, :1]) + 0.5 * X[:, 1:]
    return X, {
        "gaussian": (gpflow.likelihoods.Gaussian(0.2), 1, f + 0.1 * rng.normal(size=(N, 1))),
        "gaussian-L3": (gpflow.likelihoods.Gaussian(0.2), 3,
                        np.hstack([f, -f, 2 * f]) + 0.1 * rng.normal(size=(N, 3))),
        "bernoulli": (gpflow.likelihoods.Bernoulli(), 1, (f > 0).astype(float)),
        "multiclass": (gpflow.likelihoods.MultiClass(3), 3, np.digitize(f, [-0.5, 0.5]).astype(float)),
    }


def _mean_function():
    return gpflow.mean_functions.Linear(A=[[0.2], [-0.1]], b=[0.3])


@pytest.mark.parametrize("case", ["gaussian", "gaussian-L3", "bernoulli", "multiclass"])
def test_elbo_and_predictions_match_gpflow(parametrisation, case, rng):
    X, cases = _cases(rng)
    likelihood, L, Y = cases[case]
    kernel = make_kernel()
    mean = _mean_function() if L == 1 else None
    q_mu, q_sqrt = random_meanchol(rng, N, L, scale=0.5)
    # MultiClass(3): L = 3 by default, its latent_dim, as in SVGP (gpflow's VGP infers 1 from Y)
    ours = gpnat.VGP((X, Y), kernel, likelihood, mean_function=mean,
                     num_latent_gps=None if case == "multiclass" else L, parametrisation=parametrisation)
    assert ours.num_latent_gps == L
    ours.q.assign_mean_cholesky(q_mu, q_sqrt)
    ref = gpflow.models.VGP((X, Y), kernel, likelihood, mean_function=mean, num_latent_gps=L)
    ref.q_mu.assign(q_mu)
    ref.q_sqrt.assign(q_sqrt)
    np.testing.assert_allclose(ours.elbo(), ref.elbo(), rtol=1e-10)
    np.testing.assert_allclose(ours.training_loss(), ref.training_loss(), rtol=1e-10)
    np.testing.assert_allclose(ours.maximum_log_likelihood_objective(), ref.elbo(), rtol=1e-10)
    Xnew = rng.uniform(-2.5, 2.5, size=(7, D))
    for full_cov in (False, True):
        for a, b in zip(ours.predict_f(Xnew, full_cov=full_cov), ref.predict_f(Xnew, full_cov=full_cov)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    for a, b in zip(ours.predict_y(Xnew), ref.predict_y(Xnew)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.predict_log_density((X[:7], Y[:7])),
                               ref.predict_log_density((X[:7], Y[:7])), rtol=1e-9)


def test_hyperparameter_gradients_match_gpflow_with_the_blocked_cholesky_gradient(rng):
    """N ≥ cholesky_split_from(float64): K is factorised by gaussian.cholesky, whose reverse mode splits into blocks."""
    n = gpnat.gaussian.cholesky_split_from(tf.float64) + 8
    X = rng.uniform(-3, 3, size=(n, D))
    Y = (np.sin(2 * X[:, :1]) > 0).astype(float)
    kernel = gpflow.kernels.SquaredExponential(variance=1.3, lengthscales=[0.2, 0.3])  # K well conditioned
    mean = _mean_function()
    q_mu, q_sqrt = random_meanchol(rng, n, 1, scale=0.5)
    ours = gpnat.VGP((X, Y), kernel, gpflow.likelihoods.Bernoulli(), mean_function=mean)
    ours.q.assign_mean_cholesky(q_mu, q_sqrt)
    ref = gpflow.models.VGP((X, Y), kernel, gpflow.likelihoods.Bernoulli(), mean_function=mean)
    ref.q_mu.assign(q_mu)
    ref.q_sqrt.assign(q_sqrt)
    variables = list(kernel.trainable_variables + mean.trainable_variables)
    gradients = []
    for model in (ours, ref):
        with tf.GradientTape() as tape:
            loss = model.training_loss()
        gradients.append(tape.gradient(loss, variables))
    np.testing.assert_allclose(ours.training_loss(), ref.training_loss(), rtol=1e-10)
    for a, b in zip(*gradients):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9 * np.abs(b).max())


def test_defaults_match_gpflow(rng):
    """q_mu = 0, q_sqrt = I, L inferred from Y's columns, data held in the default float."""
    X, cases = _cases(rng)
    likelihood, _, Y = cases["gaussian-L3"]
    ours = gpnat.VGP((X.astype(np.float32), Y), make_kernel(), likelihood)
    ref = gpflow.models.VGP((X, Y), make_kernel(), likelihood)
    assert ours.num_latent_gps == 3 and ours.num_data == N
    assert all(t.dtype == gpflow.default_float() for t in ours.data)
    assert isinstance(ours.parametrisation, gpnat.MeanCholesky)
    q_mu, q_sqrt = ours.q.mean_cholesky()
    np.testing.assert_array_equal(q_mu, np.zeros((N, 3)))
    np.testing.assert_array_equal(q_sqrt, np.tile(np.eye(N), (3, 1, 1)))
    np.testing.assert_allclose(
        gpnat.VGP((X, Y), make_kernel(), likelihood).elbo(), ref.elbo(), rtol=1e-10
    )


@pytest.mark.parametrize("given", [gpnat.Natural(), gpnat.Natural, "natural"],
                         ids=["instance", "class", "name"])
def test_parametrisation_instance_class_or_name(given, rng):
    X, Y = regression_data(rng, N=10)
    model = gpnat.VGP((X, Y), make_kernel(), gpflow.likelihoods.Gaussian(), parametrisation=given)
    assert isinstance(model.parametrisation, gpnat.Natural)
    assert model.q.parametrisation is model.parametrisation


def _bad(X, Y, what):
    X, Y = X.copy(), Y.copy()
    if what == "X not [N, D]":
        return X[:, 0], Y
    if what == "Y not [N, P]":
        return X, Y[:, 0]
    if what == "rows differ":
        return X, Y[:-1]
    if what == "NaN in X":
        X[3, 1] = np.nan
    if what == "inf in Y":
        Y[5, 0] = np.inf
    return X, Y


@pytest.mark.parametrize("what, message", [
    ("X not [N, D]", r"X must have shape \[N, D\]"),
    ("Y not [N, P]", r"Y must have shape \[N, P\]"),
    ("rows differ", "same number of rows, got 10 and 9"),
    ("NaN in X", "X contains NaN or inf"),
    ("inf in Y", "Y contains NaN or inf"),
])
def test_bad_data_raises_a_clear_value_error(what, message, rng):
    X, Y = regression_data(rng, N=10)
    with pytest.raises(ValueError, match=message):
        gpnat.VGP(_bad(X, Y, what), make_kernel(), gpflow.likelihoods.Gaussian())


def test_diagonal_parametrisation_is_refused(rng):
    X, Y = regression_data(rng, N=10)
    with pytest.raises(ValueError, match="full-covariance"):
        gpnat.VGP((X, Y), make_kernel(), gpflow.likelihoods.Gaussian(), parametrisation="diagonal_mean_std")


def test_predict_f_checks_xnew(rng):
    X, Y = regression_data(rng, N=10)
    model = gpnat.VGP((X, Y), make_kernel(), gpflow.likelihoods.Gaussian())
    with pytest.raises(ValueError, match="Xnew has 3 input dimensions but the training X have 2"):
        model.predict_f(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        model.predict_f(np.full((4, 2), np.nan))
    with pytest.raises(NotImplementedError):
        model.predict_f(X, full_output_cov=True)


def test_predict_log_density_checks_y_as_svgp_does(rng):
    """Y* must have the columns the likelihood takes: gpflow broadcasts a 2-column Y* against one
    output and returns densities of the wrong sum, in the expected shape."""
    X, Y = regression_data(rng, N=10)
    model = gpnat.VGP((X, Y), make_kernel(), gpflow.likelihoods.Gaussian())
    with pytest.raises(ValueError, match="Y has 2 columns but the model has 1 outputs"):
        model.predict_log_density((X[:4], np.hstack([Y[:4], Y[:4]])))
    with pytest.raises(ValueError, match="Y contains NaN or inf"):
        model.predict_log_density((X[:4], np.full((4, 1), np.nan)))
    assert model.predict_log_density((X[:4], Y[:4])).shape == (4,)


def test_data_argument_must_be_the_models_own(rng):
    """What gpnat.train passes: the model's data is accepted, anything else refused."""
    X, Y = regression_data(rng, N=10)
    model = gpnat.VGP((X, Y), make_kernel(), gpflow.likelihoods.Gaussian())
    np.testing.assert_array_equal(model.elbo((X, Y)), model.elbo())
    np.testing.assert_array_equal(model.training_loss((X, Y)), model.training_loss())
    with pytest.raises(ValueError, match=r"X has shape \[5, 2\] but model.data's has \[10, 2\]"):
        model.elbo((X[:5], Y[:5]))
    with pytest.raises(ValueError, match="the Y given differs from model.data"):
        model.training_loss((X, Y + 1))

    loss = tf.function(model.training_loss)  # data as graph inputs: checked when run
    np.testing.assert_allclose(loss((tf.constant(X), tf.constant(Y))), model.training_loss(), rtol=1e-14)
    with pytest.raises(tf.errors.InvalidArgumentError, match="the X given differs from model.data"):
        loss((tf.constant(X + 1), tf.constant(Y)))


def _gpr_and_vgp(parametrisation, L, noise):
    rng = np.random.default_rng(767)
    X, Y = regression_data(rng, N=N, D=D, L=L, noise=0.1)
    vgp = gpnat.VGP((X, Y), make_kernel(), gpflow.likelihoods.Gaussian(noise), mean_function=_mean_function(),
                    parametrisation=parametrisation)
    gpr = gpflow.models.GPR((X, Y), make_kernel(), mean_function=_mean_function(), noise_variance=noise)
    return X, vgp, gpr


def _assert_vgp_is_gpr(X, vgp, gpr, rtol=1e-8, atol=1e-6):
    np.testing.assert_allclose(vgp.elbo(), gpr.log_marginal_likelihood(), rtol=rtol)
    Xnew = np.vstack([X[:5], X[:5] + 0.3])
    for full_cov in (False, True):
        for a, b in zip(vgp.predict_f(Xnew, full_cov=full_cov), gpr.predict_f(Xnew, full_cov=full_cov)):
            np.testing.assert_allclose(a, b, rtol=0, atol=atol)




@pytest.mark.parametrize("start", ["prior", "prior-L3", "small-q_sqrt", "small-q_sqrt-random-mean"])
def test_one_natural_step_of_one_is_gpr(parametrisation, start):
    """gpflow #767: with a Gaussian likelihood, one natural step of γ = 1 on q (hyperparameters
    fixed) gives the exact posterior: ELBO = GPR's log marginal likelihood, predict_f = GPR's.

    VGP's prior covariance at the data is K + εI (ε the jitter), so its exact posterior is
    GPR's with noise σ² + ε, compared here at rtol 1e-8; against GPR with noise σ² the
    gap is ε's own (~2e-5 for ε = 1e-6), see test_same_noise_as_gpr_with_a_tiny_jitter.
    """
    L = 3 if start == "prior-L3" else 1
    noise = 0.01
    X, vgp, gpr = _gpr_and_vgp(parametrisation, L, noise)
    gpr.likelihood.variance.assign(noise + gpflow.config.default_jitter())
    if start.startswith("small"):
        random_mean = start.endswith("random-mean")
        q_mu = np.random.default_rng(1).normal(size=(N, L)) if random_mean else np.zeros((N, L))
        vgp.q.assign_mean_cholesky(q_mu, 1e-3 * np.eye(N)[None])
    assert not np.isclose(vgp.elbo(), gpr.log_marginal_likelihood(), rtol=1e-3)
    kernel_before = vgp.kernel.lengthscales.numpy()

    gpnat.NaturalGradient(1.0).minimize(vgp.training_loss, vgp.q)
    np.testing.assert_array_equal(vgp.kernel.lengthscales.numpy(), kernel_before)
    _assert_vgp_is_gpr(X, vgp, gpr)


def test_same_noise_as_gpr_with_a_tiny_jitter(parametrisation):
    """With ε = 1e-12 the same noise σ² gives GPR's evidence and predictions after one step."""
    config = dataclasses.replace(gpflow.config.config(), jitter=1e-12)
    with gpflow.config.as_context(config):
        X, vgp, gpr = _gpr_and_vgp(parametrisation, 1, 0.01)
        gpnat.NaturalGradient(1.0).minimize(vgp.training_loss, vgp.q)
        _assert_vgp_is_gpr(X, vgp, gpr)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_train_full_batch_with_the_defaults(likelihood, rng):
    """gpnat.train(model, data=(X, Y)): natural steps on q and Adam on the hyperparameters."""
    X, cases = _cases(rng)
    lik, _, Y = cases[likelihood]
    model = gpnat.VGP((X, Y), make_kernel(), lik)
    before = model.elbo().numpy()
    history = gpnat.train(model, data=(X, Y), iterations=20, progress=False)
    after = model.elbo().numpy()
    assert np.isfinite(after) and after > before + 1.0
    assert np.all(np.isfinite(history.elbo)) and history.recoveries == 0
    assert not np.allclose(model.kernel.lengthscales.numpy(), make_kernel().lengthscales.numpy())


def test_train_refuses_data_that_are_not_its_own_before_tracing(rng):
    X, Y = regression_data(rng, N=N)
    model = gpnat.VGP((X, Y), make_kernel(), gpflow.likelihoods.Gaussian())
    with pytest.raises(ValueError, match="full-batch over its own data") as error:
        gpnat.train(model, data=(X[:, :1], Y), iterations=2, progress=False)
    assert "in user code" not in str(error.value)
    with pytest.raises(ValueError, match="the Y given differs from model.data"):
        gpnat.train(model, data=(X, Y + 1.0), iterations=2, progress=False)


def test_train_refuses_minibatches(rng):
    X, Y = regression_data(rng, N=N)
    model = gpnat.VGP((X, Y), make_kernel(), gpflow.likelihoods.Gaussian())
    with pytest.raises(ValueError, match="full-batch"):
        gpnat.train(model, data=(X, Y), iterations=2, batch_size=10, progress=False)


def test_softmax_takes_its_class_labels_as_integers(rng):
    """As for SVGP: VGP hands gpflow's Softmax integer labels, so its Monte-Carlo ELBO and log
    densities equal gpflow's VGP on integer labels (same random draws)."""
    X = rng.uniform(-2.0, 2.0, size=(N, 2))
    labels = np.digitize(np.sin(2 * X[:, :1]), [-0.5, 0.5])  # 0, 1, 2 in one column
    q_mu, q_sqrt = random_meanchol(rng, N, 3, scale=0.5)
    ours = gpnat.VGP((X, labels.astype(float)), make_kernel(), gpflow.likelihoods.Softmax(3), num_latent_gps=3)
    ours.q.assign_mean_cholesky(q_mu, q_sqrt)
    ref = gpflow.models.VGP((X, labels.astype(np.int64)), make_kernel(), gpflow.likelihoods.Softmax(3),
                            num_latent_gps=3)
    ref.q_mu.assign(q_mu)
    ref.q_sqrt.assign(q_sqrt)

    def seeded(fn):
        tf.random.set_seed(7)
        return fn().numpy()

    np.testing.assert_allclose(seeded(ours.elbo), seeded(ref.elbo), rtol=1e-12)
    np.testing.assert_allclose(seeded(lambda: ours.predict_log_density((X[:5], labels[:5].astype(float)))),
                               seeded(lambda: ref.predict_log_density((X[:5], labels[:5].astype(np.int64)))),
                               rtol=1e-12)


def test_predictions_from_a_q_set_without_checks_are_refused_by_name(rng):
    X, cases = _cases(rng)
    likelihood, L, Y = cases["bernoulli"]
    model = gpnat.VGP((X, Y), make_kernel(), likelihood, parametrisation="natural")
    model.q.xi[1].assign(np.eye(N)[None])  # θ₂ = +I: −2θ₂ is not positive definite
    with pytest.raises(gpnat.InvalidGaussianError, match=r"q\(u\) is not a valid Gaussian: .* Natural\(\)"):
        model.predict_f(X[:3])
