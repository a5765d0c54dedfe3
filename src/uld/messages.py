"""How a bad value reads in a one-line error message; used by every reader and checker.

Only the standard library and numpy are imported, so any layer may use these.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["decode_error", "plain", "short_repr"]


def plain(value: float) -> str:
    """A number as a user reads it: ``36`` or ``0.5`` or ``nan``, never ``np.float64(36.0)``."""
    value = float(value)
    return f"{value:g}" if math.isfinite(value) else str(value)


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to 80 characters; an array shows as a list (``[1.0, 2.0]``)."""
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def decode_error(path: str | Path, exc: UnicodeDecodeError) -> str:
    """One line for a text file that is not UTF-8."""
    return (f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position {exc.start}); "
            "save it as UTF-8")
