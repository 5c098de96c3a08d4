"""Shared fixtures: float64, fixed seeds, small problems and the parametrisation battery."""
import gpflow
import numpy as np
import pytest

from gpnat.parametrisations import PARAMETRISATIONS

gpflow.config.set_default_float(np.float64)

#: the test files that take longest, longest first, from `pytest --durations=0` (seconds summed over a
#: file's tests on a 2-core machine, 2026-12-03): training 385, distributed 152, natgrad 116, cache 113,
#: notebooks 97, multioutput 95, svgp 80, experiments 62; every other file took under 40.
#: `make test` hands whole files to its processes (--dist loadfile) in collection order
#: (--no-loadscope-reorder), so the long files start first and the short ones fill in at the end.
SLOWEST_FILES = ["test_training.py", "test_distributed.py", "test_natgrad.py", "test_cache.py",
                 "test_notebooks.py", "test_multioutput.py", "test_svgp.py", "test_experiments.py"]

#: every parametrisation gpnat ships; a new one gets the whole battery by being registered
ALL_PARAMETRISATIONS = [cls() for cls in PARAMETRISATIONS.values()]


def pytest_collection_modifyitems(config, items):
    """Collect the slowest files first (see SLOWEST_FILES); the order within each file is kept."""
    def rank(item):
        name = item.path.name
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)


def pytest_generate_tests(metafunc):
    markers = metafunc.definition.iter_markers()
    explicit = any(m.name == "parametrize" and "parametrisation" in m.args[0] for m in markers)
    if "parametrisation" in metafunc.fixturenames and not explicit:
        metafunc.parametrize(
            "parametrisation", ALL_PARAMETRISATIONS, ids=[type(p).__name__ for p in ALL_PARAMETRISATIONS]
        )


def random_meanchol(rng, M, L, scale=1.0, jitter=0.5):
    """A random valid (q_mu [M, L], q_sqrt [L, M, M]) with a well-conditioned covariance."""
    q_mu = rng.normal(size=(M, L))
    q_sqrt = np.tril(rng.normal(size=(L, M, M))) * scale / np.sqrt(M)
    idx = np.arange(M)
    q_sqrt[:, idx, idx] = np.abs(q_sqrt[:, idx, idx]) + jitter
    return q_mu, q_sqrt


def regression_data(rng, N=40, D=2, L=1, noise=0.1):
    X = rng.uniform(-2.0, 2.0, size=(N, D))
    F = np.sin(X @ np.arange(1.0, D + 1)[:, None] + np.arange(L)[None, :])
    return X, F + noise * rng.normal(size=(N, L))


@pytest.fixture
def rng():
    return np.random.default_rng(20181126)


def make_kernel(D=2):
    return gpflow.kernels.SquaredExponential(variance=1.3, lengthscales=np.linspace(0.8, 1.5, D))
