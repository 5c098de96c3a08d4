"""History: what happened in each iteration of :func:`gpnat.train`."""
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

__all__ = ["History"]


@dataclass
class History:
    """What happened in each iteration of :func:`~gpnat.train`.

    Lists have one entry per iteration run (including those restored from a
    checkpoint):

    * ``iteration``: 1-based;
    * ``elbo``: the minibatch ELBO estimate, −loss, before the iteration's updates;
    * ``gamma``: γ used by the natural step (0 when rejected; NaN without
      natural gradients);
    * ``rejections``: proposals rejected;
    * ``time``: wall-clock seconds of training at the end of the iteration,
      excluding callbacks and checkpoint writing. Iterations run many to one
      compiled call (``steps_per_call``), and the host sees only the call's
      end, so within a call the time is spread evenly over its iterations.
      The first call runs one iteration and includes tracing and compiling
      (none when the loop traced by an earlier call is reused), which
      ``compile_time`` reports;
    * ``failure``: 0, or why the iteration was rolled back to the last good
      state (a code of :data:`gpnat.recovery.REASONS`). An iteration's
      updates are checked when the next one begins; the last iteration's by
      the same check at the end of the run, which rolls it back, with its
      reason here, if it fails;
    * ``scale``: the factor recovery puts on γ (or on Adam's learning rate in
      Adam-only training); below 1 after a recovery.

    ``mode`` names the training mode, ``num_traces`` counts how often this
    ``train`` call traced the compiled loop (1 means no retracing; 0 that it
    reused the loop an earlier call on the model traced with the same
    configuration, :mod:`gpnat.training.cache`) and ``calls`` how many
    compiled calls ran the iterations.
    """

    iteration: List[int] = field(default_factory=list)
    elbo: List[float] = field(default_factory=list)
    gamma: List[float] = field(default_factory=list)
    rejections: List[int] = field(default_factory=list)
    time: List[float] = field(default_factory=list)
    failure: List[int] = field(default_factory=list)
    scale: List[float] = field(default_factory=list)
    mode: str = ""
    num_traces: int = 0
    compile_time: float = 0.0
    calls: int = 0

    @property
    def recoveries(self) -> int:
        """Iterations rolled back to the last good state (``failure`` not 0)."""
        return int(sum(1 for f in self.failure if f))

    def recovered_at(self) -> List[int]:
        """The iterations that were rolled back, each with its reason in :data:`gpnat.recovery.REASONS`."""
        return [it for it, f in zip(self.iteration, self.failure) if f]

    @property
    def total_rejections(self) -> int:
        """Rejected proposals over the whole run."""
        return int(sum(self.rejections))

    def extend(self, first: int, loss, failure, gamma, rejections, scale, start: float, end: float) -> None:
        """Append the records of iterations ``first``, ``first + 1``, ... run in one call.

        The arrays have one entry per iteration; their times are spread evenly
        between ``start`` and ``end`` (seconds of training).
        """
        k = len(loss)
        self.iteration.extend(range(first, first + k))
        self.elbo.extend((-np.asarray(loss, dtype=float)).tolist())
        self.gamma.extend(np.asarray(gamma, dtype=float).tolist())
        self.rejections.extend(int(r) for r in rejections)
        self.failure.extend(int(f) for f in failure)
        self.scale.extend(np.asarray(scale, dtype=float).tolist())
        self.time.extend((start + (end - start) * np.arange(1, k + 1) / k).tolist())
        self.calls += 1

    def roll_back_last(self, failure: int) -> None:
        """Record that the last iteration's updates were rolled back, for reason ``failure``."""
        self.failure[-1] = int(failure)
        if not math.isnan(self.gamma[-1]):
            self.gamma[-1] = 0.0

    def __len__(self) -> int:
        return len(self.iteration)

    def __repr__(self) -> str:
        """One line (the lists are in the attributes), e.g. for a notebook cell that ends in ``history``."""
        head = f"History(mode={self.mode!r}, "
        if not self.iteration:
            return head + "no iterations)"
        calls = f"{self.calls} compiled call" + ("" if self.calls == 1 else "s")
        return (head + f"iterations {self.iteration[0]}–{self.iteration[-1]}, "
                f"ELBO estimate {self.elbo[0]:.6g} → {self.elbo[-1]:.6g}, recoveries {self.recoveries}, "
                f"rejected proposals {self.total_rejections}, {calls}, traced {self.num_traces}×)")

    def to_json(self, path: Union[str, Path]) -> None:
        """Write the history to a file of strict JSON, which has no NaN or infinity: a NaN float is
        written as null, +∞ and −∞ as the strings ``"Infinity"`` and ``"-Infinity"``
        (:meth:`from_json` reads them back)."""
        data = asdict(self)
        for name in _FLOATS:
            data[name] = _encode(data[name])
        Path(path).write_text(json.dumps(data, allow_nan=False))

    @classmethod
    def from_json(cls, path: Union[str, Path]) -> "History":
        data = json.loads(Path(path).read_text())  # also reads the bare NaN / -Infinity of older files
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a History: a JSON object was expected, got {type(data).__name__}")
        lengths = {k: len(v) for k, v in data.items() if k in _LISTS and isinstance(v, list)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{path} does not hold a History: its per-iteration lists differ in length {lengths}")
        for name in _FLOATS:
            if name in data:
                data[name] = _decode(data[name])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def plot(self, ax=None, x: str = "iteration", label: Optional[str] = None):
        """Draw the ELBO trace with matplotlib (optional dependency); returns the axes.

        :param x: ``"iteration"`` or ``"time"`` (wall-clock seconds).
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - matplotlib is an install requirement
            raise ImportError("History.plot needs matplotlib: pip install matplotlib") from e
        if x not in ("iteration", "time"):
            raise ValueError(f"x must be 'iteration' or 'time', got {x!r}")
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        ax.plot(getattr(self, x), self.elbo, label=label or self.mode)
        ax.set_xlabel("iteration" if x == "iteration" else "wall-clock time (s)")
        ax.set_ylabel("ELBO estimate")
        if label or self.mode:
            ax.legend()
        return ax


#: History's per-iteration lists, one entry per iteration each
_LISTS = ("iteration", "elbo", "gamma", "rejections", "time", "failure", "scale")
#: History's float fields (lists, and compile_time), which may hold NaN or ±∞
_FLOATS = ("elbo", "gamma", "time", "scale", "compile_time")


def _encode(value):
    """A float, or a list of them, as strict JSON values: NaN → None, ±∞ → "Infinity" / "-Infinity"."""
    if isinstance(value, list):
        return [_encode(v) for v in value]
    value = float(value)
    if math.isnan(value):
        return None
    return ("Infinity" if value > 0 else "-Infinity") if math.isinf(value) else value


def _decode(value):
    """The inverse of :func:`_encode`."""
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return math.nan if value is None else float(value)
