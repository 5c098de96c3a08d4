"""One process of the distributed tests (tests/test_distributed.py runs it; a strategy needs a fresh process).

Roles:

* ``--role mirrored``: configures two logical CPU devices, then trains every mode
  once on one device and once under ``MirroredStrategy`` over both, and checks
  the bad-input errors that need two replicas;
* ``--role worker``: one worker of a ``MultiWorkerMirroredStrategy`` (``TF_CONFIG``
  set by the caller), training the ``--modes`` given, a Dataset and a long run; with
  ``--checkpoint-dir`` the fused run checkpoints there (and resumes from what it
  finds), and with ``--crash-at`` the process dies at that iteration.

Results (ELBO traces and final variables) go to ``--out`` as an .npz file.
"""
import argparse
import os
import sys

import numpy as np

MODES = {
    "fused": dict(),
    "alternating": dict(fused=False),
    "adam": dict(natgrad=None),
    "natgrad": dict(adam_lr=None),
    "recovery": dict(),  # γ = 1 stepped in the stored (m, L): some iterations are rolled back
}
N, M, B, ITERATIONS = 96, 6, 32, 25
#: a fused run long enough that steps_per_call="auto" sizes calls from each worker's own clock
LONG_ITERATIONS = 400


def problem():
    rng = np.random.default_rng(7)
    X = rng.uniform(-2, 2, size=(N, 2))
    Y = (np.sin(2 * X[:, :1]) + 0.3 * rng.normal(size=(N, 1)) > 0).astype(float)
    return X, Y


def build(gpnat, gpflow, X):
    kernel = gpflow.kernels.SquaredExponential(lengthscales=[1.0, 1.2])
    return gpnat.SVGP(kernel, gpflow.likelihoods.Bernoulli(), X[:M].copy(), num_data=N)


def run(gpnat, gpflow, mode, strategy=None, iterations=ITERATIONS, dataset=False, **kwargs):
    X, Y = problem()
    if strategy is None:
        model = build(gpnat, gpflow, X)
    else:
        with strategy.scope():
            model = build(gpnat, gpflow, X)
    data = (X, Y)
    if dataset:  # a tf.data.Dataset of single examples
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices((X, Y))
    options = dict(MODES[mode])
    if mode == "recovery":
        options["natgrad"] = gpnat.NaturalGradient(1.0, coordinates=None)
    history = gpnat.train(model, data, iterations=iterations, batch_size=B, progress=False,
                          strategy=strategy, **options, **kwargs)
    values = [np.asarray(v.numpy()) for v in model.trainable_variables]
    return np.asarray(history.elbo), np.asarray(history.failure), values


def save(out, results):
    arrays = {}
    for key, (elbo, failure, values) in results.items():
        arrays[f"{key}/elbo"] = elbo
        arrays[f"{key}/failure"] = failure
        for i, v in enumerate(values):
            arrays[f"{key}/var{i}"] = v
    np.savez(out, **arrays)


def mirrored(out):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import gpflow

    import gpnat

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}
    for mode in MODES:
        results[f"single/{mode}"] = run(gpnat, gpflow, mode)
        results[f"mirrored/{mode}"] = run(gpnat, gpflow, mode, strategy)
    results["single/dataset"] = run(gpnat, gpflow, "fused", dataset=True)
    results["mirrored/dataset"] = run(gpnat, gpflow, "fused", strategy, dataset=True)
    errors = []
    X, Y = problem()
    try:  # a model built outside the scope
        gpnat.train(build(gpnat, gpflow, X), (X, Y), iterations=1, batch_size=B, strategy=strategy, progress=False)
    except ValueError as error:
        errors.append(str(error))
    with strategy.scope():
        model = build(gpnat, gpflow, X)
    before = [v.numpy().copy() for v in model.trainable_variables]
    try:  # a global batch that does not divide among the replicas
        gpnat.train(model, (X, Y), iterations=1, batch_size=B + 1, strategy=strategy, progress=False)
    except ValueError as error:
        errors.append(str(error))
    unchanged = all(np.array_equal(v.numpy(), b) for v, b in zip(model.trainable_variables, before))
    save(out, results)
    with open(out + ".errors", "w") as f:
        f.write("\n".join(errors + streamed_nan(gpnat, gpflow, strategy)) + f"\nunchanged={unchanged}\n")


def streamed_nan(gpnat, gpflow, strategy):
    """Lines of text: a Dataset whose fourth batch holds NaN in the second replica's shard, under the
    strategy. Each replica checks its shard; training must stop by name at that iteration, the model
    bitwise that of a run of three iterations."""
    import tensorflow as tf

    X, Y = problem()
    Y = Y.copy()
    half = B // 2
    Y[3 * half + half // 2 + 1, 0] = np.nan  # the batches are not shuffled
    streamed = tf.data.Dataset.from_tensor_slices((X, Y)).batch(half, drop_remainder=True)
    with strategy.scope():
        stopped, twin = build(gpnat, gpflow, X), build(gpnat, gpflow, X)
    lines = []
    try:
        gpnat.train(stopped, streamed, iterations=ITERATIONS, strategy=strategy, progress=False)
    except ValueError as error:
        lines += [str(error), f"streamed failures={error.history.failure}"]
    gpnat.train(twin, streamed, iterations=3, strategy=strategy, progress=False)
    same = all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(stopped.trainable_variables,
                                                                    twin.trainable_variables))
    return lines + [f"stopped_as_3={same}"]


def worker(out, modes, checkpoint_dir, crash_at, iterations):
    import gpflow

    import gpnat
    from gpnat.training.distributed import multi_worker_strategy

    strategy = multi_worker_strategy()
    results = {}
    for mode in modes:
        kwargs = {}
        if checkpoint_dir and mode == "fused":  # resumed from there after a crash; the other modes start afresh
            kwargs = dict(checkpoint_dir=checkpoint_dir, checkpoint_every=5)
        if crash_at:
            def crash(iteration, history):
                if iteration >= crash_at:
                    os._exit(3)  # killed mid-run: no clean-up, no checkpoint
            kwargs["callbacks"] = [crash]
        results[f"worker/{mode}"] = run(gpnat, gpflow, mode, strategy, iterations=iterations, **kwargs)
    if not crash_at:
        results["worker/dataset"] = run(gpnat, gpflow, "fused", strategy, dataset=True)
        results["worker/long"] = run(gpnat, gpflow, "fused", strategy, iterations=LONG_ITERATIONS)
        with open(out + ".errors", "w") as f:
            f.write("\n".join(streamed_nan(gpnat, gpflow, strategy)) + "\n")
    save(out, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["mirrored", "worker"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--crash-at", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    args = parser.parse_args()
    if args.role == "mirrored":
        mirrored(args.out)
    else:
        worker(args.out, args.modes.split(","), args.checkpoint_dir, args.crash_at, args.iterations)
    sys.exit(0)
