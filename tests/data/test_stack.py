import numpy as np
import pytest

from uld.data.stack import interpolation_weights, slice_stacks, stack_positions, window


def test_positions_follow_the_slice_spacing_and_replicate_edges():
    # 5 slices at 2 mm from a 2.5 mm volume around slice 1: offsets -1.6, -0.8, 0, 0.8, 1.6
    pos = stack_positions(np.array([1]), depth=4, slice_mm=2.5, target_mm=2.0, num_slices=5)
    assert np.allclose(pos, [[0.0, 0.2, 1.0, 1.8, 2.6]])


def test_each_neighbour_weighted_by_its_own_offset():
    # slice k holds the constant value 10 k, so a linear interpolation returns 10 * position
    hu = np.repeat(np.arange(10, dtype=np.int16)[:, None, None] * 10, 2, axis=1)
    hu = np.repeat(hu, 3, axis=2)
    # 5 mm slices, 2 mm stack: offsets 0.4 per step -> positions 4.2, 4.6, 5.0, 5.4, 5.8 at z = 5
    # (MULAN's bug would reuse the first neighbour's weight 0.4 for the second one)
    stack = slice_stacks(hu, np.array([5]), slice_mm=5.0, target_mm=2.0, num_slices=5)
    assert stack.shape == (1, 5, 2, 3)
    assert np.allclose(stack[0, :, 0, 0], [42.0, 46.0, 50.0, 54.0, 58.0])


def test_integer_positions_take_the_slice_itself():
    lo, hi, w = interpolation_weights(np.array([[2.0, 2.5]]))
    assert lo.tolist() == [[2, 2]] and hi.tolist() == [[2, 3]] and w.tolist() == [[0.0, 0.5]]


def test_window_maps_and_clips():
    out = window(np.array([-2000, -1024, 1023.5, 3071, 4000]), -1024, 3071)
    assert np.allclose(out, [0, 0, 0.5, 1, 1])
    with pytest.raises(ValueError):
        window(np.zeros(1), 10, 10)


def test_even_slice_count_is_refused():
    with pytest.raises(ValueError, match="odd"):
        stack_positions(np.array([0]), 4, 1.0, 2.0, 4)
