"""Data-parallel training on tf.distribute equals the single-device run with the same global batches.

A strategy needs a fresh process (logical devices and the collective runtime
are set up before TensorFlow starts), so the runs happen in
``tests/distributed_script.py`` subprocesses: two logical CPU devices under
``MirroredStrategy``, and two worker processes on 127.0.0.1 ports under
``MultiWorkerMirroredStrategy``.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpnat.training.distributed import local_cluster, multi_worker_strategy

SCRIPT = Path(__file__).with_name("distributed_script.py")
MODES = ["fused", "alternating", "adam", "natgrad", "recovery"]
#: the modes the two worker processes train: one and two evaluations (so all-reduces) per iteration, and
#: rollbacks; Adam alone and natural gradients alone run the sharded code of fused mode (mirrored: all)
WORKER_MODES = ["fused", "alternating", "recovery"]
#: measured agreement is ~1e-15 relative (the sum over two shards is ordered differently)
RTOL = 1e-10


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _load(path):
    data = np.load(path)
    out = {}
    for key in data.files:
        run, field = key.rsplit("/", 1)
        out.setdefault(run, {})[field] = data[key]
    return out


def _assert_same(a, b):
    np.testing.assert_array_equal(a["failure"], b["failure"])  # the same iterations rolled back
    np.testing.assert_allclose(a["elbo"], b["elbo"], rtol=RTOL)
    names = sorted(k for k in a if k.startswith("var"))
    assert names == sorted(k for k in b if k.startswith("var"))
    for name in names:
        np.testing.assert_allclose(a[name], b[name], rtol=RTOL, atol=1e-12)


@pytest.fixture(scope="module")
def mirrored_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mirrored") / "results.npz")
    subprocess.run([sys.executable, str(SCRIPT), "--role", "mirrored", "--out", out],
                   env=_env(), check=True, timeout=600, capture_output=True)
    return _load(out), Path(out + ".errors").read_text()


def _start_workers(tmp, workers, extra_args=(), tag="run"):
    procs = []
    for i, config in enumerate(local_cluster(workers)):
        out = str(tmp / f"{tag}-worker{i}.npz")
        log = open(tmp / f"{tag}-worker{i}.log", "w")
        procs.append((subprocess.Popen([sys.executable, str(SCRIPT), "--role", "worker", "--out", out, *extra_args],
                                       env=_env(TF_CONFIG=config), stdout=log, stderr=subprocess.STDOUT), out, log))
    return procs


def _wait(procs, timeout=600):
    """Exit codes of the workers; any still running after ``timeout`` seconds are killed (and it fails)."""
    deadline = time.time() + timeout
    try:
        return [proc.wait(timeout=max(1, deadline - time.time())) for proc, _, _ in procs]
    finally:
        for proc, _, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


@pytest.mark.parametrize("mode", MODES + ["dataset"])
def test_mirrored_strategy_on_two_cpu_devices_equals_one_device(mirrored_results, mode):
    results, _ = mirrored_results
    _assert_same(results[f"mirrored/{mode}"], results[f"single/{mode}"])
    if mode == "recovery":
        assert np.count_nonzero(results[f"single/{mode}"]["failure"]) >= 1


def test_model_outside_the_scope_and_a_batch_that_does_not_divide_are_refused(mirrored_results):
    _, errors = mirrored_results
    assert "not built under the strategy's scope" in errors
    assert "does not divide among the 2 replicas" in errors
    assert "unchanged=True" in errors


def test_mirrored_streamed_batch_with_nan_stops_by_name(mirrored_results):
    """A Dataset batch with NaN in one replica's shard stops training with code 7 under the strategy too,
    and the model is bitwise that of a run stopped one iteration earlier."""
    _, errors = mirrored_results
    assert "iteration 4: the minibatch contains NaN or inf" in errors
    assert "streamed failures=[0, 0, 0, 7]" in errors
    assert "stopped_as_3=True" in errors


@pytest.fixture(scope="module")
def multi_worker_results(tmp_path_factory):
    """A two-process run killed during its first (fused, checkpointed) training, then restarted: the
    restart resumes that training and goes on to the other WORKER_MODES. Returns the crashed worker's exit
    code, the checkpoint the crash left, and the results (and error lines) of both restarted workers."""
    tmp = tmp_path_factory.mktemp("multi_worker")
    checkpoints = tmp / "checkpoints"
    args = ["--checkpoint-dir", str(checkpoints)]
    # worker 1 dies at iteration 13 (last checkpoint: 10); its peer then waits on it and is stopped too
    crashed = _start_workers(tmp, 2, [*args, "--modes", "fused", "--crash-at", "13"], tag="crash")
    crash_code = crashed[1][0].wait(timeout=600)
    crashed[0][0].kill()
    crashed[0][0].wait()
    for _, _, log in crashed:
        log.close()
    latest = (checkpoints / "latest").read_text().strip()
    procs = _start_workers(tmp, 2, [*args, "--modes", ",".join(WORKER_MODES)], tag="restart")
    codes = _wait(procs)
    assert codes == [0, 0], [(tmp / f"restart-worker{i}.log").read_text()[-2000:] for i in range(2)]
    workers = [(_load(out), Path(out + ".errors").read_text()) for _, out, _ in procs]
    return dict(crash_code=crash_code, latest=latest, workers=workers)


def test_multi_worker_strategy_with_two_processes_equals_one_device(mirrored_results, multi_worker_results):
    results, _ = mirrored_results
    for workers, errors in multi_worker_results["workers"]:
        assert sorted(k.split("/")[1] for k in workers) == sorted(WORKER_MODES + ["dataset", "long"])
        for mode in WORKER_MODES + ["dataset"]:
            _assert_same(workers[f"worker/{mode}"], results[f"single/{mode}"])
        # a Dataset batch with NaN on one worker's shard
        assert "iteration 4: the minibatch contains NaN or inf" in errors
        assert "streamed failures=[0, 0, 0, 7]" in errors and "stopped_as_3=True" in errors


def test_workers_agree_on_the_size_of_every_compiled_call(multi_worker_results):
    """steps_per_call="auto" sizes calls from each process's clock; the workers must still run the same
    calls (else their all-reduces never pair up and both wait forever), here over 400 iterations."""
    first, second = (workers["worker/long"] for workers, _ in multi_worker_results["workers"])
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert len(first["elbo"]) == 400


def test_a_killed_worker_restarted_resumes_from_the_checkpoint(mirrored_results, multi_worker_results):
    """The fused training of the multi-worker run, killed at iteration 13 and restarted, equals the
    uninterrupted single-device run (its saved history continued)."""
    assert multi_worker_results["crash_code"] == 3
    assert multi_worker_results["latest"] == "ckpt-000000010"
    results, _ = mirrored_results
    for workers, _ in multi_worker_results["workers"]:
        assert len(workers["worker/fused"]["elbo"]) == len(results["single/fused"]["elbo"])
        _assert_same(workers["worker/fused"], results["single/fused"])


@pytest.mark.parametrize(
    "config, match",
    [
        ("{not json", "does not parse as JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}), "at least one worker"),
        (json.dumps({"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}), "host:port"),
        (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}), "must name a type"),
        (json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}),
         r"index must be an integer in \[0, 2\)"),
    ],
)
def test_a_tf_config_that_does_not_parse_is_a_clear_error(config, match):
    with pytest.raises(ValueError, match=match):
        multi_worker_strategy(config)


def test_the_multi_worker_example_runs_two_workers():
    example = Path(__file__).resolve().parents[1] / "examples" / "multi_worker.py"
    done = subprocess.run([sys.executable, str(example), "--workers", "2", "--iterations", "20",
                           "--num-data", "400", "--inducing", "10"],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 replicas, 20 iterations" in done.stdout
