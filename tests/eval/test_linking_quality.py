import math

import numpy as np
import pytest

from uld.data.dataset import DataError
from uld.eval.linking_quality import LesionTruth, label_boxes, linking_quality, read_lesion_truth

A = [0.0, 0.0, 10.0, 10.0]  # lesion 0
B = [50.0, 50.0, 60.0, 60.0]  # lesion 1
FAR = [100.0, 100.0, 110.0, 110.0]  # background


def _truth(rows):
    """rows: (z, box, lesion)."""
    return LesionTruth(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 4),
        np.array([r[2] for r in rows], dtype=np.int64),
    )


def _trk(*items):
    return [(z, np.array([*box, 0.5])) for z, box in items]


def test_label_boxes_by_hand():
    truth = _truth([(0, A, 0), (0, B, 1), (1, A, 0)])
    z = np.array([0, 2, 0, 0, 1, 1])
    boxes = np.array([
        A,                # lesion 0
        A,                # slice 2 has no truth: background
        [1, 0, 11, 10],   # IoU 90 / 110 = 0.82 with A: lesion 0
        [5, 0, 15, 10],   # IoU 50 / 150 = 0.33: background
        A,                # lesion 0 on slice 1
        B,                # lesion 1 is not on slice 1: background
    ])
    np.testing.assert_array_equal(label_boxes(truth, z, boxes), [0, -1, 0, -1, 0, -1])
    np.testing.assert_array_equal(label_boxes(truth, z, boxes, iou_threshold=0.3), [0, -1, 0, 0, 0, -1])
    assert label_boxes(LesionTruth.empty(), z, boxes).tolist() == [-1] * 6
    assert label_boxes(truth, np.zeros(0), np.zeros((0, 4))).shape == (0,)


def test_a_box_goes_to_the_lesion_it_overlaps_best():
    left, right = [0, 0, 10, 10], [4, 0, 14, 10]  # both overlap the box [2, 0, 12, 10]
    truth = _truth([(0, left, 3), (0, right, 7)])
    # IoU with left 80 / 120 = 0.67, with right 80 / 120 too: tie -> the first row (lesion 3)
    assert label_boxes(truth, np.array([0]), np.array([[2, 0, 12, 10]])).tolist() == [3]
    assert label_boxes(truth, np.array([0]), np.array([[3, 0, 13, 10]])).tolist() == [7]


def test_purity_completeness_and_fragments_by_hand():
    # volume v1: lesion 0 (A) on slices 0-3, lesion 1 (B) on slices 0-1
    truth = {
        "v1": _truth([(z, A, 0) for z in range(4)] + [(0, B, 1), (1, B, 1)]),
        "v2": _truth([(5, A, 0)]),  # never detected
    }
    dets = {"v1": [
        _trk((0, A), (1, A)),               # purity 1
        _trk((2, A), (3, A), (4, FAR)),     # purity 2/3 (one background box)
        _trk((0, B), (1, B)),               # purity 1
        _trk((5, FAR)),                     # background only: not in the purity
        _trk((3, A)),                       # a duplicate on slice 3: purity 1, a third fragment
    ]}
    q = linking_quality(truth, dets)
    assert q.purity == pytest.approx((1 + 2 / 3 + 1 + 1) / 4)
    assert q.purity_boxes == pytest.approx(7 / 8)
    # lesion 0: 4 detected slices, best tracklet holds 2 -> 0.5; lesion 1: 1.0
    assert q.completeness == pytest.approx(0.75)
    assert q.fragments == pytest.approx((3 + 1) / 2)
    assert (q.n_tracklets, q.n_lesion_tracklets, q.n_lesions, q.n_detected_lesions) == (5, 4, 3, 2)
    assert q.n_mixed_tracklets == 0


def test_a_tracklet_that_mixes_two_lesions_is_impure():
    truth = {"v": _truth([(0, A, 0), (1, A, 0), (2, B, 1), (3, B, 1), (4, B, 1)])}
    q = linking_quality(truth, {"v": [_trk((0, A), (1, A), (2, B), (3, B), (4, B))]})
    assert q.purity == pytest.approx(3 / 5)
    assert q.completeness == 1.0 and q.fragments == 1.0
    assert q.n_mixed_tracklets == 1


def test_perfect_linking_and_no_detections():
    truth = {"v": _truth([(z, A, 0) for z in range(3)] + [(z, B, 1) for z in range(1, 5)])}
    perfect = {"v": [_trk(*[(z, A) for z in range(3)]), _trk(*[(z, B) for z in range(1, 5)])]}
    q = linking_quality(truth, perfect)
    assert (q.purity, q.purity_boxes, q.completeness, q.fragments) == (1.0, 1.0, 1.0, 1.0)
    empty = linking_quality(truth, {})
    assert math.isnan(empty.purity) and math.isnan(empty.completeness) and math.isnan(empty.fragments)
    assert (empty.n_tracklets, empty.n_lesions, empty.n_detected_lesions) == (0, 2, 0)
    split_up = linking_quality(truth, {"v": [_trk((z, A)) for z in range(3)]})
    assert split_up.completeness == pytest.approx(1 / 3) and split_up.fragments == 3.0


def test_an_unknown_volume_is_named():
    with pytest.raises(ValueError, match="'ghost'"):
        linking_quality({"v": LesionTruth.empty()}, {"ghost": []})


def _dataset(tmp_path, full_csv):
    (tmp_path / "splits.csv").write_text("volume,split\nv1,test\nv2,test\nv3,train\n")
    (tmp_path / "annotations_full.csv").write_text(full_csv)
    return tmp_path


def test_read_lesion_truth_from_a_dataset_folder(tmp_path):
    root = _dataset(tmp_path, (
        "volume,z,x1,y1,x2,y2,key,lesion\n"
        "v1,3,1,2,5,6,0,0\n"
        "v1,4,1,2,6,7,1,0\n"
        "v3,0,1,1,2,2,1,0\n"
        "v1,4,20,20,30,30,1,1\n"
    ))
    truth = read_lesion_truth(root, "test")
    assert list(truth) == ["v1", "v2"]
    assert truth["v1"].z.tolist() == [3, 4, 4]
    assert truth["v1"].lesion.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(truth["v1"].boxes[1], [1, 2, 6, 7])
    assert truth["v1"].n_lesions == 2
    assert len(truth["v2"].z) == 0 and truth["v2"].boxes.shape == (0, 4)


def test_read_lesion_truth_names_bad_files(tmp_path):
    root = _dataset(tmp_path, "volume,z,x1,y1,x2,y2\nv1,3,1,2,5,6\n")
    with pytest.raises(DataError, match="no 'lesion' column"):
        read_lesion_truth(root, "test")
    _dataset(tmp_path, "volume,z,x1,y1,x2,y2,lesion\nv1,3,1,2,5,6,x\n")
    with pytest.raises(DataError, match="row 2: lesion = 'x'"):
        read_lesion_truth(root, "test")
    _dataset(tmp_path, "volume,z,x1,y1,x2,y2,lesion\nv1,3,1,2,5,6,0\nv1,3,2,2,5,6,0\n")
    with pytest.raises(DataError, match="two boxes on slice 3"):
        read_lesion_truth(root, "test")
