"""uld.eval.iobb3d and the 3D readers: the manual 1K protocol, by hand and against its script."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import interpolate

from uld.data.annotations import EvalFormatError, flatten_detections
from uld.data.deeplesion import parse_subvolume_name
from uld.eval.froc import FP_RATES, UnknownVolumeError
from uld.eval.ground_truth import GroundTruth3D, read_boxes3d_gt
from uld.eval.iobb3d import (
    REFERENCE_FP_RATES,
    evaluate_iobb3d,
    iobb3d_metrics,
    iobb_pairs,
    match_iobb3d,
    tracklet_boxes_3d,
)
from uld.safe_pickle import load_pickle

DL = Path(__file__).resolve().parents[3] / "shared" / "deeplesion"
MANUAL_1K = DL / "manual_1k" / "DeepLesion_manual_1K_test_release.pkl"
BOX_3D = DL / "lesion_harvester" / "3D-Box.pkl"


def T(*boxes: tuple) -> list:
    """A tracklet from ``(z, x1, y1, x2, y2, score)`` rows."""
    return [(int(b[0]), np.array(b[1:], dtype=np.float64)) for b in boxes]


def G(boxes: dict, z_absolute: bool = False) -> GroundTruth3D:
    return GroundTruth3D({k: np.array(v, dtype=np.float64).reshape(-1, 6) for k, v in boxes.items()},
                         z_absolute=z_absolute)


def sens_list(result) -> list[float]:
    return [result.sensitivity[r] for r in FP_RATES]


# ---------------------------------------------------------------------------------------------
# A literal transcription of general_detection_evaluation.py (FROC '3D' 'IOBB', IOX,
# sens_at_FP) and evaluation_sample.py's evaluate, kept slow
# ---------------------------------------------------------------------------------------------


def ref_iox_3d_iobb(box1: np.ndarray, gts: np.ndarray) -> np.ndarray:
    ixmin = np.maximum(gts[:, 0], box1[0])
    iymin = np.maximum(gts[:, 1], box1[1])
    izmin = np.maximum(gts[:, 2], box1[2])
    ixmax = np.minimum(gts[:, 3], box1[3])
    iymax = np.minimum(gts[:, 4], box1[4])
    izmax = np.minimum(gts[:, 5], box1[5])
    iw = np.maximum(ixmax - ixmin + 1., 0.)
    ih = np.maximum(iymax - iymin + 1., 0.)
    idd = np.maximum(izmax - izmin + 1., 0.)
    inters = iw * ih * idd
    box_size = (box1[3] - box1[0] + 1.) * (box1[4] - box1[1] + 1.) * (box1[5] - box1[2] + 1.)
    return inters / box_size


def ref_froc(boxes_all: list, gts_all: list, overlap_th: float = .3) -> tuple[np.ndarray, np.ndarray]:
    assert len(boxes_all) == len(gts_all)
    assert boxes_all[0].shape[1] == 7 and gts_all[0].shape[1] == 6
    n_img = len(boxes_all)
    img_idxs = np.hstack([[i] * len(boxes_all[i]) for i in range(n_img)]).astype(int)
    boxes_cat = np.vstack(boxes_all)
    scores = boxes_cat[:, -1]
    order = np.argsort(scores)[::-1]
    boxes_cat = boxes_cat[order, :-1]
    img_idxs = img_idxs[order]
    hits = [np.zeros((len(gts),), dtype=bool) for gts in gts_all]
    n_hits = 0
    n_miss = 0
    tps, fps = [], []
    for i in range(len(boxes_cat)):
        overlap = ref_iox_3d_iobb(boxes_cat[i, :], gts_all[img_idxs[i]])
        if len(overlap) == 0 or np.any(np.isnan(overlap)) or (overlap.max() < overlap_th):
            n_miss += 1
        else:
            for j in range(len(overlap)):
                if overlap[j] >= overlap_th and not hits[img_idxs[i]][j]:
                    hits[img_idxs[i]][j] = True
                    n_hits += 1
        tps.append(n_hits)
        fps.append(n_miss)
    n_gt = len(np.vstack(gts_all))
    return np.array(tps, dtype=float) / n_gt, np.array(fps, dtype=float) / n_img


def ref_sens_at_fp(sens: np.ndarray, fp_per_img: np.ndarray, fp_values: list) -> np.ndarray:
    out_left = [a for a in fp_values if a < fp_per_img[0]]
    inside = [a for a in fp_values if fp_per_img[0] <= a <= fp_per_img[-1]]
    out = [a for a in fp_values if a > fp_per_img[-1]]
    f = interpolate.interp1d(fp_per_img, sens)
    return np.hstack([np.zeros((len(out_left),)), f(np.array(inside)),
                      np.ones((len(out),)) * sens[-1]])


def ref_evaluate(gts: dict, boxes_pred: dict) -> np.ndarray:
    """``evaluate``: sensitivity at 0.125 .. 1024, then the mean of the first seven."""
    froc_fp = [2 ** p for p in range(-3, 11)]
    fns = list(gts.keys())
    sens, fps = ref_froc([boxes_pred[fn] for fn in fns], [gts[fn] for fn in fns], .3)
    det_res = ref_sens_at_fp(sens, fps, froc_fp)
    return np.hstack((det_res, det_res[:7].mean()))


def reference_predictions(gt: GroundTruth3D, dets: dict) -> dict:
    """``boxes_pred[fn]``: one ``[x1, y1, z1, x2, y2, z2, score]`` row per tracklet, by loops."""
    out = {}
    for name in gt.boxes:
        first = parse_subvolume_name(name)[1] if gt.z_absolute and dets.get(name) else 0
        rows = []
        for tracklet in dets.get(name, []):
            zs = [int(z) + first for z, _ in tracklet]
            bs = [b for _, b in tracklet]
            rows.append([min(b[0] for b in bs), min(b[1] for b in bs), min(zs),
                         max(b[2] for b in bs), max(b[3] for b in bs), max(zs),
                         max(b[4] for b in bs)])
        out[name] = np.array(rows, dtype=np.float64).reshape(-1, 7)
    return out


def compare_with_reference(gt: GroundTruth3D, dets: dict) -> None:
    ours = evaluate_iobb3d(gt, dets, fp_rates=REFERENCE_FP_RATES)
    preds = reference_predictions(gt, dets)
    n_det = sum(len(p) for p in preds.values())
    assert ours.n_detections == n_det
    if n_det == 0:
        assert list(ours.sensitivity.values()) == [0.0] * len(REFERENCE_FP_RATES)
        return
    gts = dict(gt.boxes)
    with np.errstate(all="ignore"):
        sens, fps = ref_froc([preds[k] for k in gts], [gts[k] for k in gts])
    assert ours.fps.tolist() == fps.tolist()
    if ours.npos == 0:
        assert ours.sens.tolist() == [0.0] * n_det and ours.avg == 0.0
        return
    assert ours.sens.tolist() == sens.tolist()
    expected = ref_evaluate(gts, preds)
    assert list(ours.sensitivity.values()) == expected[:-1].tolist()
    assert ours.avg == expected[-1]


def random_case(rng: np.random.Generator, max_tracklets: int = 6) -> tuple[GroundTruth3D, dict]:
    """Small integer 3D boxes: ties, IOBBs at 0.3, empty volumes; absolute z half the time."""
    z_absolute = bool(rng.random() < 0.5)
    boxes: dict = {}
    firsts: dict = {}
    for v in range(int(rng.integers(1, 6))):
        first = int(rng.integers(0, 200)) if z_absolute else 0
        name = f"{v:06d}_01_01_{first:03d}-{first + 9:03d}"
        firsts[name] = first
        rows = []
        for _ in range(int(rng.integers(0, 4))):
            x, y, z = rng.integers(0, 12), rng.integers(0, 12), rng.integers(0, 6)
            w, h, d = rng.integers(0, 8, 3)
            rows.append([x, y, z + first, x + w, y + h, z + first + d])
        boxes[name] = rows
    gt = G(boxes, z_absolute)
    dets: dict = {}
    for name, rows in boxes.items():
        if rng.random() < 0.2:
            continue
        first = firsts[name]
        tracklets = []
        for _ in range(int(rng.integers(0, max_tracklets + 1))):
            if rows and rng.random() < 0.6:
                g = np.array(rows[rng.integers(len(rows))], dtype=np.float64)
                z0, z1 = int(g[2]) - first, int(g[5]) - first
                xy = np.array([g[0], g[1], g[3], g[4]])
            else:
                z0 = int(rng.integers(0, 6))
                z1 = z0 + int(rng.integers(0, 4))
                x, y = rng.integers(0, 12, 2)
                xy = np.array([x, y, x + rng.integers(0, 8), y + rng.integers(0, 8)], float)
            z0 = max(0, z0 + int(rng.integers(-1, 2)))
            z1 = max(z0, z1 + int(rng.integers(-1, 2)))
            tracklet = []
            for z in range(z0, z1 + 1):
                b = xy + rng.integers(-2, 3, 4) * rng.choice([0.5, 1.0])
                b[2:] = np.maximum(b[2:], b[:2])
                tracklet.append((z, np.append(b, float(rng.integers(1, 6)) / 10)))
            tracklets.append(tracklet)
        dets[name] = tracklets
    return gt, dets


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_iobb_is_over_the_detected_box() -> None:
    gt = np.array([[0, 0, 0, 9, 9, 9]], dtype=np.float64)  # 10 x 10 x 10 voxels with +1
    inside = np.array([[2, 2, 2, 4, 4, 4]], dtype=np.float64)  # wholly inside: IOBB 1
    around = np.array([[0, 0, 0, 19, 19, 9]], dtype=np.float64)  # 4x the volume: 0.25
    half_z = np.array([[0, 0, 5, 9, 9, 14]], dtype=np.float64)  # half of it inside: 0.5
    assert iobb_pairs(inside, gt).tolist() == [1.0]
    assert iobb_pairs(around, gt).tolist() == [0.25]
    assert iobb_pairs(half_z, gt).tolist() == [0.5]


def test_tracklet_boxes_3d_min_max_and_z_shift() -> None:
    flat = flatten_detections({"a_010-020": [T((3, 5, 6, 9, 9, 0.2), (4, 4, 7, 10, 8, 0.7),
                                               (6, 5, 5, 9, 9, 0.1))]})
    assert tracklet_boxes_3d(flat).tolist() == [[4, 5, 3, 10, 9, 6, 0.7]]
    assert tracklet_boxes_3d(flat, np.array([10.0])).tolist() == [[4, 5, 13, 10, 9, 16, 0.7]]


def test_hand_case_absolute_z_ties_rehits_and_empty_volumes() -> None:
    gt = G({
        "000001_01_01_103-115": [[0, 0, 105, 9, 9, 108], [20, 0, 105, 29, 9, 106]],  # g0, g1
        "000002_01_01_010-020": [],  # an empty sub-volume: it still counts per volume
        "000003_01_01_001-030": [[0, 0, 10, 9, 9, 12]],  # g2
    }, z_absolute=True)
    dets = {
        "000003_01_01_001-030": [T((9, 0, 0, 9, 9, 0.8))],  # slice 10: inside g2: hit (0.8)
        "000001_01_01_103-115": [
            T((2, 0, 0, 9, 9, 0.9), (3, 0, 0, 9, 9, 0.5)),  # 105-106: inside g0: hit (0.9)
            T((2, 0, 0, 29, 9, 0.8)),  # 105: spans g0 and g1, IOBB 1/3 each: both re-hit/hit
            T((0, 0, 0, 9, 9, 0.3)),  # slice 103: outside every box: FP (0.3)
        ],
        "000002_01_01_010-020": [T((0, 0, 0, 9, 9, 0.6))],  # FP (0.6)
    }
    m = match_iobb3d(gt, dets)
    # ground-truth order: volume 1's tracklets, then volume 2's, then volume 3's
    assert m.volume_index.tolist() == [0, 0, 0, 1, 2]
    assert m.tracklet_index.tolist() == [1, 2, 3, 4, 0]
    assert m.scores.tolist() == [0.9, 0.8, 0.3, 0.6, 0.8]
    assert m.boxes[0].tolist() == [0, 0, 105, 9, 9, 106]
    assert [m.hits(t).tolist() for t in range(5)] == [[0], [0, 1], [], [], [2]]
    assert m.hit_iobb.tolist() == [1.0, 10 / 30, 10 / 30, 1.0]
    r = iobb3d_metrics(m)
    # ranking argsort([.9, .8, .3, .6, .8])[::-1] = [0, 4, 1, 3, 2]:
    # hit g0 | hit g2 | g0 re-hit + g1 new | FP | FP
    assert r.sens.tolist() == [1 / 3, 2 / 3, 1.0, 1.0, 1.0]
    assert r.fps.tolist() == [0, 0, 0, 1 / 3, 2 / 3]
    assert sens_list(r) == [1.0] * 8 and r.n_fp == 2 and r.n_units == 3
    assert r.ap is None and r.to_json()["n_volumes"] == 3
    compare_with_reference(gt, dets)


def test_rates_below_the_start_are_zero_and_past_the_end_the_last_value() -> None:
    # 16 volumes; ranking FP (0.9), hit (0.5): fps [1/16, 1/16], sens [0, 1]
    boxes: dict = {f"{i:06d}_01_01_000-010": [] for i in range(16)}
    boxes["000000_01_01_000-010"] = [[0, 0, 0, 9, 9, 2]]
    gt = G(boxes)
    dets = {"000001_01_01_000-010": [T((0, 0, 0, 9, 9, 0.9))],
            "000000_01_01_000-010": [T((1, 0, 0, 9, 9, 0.5))]}
    r = evaluate_iobb3d(gt, dets, fp_rates=(0.03125, 0.0625, 0.125, 1024.0))
    assert r.fps.tolist() == [0.0625, 0.0625] and r.sens.tolist() == [0.0, 1.0]
    assert list(r.sensitivity.values()) == [0.0, 1.0, 1.0, 1.0]
    assert ref_sens_at_fp(r.sens, r.fps, [0.03125, 0.0625, 0.125, 1024.0]).tolist() == [0, 1, 1, 1]


def test_no_detections_no_boxes_unknown_and_unnamed_volumes() -> None:
    gt = G({"000001_01_01_000-010": [[0, 0, 0, 9, 9, 2]], "000002_01_01_000-010": []}, True)
    r = evaluate_iobb3d(gt, {})
    assert sens_list(r) == [0.0] * 8 and (r.npos, r.n_units, r.n_detections) == (1, 2, 0)
    r = evaluate_iobb3d(G({"v": []}), {"v": [T((0, 0, 0, 9, 9, 0.9))]})
    assert sens_list(r) == [0.0] * 8 and r.n_fp == 1
    with pytest.raises(UnknownVolumeError, match=r"'000009_01_01_000-010', which the ground"):
        evaluate_iobb3d(gt, {"000009_01_01_000-010": [T((0, 0, 0, 9, 9, 0.9))]})
    odd = G({"volume": [[0, 0, 0, 9, 9, 2]]}, z_absolute=True)
    with pytest.raises(EvalFormatError, match=r"detection volume 'volume' is not a sub-volume"):
        evaluate_iobb3d(odd, {"volume": [T((0, 0, 0, 9, 9, 0.9))]})
    with pytest.raises(EvalFormatError, match="expected 3D boxes"):
        evaluate_iobb3d({"v": []}, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="iobb_threshold"):
        evaluate_iobb3d(gt, {}, iobb_threshold=0)


# ---------------------------------------------------------------------------------------------
# Against the transcription of the manual 1K script
# ---------------------------------------------------------------------------------------------


def test_equals_reference_on_random_small_cases() -> None:
    rng = np.random.default_rng(31)
    for _ in range(300):
        compare_with_reference(*random_case(rng))


def test_equals_reference_with_many_ties() -> None:
    rng = np.random.default_rng(8)
    for _ in range(15):
        compare_with_reference(*random_case(rng, max_tracklets=50))


# ---------------------------------------------------------------------------------------------
# The real files
# ---------------------------------------------------------------------------------------------


def test_manual_1k_counts_and_absolute_slices() -> None:
    raw = load_pickle(MANUAL_1K)
    assert sorted(raw) == ["test", "val"]
    val, test = read_boxes3d_gt(MANUAL_1K, "val"), read_boxes3d_gt(MANUAL_1K, "test")
    assert (len(val.volumes), len(test.volumes)) == (200, 800)
    assert (val.npos, test.npos) == (1292, 4155)  # 5,447 lesions in all, as its readme says
    assert sum(len(b) == 0 for b in test.boxes.values()) == 31
    assert sum(len(b) == 0 for b in val.boxes.values()) == 0
    assert val.z_absolute and test.z_absolute and not set(val.volumes) & set(test.volumes)
    for gt in (val, test):
        for name, b in gt.boxes.items():
            _, first, last = parse_subvolume_name(name)
            assert ((b[:, 2] >= first) & (b[:, 5] <= last) & (b[:, 2] <= b[:, 5])).all(), name
            assert (b == np.round(b)).all()
    with pytest.raises(EvalFormatError, match="splits 'val' .* and 'test'"):
        read_boxes3d_gt(MANUAL_1K)


def test_3d_box_file_counts_offsets_and_negative_z() -> None:
    gt = read_boxes3d_gt(BOX_3D)
    assert (len(gt.volumes), gt.npos, gt.z_absolute) == (272, 874, False)
    _, boxes = gt.flat()
    negative = boxes[boxes[:, 2] < 0]
    assert len(negative) == 9  # z1 = -0.5, z2 = 0.5 (up to float noise): kept as they are
    assert negative[:, 2] == pytest.approx([-0.5] * 9, abs=1e-13)
    assert negative[:, 5] == pytest.approx([0.5] * 9, abs=1e-13)
    z = boxes[:, [2, 5]]
    half = np.isclose(z % 1, 0.5)
    assert int(half[:, 0].sum()) == int(half[:, 1].sum()) == int(half.all(axis=1).sum()) == 70
    assert int((z * 2 != np.round(z * 2)).sum()) == 16  # computed floats, ~1e-14 off
    raw = load_pickle(BOX_3D)
    name = "000001_01_01_103-115"
    assert gt.boxes[name].tolist() == np.asarray(raw[name])[:, [0, 1, 4, 2, 3, 5]].tolist()
    # the same lesions in the manual 1K set, there with absolute z: offset 5 + first 103 = 108
    manual = read_boxes3d_gt(MANUAL_1K, "test")
    assert 108 in manual.boxes[name][:, 2] and gt.boxes[name][0, 2] == 5


def perfect_tracklets(gt: GroundTruth3D) -> dict:
    dets = {}
    for name, boxes in gt.boxes.items():
        first = parse_subvolume_name(name)[1] if gt.z_absolute else 0
        dets[name] = [
            [(z - first, np.array([b[0], b[1], b[3], b[4], 1.0]))
             for z in range(int(np.ceil(b[2])), int(np.floor(b[5])) + 1)] or
            [(max(int(b[2]) - first, 0), np.array([b[0], b[1], b[3], b[4], 1.0]))]
            for b in boxes
        ]
    return dets


def noisy_tracklets(gt: GroundTruth3D, rng: np.random.Generator, n_fp: int) -> dict:
    dets = {name: [] for name in gt.boxes}
    names = list(gt.boxes)
    for name, boxes in gt.boxes.items():
        first = parse_subvolume_name(name)[1] if gt.z_absolute else 0
        for b in boxes:
            if rng.random() < 0.85:
                z0 = max(int(b[2]) - first + int(rng.integers(-1, 2)), 0)
                z1 = max(int(b[5]) - first + int(rng.integers(-2, 3)), z0)
                score = round(float(rng.random()), 2)
                rows = []
                for z in range(z0, z1 + 1):
                    xy = np.array([b[0], b[1], b[3], b[4]]) + rng.normal(0, 3, 4)
                    xy[2:] = np.maximum(xy[2:], xy[:2])
                    rows.append((z, np.append(xy, score)))
                dets[name].append(rows)
    for _ in range(n_fp):
        name = names[rng.integers(len(names))]
        x, y = rng.uniform(0, 450, 2)
        z0 = int(rng.integers(0, 10))
        dets[name].append([(z, np.array([x, y, x + 25, y + 25, round(float(rng.random()), 2)]))
                           for z in range(z0, z0 + 3)])
    return dets


def test_real_files_perfect_and_noisy_detections_equal_the_reference() -> None:
    for gt in (read_boxes3d_gt(MANUAL_1K, "test"), read_boxes3d_gt(BOX_3D)):
        r = evaluate_iobb3d(gt, perfect_tracklets(gt))
        assert sens_list(r) == [1.0] * 8 and r.n_fp == 0 and r.n_hits == gt.npos
        dets = noisy_tracklets(gt, np.random.default_rng(2), n_fp=3 * len(gt.volumes))
        r = evaluate_iobb3d(gt, dets)
        assert 0.4 < r.sensitivity[4.0] <= 0.9 and r.avg < r.sensitivity[8.0]
        compare_with_reference(gt, dets)


# ---------------------------------------------------------------------------------------------
# Dataset folders
# ---------------------------------------------------------------------------------------------


def write_rows(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_dataset_folder_3d_boxes_from_lesion_rows_and_lesion_table(tmp_path: Path) -> None:
    write_rows(tmp_path / "splits.csv", ["volume", "split"],
               [["a", "test"], ["b", "test"], ["c", "train"]])
    write_rows(tmp_path / "annotations_full.csv", ["volume", "z", "x1", "y1", "x2", "y2", "key", "lesion"],
               [["a", 3, 10, 10, 20, 20, 0, 0], ["a", 4, 9, 11, 21, 19, 1, 0],
                ["a", 7, 50, 50, 60, 60, 1, 1], ["c", 1, 0, 0, 5, 5, 1, 0]])
    gt = read_boxes3d_gt(tmp_path, "test", filename="annotations_full.csv")
    assert gt.volumes == ("a", "b") and not gt.z_absolute
    assert gt.boxes["a"].tolist() == [[9, 10, 3, 21, 20, 4], [50, 50, 7, 60, 60, 7]]
    assert gt.boxes["b"].shape == (0, 6) and gt.attributes["lesion"].tolist() == [0.0, 1.0]
    write_rows(tmp_path / "lesions.csv", ["volume", "lesion", "diameter_mm", "x1", "y1", "z1", "x2", "y2",
                                          "z2"],
               [["a", 0, 14.5, 9, 10, 3, 21, 20, 5], ["c", 0, 6.0, 0, 0, 1, 5, 5, 2]])
    table = read_boxes3d_gt(tmp_path, "test")  # lesions.csv, z2 exclusive -> inclusive
    assert table.boxes["a"].tolist() == [[9, 10, 3, 21, 20, 4]]
    assert table.attributes["diameter_mm"].tolist() == [14.5]
    write_rows(tmp_path / "plain.csv", ["volume", "z", "x1", "y1", "x2", "y2"], [["a", 1, 0, 0, 5, 5]])
    with pytest.raises(EvalFormatError, match=r"plain.csv: 3D boxes need a 'lesion' column"):
        read_boxes3d_gt(tmp_path, "test", filename="plain.csv")
    with pytest.raises(EvalFormatError, match="needs a split"):
        read_boxes3d_gt(tmp_path)


def test_synthetic_folder_lesion_table_equals_grouped_full_annotations(tmp_path: Path) -> None:
    from uld.data.synth import SynthConfig, write_synthetic_dataset

    write_synthetic_dataset(tmp_path, SynthConfig(n_train=1, n_val=1, n_test=2, size=64, seed=3),
                            progress=False)
    for split in ("val", "test"):
        table = read_boxes3d_gt(tmp_path, split)
        grouped = read_boxes3d_gt(tmp_path, split, filename="annotations_full.csv")
        assert table.volumes == grouped.volumes and table.npos == grouped.npos > 0
        for name in table.volumes:
            assert sorted(table.boxes[name].tolist()) == sorted(grouped.boxes[name].tolist())
        assert table.attributes["diameter_mm"].shape == (table.npos,)
        r = evaluate_iobb3d(table, perfect_tracklets(table))
        assert sens_list(r) == [1.0] * 8


def test_reader_errors_name_file_volume_and_value(tmp_path: Path) -> None:
    from uld.safe_pickle import dump_pickle

    bad = tmp_path / "bad.pkl"
    dump_pickle({"v1": [[10.0, 10.0, 20.0, 5.0, 2.0, 3.0]]}, bad)  # 3D-Box layout: y2 = 5 < y1
    with pytest.raises(EvalFormatError, match=re.escape(f"{bad}: volume 'v1', box 0: y2 = 5.0 < y1 = 10.0")):
        read_boxes3d_gt(bad)
    dump_pickle({"v1": {3: [[1.0, 2.0, 3.0, 4.0, 3.0, 3.0]]}}, bad)
    with pytest.raises(EvalFormatError, match="a 2D annotation file is not 3D ground truth"):
        read_boxes3d_gt(bad)
    dump_pickle({"v1": [[1.0, 2.0, 3.0]]}, bad)
    with pytest.raises(EvalFormatError, match=r"volume 'v1': expected rows of 6 numbers"):
        read_boxes3d_gt(bad)
    with pytest.raises(EvalFormatError, match="split = 'test' applies only to the manual 1K"):
        read_boxes3d_gt(BOX_3D, "test")
    # in-memory ground truth is validated when built
    with pytest.raises(EvalFormatError, match=r"ground truth: volume 'v', box 1: z2 = 1.0 < z1 = 2.0"):
        GroundTruth3D({"v": [[0, 0, 0, 1, 1, 1], [0, 0, 2, 1, 1, 1]]})
    with pytest.raises(EvalFormatError, match=r"volume 'v': expected rows of 6 numbers"):
        GroundTruth3D({"v": [[0, 0, 0, 1, 1]]})
    assert GroundTruth3D({"v": []}).boxes["v"].shape == (0, 6)
