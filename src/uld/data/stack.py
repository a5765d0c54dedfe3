"""2.5D input: a stack of slices at a fixed z spacing around a centre slice, windowed.

Pure numpy. A stack of ``S`` slices around slice ``z`` samples the volume at the positions
``z + k * target_mm / slice_mm`` for ``k = -(S-1)/2 .. (S-1)/2`` (in slice indices), each by
linear interpolation between the two nearest real slices, each weighted by its own offset
(MULAN computed one weight from the first offset and reused it; we do not). Positions past
either end of the volume take the end slice (edge replication).
"""

from __future__ import annotations

import numpy as np


def stack_positions(
    centres: np.ndarray, depth: int, slice_mm: float, target_mm: float, num_slices: int
) -> np.ndarray:
    """Fractional slice positions ``(K, S)`` of the stacks around ``centres`` (K,), clipped."""
    if num_slices < 1 or num_slices % 2 == 0:
        raise ValueError(f"num_slices must be odd and positive, got {num_slices}")
    if not (np.isfinite(slice_mm) and slice_mm > 0):
        raise ValueError(f"slice spacing must be a positive number of mm, got {slice_mm}")
    half = num_slices // 2
    offsets = np.arange(-half, half + 1, dtype=np.float64) * (target_mm / slice_mm)
    positions = np.asarray(centres, dtype=np.float64).reshape(-1, 1) + offsets[None, :]
    return np.clip(positions, 0.0, depth - 1.0)


def interpolation_weights(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For fractional positions, the lower and upper slice indices and the upper's weight.

    ``value = (1 - w) * slice[lo] + w * slice[hi]``; an integer position has ``w = 0``.
    """
    lo = np.floor(positions).astype(np.int64)
    w = positions - lo
    hi = np.where(w > 0, lo + 1, lo)
    return lo, hi, w


def slice_stacks(
    hu: np.ndarray, centres: np.ndarray, slice_mm: float, target_mm: float, num_slices: int
) -> np.ndarray:
    """Interpolated stacks in HU.

    hu (ndarray[Z, Y, X]): the volume.
    centres (ndarray[K], int): centre slices.
    Returns ndarray[K, S, Y, X] float32.
    """
    positions = stack_positions(centres, hu.shape[0], slice_mm, target_mm, num_slices)
    lo, hi, w = interpolation_weights(positions)
    low = hu[lo].astype(np.float32)
    high = hu[hi].astype(np.float32)
    weight = w.astype(np.float32)[:, :, None, None]
    return low + weight * (high - low)


REVIEW_WINDOW_HU: tuple[float, float] = (-160.0, 240.0)
"""The soft-tissue window every figure for a reader shows (overlays, the mined-lesion gallery)."""

def window(hu: np.ndarray, low: float, high: float, top: float = 1.0) -> np.ndarray:
    """Map HU linearly so that ``low -> 0`` and ``high -> top``, clipped; float32.

    ``top = 1`` gives [0, 1] (what ``uld`` feeds its detectors); ``top = 255`` gives the
    0..255 range of the paper's MMDetection pipeline.
    """
    if not high > low:
        raise ValueError(f"window needs low < high, got ({low}, {high})")
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) * np.float32(top / (high - low))
    return np.clip(out, 0.0, np.float32(top))
