"""gpnat.checks: the plain numbers users pass are cleaned or refused by name."""
import numpy as np
import pytest
import tensorflow as tf

from gpnat.checks import check_count, check_fraction, check_positive


@pytest.mark.parametrize("value, expected", [
    (3, 3), (np.int32(3), 3), (np.int64(3), 3), (3.0, 3), (1e4, 10_000), (tf.constant(3), 3),
    (tf.constant(3, tf.int64), 3), (np.array(3), 3),
])
def test_counts_are_accepted_as_python_ints(value, expected):
    count = check_count(value, "n")
    assert count == expected and type(count) is int


@pytest.mark.parametrize("value, shown", [
    (0, "0"), (-2, "-2"), (1.5, "1.5"), (True, "True"), (np.bool_(True), "True"), (None, "None"),
    ("3", "'3'"), ("many", "'many'"), ([3], r"\[3\]"), (np.array([3, 4]), r"array\(\[3, 4\]\)"),
    (float("nan"), "nan"), (float("inf"), "inf"), (tf.constant(2.5), "2.5"),
])
def test_bad_counts_name_the_argument_and_show_the_value(value, shown):
    with pytest.raises(ValueError, match=f"^n must be a positive integer, got {shown}$"):
        check_count(value, "n")


def test_a_count_may_start_at_zero():
    assert check_count(0, "iterations", minimum=0) == 0
    with pytest.raises(ValueError, match="iterations must be a non-negative integer, got -1"):
        check_count(-1, "iterations", minimum=0)


@pytest.mark.parametrize("value", [0.01, 1, np.float32(0.5), np.float64(2.0), np.int64(3)])
def test_positive_numbers_are_accepted_as_python_floats(value):
    cleaned = check_positive(value, "rate")
    assert type(cleaned) is float and cleaned == pytest.approx(float(value))


@pytest.mark.parametrize("value", [0, -0.1, float("nan"), float("inf"), True, None, "0.01", [0.1]])
def test_bad_positive_numbers_name_the_argument(value):
    with pytest.raises(ValueError, match="rate must be a positive finite number"):
        check_positive(value, "rate")


@pytest.mark.parametrize("value", [0, 0.0, 0.5, np.float32(0.9), np.float64(0.999)])
def test_fractions_are_accepted_as_floats(value):
    cleaned = check_fraction(value, "beta")
    assert type(cleaned) is float and cleaned == pytest.approx(float(value))


@pytest.mark.parametrize("value", [1, 1.0, -0.1, float("nan"), float("inf"), True, None, "0.9", [0.9]])
def test_bad_fractions_name_the_argument(value):
    with pytest.raises(ValueError, match=r"beta must be a number in \[0, 1\)"):
        check_fraction(value, "beta")


def _likelihoods():
    import gpflow

    L = gpflow.likelihoods
    return {
        "bernoulli": (L.Bernoulli(), [[0.0], [1.0], [1.0]], [[1.0], [2.0], [1.0]], "values 2"),
        "bernoulli ±1": (L.Bernoulli(), [[-1.0], [1.0]], [[-1.0], [0.5]], "values 0.5"),
        "multiclass": (L.MultiClass(3), [[0.0], [2.0], [1.0]], [[1.0], [2.0], [3.0]], "values 3"),
        "multiclass one-hot": (L.MultiClass(3), [[0.0], [2.0]], np.eye(3), "3 columns"),
        "softmax": (L.Softmax(3), [[0.0], [2.0]], [[0.0], [1.5]], "values 1.5"),
        "ordinal": (L.Ordinal(np.array([0.0, 1.0])), [[0.0], [2.0]], [[3.0], [-1.0]], "values -1, 3"),
        "poisson": (L.Poisson(), [[0.0], [7.0], [2.5]], [[3.0], [-1.0]], "values -1"),
        "exponential": (L.Exponential(), [[0.0], [0.3]], [[-0.3]], "values -0.3"),
        "gamma": (L.Gamma(), [[0.1], [3.0]], [[0.0], [1.0]], "values 0"),
        "beta": (L.Beta(), [[0.0], [0.5], [1.0]], [[1.5]], "values 1.5"),
    }


@pytest.mark.parametrize("name", list(_likelihoods()))
def test_targets_outside_the_likelihoods_support_are_refused_by_name(name):
    from gpnat.checks import check_targets

    likelihood, good, bad, shown = _likelihoods()[name]
    check_targets(likelihood, np.array(good))
    with pytest.raises(ValueError, match=f"the {type(likelihood).__name__} likelihood.*{shown}"):
        check_targets(likelihood, np.array(bad))


def test_likelihoods_without_a_support_and_symbolic_targets_pass():
    import gpflow

    from gpnat.checks import check_targets

    check_targets(gpflow.likelihoods.Gaussian(), np.array([[-1e9], [3.5]]))
    check_targets(gpflow.likelihoods.StudentT(), np.array([[-2.0]]))

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float64)])
    def traced(Y):
        check_targets(gpflow.likelihoods.Poisson(), Y)  # its values are not known here
        return Y

    assert traced(tf.constant([[-1.0]], tf.float64)).numpy()[0, 0] == -1.0


def test_outputs_and_columns_that_disagree_with_the_likelihood_are_refused_by_name():
    import gpflow

    from gpnat.checks import check_outputs

    L, K = gpflow.likelihoods, gpflow.kernels
    se = K.SquaredExponential()
    check_outputs(L.MultiClass(3), se, 3, np.zeros((4, 1)))
    with pytest.raises(ValueError, match="MultiClass likelihood takes 3 latent functions, but the model has 1"):
        check_outputs(L.MultiClass(3), se, 1)
    hetero = L.HeteroskedasticTFPConditional()  # two latent functions, one column of Y
    check_outputs(hetero, se, 2, np.zeros((4, 1)))
    with pytest.raises(ValueError, match="Y has 2 columns but the HeteroskedasticTFPConditional likelihood takes 1"):
        check_outputs(hetero, se, 2, np.zeros((4, 2)))
    check_outputs(L.Gaussian(), se, 2, np.zeros((4, 2)))
    check_outputs(L.Gaussian(), se, 2, np.zeros((4, 1)))  # one column for every output, as gpflow broadcasts it
    with pytest.raises(ValueError, match="Y has 3 columns but the model has 2 outputs"):
        check_outputs(L.Gaussian(), se, 2, np.zeros((4, 3)))
    lmc = K.LinearCoregionalization([K.SquaredExponential(), K.Matern32()], W=np.ones((3, 2)))
    check_outputs(L.Gaussian(), lmc, 2, np.zeros((4, 3)))  # L = 2 latent GPs mixed into P = 3 outputs
    with pytest.raises(ValueError, match="Y has 2 columns but the model has 3 outputs"):
        check_outputs(L.Gaussian(), lmc, 2, np.zeros((4, 2)))
