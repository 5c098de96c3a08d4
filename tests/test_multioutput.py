"""gpnat.SVGP with gpflow's multi-output kernels and inducing variables.

Cases (P outputs, L latent GPs, M inducing points each):

* ``shared``: SharedIndependent kernel + SharedIndependentInducingVariables (L = P);
* ``separate``: SeparateIndependent kernel + SeparateIndependentInducingVariables, a
  different kernel and different Z per output (L = P);
* ``separate-kernels-shared-z``: SeparateIndependent kernel + SharedIndependentInducingVariables;
* ``lmc-shared-z`` / ``lmc-separate-z``: LinearCoregionalization (f = W g, W [P, L], P != L)
  with shared or separate inducing variables for the L latent GPs.

Checked: the ELBO (full batch and minibatch) and ``predict_f`` equal gpflow's SVGP
for the same q(u), for every parametrisation, whitened and not; for the independent
cases one natural step with γ = 1 lands on the sum of the per-output SGPR bounds
(the ELBO separates over independent latent GPs); for coregionalization (not
separable) natural steps converge to the optimum that L-BFGS finds, a step is damped
block Jacobi on the means (checked against the ELBO's quadratic form built here), so
γ = 1 diverges where four latent GPs are strongly mixed, and ``gpnat.train`` improves the ELBO.
"""
import copy

import gpflow
import numpy as np
import pytest
import tensorflow as tf
from check_shapes import disable_check_shapes
from gpflow import inducing_variables as iv
from gpflow import kernels

import gpnat

from .conftest import random_meanchol

N, M, D, P, L_LMC = 30, 5, 2, 3, 2
NOISE = 0.1

INDEPENDENT = ["shared", "separate", "separate-kernels-shared-z"]
COREGIONALIZATION = ["lmc-shared-z", "lmc-separate-z"]
CASES = INDEPENDENT + COREGIONALIZATION
WHITEN = pytest.mark.parametrize("whiten", [True, False], ids=["whitened", "unwhitened"])


@pytest.fixture
def no_shape_checks():
    """Run the test with check_shapes off (restored afterwards).

    gpflow's separate-independent conditional runs a ``tf.map_fn`` over the
    latent GPs whose body is autograph-converted on every eager call, shape
    checks included: about 0.5 s per ELBO on two cores, 7 times the cost
    without them. The large batteries below switch them off;
    :func:`test_shape_checks_pass` runs every case once with them on.
    """
    with disable_check_shapes():
        yield


def _se(variance, lengthscales):
    return kernels.SquaredExponential(variance=variance, lengthscales=np.asarray(lengthscales, float))


def _problem(rng, case):
    """(X [N, D], Y [N, P], kernel, inducing variable, L, per-output [(kernel, Z)] or None)."""
    X = rng.uniform(-2.0, 2.0, size=(N, D))
    F = np.stack([np.sin(X @ np.array([1.0, 0.5 + 0.5 * p]) + p) for p in range(P)], axis=1)
    Y = F + np.sqrt(NOISE) * rng.normal(size=(N, P))
    Zs = [X[rng.choice(N, M, replace=False)].copy() for _ in range(P)]
    own = [_se(1.0 + 0.3 * p, [0.7 + 0.3 * p, 1.4 - 0.2 * p]) for p in range(P)]
    if case == "shared":
        base = _se(1.3, [0.8, 1.5])
        kernel = kernels.SharedIndependent(base, output_dim=P)
        inducing = iv.SharedIndependentInducingVariables(iv.InducingPoints(Zs[0]))
        return X, Y, kernel, inducing, P, [(base, Zs[0])] * P
    if case == "separate":
        kernel = kernels.SeparateIndependent(own)
        inducing = iv.SeparateIndependentInducingVariables([iv.InducingPoints(Z) for Z in Zs])
        return X, Y, kernel, inducing, P, list(zip(own, Zs))
    if case == "separate-kernels-shared-z":
        kernel = kernels.SeparateIndependent(own)
        inducing = iv.SharedIndependentInducingVariables(iv.InducingPoints(Zs[0]))
        return X, Y, kernel, inducing, P, [(k, Zs[0]) for k in own]
    if case in COREGIONALIZATION:
        W = rng.normal(size=(P, L_LMC))
        kernel = kernels.LinearCoregionalization([_se(1.0, [1.0, 1.0]), _se(0.7, [0.6, 1.1])], W=W)
        if case == "lmc-shared-z":
            inducing = iv.SharedIndependentInducingVariables(iv.InducingPoints(Zs[0]))
        else:
            inducing = iv.SeparateIndependentInducingVariables([iv.InducingPoints(Z) for Z in Zs[:L_LMC]])
        return X, Y, kernel, inducing, L_LMC, None
    raise ValueError(case)


def _prior_meanchol(model):
    """q(u) = p(u): (0, I) whitened, (0, chol Kuu) unwhitened."""
    L = model.q.num_latent_gps
    if model.whiten:
        return np.zeros((M, L)), np.tile(np.eye(M), (L, 1, 1))
    Kuu = gpflow.covariances.Kuu(model.inducing_variable, model.kernel, jitter=gpflow.default_jitter())
    Kuu = np.broadcast_to(Kuu.numpy(), (L, M, M))
    return np.zeros((M, L)), np.linalg.cholesky(Kuu)


# ----------------------------------------------------------------- against gpflow.models.SVGP
_REFERENCE = {}


def _reference(case, whiten, X, Y, kernel, inducing, L, q):
    """gpflow's SVGP values for a case; the same for every parametrisation, so computed once.

    The ``rng`` fixture is reseeded for every test, so ``(case, whiten)`` fixes the
    problem and q(u); the stored q(u) is compared to make sure.
    """
    key = (case, whiten)
    if key not in _REFERENCE:
        ref = gpflow.models.SVGP(kernel, gpflow.likelihoods.Gaussian(NOISE), inducing, num_latent_gps=L,
                                 whiten=whiten, q_mu=q[0], q_sqrt=q[1], num_data=N)
        _REFERENCE[key] = dict(
            q=q, elbo=ref.elbo((X, Y)).numpy(), minibatch=ref.elbo((X[5:15], Y[5:15])).numpy(),
            **{f"predict_f{fc:d}{foc:d}": [t.numpy() for t in ref.predict_f(X[:7], full_cov=fc, full_output_cov=foc)]
               for fc in (False, True) for foc in (False, True)},
        )
    values = _REFERENCE[key]
    for a, b in zip(q, values["q"]):
        np.testing.assert_array_equal(a, b)
    return values


@WHITEN
@pytest.mark.parametrize("case", CASES)
def test_elbo_and_predictions_match_gpflow(rng, case, whiten, parametrisation, no_shape_checks):
    X, Y, kernel, inducing, L, _ = _problem(rng, case)
    q = random_meanchol(rng, M, L, scale=0.5)
    ref = _reference(case, whiten, X, Y, kernel, inducing, L, q)
    ours = gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(NOISE), inducing, num_latent_gps=L, whiten=whiten,
                      parametrisation=parametrisation, num_data=N)
    ours.q.assign_mean_cholesky(*q)
    mu, sqrt = ours.q.mean_cholesky()
    assert mu.shape == (M, L) and sqrt.shape == (L, M, M)
    np.testing.assert_allclose(ours.elbo((X, Y)), ref["elbo"], rtol=1e-10)
    # a minibatch, scaled by N / B as in gpflow
    np.testing.assert_allclose(ours.elbo((X[5:15], Y[5:15])), ref["minibatch"], rtol=1e-10)
    shapes = {(False, False): (7, P), (False, True): (7, P, P), (True, False): (P, 7, 7), (True, True): (7, P, 7, P)}
    if not isinstance(parametrisation, gpnat.MeanCholesky):  # full_cov: once per case is enough
        shapes = {k: v for k, v in shapes.items() if not k[0]}
    for (full_cov, full_output_cov), shape in shapes.items():  # gpflow supports all four here
        mean, cov = ours.predict_f(X[:7], full_cov=full_cov, full_output_cov=full_output_cov)
        assert mean.shape == (7, P) and cov.shape == shape
        for a, b in zip((mean, cov), ref[f"predict_f{full_cov:d}{full_output_cov:d}"]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_shape_checks_pass(rng, case):
    """gpnat's check_shapes annotations hold for multi-output models (the reference runs without)."""
    X, Y, kernel, inducing, L, _ = _problem(rng, case)
    q_mu, q_sqrt = random_meanchol(rng, M, L, scale=0.5)
    likelihood = gpflow.likelihoods.Gaussian(NOISE)
    ours = gpnat.SVGP(kernel, likelihood, inducing, num_latent_gps=L, q_mu=q_mu, q_sqrt=q_sqrt, num_data=N)
    ref = gpflow.models.SVGP(kernel, likelihood, inducing, num_latent_gps=L, q_mu=q_mu, q_sqrt=q_sqrt, num_data=N)
    elbo = ours.elbo((X, Y))
    mean, cov = ours.predict_f(X[:4], full_output_cov=True)
    assert mean.shape == (4, P) and cov.shape == (4, P, P)
    with disable_check_shapes():
        np.testing.assert_allclose(elbo, ref.elbo((X, Y)), rtol=1e-10)
        np.testing.assert_allclose(cov, ref.predict_f(X[:4], full_output_cov=True)[1], rtol=1e-9, atol=1e-12)


def test_wrong_number_of_latent_gps_is_an_error(rng):
    X, Y, kernel, inducing, L, _ = _problem(rng, "lmc-shared-z")
    model = gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(NOISE), inducing, num_latent_gps=L)
    with pytest.raises(ValueError, match="q_mu must have shape"):
        model.q.assign_mean_cholesky(*random_meanchol(rng, M, P))
    with pytest.raises(ValueError, match=f"num_latent_gps = {P} but the LinearCoregionalization kernel has {L}"):
        gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(NOISE), inducing, num_latent_gps=P)


@pytest.mark.parametrize("case", CASES)
def test_num_latent_gps_defaults_to_the_kernels(rng, case):
    """A multi-output kernel's own L is the default (a single latent GP would silently model P outputs)."""
    X, Y, kernel, inducing, L, _ = _problem(rng, case)
    model = gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(NOISE), inducing)
    assert model.num_latent_gps == L == kernel.num_latent_gps
    assert model.predict_f(X[:3])[0].shape == (3, P)


# ------------------------------------------------- independent latent GPs: one step is exact
def _sum_of_sgpr_bounds(X, Y, parts):
    return sum(
        float(gpflow.models.SGPR((X, Y[:, p:p + 1]), k, Z, noise_variance=NOISE).elbo())
        for p, (k, Z) in enumerate(parts)
    )


@pytest.mark.parametrize("parametrisation", [gpnat.MeanCholesky(), gpnat.Natural()], ids=["MeanCholesky", "Natural"])
@WHITEN
@pytest.mark.parametrize("case", INDEPENDENT)
def test_one_natural_step_lands_on_the_sum_of_sgpr_bounds(rng, case, whiten, parametrisation, no_shape_checks):
    """With L independent latent GPs and a Gaussian likelihood the ELBO is a sum over outputs,
    so one step of NaturalGradient(1.0) reaches Σ_p SGPR_p, and q(u_p) is SGPR's q(u) for output p."""
    X, Y, kernel, inducing, L, parts = _problem(rng, case)
    model = gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(NOISE), inducing, num_latent_gps=L,
                       whiten=whiten, parametrisation=parametrisation)
    model.q.assign_mean_cholesky(*random_meanchol(rng, M, L))
    bound = _sum_of_sgpr_bounds(X, Y, parts)
    assert bound - float(model.elbo((X, Y))) > 10.0
    hypers = [v.numpy().copy() for v in kernel.trainable_variables + model.likelihood.trainable_variables]
    gpnat.NaturalGradient(1.0).minimize(model.training_loss_closure((X, Y), compile=False), model.q)
    np.testing.assert_allclose(float(model.elbo((X, Y))), bound, rtol=1e-8)
    for v, h in zip(kernel.trainable_variables + model.likelihood.trainable_variables, hypers):
        np.testing.assert_array_equal(v.numpy(), h)
    # q(u_p) (or q(v_p), v_p = Luu_p⁻¹ u_p) is SGPR's optimal q(u) for output p
    q_mu, q_sqrt = (t.numpy() for t in model.q.mean_cholesky())
    for p, (k, Z) in enumerate(parts):
        mu, cov = (t.numpy() for t in gpflow.models.SGPR((X, Y[:, p:p + 1]), k, Z, noise_variance=NOISE).compute_qu())
        if whiten:
            Luu = np.linalg.cholesky(k(Z).numpy() + gpflow.default_jitter() * np.eye(M))
            mu = np.linalg.solve(Luu, mu)
            cov = np.linalg.solve(Luu, np.linalg.solve(Luu, cov).T)
        np.testing.assert_allclose(q_mu[:, p:p + 1], mu, rtol=1e-6, atol=1e-8 * np.abs(mu).max())
        np.testing.assert_allclose(q_sqrt[p] @ q_sqrt[p].T, cov, rtol=1e-6, atol=1e-8 * np.abs(cov).max())


# ------------------------------------------------------ coregionalization: not separable
def _lbfgs_over_q(kernel, inducing, L, whiten, X, Y, start):
    """gpflow's SVGP with only q_mu and q_sqrt trained by scipy's L-BFGS; returns (ELBO, result)."""
    ref = gpflow.models.SVGP(kernel, gpflow.likelihoods.Gaussian(NOISE), inducing, num_latent_gps=L,
                             whiten=whiten, q_mu=start[0], q_sqrt=start[1])
    result = gpflow.optimizers.Scipy().minimize(
        ref.training_loss_closure((X, Y)),
        [ref.q_mu.unconstrained_variable, ref.q_sqrt.unconstrained_variable],
        options=dict(maxiter=2000, ftol=1e-15, gtol=1e-12),
    )
    return float(ref.elbo((X, Y))), result


@pytest.mark.parametrize("case, whiten", [("lmc-shared-z", True), ("lmc-separate-z", False)],
                         ids=["lmc-shared-z-whitened", "lmc-separate-z-unwhitened"])
def test_coregionalization_natural_steps_converge_to_the_lbfgs_optimum(rng, case, whiten, no_shape_checks):
    """Steps of γ = 1 update every latent GP given the others' current means (a Jacobi
    sweep): the first is not the optimum (the ELBO couples the latent GPs through W),
    but they converge to the optimum over q(u) found by L-BFGS on gpflow's SVGP."""
    X, Y, kernel, inducing, L, _ = _problem(rng, case)
    model = gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(NOISE), inducing, num_latent_gps=L, whiten=whiten)
    start = _prior_meanchol(model)
    model.q.assign_mean_cholesky(*start)
    lbfgs_elbo, result = _lbfgs_over_q(kernel, inducing, L, whiten, X, Y, start)
    assert result.success, result.message

    opt = gpnat.NaturalGradient(1.0)
    step = tf.function(lambda: opt.minimize(model.training_loss_closure((X, Y), compile=False), model.q))

    def elbo():
        return float(model.elbo((X, Y)))

    start_elbo = elbo()
    step()
    first = elbo()
    assert start_elbo < first < lbfgs_elbo - 1e-2  # an improvement, but not the optimum
    for _ in range(39):
        step()
    final = elbo()
    assert bool(opt.last_accepted.numpy()) and opt.iterations.numpy() == 40
    np.testing.assert_allclose(final, lbfgs_elbo, rtol=1e-9)


@pytest.mark.parametrize("case, batch_size", [("lmc-shared-z", None), ("lmc-separate-z", 10)],
                         ids=["lmc-shared-z-full-batch", "lmc-separate-z-minibatch"])
def test_coregionalization_train_increases_the_elbo(rng, case, batch_size, no_shape_checks):
    X, Y, kernel, inducing, L, _ = _problem(rng, case)
    model = gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(1.0), inducing, num_latent_gps=L, num_data=N)
    W0 = kernel.W.numpy().copy()
    start = float(model.elbo((X, Y)))
    history = gpnat.train(model, (X, Y), iterations=40, batch_size=batch_size, progress=False, seed=1)
    end = float(model.elbo((X, Y)))
    # W mixes the latent GPs, so a step is damped block Jacobi: on the full data the default is
    # γ = 1/L, alternating (benchmarks/MIXING.md); on minibatches the warm-up, fused
    if batch_size is None:
        assert history.mode == "alternating" and history.gamma == [1.0 / L] * 40
    else:
        assert history.mode == "fused" and history.gamma[0] < 0.01  # the warm-up
    assert len(history) == 40 and history.recoveries == 0
    assert np.all(np.isfinite(history.elbo))
    assert np.isfinite(end) and end > start + 10.0
    assert not np.allclose(kernel.W.numpy(), W0)  # Adam moved the mixing matrix too
    mean, var = model.predict_f(X[:5])
    assert mean.shape == (5, P) and np.all(np.isfinite(var)) and np.all(var.numpy() > 0)


# ------------------------------------------- coregionalization: a step is damped block Jacobi
L_MIX, P_MIX, NOISE_MIX = 4, 5, 0.01


def _mixing_problem(rng):
    """Four latent GPs that W mixes strongly (f = W g, W [5, 4]), shared Z, a small noise."""
    X = rng.uniform(-2.0, 2.0, size=(N, D))
    W = 0.2 * np.eye(P_MIX, L_MIX) + 0.8 * rng.uniform(0.5, 1.0, size=(P_MIX, L_MIX))
    G = np.stack([np.sin((k + 1) * X[:, 0] + X[:, 1]) for k in range(L_MIX)], axis=1)
    Y = G @ W.T + np.sqrt(NOISE_MIX) * rng.normal(size=(N, P_MIX))
    kernel = kernels.LinearCoregionalization([_se(1.0, [1.0, 1.0]) for _ in range(L_MIX)], W=W)
    inducing = iv.SharedIndependentInducingVariables(iv.InducingPoints(X[rng.choice(N, M, replace=False)].copy()))
    return X, Y, kernel, inducing


def _mean_system(kernel, Z, X, Y):
    """A ``[LM, LM]`` and b ``[LM]``, built here from the model's definition: for whitened means v
    (the columns of q_mu stacked), the ELBO is −½ vᵀAv + bᵀv + terms free of v, with
    A = I + σ⁻² Σ_p (W_p· ⊗ a)(W_p· ⊗ a)ᵀ, a_l = chol(K_uu,l)⁻¹ k_l(Z, X)."""
    W = kernel.W.numpy()
    a = []
    for k in kernel.kernels:
        Lu = np.linalg.cholesky(k(Z).numpy() + gpflow.default_jitter() * np.eye(M))
        a.append(np.linalg.solve(Lu, k(Z, X).numpy()))  # [M, N]
    A, b = np.eye(L_MIX * M), np.zeros(L_MIX * M)
    for i in range(L_MIX):
        rows = slice(i * M, (i + 1) * M)
        b[rows] = a[i] @ (Y @ W[:, i]) / NOISE_MIX
        for j in range(L_MIX):
            A[rows, j * M:(j + 1) * M] += (W[:, i] @ W[:, j]) / NOISE_MIX * a[i] @ a[j].T
    return A, b


def test_coregionalization_step_is_damped_block_jacobi_and_diverges_at_gamma_one(rng, no_shape_checks):
    """With the covariances at their optimum (S_l = A_ll⁻¹), a natural step of any γ moves the means
    by −γ D⁻¹(Av − b), D = blockdiag(A_ll): damped block Jacobi, which converges if and only if
    γ < 2 / λ_max(D⁻¹A), and λ_max(D⁻¹A) ≤ L. Here λ_max > 2: steps of γ = 1 diverge, steps of
    γ = 1/L raise the ELBO at every step."""
    X, Y, kernel, inducing = _mixing_problem(rng)
    model = gpnat.SVGP(kernel, gpflow.likelihoods.Gaussian(NOISE_MIX), inducing, num_latent_gps=L_MIX)
    A, b = _mean_system(kernel, inducing.inducing_variable.Z.numpy(), X, Y)
    block = [slice(i * M, (i + 1) * M) for i in range(L_MIX)]
    blocks = [A[s, s] for s in block]
    Dinv = np.zeros_like(A)
    for s, A_ii in zip(block, blocks):
        Dinv[s, s] = np.linalg.inv(A_ii)  # a test-only reference
    v0 = rng.normal(size=(M, L_MIX))
    sqrt0 = np.stack([np.linalg.cholesky(np.linalg.inv(A_ii)) for A_ii in blocks])

    def vec(q_mu):
        return q_mu.T.reshape(-1)

    for gamma in (1.0, 1.0 / L_MIX):
        model.q.assign_mean_cholesky(v0, sqrt0)
        gpnat.NaturalGradient(gamma).minimize(model.training_loss_closure((X, Y), compile=False), model.q)
        q_mu, q_sqrt = (t.numpy() for t in model.q.mean_cholesky())
        expected = vec(v0) - gamma * Dinv @ (A @ vec(v0) - b)
        np.testing.assert_allclose(vec(q_mu), expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())
        np.testing.assert_allclose(q_sqrt @ np.swapaxes(q_sqrt, 1, 2), sqrt0 @ np.swapaxes(sqrt0, 1, 2),
                                   rtol=1e-10, atol=1e-14)

    mu = np.linalg.eigvals(Dinv @ A).real  # = the eigenvalues of D^-1/2 A D^-1/2: real and positive
    assert mu.min() > 0 and mu.max() <= L_MIX * (1 + 1e-10)
    assert mu.max() > 2.0  # so γ = 1 diverges ...
    assert np.abs(1.0 - mu / L_MIX).max() < 1.0  # ... and γ = 1/L converges

    def elbos(gamma, steps):
        model.q.assign_mean_cholesky(v0, sqrt0)
        opt = gpnat.NaturalGradient(gamma)
        loss = model.training_loss_closure((X, Y), compile=False)
        out = [float(model.elbo((X, Y)))]
        for _ in range(steps):
            opt.minimize(loss, model.q)
            out.append(float(model.elbo((X, Y))))
        return np.array(out)

    diverging = elbos(1.0, 10)
    assert np.all(np.diff(diverging) < 0) and diverging[-1] < 1e6 * diverging[0]  # −2.4e4 to −1.6e13
    converging = elbos(1.0 / L_MIX, 10)
    assert np.all(np.diff(converging) > 0)


def test_train_defaults_to_gamma_one_over_l_alternating_for_mixed_latent_gps(rng, no_shape_checks):
    """Where a kernel mixes L latent GPs, train's default on the full data is γ = 1/L, alternating
    (benchmarks/MIXING.md: γ = 1, fused, the default before, collapsed in 4 of 8 runs with L = 6).
    On the four mixed latent GPs above, default-built (gpflow's likelihood variance 1), it ends
    above that old default at equal iterations, without a rollback."""
    X, Y, kernel, inducing = _mixing_problem(rng)

    def trained(**kwargs):
        model = gpnat.SVGP(copy.deepcopy(kernel), gpflow.likelihoods.Gaussian(), copy.deepcopy(inducing),
                           num_latent_gps=L_MIX)
        history = gpnat.train(model, (X, Y), iterations=30, progress=False, **kwargs)
        return history, float(model.elbo((X, Y)))

    history, elbo = trained()
    assert history.mode == "alternating" and history.gamma == [1.0 / L_MIX] * 30
    assert history.recoveries == 0 and elbo > history.elbo[-1] > history.elbo[0]
    old, old_elbo = trained(natgrad=gpnat.NaturalGradient(1.0), fused=True)
    assert old.mode == "fused" and elbo > old_elbo
