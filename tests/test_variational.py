"""q(u): storage, views and validated assignment."""
import re

import gpflow
import numpy as np
import pytest

import gpnat
from gpnat.variational import InvalidGaussianError, VariationalGaussian

from .conftest import random_meanchol


def test_default_is_standard_normal(parametrisation):
    q = VariationalGaussian(4, 2, parametrisation=parametrisation)
    q_mu, q_sqrt = q.mean_cholesky()
    np.testing.assert_allclose(q_mu, np.zeros((4, 2)))
    np.testing.assert_allclose(q_sqrt, np.tile(np.eye(4), (2, 1, 1)), atol=1e-12)
    assert q_mu.dtype == gpflow.default_float()
    assert [v.name.split(":")[0] for v in q.xi] == list(parametrisation.names)
    assert getattr(q, parametrisation.names[0]) is q.xi[0]


def test_gpflow_utilities_show_each_variable_once_by_its_public_name(parametrisation):
    """print_summary and parameter_dict list q.<name>, once each (no second row for a private alias)."""
    model = gpnat.SVGP(gpflow.kernels.SquaredExponential(), gpflow.likelihoods.Gaussian(), np.zeros((3, 1)),
                       num_data=10, parametrisation=parametrisation)
    keys = [k for k in gpflow.utilities.parameter_dict(model) if k.startswith(".q.")]
    assert keys == [f".q.{name}" for name in parametrisation.names]
    table = gpflow.utilities.tabulate_module_summary(model)
    names = re.findall(r"SVGP\.q\.[\w\[\]]+", table)
    assert names == [f"SVGP.q.{name}" for name in parametrisation.names]
    assert len(model.trainable_variables) == len({id(v) for v in model.trainable_variables})


def test_assign_mean_cholesky_round_trip(parametrisation, rng):
    q = VariationalGaussian(5, 3, parametrisation=parametrisation)
    q_mu, q_sqrt = random_meanchol(rng, 5, 3)
    q.assign_mean_cholesky(q_mu, q_sqrt)
    m, c = q.mean_cholesky()
    np.testing.assert_allclose(m, q_mu, rtol=1e-9)
    np.testing.assert_allclose(c, q_sqrt, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda m, c: (m[:-1], c), r"q_mu must have shape \[M, L\]"),
        (lambda m, c: (m, c[:, :-1]), r"q_sqrt must have shape \[L, M, M\]"),
        (lambda m, c: (m * np.nan, c), "q_mu contains NaN or inf"),
        (lambda m, c: (m, c * np.inf), "q_sqrt contains NaN or inf"),
        (lambda m, c: (m, c + np.triu(np.ones_like(c), 1)), "lower triangular"),
        (lambda m, c: (m, c * np.tril(np.ones_like(c), -1)), "zero on its diagonal"),
    ],
)
def test_bad_assignment_is_refused_and_state_kept(parametrisation, rng, bad, match):
    q = VariationalGaussian(4, 2, parametrisation=parametrisation)
    q.assign_mean_cholesky(*random_meanchol(rng, 4, 2))
    before = [v.numpy().copy() for v in q.xi]
    with pytest.raises(ValueError, match=match):
        q.assign_mean_cholesky(*bad(*random_meanchol(rng, 4, 2)))
    for v, b in zip(q.xi, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_assign_raw_coordinates_checks_validity(rng):
    q = VariationalGaussian(2, 1, parametrisation=gpnat.Natural())
    before = [v.numpy().copy() for v in q.xi]
    with pytest.raises(InvalidGaussianError, match="not a valid Gaussian"):
        q.assign(np.zeros((2, 1)), np.eye(2)[None])  # θ₂ = +I: −2θ₂ is negative definite
    with pytest.raises(ValueError, match="theta_2 must have shape"):
        q.assign(np.zeros((2, 1)), np.eye(3)[None])
    for v, b in zip(q.xi, before):
        np.testing.assert_array_equal(v.numpy(), b)
    q.assign(np.ones((2, 1)), -np.eye(2)[None])
    np.testing.assert_allclose(q.mean_cholesky()[0], 0.5 * np.ones((2, 1)))



def test_assign_refuses_a_xi_2_not_of_its_form(parametrisation, rng):
    """A factor's upper triangle would be dropped silently and an asymmetric θ₂ or η₂ read by one
    triangle only: assign refuses both by name and keeps q(u). Round-off in a valid ξ₂ is taken."""
    form = parametrisation.xi_2_form
    assert form is None if parametrisation.diagonal else form in ("lower triangular", "symmetric")
    q = VariationalGaussian(4, 2, parametrisation=parametrisation)
    q.assign_mean_cholesky(*random_meanchol(rng, 4, 2))
    xi = [v.numpy().copy() for v in q.xi]
    if form is None:
        return
    noisy = xi[1] * (1 + 1e-14 * rng.standard_normal(xi[1].shape))
    q.assign(xi[0], noisy if form == "symmetric" else np.tril(noisy))
    np.testing.assert_allclose(q.xi[1].numpy(), xi[1], rtol=1e-12)
    q.assign(*xi)
    bad = xi[1] + np.triu(np.full(xi[1].shape[-2:], 0.3), 1)  # neither lower triangular nor symmetric
    with pytest.raises(InvalidGaussianError, match=f"{parametrisation.names[1]} must be {form}"):
        q.assign(xi[0], bad)
    for v, b in zip(q.xi, xi):
        np.testing.assert_array_equal(v.numpy(), b)


@pytest.mark.parametrize("names", [("a", "a"), ("xi", "b"), ("q_diag", "b"), ("a", "not an identifier"), ("a",)])
def test_a_parametrisation_whose_names_cannot_hold_its_variables_is_refused_by_name(names):
    """q.<name> holds each stored variable: two equal names lost ξ₁ silently, and a name such as ``xi`` or
    ``q_diag`` overwrote VariationalGaussian's own attribute."""
    class Renamed(gpnat.MeanCholesky):
        pass

    Renamed.names = names
    with pytest.raises(ValueError, match=r"Renamed.names must be two different identifiers"):
        VariationalGaussian(3, 1, parametrisation=Renamed())
