"""Training data: arrays checked and batched in-graph, or a ``tf.data.Dataset``."""
from typing import Optional, Tuple

import gpflow
import numpy as np
import tensorflow as tf

__all__ = ["ArrayBatches", "check_arrays", "dataset_batches"]


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
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or inf")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y contains NaN or inf")
    return X, Y


class ArrayBatches:
    """Minibatches of arrays held on the device, drawn in-graph.

    Batch t of epoch e is a slice of a permutation that depends only on (seed, e),
    so training resumed from a checkpoint draws exactly the same batches.
    """

    def __init__(self, X, Y, batch_size: Optional[int], seed: int):
        self.X, self.Y = tf.constant(X), tf.constant(Y)
        self.N = X.shape[0]
        self.batch_size = batch_size
        self.seed = seed
        if batch_size is not None:
            self.batches_per_epoch = max(self.N // batch_size, 1)
            # the current epoch's permutation, recomputed only when the epoch changes
            self._epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)
            self._perm = tf.Variable(tf.range(self.N, dtype=tf.int32), trainable=False)

    def _permutation(self, epoch: tf.Tensor) -> tf.Tensor:
        keys = tf.random.stateless_uniform(
            [self.N], seed=tf.stack([tf.constant(self.seed, tf.int64), epoch]), dtype=tf.float64
        )
        return tf.argsort(keys)  # a random permutation, also under XLA

    def batch(self, step: tf.Tensor):
        if self.batch_size is None or self.batch_size >= self.N:
            return self.X, self.Y
        step = tf.cast(step, tf.int64)
        epoch = step // self.batches_per_epoch
        k = step % self.batches_per_epoch
        perm = tf.cond(
            tf.equal(epoch, self._epoch),
            lambda: self._perm.read_value(),
            lambda: self._perm.assign(self._permutation(epoch)),
        )
        self._epoch.assign(epoch)
        idx = perm[k * self.batch_size:(k + 1) * self.batch_size]
        return tf.gather(self.X, idx), tf.gather(self.Y, idx)


def dataset_batches(dataset: tf.data.Dataset, batch_size: Optional[int], seed: int):
    element_rank = len(dataset.element_spec[0].shape)
    if element_rank == 1:  # single examples
        if batch_size is None:
            raise ValueError("a Dataset of single examples needs batch_size")
        dataset = dataset.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size, drop_remainder=True)
    elif batch_size is not None:
        raise ValueError("the Dataset already yields batches: leave batch_size=None")
    dtype = gpflow.default_float()
    return dataset.map(lambda x, y: (tf.cast(x, dtype), tf.cast(y, dtype))).repeat()
