"""uld.eval.keyslice: the official DeepLesion key-slice protocol, by hand and against MULAN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import interpolate

from conftest import random_2d_case
from uld.data.annotations import EvalFormatError
from uld.eval.froc import AVG_FP_RATES, FP_RATES, UnknownVolumeError, froc_walk, operating_index, sens_at_fp
from uld.eval.ground_truth import keyslice_images, read_keyslice_gt
from uld.eval.keyslice import evaluate_keyslice, iou_plus1_pairs, keyslice_metrics, match_keyslice

LH = Path(__file__).resolve().parents[3] / "shared" / "deeplesion" / "lesion_harvester"


def B(*xyxy: float) -> np.ndarray:
    return np.array(xyxy, dtype=np.float64)


def T(*boxes: tuple) -> list:
    """A tracklet from ``(z, x1, y1, x2, y2, score)`` rows."""
    return [(int(b[0]), np.array(b[1:], dtype=np.float64)) for b in boxes]


def sens_list(result) -> list[float]:
    return [result.sensitivity[r] for r in FP_RATES]


# ---------------------------------------------------------------------------------------------
# A literal transcription of MULAN's detection_eval.py (sens_at_FP, FROC, IOU), kept slow
# ---------------------------------------------------------------------------------------------


def mulan_iou(box1: np.ndarray, gts: np.ndarray) -> np.ndarray:
    ixmin = np.maximum(gts[:, 0], box1[0])
    iymin = np.maximum(gts[:, 1], box1[1])
    ixmax = np.minimum(gts[:, 2], box1[2])
    iymax = np.minimum(gts[:, 3], box1[3])
    iw = np.maximum(ixmax - ixmin + 1., 0.)
    ih = np.maximum(iymax - iymin + 1., 0.)
    inters = iw * ih
    uni = ((box1[2] - box1[0] + 1.) * (box1[3] - box1[1] + 1.)
           + (gts[:, 2] - gts[:, 0] + 1.) * (gts[:, 3] - gts[:, 1] + 1.) - inters)
    return inters / uni


def mulan_froc(boxes_all: list, gts_all: list, iou_th: float) -> tuple[np.ndarray, np.ndarray]:
    n_img = len(boxes_all)
    img_idxs = np.hstack([[i] * len(boxes_all[i]) for i in range(n_img)]).astype(int)
    boxes_cat = np.vstack(boxes_all)
    scores = boxes_cat[:, -1]
    order = np.argsort(scores)[::-1]
    boxes_cat = boxes_cat[order, :4]
    img_idxs = img_idxs[order]
    hits = [np.zeros((len(gts),), dtype=bool) for gts in gts_all]
    n_hits = 0
    n_miss = 0
    tps, fps = [], []
    for i in range(len(boxes_cat)):
        overlaps = mulan_iou(boxes_cat[i, :], gts_all[img_idxs[i]])
        if len(overlaps) == 0 or overlaps.max() < iou_th:
            n_miss += 1
        else:
            for j in range(len(overlaps)):
                if overlaps[j] >= iou_th and not hits[img_idxs[i]][j]:
                    hits[img_idxs[i]][j] = True
                    n_hits += 1
        tps.append(n_hits)
        fps.append(n_miss)
    n_gt = len(np.vstack(gts_all))
    sens = np.array(tps, dtype=float) / n_gt
    fp_per_img = np.array(fps, dtype=float) / n_img
    return sens, fp_per_img


def mulan_sens_at_fp(sens: np.ndarray, fp_per_img: np.ndarray, avg_fp: list) -> np.ndarray:
    avg_fp_in = [a for a in avg_fp if a <= fp_per_img[-1]]
    avg_fp_out = [a for a in avg_fp if a > fp_per_img[-1]]
    f = interpolate.interp1d(fp_per_img, sens)
    return np.hstack([f(np.array(avg_fp_in)), np.ones((len(avg_fp_out),)) * sens[-1]])


def reference_inputs(gt: dict, dets: dict, score: str = "box") -> tuple[list, list]:
    """MULAN's per-image lists, built by loops: images in first-appearance order."""
    images: dict = {}
    for name, items in gt.items():
        for z, box in items:
            images.setdefault((name, int(z)), []).append(np.asarray(box, dtype=np.float64))
    boxes_all, gts_all = [], []
    for (name, z), gts in images.items():
        rows = []
        for tracklet in dets.get(name, []):
            top = max(float(b[4]) for _, b in tracklet)
            for bz, b in tracklet:
                if int(bz) == z:
                    rows.append([*map(float, b[:4]), float(b[4]) if score == "box" else top])
        boxes_all.append(np.array(rows, dtype=np.float64).reshape(-1, 5))
        gts_all.append(np.array(gts).reshape(-1, 4))
    return boxes_all, gts_all


def compare_with_mulan(gt: dict, dets: dict, score: str = "box", thr: float = 0.5) -> None:
    ours = evaluate_keyslice(gt, dets, thr, score)
    boxes_all, gts_all = reference_inputs(gt, dets, score)
    n_det = sum(len(b) for b in boxes_all)
    assert ours.n_detections == n_det and ours.n_units == len(boxes_all)
    if n_det == 0:  # the reference indexes an empty array; documented: 0 everywhere
        assert sens_list(ours) == [0.0] * len(FP_RATES)
        return
    with np.errstate(all="ignore"):
        sens, fps = mulan_froc(boxes_all, gts_all, thr)
    assert ours.fps.tolist() == fps.tolist()
    if ours.npos == 0:  # the reference divides by zero; documented: 0
        assert sens_list(ours) == [0.0] * len(FP_RATES) and ours.sens.tolist() == [0.0] * n_det
        return
    assert ours.sens.tolist() == sens.tolist()
    inside = [r for r in FP_RATES if r >= fps[0]]  # below fps[0] MULAN's interp1d raises
    expected = [0.0] * (len(FP_RATES) - len(inside)) + mulan_sens_at_fp(sens, fps, inside).tolist()
    assert sens_list(ours) == expected
    avg_in = [r for r in AVG_FP_RATES if r >= fps[0]]
    avg_ref = [0.0] * (7 - len(avg_in)) + mulan_sens_at_fp(sens, fps, avg_in).tolist()
    assert ours.avg == float(np.mean(avg_ref))


def random_case(rng: np.random.Generator, max_tracklets: int = 6) -> tuple[dict, dict]:
    return random_2d_case(rng, max_tracklets=max_tracklets, gt_slices=3, max_boxes=3, sort_gt=True)


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_hand_case_ties_rehits_non_key_slices_and_empty_volumes() -> None:
    gt = {
        "a": [(2, B(0, 0, 9, 9)), (2, B(20, 0, 29, 9)), (5, B(0, 0, 9, 9))],  # g0 g1 | g2
        "b": [(1, B(10, 10, 19, 19))],  # g3
        "c": [],  # a volume without key slices: its detections are ignored, not unknown
    }
    dets = {
        "a": [
            # on slice 2 hits g0 (0.9), slice 3 is no key slice (ignored), slice 5 hits g2 (0.4)
            T((2, 0, 0, 9, 9, 0.9), (3, 0, 0, 9, 9, 0.95), (5, 0, 0, 9, 9, 0.4)),
            T((2, 1, 0, 9, 9, 0.9)),  # re-hits g0 at the same score: neither hit nor FP
            T((2, 50, 50, 60, 60, 0.6)),  # FP on image (a, 2)
        ],
        "b": [T((1, 10, 10, 19, 19, 0.3), (2, 10, 10, 19, 19, 0.99))],  # hits g3 (0.3)
        "c": [T((0, 0, 0, 9, 9, 0.99))],
    }
    m = match_keyslice(gt, dets)
    assert m.images == (("a", 2), ("a", 5), ("b", 1))
    # image-major: (a,2): t0's box, t1, t2 | (a,5): t0's last box | (b,1): t3's first box
    assert m.scores.tolist() == [0.9, 0.9, 0.6, 0.4, 0.3]
    assert m.image_index.tolist() == [0, 0, 0, 1, 2]
    assert m.tracklet_index.tolist() == [0, 1, 2, 0, 3]
    assert [m.hits(d).tolist() for d in range(5)] == [[0], [0], [], [2], [3]]
    assert m.hit_iou.tolist() == [1.0, 90 / 100, 1.0, 1.0]
    r = keyslice_metrics(m)
    # ranking: argsort([.9, .9, .6, .4, .3])[::-1] = [1, 0, 2, 3, 4]: the tie puts d1 first.
    # d1 hits g0 | d0 re-hits: nothing | d2 FP | d3 hits g2 | d4 hits g3
    assert r.sens.tolist() == [0.25, 0.25, 0.25, 0.5, 0.75]
    assert r.fps.tolist() == [0, 0, 1 / 3, 1 / 3, 1 / 3]
    # every rate >= 1/3 reads the last point with fps <= rate: 0.75; below: the last point
    # at fps 0 (0.25)
    assert sens_list(r) == [0.25, 0.25, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75]
    assert (r.npos, r.n_units, r.n_detections, r.n_hits, r.n_fp) == (4, 3, 5, 3, 1)
    assert r.ap is None and r.to_json()["n_images"] == 3 and r.to_json()["ap"] is None
    compare_with_mulan(gt, dets)


def test_tracklet_score_option_changes_the_ranking() -> None:
    gt = {"a": [(0, B(0, 0, 9, 9))], "b": [(0, B(0, 0, 9, 9))]}
    dets = {"a": [T((0, 0, 0, 9, 9, 0.2), (1, 0, 0, 9, 9, 0.9))],  # hit, own score 0.2
            "b": [T((0, 40, 40, 49, 49, 0.5))]}  # FP, 0.5
    by_box = evaluate_keyslice(gt, dets)  # FP (0.5) first, then the hit (0.2)
    assert by_box.fps.tolist() == [0.5, 0.5] and by_box.sens.tolist() == [0.0, 0.5]
    by_trk = evaluate_keyslice(gt, dets, score="tracklet")  # hit (0.9) first
    assert by_trk.fps.tolist() == [0.0, 0.5] and by_trk.sens.tolist() == [0.5, 0.5]
    assert by_box.sensitivity[0.25] == 0.0 and by_trk.sensitivity[0.25] == 0.5
    compare_with_mulan(gt, dets, "tracklet")
    with pytest.raises(ValueError, match="score = 'max'"):
        match_keyslice(gt, dets, score="max")  # type: ignore[arg-type]


def test_plus_one_iou_boundary_and_threshold() -> None:
    gt = {"v": [(0, B(0, 0, 9, 9))]}  # 100 px with the +1 convention
    half = evaluate_keyslice(gt, {"v": [T((0, 0, 0, 9, 4, 0.9))]})  # 50 / 100: a hit
    assert half.n_hits == 1
    assert evaluate_keyslice(gt, {"v": [T((0, 0, 0, 9, 3.9, 0.9))]}).n_hits == 0  # 0.49
    assert evaluate_keyslice(gt, {"v": [T((0, 0, 0, 9, 3.9, 0.9))]}, 0.49).n_hits == 1
    with pytest.raises(ValueError, match="iou_threshold"):
        match_keyslice(gt, {}, iou_threshold=1.5)


def test_rates_below_the_start_and_past_the_end() -> None:
    # 10 images; ranking FP (0.9), hit (0.8), hit (0.7): fps [.1, .1, .1], sens [0, .5, 1]
    gt = {f"v{i}": [(0, B(0, 0, 9, 9))] for i in range(10)}
    gt["v0"].append((0, B(30, 30, 39, 39)))
    dets = {"v0": [T((0, 60, 60, 69, 69, 0.9)), T((0, 0, 0, 9, 9, 0.8)),
                   T((0, 30, 30, 39, 39, 0.7))]}
    r = evaluate_keyslice(gt, dets, fp_rates=(0.05, 0.1, 0.125, 100.0))
    assert r.fps.tolist() == [0.1] * 3 and r.sens.tolist() == [0, 1 / 11, 2 / 11]
    # 0.05 < fps[0]: MULAN's interp1d raises; we give 0. At 0.1 np.interp reads the LAST
    # point with fps 0.1 (2/11); past the end the last value is held.
    assert list(r.sensitivity.values()) == [0.0, 2 / 11, 2 / 11, 2 / 11]
    with pytest.raises(ValueError, match="below the interpolation range"):
        mulan_sens_at_fp(r.sens, r.fps, [0.05])
    assert mulan_sens_at_fp(r.sens, r.fps, [0.1, 100.0]).tolist() == [2 / 11, 2 / 11]


def test_no_detections_no_boxes_and_unknown_volumes() -> None:
    gt = {"a": [(0, B(0, 0, 9, 9))], "b": []}
    for dets in ({}, {"a": []}, {"b": [T((0, 0, 0, 9, 9, 0.9))]}):
        r = evaluate_keyslice(gt, dets)
        assert sens_list(r) == [0.0] * 8 and r.avg == 0.0 and r.n_detections == 0
        assert (r.npos, r.n_units) == (1, 1)
    assert evaluate_keyslice({"a": []}, {"a": [T((0, 0, 0, 9, 9, 0.9))]}).n_units == 0
    with pytest.raises(UnknownVolumeError, match=r"volume 'zz', which the ground truth"):
        evaluate_keyslice(gt, {"a": [], "zz": [T((0, 0, 0, 9, 9, 0.9))]})
    with pytest.raises(EvalFormatError, match=r"volume 'a', tracklet 0, box 0: x2 = 1.0 < x1"):
        evaluate_keyslice(gt, {"a": [T((0, 5, 0, 1, 9, 0.9))]})


def test_sens_at_fp_equals_interp1d_on_flat_or_vertical_curves() -> None:
    rng = np.random.default_rng(5)
    rates = np.array([0.0, 0.05, *FP_RATES, 40.0])
    for _ in range(300):
        hits = rng.random(rng.integers(1, 40)) < 0.5
        fps = np.cumsum(~hits) / float(rng.integers(1, 9))
        sens = np.cumsum(hits * rng.integers(1, 3, len(hits))) / 60.0
        ours = sens_at_fp(fps, sens, rates)
        inside = rates[rates >= fps[0]].tolist()
        assert ours[rates < fps[0]].tolist() == [0.0] * int((rates < fps[0]).sum())
        assert ours[rates >= fps[0]].tolist() == mulan_sens_at_fp(sens, fps, inside).tolist()
    assert sens_at_fp(np.zeros(0), np.zeros(0), (1.0,)).tolist() == [0.0]
    assert operating_index(np.array([0.0, 0.5, 0.5, 1.0]), (0.4, 0.5, 2.0)).tolist() == [0, 2, 3]


def test_froc_walk_counts_first_hits_only() -> None:
    # d0 (0.2) hits g0, g1; d1 (0.9) hits g1; d2 (0.5) nothing
    w = froc_walk(np.array([0.2, 0.9, 0.5]), np.array([0, 2, 3, 3]), np.array([0, 1, 1]), 3)
    assert w.order.tolist() == [1, 2, 0]
    assert w.first_hit_rank.tolist() == [2, 0, 3]
    assert w.tps.tolist() == [1, 1, 2] and w.fp.tolist() == [0, 1, 1]


def test_pairwise_iou_equals_uld_boxes() -> None:
    from uld.boxes import iou_plus1

    rng = np.random.default_rng(0)
    a = rng.uniform(0, 30, (200, 4))
    b = rng.uniform(0, 30, (200, 4))
    a[:, 2:] = a[:, :2] + rng.uniform(0, 20, (200, 2))
    b[:, 2:] = b[:, :2] + rng.uniform(0, 20, (200, 2))
    assert np.array_equal(iou_plus1_pairs(a, b), np.diag(iou_plus1(a, b)))


# ---------------------------------------------------------------------------------------------
# Against the MULAN transcription
# ---------------------------------------------------------------------------------------------


def test_equals_mulan_on_random_small_cases() -> None:
    rng = np.random.default_rng(2026)
    for k in range(400):
        gt, dets = random_case(rng)
        compare_with_mulan(gt, dets, "box" if k % 2 else "tracklet")


def test_equals_mulan_with_many_ties() -> None:
    rng = np.random.default_rng(11)
    for _ in range(15):  # > 16 detections: numpy's introsort / SIMD sort decides tie order
        compare_with_mulan(*random_case(rng, max_tracklets=60))


def jittered_detections(gt: dict, rng: np.random.Generator, n_fp: int) -> dict:
    """A 3-slice tracklet around 80% of the key boxes (jittered), plus random false positives."""
    dets: dict = {name: [] for name in gt}
    for name, items in gt.items():
        for z, box in items:
            if rng.random() < 0.8:
                rows = []
                for dz in (-1, 0, 1):
                    b = box + rng.normal(0, 2.5, 4)
                    b[2:] = np.maximum(b[2:], b[:2])
                    rows.append((max(z + dz, 0), np.append(b, round(float(rng.random()), 2))))
                dets[name].append(rows)
    names = list(gt)
    for _ in range(n_fp):
        name = names[rng.integers(len(names))]
        z = gt[name][0][0] if gt[name] else 0
        x, y = rng.uniform(0, 450, 2)
        dets[name].append([(z, np.array([x, y, x + 30, y + 30, round(float(rng.random()), 2)]))])
    return dets


def test_real_recist_files_counts_perfect_and_mulan() -> None:
    test = read_keyslice_gt(LH / "RECIST-Box-Test.pkl")
    valid = read_keyslice_gt(LH / "RECIST-Box-Valid.pkl")
    assert (len(test), sum(map(len, test.values())), len(keyslice_images(test))) == (3005, 4912, 4817)
    assert (len(valid), sum(map(len, valid.values())), len(keyslice_images(valid))) == (3001, 4885, 4789)
    perfect = {name: [[(z, np.append(box, 1.0))] for z, box in items] for name, items in test.items()}
    r = evaluate_keyslice(test, perfect)
    assert sens_list(r) == [1.0] * 8 and r.n_fp == 0 and r.n_hits == 4912
    rng = np.random.default_rng(4)
    dets = jittered_detections(test, rng, n_fp=6000)
    r = evaluate_keyslice(test, dets)
    assert 0.5 < r.sensitivity[8.0] <= 0.8 + 0.02 and r.sensitivity[0.125] < r.sensitivity[8.0]
    compare_with_mulan(test, dets)


def test_readers_annot_keys_and_dataset_folder_key_rows(tmp_path: Path) -> None:
    from uld.safe_pickle import dump_pickle

    pkl = tmp_path / "gt.pkl"
    dump_pickle({"a_001-010.annot": {4: [[1.0, 2.0, 8.0, 9.0, 4.0, 4.0]]}, "b_001-010": {}}, pkl)
    gt = read_keyslice_gt(pkl)
    assert list(gt) == ["a_001-010", "b_001-010"] and gt["a_001-010"][0][0] == 4
    assert gt["a_001-010"][0][1].tolist() == [1, 2, 8, 9] and gt["b_001-010"] == []
    (tmp_path / "splits.csv").write_text("volume,split\na,test\nb,test\nc,val\n")
    (tmp_path / "annotations.csv").write_text(
        "volume,z,x1,y1,x2,y2,key\n"
        "a,5,10,10,20,20,1\n"  # key box
        "a,5,40,40,50,50,0\n"  # another lesion's non-key cross-section on the key slice
        "a,6,10,10,20,20,0\n"  # a non-key slice
        "c,1,0,0,5,5,1\n"  # another split
    )
    gt = read_keyslice_gt(tmp_path, "test")
    assert {k: [(z, b.tolist()) for z, b in v] for k, v in gt.items()} == {
        "a": [(5, [10, 10, 20, 20])], "b": []}
    full = read_keyslice_gt(tmp_path, "test", key_only=False)
    assert [(z, b.tolist()) for z, b in full["a"]] == [(5, [10, 10, 20, 20]), (5, [40, 40, 50, 50])]
    assert keyslice_images(full) == [("a", 5)]
    with pytest.raises(EvalFormatError, match="needs a split"):
        read_keyslice_gt(tmp_path)
    with pytest.raises(EvalFormatError, match="split='test' applies only to a dataset folder"):
        read_keyslice_gt(pkl, "test")
