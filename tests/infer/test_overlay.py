import numpy as np
import pytest
from PIL import Image

from uld.infer.overlay import (
    HIGHLIGHT_COLOR,
    OTHER_COLOR,
    slice_overlay_figure,
    write_png,
)


def _slice(ny=64, nx=64):
    yy, xx = np.mgrid[:ny, :nx]
    hu = -100.0 + 300.0 * (xx / nx) + 20.0 * np.sin(yy / 3.0)  # structure, inside the window
    hu[20:30, 20:30] = 400.0
    return hu.astype(np.float32)


def _rgb(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def _png_rgb(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def _pixel(fig, x, y):
    """PNG (row, column) of data point (x, y) of the figure's image axes."""
    fig.canvas.draw()
    dx, dy = fig.axes[0].transData.transform((x, y))
    height = fig.canvas.get_width_height()[1]
    return int(np.floor(height - dy)), int(np.floor(dx))  # display y grows upwards, rows down


def _hex_rgb(color):
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])


def test_written_png_opens_and_shows_the_bold_box_outline_not_a_fill(tmp_path):
    hu, spacing, title = _slice(), (0.7, 0.8), "vol slice 3 lesion #1"
    box = (12.0, 36.0, 44.0, 56.0)
    figure = slice_overlay_figure(hu, spacing, [], box, label="#1 0.93", title=title)
    path = write_png(figure, tmp_path / "o.png")
    plain = slice_overlay_figure(hu, spacing, title=title)
    drawn = _png_rgb(path)
    reference = _rgb(plain)
    assert drawn.shape == reference.shape  # same layout, pixel for pixel
    x1, y1, x2, y2 = box
    xm, ym = (x1 + x2) / 2, (y1 + y2) / 2
    for x, y in [(xm, y1), (xm, y2), (x1, ym), (x2, ym)]:  # middle of each edge
        r, c = _pixel(plain, x, y)
        assert np.abs(drawn[r, c] - reference[r, c]).sum() > 60, (x, y)
        assert np.abs(drawn[r, c] - _hex_rgb(HIGHLIGHT_COLOR)).sum() < 120  # the highlight colour
    r, c = _pixel(plain, xm, ym)
    assert np.array_equal(drawn[r, c], reference[r, c])  # inside the box: the slice itself
    # far from every box and label, the two renderings agree
    r, c = _pixel(plain, 5.0, 5.0)
    assert np.array_equal(drawn[r, c], reference[r, c])


def test_other_detections_are_drawn_thin_in_their_own_colour(tmp_path):
    hu = _slice()
    other = (40.0, 8.0, 60.0, 24.0)
    figure = slice_overlay_figure(hu, (1.0, 1.0), [other], (5.0, 40.0, 20.0, 60.0))
    path = write_png(figure, tmp_path / "o.png")
    plain = slice_overlay_figure(hu, (1.0, 1.0))
    drawn, reference = _png_rgb(path), _rgb(plain)
    r, c = _pixel(plain, 50.0, other[1])
    assert np.abs(drawn[r, c] - reference[r, c]).sum() > 60
    assert np.abs(drawn[r, c] - _hex_rgb(OTHER_COLOR)).sum() < 200


def test_aspect_follows_pixel_spacing():
    fig = slice_overlay_figure(_slice(32, 64), (0.5, 2.0))
    fig.canvas.draw()
    (left, bottom), (right, top) = fig.axes[0].transData.transform([(-0.5, 31.5), (63.5, -0.5)])
    # 64 columns of 0.5 mm = 32 mm wide, 32 rows of 2 mm = 64 mm tall
    assert (top - bottom) / (right - left) == pytest.approx(2.0, rel=0.02)


def test_a_non_2d_slice_is_refused():
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\)"):
        slice_overlay_figure(np.zeros((2, 3, 4)), (1.0, 1.0))
