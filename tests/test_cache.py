"""gpnat.training.cache: a later train call reuses the traced loop, with the results of a fresh one."""
import contextlib
import copy

import gpflow
import numpy as np
import pytest
import tensorflow as tf

import gpnat
from gpnat import schedules
from gpnat.training import cache

from .conftest import make_kernel, regression_data

N, M = 60, 6


def _model(seed=0, likelihood=None):
    X, Y = regression_data(np.random.default_rng(seed), N=N)
    model = gpnat.SVGP(make_kernel(), likelihood or gpflow.likelihoods.Gaussian(0.3), X[:M].copy(), num_data=N)
    return model, (X, Y)


def _values(model):
    return [v.numpy() for v in model.variables]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _same_records(a, b):
    """Every per-iteration record of two Histories, bitwise (NaN γ of Adam-only training included)."""
    for name in ("elbo", "gamma", "rejections", "failure", "scale"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


SETTINGS = {
    "default, minibatch (fused)": dict(batch_size=20),
    "default, full batch (alternating, γ = 1)": dict(),
    "Adam only": dict(natgrad=None, batch_size=20),
    "natural gradients only": dict(adam_lr=None, batch_size=20),
    "XLA": dict(batch_size=20, jit_compile=True),
}


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_a_second_call_reuses_the_loop_with_a_fresh_calls_results(settings):
    """Bitwise: the reused loop (state reset) against a loop traced anew for the same call. Under XLA
    the fresh loop runs one iteration per call, the reused one calls of growing size: the results do
    not depend on the iterations per call there either (test_training checks that for the other modes;
    each XLA compilation takes seconds)."""
    reused, data = _model()
    first = gpnat.train(reused, data, iterations=15, progress=False, seed=1, **settings)
    assert first.num_traces == 1
    fresh = gpflow.utilities.deepcopy(reused)  # the same state, without the loop
    h_reused = gpnat.train(reused, data, iterations=15, progress=False, seed=1, **settings)
    one_per_call = dict(steps_per_call=1) if settings.get("jit_compile") else {}
    h_fresh = gpnat.train(fresh, data, iterations=15, progress=False, seed=1, **settings, **one_per_call)
    assert h_reused.num_traces == 0 and h_fresh.num_traces == 1
    if one_per_call:
        assert h_fresh.calls == 15 and h_reused.calls < 15
    _same_records(h_reused, h_fresh)
    _same(_values(reused), _values(fresh))


def test_recovery_state_does_not_leak_into_the_next_call():
    """A call that rolled back and lowered γ leaves nothing behind: the next starts at scale 1."""
    runs = []
    for reuse in (True, False):
        X, Y = regression_data(np.random.default_rng(2), N=N)
        Y[::7] += 40.0  # gross outliers under a Student-t likelihood
        model = gpnat.SVGP(make_kernel(), gpflow.likelihoods.StudentT(scale=0.1, df=3.0), X[:M].copy(), num_data=N)
        natgrad = gpnat.NaturalGradient(schedules.LogLinear(0.05, 1.0, 20))
        first = gpnat.train(model, (X, Y), iterations=40, batch_size=20, seed=3, progress=False, natgrad=natgrad)
        assert first.recoveries > 0 and min(first.scale) < 1
        if not reuse:
            cache.forget(model)
        second = gpnat.train(model, (X, Y), iterations=40, batch_size=20, seed=3, progress=False, natgrad=natgrad)
        assert second.num_traces == (0 if reuse else 1)
        runs.append((second, _values(model), natgrad.iterations.numpy()))
    (h_a, values_a, steps_a), (h_b, values_b, steps_b) = runs
    _same_records(h_a, h_b)
    _same(values_a, values_b)
    assert steps_a == steps_b > 60  # the user's optimizer kept its step count (accepted steps), as without reuse


def test_new_data_of_the_same_shape_reuse_the_loop_and_are_trained_on():
    model, (X, Y) = _model()
    Y2 = Y + 1.0
    gpnat.train(model, (X, Y), iterations=5, batch_size=20, progress=False)
    twin = gpflow.utilities.deepcopy(model)
    h = gpnat.train(model, (X, Y2), iterations=10, batch_size=20, progress=False)
    h_twin = gpnat.train(twin, (X, Y2), iterations=10, batch_size=20, progress=False)
    assert h.num_traces == 0
    _same_records(h, h_twin)
    _same(_values(model), _values(twin))


def _set_trainable(model, data):
    gpflow.set_trainable(model.kernel.lengthscales, False)


def _num_data(model, data):
    model.num_data = 2 * N


def _likelihood(model, data):
    model.likelihood = gpflow.likelihoods.StudentT()


#: one configuration change after another, each call differing from the one before in the change named
CHANGES = [
    ("batch size", dict(batch_size=30), None),
    ("seed", dict(seed=5), None),
    ("Adam's learning rate", dict(adam_lr=0.01), None),
    ("another NaturalGradient", dict(natgrad=gpnat.NaturalGradient(0.1)), None),
    ("recovery policy", dict(recovery=gpnat.Recovery(patience=3)), None),
    ("a frozen parameter", {}, _set_trainable),
    ("num_data", {}, _num_data),
    ("the likelihood", {}, _likelihood),
    ("Adam only", dict(natgrad=None), None),
]


def test_a_changed_configuration_traces_anew():
    """Whatever the trace baked in differs: a new loop, which replaces the old one. One model goes through
    the changes in turn (each call keeps the earlier changes), so each call differs from the last in one."""
    model, data = _model()
    settings = dict(batch_size=20, progress=False)
    gpnat.train(model, data, iterations=2, **settings)
    for name, change, edit in CHANGES:
        old = model._gpnat_compiled
        settings.update(change)
        if edit is not None:
            edit(model, data)
        # a num_data that is not the data's row count is allowed, with a warning
        with pytest.warns(UserWarning, match="num_data") if model.num_data != N else contextlib.nullcontext():
            h = gpnat.train(model, data, iterations=2, **settings)
        assert h.num_traces == 1, name
        assert model._gpnat_compiled is not old, name


def test_another_row_count_traces_anew():
    model, (X, Y) = _model()
    gpnat.train(model, (X, Y), iterations=3, batch_size=20, progress=False)
    with pytest.warns(UserWarning, match="num_data = 60 but the data have N = 40 rows"):
        h = gpnat.train(model, (X[:40], Y[:40]), iterations=3, batch_size=20, progress=False)
    assert h.num_traces == 1


def test_the_kept_loop_is_not_part_of_the_model(tmp_path):
    """Adam's and the guard's variables stay out of the model's and its checkpoints; copies start without a loop."""
    model, data = _model()
    before = [id(v) for v in model.variables]
    saved_before = tf.train.list_variables(tf.train.Checkpoint(model=model).write(str(tmp_path / "before")))
    gpnat.train(model, data, iterations=3, batch_size=20, progress=False)
    assert isinstance(getattr(model, "_gpnat_compiled"), cache.Compiled)
    assert [id(v) for v in model.variables] == before
    saved_after = tf.train.list_variables(tf.train.Checkpoint(model=model).write(str(tmp_path / "after")))
    assert [name for name, _ in saved_after] == [name for name, _ in saved_before]
    copied = gpflow.utilities.deepcopy(model)
    assert getattr(copied, "_gpnat_compiled", None) is None
    _same(_values(copied), _values(model))
    h = gpnat.train(copied, data, iterations=3, batch_size=20, progress=False)
    assert h.num_traces == 1
    assert copy.copy(model) is not None


def test_nothing_is_kept_without_compiling():
    model, data = _model()
    gpnat.train(model, data, iterations=3, batch_size=20, progress=False, compile=False)
    assert getattr(model, "_gpnat_compiled", None) is None


def test_a_layout_batches_given_arrays_and_holds_none():
    """What a kept loop holds of the data: the batching alone (the arrays are arguments of each call)."""
    from gpnat.training.batches import ArrayBatches

    X, Y = regression_data(np.random.default_rng(0), N=N)
    source = ArrayBatches(X, Y, 20, seed=4)
    layout = source.layout()
    assert layout.X is None and layout.Y is None and source.X is not None
    for step in (0, 3, 7):
        want = source.batch(tf.constant(step))
        got = layout.batch(tf.constant(step), source.X, source.Y)
        for w, g in zip(want, got):
            np.testing.assert_array_equal(w.numpy(), g.numpy())


def test_the_key_holds_what_it_names_by_identity():
    """Identities are only unique among live objects: the key keeps the objects it names alive, so a
    module replaced after tracing cannot hand its id to the new one and pass for it."""
    model, _ = _model(likelihood=gpflow.likelihoods.Bernoulli())
    key = cache.configuration(model, None, False, mode="adam")
    old = model.likelihood
    assert any(o is old for o in key.objects)
    model.likelihood = gpflow.likelihoods.Bernoulli()
    del old
    assert cache.configuration(model, None, False, mode="adam") != key
    assert cache.configuration(model, None, False, mode="adam") == cache.configuration(model, None, False, mode="adam")


def test_a_plain_callable_schedule_is_keyed_by_what_its_trace_bakes_in():
    """A lambda reading a Python setting: a changed setting traces anew (the old trace baked in the
    old γ), an unchanged one reuses the loop; each call's γ is the setting's."""
    settings = {"gamma": 0.1}
    natgrad = gpnat.NaturalGradient(lambda t: settings["gamma"])
    model, data = _model()
    first = gpnat.train(model, data, iterations=3, batch_size=20, progress=False, natgrad=natgrad)
    assert first.gamma == [0.1] * 3
    same = gpnat.train(model, data, iterations=3, batch_size=20, progress=False, natgrad=natgrad)
    assert same.num_traces == 0 and same.gamma == [0.1] * 3
    settings["gamma"] = 0.05
    changed = gpnat.train(model, data, iterations=3, batch_size=20, progress=False, natgrad=natgrad)
    assert changed.num_traces == 1 and changed.gamma == [0.05] * 3


def test_a_numpy_schedule_is_refused_by_name_inside_the_compiled_loop():
    model, data = _model()
    before = _values(model)
    natgrad = gpnat.NaturalGradient(lambda t: 0.5 / np.sqrt(t))
    with pytest.raises(TypeError, match="np.sqrt.*compile=False"):
        gpnat.train(model, data, iterations=3, batch_size=20, progress=False, natgrad=natgrad)
    _same(_values(model), before)
    history = gpnat.train(model, data, iterations=3, batch_size=20, progress=False, natgrad=natgrad, compile=False)
    np.testing.assert_allclose(history.gamma, 0.5 / np.sqrt([1, 2, 3]), rtol=1e-12)
