"""Argument checks shared by the data protocols and the detectors."""
from __future__ import annotations

import numpy as np


def check_ratio(value, name: str, low_open: bool = True) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a real number in (0, 1] (``low_open``)
    or in [0, 1) (NaN and booleans are refused)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    inside = ok and ((0 < value <= 1) if low_open else (0 <= value < 1))
    if not inside:
        raise ValueError(f"{name} must be a number in {'(0, 1]' if low_open else '[0, 1)'}, got {value!r}")
