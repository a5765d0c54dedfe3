"""Containment suppression per slice and 3D merging of tracklets (uld.infer.suppress)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from uld.config import Config, ConfigError, override
from uld.data.sources import ScanSource
from uld.data.volume import Volume
from uld.infer.kalman import link_kalman
from uld.infer.link import SliceDetections
from uld.infer.predict import find_lesions
from uld.infer.scans import predict_scans
from uld.infer.smooth import smooth_tracklets
from uld.infer.suppress import (
    contained_keep,
    intersection_over_smaller,
    merge_tracklets,
    suppress_slices,
    trim_tracklet_ends,
    trimmed_span,
)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# --------------------------------------------------------------------------- per slice


def test_intersection_over_smaller_by_hand():
    a = _t([[0, 0, 10, 10]])
    b = _t([[2, 2, 6, 6], [5, 0, 15, 10], [10, 0, 20, 10], [0, 0, 0, 5]])
    # inside: 16/16; half overlapping: 50/100; touching edge: 0; zero-area box: 0
    assert intersection_over_smaller(a, b).tolist() == [[1.0, 0.5, 0.0, 0.0]]
    assert intersection_over_smaller(b, a).tolist() == [[1.0], [0.5], [0.0], [0.0]]


def test_two_adjacent_lesions_are_both_kept():
    # two distinct lesions side by side: touching, then overlapping by one pixel
    touching = _t([[10, 10, 20, 20], [20, 11, 29, 19]])
    one_px = _t([[10, 10, 20, 20], [19, 11, 28, 19]])
    scores = _t([0.9, 0.6])
    assert contained_keep(touching, scores, 0.5).tolist() == [True, True]
    assert contained_keep(one_px, scores, 0.5).tolist() == [True, True]
    assert contained_keep(one_px, scores, 0.2, area_ratio=0.2).tolist() == [True, True]  # IoS 8/72


def test_a_lesion_inside_an_organ_sized_false_box_is_kept_by_the_size_guard():
    organ, lesion = [0, 0, 100, 100], [40, 40, 50, 50]  # lesion: 1 % of the organ box's area
    for scores in ([0.9, 0.8], [0.8, 0.9]):  # the false box above, then below the lesion
        keep = contained_keep(_t([organ, lesion]), _t(scores), 0.5, area_ratio=0.1)
        assert keep.tolist() == [True, True]
    # without the guard the lower-scoring of the two goes, whichever it is
    assert contained_keep(_t([organ, lesion]), _t([0.9, 0.8]), 0.5).tolist() == [True, False]
    assert contained_keep(_t([organ, lesion]), _t([0.8, 0.9]), 0.5).tolist() == [False, True]


def test_concentric_duplicates_are_merged_into_the_best_box():
    boxes = _t([[15, 15, 25, 25], [10, 10, 30, 30], [12, 12, 28, 28]])  # areas 100, 400, 256
    keep = contained_keep(boxes, _t([0.7, 0.9, 0.8]), 0.5, area_ratio=0.2)
    assert keep.tolist() == [False, True, False]
    keep = contained_keep(boxes, _t([0.95, 0.9, 0.8]), 0.5, area_ratio=0.2)  # smallest scores best
    assert keep.tolist() == [True, False, False]


def test_a_suppressed_box_suppresses_nothing():
    # A holds B; B lies inside C (IoS 1); A and C overlap by IoS 0.4: greedy NMS keeps C
    boxes = _t([[0, 0, 10, 10], [6, 0, 10, 2], [6, 0, 30, 10]])
    keep = contained_keep(boxes, _t([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [True, False, True]


def test_threshold_one_is_off_and_edge_cases():
    boxes = _t([[0, 0, 10, 10], [2, 2, 8, 8], [0, 0, 10, 10]])  # nested and identical boxes
    assert contained_keep(boxes, _t([0.9, 0.8, 0.7]), 1.0).all()
    assert contained_keep(_t(np.zeros((0, 4))), _t([]), 0.5).shape == (0,)
    assert contained_keep(_t([[0, 0, 1, 1]]), _t([0.5]), 0.0).tolist() == [True]
    # equal scores: the box listed first wins
    assert contained_keep(boxes[:2], _t([0.8, 0.8]), 0.5).tolist() == [True, False]
    slices = [SliceDetections(0, boxes.numpy(), np.array([0.9, 0.8, 0.7]))]
    assert suppress_slices(slices, 1.0) == slices
    (out,) = suppress_slices(slices, 0.5)
    assert out.z == 0 and out.boxes.tolist() == [[0, 0, 10, 10]] and out.scores.tolist() == [0.9]


_box = st.tuples(st.floats(0, 50), st.floats(0, 50), st.floats(1, 30), st.floats(1, 30)).map(
    lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=60, deadline=None)
@given(st.lists(_box, min_size=0, max_size=12), st.floats(0, 0.99), st.floats(0, 1))
def test_kept_boxes_are_never_duplicates_and_every_dropped_box_has_a_kept_cover(boxes, thresh, ratio):
    b = _t(boxes).reshape(-1, 4)
    scores = torch.linspace(1.0, 0.1, len(boxes), dtype=torch.float64)
    keep = contained_keep(b, scores, thresh, ratio)
    ios = intersection_over_smaller(b, b)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    smaller, larger = torch.min(area[:, None], area[None]), torch.max(area[:, None], area[None])
    dup = (ios > thresh) & (smaller >= ratio * larger)
    kept = torch.where(keep)[0]
    for i in kept:
        for j in kept:
            assert i == j or not dup[i, j]
    for j in torch.where(~keep)[0]:
        assert any(dup[i, j] and i < j for i in kept)  # scores fall with the index


# --------------------------------------------------------------------------- 3D


def _trk(z_range, box, score):
    return [(z, np.array([*box, score], dtype=np.float64)) for z in z_range]


NESTED = [  # the example: one object, three nested tracklets
    _trk(range(10, 24), [55.6, 63.4, 71.7, 83.1], 0.9),
    _trk(range(15, 23), [58.3, 66.0, 68.2, 77.6], 0.8),
    _trk(range(10, 22), [59.7, 65.4, 67.5, 76.9], 0.7),
]


def test_nested_tracklets_become_one_lesion_with_the_union_of_slices():
    merged, counts = merge_tracklets(NESTED, 0.5, area_ratio=0.1)
    assert counts == [3] and len(merged) == 1
    assert [z for z, _ in merged[0]] == list(range(10, 24))
    assert max(b[4] for _, b in merged[0]) == 0.9


def test_on_common_slices_the_higher_scoring_box_stays():
    high = _trk(range(0, 3), [10, 10, 30, 30], 0.9)
    high[2][1][4] = 0.3  # its box on slice 2 is weak
    low = _trk(range(2, 6), [12, 12, 28, 28], 0.5)
    merged, counts = merge_tracklets([low, high], 0.5)
    assert counts == [2]
    boxes = dict(merged[0])
    assert sorted(boxes) == [0, 1, 2, 3, 4, 5]
    assert boxes[2].tolist() == [12, 12, 28, 28, 0.5] and boxes[1].tolist() == [10, 10, 30, 30, 0.9]


def test_tracklets_that_continue_each_other_across_a_gap_are_merged():
    a = _trk(range(0, 4), [10, 10, 30, 30], 0.9)
    b = _trk(range(5, 9), [11, 11, 31, 31], 0.6)  # slice 4 missed
    assert merge_tracklets([a, b], 0.5, merge_gap=1)[1] == [2]
    assert merge_tracklets([a, b], 0.5, merge_gap=0)[1] == [1, 1]
    c = _trk(range(4, 9), [11, 11, 31, 31], 0.6)  # adjacent: no missed slice
    merged, counts = merge_tracklets([c, a], 0.5, merge_gap=0)
    assert counts == [2] and [z for z, _ in merged[0]] == list(range(9))
    far = _trk(range(0, 4), [60, 60, 80, 80], 0.6)  # next slice, elsewhere on it
    assert merge_tracklets([a, _trk(range(4, 6), [60, 60, 80, 80], 0.6)], 0.5)[1] == [1, 1]
    assert merge_tracklets([a, far], 0.5)[1] == [1, 1]


def test_distinct_lesions_stay_apart_in_3d():
    left = _trk(range(0, 6), [10, 10, 20, 20], 0.9)
    right = _trk(range(0, 6), [19, 10, 29, 20], 0.8)  # touching neighbour, 1 pixel of overlap
    organ = _trk(range(0, 10), [0, 0, 100, 100], 0.95)  # organ-sized false tracklet around both
    merged, counts = merge_tracklets([left, right, organ], 0.5, area_ratio=0.1)
    assert counts == [1, 1, 1] and len(merged) == 3


def test_merging_off_returns_the_input():
    merged, counts = merge_tracklets(NESTED, 1.0)
    assert counts == [1, 1, 1]
    assert all(len(m) == len(t) and all(za == zb and (a == b).all() for (za, a), (zb, b) in zip(m, t))
               for m, t in zip(merged, NESTED))
    assert merge_tracklets([], 0.5) == ([], [])


def test_find_lesions_off_equals_the_linker_alone():
    rng = np.random.default_rng(0)
    slices = []
    for z in range(12):
        xy = rng.uniform(0, 80, (6, 2))
        wh = rng.uniform(4, 30, (6, 2))
        slices.append(SliceDetections(z, np.hstack([xy, xy + wh]), rng.uniform(0.05, 1, 6)))
    off = replace(Config().infer, contain_thresh=1.0, merge_thresh=1.0, smooth_slices=0)
    tracklets, counts = find_lesions(slices, off)
    expected = link_kalman(slices, off.kalman)
    assert counts == [1] * len(expected)
    assert [[(z, b.tolist()) for z, b in t] for t in tracklets] == \
        [[(z, b.tolist()) for z, b in t] for t in expected]
    trimmed, _ = find_lesions(slices, replace(off, trim_thresh=0.5))
    assert [[(z, b.tolist()) for z, b in t] for t in trimmed] == \
        [[(z, b.tolist()) for z, b in t] for t in trim_tracklet_ends(expected, 0.5)]
    smoothed, _ = find_lesions(slices, replace(off, trim_thresh=0.5, smooth_slices=1))
    assert [[(z, b.tolist()) for z, b in t] for t in smoothed] == \
        [[(z, b.tolist()) for z, b in t] for t in smooth_tracklets(trim_tracklet_ends(expected, 0.5), 1)]
    ends, _ = find_lesions(slices, replace(off, smooth_slices=2, smooth_ends=1))
    assert [[(z, b.tolist()) for z, b in t] for t in ends] == \
        [[(z, b.tolist()) for z, b in t] for t in smooth_tracklets(expected, 2, ends=1)]


# --------------------------------------------------------------------------- ends


def _scored(zs, scores, box=(10, 10, 20, 20)):
    return [(z, np.array([*box, s], dtype=np.float64)) for z, s in zip(zs, scores)]


def test_weak_ends_are_trimmed_and_a_weak_slice_inside_stays():
    # the detector fires early and late with a falling score; slice 14 is weak but inside
    trk = _scored(range(10, 19), [0.05, 0.12, 0.9, 0.95, 0.1, 0.85, 0.6, 0.14, 0.03])
    (kept,) = trim_tracklet_ends([trk], 0.15)
    assert [z for z, _ in kept] == [12, 13, 14, 15, 16]
    assert max(b[4] for _, b in kept) == 0.95  # the lesion's score stays
    assert all(a is b for (_, a), (_, b) in zip(kept, trk[2:7]))  # boxes are not altered


def test_trimmed_span_by_hand():
    assert trimmed_span(np.array([0.1, 1.0, 0.1]), 0.15) == (1, 1)
    assert trimmed_span(np.array([0.1, 1.0, 0.1]), 0.1) == (0, 2)  # not below: kept
    assert trimmed_span(np.array([0.2, 0.2]), 1.0) == (0, 1)  # ties: nothing is below the best
    assert trimmed_span(np.array([0.3]), 1.0) == (0, 0)


def test_trimming_off_returns_the_input_and_the_best_box_always_stays():
    trk = _scored(range(3), [0.1, 0.5, 0.2])
    assert trim_tracklet_ends([trk], 0.0) == [trk]
    assert [z for z, _ in trim_tracklet_ends([trk], 1.0)[0]] == [1]
    assert trim_tracklet_ends([], 0.5) == []


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12), st.floats(0.0, 1.0))
@settings(max_examples=200, deadline=None)
def test_trimming_keeps_a_contiguous_run_around_the_best_box(scores, thresh):
    trk = _scored(range(len(scores)), scores)
    (kept,) = trim_tracklet_ends([trk], thresh)
    zs = [z for z, _ in kept]
    assert zs == list(range(zs[0], zs[-1] + 1))
    assert int(np.argmax(scores)) in zs
    best = max(scores)
    assert all(s >= thresh * best for s in (scores[zs[0]], scores[zs[-1]]))
    assert all(s < thresh * best for z, s in enumerate(scores) if z < zs[0] or z > zs[-1])


@pytest.mark.parametrize("thresh", [-0.1, 1.5])
def test_a_trim_threshold_outside_0_1_is_a_one_line_error(thresh):
    with pytest.raises(ValueError, match=rf"^trim_thresh = {thresh}: must lie in \[0, 1\]$"):
        trim_tracklet_ends([_scored([0], [0.5])], thresh)


def test_an_empty_tracklet_is_refused_naming_it():
    with pytest.raises(ValueError, match="^tracklet 1 has no boxes$"):
        trim_tracklet_ends([_scored([0], [0.5]), []], 0.5)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("key,value", [
    ("infer.contain_thresh", "1.5"), ("infer.contain_area_ratio", "-0.1"),
    ("infer.merge_thresh", "2"), ("infer.merge_gap", "-1"), ("infer.trim_thresh", "1.2"),
    ("infer.smooth_slices", "-1"), ("infer.smooth_ends", "-1"),
    ("mining.contain_thresh", "-0.5"), ("mining.contain_area_ratio", "1.1"),
])
def test_out_of_range_settings_are_one_line_errors_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^{key} = ") as err:
        override(Config(), f"{key}={value}")
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- through uld predict


class NestedBoxes(nn.Module):
    """A fake detector. Slice z of the test volume holds HU ``10 z - 1000``; on slices 2..9 it
    returns three nested boxes of one lesion (the issue's case) and a touching second lesion."""

    def forward(self, images):
        out = []
        for image in images:
            z = round((float(image[image.shape[0] // 2].mean()) * 4095 - 24) / 10)
            rows, scores = [], []
            if 2 <= z <= 9:
                rows += [[20, 20, 40, 44], [23, 23, 36, 38], [25, 24, 34, 36]]
                scores += [0.9, 0.85, 0.8]
            if 3 <= z <= 8:
                rows.append([40, 22, 52, 34])  # touches the first lesion's box on its right
                scores.append(0.7)
            out.append({"boxes": torch.tensor(rows, dtype=torch.float32).reshape(-1, 4),
                        "scores": torch.tensor(scores, dtype=torch.float32)})
        return out


def _predict(tmp_path, infer):
    hu = (10.0 * np.arange(12) - 1000.0)[:, None, None] * np.ones((12, 64, 64))
    volume = Volume(hu=hu.astype(np.float32), spacing_xyz=(1.0, 1.0, 2.0))
    config = Config()
    config = replace(config, data=replace(config.data, num_slices=1, pixel_spacing_mm=0.0),
                     infer=infer)
    predict_scans(NestedBoxes(), config, [ScanSource("phantom", "test", lambda: volume)],
                  tmp_path, overlays=False, progress=False)
    return json.loads((tmp_path / "phantom.lesions.json").read_text())["lesions"]


def test_uld_predict_lists_each_nested_lesion_once(tmp_path):
    infer = Config().infer
    by_default = _predict(tmp_path / "default", infer)
    listed = [(lesion["slice_range"], lesion["tracklets"]) for lesion in by_default]
    assert listed == [([2, 9], 3), ([3, 8], 1)]  # the defaults merge the nested tracklets
    before = _predict(tmp_path / "off", replace(infer, contain_thresh=1.0, merge_thresh=1.0))
    assert len(before) == 4 and all(lesion["tracklets"] == 1 for lesion in before)
    after = _predict(tmp_path / "on", replace(infer, contain_thresh=0.5, merge_thresh=0.5,
                                             contain_area_ratio=0.1))
    assert len(after) == 2  # the nested lesion once, its touching neighbour kept
    first, second = after
    assert first["slice_range"] == [2, 9] and first["score"] == pytest.approx(0.9)
    assert first["box_voxel"][:2] == [20, 20] and second["box_voxel"][:2] == [40, 22]
    # 3D merging alone: the linker's three nested tracklets become one lesion that says so
    merged = _predict(tmp_path / "3d", replace(infer, contain_thresh=1.0, merge_thresh=0.5,
                                              contain_area_ratio=0.1))
    assert [lesion["tracklets"] for lesion in merged] == [3, 1]
