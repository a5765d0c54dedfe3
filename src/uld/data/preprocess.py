"""The paper's in-plane preprocessing: resample to a fixed pixel size, optional body crop.

Every model input (training sample, mining, validation, ``uld predict``) goes through
:func:`prepare_stacks`, so a detector always sees pixels of ``DataConfig.pixel_spacing_mm``
whatever the scan's own pixel size. The geometric change is a :class:`Frame`: boxes go into
the model's frame with :meth:`Frame.to_model` and detections come back to the scan's pixels
with :meth:`Frame.to_native`. All boxes are ``[x1, y1, x2, y2]`` float pixels (x = column).

MULAN's recipe (DATA.md): window, crop to the body (pixels above about -768 HU after a
morphological opening), resize so that a pixel is 0.8 mm with the longer side capped at 512.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from uld.config import DataConfig
from uld.data.stack import slice_stacks, window
from uld.data.volume import Volume

BODY_HU = -768.0
"""Pixels above this are body (MULAN thresholds its 16-bit PNGs at 32000 = -768 HU)."""


@dataclass(frozen=True)
class Frame:
    """Native slice pixels -> model pixels: ``model = (native - offset) * scale``.

    offset_xy: top-left corner of the crop in native pixels; scale_xy: model pixels per native
    pixel; shape_yx: size of the model image.
    """

    offset_xy: tuple[float, float] = (0.0, 0.0)
    scale_xy: tuple[float, float] = (1.0, 1.0)
    shape_yx: tuple[int, int] = (0, 0)

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        ox, oy = self.offset_xy
        sx, sy = self.scale_xy
        return np.array([ox, oy, ox, oy]), np.array([sx, sy, sx, sy])

    def to_model(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Boxes (ndarray[N, 4]) in native pixels -> model pixels."""
        offset, scale = self._vectors()
        return (np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) - offset) * scale

    def to_native(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Boxes (ndarray[N, 4]) in model pixels -> native pixels."""
        offset, scale = self._vectors()
        return np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) / scale + offset


def resampled_shape(
    shape_yx: tuple[int, int], spacing_xy: tuple[float, float], target_mm: float, max_size: int
) -> tuple[int, int]:
    """Size ``(H, W)`` of a slice resampled to ``target_mm`` pixels, longer side <= ``max_size``.

    ``target_mm <= 0`` keeps the pixel size; ``max_size <= 0`` sets no cap.
    """
    height, width = shape_yx
    sx, sy = spacing_xy
    zoom_y, zoom_x = (sy / target_mm, sx / target_mm) if target_mm > 0 else (1.0, 1.0)
    new_h, new_w = height * zoom_y, width * zoom_x
    if max_size > 0 and max(new_h, new_w) > max_size:
        cap = max_size / max(new_h, new_w)
        new_h, new_w = new_h * cap, new_w * cap
    return max(1, round(new_h)), max(1, round(new_w))


def body_box(
    hu_slice: np.ndarray, threshold_hu: float = BODY_HU, opening: int = 7
) -> tuple[int, int, int, int]:
    """Bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of the body on one slice.

    Body = pixels above ``threshold_hu`` after a binary opening with an ``opening`` x
    ``opening`` square (removes the table's thin lines and noise). A slice with no body
    keeps the whole image.
    """
    mask = np.asarray(hu_slice) > threshold_hu
    if opening > 1:
        mask = ndimage.binary_opening(mask, structure=np.ones((opening, opening), dtype=bool))
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, 0, mask.shape[1], mask.shape[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def resize_stack(stack: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``stack`` (ndarray[S, Y, X]) to ``shape_yx`` (float32)."""
    if tuple(stack.shape[-2:]) == tuple(shape_yx):
        return np.ascontiguousarray(stack, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[None]
    out = F.interpolate(tensor, size=tuple(shape_yx), mode="bilinear", align_corners=False)
    return out[0].numpy()


def prepare_stacks(
    volume: Volume, centres: np.ndarray, config: DataConfig
) -> list[tuple[np.ndarray, Frame]]:
    """Model inputs around ``centres`` (ndarray[K] slice indices) of ``volume``.

    For each centre: the 2.5D stack (``config.num_slices`` slices at
    ``config.slice_spacing_mm``, z-interpolated), windowed to [0, 1], cropped to the body of
    the centre slice when ``config.body_crop``, resampled to ``config.pixel_spacing_mm``
    pixels (longer side at most ``config.max_size``). Returns ``(image ndarray[S, H, W]
    float32, frame)`` pairs; ``frame`` maps native boxes to the image and back.
    """
    stacks = slice_stacks(
        volume.hu, np.asarray(centres), volume.spacing_xyz[2], config.slice_spacing_mm, config.num_slices
    )
    out = []
    centre = config.num_slices // 2
    for stack in stacks:
        x0, y0, x1, y1 = 0, 0, stack.shape[2], stack.shape[1]
        if config.body_crop:
            x0, y0, x1, y1 = body_box(stack[centre])
        cropped = window(stack[:, y0:y1, x0:x1], *config.window_hu)
        shape = resampled_shape(
            cropped.shape[1:], volume.spacing_xyz[:2], config.pixel_spacing_mm, config.max_size
        )
        frame = Frame(
            offset_xy=(float(x0), float(y0)),
            scale_xy=(shape[1] / cropped.shape[2], shape[0] / cropped.shape[1]),
            shape_yx=shape,
        )
        out.append((resize_stack(cropped, shape), frame))
    return out
