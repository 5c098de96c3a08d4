"""Checkpoints written atomically (temporary folder, then rename), and resumed from.

Beside each checkpoint, ``gpnat.json`` records what a training must agree on to
resume from it (:func:`signature`): the model's class, how each q(u) is stored,
the mode, and the shape and dtype of every variable saved. Resuming checks it
first, then restores all or nothing (:func:`restore`).
"""
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Optional, Sequence

import gpflow
import numpy as np
import tensorflow as tf

from .history import History

__all__ = ["latest_checkpoint", "remove_unfinished_saves", "restore", "signature", "write_checkpoint"]

SIGNATURE_FILE = "gpnat.json"


def signature(model, storages: Sequence[str], mode: str, variables: Sequence[tf.Variable]) -> dict:
    """What a checkpoint must agree on to be resumed (written as ``gpnat.json``).

    :param storages: how each q(u) is stored (the parametrisations' reprs);
        the same numbers mean a different q(u) in another parametrisation.
    :param variables: every variable the checkpoint saves, in a fixed order.
    """
    paths = {}  # the model's variables by gpflow's path (".kernel.lengthscales"), the rest by TensorFlow's name
    for path, value in gpflow.utilities.parameter_dict(model).items():
        paths[id(getattr(value, "unconstrained_variable", value))] = path
    return {
        "model": f"{type(model).__module__}.{type(model).__qualname__}",  # gpflow's SVGP is not gpnat's
        "storage": list(storages),
        "mode": mode,
        # what Adam trains and recovery saves depends on it; the variables below count both
        "trainable": sorted(paths[id(v)] for v in model.trainable_variables if id(v) in paths),
        "variables": [[paths.get(id(v), v.name), list(v.shape), v.dtype.name] for v in variables],
    }


def _mismatch(saved: dict, current: dict) -> Optional[str]:
    """How ``saved`` (a checkpoint's signature) differs from ``current``, or None."""
    for key, what in (("model", "the model class"), ("storage", "q(u)'s storage"), ("mode", "the mode")):
        if saved.get(key) != current[key]:
            return f"{what} differs: the checkpoint has {saved.get(key)!r}, this training {current[key]!r}"
    old, new = saved.get("variables", []), current["variables"]
    paths = [[name for name, *_ in entries if name.startswith(".")] for entries in (old, new)]
    for path_old, path_new in zip(*paths):  # the model's own variables, by gpflow's path
        if path_old != path_new:
            return f"the checkpoint saves the model's {path_old!r} where this model has {path_new!r}"
    if len(paths[0]) != len(paths[1]):
        longer, where = (paths[0], "checkpoint") if len(paths[0]) > len(paths[1]) else (paths[1], "model here")
        return f"the model's {longer[min(map(len, paths))]!r} is only in the {where}"
    if "trainable" in saved and saved["trainable"] != current["trainable"]:  # (older checkpoints lack it)
        was, now = set(saved["trainable"]), set(current["trainable"])
        changes = [f"{path!r} is trainable in the checkpoint, frozen here" for path in sorted(was - now)]
        changes += [f"{path!r} is frozen in the checkpoint, trainable here" for path in sorted(now - was)]
        return "the trainable variables differ: " + changes[0]
    if len(old) != len(new):
        return f"the checkpoint saves {len(old)} variables, this training {len(new)}"
    for (name, *spec), (_, *now) in zip(old, new):
        if spec != now:
            return f"variable {name!r} is {spec[1]} {spec[0]} in the checkpoint, {now[1]} {now[0]} here"
    return None


def latest_checkpoint(directory: Path) -> Optional[Path]:
    pointer = directory / "latest"
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    prefix = directory / name / "ckpt"
    return prefix if (directory / name).is_dir() else None


def remove_unfinished_saves(directory: Path) -> None:
    """Remove the temporary folders and pointer files of saves that were killed midway."""
    if not directory.is_dir():
        return
    for path in list(directory.glob(".tmp-*")) + list(directory.glob(".latest-*")):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def restore(checkpoint: tf.train.Checkpoint, prefix: Path, current: dict, variables: Sequence[tf.Variable],
            problem: Callable[[], Optional[str]]) -> None:
    """Restore ``checkpoint`` from ``prefix``, all or nothing.

    Refuses (ValueError, nothing changed) a checkpoint whose ``gpnat.json`` differs
    from ``current`` (one written before these files existed is not checked). If
    reading fails, or ``problem()`` then names one (e.g. an invalid q(u)), every
    one of ``variables`` gets its value from before back and ValueError is raised.
    """
    folder = prefix.parent
    advice = "resume with the same model and settings, or train into another checkpoint_dir"
    saved = folder / SIGNATURE_FILE
    if saved.exists():
        mismatch = _mismatch(json.loads(saved.read_text()), current)
        if mismatch is not None:
            raise ValueError(f"cannot resume from the checkpoint {folder}: {mismatch}; {advice}")
    before = [np.array(v.numpy()) for v in variables]
    try:
        checkpoint.read(str(prefix)).assert_existing_objects_matched()
        reason = problem()
    except (ValueError, AssertionError, tf.errors.OpError) as error:
        reason = str(error).strip().splitlines()[0]
    if reason is not None:
        for v, value in zip(variables, before):
            v.assign(value)
        raise ValueError(f"cannot resume from the checkpoint {folder}: {reason}; the model keeps its "
                         f"state; {advice}")


def write_checkpoint(checkpoint: tf.train.Checkpoint, directory: Path, step: int,
                     history: History, keep: int = 2, current: Optional[dict] = None) -> Path:
    """Write to a temporary folder, rename it into place, then move the 'latest' pointer.

    ``current``: the training's :func:`signature`, written beside as ``gpnat.json``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    checkpoint.write(str(tmp / "ckpt"))
    history.to_json(tmp / "history.json")
    if current is not None:
        (tmp / SIGNATURE_FILE).write_text(json.dumps(current))
    final = directory / f"ckpt-{step:09d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer_tmp = directory / f".latest-{uuid.uuid4().hex}"
    pointer_tmp.write_text(final.name)
    os.replace(pointer_tmp, directory / "latest")
    old = sorted(p for p in directory.glob("ckpt-*") if p.is_dir())
    for p in old[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    return final
