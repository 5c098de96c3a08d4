"""The collapse test of gpnat.recovery.Guard: noise is not a collapse, a blow-up is.

Rollback itself (bitwise restore, backoff, raising) is tested through training in test_training.py.
"""
import numpy as np
import pytest
import tensorflow as tf

import gpnat
from gpnat.recovery import Guard


def _codes(policy, losses):
    """Feed a loss sequence through a guard as gpnat.train does (in a compiled loop); each loss's reason code."""
    guard = Guard(policy, [])

    @tf.function
    def feed(losses):
        codes = tf.TensorArray(tf.int32, size=tf.shape(losses)[0])
        for i in tf.range(tf.shape(losses)[0]):
            code = guard.acceptable(losses[i], [])
            guard.update(tf.equal(code, 0), losses[i], tf.constant(False))
            codes = codes.write(i, code)
        return codes.stack()

    return feed(tf.constant(losses, tf.float64)).numpy(), guard


def _noisy(n=1000, level=10.0, noise=200.0, seed=0):
    """Minibatch ELBO estimates: a small mean under Gaussian noise, as when the ELBO is near zero."""
    return level + noise * np.random.default_rng(seed).standard_normal(n)


def test_minibatch_noise_is_not_a_collapse():
    codes, guard = _codes(gpnat.Recovery(), _noisy())
    assert not codes.any()
    # the spread tracks the noise: E|x - mean| = sqrt(2/pi) sigma, plus the reference's own lag
    assert 0.7 * 200 * np.sqrt(2 / np.pi) < float(guard.spread.numpy()) < 1.5 * 200 * np.sqrt(2 / np.pi)
    # without the noise term, a loss near zero "collapses" at every upward fluctuation
    old, _ = _codes(gpnat.Recovery(noise=0.0), _noisy())
    assert (old == 2).sum() > 100


def test_a_loss_crossing_zero_is_not_a_collapse():
    """Full batch: the loss falls smoothly through zero with small oscillations (a yacht run did this)."""
    t = np.arange(600)
    losses = 50.0 - 0.2 * t + 5.0 * np.sin(t)
    codes, _ = _codes(gpnat.Recovery(), losses)
    assert not codes.any()
    old, _ = _codes(gpnat.Recovery(noise=0.0), losses)
    assert old.any()


@pytest.mark.parametrize("blow_up", [2e4, 1e154])
def test_a_blow_up_after_noise_is_caught_and_does_not_widen_the_limit(blow_up):
    losses = np.concatenate([_noisy(500), [blow_up] * 5, _noisy(50, seed=1)])
    codes, guard = _codes(gpnat.Recovery(), losses)
    assert not codes[:500].any() and not codes[505:].any()
    assert (codes[500:505] == 2).all()  # every repeat is caught: rejected losses never join reference or spread
    assert float(guard.spread.numpy()) < 1000.0


def test_excursions_let_through_by_the_reference_term_widen_the_limit_slowly():
    """A loss of 1e4 gives room for rises of 1e4 whatever the noise; such a rise counts as at most 20 spreads."""
    noise = _noisy(1000, level=1e4)
    _, guard = _codes(gpnat.Recovery(), noise)
    before = float(guard.spread.numpy())
    codes, guard = _codes(gpnat.Recovery(), np.concatenate([noise, [1.8e4] * 5]))
    assert not codes.any()  # accepted: below reference + max(|reference|, 1) + 20 spreads
    # each step: spread' = 0.99 spread + 0.01 min(distance, 20 spread) <= 1.19 spread; counted in full,
    # the 8,000-nat distances would have grown it to about 3.4x
    assert float(guard.spread.numpy()) <= 1.19 ** 5 * before * (1 + 1e-12)


def test_non_finite_losses_are_reason_one_and_inf_collapse_turns_the_test_off():
    codes, _ = _codes(gpnat.Recovery(), [100.0, 90.0, np.nan, np.inf, 80.0])
    assert codes.tolist() == [0, 0, 1, 1, 0]
    codes, _ = _codes(gpnat.Recovery(collapse=np.inf), [100.0, 90.0, 1e300, 80.0])
    assert not codes.any()


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(noise=-1.0), "noise"), (dict(noise_smoothing=1.0), "noise_smoothing"), (dict(smoothing=-0.1), "smoothing")],
)
def test_bad_noise_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gpnat.Recovery(**kwargs)


def test_training_on_heavy_tailed_minibatches_is_not_rolled_back():
    """1 % outliers under a Gaussian likelihood: once the noise variance is small, a batch holding one has a
    much larger loss. The old test (no noise term) rolled 99 of 600 iterations back and slowed training."""
    import gpflow

    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, (1000, 1))
    Y = np.sin(2 * X) + 0.05 * rng.standard_normal(X.shape)
    Y[rng.uniform(size=1000) < 0.01] += 2.0
    elbos, recoveries = [], []
    for policy in (gpnat.Recovery(), gpnat.Recovery(noise=0.0)):
        model = gpnat.SVGP(gpflow.kernels.SquaredExponential(), gpflow.likelihoods.Gaussian(), X[:20].copy(),
                           num_data=1000)
        history = gpnat.train(model, (X, Y), iterations=600, natgrad=None, batch_size=50, progress=False,
                              recovery=policy, seed=0)
        elbos.append(float(model.elbo((X, Y))))
        recoveries.append(history.recoveries)
    assert recoveries[0] == 0 and recoveries[1] > 20
    assert elbos[0] > elbos[1] + 100.0
