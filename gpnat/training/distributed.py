r"""Data-parallel training on ``tf.distribute``: shards, one all-reduce, identical updates.

The ELBO is a sum over data, so with R replicas and a global batch of B rows,
replica r evaluates the loss on its shard of B / R rows, divided by R:

    loss_r = −[(N / (B/R)) Σ_{n ∈ shard r} E_q[log p(yₙ | fₙ)] − KL] / R,

and Σ_r loss_r is the single-device loss of the global batch (the KL and
the prior terms, counted R times, are divided by R). Loss and gradients are
summed over replicas by one all-reduce; the natural step and the Adam step
then run in cross-replica context on mirrored variables, so every replica
(and every worker) applies the same update. Everything else (recovery,
minibatch order, the compiled loop) is the single-device code.

Under ``MultiWorkerMirroredStrategy`` each worker is one process running the
same program (``TF_CONFIG`` says who is who, see :func:`multi_worker_strategy`);
every worker draws the same global batch from the same seed and takes its
replicas' shards of it.
"""
import json
import os
import socket
from pathlib import Path
from typing import List, Optional

import tensorflow as tf

__all__ = [
    "multi_worker_strategy",
    "local_cluster",
    "check_strategy",
    "loss_and_gradients",
    "distributed_batches",
    "call_size_agreement",
    "worker_checkpoint_dir",
]


def multi_worker_strategy(tf_config: Optional[str] = None) -> tf.distribute.Strategy:
    """A ``tf.distribute.MultiWorkerMirroredStrategy`` after checking ``TF_CONFIG``.

    :param tf_config: the JSON text of ``TF_CONFIG`` (default: the environment
        variable). It must name a cluster with at least one worker
        (``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker",
        "index": i}}``), and this task must be one of them. Anything else is a
        ``ValueError`` that names the problem, before TensorFlow starts its
        collective runtime. The strategy must be created at the start of the
        program, before other TensorFlow operations.
    """
    text = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    if not text:
        raise ValueError("TF_CONFIG is not set: it must describe the cluster and this worker's task")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG does not parse as JSON ({error.msg} at character {error.pos}): {text!r}") from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task', got {text!r}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(cluster.get("worker"), list) or not cluster["worker"]:
        raise ValueError(f"TF_CONFIG's 'cluster' must list at least one worker as 'host:port', got {cluster!r}")
    for address in cluster["worker"]:
        if not isinstance(address, str) or ":" not in address:
            raise ValueError(f"TF_CONFIG's workers must be 'host:port' strings, got {address!r}")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(f"TF_CONFIG's 'task' must name a type in the cluster ({sorted(cluster)}), got {task!r}")
    index = task.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ValueError(
            f"TF_CONFIG's task index must be an integer in [0, {len(cluster[task['type']])}), got {index!r}"
        )
    if tf_config is not None:
        os.environ["TF_CONFIG"] = tf_config
    return tf.distribute.MultiWorkerMirroredStrategy()


def local_cluster(workers: int) -> List[str]:
    """``TF_CONFIG`` texts for ``workers`` processes on this machine, one per worker, on free 127.0.0.1 ports.

    Set ``TF_CONFIG`` of worker i's process to the i-th text (as
    ``examples/multi_worker.py --workers N`` does). On a cluster, write the same
    ``cluster`` list with the hosts' addresses instead.
    """
    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})
            for i in range(workers)]


def check_strategy(strategy: tf.distribute.Strategy, variables, rows: Optional[int], num_data) -> None:
    """Clear errors for a model built outside the scope, or a batch that does not divide among replicas."""
    outside = [v.name for v in variables if not strategy.extended.variable_created_in_scope(v)]
    if outside:
        raise ValueError(
            f"the model was not built under the strategy's scope ({len(outside)} variables, e.g. "
            f"{outside[0]!r}): build it inside `with strategy.scope():` so its variables are mirrored"
        )
    replicas = strategy.num_replicas_in_sync
    if rows is not None and rows % replicas:
        raise ValueError(
            f"the global batch of {rows} rows does not divide among the {replicas} replicas: choose a "
            f"batch_size that is a multiple of {replicas}"
        )
    if num_data is None:
        raise ValueError(
            "under a strategy each replica sees a shard of the batch, so the model needs num_data = N "
            "to scale its ELBO: construct it with num_data=N"
        )


def loss_and_gradients(strategy: tf.distribute.Strategy, loss_fn, batch, variables, sharded: bool, data_ok=None):
    """The global batch's loss and gradients: each replica takes its shard, one all-reduce sums them.

    Called in cross-replica context (inside the compiled loop). ``batch`` is a
    global batch (X, Y), sliced in-graph per replica, or with ``sharded`` each
    replica's shard (from :func:`distributed_batches`; with one replica per
    process, as under ``MultiWorkerMirroredStrategy``, a plain tensor once it has
    passed through ``strategy.run``). ``loss_fn(batch)`` is the model's training
    loss; ``variables`` are mirrored. ``data_ok``: None, or per-replica scalar
    bools (was each replica's shard finite?), which the same all-reduce combines.
    Returns the summed loss, the summed gradients (zeros where a variable does
    not affect the loss) and whether every shard was finite (None without ``data_ok``).
    """
    replicas = strategy.num_replicas_in_sync

    def replica_loss(X, Y, sliced: bool, ok):
        context = tf.distribute.get_replica_context()
        if sliced:  # a global batch: this replica's rows [r B/R, (r+1) B/R)
            rows = tf.shape(X)[0] // replicas
            start = tf.cast(context.replica_id_in_sync_group, tf.int32) * rows
            X, Y = X[start:start + rows], Y[start:start + rows]
        with tf.GradientTape() as tape:
            loss = loss_fn((X, Y)) / tf.cast(replicas, X.dtype)
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        bad = [] if ok is None else [tf.cast(tf.logical_not(ok), loss.dtype)]  # shards with NaN or inf
        return context.all_reduce(tf.distribute.ReduceOp.SUM, [loss] + list(grads) + bad)

    summed = strategy.run(replica_loss, args=(*batch, not sharded, data_ok))
    summed = [strategy.experimental_local_results(t)[0] for t in summed]
    if data_ok is None:
        return summed[0], summed[1:], None
    return summed[0], summed[1:-1], tf.equal(summed[-1], 0)


def distributed_batches(strategy: tf.distribute.Strategy, batches: tf.data.Dataset):
    """An iterator of per-replica shards of the global batches of ``batches``.

    ``batches`` is the single-device pipeline (global batches, repeated). Through
    ``strategy.distribute_datasets_from_function`` each worker runs it, splits
    each global batch into per-replica batches of B / R rows and keeps its own
    (``shard`` over input pipelines): replica r gets rows [r B/R, (r+1) B/R) of
    every global batch, as with arrays.
    """
    rows = batches.element_spec[0].shape[0]
    replicas = strategy.num_replicas_in_sync
    if rows is None:
        raise ValueError(
            "under a strategy a Dataset of batches needs a static batch size (batch(B, drop_remainder=True)), "
            "or give single examples and batch_size"
        )
    if rows % replicas:
        raise ValueError(
            f"the global batch of {rows} rows does not divide among the {replicas} replicas: choose a "
            f"batch_size that is a multiple of {replicas}"
        )

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(rows)
        shards = batches.unbatch().batch(per_replica, drop_remainder=True)
        return shards.shard(context.num_input_pipelines, context.input_pipeline_id)

    return iter(strategy.distribute_datasets_from_function(dataset_fn))


def call_size_agreement(strategy: Optional[tf.distribute.Strategy]):
    """``size -> size`` that every worker agrees on: the first replica's choice, broadcast.

    ``steps_per_call="auto"`` sizes each compiled call from this process's
    clock, and two workers' clocks differ; calls of different sizes would leave
    their collective operations unpaired (a hang). Under
    ``MultiWorkerMirroredStrategy`` the chief's size is summed into every
    worker (the others contribute 0) between calls; elsewhere nothing changes.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return lambda size: size

    def first_replica(size):
        context = tf.distribute.get_replica_context()
        return tf.where(tf.equal(context.replica_id_in_sync_group, 0), size, tf.zeros_like(size))

    @tf.function
    def broadcast(size):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(first_replica, args=(size,)), axis=None)

    return lambda size: int(broadcast(tf.constant(size, tf.int64)).numpy())


def worker_checkpoint_dir(strategy: Optional[tf.distribute.Strategy], directory: Path) -> Path:
    """Where this worker writes checkpoints: the directory itself, except for non-chief workers.

    Under ``MultiWorkerMirroredStrategy`` every worker saves (all take part),
    but only the chief (worker 0) writes to ``directory``; the others write to
    a subfolder of their own, so no two processes write the same files. All
    workers resume from ``directory``.
    """
    if strategy is None or strategy.extended.should_checkpoint:
        return directory
    task = strategy.cluster_resolver.task_id if strategy.cluster_resolver is not None else 0
    return directory / f".worker-{task}"
