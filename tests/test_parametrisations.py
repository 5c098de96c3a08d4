"""The shared battery: every parametrisation in gpnat.parametrisations passes these for free."""
import gpflow
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import gpnat
from gpnat.parametrisations import PARAMETRISATIONS, get_parametrisation

from .conftest import random_meanchol


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), M=st.integers(1, 5), L=st.integers(1, 3))
def test_meanchol_round_trip(parametrisation, seed, M, L):
    q_mu, q_sqrt = random_meanchol(np.random.default_rng(seed), M, L)
    xi = parametrisation.from_meanchol(q_mu, q_sqrt)
    assert bool(parametrisation.is_valid(*xi))
    m2, c2 = parametrisation.to_meanchol(*xi)
    np.testing.assert_allclose(m2, q_mu, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(c2, q_sqrt, rtol=1e-9, atol=1e-10)


def test_natural_and_expectation_views(parametrisation, rng):
    q_mu, q_sqrt = random_meanchol(rng, 4, 2)
    S = q_sqrt @ np.swapaxes(q_sqrt, 1, 2)
    xi = parametrisation.from_meanchol(q_mu, q_sqrt)
    th1, th2 = parametrisation.to_natural(*xi)
    np.testing.assert_allclose(th2, -0.5 * np.linalg.inv(S), rtol=1e-9)
    np.testing.assert_allclose(th1, np.einsum("lij,jl->il", np.linalg.inv(S), q_mu), rtol=1e-9)
    e1, e2 = parametrisation.to_expectation(*xi)
    np.testing.assert_allclose(e2, S + np.einsum("il,jl->lij", q_mu, q_mu), rtol=1e-9)
    # from_natural / from_expectation come back to the same coordinates
    for back in (parametrisation.from_natural(th1, th2), parametrisation.from_expectation(e1, e2)):
        for a, b in zip(back, xi):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_invalid_covariance_is_not_valid(parametrisation):
    """A state whose covariance is not positive definite is reported invalid, without raising."""
    m = np.zeros((3, 1))
    xi = parametrisation.from_meanchol(m, np.eye(3)[None])
    bad = [tf.identity(x) for x in xi]
    bad[1] = bad[1] * np.nan
    assert not bool(parametrisation.is_valid(*bad))


def test_lookup_by_name_and_class():
    for name, cls in PARAMETRISATIONS.items():
        assert get_parametrisation(name) == cls()
        assert get_parametrisation(cls) == cls()
    with pytest.raises(TypeError, match="parametrisation"):
        get_parametrisation("cholesky-ish")


def test_non_positive_definite_states_are_invalid():
    m = np.zeros((2, 1))
    not_pd = np.array([[[1.0, 2.0], [2.0, 1.0]]])
    assert not bool(gpnat.Natural().is_valid(m, -0.5 * not_pd))
    assert not bool(gpnat.Expectation().is_valid(m, not_pd))
    assert not bool(gpnat.MeanCholesky().is_valid(m, np.diag([1.0, 0.0])[None]))


@pytest.mark.parametrize("missing", ["from_meanchol", "to_meanchol"])
def test_a_user_parametrisation_without_a_conversion_says_which(missing):
    """A subclass of gpnat.Parametrisation must define both conversions; one left out is named."""
    methods = dict(names=("q_mu", "q_cov"),
                   to_meanchol=lambda self, m, S: (m, tf.linalg.cholesky(S)),
                   from_meanchol=lambda self, m, L: (m, tf.matmul(L, L, transpose_b=True)))
    del methods[missing]
    MeanCovariance = type("MeanCovariance", (gpnat.Parametrisation,), methods)
    with pytest.raises(NotImplementedError, match=f"MeanCovariance does not define {missing}"):
        gpnat.SVGP(gpflow.kernels.SquaredExponential(), gpflow.likelihoods.Gaussian(), np.zeros((5, 1)),
                   parametrisation=MeanCovariance())
