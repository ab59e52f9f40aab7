"""Argument checks shared by the kernels, the exact engine and the command lines.

A bad argument raises ValueError("<name>: expected ..., got ...") naming the argument, so that a command
line can print that one line and exit with code 2.
"""
from __future__ import annotations

import numpy as np


def check_int(name: str, value, minimum: int) -> int:
    """value as an int; a Python or numpy integer >= minimum (bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)
