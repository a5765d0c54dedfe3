import numpy as np
import pytest

from uld.config import load_config
from uld.data.preprocess import Frame, body_box, prepare_stacks, resampled_shape, resize_stack
from uld.data.stack import window
from uld.data.volume import Volume


def test_window_maps_the_paper_range_to_unit_or_byte_values():
    hu = np.array([-2000.0, -1024.0, 1023.5, 3071.0, 5000.0])
    assert window(hu, -1024, 3071).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert window(hu, -1024, 3071, top=255).tolist() == [0.0, 0.0, 127.5, 255.0, 255.0]
    with pytest.raises(ValueError, match=r"low < high"):
        window(hu, 10, 10)


@pytest.mark.parametrize(("shape", "spacing", "target", "cap", "expected"), [
    ((512, 512), (0.8, 0.8), 0.8, 512, (512, 512)),    # already 0.8 mm
    ((512, 512), (0.6, 0.6), 0.8, 512, (384, 384)),    # 307.2 mm field of view / 0.8
    ((512, 512), (1.0, 1.0), 0.8, 512, (512, 512)),    # 640 px capped at 512
    ((512, 512), (1.0, 1.0), 0.8, 0, (640, 640)),      # no cap
    ((400, 500), (0.5, 0.7), 0.8, 512, (350, 312)),    # y: 400 * 0.7 / 0.8 = 350, x: 312.5 -> 312
    ((100, 80), (1.5, 1.5), 0.0, 512, (100, 80)),      # 0 keeps the scan's pixels
])
def test_resampled_shape(shape, spacing, target, cap, expected):
    assert resampled_shape(shape, spacing, target, cap) == expected


def test_frame_maps_boxes_there_and_back():
    frame = Frame(offset_xy=(10.0, 20.0), scale_xy=(0.5, 2.0), shape_yx=(100, 100))
    native = np.array([[12.0, 21.0, 30.0, 40.0]])
    assert frame.to_model(native).tolist() == [[1.0, 2.0, 10.0, 40.0]]
    assert np.allclose(frame.to_native(frame.to_model(native)), native)


def test_body_box_ignores_thin_structures_and_air():
    hu = np.full((64, 64), -1000.0)
    hu[10:50, 20:40] = 40.0          # the body
    hu[58, :] = 200.0                # the table: one pixel thick, removed by the opening
    assert body_box(hu) == (20, 10, 40, 50)
    assert body_box(np.full((8, 9), -1000.0)) == (0, 0, 9, 8)   # no body: whole slice


def test_resize_stack_keeps_a_constant_image_constant():
    stack = np.full((3, 10, 20), 0.25, dtype=np.float32)
    out = resize_stack(stack, (5, 7))
    assert out.shape == (3, 5, 7) and np.allclose(out, 0.25)


def test_prepare_stacks_crops_resamples_and_returns_the_frame():
    hu = np.full((5, 40, 60), -1000, dtype=np.int16)
    hu[:, 10:30, 20:50] = 0
    volume = Volume(hu, (0.4, 0.4, 2.0))
    config = load_config(None, ["data.num_slices=3", "data.body_crop=true", "data.pixel_spacing_mm=0.8"]).data
    [(image, frame)] = prepare_stacks(volume, np.array([2]), config)
    # body 30 x 20 px at 0.4 mm -> 15 x 10 px at 0.8 mm
    assert image.shape == (3, 10, 15)
    assert frame.offset_xy == (20.0, 10.0) and frame.scale_xy == (0.5, 0.5)
    assert np.allclose(frame.to_model(np.array([[20, 10, 50, 30]])), [[0, 0, 15, 10]])
