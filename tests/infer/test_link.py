import numpy as np

from uld.infer.link import SliceDetections, link_by_iou, tracklet_score


def _det(z, *boxes_scores):
    boxes = np.array([b for b, _ in boxes_scores], dtype=float).reshape(-1, 4)
    return SliceDetections(z, boxes, np.array([s for _, s in boxes_scores], dtype=float))


def test_one_lesion_over_consecutive_slices_is_one_tracklet():
    dets = [_det(z, ([10 + z % 2, 10, 20, 20], 0.5 + 0.1 * z)) for z in range(4)]
    tracks = link_by_iou(dets)
    assert len(tracks) == 1
    assert [z for z, _ in tracks[0]] == [0, 1, 2, 3]
    assert tracklet_score(tracks[0]) == 0.8


def test_a_missed_slice_is_bridged_but_a_longer_gap_is_not():
    box = [10, 10, 20, 20]
    assert len(link_by_iou([_det(0, (box, 0.9)), _det(2, (box, 0.9))], max_gap=1)) == 1
    assert len(link_by_iou([_det(0, (box, 0.9)), _det(3, (box, 0.9))], max_gap=1)) == 2


def test_two_separate_lesions_stay_two():
    dets = [_det(z, ([0, 0, 10, 10], 0.9), ([30, 30, 40, 40], 0.7)) for z in range(3)]
    tracks = link_by_iou(dets)
    assert sorted(len(t) for t in tracks) == [3, 3]


def test_empty_slices():
    assert link_by_iou([_det(0), _det(1)]) == []
