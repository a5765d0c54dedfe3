"""Pure box maths.

One convention everywhere: a 2D box is ``[x1, y1, x2, y2]`` in float pixels of an axial slice,
x = column, y = row, ``x1 < x2`` and ``y1 < y2``. Areas are ``(x2 - x1) * (y2 - y1)``.
The "+1 pixel" IoU of the Lesion Harvester and DeepLesion evaluations exists only in
:func:`iou_plus1`, used by the evaluation protocols that require it.

Numpy functions take and return ``float64`` arrays and import no torch.
"""

from __future__ import annotations

import numpy as np


def as_boxes(boxes_xyxy: np.ndarray | list) -> np.ndarray:
    """``(N, 4)`` float64 view of anything box-like; an empty input gives ``zeros((0, 4))``."""
    arr = np.asarray(boxes_xyxy, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    return arr.reshape(-1, 4)


def area(boxes_xyxy: np.ndarray) -> np.ndarray:
    """``(N,)`` areas of ``(N, 4)`` boxes; degenerate boxes have area 0."""
    b = as_boxes(boxes_xyxy)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of ``(N, 4)`` and ``(M, 4)`` boxes (continuous convention)."""
    a, b = as_boxes(a_xyxy), as_boxes(b_xyxy)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def iou_plus1(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU with the +1 pixel convention (``w = x2 - x1 + 1``).

    Same arithmetic as Lesion Harvester's ``IoU`` and py-faster-rcnn: inclusive pixel ends,
    union floored at 1e-6.
    """
    a, b = as_boxes(a_xyxy), as_boxes(b_xyxy)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    iw = np.maximum(hi[..., 0] - lo[..., 0] + 1.0, 0.0)
    ih = np.maximum(hi[..., 1] - lo[..., 1] + 1.0, 0.0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0)
    area_b = (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(1e-6, union)


def iou_plus1_pairs(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """``(N,)`` IoU of row ``i`` of ``a`` with row ``i`` of ``b``, +1 pixel convention.

    Element for element the same float64 operations as :func:`iou_plus1`, so
    ``iou_plus1_pairs(a, b)[i] == iou_plus1(a, b)[i, i]`` exactly; for pairs listed once
    (no ``(N, M)`` matrix).
    """
    a, b = as_boxes(a_xyxy), as_boxes(b_xyxy)
    if a.shape != b.shape:
        raise ValueError(f"pairs need boxes of the same count, got {len(a)} and {len(b)}")
    lo = np.maximum(a[:, :2], b[:, :2])
    hi = np.minimum(a[:, 2:], b[:, 2:])
    iw = np.maximum(hi[:, 0] - lo[:, 0] + 1.0, 0.0)
    ih = np.maximum(hi[:, 1] - lo[:, 1] + 1.0, 0.0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0)
    area_b = (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0)
    union = area_a + area_b - inter
    return inter / np.maximum(1e-6, union)
