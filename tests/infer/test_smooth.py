import numpy as np
import pytest

from uld.infer.smooth import smooth_boxes, smooth_tracklets


def _tracklet(rows):
    return [(z, np.array(box, dtype=np.float64)) for z, box in rows]


def test_a_loose_box_between_two_good_ones_is_pulled_towards_them():
    rows = [(4, [10, 10, 20, 20, 0.9]), (5, [14, 10, 24, 20, 0.6]), (6, [10, 10, 20, 20, 0.9])]
    [(z4, a), (z5, b), (z6, c)] = smooth_tracklets([_tracklet(rows)], 1)[0]
    assert (z4, z5, z6) == (4, 5, 6)
    # weights for slice 5: 0.9/2, 0.6, 0.9/2 -> centre x = (0.45 * 15 + 0.6 * 19 + 0.45 * 15) / 1.5
    assert b[0] + b[2] == pytest.approx(2 * (0.9 * 15 + 0.6 * 19) / 1.5)
    assert b[2] - b[0] == pytest.approx(10) and b[3] - b[1] == pytest.approx(10)
    assert b[4] == 0.6 and a[4] == 0.9 and c[4] == 0.9  # scores unchanged
    # the ends move less than the middle: a box's own score counts in full, its neighbour's half
    assert abs((a[0] + a[2]) / 2 - 15) < abs((b[0] + b[2]) / 2 - 19)


def test_sizes_are_averaged_on_a_log_scale_and_the_centre_kept_when_boxes_are_concentric():
    z = np.array([0, 1])
    boxes = np.array([[0, 0, 10, 10, 1.0], [-5, -5, 15, 15, 1.0]])
    out = smooth_boxes(z, boxes, 1)
    # weights 1 and 1/2: side = exp((log 10 + log 20 / 2) / 1.5) for the first box
    side = np.exp((np.log(10) + 0.5 * np.log(20)) / 1.5)
    assert out[0, 2] - out[0, 0] == pytest.approx(side)
    assert (out[:, 0] + out[:, 2]) / 2 == pytest.approx([5, 5])


def test_boxes_beyond_the_reach_do_not_count():
    rows = [(0, [0, 0, 10, 10, 0.9]), (3, [50, 50, 60, 60, 0.9])]  # a bridged gap of two slices
    smoothed = smooth_tracklets([_tracklet(rows)], 1)[0]
    assert [b.tolist() for _, b in smoothed] == [pytest.approx(r[1]) for r in rows]
    assert smooth_tracklets([_tracklet(rows)], 3)[0][0][1][0] > 0  # within 3: pulled


def test_off_short_and_empty_inputs_are_returned_unchanged():
    rows = [(0, [0, 0, 10, 10, 0.9]), (1, [2, 2, 14, 14, 0.5])]
    assert [[b.tolist() for _, b in t] for t in smooth_tracklets([_tracklet(rows)], 0)] == \
        [[r[1] for r in rows]]
    single = _tracklet([(7, [1, 2, 3, 4, 0.3])])
    assert smooth_tracklets([single], 2)[0][0][1].tolist() == [1, 2, 3, 4, 0.3]
    assert smooth_tracklets([], 1) == []


def test_zero_scores_and_degenerate_boxes_stay_finite():
    out = smooth_boxes(np.array([0, 1]), np.array([[0, 0, 10, 10, 0.0], [5, 5, 5, 9, 0.0]]), 1)
    assert np.isfinite(out).all()


def test_with_ends_only_the_outermost_boxes_move_and_the_inner_ones_stay_as_detected():
    rows = [(z, [10 + 2 * (z % 2), 10, 20 + 2 * (z % 2), 20, 0.9]) for z in range(6)]
    boxes = np.array([r[1] for r in rows])
    z = np.array([r[0] for r in rows])[::-1].copy()  # any order: the ends are by slice
    every = smooth_boxes(z, boxes[::-1], 1)
    out = smooth_boxes(z, boxes[::-1], 1, ends=1)
    moved = ~np.isclose(out, boxes[::-1]).all(axis=1)
    assert z[moved].tolist() == [5, 0]  # the lowest and the highest slice
    assert out[moved] == pytest.approx(every[moved])
    two = smooth_boxes(z, boxes[::-1], 1, ends=2)
    assert sorted(z[~np.isclose(two, boxes[::-1]).all(axis=1)].tolist()) == [0, 1, 4, 5]
    # a lesion of two boxes has only ends: ends=1 smooths both, as smoothing every box does
    assert smooth_boxes(z[:2], boxes[:2], 1, ends=1) == pytest.approx(smooth_boxes(z[:2], boxes[:2], 1))


def test_a_negative_reach_or_ends_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^reach = -1, ends = 0: must be >= 0$"):
        smooth_tracklets([], -1)
    with pytest.raises(ValueError, match=r"^reach = 1, ends = -2: must be >= 0$"):
        smooth_tracklets([], 1, ends=-2)
