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


def _user_parametrisation(**methods):
    """A mean/Cholesky parametrisation written by a user, with some methods replaced."""
    base = dict(names=("m", "chol"),
                to_meanchol=lambda self, m, L: (m, tf.linalg.band_part(L, -1, 0)),
                from_meanchol=lambda self, m, L: (m, tf.linalg.band_part(L, -1, 0)))
    return type("UserMeanCholesky", (gpnat.Parametrisation,), {**base, **methods})()


def _svgp(parametrisation):
    return gpnat.SVGP(gpflow.kernels.SquaredExponential(), gpflow.likelihoods.Gaussian(), np.zeros((5, 1)),
                      parametrisation=parametrisation)


def test_a_user_parametrisation_is_tried_once_and_its_faulty_conversion_named():
    """NumPy in a conversion cuts the gradients and fails in compiled steps far from its cause (gpflow's
    conditional complained about a tuple's ndims); a wrong shape or an error is named at construction too."""
    assert isinstance(_svgp(_user_parametrisation()).q.parametrisation, gpnat.Parametrisation)
    numpy = _user_parametrisation(to_meanchol=lambda self, m, L: (m, np.tril(L)))
    with pytest.raises(TypeError, match=r"UserMeanCholesky.to_meanchol returned a numpy.ndarray as its output 2.*"
                                        r"TensorFlow ops"):
        _svgp(numpy)
    with pytest.raises(TypeError, match="UserMeanCholesky.to_meanchol returned a numpy.ndarray"):
        gpnat.NaturalGradient(0.1, coordinates=numpy)
    transposed = _user_parametrisation(from_meanchol=lambda self, m, L: (tf.transpose(m), L))
    with pytest.raises(ValueError, match=r"UserMeanCholesky.from_meanchol returned its output 1 as float64 \[2, 3\]"):
        _svgp(transposed)
    failing = _user_parametrisation(to_meanchol=lambda self, m, L: (m, tf.linalg.cholesky(L[:, :2, :])))
    with pytest.raises(ValueError, match="UserMeanCholesky.to_meanchol raised .* on a small valid q"):
        _svgp(failing)
    not_a_pair = _user_parametrisation(to_meanchol=lambda self, m, L: m)
    with pytest.raises(TypeError, match="UserMeanCholesky.to_meanchol must return a pair of tensors"):
        _svgp(not_a_pair)


class _Scaled(gpnat.Parametrisation):
    """ξ = (m / s, L): a parametrisation with a setting."""

    names = ("scaled_mean", "factor")

    def __init__(self, s=1.0):
        self.s = s

    def to_meanchol(self, xi_1, xi_2):
        return xi_1 * self.s, xi_2

    def from_meanchol(self, q_mu, q_sqrt):
        return q_mu / self.s, q_sqrt


def test_parametrisations_with_settings_are_equal_only_with_the_same_settings():
    """A step in coordinates equal to the storage skips the conversion, so equality must see settings."""
    assert _Scaled(2.0) == _Scaled(2.0) and hash(_Scaled(2.0)) == hash(_Scaled(3.0))
    assert _Scaled(2.0) != _Scaled(3.0) and _Scaled() != gpnat.MeanCholesky()
    assert gpnat.MeanCholesky() == gpnat.MeanCholesky() and gpnat.Natural() != gpnat.Expectation()
    assert repr(_Scaled(2.0)) == "_Scaled(s=2.0)" and repr(gpnat.Natural()) == "Natural()"
    model = _svgp(_Scaled(2.0))
    model.q.assign_mean_cholesky(np.ones((5, 1)), np.eye(5)[None])
    np.testing.assert_allclose(model.q.scaled_mean.numpy(), 0.5)
