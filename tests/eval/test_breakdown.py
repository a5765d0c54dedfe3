"""uld.eval.breakdown: sensitivity by size band and lesion type at whole-set operating points."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from uld.eval.breakdown import (
    DEEPLESION_LESION_TYPES,
    box_long_axis,
    breakdown,
    gt_long_axis,
    operating_points,
    size_bands,
)
from uld.eval.froc import FP_RATES
from uld.eval.ground_truth import GroundTruth3D, read_boxes3d_gt, read_keyslice_gt
from uld.eval.iobb3d import evaluate_iobb3d, match_iobb3d
from uld.eval.keyslice import evaluate_keyslice, match_keyslice
from uld.eval.p3d import evaluate_p3d, match_p3d

DL = Path(__file__).resolve().parents[3] / "shared" / "deeplesion"


def B(*xyxy: float) -> np.ndarray:
    return np.array(xyxy, dtype=np.float64)


def T(*boxes: tuple) -> list:
    return [(int(b[0]), np.array(b[1:], dtype=np.float64)) for b in boxes]


# Four lesions of long axis 5, 15, 25 and 40 px; types liver, lung, liver, bone.
GT = {
    "a": [(0, B(0, 0, 5, 5)), (0, B(20, 0, 35, 10))],  # g0 (5), g1 (15)
    "b": [(0, B(0, 0, 25, 10))],  # g2 (25)
    "c": [(0, B(0, 0, 40, 40))],  # g3 (40), never found
    "d": [],  # no lesion (counts per volume in P3D; no image in key-slice)
}
DETS = {
    "a": [T((0, 20, 0, 35, 10, 0.9)), T((0, 60, 60, 70, 70, 0.6)), T((0, 0, 0, 5, 5, 0.5))],
    "b": [T((0, 0, 0, 25, 10, 0.7))],
    "c": [T((0, 90, 90, 99, 99, 0.8))],
}
LABELS = np.array([4, 5, 4, 1])


def test_hand_case_keyslice() -> None:
    # ranking: hit g1 (.9) | FP (.8) | hit g2 (.7) | FP (.6) | hit g0 (.5); 3 images:
    # fps [0, 1/3, 1/3, 2/3, 2/3]
    m = match_keyslice(GT, DETS)
    sizes = gt_long_axis(GT)
    assert sizes.tolist() == [5, 15, 25, 40]
    b = breakdown(m, (0.25, 0.5, 1.0), sizes=sizes, size_unit="px", labels=LABELS)
    assert b.kept == {0.25: 1, 0.5: 3, 1.0: 5}
    assert b.score_threshold == {0.25: 0.9, 0.5: 0.7, 1.0: 0.5}
    assert b.overall.hits == {0.25: 1, 0.5: 2, 1.0: 3} and b.overall.n == 4
    bands = {g.name: (g.n, list(g.hits.values())) for g in b.by_size}
    assert bands == {"<10 px": (1, [0, 0, 1]), "10-20 px": (1, [1, 1, 1]),
                     "20-30 px": (1, [0, 1, 1]), ">=30 px": (1, [0, 0, 0])}
    types = {g.name: g for g in b.by_label}
    assert list(types) == list(DEEPLESION_LESION_TYPES.values())  # codes 1..8 in order
    assert list(types["liver"].sensitivity.values()) == [0.0, 0.5, 1.0]
    assert list(types["lung"].sensitivity.values()) == [1.0, 1.0, 1.0]
    assert types["bone"].hits == {0.25: 0, 0.5: 0, 1.0: 0}
    assert types["kidney"].n == 0 and math.isnan(types["kidney"].sensitivity[1.0])
    r = evaluate_keyslice(GT, DETS, fp_rates=(0.25, 0.5, 1.0))
    assert list(r.sensitivity.values()) == list(b.overall.sensitivity.values()) == [0.25, 0.5, 0.75]
    j = b.to_json()
    assert j["by_label"][4]["name"] == "lung" and j["by_label"][5]["sensitivity"]["1"] is None
    text = b.format()
    assert "liver" in text and "n/a" in text and text.splitlines()[2].split()[:4] == ["all", "25.00",
                                                                                        "50.00", "75.00"]


def test_hand_case_p3d_cuts_before_the_tie_in_fp() -> None:
    # P3D: 4 volumes, fps [0, .25, .25, .5, .5]. P3D reads at 0.25 the last point with
    # fps < 0.25 (index 0: g1 only); the key-slice rule would take index 2.
    m = match_p3d(GT, DETS)
    index, order, first = operating_points(m, (0.25, 0.5, 1.0))
    assert index.tolist() == [0, 2, 4] and order.tolist() == [0, 4, 3, 1, 2]
    assert first.tolist() == [4, 0, 2, 5]
    b = breakdown(m, (0.25, 0.5, 1.0), labels=LABELS)
    assert b.overall.hits == {0.25: 1, 0.5: 2, 1.0: 3} and b.unit == "volume"
    r = evaluate_p3d(GT, DETS, fp_rates=(0.25, 0.5, 1.0))
    assert list(r.sensitivity.values()) == list(b.overall.sensitivity.values())
    assert b.by_size == ()


def test_nothing_kept_below_the_first_false_positive() -> None:
    gt = GroundTruth3D({f"v{i}": np.array([[0, 0, 0, 9, 9, 2]], float) for i in range(2)})
    dets = {"v0": [T((5, 50, 50, 60, 60, 0.9))], "v1": [T((0, 0, 0, 9, 9, 0.5))]}
    # fps [.5, .5]: at 0.25 no detection is kept (the protocol reads 0 there)
    b = breakdown(match_iobb3d(gt, dets), (0.25, 0.5))
    assert b.kept == {0.25: 0, 0.5: 2} and b.score_threshold == {0.25: None, 0.5: 0.5}
    assert b.overall.hits == {0.25: 0, 0.5: 1}
    assert list(evaluate_iobb3d(gt, dets, fp_rates=(0.25, 0.5)).sensitivity.values()) == [0.0, 0.5]


def test_sizes_spacing_padding_and_bands() -> None:
    boxes = np.array([[0, 0, 20, 10], [0, 0, 10, 30]], float)
    assert box_long_axis(boxes).tolist() == [20, 30]
    assert box_long_axis(boxes, (0.5, 1.0)).tolist() == [10, 30]
    assert box_long_axis(boxes, pad_px=5).tolist() == [10, 20]
    assert box_long_axis(np.array([[0, 0, 3, 8, 4, 9]], float)).tolist() == [8]  # 3D: axial
    gt = {"a": [(0, B(0, 0, 20, 10))], "b": [(1, B(0, 0, 10, 30))], "c": []}
    assert gt_long_axis(gt, {"a": (0.5, 0.5), "b": (0.8, 0.7, 5.0)}).tolist() == [10, 21]
    with pytest.raises(ValueError, match="no \\(sx, sy\\) for volume 'b'"):
        gt_long_axis(gt, {"a": (1, 1)})
    band, names = size_bands(np.array([9.99, 10.0, 19.9, 20.0, 30.0, 75.0, np.nan]))
    assert band.tolist() == [0, 1, 1, 2, 3, 3, 4]
    assert names == ("<10 mm", "10-20 mm", "20-30 mm", ">=30 mm", "unknown")
    with pytest.raises(ValueError, match="must increase"):
        size_bands(np.ones(2), (10, 5))


def test_per_box_arrays_must_match_the_ground_truth() -> None:
    m = match_keyslice(GT, DETS)
    with pytest.raises(ValueError, match="sizes has shape \\(3,\\); the ground truth has 4 boxes"):
        breakdown(m, sizes=np.ones(3))
    with pytest.raises(ValueError, match="expected 4 integers"):
        breakdown(m, labels=np.ones(4) * 0.5)
    with pytest.raises(TypeError, match="expected P3DMatches"):
        breakdown("matches")  # type: ignore[arg-type]
    other = breakdown(m, (1.0,), labels=np.array([-1, 4, 4, 9]), label_names={4: "liver"})
    assert [(g.name, g.n) for g in other.by_label] == [("label -1", 1), ("liver", 2), ("label 9", 1)]


# ---------------------------------------------------------------------------------------------
# Pooled groups equal each protocol's own sensitivity, on random inputs
# ---------------------------------------------------------------------------------------------


def random_2d(rng: np.random.Generator) -> tuple[dict, dict]:
    gt: dict = {}
    for v in range(int(rng.integers(1, 6))):
        items = []
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.integers(0, 30, 2)
            w, h = rng.integers(2, 25, 2)
            items.append((int(rng.integers(0, 3)), B(x, y, x + w, y + h)))
        gt[f"v{v}"] = sorted(items, key=lambda item: item[0])
    dets: dict = {}
    for name, items in gt.items():
        tracklets = []
        for _ in range(int(rng.integers(0, 8))):
            if items and rng.random() < 0.6:
                z, g = items[rng.integers(len(items))]
                box = g + rng.integers(-3, 4, 4)
                box[2:] = np.maximum(box[2:], box[:2])
            else:
                z = int(rng.integers(0, 3))
                x, y = rng.integers(0, 30, 2)
                box = B(x, y, x + rng.integers(2, 25), y + rng.integers(2, 25))
            tracklets.append([(z, np.append(box, float(rng.integers(1, 8)) / 10))])
        dets[name] = tracklets
    return gt, dets


def check_pooled(matches, result, rng: np.random.Generator) -> None:
    rates = (0.05, *FP_RATES, 100.0)
    sizes = rng.uniform(0, 45, matches.npos)
    labels = rng.integers(1, 9, matches.npos)
    b = breakdown(matches, rates, sizes=sizes, labels=labels)
    assert list(b.overall.sensitivity.values()) == [result.sensitivity[r] for r in rates] or (
        matches.npos == 0)
    for groups in (b.by_size, b.by_label):
        assert sum(g.n for g in groups) == matches.npos
        for r in rates:
            assert sum(g.hits[r] for g in groups) == b.overall.hits[r]


def test_pooled_sensitivity_equals_every_protocol() -> None:
    rng = np.random.default_rng(17)
    rates = (0.05, *FP_RATES, 100.0)
    for _ in range(150):
        gt, dets = random_2d(rng)
        check_pooled(match_p3d(gt, dets), evaluate_p3d(gt, dets, fp_rates=rates), rng)
        check_pooled(match_keyslice(gt, dets), evaluate_keyslice(gt, dets, fp_rates=rates), rng)
        gt3 = GroundTruth3D({
            name: np.array([[b[0], b[1], z, b[2], b[3], z + int(rng.integers(0, 3))] for z, b in items],
                           dtype=np.float64).reshape(-1, 6)
            for name, items in gt.items()
        })
        check_pooled(match_iobb3d(gt3, dets), evaluate_iobb3d(gt3, dets, fp_rates=rates), rng)


def test_real_files_perfect_detections_hit_every_band() -> None:
    gt = read_keyslice_gt(DL / "lesion_harvester" / "RECIST-Box-Test.pkl")
    perfect = {name: [[(z, np.append(box, 1.0))] for z, box in items] for name, items in gt.items()}
    sizes = gt_long_axis(gt, pad_px=5)  # the RECIST end points' extent, in pixels
    b = breakdown(match_keyslice(gt, perfect), (0.125, 8.0), sizes=sizes, size_unit="px")
    assert b.overall.n == 4912 and all(g.sensitivity[0.125] == 1.0 for g in b.by_size if g.n)
    assert sum(g.n for g in b.by_size) == 4912 and b.by_size[0].n > 0
    manual = read_boxes3d_gt(DL / "manual_1k" / "DeepLesion_manual_1K_test_release.pkl", "val")
    none = breakdown(match_iobb3d(manual, {}), (1.0,), sizes=gt_long_axis(manual), size_unit="px")
    assert none.overall.n == 1292 and none.overall.hits == {1.0: 0} and none.kept == {1.0: 0}
