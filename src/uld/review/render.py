"""The review's pictures: small PNGs of a lesion's slices in the soft-tissue window.

Per lesion, ``2 * neighbours + 1`` crops centred on the peak box (the peak slice and its
neighbours, the same region on each) and one view of the whole peak slice. Drawn with Pillow
(no matplotlib: a 2,000-lesion review writes ~16,000 of them).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from uld.data.stack import REVIEW_WINDOW_HU, window

CROP_PX = 192
"""Side of a crop on the page, in screen pixels."""
CONTEXT_PX = 192
"""Longer side of the whole-slice view."""
_LESION_RGB = (255, 208, 0)  # the overlays' highlight colour (uld.infer.export)
_PEAK_RGB = (0, 200, 255)


def crop_region(box: Sequence[float], shape_yx: tuple[int, int], min_side: float = 48.0,
                scale: float = 3.0) -> tuple[float, float, float]:
    """The square ``(x0, y0, side)`` in pixels shown around ``box`` ``(x1, y1, x2, y2)``: ``scale``
    times its longer side (at least ``min_side``, at most the image), centred on the box and
    shifted to lie inside the image ``(Y, X)``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    height, width = shape_yx
    side = min(max(scale * max(x2 - x1, y2 - y1), min_side), float(max(height, width)))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    x0 = min(max(cx - side / 2, 0.0), max(width - side, 0.0))
    y0 = min(max(cy - side / 2, 0.0), max(height - side, 0.0))
    return x0, y0, side


def _gray(slice_hu: np.ndarray, win: tuple[float, float]) -> Image.Image:
    return Image.fromarray((window(slice_hu, win[0], win[1], 255.0) + 0.5).astype(np.uint8), "L")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _rect(draw: ImageDraw.ImageDraw, box: Sequence[float], colour: tuple[int, int, int], width: int,
          dashed: bool = False) -> None:
    x1, y1, x2, y2 = box
    if not dashed:
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        return
    step = 6
    for a, b, fixed, horizontal in ((x1, x2, y1, True), (x1, x2, y2, True), (y1, y2, x1, False),
                                    (y1, y2, x2, False)):
        t = a
        while t < b:
            e = min(t + step / 2, b)
            draw.line((t, fixed, e, fixed) if horizontal else (fixed, t, fixed, e), fill=colour, width=width)
            t += step


def render_crop(slice_hu: np.ndarray, region: tuple[float, float, float], box: Sequence[float] | None,
                peak_box: Sequence[float], win: tuple[float, float] = REVIEW_WINDOW_HU) -> bytes:
    """PNG bytes: ``slice_hu`` (ndarray[Y, X], HU) cropped to ``region`` ``(x0, y0, side)``,
    scaled to twice its size or :data:`CROP_PX`, whichever is smaller (the page shows it at
    :data:`CROP_PX`; small crops stay small on disk), with the lesion's ``box`` on this slice
    solid (``None``: no box here) and the peak box dashed for reference where the slice has none."""
    x0, y0, side = region
    crop = _gray(slice_hu, win).crop((int(x0), int(y0), int(x0) + round(side), int(y0) + round(side)))
    size = min(CROP_PX, 2 * round(side))
    crop = crop.resize((size, size), Image.Resampling.BILINEAR).convert("RGB")
    scale = size / round(side)
    draw = ImageDraw.Draw(crop)

    def shown(b: Sequence[float]) -> tuple[float, ...]:
        return ((b[0] - int(x0)) * scale, (b[1] - int(y0)) * scale,
                (b[2] - int(x0)) * scale, (b[3] - int(y0)) * scale)

    if box is not None:
        _rect(draw, shown(box), _LESION_RGB, 2)
    else:
        _rect(draw, shown(peak_box), _PEAK_RGB, 1, dashed=True)
    return _png(crop)


def render_context(slice_hu: np.ndarray, box: Sequence[float], region: tuple[float, float, float],
                   win: tuple[float, float] = REVIEW_WINDOW_HU) -> bytes:
    """PNG bytes: the whole slice (ndarray[Y, X], HU), longer side :data:`CONTEXT_PX`, with the
    box solid and the crop's region thin."""
    image = _gray(slice_hu, win)
    height, width = slice_hu.shape
    scale = CONTEXT_PX / max(height, width)
    image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                         Image.Resampling.BILINEAR).convert("RGB")
    draw = ImageDraw.Draw(image)
    x0, y0, side = region
    draw.rectangle((x0 * scale, y0 * scale, (x0 + side) * scale, (y0 + side) * scale), outline=_PEAK_RGB)
    b = [v * scale for v in box]
    draw.rectangle((b[0] - 1, b[1] - 1, b[2] + 1, b[3] + 1), outline=_LESION_RGB, width=2)
    return _png(image)
