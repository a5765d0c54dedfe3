import numpy as np
import pytest

from uld.boxes import iou
from uld.config import KalmanLinkerParams
from uld.infer.kalman import initial_state, link_kalman, mahalanobis2, predict, update
from uld.infer.link import SliceDetections, link_by_iou, tracklet_score


def _det(z, *boxes_scores):
    boxes = np.array([b for b, _ in boxes_scores], dtype=float).reshape(-1, 4)
    return SliceDetections(z, boxes, np.array([s for _, s in boxes_scores], dtype=float))


def _square(cx, cy, side):
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def _zs(tracklet):
    return [z for z, _ in tracklet]


# --------------------------------------------------------------------------------------------
# the filter, on hand-computed numbers


def test_one_step_predict_and_update_by_hand():
    # box 10 x 10 at the origin: s = 10; P0 = 1 px^2 on cx, cy, w, h (0.1 s)^2, 9 on velocities
    params = KalmanLinkerParams(pos_measure_std=0.1, size_measure_std=0.1, pos_process_std=0.05,
                                size_process_std=0.1, vel_process_std=0.05, init_vel_std=0.3)
    state, cov = initial_state(np.array([[0.0, 0.0, 10.0, 10.0]]), params)
    np.testing.assert_allclose(state, [[5, 5, 10, 10, 0, 0, 0, 0]])
    np.testing.assert_allclose(np.diag(cov[0]), [1, 1, 1, 1, 9, 9, 9, 9])
    pred_state, pred_cov = predict(state, cov, np.array([1]), params)
    # position: 1 + 9 (velocity) + 0.25 (process 0.05 s); size: 1 + 9 + 1; velocity: 9 + 0.25
    np.testing.assert_allclose(np.diag(pred_cov[0]), [10.25, 10.25, 11, 11, 9.25, 9.25, 9.25, 9.25])
    assert pred_cov[0, 0, 4] == pytest.approx(9.0)
    # innovation variance on cx = 10.25 + 1 (measurement): a 3-pixel shift gives d2 = 9 / 11.25
    shifted = np.array([[3.0, 0.0, 13.0, 10.0]])
    assert mahalanobis2(pred_state, pred_cov, shifted, params)[0, 0] == pytest.approx(0.8)
    new_state, new_cov = update(pred_state, pred_cov, shifted, params)
    assert new_state[0, 0] == pytest.approx(5 + 3 * 10.25 / 11.25)  # cx
    assert new_state[0, 4] == pytest.approx(3 * 9 / 11.25)  # vcx learns the move
    np.testing.assert_allclose(new_state[0, [1, 2, 3, 5, 6, 7]], [5, 10, 10, 0, 0, 0])
    assert new_cov[0, 0, 0] == pytest.approx(10.25 - 10.25**2 / 11.25)


def test_a_multi_slice_prediction_equals_repeated_single_slices_at_constant_size():
    params = KalmanLinkerParams()
    state, cov = initial_state(np.array([[10.0, 20.0, 30.0, 44.0]]), params)
    state[0, 4:6] = [1.5, -2.0]  # centre velocity only: the size (and so the noise) stays put
    once = predict(state, cov, np.array([3]), params)
    steps = (state, cov)
    for _ in range(3):
        steps = predict(*steps, np.array([1]), params)
    np.testing.assert_allclose(once[0], steps[0])
    np.testing.assert_allclose(once[1], steps[1])
    np.testing.assert_allclose(once[0][0, :2], [20 + 4.5, 32 - 6.0])


# --------------------------------------------------------------------------------------------
# linking behaviour


def test_a_noisy_lesion_growing_then_shrinking_is_one_tracklet():
    # a sphere of radius 11 px cut every 1.85 px (30 mm lesion, 1.35 mm pixels, 2.5 mm slices):
    # sides 14.4, 17.8, 20.0, 21.3, 21.9, 21.9, 21.3, 20.0, 17.8, 14.4; centres jitter by 1 px
    rng = np.random.default_rng(0)
    offsets = (np.arange(10) - 4.5) * 1.85
    sides = 2 * np.sqrt(11.0**2 - offsets**2)
    dets = [_det(z, (_square(50 + rng.uniform(-1, 1), 60 + rng.uniform(-1, 1), side), 0.5))
            for z, side in enumerate(sides)]
    tracks = link_kalman(dets)
    assert len(tracks) == 1
    assert _zs(tracks[0]) == list(range(10))
    for (_, box), det in zip(tracks[0], dets):  # the measured boxes, untouched
        np.testing.assert_array_equal(box[:4], det.boxes[0])


def test_one_missed_slice_is_bridged_two_are_not_with_max_gap_1():
    box = [20, 20, 36, 36]
    seen = [z for z in range(9) if z != 4]
    tracks = link_kalman([_det(z, (box, 0.9)) for z in seen])
    assert len(tracks) == 1
    assert _zs(tracks[0]) == seen  # the gap slice gets no box
    seen2 = [z for z in range(9) if z not in (4, 5)]
    assert len(link_kalman([_det(z, (box, 0.9)) for z in seen2], KalmanLinkerParams(max_gap=1))) == 2
    assert len(link_kalman([_det(z, (box, 0.9)) for z in seen2], KalmanLinkerParams(max_gap=2))) == 1


def test_a_missing_slice_in_the_input_equals_an_empty_slice():
    box = [20, 20, 36, 36]
    absent = [_det(z, (box, 0.9)) for z in (0, 1, 3)]
    empty = [*absent[:2], _det(2), absent[2]]
    assert [_zs(t) for t in link_kalman(absent)] == [_zs(t) for t in link_kalman(empty)] == [[0, 1, 3]]


def test_two_touching_lesions_stay_two():
    a, b = [10, 10, 30, 30], [26, 10, 46, 30]
    assert iou(np.array([a]), np.array([b]))[0, 0] == pytest.approx(80 / 720)
    rng = np.random.default_rng(1)

    def jitter(box):
        return list(np.asarray(box) + rng.uniform(-1, 1, 4))

    # side by side on the same slices
    tracks = link_kalman([_det(z, (jitter(a), 0.9), (jitter(b), 0.8)) for z in range(6)])
    assert len(tracks) == 2
    for t in tracks:
        lefts = [box[0] for _, box in t]
        assert max(lefts) - min(lefts) < 3  # each tracklet keeps to one lesion
    # one ends where the other begins: a track that loses its lesion must not take the neighbour
    tracks = link_kalman([_det(z, (jitter(a if z < 5 else b), 0.9)) for z in range(10)])
    assert sorted(_zs(t) for t in tracks) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_a_track_keeps_its_best_box_rather_than_two_mediocre_pairs():
    # slices 0-2: a lesion box L (and on slice 2 a larger duplicate, BIG, which starts a track);
    # slice 3: A (smaller, shifted) and B (the lesion). Squared distances (tracks x boxes):
    # L-track: A 9.58, B 0.49; BIG-track: A 22.5 (outside the gate), B 7.11. Minimising
    # min(d2, gate) keeps L -> B (0.49 + 13.28 < 9.58 + 7.11); a prohibitive cost for pairs
    # outside the gate would pair L -> A and BIG -> B instead, to pair both tracks.
    lesion, big = [36, 50, 48, 62], [36, 48, 54, 64]
    a, b = [39, 52, 46, 59], [37, 51, 49, 62]
    dets = [_det(0, (lesion, 0.9)), _det(1, (lesion, 0.9)), _det(2, (lesion, 0.9), (big, 0.3)),
            _det(3, (a, 0.4), (b, 0.8))]
    tracks = link_kalman(dets)
    as_lists = [[(z, box[:4].tolist()) for z, box in t] for t in tracks]
    assert as_lists == [
        [(0, lesion), (1, lesion), (2, lesion), (3, b)],
        [(2, big)],
        [(3, a)],
    ]


def test_a_lesion_after_a_gap_longer_than_max_gap_is_a_new_one():
    box = [40, 40, 60, 60]
    dets = [_det(z, (box, 0.9)) for z in (0, 1, 2, 3, 6, 7, 8)]  # slices 4 and 5 missed
    tracks = link_kalman(dets, KalmanLinkerParams(max_gap=1))
    assert [_zs(t) for t in tracks] == [[0, 1, 2, 3], [6, 7, 8]]


def test_a_steady_drift_is_bridged_where_the_overlap_linker_breaks():
    # a 12-pixel box drifting 3.6 px (0.3 of its size) per slice, missed on slice 6: the IoU of
    # consecutive boxes is 8.4 / 15.6 = 0.54, but across the gap it is 4.8 / 19.2 = 0.25 < 0.3,
    # so the overlap linker breaks there; the filter has learned the drift and predicts it
    seen = [z for z in range(12) if z != 6]
    dets = [_det(z, (_square(20 + 3.6 * z, 40, 12), 0.9)) for z in seen]
    assert iou(dets[0].boxes, dets[1].boxes)[0, 0] == pytest.approx(8.4 / 15.6)
    assert iou(dets[5].boxes, dets[6].boxes)[0, 0] == pytest.approx(4.8 / 19.2)
    assert [_zs(t) for t in link_by_iou(dets, iou_threshold=0.3, max_gap=1)] == [seen[:6], seen[6:]]
    assert [_zs(t) for t in link_kalman(dets, KalmanLinkerParams(max_gap=1))] == [seen]


def test_empty_input_and_slices_without_boxes():
    assert link_kalman([]) == []
    assert link_kalman([_det(0), _det(1), SliceDetections(2, np.zeros((0, 4)), np.zeros(0))]) == []
    assert link_kalman([SliceDetections(0, np.array([]), np.array([]))]) == []


def test_the_order_of_the_input_slices_does_not_matter():
    rng = np.random.default_rng(2)
    dets = []
    for z in range(12):
        n = int(rng.integers(0, 5))
        xy = rng.uniform(0, 80, (n, 2))
        dets.append(SliceDetections(z, np.concatenate([xy, xy + rng.uniform(5, 20, (n, 2))], 1),
                                    rng.random(n)))
    ref = link_kalman(dets)
    assert sum(len(t) for t in ref) == sum(len(d.scores) for d in dets)
    for seed in range(3):
        shuffled = [dets[i] for i in np.random.default_rng(seed).permutation(len(dets))]
        out = link_kalman(shuffled)
        assert [_zs(t) for t in out] == [_zs(t) for t in ref]
        for t_out, t_ref in zip(out, ref):
            np.testing.assert_array_equal(np.stack([b for _, b in t_out]), np.stack([b for _, b in t_ref]))


def test_tracklets_keep_each_box_score_and_the_score_is_the_maximum():
    scores = [0.2, 0.9, 0.4, 0.7]
    tracks = link_kalman([_det(z, ([10, 10, 30, 30], s)) for z, s in enumerate(scores)])
    assert [box[4] for _, box in tracks[0]] == scores
    assert tracklet_score(tracks[0]) == 0.9


def test_tracklets_are_ordered_by_first_slice():
    far, near = [100, 100, 120, 120], [10, 10, 30, 30]
    dets = [_det(0, (far, 0.5)), _det(1, (far, 0.5), (near, 0.6)), _det(2, (near, 0.6))]
    assert [_zs(t) for t in link_kalman(dets)] == [[0, 1], [1, 2]]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="z=3 appears twice"):
        link_kalman([_det(3, ([0, 0, 5, 5], 0.5)), _det(3)])
    with pytest.raises(ValueError, match="slice z=1"):
        link_kalman([SliceDetections(1, np.zeros((2, 4)), np.zeros(3))])
    with pytest.raises(ValueError, match="max_gap"):
        KalmanLinkerParams(max_gap=-1)
    with pytest.raises(ValueError, match="gate"):
        KalmanLinkerParams(gate=0.0)
