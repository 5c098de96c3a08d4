"""The benchmarks' synthetic regression problem (numpy only, no TensorFlow import).

X ~ U(-3, 3)^D, y = Σ_d sin(x_d) + 0.3 ε with a fixed seed.
"""
import numpy as np

#: input dimension of the problem
D = 8


def make_data(N: int, seed: int = 0):
    """(X [N, D], Y [N, 1]) drawn with ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3.0, 3.0, size=(N, D))
    Y = np.sin(X).sum(axis=1, keepdims=True) + 0.3 * rng.standard_normal((N, 1))
    return X, Y
