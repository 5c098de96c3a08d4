"""gpnat.train: modes, compiled iteration, safe steps, checkpoints, progress and History."""

import gc
import json
import math
import os
import re
import shutil
import warnings

import gpflow
import numpy as np
import pytest
import tensorflow as tf
from gpflow.keras import tf_keras

import gpnat
from gpnat import schedules
from gpnat.natgrad import NaturalGradientError
from gpnat.training import History, batches
from gpnat.training.batches import ArrayBatches

from .conftest import make_kernel, regression_data

N, M = 60, 6


def _model(rng, parametrisation="mean_cholesky", noise=0.3, likelihood=None, num_data=N):
    X, Y = regression_data(rng, N=N)
    lik = likelihood or gpflow.likelihoods.Gaussian(noise)
    model = gpnat.SVGP(make_kernel(), lik, X[:M].copy(), parametrisation=parametrisation, num_data=num_data)
    return model, (X, Y)


def _hyper(model):
    ids = {id(v) for v in model.q.xi}
    return [v for v in model.trainable_variables if id(v) not in ids]


@pytest.mark.parametrize(
    "kwargs, mode, evaluations",
    [
        (dict(fused=False), "alternating", 2),
        (dict(), "fused", 1),
        (dict(natgrad=None), "adam", 1),
        (dict(adam_lr=None), "natgrad", 1),
    ],
)
def test_modes_improve_the_elbo_without_retracing(rng, kwargs, mode, evaluations):
    model, data = _model(rng)
    kwargs = dict(kwargs)
    kwargs.setdefault("natgrad", gpnat.NaturalGradient(schedules.LogLinear(0.01, 0.2, 5)))
    start = model.elbo(data).numpy()
    history = gpnat.train(model, data, iterations=25, batch_size=20, progress=False, seed=1, **kwargs)
    assert history.mode == mode
    assert history.num_traces == 1
    assert len(history) == 25 and history.iteration == list(range(1, 26))
    assert np.all(np.diff(history.time) > 0)
    assert model.elbo(data).numpy() > start + 10.0
    # one loss evaluation per iteration (two when alternating), and as many in the pass that checks
    # the last iteration's updates at the end of the run, counted eagerly
    calls = []
    original = model.training_loss
    model.training_loss = lambda batch: (calls.append(1), original(batch))[1]
    try:
        gpnat.train(model, data, iterations=3, batch_size=20, progress=False, compile=False, **kwargs)
    finally:
        del model.training_loss
    assert len(calls) == 4 * evaluations


class _SignFlippedMean(gpflow.mean_functions.MeanFunction):
    """Python control flow on a tensor: inside a tf.function only AutoGraph can trace it."""

    def __call__(self, X):
        if tf.reduce_sum(X) > 0.0:
            return tf.ones_like(X[:, :1])
        return -tf.ones_like(X[:, :1])


def test_a_model_whose_code_needs_autograph_trains_as_it_does_eagerly():
    """The loop is traced without AutoGraph; a model that needs it (here a mean function with a Python
    ``if`` on a tensor) is traced again with it, and trains as it does eagerly."""
    histories = []
    for compile in (True, False):
        model, data = _model(np.random.default_rng(3))
        model.mean_function = _SignFlippedMean()
        histories.append(gpnat.train(model, data, iterations=2, batch_size=20, progress=False, seed=1,
                                     compile=compile))
        assert np.all(np.isfinite(histories[-1].elbo))
    np.testing.assert_allclose(histories[0].elbo, histories[1].elbo, rtol=1e-12)
    assert histories[0].num_traces >= 1


def test_defaults_follow_the_likelihood_and_the_batch(rng):
    """γ = 1 from the start for a Gaussian likelihood on the full data (exact in one step), and then
    alternating mode (Adam's gradient at the exact optimum); a warm-up to γ = 0.1 for any other
    likelihood or for minibatches, in fused mode."""
    model, data = _model(rng)
    history = gpnat.train(model, data, iterations=3, progress=False)
    assert history.mode == "alternating" and history.gamma == [1.0, 1.0, 1.0]
    history = gpnat.train(model, data, iterations=3, batch_size=len(data[0]), progress=False)
    assert history.mode == "alternating"
    assert history.gamma == [1.0, 1.0, 1.0]  # a batch of all N points is the full batch
    warm_up = [schedules.warm_up()(t) for t in (1, 2, 3)]
    for kwargs in (dict(batch_size=20), dict(data=tf.data.Dataset.from_tensor_slices(data).batch(20))):
        history = gpnat.train(model, **{"data": data, **kwargs}, iterations=3, progress=False)
        np.testing.assert_allclose(history.gamma, warm_up, rtol=1e-12)
    model, data = _model(rng, likelihood=gpflow.likelihoods.StudentT())
    history = gpnat.train(model, data, iterations=3, progress=False)
    expected = [schedules.warm_up()(t) for t in (1, 2, 3)]
    np.testing.assert_allclose(history.gamma, expected, rtol=1e-12)
    # the mode alone (chosen before the loop: iterations=0 runs none and traces nothing)
    assert gpnat.train(model, data, iterations=0, natgrad=None, progress=False).mode == "adam"
    assert gpnat.train(model, data, iterations=0, adam_lr=None, progress=False).mode == "natgrad"
    # q(u) alone (adam_lr=None): the short warm-up (WARMUP.md, "q(u) alone"); with Adam, the default one
    make = gpnat.training.loop._DEFAULT.make
    assert repr(make(model, full_batch=True, hyperparameters_trained=False).gamma) == repr(schedules.warm_up(5))
    assert repr(make(model, full_batch=True).gamma) == repr(schedules.warm_up())
    # a diagonal q(u) is not conjugate even to a Gaussian likelihood: a warm-up, fused (DIAGONAL.md),
    # the short one on the full data, the default on minibatches (chosen before the loop)
    X, Y = data
    diagonal = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.3), X[:M].copy(), num_data=N, q_diag=True)
    history = gpnat.train(diagonal, data, iterations=3, progress=False)
    assert history.mode == "fused"
    np.testing.assert_allclose(history.gamma, [schedules.warm_up(20)(t) for t in (1, 2, 3)], rtol=1e-12)
    assert repr(gpnat.training.loop._DEFAULT.make(diagonal, full_batch=False).gamma) == repr(schedules.warm_up())
    assert gpnat.train(diagonal, data, iterations=0, natgrad=gpnat.NaturalGradient(1.0),
                       progress=False).mode == "fused"


def test_q_is_kept_out_of_adam_and_hyperparameters_out_of_natgrad(rng):
    model, data = _model(rng)
    q_before = [v.numpy().copy() for v in model.q.xi]
    h_before = [v.numpy().copy() for v in _hyper(model)]
    gpnat.train(model, data, iterations=10, natgrad=gpnat.NaturalGradient(1e-12), progress=False)
    for v, b in zip(model.q.xi, q_before):
        np.testing.assert_allclose(v.numpy(), b, atol=1e-9)  # Adam (lr 0.01) would move q by ~0.1
    assert any(np.abs(v.numpy() - b).max() > 1e-3 for v, b in zip(_hyper(model), h_before))

    model, data = _model(rng)
    h_before = [v.numpy().copy() for v in _hyper(model)]
    gpnat.train(model, data, iterations=5, adam_lr=None, progress=False)
    for v, b in zip(_hyper(model), h_before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_gaussian_hybrid_reaches_the_sgpr_bound_with_learned_hyperparameters(rng):
    """Natural parameters, γ = 1, full batch: the ELBO tracks SGPR's at the learned hyperparameters."""
    model, data = _model(rng, parametrisation="natural", num_data=None)
    gpnat.train(model, data, iterations=60, natgrad=gpnat.NaturalGradient(1.0), adam_lr=0.05, progress=False)
    gpnat.NaturalGradient(1.0).minimize(model.training_loss_closure(data), model.q)
    sgpr = gpflow.models.SGPR(data, model.kernel, model.inducing_variable,
                              noise_variance=model.likelihood.variance.numpy())
    np.testing.assert_allclose(model.elbo(data), sgpr.elbo(), rtol=1e-8)


def test_minibatches_cover_each_epoch_once_and_are_reproducible():
    X = np.arange(10.0)[:, None]
    source = ArrayBatches(X, X, batch_size=3, seed=7)
    epoch = np.concatenate([source.batch(tf.constant(t))[0].numpy().ravel() for t in range(3)])
    assert len(set(epoch)) == 9
    again = np.concatenate([ArrayBatches(X, X, 3, 7).batch(tf.constant(t))[0].numpy().ravel() for t in range(3)])
    np.testing.assert_array_equal(epoch, again)
    next_epoch = np.concatenate([source.batch(tf.constant(t))[0].numpy().ravel() for t in range(3, 6)])
    assert not np.array_equal(epoch, next_epoch)


@pytest.mark.parametrize("n", [2, 4, 5, 64, 65, 4097])  # 3 has the domain of 2 and 4; 63 and 1000 add none
def test_each_epoch_order_is_a_permutation_computed_batch_by_batch(n):
    """The keyed Feistel order (with cycle-walking) visits every row once per epoch, differs between
    epochs and seeds, and is the same computed whole or in pieces, eagerly or compiled."""
    source = ArrayBatches(np.zeros((n, 1)), np.zeros((n, 1)), batch_size=1, seed=11)
    epochs = [source.positions(tf.constant(e, tf.int64), 0, n).numpy() for e in range(3)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    if n > 3:
        assert not np.array_equal(epochs[0], epochs[1])
        other_seed = ArrayBatches(np.zeros((n, 1)), np.zeros((n, 1)), 1, seed=12)
        assert not np.array_equal(other_seed.positions(tf.constant(0, tf.int64), 0, n).numpy(), epochs[0])
    size = 2 if n < 100 else 97  # pieces of 97 for the large n: ~40 calls, not thousands
    compiled = tf.function(lambda start: source.positions(tf.constant(1, tf.int64), start, size))
    pieces = np.concatenate([compiled(tf.constant(s, tf.int64)).numpy() for s in range(0, n - size + 1, size)])
    np.testing.assert_array_equal(pieces, epochs[1][:len(pieces)])


def _reference_order(seed, n, epoch, positions):
    """The documented order in NumPy with Python-int (unbounded) arithmetic, masked to 32 bits
    where the hash says so: independent of the uint32 graph code."""
    a = max(2, int(np.ceil(np.sqrt(n))))
    b = max(2, -(-n // a))
    keys = tf.random.stateless_uniform([8], seed=[seed, epoch], minval=0, maxval=2 ** 31, dtype=tf.int64)
    keys = [int(k) for k in keys.numpy()]

    def mix(x):
        x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x297A2D39) & 0xFFFFFFFF
        return x ^ (x >> 12)

    def feistel(x):
        hi, lo = divmod(x, b)
        for r in range(8):
            if r % 2 == 0:
                hi = (hi + mix(lo ^ keys[r])) % a
            else:
                lo = (lo + mix(hi ^ keys[r])) % b
        return hi * b + lo

    def walk(x):
        x = feistel(x)
        while x >= n:
            x = feistel(x)
        return x

    return np.array([walk(int(p)) for p in positions])


@pytest.mark.parametrize("n, batch_size", [(277, 128), (20_000, 1000), (10_000_000, 256)])
def test_the_order_matches_an_independent_reference(n, batch_size):
    """Batches are the documented keyed Feistel order (a resumed run draws the same batches
    as before): the uint32 graph code against Python-int arithmetic."""
    X = np.broadcast_to(np.zeros((1, 1)), (n, 1))
    source = ArrayBatches(X, X, batch_size, seed=3)
    for epoch in (0, 5):
        for start in (0, (source.batches_per_epoch - 1) * batch_size):
            got = source.positions(tf.constant(epoch, tf.int64), tf.constant(start, tf.int64), batch_size)
            want = _reference_order(3, n, epoch, range(start, start + batch_size))
            np.testing.assert_array_equal(got.numpy(), want)


def test_minibatches_of_more_rows_than_uint32_holds_are_refused():
    X = np.broadcast_to(np.zeros((1, 1)), (batches.MAX_ROWS + 1, 1))  # a view: no memory
    with pytest.raises(ValueError, match="at most .* rows.*tf.data.Dataset"):
        ArrayBatches(X, X, 1000, seed=0)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_array_data_become_a_tensor_with_its_own_copy(layout):
    """The tensor train batches from has the caller's values, in any memory layout, and keeps
    them when the caller's array changes or is freed."""
    rng = np.random.default_rng(0)
    X = {"C": lambda: rng.standard_normal((37, 3)), "F": lambda: np.asfortranarray(rng.standard_normal((37, 3))),
         "strided": lambda: rng.standard_normal((74, 3))[::2]}[layout]()
    want = X.copy()
    t = batches.as_tensor(X)
    X[...] = np.nan
    del X
    gc.collect()
    assert t.dtype == tf.float64 and t.shape == want.shape
    np.testing.assert_array_equal(t.numpy(), want)
    np.testing.assert_array_equal(tf.gather(t, [3, 0, 36]).numpy(), want[[3, 0, 36]])
    np.testing.assert_array_equal(tf.function(lambda x: tf.gather(x, [5]) * 2.0)(t).numpy(), 2.0 * want[[5]])


def _resident_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return 1024 * int(line.split()[1])
    raise OSError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads resident memory from /proc")
def test_array_data_are_held_once_more_not_twice():
    """tf.constant of a NumPy array holds two copies of it on a CPU; the training data are held
    once more than the caller's array (128 MiB here, so other allocations do not matter)."""
    X = np.random.default_rng(1).standard_normal((2 ** 24, 1))
    gc.collect()
    before = _resident_bytes()
    t = batches.as_tensor(X)
    grown = _resident_bytes() - before
    assert 0.9 * X.nbytes < grown < 1.4 * X.nbytes, f"held {grown / X.nbytes:.2f} copies"
    assert float(t[-1, 0]) == X[-1, 0]


def _alive_graphs() -> int:
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(isinstance(o, FuncGraph) for o in gc.get_objects())


def test_repeated_train_calls_keep_no_graphs_alive(rng):
    """Each call traces its loop anew; once it returns, its graphs must be freed (TFP's bijector
    cache and tf.custom_gradient's registry held them), and the batches' XLA function is shared.
    The calls alternate between Adam alone on the full data and natural gradients on minibatches."""
    from gpnat.training import loop

    model, data = _model(rng)
    settings = [dict(natgrad=None, batch_size=None), dict(natgrad=gpnat.NaturalGradient(0.1), batch_size=16)]
    for kwargs in settings:  # warm: anything traced once per process
        gpnat.train(model, data, iterations=2, progress=False, **kwargs)
    graphs, custom = _alive_graphs(), loop._custom_gradients()
    positions = batches._compiled_positions.experimental_get_tracing_count()
    for kwargs in settings:  # each call's configuration differs from the last: each traces anew
        history = gpnat.train(model, data, iterations=2, progress=False, **kwargs)
        assert history.num_traces == 1
    assert _alive_graphs() <= graphs
    assert loop._custom_gradients() <= custom
    assert batches._compiled_positions.experimental_get_tracing_count() == positions  # nothing new for XLA


def test_tf_data_inputs(rng):
    model, data = _model(rng)
    examples = tf.data.Dataset.from_tensor_slices(data)
    h1 = gpnat.train(model, examples, iterations=8, batch_size=15, progress=False)
    h2 = gpnat.train(model, examples.batch(15, drop_remainder=True), iterations=8, progress=False)
    assert h1.num_traces == 1 and h2.num_traces == 1
    assert h2.elbo[-1] > h1.elbo[0]
    with pytest.raises(ValueError, match="batch_size"):
        gpnat.train(model, examples, iterations=1, progress=False)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda ds: ds.take(0), ValueError, "yields no batches"),
        (lambda ds: ds.take(10), ValueError, "yields no batches"),  # fewer examples than one batch
        (lambda ds: ds.filter(lambda x, y: False), ValueError, "yields no batches"),  # empty, size unknown
        (lambda ds: ds.map(lambda x, y: (x, y, y)), TypeError, r"\(X, Y\) pairs"),
        (lambda ds: ds.map(lambda x, y: (x[:1], y)), ValueError, "input dimensions"),
    ],
    ids=["empty", "fewer-than-a-batch", "empty-of-unknown-size", "three-tensors", "wrong-input-dimension"],
)
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_bad_datasets_are_clear_errors_and_leave_the_model_unchanged(rng, make, error, match, compiled):
    model, data = _model(rng)
    before = [v.numpy().copy() for v in model.trainable_variables]
    with pytest.raises(error, match=match) as raised:
        gpnat.train(model, make(tf.data.Dataset.from_tensor_slices(data)), iterations=3, batch_size=15,
                    progress=False, compile=compiled)
    assert "in user code" not in str(raised.value)
    for v, b in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_float32(rng):
    with gpflow.config.as_context(gpflow.config.Config(float=np.float32, jitter=1e-5)):
        model, data = _model(rng)
        assert model.q.xi[0].dtype == tf.float32
        history = gpnat.train(model, data, iterations=20, batch_size=20, progress=False)
        assert np.isfinite(history.elbo).all()
        assert history.elbo[-1] > history.elbo[0]
        assert model.elbo(data).dtype == tf.float32


def test_xla_compiled_iteration_and_the_guard_before_its_compilations_would_crash_the_process(
        rng, monkeypatch):
    """jit_compile=True trains. TensorFlow never frees XLA's compilations: train(jit_compile=True) warns
    from half the kernel's limit on memory maps and refuses, the model unchanged, at 90 %;
    jit_compile=False is not affected. (One model throughout: its compiled loop is reused, so XLA
    compiles once. Adam-only, whose iteration XLA compiles in a third of the hybrid's time: the guard
    is the same for every mode, and the hybrid under XLA is checked by test_cache.py's
    test_a_second_call_reuses_the_loop_with_a_fresh_calls_results[XLA].)"""
    from gpnat.training import loop

    limit = 65530
    model, data = _model(rng)
    start = model.elbo(data).numpy()
    for used, outcome in [(0.3, "trains"), (0.6, "warns"), (0.95, "refuses")]:
        monkeypatch.setattr(loop, "_memory_maps", lambda used=used: (int(used * limit), limit))
        before = [v.numpy().copy() for v in model.trainable_variables]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if outcome == "refuses":
                with pytest.raises(RuntimeError, match=r"jit_compile=True refused: .* memory maps .*64170"):
                    gpnat.train(model, data, iterations=5, batch_size=20, jit_compile=True, natgrad=None,
                                progress=False)
                for v, b in zip(model.trainable_variables, before):
                    np.testing.assert_array_equal(v.numpy(), b)
            else:
                history = gpnat.train(model, data, iterations=5, batch_size=20, jit_compile=True, natgrad=None,
                                      progress=False)
                assert history.num_traces == (1 if outcome == "trains" else 0)
        resource = [w for w in caught if issubclass(w.category, ResourceWarning)]
        assert len(resource) == (1 if outcome == "warns" else 0)
    assert model.elbo(data).numpy() > start
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        gpnat.train(model, data, iterations=2, natgrad=None, progress=False)  # without XLA: no check, no warning


def test_memory_maps_are_counted_on_linux():
    from gpnat.training.loop import _memory_maps

    maps = _memory_maps()
    if maps is None:
        pytest.skip("no /proc/self/maps here")
    count, limit = maps
    assert 0 < count < limit


# ------------------------------------------------------------------ safe steps
def _overconfident(rng, parametrisation):
    model, data = _model(rng, parametrisation=parametrisation, noise=0.5)
    model.q.assign_mean_cholesky(0.1 * rng.normal(size=(M, 1)), 0.1 * np.eye(M)[None])  # S₀ = 10⁻² I
    return model, data


@pytest.mark.parametrize("parametrisation", ["natural", "expectation"])
def test_safe_steps_rescue_what_plain_steps_break(rng, parametrisation):
    # without the safeguard (a single proposal, as a plain optimizer takes) the step breaks q(u)
    model, data = _overconfident(rng, parametrisation)
    with tf.GradientTape() as tape:
        loss = model.training_loss(data)
    direction = gpnat.natural_gradient(model.q.parametrisation, model.q.xi, tape.gradient(loss, model.q.xi))
    plain = [x - 3.0 * d for x, d in zip(model.q.xi, direction)]
    assert not np.all(np.isfinite(model.q.parametrisation.to_meanchol(*plain)[1]))
    q_before = [v.numpy().copy() for v in model.q.xi]
    h_before = [v.numpy().copy() for v in _hyper(model)]
    with pytest.raises(NaturalGradientError, match="iteration 1: no valid natural-gradient step"):
        gpnat.train(model, data, iterations=5, natgrad=gpnat.NaturalGradient(3.0, max_tries=1),
                    progress=False, recovery=None)
    for v, b in zip(list(model.q.xi) + _hyper(model), q_before + h_before):
        np.testing.assert_array_equal(v.numpy(), b)  # last valid state, Adam step skipped too

    # with recovery (the default) the same single-proposal optimizer trains on, at a lower γ
    history = gpnat.train(model, data, iterations=10, natgrad=gpnat.NaturalGradient(3.0, max_tries=1),
                          progress=False)
    assert history.failure[0] == 3 and history.recoveries >= 1
    assert history.scale[1] == 0.5
    assert bool(model.q.is_valid()) and np.isfinite(model.elbo(data).numpy())

    # with halving, the History shows the rejections and γ used
    history = gpnat.train(model, data, iterations=10, natgrad=gpnat.NaturalGradient(3.0), progress=False)
    assert history.total_rejections >= 1 or history.recoveries >= 1
    assert all(g == 0.0 or g in {3.0 / 2**k for k in range(16)} for g in history.gamma)
    assert bool(model.q.is_valid())
    assert np.isfinite(model.elbo(data).numpy())
    # γ = 3 > 2 overshoots the Gaussian-likelihood optimum: the ELBO alternates between the
    # halved steps' gains and the full steps' losses, so judge the best iteration, not the last
    assert max(history.elbo) > history.elbo[0]


def test_student_t_outliers_with_large_gamma_stay_valid(rng):
    """Gross outliers under a Student-t likelihood: natural-parameter steps with γ = 1 are unsafe."""
    X, Y = regression_data(rng, N=N)
    Y[::7] += 40.0
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.StudentT(scale=0.1, df=3.0), X[:M].copy(),
                       parametrisation="natural", num_data=N)
    history = gpnat.train(model, (X, Y), iterations=30, natgrad=gpnat.NaturalGradient(1.0),
                          adam_lr=None, progress=False)
    assert bool(model.q.is_valid())
    assert np.isfinite(history.elbo).all()
    assert np.isfinite(model.elbo((X, Y)).numpy())


def test_latent_gps_and_columns_that_disagree_with_the_likelihood_are_refused_before_training(rng):
    X, Y = regression_data(rng, N=N)
    labels = rng.integers(0, 3, size=(N, 1)).astype(float)
    inferred = gpnat.SVGP(make_kernel(), gpflow.likelihoods.MultiClass(3), X[:M].copy(), num_data=N)
    assert inferred.num_latent_gps == 3 and inferred.q.q_mu.shape == (M, 3)  # as gpflow infers it for a VGP
    with pytest.raises(ValueError, match="takes 3 latent functions, but the model has 1"):
        gpnat.SVGP(make_kernel(), gpflow.likelihoods.MultiClass(3), X[:M].copy(), num_latent_gps=1)
    wrong = gpflow.models.SVGP(make_kernel(), gpflow.likelihoods.MultiClass(3), X[:M].copy(), num_latent_gps=1)
    before = [v.numpy() for v in wrong.trainable_variables]
    with pytest.raises(ValueError, match="takes 3 latent functions, but the model has 1"):
        gpnat.train(wrong, (X, labels), iterations=2, progress=False)
    two = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(), X[:M].copy(), num_latent_gps=2, num_data=N)
    with pytest.raises(ValueError, match="Y has 3 columns but the model has 2 outputs"):
        gpnat.train(two, (X, np.hstack([Y, Y, Y])), iterations=2, progress=False)
    with pytest.raises(ValueError, match="Y has 3 columns but the model has 2 outputs"):
        two.elbo((X, np.hstack([Y, Y, Y])))
    for a, b in zip(wrong.trainable_variables, before):
        np.testing.assert_array_equal(a.numpy(), b)


def test_a_num_data_that_is_not_the_row_count_warns_on_the_full_batch_too(rng):
    model, data = _model(rng, num_data=2 * N)
    with pytest.warns(UserWarning, match=f"num_data = {2 * N} but the data have N = {N} rows"):
        gpnat.train(model, data, iterations=2, progress=False)


# ------------------------------------------------------------------ checkpoints
def _checkpoint_run(tmp_path, iterations, seed=0, **kwargs):
    rng = np.random.default_rng(5)
    model, data = _model(rng)
    natgrad = gpnat.NaturalGradient(schedules.LogLinear(1e-3, 0.3, 15))
    history = gpnat.train(model, data, iterations=iterations, natgrad=natgrad, batch_size=20,
                          seed=seed, progress=False, **kwargs)
    return model, data, natgrad, history


def test_resumed_training_equals_uninterrupted(tmp_path):
    model, data, natgrad, full = _checkpoint_run(tmp_path, 20)
    _, _, _, first = _checkpoint_run(tmp_path, 10, checkpoint_dir=tmp_path / "ck", checkpoint_every=5)
    assert (tmp_path / "ck" / "latest").read_text() == "ckpt-000000010"
    resumed_model, _, resumed_natgrad, resumed = _checkpoint_run(
        tmp_path, 20, checkpoint_dir=tmp_path / "ck", checkpoint_every=5)
    assert resumed.iteration == list(range(1, 21))  # the saved history is continued
    assert resumed_natgrad.iterations.numpy() == natgrad.iterations.numpy() == 20
    np.testing.assert_allclose(resumed_model.elbo(data), model.elbo(data), rtol=1e-10)
    np.testing.assert_allclose(resumed.elbo, full.elbo, rtol=1e-10)
    for a, b in zip(resumed_model.trainable_variables, model.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    assert len(list((tmp_path / "ck").glob("ckpt-*"))) <= 2
    # asking for fewer iterations than the checkpoint holds cannot rewind it: a warning says so
    with pytest.warns(UserWarning, match="is at iteration 20, past iterations=15: nothing was trained"):
        later_model, _, _, later = _checkpoint_run(tmp_path, 15, checkpoint_dir=tmp_path / "ck")
    assert later.iteration == list(range(1, 21))
    for a, b in zip(later_model.trainable_variables, resumed_model.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _rollback_run(iterations, checkpoint_dir=None):
    """A Gaussian likelihood stepping in its storage at γ = 0.2: iterations 2 and 4 are rolled back."""
    model, data = _model(np.random.default_rng(5))
    history = gpnat.train(model, data, iterations=iterations, natgrad=gpnat.NaturalGradient(0.2, coordinates=None),
                          progress=False, checkpoint_dir=checkpoint_dir)
    return model, data, history


@pytest.fixture(scope="module")
def uninterrupted_rollback_run():
    return _rollback_run(12)


@pytest.mark.parametrize("split", [1, 3])
def test_resume_after_a_rolled_back_last_iteration_equals_uninterrupted(tmp_path, split, uninterrupted_rollback_run):
    model, data, full = uninterrupted_rollback_run
    assert full.failure[split] == 2  # the iteration after the split finds the split's update collapsed
    first_model, _, first = _rollback_run(split, tmp_path / "ck")
    assert first.failure[-1] == 2  # the final check rolled the split's update back in memory...
    first_state = [v.numpy() for v in first_model.trainable_variables]
    assert np.isfinite(first_model.elbo(data).numpy()) and first_model.elbo(data) > -200
    # ...and asking again for the same iterations (nothing left to run) gives that checked model
    again_model, _, again = _rollback_run(split, tmp_path / "ck")
    assert again.failure == first.failure
    for a, b in zip(again_model.trainable_variables, first_state):
        np.testing.assert_array_equal(a.numpy(), b)
    resumed_model, _, resumed = _rollback_run(12, tmp_path / "ck")
    assert resumed.failure == full.failure and resumed.scale == full.scale
    np.testing.assert_array_equal(resumed.elbo, full.elbo)
    for a, b in zip(resumed_model.trainable_variables, model.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("error", [KeyboardInterrupt, StopIteration])
def test_an_exception_from_a_callback_leaves_the_model_checked(error):
    """Ctrl-C or an early-stopping rule raised from a callback stops the call before its final
    check: the check runs all the same (iteration 1's update collapses, as the next iteration
    would find, so the model is rolled back to its start), and the exception carries the History."""
    model, data = _model(np.random.default_rng(5))
    start = [v.numpy().copy() for v in model.variables]

    def stop(iteration, history):
        raise error("stop")

    with pytest.raises(error) as raised:
        gpnat.train(model, data, iterations=12, natgrad=gpnat.NaturalGradient(0.2, coordinates=None),
                    progress=False, callbacks=stop)
    assert raised.value.history.failure == [2]
    for v, b in zip(model.variables, start):
        np.testing.assert_array_equal(v.numpy(), b)
    assert np.isfinite(model.elbo(data).numpy())


def test_resume_after_a_non_finite_last_update_equals_uninterrupted(tmp_path):
    """A checkpoint whose state is a diverged last update (ELBO −∞) resumes: the resumed call rolls
    it back, as the next iteration of the uninterrupted run does, instead of refusing the state as
    one no step can mend."""
    rng = np.random.default_rng(1)
    X = rng.uniform(-3, 3, size=(40, 1))
    Y = rng.poisson(np.exp(3 + 2 * np.sin(2 * X))).astype(float)

    def run(iterations, checkpoint_dir):
        model = gpnat.SVGP(gpflow.kernels.SquaredExponential(), gpflow.likelihoods.Poisson(), X[:8].copy(),
                           num_data=40)
        natgrad = gpnat.NaturalGradient(5.0, coordinates=None)
        history = gpnat.train(model, (X, Y), iterations=iterations, natgrad=natgrad, adam_lr=None, progress=False,
                              checkpoint_dir=checkpoint_dir)
        return model, history

    full_model, full = run(12, tmp_path / "full")
    assert full.failure[5] == 1  # iteration 5's update is not finite, as iteration 6 finds
    _, first = run(5, tmp_path / "ck")
    resumed_model, resumed = run(12, tmp_path / "ck")
    assert resumed.failure == full.failure
    np.testing.assert_array_equal(resumed.elbo, full.elbo)
    for a, b in zip(resumed_model.variables, full_model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_an_interrupted_save_never_corrupts_the_last_good_checkpoint(tmp_path, monkeypatch):
    _checkpoint_run(tmp_path, 5, checkpoint_dir=tmp_path / "ck", checkpoint_every=5)
    good = (tmp_path / "ck" / "latest").read_text()

    def crash(self, prefix, *args, **kwargs):
        open(str(prefix) + ".index", "w").write("half-written")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(tf.train.Checkpoint, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        _checkpoint_run(tmp_path, 10, checkpoint_dir=tmp_path / "ck", checkpoint_every=5)
    monkeypatch.undo()
    assert (tmp_path / "ck" / "latest").read_text() == good
    model, data, _, history = _checkpoint_run(tmp_path, 7, checkpoint_dir=tmp_path / "ck", checkpoint_every=5)
    assert history.iteration == list(range(1, 8))


# ------------------------------------------------------------------ progress, history, errors
def test_progress_bar_shows_elbo_and_gamma(rng, capsys):
    model, data = _model(rng)
    gpnat.train(model, data, iterations=5, progress=True)
    err = capsys.readouterr().err
    assert "elbo=" in err and "gamma=" in err and "5/5" in err


def test_callbacks_and_history_plot(rng, tmp_path):
    model, data = _model(rng)
    seen = []
    history = gpnat.train(model, data, iterations=6, progress=False,
                          callbacks=[lambda it, h: seen.append((it, h.elbo[-1]))])
    assert [s[0] for s in seen] == list(range(1, 7))
    assert history.elbo[-1] == seen[-1][1]
    import matplotlib

    matplotlib.use("Agg")
    ax = history.plot()
    assert len(ax.lines) == 1
    np.testing.assert_allclose(ax.lines[0].get_ydata(), history.elbo)
    history.plot(ax=ax, x="time", label="again").figure.savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000
    history.to_json(tmp_path / "h.json")
    assert History.from_json(tmp_path / "h.json").elbo == history.elbo
    # a notebook cell ending in ``history`` shows one line, not six lists
    text = repr(history)
    assert "\n" not in text and text.startswith(f"History(mode={history.mode!r}, iterations 1–6, ")
    assert f"{history.elbo[-1]:.6g}" in text and "recoveries 0" in text
    assert repr(History()) == "History(mode='', no iterations)"


def test_a_history_with_nan_and_infinities_is_written_as_strict_json(tmp_path):
    """A run stopped at a −∞ ELBO (or Adam-only's NaN γ) still gives a file any JSON parser reads."""
    history = History(iteration=[1, 2, 3], elbo=[-math.inf, math.nan, -1.5], gamma=[math.nan, 0.1, math.inf],
                      rejections=[0, 0, 1], time=[0.5, 0.6, 0.7], failure=[1, 1, 0], scale=[1.0, 0.5, 0.5],
                      mode="fused", compile_time=0.4)
    history.to_json(tmp_path / "h.json")

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    json.loads((tmp_path / "h.json").read_text(), parse_constant=refuse)
    back = History.from_json(tmp_path / "h.json")
    for name in ("elbo", "gamma", "time", "scale"):
        np.testing.assert_array_equal(getattr(back, name), getattr(history, name), err_msg=name)  # NaN == NaN here
    assert (back.iteration, back.failure, back.mode, back.compile_time) == ([1, 2, 3], [1, 1, 0], "fused", 0.4)
    # a file written before (bare -Infinity and NaN, γ's NaN as null) still reads back
    (tmp_path / "old.json").write_text('{"elbo": [-Infinity, NaN], "gamma": [null, 0.1], "mode": "adam"}')
    old = History.from_json(tmp_path / "old.json")
    assert old.elbo[0] == -math.inf and math.isnan(old.elbo[1]) and math.isnan(old.gamma[0])
    # a file that is not a History says so
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json does not hold a History: a JSON object was expected, got list"):
        History.from_json(tmp_path / "list.json")
    (tmp_path / "ragged.json").write_text('{"iteration": [1, 2], "elbo": [-3.0]}')
    with pytest.raises(ValueError, match=r"per-iteration lists differ in length \{'iteration': 2, 'elbo': 1\}"):
        History.from_json(tmp_path / "ragged.json")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(iterations=-1), ValueError, "iterations"),
        (dict(iterations=2, batch_size=0), ValueError, "batch_size"),
        (dict(iterations=2, adam_lr=-0.1), ValueError, "adam_lr"),
        (dict(iterations=2, natgrad=None, adam_lr=None), ValueError, "nothing to train"),
        (dict(iterations=2, natgrad=None, fused=True), ValueError, "fused"),
        (dict(iterations=2, natgrad=0.1), TypeError, "NaturalGradient"),
        (dict(iterations=2, seed="a"), ValueError, "seed must be an integer"),
        (dict(iterations=2, seed=2 ** 70), ValueError, "seed must be an integer"),
        (dict(iterations=2, checkpoint_every="5"), ValueError, "checkpoint_every"),
        (dict(iterations=None), ValueError, "iterations must be a non-negative integer, got None"),
        (dict(iterations="x"), ValueError, "iterations must be a non-negative integer, got 'x'"),
        (dict(iterations=2, batch_size=True), ValueError, "batch_size .* must be a positive integer, got True"),
        (dict(iterations=2, batch_size="all"), ValueError, "batch_size .* must be a positive integer, got 'all'"),
        (dict(iterations=2, adam_lr="0.01"), ValueError, "adam_lr .* must be a positive finite number"),
        (dict(iterations=2, adam_betas=(0.9, 1.0)), ValueError, r"adam_betas\[1\] \(beta_2\) must be a number in"),
        (dict(iterations=2, adam_betas=(None, 0.9)), ValueError, r"adam_betas\[0\] \(beta_1\) must be a number"),
        (dict(iterations=2, adam_betas=0.9), ValueError, r"adam_betas must be a pair \(beta_1, beta_2\), got 0.9"),
        (dict(iterations=2, checkpoint_dir=3), TypeError, "checkpoint_dir must be a path"),
        (dict(iterations=2, fused="no"), TypeError, "fused must be True, False or None, got 'no'"),
        (dict(iterations=2, checkpoint_dir=__file__), ValueError, "checkpoint_dir must be a folder, but .* is a file"),
        (dict(iterations=2, checkpoint_dir=f"{__file__}/ck"), ValueError,
         "checkpoint_dir .* cannot be created: .* is a file"),
        (dict(iterations=2, callbacks=[1]), TypeError, "each callback must be callable"),
        (dict(iterations=2, callbacks=3), TypeError, "callbacks must be a sequence of callables"),
        (dict(iterations=2, recovery="strict"), TypeError, "recovery must be a gpnat.Recovery or None"),
        (dict(iterations=2, strategy="mirrored"), TypeError, "strategy must be a tf.distribute.Strategy"),
    ],
)
def test_bad_arguments(rng, kwargs, error, match):
    model, data = _model(rng)
    before = [v.numpy().copy() for v in model.trainable_variables]
    with pytest.raises(error, match=match):
        gpnat.train(model, data, progress=False, **kwargs)
    for v, b in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


@pytest.mark.parametrize("kwargs", [dict(), dict(fused=False), dict(adam_lr=None), dict(compile=False),
                                    dict(recovery=None)], ids=["fused", "alternating", "natgrad", "eager", "strict"])
def test_a_schedule_that_gives_an_invalid_gamma_stops_training_by_name(rng, kwargs):
    """γ_t not positive and finite (NaN, negative, zero) at t = 5: a ValueError naming the schedule and
    the iteration, the History attached (iteration 5 failed with code 6), and the model as it was after
    iteration 4. The bad value is a variable, so the three runs (from the same start) share one trace."""
    model, data = _model(rng)
    bad = tf.Variable(0.0, dtype=tf.float64)

    def schedule(t):
        return tf.where(tf.cast(t, tf.float64) < 5, tf.constant(0.1, tf.float64), bad)

    natgrad = gpnat.NaturalGradient(schedule)
    state = model.trainable_variables + (natgrad.iterations,)
    start = [v.numpy().copy() for v in state]
    after_4 = []

    def keep(it, history):
        if it == 4:
            after_4.extend(v.numpy().copy() for v in state)

    for value in (float("nan"), -0.5, 0.0):
        bad.assign(value)
        for v, s in zip(state, start):
            v.assign(s)
        after_4.clear()
        with pytest.raises(ValueError, match=r"iteration 5: the gamma schedule .* gave the step size .*not a "
                                             r"positive finite number; training stopped there and the model "
                                             r"holds its last good") as info:
            gpnat.train(model, data, iterations=10, natgrad=natgrad, callbacks=[keep], progress=False, **kwargs)
        history = info.value.history
        assert history.iteration == [1, 2, 3, 4, 5] and history.failure == [0, 0, 0, 0, 6]
        for v, kept in zip(state, after_4):
            np.testing.assert_array_equal(v.numpy(), kept)
        assert np.isfinite(model.elbo(data).numpy())
        if kwargs.get("compile", True):
            assert history.num_traces == (1 if value != value else 0)  # traced for the first (NaN) only


@pytest.mark.parametrize("kwargs", [dict(), dict(fused=False), dict(natgrad=None), dict(compile=False)],
                         ids=["fused", "alternating", "adam", "eager"])
def test_a_streamed_batch_with_nan_stops_training_by_name_in_its_last_good_state(kwargs):
    """A tf.data.Dataset is checked batch by batch: the first batch holding NaN stops training with a
    ValueError naming it (code 7), and the model is bitwise that of a run stopped one iteration earlier."""
    model, (X, Y) = _model(np.random.default_rng(0))
    twin = gpflow.utilities.deepcopy(model)
    Y = Y.copy()
    Y[33, 0] = np.nan  # in the fourth batch of 10 (the rows are not shuffled here)
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(10)
    with pytest.raises(ValueError, match=r"iteration 4: the minibatch contains NaN or inf .*last good state") as info:
        gpnat.train(model, data, iterations=20, progress=False, **kwargs)
    assert info.value.history.failure == [0, 0, 0, 7]
    gpnat.train(twin, data, iterations=3, progress=False, **kwargs)
    for got, want in zip(model.trainable_variables, twin.trainable_variables):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("labels", ["float", "int"])
def test_a_streamed_batch_outside_the_likelihoods_support_stops_training_by_name(labels):
    """Class labels streamed from a tf.data.Dataset are checked in the graph, batch by batch: the
    first batch with a label ≥ num_classes stops training (code 7) by name, as NaN does."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    Y = (X[:, :1] > 0) + (X[:, 1:] > 0).astype(float)  # 0, 1, 2
    Y[25, 0] = 3.0  # in the third batch of 10
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.MultiClass(3), X[:5].copy(), num_data=40,
                       num_latent_gps=3)
    twin = gpflow.utilities.deepcopy(model)
    data = tf.data.Dataset.from_tensor_slices((X, Y.astype(np.int64) if labels == "int" else Y)).batch(10)
    with pytest.raises(ValueError, match=r"iteration 3: the minibatch contains NaN or inf, or a Y outside the "
                                         r"MultiClass likelihood's support \(class labels 0, 1, ..."):
        gpnat.train(model, data, iterations=20, progress=False)
    gpnat.train(twin, data.take(2), iterations=2, progress=False)
    for got, want in zip(model.trainable_variables, twin.trainable_variables):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_a_streamed_batch_that_zeros_do_not_fit_either_stops_training_by_name():
    """train replaces a batch that does not fit by zeros and fails the iteration (code 7); the model's own
    in-graph target check stays out of train's loop, so zeros outside the support (Gamma takes y > 0)
    do not trip it inside the model instead."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(30, 2)), np.exp(rng.normal(size=(30, 1)))
    Y[15, 0] = 0.0  # in the second batch of 10
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gamma(), X[:5].copy(), num_data=30)
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(10)
    with pytest.raises(ValueError, match=r"iteration 2: .* a Y outside the Gamma likelihood's support") as info:
        gpnat.train(model, data, iterations=3, progress=False)
    assert info.value.history.failure == [0, 7]


@pytest.mark.parametrize("natgrad, batch_size, likelihood, mode", [
    (gpnat.NaturalGradient(1.0), None, "gaussian", "alternating"),
    (gpnat.NaturalGradient(0.5), None, "gaussian", "fused"),  # not exact in one step
    (gpnat.NaturalGradient(1.0, coordinates=None), None, "gaussian", "fused"),  # steps in (m, L): not exact
    (gpnat.NaturalGradient(schedules.LogLinear(0.1, 1.0, 5)), None, "gaussian", "fused"),  # not constant
    (gpnat.NaturalGradient(1.0), 20, "gaussian", "fused"),  # minibatches: each step fits one batch
    (gpnat.NaturalGradient(1.0), None, "student_t", "fused"),  # not conjugate
], ids=["gamma-1", "gamma-0.5", "storage-coordinates", "schedule", "minibatch", "student-t"])
def test_fused_none_alternates_only_after_an_exact_natural_step(rng, natgrad, batch_size, likelihood, mode):
    """``fused=None`` alternates where each natural step lands on the optimal q(u): a constant γ = 1 in
    natural coordinates, a Gaussian likelihood, the full data. ``fused=True`` is always fused. The mode is
    chosen before the loop runs (``iterations=0`` runs none, and traces nothing): that each mode then
    trains is test_modes_improve_the_elbo_without_retracing's."""
    model, data = _model(rng, likelihood=gpflow.likelihoods.StudentT() if likelihood == "student_t" else None)
    before = [v.numpy().copy() for v in model.variables]
    history = gpnat.train(model, data, iterations=0, natgrad=natgrad, batch_size=batch_size, progress=False)
    assert history.mode == mode and len(history) == 0 and history.num_traces == 0
    history = gpnat.train(model, data, iterations=0, natgrad=natgrad, batch_size=batch_size, fused=True,
                          progress=False)
    assert history.mode == "fused"
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_adam_betas_are_adams(rng):
    """train(natgrad=None, adam_betas=...) on the full data is a plain tf_keras Adam loop with those betas."""
    model, data = _model(rng)
    reference = gpflow.utilities.deepcopy(model)
    gpnat.train(model, data, iterations=4, natgrad=None, adam_lr=0.05, adam_betas=(0.5, 0.6), progress=False)
    adam = tf_keras.optimizers.Adam(learning_rate=0.05, beta_1=0.5, beta_2=0.6)
    for _ in range(4):
        with tf.GradientTape() as tape:
            loss = reference.training_loss(data)
        adam.apply_gradients(zip(tape.gradient(loss, reference.trainable_variables), reference.trainable_variables))
    for got, want in zip(model.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)


def test_numpy_numbers_are_taken_as_the_plain_numbers_they_hold(rng):
    """NumPy integers and floats (and 1e1 for 10) train exactly as Python ints and floats do."""
    runs = []
    for numbers in (dict(iterations=10, batch_size=20, steps_per_call=5, checkpoint_every=5, adam_lr=0.5),
                    dict(iterations=1e1, batch_size=np.int64(20), steps_per_call=np.int32(5),
                         checkpoint_every=np.int64(5), adam_lr=np.float32(0.5))):
        model, data = _model(np.random.default_rng(0))
        runs.append(gpnat.train(model, data, progress=False, seed=1, **numbers).elbo)
    assert len(runs[0]) == 10
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-6)  # adam_lr: 0.5 in float32 is exact


def test_something_that_is_not_a_model_is_refused(rng):
    _, data = _model(rng)
    with pytest.raises(TypeError, match="model must be a gpnat or gpflow model"):
        gpnat.train("model", data, iterations=2, progress=False)


def test_adam_only_with_every_variable_frozen_is_nothing_to_train(rng):
    model, data = _model(rng)
    gpflow.set_trainable(model, False)
    before = [v.numpy().copy() for v in model.variables]
    with pytest.raises(ValueError, match="nothing to train: natgrad is None and no variable is trainable"):
        gpnat.train(model, data, iterations=2, natgrad=None, progress=False)
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)
    assert gpnat.train(model, data, iterations=2, progress=False).mode == "natgrad"  # q(u) is still stepped


def test_a_single_callback_needs_no_list(rng):
    model, data = _model(rng)
    seen = []
    gpnat.train(model, data, iterations=3, progress=False, callbacks=lambda i, h: seen.append(i))
    assert seen == [1, 2, 3]


@pytest.mark.parametrize(
    "mangle, match",
    [
        (lambda X, Y: (np.where(X > 1.5, np.nan, X), Y), "X contains NaN or inf"),
        (lambda X, Y: (X, Y[:-1]), "same number of rows"),
        (lambda X, Y: (X, Y.ravel()), r"\[N, P\]"),
        (lambda X, Y: (X[:, :1], Y), "X has 1 input dimensions but the inducing inputs Z have 2"),
        (lambda X, Y: (X[:0], Y[:0]), "no rows"),
    ],
)
def test_bad_data_leaves_the_model_unchanged(rng, mangle, match):
    model, data = _model(rng)
    before = [v.numpy().copy() for v in model.trainable_variables]
    with pytest.raises(ValueError, match=match) as error:
        gpnat.train(model, mangle(*data), iterations=3, progress=False)
    assert "in user code" not in str(error.value)  # found on the host, before anything was traced
    for v, b in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


@pytest.mark.parametrize("likelihood, Y, match", [
    (gpflow.likelihoods.MultiClass(3), lambda X: 1.0 + (X[:, :1] > 0) + (X[:, 1:] > 0), "MultiClass.*values 3"),
    (gpflow.likelihoods.Bernoulli(), lambda X: 1.0 + (X[:, :1] > 0), "Bernoulli.*values 2"),
    (gpflow.likelihoods.Poisson(), lambda X: np.round(X[:, :1]), "Poisson.*values -"),
])
@pytest.mark.parametrize("model_class", ["svgp", "gpflow-svgp", "vgp"])
def test_targets_outside_the_likelihoods_support_are_refused_before_training(rng, likelihood, Y, match,
                                                                             model_class):
    """1-based class labels, labels 1/2, negative counts: gpflow computes a wrong or infinite ELBO for
    them without complaint, so train (and VGP's constructor) refuse them by name."""
    X = rng.normal(size=(30, 2))
    data = (X, Y(X))
    L = 3 if isinstance(likelihood, gpflow.likelihoods.MultiClass) else None
    if model_class == "vgp":
        with pytest.raises(ValueError, match=match):
            gpnat.VGP(data, make_kernel(), likelihood, num_latent_gps=L)
        return
    build = gpnat.SVGP if model_class == "svgp" else gpflow.models.SVGP
    model = build(make_kernel(), likelihood, X[:5].copy(), num_data=30, num_latent_gps=L or 1)
    before = [v.numpy().copy() for v in model.trainable_variables]
    with pytest.raises(ValueError, match=match):
        gpnat.train(model, data, iterations=3, progress=False)
    for v, b in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)
    if model_class == "svgp":  # the model's own ELBO, evaluated eagerly, says the same
        with pytest.raises(ValueError, match=match):
            model.elbo(data)


@pytest.mark.parametrize("kwargs", [{}, {"natgrad": None}, {"batch_size": 10}, {"fused": False}])
def test_a_model_whose_elbo_is_not_finite_at_the_start_stops_at_once_unchanged(rng, kwargs):
    """No step can mend a state whose loss is not finite: training stops at iteration 1 and says so
    (it used to roll back every iteration and, for a short run, return as if it had trained)."""
    model, data = _model(rng)
    model.mean_function = gpflow.mean_functions.Constant(1e200)  # f's mean squared overflows
    assert np.isneginf(model.elbo(data).numpy())
    before = [v.numpy().copy() for v in model.trainable_variables]
    with pytest.raises(FloatingPointError, match="not finite at the state training starts from") as error:
        gpnat.train(model, data, iterations=5, progress=False, **kwargs)
    assert error.value.history.failure == [1]
    for v, b in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_an_invalid_q_at_the_start_is_named(rng):
    """A q(u) written without checks (gpflow's multiple_assign) that is not a valid Gaussian: training
    stops at once, names q(u) rather than the hyperparameters, and leaves the model as it was."""
    model, data = _model(rng)
    q_mu = model.q.xi[0].numpy().copy()
    q_mu[0, 0] = np.nan
    gpflow.utilities.multiple_assign(model, {".q.q_mu": q_mu})
    assert not bool(model.q.is_valid())
    before = [v.numpy().copy() for v in model.variables]
    with pytest.raises(FloatingPointError, match="q\\(u\\) is not a valid Gaussian at the state training starts"):
        gpnat.train(model, data, iterations=3, batch_size=20, progress=False)
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_minibatches_need_num_data(rng):
    model, data = _model(rng, num_data=None)
    with pytest.raises(ValueError, match="num_data"):
        gpnat.train(model, data, iterations=2, batch_size=10, progress=False)


def test_adam_only_never_leaves_q_invalid(rng):
    """Adam on natural parameters with a large learning rate breaks q(u): the step is rolled back."""
    model, data = _model(rng, parametrisation="natural", noise=0.01)
    start = [v.numpy().copy() for v in model.trainable_variables]
    with pytest.raises(FloatingPointError, match="left q\\(u\\) invalid") as info:
        gpnat.train(model, data, iterations=200, natgrad=None, adam_lr=0.5, progress=False, recovery=None)
    assert bool(model.q.is_valid())
    assert np.isfinite(model.elbo(data).numpy())
    assert len(info.value.history) >= 1
    # with recovery the run goes on at a smaller learning rate and ends valid
    for v, b in zip(model.trainable_variables, start):
        v.assign(b)
    history = gpnat.train(model, data, iterations=200, natgrad=None, adam_lr=0.5, progress=False)
    assert 5 in history.failure and min(history.scale) < 1.0
    assert bool(model.q.is_valid()) and np.isfinite(model.elbo(data).numpy())
    assert history.elbo[-1] > history.elbo[0]


@pytest.mark.parametrize("parametrisation", ["natural", "expectation"])
def test_adam_only_trains_a_bernoulli_model_on_any_storage(rng, parametrisation):
    """Adam's first step used to leave natural or expectation storage invalid (issue: Adam-only on any storage)."""
    X = rng.uniform(-3, 3, size=(200, 2))
    Y = (np.sin(X[:, :1]) * np.cos(X[:, 1:]) > 0).astype(float)
    model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Bernoulli(), X[:30].copy(),
                       parametrisation=parametrisation, num_data=200)
    history = gpnat.train(model, (X, Y), iterations=40, natgrad=None, batch_size=50, progress=False)
    assert len(history) == 40
    assert bool(model.q.is_valid()) and np.isfinite(model.elbo((X, Y)).numpy())
    assert np.mean(history.elbo[-5:]) > np.mean(history.elbo[:5])


def test_history_is_attached_to_the_error_and_callback_time_is_not_training_time(rng):
    model, data = _overconfident(rng, "natural")
    with pytest.raises(NaturalGradientError) as info:
        gpnat.train(model, data, iterations=3, natgrad=gpnat.NaturalGradient(3.0, max_tries=1), progress=False,
                    recovery=None)
    assert info.value.history.rejections == [1] and info.value.history.failure == [3]
    import time as _time

    model, data = _model(rng)
    history = gpnat.train(model, data, iterations=4, progress=False, callbacks=[lambda it, h: _time.sleep(0.3)])
    assert history.time[-1] - history.time[0] < 0.5


@pytest.mark.parametrize("fused", [False, True], ids=["alternating", "fused"])
def test_steps_in_mean_cholesky_coordinates_recover_instead_of_diverging(rng, fused):
    """(m, L) steps with a large constant γ from the prior overshoot to inf (docs/theory.md).

    Without recovery training stops with a clear error and a finite model; with it, the bad
    iterations are rolled back, γ is lowered, and training finishes with a finite ELBO.
    """
    model, data = _model(rng, noise=0.01)
    start = [v.numpy().copy() for v in model.trainable_variables]
    natgrad = lambda: gpnat.NaturalGradient(1.0, coordinates=None)  # noqa: E731
    with pytest.raises((FloatingPointError, NaturalGradientError), match="iteration") as info:
        gpnat.train(model, data, iterations=50, natgrad=natgrad(), fused=fused, progress=False, recovery=None)
    assert len(info.value.history) < 50
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)
    assert bool(model.q.is_valid()) and np.isfinite(model.elbo(data).numpy())
    for v, b in zip(model.trainable_variables, start):
        v.assign(b)
    history = gpnat.train(model, data, iterations=50, natgrad=natgrad(), fused=fused, progress=False)
    assert history.recoveries >= 1 and len(history) == 50
    assert bool(model.q.is_valid()) and np.isfinite(model.elbo(data).numpy())
    assert history.elbo[-1] > history.elbo[0]


def _spy_on_adam(monkeypatch):
    created = []

    class SpyAdam(tf_keras.optimizers.Adam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    monkeypatch.setattr(tf_keras.optimizers, "Adam", SpyAdam)
    return created


@pytest.mark.parametrize("fused", [False, True], ids=["alternating", "fused"])
def test_a_rolled_back_iteration_restores_every_variable_and_slot_bitwise(rng, monkeypatch, fused):
    """After a bad iteration, model variables, Adam's slots and counter and the natural step's
    counter are bitwise those of the last good state: the start of the iteration when the failure
    shows within it (alternating), the start of the previous one when it shows at the next
    evaluation (fused)."""
    created = _spy_on_adam(monkeypatch)
    model, data = _model(rng, noise=0.01)
    natgrad = gpnat.NaturalGradient(1.0, coordinates=None)
    states = []

    def state():
        variables = list(model.trainable_variables) + list(created[0].variables) + [natgrad.iterations]
        return [v.numpy().copy() for v in variables]

    def record(it, history):
        states.append(state())

    initial = [v.numpy().copy() for v in model.trainable_variables]
    history = gpnat.train(model, data, iterations=30, natgrad=natgrad, fused=fused, progress=False,
                          callbacks=[record], compile=False)
    assert history.recoveries >= 1
    # the state before iteration 1: the model as built, Adam's counter and slots zero, no natural step
    states.insert(0, initial + [np.zeros_like(s) for s in states[0][len(initial):]])
    checked = 0
    for i, reason in enumerate(history.failure, start=1):  # states[i] is the state after iteration i
        back = 1 if reason in (3, 4, 5) else 2  # within the iteration, or found at the next evaluation
        if reason and i - back >= 0 and not any(history.failure[max(i - 1 - back, 0):i - 1]):
            for a, b in zip(states[i], states[i - back]):
                np.testing.assert_array_equal(a, b)
            checked += 1
    assert checked >= 1


def test_a_q_frozen_gpflows_way_is_stepped_and_rolled_back_like_a_trainable_one(rng):
    """gpflow's natural-gradient recipe freezes q_mu and q_sqrt (set_trainable False) so that Adam
    leaves them to the natural step: training such a model equals training it unfrozen, bitwise,
    rolled-back iterations included (they left the stepped q(u) in place, and the run diverged)."""
    X, Y = regression_data(rng, N=N)
    runs = []
    for frozen in (False, True):
        model = gpflow.models.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.01), X[:M].copy(), num_data=N)
        if frozen:
            gpflow.set_trainable(model.q_mu, False)
            gpflow.set_trainable(model.q_sqrt, False)
        history = gpnat.train(model, (X, Y), iterations=12, natgrad=gpnat.NaturalGradient(1.0, coordinates=None),
                              progress=False)
        runs.append((history, [v.numpy() for v in model.variables]))
    (h_free, v_free), (h_frozen, v_frozen) = runs
    assert h_free.recoveries >= 2 and h_frozen.failure == h_free.failure
    np.testing.assert_array_equal(h_frozen.elbo, h_free.elbo)
    for a, b in zip(v_frozen, v_free):
        np.testing.assert_array_equal(a, b)


def test_tf_data_minibatches_need_num_data(rng):
    model, (X, Y) = _model(rng, num_data=None)
    dataset = tf.data.Dataset.from_tensor_slices((X, Y))
    before = [v.numpy().copy() for v in model.trainable_variables]
    with pytest.raises(ValueError, match="num_data"):
        gpnat.train(model, dataset, iterations=2, batch_size=10, progress=False)
    for v, b in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_unfinished_saves_are_cleaned_up_at_the_next_start(tmp_path):
    _checkpoint_run(tmp_path, 5, checkpoint_dir=tmp_path / "ck", checkpoint_every=5)
    (tmp_path / "ck" / ".tmp-0123abcd").mkdir()
    (tmp_path / "ck" / ".tmp-0123abcd" / "ckpt.index").write_text("half-written")
    (tmp_path / "ck" / ".latest-4567").write_text("ckpt-000000099")
    _checkpoint_run(tmp_path, 7, checkpoint_dir=tmp_path / "ck", checkpoint_every=5)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["ckpt-000000005", "ckpt-000000007", "latest"]


@pytest.fixture(scope="module")
def written_checkpoint(tmp_path_factory):
    """The folder of a 5-iteration run's checkpoint (copied by each test that resumes from it)."""
    tmp_path = tmp_path_factory.mktemp("written")
    _checkpoint_run(tmp_path, 5, checkpoint_dir=tmp_path / "ck", checkpoint_every=5)
    return tmp_path / "ck"


def _resume_into(model, data, tmp_path, **kwargs):
    before = [v.numpy().copy() for v in model.variables]
    with pytest.raises(ValueError, match="cannot resume from the checkpoint") as raised:
        gpnat.train(model, data, iterations=8, batch_size=20, progress=False, checkpoint_dir=tmp_path / "ck",
                    **kwargs)
    for v, b in zip(model.variables, before):  # all or nothing: the model keeps its state
        np.testing.assert_array_equal(v.numpy(), b)
    assert (tmp_path / "ck" / "latest").read_text() == "ckpt-000000005"
    return str(raised.value)


@pytest.mark.parametrize(
    "build, kwargs, match",
    [
        (dict(parametrisation="natural"), {}, r"storage differs.*MeanCholesky\(\).*Natural\(\)"),
        ({}, dict(natgrad=None), "the mode differs: the checkpoint has 'fused', this training 'adam'"),
        (dict(M=M + 2), {},
         rf"'\.inducing_variable\.Z' is float64 \[{M}, 2\] in the checkpoint, float64 \[{M + 2}, 2\] here"),
        # the same number of variables of the same shapes, in another role: Gaussian variance, Student-t scale
        (dict(likelihood=gpflow.likelihoods.StudentT(scale=0.3)), {},
         r"the checkpoint saves the model's '\.likelihood\.variance' where this model has '\.likelihood\.scale'"),
        (dict(freeze="lengthscales"), {},
         r"the trainable variables differ: '\.kernel\.lengthscales' is trainable in the checkpoint, frozen here"),
    ],
    ids=["storage", "mode", "shape", "likelihood", "frozen"],
)
def test_a_checkpoint_of_another_training_is_refused_by_name(tmp_path, written_checkpoint, build, kwargs, match):
    shutil.copytree(written_checkpoint, tmp_path / "ck")
    rng = np.random.default_rng(5)
    X, Y = regression_data(rng, N=N)
    likelihood, freeze = build.pop("likelihood", gpflow.likelihoods.Gaussian(0.3)), build.pop("freeze", None)
    model = gpnat.SVGP(make_kernel(), likelihood, X[:build.pop("M", M)].copy(), num_data=N, **build)
    if freeze:
        gpflow.set_trainable(getattr(model.kernel, freeze), False)
    assert re.search(match, _resume_into(model, (X, Y), tmp_path, **kwargs))


def test_a_checkpoint_of_a_gpflow_svgp_is_refused_by_a_gpnat_svgp(tmp_path):
    rng = np.random.default_rng(5)
    X, Y = regression_data(rng, N=N)
    theirs = gpflow.models.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.3), X[:M].copy(), num_data=N)
    gpnat.train(theirs, (X, Y), iterations=5, batch_size=20, progress=False, checkpoint_dir=tmp_path / "ck",
                checkpoint_every=5)
    ours = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.3), X[:M].copy(), num_data=N)
    message = _resume_into(ours, (X, Y), tmp_path)
    assert "the model class differs: the checkpoint has 'gpflow.models.svgp.SVGP'" in message


@pytest.mark.parametrize("what", ["shapes", "invalid q(u)"])
def test_resuming_a_checkpoint_without_its_record_is_all_or_nothing(tmp_path, what):
    """A checkpoint whose gpnat.json is missing (as one written before it existed): a restore that fails
    midway, or that leaves q(u) invalid, puts every variable back."""
    _checkpoint_run(tmp_path, 5, checkpoint_dir=tmp_path / "ck", checkpoint_every=5)
    (tmp_path / "ck" / "ckpt-000000005" / "gpnat.json").unlink()
    rng = np.random.default_rng(5)
    X, Y = regression_data(rng, N=N)
    if what == "shapes":
        model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.3), X[:M + 2].copy(), num_data=N)
    else:  # the mean/Cholesky numbers read as natural parameters: θ₂ = L is not negative definite
        model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.Gaussian(0.3), X[:M].copy(), num_data=N,
                           parametrisation="natural")
    message = _resume_into(model, (X, Y), tmp_path)
    assert what != "invalid q(u)" or "not a valid Gaussian" in message


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(backoff=1.0), "backoff"),
        (dict(patience=0), "patience"),
        (dict(max_consecutive=1.5), "max_consecutive"),
        (dict(patience=None), "Recovery.patience must be a positive integer, got None"),
        (dict(backoff=None), "Recovery.backoff must be a number, got None"),
        (dict(noise="20"), "Recovery.noise must be a number"),
        (dict(check_proposal="yes"), "Recovery.check_proposal must be True, False or None"),
        (dict(collapse=0.0), "collapse"),
        (dict(proposal_check_gamma=-1.0), "proposal_check_gamma"),
        (dict(proposal_check_gamma=float("inf")), "proposal_check_gamma"),
    ],
)
def test_bad_recovery_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gpnat.Recovery(**kwargs)


def test_recovery_counts_are_stored_as_ints():
    policy = gpnat.Recovery(patience=np.int64(20), max_consecutive=5.0)
    assert (policy.patience, policy.max_consecutive) == (20, 5)
    assert type(policy.patience) is int and type(policy.max_consecutive) is int


# ------------------------------------------------------------------ many iterations per call
def _chunked_run(rng_seed, steps_per_call, data_kind="arrays", **kwargs):
    rng = np.random.default_rng(rng_seed)
    model, data = _model(rng, noise=kwargs.pop("noise", 0.3))
    if data_kind == "dataset":
        data = tf.data.Dataset.from_tensor_slices(data)
    natgrad = kwargs.pop("natgrad", gpnat.NaturalGradient(schedules.LogLinear(0.01, 0.5, 10)))
    history = gpnat.train(model, data, iterations=kwargs.pop("iterations", 40), natgrad=natgrad,
                          batch_size=20, seed=3, progress=False, steps_per_call=steps_per_call, **kwargs)
    return model, history


@pytest.mark.parametrize("kwargs", [dict(), dict(fused=True), dict(natgrad=None), dict(adam_lr=None),
                                    dict(data_kind="dataset")],
                         ids=["alternating", "fused", "adam", "natgrad", "tf.data"])
def test_results_do_not_depend_on_the_iterations_per_call(kwargs):
    """One iteration per compiled call and 'auto' (calls of growing size, so boundaries everywhere) agree
    to 1e-12; so do 7 per call for the two hybrid modes (each new model's trace takes seconds). Under
    XLA, bitwise: test_cache.py's test_a_second_call_reuses_the_loop_with_a_fresh_calls_results[XLA]."""
    sizes = (1, 7, "auto") if set(kwargs) <= {"fused"} else (1, "auto")
    runs = [_chunked_run(5, spc, **kwargs) for spc in sizes]
    (reference_model, reference), others = runs[0], runs[1:]
    assert reference.calls == 40 and runs[-1][1].calls < 40
    if 7 in sizes:
        assert runs[1][1].calls == 7
    for model, history in others:
        assert history.num_traces == 1
        assert history.iteration == reference.iteration
        np.testing.assert_allclose(history.elbo, reference.elbo, rtol=1e-12)
        np.testing.assert_allclose(history.gamma, reference.gamma, rtol=1e-12)
        assert history.rejections == reference.rejections and history.failure == reference.failure
        for a, b in zip(model.trainable_variables, reference_model.trainable_variables):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


def test_recovery_inside_a_compiled_call_matches_one_iteration_per_call():
    """Rollbacks and backoff happen inside the loop: the same iterations fail and recover."""
    kwargs = dict(natgrad=gpnat.NaturalGradient(1.0, coordinates=None), noise=0.01, iterations=30)
    (m1, h1), (m2, h2) = (_chunked_run(2, spc, **dict(kwargs)) for spc in (1, 30))
    assert h1.recoveries >= 1 and h2.calls == 2  # one call to trace, then one for the 29 others
    assert h2.failure == h1.failure and h2.scale == h1.scale
    np.testing.assert_allclose(h2.elbo, h1.elbo, rtol=1e-12)
    for a, b in zip(m1.trainable_variables, m2.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


def test_a_call_stops_where_recovery_gives_up(rng):
    """With recovery=None the loop stops inside the call at the first bad iteration and raises there."""
    model, data = _model(rng, noise=0.01)
    with pytest.raises((FloatingPointError, NaturalGradientError)) as info:
        gpnat.train(model, data, iterations=50, natgrad=gpnat.NaturalGradient(1.0, coordinates=None),
                    batch_size=20, progress=False, recovery=None, steps_per_call=50)
    history = info.value.history
    assert history.failure[-1] != 0 and not any(history.failure[:-1])
    assert len(history) < 50
    assert np.isfinite(model.elbo(data).numpy())


def test_callbacks_see_each_call_and_checkpoints_end_calls(rng, tmp_path):
    model, data = _model(rng)
    seen = []
    history = gpnat.train(model, data, iterations=23, progress=False, steps_per_call=5,
                          checkpoint_dir=tmp_path / "ck", checkpoint_every=10,
                          callbacks=[lambda it, h: seen.append((it, len(h)))])
    # the first call runs one iteration; calls end at multiples of 5, at each checkpoint and at the end
    assert seen == [(1, 1), (5, 5), (10, 10), (15, 15), (20, 20), (23, 23)]
    assert history.calls == 6 and history.compile_time > 0
    assert (tmp_path / "ck" / "latest").read_text() == "ckpt-000000023"


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "fast"])
def test_bad_steps_per_call(rng, value):
    model, data = _model(rng)
    before = [v.numpy().copy() for v in model.trainable_variables]
    with pytest.raises(ValueError, match="steps_per_call"):
        gpnat.train(model, data, iterations=3, progress=False, steps_per_call=value)
    for a, b in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(a.numpy(), b)


# ------------------------------------------------------------------ the loss check at the proposal
@pytest.mark.parametrize(
    "gamma, batch_size, kwargs, evaluations",
    [
        (1.0, 20, dict(), 2),  # default: checked on minibatches at γ ≥ 0.5 ...
        (1.0, 20, dict(adam_lr=None), 2),  # ... in natural-only mode too
        (0.1, 20, dict(), 1),  # ... not at small γ
        (1.0, None, dict(fused=True), 1),  # ... nor on the full batch
        (1.0, None, dict(), 2),  # (where train's default alternates: an exact step, a Gaussian likelihood)
        (1.0, 20, dict(recovery=gpnat.Recovery(proposal_check_gamma=2.0)), 1),
        (0.1, 20, dict(recovery=gpnat.Recovery(check_proposal=True)), 2),
        (1.0, 20, dict(recovery=gpnat.Recovery(check_proposal=False)), 1),
        (0.1, None, dict(fused=False), 2),  # alternating: the Adam half evaluates there anyway
    ],
)
def test_where_the_loss_is_checked_at_the_proposal(rng, gamma, batch_size, kwargs, evaluations):
    """Fused and natural-only steps check the proposal where ROBUSTNESS.md found it worth its cost."""
    model, data = _model(rng)
    calls = []
    original = model.training_loss
    model.training_loss = lambda batch: (calls.append(1), original(batch))[1]
    try:
        # two iterations: after a rollback γ is halved once, to 0.5, still checked
        gpnat.train(model, data, iterations=2, natgrad=gpnat.NaturalGradient(gamma), batch_size=batch_size,
                    progress=False, compile=False, **kwargs)
    finally:
        del model.training_loss
    assert len(calls) == 3 * evaluations  # and the pass at the end that checks the last iteration


def test_the_conditional_check_compiled_matches_eager():
    """γ crosses 0.5 mid-run: the in-graph condition checks the same iterations as eager Python."""
    runs = []
    for compiled in (False, True):
        rng = np.random.default_rng(2)
        X, Y = regression_data(rng, N=N)
        Y[::7] += 40.0  # gross outliers under a Student-t likelihood
        model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.StudentT(scale=0.1, df=3.0), X[:M].copy(),
                           num_data=N)
        history = gpnat.train(model, (X, Y), iterations=40, batch_size=20, seed=3, progress=False,
                              natgrad=gpnat.NaturalGradient(schedules.LogLinear(0.05, 1.0, 20)),
                              compile=compiled)
        runs.append((model, history))
    (m1, h1), (m2, h2) = runs
    assert h1.mode == "fused" and h2.num_traces == 1
    assert 4 in h1.failure  # a proposal whose loss rose was rolled back
    assert h2.failure == h1.failure and h2.scale == h1.scale
    np.testing.assert_allclose(h2.elbo, h1.elbo, rtol=1e-12)
    for a, b in zip(m1.trainable_variables, m2.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


def _last_step_goes_bad(rng, mode):
    """(model, data, train's settings) whose first iteration's updates break the model: steps of
    γ = 1 in mean/Cholesky coordinates from the prior overshoot (docs/theory.md); Adam at rate 0.5
    sends a kernel variance without a positivity transform below zero."""
    if mode == "adam":
        model, data = _model(rng)
        model.kernel.variance = gpflow.Parameter(0.3)
        return model, (data[0], 0.01 * data[1]), dict(natgrad=None, adam_lr=0.5)
    model, data = _model(rng, noise=0.01)
    settings = dict(natgrad=gpnat.NaturalGradient(1.0, coordinates=None), fused=True)
    if mode == "natgrad":
        settings = dict(natgrad=settings["natgrad"], adam_lr=None)
    return model, data, settings


@pytest.mark.parametrize("mode", ["fused", "natgrad", "adam"])
def test_the_last_iteration_is_checked_and_rolled_back_bitwise(rng, mode):
    """A bad last iteration is found by the check the next iteration would begin with, which
    train runs at the end: it is rolled back (every variable bitwise as before it), and its
    History entry says why. Repeated one-iteration calls never walk the model to NaN."""
    model, data, settings = _last_step_goes_bad(rng, mode)
    before = [v.numpy().copy() for v in model.variables]
    start = float(model.elbo(data))
    history = gpnat.train(model, data, iterations=1, progress=False, **settings)
    assert history.mode == mode and history.failure[0] in (1, 2) and history.recoveries == 1
    assert history.gamma[0] == 0.0 if mode != "adam" else np.isnan(history.gamma[0])
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)
    assert float(model.elbo(data)) == start
    for _ in range(3):
        history = gpnat.train(model, data, iterations=1, progress=False, **settings)
        assert history.failure == [history.failure[0]] and history.failure[0] in (1, 2)
        assert float(model.elbo(data)) == start and np.isfinite(start)
    # without recovery the first bad iteration raises, the last one too (after rolling it back)
    with pytest.raises((FloatingPointError, NaturalGradientError), match="iteration 1") as info:
        gpnat.train(model, data, iterations=1, progress=False, recovery=None, **settings)
    assert info.value.history.failure[0] in (1, 2)
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)
