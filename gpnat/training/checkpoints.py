"""Checkpoints written atomically (temporary folder, then rename), and resumed from."""
import os
import shutil
import uuid
from pathlib import Path
from typing import Optional

import tensorflow as tf

from .history import History

__all__ = ["latest_checkpoint", "remove_unfinished_saves", "write_checkpoint"]


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


def write_checkpoint(checkpoint: tf.train.Checkpoint, directory: Path, step: int,
                      history: History, keep: int = 2) -> Path:
    """Write to a temporary folder, rename it into place, then move the 'latest' pointer."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    checkpoint.write(str(tmp / "ckpt"))
    history.to_json(tmp / "history.json")
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
