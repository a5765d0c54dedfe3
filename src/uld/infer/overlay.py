"""One axial slice, windowed, with detection boxes drawn over it: a PNG a reader can open.

Drawn with matplotlib's Agg canvas (no display, no pyplot global state). The image is shown in
pixel coordinates with pixel centres at integer indices (matplotlib's ``imshow`` convention,
and the box convention of :mod:`uld.infer.export`): pixel ``(x, y)`` covers
``[x - 0.5, x + 0.5] x [y - 0.5, y + 0.5]``, so a box ``[x1, y1, x2, y2]`` is drawn from
``(x1, y1)`` to ``(x2, y2)`` as is. A pixel is shown ``spacing_y / spacing_x`` times as tall as
it is wide, so millimetres look the same in both directions.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from uld.atomic import write_bytes
from uld.boxes import as_boxes
from uld.data.stack import REVIEW_WINDOW_HU
from uld.data.stack import window as to_grey

__all__ = ["slice_overlay_figure", "write_png"]

HIGHLIGHT_COLOR = "#ffd000"
OTHER_COLOR = "#00c8ff"
_FIG_WIDTH_IN = 6.4
_TITLE_BAND_IN = 0.5


def slice_overlay_figure(
    hu_slice: np.ndarray,
    spacing_xy: tuple[float, float],
    boxes_xyxy: np.ndarray | Sequence[Sequence[float]] = (),
    highlight_xyxy: Sequence[float] | None = None,
    label: str = "",
    title: str = "",
    window: tuple[float, float] = REVIEW_WINDOW_HU,
    dpi: int = 100,
) -> Figure:
    """A figure (with an Agg canvas) of one slice and its boxes.

    hu_slice (ndarray[Y, X]): Hounsfield units of the slice, row y, column x.
    spacing_xy: millimetres between columns and between rows (sets the aspect).
    boxes_xyxy (ndarray[N, 4]): x1, y1, x2, y2 in pixels, drawn thin (other detections).
    highlight_xyxy (4 floats or None): the box drawn bold, with ``label`` beside it.
    The layout depends only on the slice shape, spacing, ``title`` and ``dpi``, so a figure with
    boxes and one without line up pixel for pixel.
    """
    hu_slice = np.asarray(hu_slice)
    if hu_slice.ndim != 2 or 0 in hu_slice.shape:
        raise ValueError(f"a slice is a non-empty [y, x] array, got shape {hu_slice.shape}")
    sx, sy = (float(s) for s in spacing_xy)
    if not (sx > 0 and sy > 0 and np.isfinite(sx) and np.isfinite(sy)):
        raise ValueError(f"pixel spacing must be two positive millimetre values, got {tuple(spacing_xy)}")
    ny, nx = hu_slice.shape
    ratio = float(np.clip((ny * sy) / (nx * sx), 0.25, 4.0))
    image_h = _FIG_WIDTH_IN * ratio
    fig = Figure(figsize=(_FIG_WIDTH_IN, image_h + _TITLE_BAND_IN), dpi=dpi)
    FigureCanvasAgg(fig)
    top = image_h / (image_h + _TITLE_BAND_IN)
    ax = fig.add_axes((0.01, 0.01, 0.98, top - 0.01))
    ax.imshow(to_grey(hu_slice, *window), cmap="gray", vmin=0.0, vmax=1.0,
              interpolation="nearest", aspect=sy / sx)
    for x1, y1, x2, y2 in as_boxes(boxes_xyxy):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                               edgecolor=OTHER_COLOR, linewidth=0.8))
    if highlight_xyxy is not None:
        x1, y1, x2, y2 = (float(v) for v in highlight_xyxy)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                               edgecolor=HIGHLIGHT_COLOR, linewidth=2.5))
        if label:
            above = y1 > 0.08 * ny  # room above the box; otherwise write the label under it
            ax.text(x1, y1 - 1.0 if above else y2 + 1.0, label, color=HIGHLIGHT_COLOR,
                    fontsize=9, fontweight="bold", va="bottom" if above else "top", ha="left",
                    bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "edgecolor": "none"})
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(ny - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        fig.text(0.5, 1.0 - 0.5 * (1.0 - top), title, ha="center", va="center", fontsize=10)
    return fig


def write_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure as a PNG, atomically; returns ``path``.

    The PNG is the figure's Agg rendering at ``dpi``: no cropping, so its pixels are the
    figure's display pixels (row ``r`` of the PNG is display ``y = height - r``).
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return write_bytes(path, buffer.getvalue())
