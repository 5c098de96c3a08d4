"""Training data: arrays checked and batched in-graph, or a ``tf.data.Dataset``."""
import copy
import math
from typing import Optional, Tuple

import gpflow
import numpy as np
import tensorflow as tf

__all__ = ["ArrayBatches", "as_tensor", "check_arrays", "dataset_batches"]


def _as_float(a) -> np.ndarray:
    return np.asarray(a, dtype=gpflow.default_float())


def check_arrays(data) -> Tuple[np.ndarray, np.ndarray]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("data must be a tuple (X [N, D], Y [N, P]) or a tf.data.Dataset")
    X, Y = (_as_float(a) for a in data)
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(f"X must be [N, D] and Y [N, P], got shapes {list(X.shape)} and {list(Y.shape)}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows, got {X.shape[0]} and {Y.shape[0]}")
    if X.shape[0] == 0:
        raise ValueError("the data have no rows (X and Y are [0, ...])")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or inf")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y contains NaN or inf")
    return X, Y


#: bytes TensorFlow's CPU kernels expect a buffer to be aligned to (Eigen's EIGEN_MAX_ALIGN_BYTES)
ALIGN_BYTES = 64


def as_tensor(a: np.ndarray) -> tf.Tensor:
    """``a`` as a tensor that holds one copy of it.

    ``tf.constant`` of a NumPy array holds two copies of it on a CPU (TensorFlow 2.21:
    1.2 GiB of resident memory for X [10⁷, 8] in float64, 610 MiB). Where no GPU is visible,
    ``a`` is copied once into a buffer aligned to :data:`ALIGN_BYTES`, which the tensor then
    shares through DLPack. On a GPU the tensor lives in device memory: ``tf.constant``.
    """
    if a.size == 0 or tf.config.list_logical_devices("GPU"):
        return tf.constant(a)
    raw = np.empty(a.nbytes + ALIGN_BYTES, np.uint8)
    start = -raw.ctypes.data % ALIGN_BYTES
    copy_ = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    np.copyto(copy_, a)
    return tf.experimental.dlpack.from_dlpack(copy_.__dlpack__())


_ROUNDS = 8
_U32 = tf.uint32
#: the largest N whose Feistel domain a·b (< N + √N + 2) fits in uint32
MAX_ROWS = 2 ** 32 - 2 ** 17


def _mix(x: tf.Tensor) -> tf.Tensor:
    """A 32-bit integer hash (uint32 arithmetic, which wraps modulo 2^32)."""
    x = x * tf.constant(0x2C1B3C6D, _U32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, _U32)))
    x = x * tf.constant(0x297A2D39, _U32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(12, _U32)))


def _feistel(x: tf.Tensor, keys: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """A bijection of [0, a·b) keyed by ``keys``: x = hi·b + lo, rounds alternately
    hi ← (hi + F(lo)) mod a and lo ← (lo + F(hi)) mod b (uint32 in and out; each sum
    is reduced as (hi + F mod a) mod a, so it cannot wrap)."""
    hi, lo = x // b, x % b
    for r in range(_ROUNDS):
        if r % 2 == 0:
            hi = (hi + _mix(tf.bitwise.bitwise_xor(lo, keys[r])) % a) % a
        else:
            lo = (lo + _mix(tf.bitwise.bitwise_xor(hi, keys[r])) % b) % b
    return hi * b + lo


def _positions(seed: int, a: int, b: int, n: int, epoch, start, size: int) -> tf.Tensor:
    """Positions ``start, …, start + size − 1`` of the order of ``epoch`` of [0, n).

    ``epoch`` and ``start`` are int64 tensors; the Python ints are constants of
    the trace, so that XLA divides by known numbers. The permutation runs in
    uint32: twice as fast as int64 (0.09 against 0.20 ms for 10⁴ positions on
    two CPU cores), and the same order.
    """
    seed = tf.stack([tf.constant(seed, tf.int64), epoch])
    keys = tf.random.stateless_uniform([_ROUNDS], seed=seed, minval=0, maxval=2 ** 31, dtype=tf.int64)
    keys = tf.cast(keys, _U32)
    a, b, n = (tf.constant(c, _U32) for c in (a, b, n))
    x = _feistel(tf.cast(tf.range(size, dtype=tf.int64) + start, _U32), keys, a, b)
    # cycle-walking: apply the bijection again where it left [0, n); this stays a bijection of [0, n)
    (x,) = tf.while_loop(
        lambda x: tf.reduce_any(x >= n),
        lambda x: (tf.where(x >= n, _feistel(x, keys, a, b), x),),
        (x,),
    )
    return tf.cast(x, tf.int64)


#: some hundred small integer ops, which XLA fuses into one kernel. One function for every
#: ArrayBatches, traced once per (seed, N, batch size): XLA keeps what it compiles for the life
#: of the process, so a function per instance, that is per train call, grew memory at every call.
#: (With a, b and N as tensors instead, the int64 code took 1.03 ms for batches of 10⁴ against 0.81.)
_compiled_positions = tf.function(_positions, jit_compile=True)


class ArrayBatches:
    """Minibatches of arrays held on the device, drawn in-graph with O(B) memory.

    Each epoch visits the N rows in a pseudo-random order that depends only on
    (seed, epoch): a keyed Feistel permutation of [0, a·b) ⊇ [0, N) in mixed
    radix (a = ⌈√N⌉, b = ⌈N / a⌉, so a·b − N < a), walked in cycles until it
    lands in [0, N) (rarely more than one extra pass). Batch t of an epoch takes positions
    tB, …, tB + B − 1 of that order, computing only those B indices; no
    permutation of all N rows is ever stored, so memory does not grow with N
    beyond the data themselves. Training resumed from a checkpoint draws
    exactly the same batches. With ``batch_size=None`` (or B ≥ N) every
    iteration uses all the data.
    """

    def __init__(self, X, Y, batch_size: Optional[int], seed: int):
        self.N = int(X.shape[0])
        if batch_size is not None and batch_size < self.N and self.N > MAX_ROWS:
            raise ValueError(
                f"minibatches of arrays support at most {MAX_ROWS} rows, got N = {self.N}; "
                "pass a tf.data.Dataset instead"
            )
        self.X, self.Y = as_tensor(X), as_tensor(Y)
        self.batch_size = batch_size
        self.seed = seed
        if batch_size is not None:
            self.batches_per_epoch = max(self.N // batch_size, 1)
        a = max(2, math.isqrt(self.N - 1) + 1)  # ⌈√N⌉ (at least 2)
        b = max(2, -(-self.N // a))  # ⌈N / a⌉: a·b ≥ N
        self._constants = (int(seed), a, b, self.N)

    def layout(self) -> "ArrayBatches":
        """The same batching (rows, batch size, seed, order) without the arrays, which
        :meth:`batch` then takes as arguments: what a kept, traced loop holds."""
        layout = copy.copy(self)
        layout.X = layout.Y = None
        return layout

    def positions(self, epoch: tf.Tensor, start: tf.Tensor, size: int) -> tf.Tensor:
        """Rows at positions ``start, …, start + size − 1`` of the order of ``epoch`` (int64 [size])."""
        return _compiled_positions(*self._constants, tf.cast(epoch, tf.int64), tf.cast(start, tf.int64), size)

    def batch(self, step: tf.Tensor, X: Optional[tf.Tensor] = None, Y: Optional[tf.Tensor] = None):
        """(X, Y) of iteration ``step`` (0-based), of these arrays or, by default, of the ones given
        at construction (other arrays must have the same number of rows; a :meth:`layout` has none)."""
        X = self.X if X is None else X
        Y = self.Y if Y is None else Y
        if self.batch_size is None or self.batch_size >= self.N:
            return X, Y
        step = tf.cast(step, tf.int64)
        epoch = step // self.batches_per_epoch
        k = step % self.batches_per_epoch
        idx = self.positions(epoch, k * self.batch_size, self.batch_size)
        return tf.gather(X, idx), tf.gather(Y, idx)


#: the error for a Dataset that yields no batch
NO_BATCHES = ("the Dataset yields no batches: it is empty, or it has fewer single examples than "
              "batch_size (a last, partial batch is dropped)")


def dataset_batches(dataset: tf.data.Dataset, batch_size: Optional[int], seed: int):
    """The batches of ``dataset``, cast to gpflow's float and repeated without end.

    ``dataset`` yields (X, Y) pairs: single examples (X [D], Y [P]; batched here,
    shuffled from ``seed``, the last partial batch dropped) or batches
    (X [B, D], Y [B, P]; used as they come).
    """
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise TypeError(f"a Dataset for training must yield (X, Y) pairs, got elements {spec!r}")
    element_rank = len(spec[0].shape)
    if element_rank == 1:  # single examples
        if batch_size is None:
            raise ValueError("a Dataset of single examples needs batch_size")
        dataset = dataset.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size, drop_remainder=True)
    elif batch_size is not None:
        raise ValueError("the Dataset already yields batches: leave batch_size=None")
    if dataset.cardinality() == 0:
        raise ValueError(NO_BATCHES)
    dtype = gpflow.default_float()
    return dataset.map(lambda x, y: (tf.cast(x, dtype), tf.cast(y, dtype))).repeat()
