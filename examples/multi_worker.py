"""Data-parallel SVGP training on several worker processes with tf.distribute.

On one machine, start N workers (each a process of this script) and wait for them::

    python examples/multi_worker.py --workers 2

Each worker is told who it is by ``TF_CONFIG``; this launcher writes one per
worker with ports on 127.0.0.1 (``gpnat.training.distributed.local_cluster``). On a cluster, start one process per host
yourself, with the same ``cluster`` list on every host and its own ``task``::

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}' python examples/multi_worker.py

(index 1 on host1). Everything else is the same: every worker builds the model
under the strategy's scope, draws the same global batches from the same seed,
evaluates its shard, and one all-reduce per evaluation sums the gradients; the
natural step and Adam then update every worker's copy identically. The chief
(worker 0) writes the checkpoints (``--checkpoint-dir``, on storage all workers
see); after a crash, restart every worker and training resumes from the last one.
"""
import argparse
import os
import subprocess
import sys
import time


def launch(workers: int, argv) -> int:
    """Start ``workers`` copies of this script on 127.0.0.1, each with its TF_CONFIG; wait for all."""
    from gpnat.training.distributed import local_cluster

    procs = [
        subprocess.Popen([sys.executable, __file__, *argv],
                         env=dict(os.environ, TF_CONFIG=config, TF_CPP_MIN_LOG_LEVEL="2"))
        for config in local_cluster(workers)
    ]
    return max(p.wait() for p in procs)


def work(args) -> None:
    """One worker: the strategy first (before any other TensorFlow op), then the usual gpnat code."""
    import gpnat
    from gpnat.training.distributed import multi_worker_strategy

    strategy = multi_worker_strategy()  # checks TF_CONFIG and starts the collective runtime

    import gpflow
    import numpy as np

    rng = np.random.default_rng(0)  # the same data on every worker (in practice: the same files)
    X = rng.uniform(-3, 3, size=(args.num_data, 2))
    Y = np.sin(X[:, :1]) * np.cos(X[:, 1:]) + 0.1 * rng.normal(size=(args.num_data, 1))
    with strategy.scope():  # mirrored variables: one copy per replica, kept identical
        model = gpnat.SVGP(gpflow.kernels.SquaredExponential(lengthscales=[1.0, 1.0]),
                           gpflow.likelihoods.Gaussian(0.1), X[:args.inducing].copy(), num_data=len(X))
    start = time.perf_counter()
    history = gpnat.train(model, (X, Y), iterations=args.iterations, batch_size=args.batch_size,
                          strategy=strategy, checkpoint_dir=args.checkpoint_dir, progress=False)
    seconds = time.perf_counter() - start
    if strategy.cluster_resolver.task_id == 0:
        print(f"{strategy.num_replicas_in_sync} replicas, {len(history)} iterations in {seconds:.1f} s; "
              f"minibatch ELBO {history.elbo[-1]:.2f}, full-data ELBO {float(model.elbo((X, Y))):.2f}, "
              f"noise variance {float(model.likelihood.variance.numpy()):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=0,
                        help="start this many workers on this machine (without it: run as one worker, TF_CONFIG set)")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=256, help="global batch, a multiple of the workers")
    parser.add_argument("--num-data", type=int, default=10_000)
    parser.add_argument("--inducing", type=int, default=50)
    parser.add_argument("--checkpoint-dir", default=None)
    args = parser.parse_args()
    if args.workers:
        argv = ["--iterations", str(args.iterations), "--batch-size", str(args.batch_size),
                "--num-data", str(args.num_data), "--inducing", str(args.inducing)]
        if args.checkpoint_dir:
            argv += ["--checkpoint-dir", args.checkpoint_dir]
        sys.exit(launch(args.workers, argv))
    work(args)


if __name__ == "__main__":
    main()
