"""γ schedules: plain callables step -> γ."""
import math

import numpy as np
import pytest
import tensorflow as tf

import gpnat
from gpnat import schedules


def test_constant_and_numbers():
    assert float(schedules.Constant(0.3)(tf.constant(7, tf.int64))) == 0.3
    assert isinstance(schedules.as_schedule(0.5), schedules.Constant)
    def f(t):
        return 0.1
    assert schedules.as_schedule(f) is f


def test_increasing_rate_formula():
    s = schedules.IncreasingRate(alpha=0.8, rate=0.05)
    for t in [1, 2, 10, 100, 1000]:
        assert float(s(tf.constant(t, tf.int64))) == pytest.approx(0.8 * (1 - math.exp(-0.05 * t)), rel=1e-12)
    tiny = schedules.IncreasingRate()  # α = 1, rate = 1e-8: γ₁ ≈ 1e-8, no cancellation
    assert float(tiny(tf.constant(1, tf.int64))) == pytest.approx(1e-8, rel=1e-7)


def test_log_linear_endpoints_and_shape():
    s = schedules.LogLinear(1e-4, 1e-1, 4)
    values = [float(s(tf.constant(t, tf.int64))) for t in range(1, 8)]
    np.testing.assert_allclose(values[:4], [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-12)
    np.testing.assert_allclose(values[4:], 1e-1, rtol=1e-12)
    one = schedules.LogLinear(0.2, 0.5, 1)  # stop at t = steps = 1: no warm-up
    assert [float(one(tf.constant(t, tf.int64))) for t in (1, 2, 10)] == [0.5, 0.5, 0.5]


def test_warm_up_is_trains_measured_default():
    """1e-3 at t = 1, log-linear to 0.1 at t = 100 (benchmarks/WARMUP.md), 0.1 after; a fresh object."""
    s = schedules.warm_up()
    values = [float(s(tf.constant(t, tf.int64))) for t in (1, 34, 67, 100, 101, 10_000)]
    np.testing.assert_allclose(values, [1e-3, 1e-3 * 10 ** (66 / 99), 1e-3 * 10 ** (132 / 99), 0.1, 0.1, 0.1],
                               rtol=1e-12)
    assert schedules.warm_up() is not s
    assert "steps=100" in repr(s)


@pytest.mark.parametrize(
    "make",
    [
        lambda: schedules.Constant(0.0),
        lambda: schedules.Constant(float("inf")),
        lambda: schedules.IncreasingRate(alpha=-1.0),
        lambda: schedules.IncreasingRate(rate=0.0),
        lambda: schedules.LogLinear(0.0, 0.1, 5),
        lambda: schedules.LogLinear(1e-3, 0.1, 0),
        lambda: schedules.LogLinear(1e-3, 0.1, 2.5),
        lambda: schedules.LogLinear(1e-3, 0.1, None),
        lambda: schedules.LogLinear(1e-3, 0.1, "5"),
    ],
)
def test_invalid_settings_are_refused(make):
    with pytest.raises((ValueError, TypeError)):
        make()


def test_optimizer_counts_steps_for_its_schedule():
    seen = []

    def schedule(t):
        seen.append(int(t))
        return tf.constant(0.5, tf.float64)

    q = gpnat.VariationalGaussian(2, 1)
    opt = gpnat.NaturalGradient(schedule)
    def loss_fn():
        return tf.reduce_sum(q.mean_cholesky()[0] ** 2) + tf.reduce_sum(q.mean_cholesky()[1] ** 2)
    for _ in range(3):
        opt.minimize(loss_fn, q)
    assert seen == [1, 2, 3]
    assert int(opt.iterations.numpy()) == 3
    assert float(opt.last_gamma.numpy()) == 0.5
