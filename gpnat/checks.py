"""Checks of the plain numbers users pass to gpnat (counts, rates), shared by
every public function that takes one.

Each returns the cleaned Python value or raises ``ValueError`` with a message
that names the argument and shows what was given, before anything changes.
``gpnat.schedules.check_gamma`` is the one for step sizes γ.
"""
from numbers import Real

import numpy as np
import tensorflow as tf


def _shown(value):
    return value.numpy() if tf.is_tensor(value) else value


def check_count(value, what: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` ≥ ``minimum`` (0 or 1), or a ValueError naming ``what``.

    Accepted: Python and NumPy integers, integer-valued floats (``1e4``) and
    scalar TensorFlow numbers. Refused: booleans, None, strings, fractions.
    """
    kind = "a positive integer" if minimum == 1 else "a non-negative integer"
    count = None
    if not isinstance(value, (bool, np.bool_, str, bytes)):
        try:
            number = _shown(value)
            count = int(number)
            if count != number:
                count = None
        except (TypeError, ValueError, OverflowError):
            count = None
    if count is None or count < minimum:
        raise ValueError(f"{what} must be {kind}, got {_shown(value)!r}")
    return count


def check_positive(value, what: str) -> float:
    """``value`` as a positive finite ``float`` (NumPy scalars included), or a ValueError naming ``what``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


def check_fraction(value, what: str) -> float:
    """``value`` as a ``float`` in [0, 1) (NumPy scalars included), or a ValueError naming ``what``.

    For decay rates such as Adam's β₁ and β₂.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) or not 0 <= value < 1:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)
