"""uld.eval.p3d: the Lesion Harvester P3D protocol, by hand and against a naive loop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import interp1d

from conftest import random_2d_case
from uld.data.annotations import EvalFormatError, read_gt
from uld.eval.froc import AVG_FP_RATES, FP_RATES, UnknownVolumeError, froc_sensitivity
from uld.eval.p3d import evaluate_p3d, match_p3d, p3d_metrics, voc_ap
from uld.eval.plots import plot_froc

REVISED_TEST = (Path(__file__).resolve().parents[3] / "shared" / "deeplesion" / "lesion_harvester"
                / "Revised-Test1071.pkl")


def B(*xyxy: float) -> np.ndarray:
    """A ground-truth box ``[x1, y1, x2, y2]``."""
    return np.array(xyxy, dtype=np.float64)


def T(*boxes: tuple) -> list:
    """A tracklet from ``(z, x1, y1, x2, y2, score)`` rows."""
    return [(int(b[0]), np.array(b[1:], dtype=np.float64)) for b in boxes]


def sens_list(result) -> list[float]:
    return [result.sensitivity[r] for r in FP_RATES]


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_hand_case_ties_two_lesions_rehit_empty_volumes() -> None:
    gt = {
        "a": [(0, B(0, 0, 9, 9)), (0, B(20, 0, 29, 9)), (2, B(0, 0, 9, 9))],  # g0, g1, g2
        "b": [(1, B(10, 10, 19, 19))],  # g3
        "c": [],  # a volume without lesions
        "d": [(0, B(0, 0, 9, 9))],  # g4: a volume without detections
    }
    dets = {
        "a": [
            # t0: score 0.9; hits g0 (slice 0) and g2 (slice 2): one tracklet, two lesions
            T((0, 0, 0, 9, 9, 0.9), (1, 0, 0, 9, 9, 0.5), (2, 0, 0, 9, 9, 0.7)),
            T((0, 0, 0, 9, 9, 0.8)),  # t1: 0.8, hits g0 again
            T((0, 20, 0, 29, 9, 0.3)),  # t2: hits g1
        ],
        "b": [T((1, 10, 10, 19, 19, 0.6))],  # t3: hits g3
        "c": [T((0, 0, 0, 9, 9, 0.8))],  # t4: 0.8, a volume without lesions: FP
    }
    m = match_p3d(gt, dets)
    assert m.scores.tolist() == [0.9, 0.8, 0.3, 0.6, 0.8]
    assert [m.hits(t).tolist() for t in range(5)] == [[0, 2], [0], [1], [3], []]
    assert m.volume_index.tolist() == [0, 0, 0, 1, 2]
    assert (m.npos, m.n_volumes, m.n_tracklets) == (5, 4, 5)
    # numpy's argsort keeps the tie t1/t4 (both 0.8) in index order, so reversed t4 comes
    # first: ranking t0, t4, t1, t3, t2.
    assert np.argsort(m.scores)[::-1].tolist() == [0, 4, 1, 3, 2]
    r = p3d_metrics(m)
    # walk: t0 +2 hits | t4 FP (froc 1, ap 1) | t1 re-hit (ap 2) | t3 +1 hit | t2 +1 hit
    # hits [2, 2, 2, 3, 4], fp_froc [0, 1, 1, 1, 1], fp_ap [0, 1, 2, 2, 2]
    assert r.recall.tolist() == [0.4, 0.4, 0.4, 0.6, 0.8]
    assert r.precision.tolist() == pytest.approx([1, 2 / 3, 0.5, 0.6, 4 / 6], rel=1e-15)
    # envelope of [1, 2/3, 1/2, 3/5, 2/3] from the right: [1, 2/3, 2/3, 2/3, 2/3]
    # AP = 0.4 * 1 + 0.2 * 2/3 + 0.2 * 2/3 + (1 - 0.8) * 0 = 0.4 + 0.8/3
    assert r.ap == pytest.approx(0.4 + 0.8 / 3, rel=1e-15)
    # FROC: fps = fp_froc / 4 volumes = [0, .25, .25, .25, .25], sens = [.4, .4, .4, .6, .8]
    assert r.fps.tolist() == [0, 0.25, 0.25, 0.25, 0.25]
    # 0.125 and 0.25 read the segment (0, .4)-(.25, .4): 0.4 (at exactly 0.25 interp1d
    # reads the first point with fps 0.25, before the later hits). Past 0.25 the last
    # segment is vertical (reference: inf), so the final sensitivity 0.8 is used.
    assert sens_list(r) == [0.4, 0.4, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    assert r.avg == pytest.approx((0.4 + 0.4 + 5 * 0.8) / 7, rel=1e-15)
    assert r.to_json()["sensitivity"]["0.125"] == 0.4 and set(r.to_json()) >= {"ap", "avg"}


def test_lesion_hit_twice_counts_two_ap_false_positives() -> None:
    # g0 [0,0,9,9] (area 100 with +1) and g1 [0,0,9,11] (120) overlap on slice 0; the box
    # [0,0,9,10] (110) has IoU 100/110 with g0 and 110/120 with g1: it hits both.
    gt = {"v": [(0, B(0, 0, 9, 9)), (0, B(0, 0, 9, 11)), (4, B(50, 50, 60, 60))]}
    dets = {"v": [
        T((0, 0, 0, 9, 10, 0.9)),  # hits g0, g1
        T((0, 0, 0, 9, 10, 0.5)),  # re-hits g0 and g1: two AP false positives
        T((4, 50, 50, 60, 60, 0.3)),  # hits g2
    ]}
    m = match_p3d(gt, dets)
    assert [m.hits(t).tolist() for t in range(3)] == [[0, 1], [0, 1], [2]]
    assert m.hit_iou[:2].tolist() == [100 / 110, 110 / 120]
    r = p3d_metrics(m)
    # hits [2, 2, 3], fp_ap [0, 2, 2]: recall [2/3, 2/3, 1], precision [1, 1/2, 3/5]
    # AP = 2/3 * 1 + 1/3 * 3/5 = 0.8667 (one AP false positive per re-hit tracklet would
    # have given precision 3/4 and AP 0.9167)
    assert r.ap == pytest.approx(2 / 3 + 1 / 3 * 0.6, rel=1e-15)
    # no FROC false positive at all: fps [0, 0, 0]; every rate reads the final 1.0
    assert sens_list(r) == [1.0] * 8


def test_plus_one_iou_at_the_boundary() -> None:
    gt = {"v": [(0, B(0, 0, 9, 9))]}  # 10 x 10 = 100 pixels with the +1 convention
    # [0,0,9,4]: 10 x 5 = 50 px inside g: IoU = 50 / (100 + 50 - 50) = 0.5 exactly: a hit.
    # (The continuous IoU would be 9*4 / (9*9) = 0.444: a miss.)
    hit = match_p3d(gt, {"v": [T((0, 0, 0, 9, 4, 0.9))]})
    assert hit.hits(0).tolist() == [0] and hit.hit_iou.tolist() == [0.5]
    # [0,0,9,3.9]: 10 x 4.9 = 49 px: IoU 0.49: a miss
    assert match_p3d(gt, {"v": [T((0, 0, 0, 9, 3.9, 0.9))]}).hits(0).tolist() == []
    # threshold is inclusive and configurable
    assert match_p3d(gt, {"v": [T((0, 0, 0, 9, 3.9, 0.9))]}, 0.49).hits(0).tolist() == [0]


def test_first_box_on_the_slice_decides() -> None:
    gt = {"v": [(3, B(10, 10, 30, 30))]}
    far_then_exact = T((3, 100, 100, 120, 120, 0.9), (3, 10, 10, 30, 30, 0.8))
    exact_then_far = T((3, 10, 10, 30, 30, 0.8), (3, 100, 100, 120, 120, 0.9))
    other_slices = T((2, 10, 10, 30, 30, 0.9), (4, 10, 10, 30, 30, 0.9))
    m = match_p3d(gt, {"v": [far_then_exact, exact_then_far, other_slices]})
    assert [m.hits(t).tolist() for t in range(3)] == [[], [0], []]
    assert m.scores.tolist() == [0.9, 0.9, 0.9]  # the maximum, wherever it lies


def test_extrapolation_past_the_curve_end() -> None:
    # 2 volumes; ranking TP(.9) FP(.8) TP(.7) FP(.6): fps [0, .5, .5, 1], sens [.5, .5, 1, 1]
    gt = {"a": [(0, B(0, 0, 9, 9)), (5, B(0, 0, 9, 9))], "b": []}
    dets = {"a": [T((0, 0, 0, 9, 9, 0.9)), T((5, 0, 0, 9, 9, 0.7))],
            "b": [T((0, 0, 0, 9, 9, 0.8)), T((1, 0, 0, 9, 9, 0.6))]}
    r = evaluate_p3d(gt, dets)
    assert r.fps.tolist() == [0, 0.5, 0.5, 1.0] and r.sens.tolist() == [0.5, 0.5, 1, 1]
    # 0.125, 0.25, 0.5: segment (0,.5)-(.5,.5) -> 0.5; 1: segment (.5,1)-(1,1) -> 1;
    # 2..16: extrapolated along the flat last segment -> 1 (finite: the reference's own value)
    expected = [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert sens_list(r) == expected
    reference = interp1d(r.fps, r.sens, fill_value="extrapolate")(FP_RATES)
    assert reference.tolist() == expected
    # AP: precision [1, 1/2, 2/3, 1/2], envelope [1, 2/3, 2/3, 1/2]: 0.5 * 1 + 0.5 * 2/3
    assert r.ap == pytest.approx(0.5 + 0.5 * 2 / 3, rel=1e-15)


# ---------------------------------------------------------------------------------------------
# Degenerate cases
# ---------------------------------------------------------------------------------------------


def test_no_tracklets() -> None:
    gt = {"a": [(0, B(0, 0, 9, 9))], "b": []}
    for dets in ({}, {"a": []}, {"a": [], "b": []}):
        r = evaluate_p3d(gt, dets)
        assert r.ap == 0.0 and sens_list(r) == [0.0] * 8 and r.avg == 0.0
        assert (r.npos, r.n_volumes, r.n_tracklets) == (1, 2, 0)


def test_single_tracklet() -> None:
    gt = {"a": [(0, B(0, 0, 9, 9)), (1, B(0, 0, 9, 9))], "b": []}
    tp = evaluate_p3d(gt, {"a": [T((0, 0, 0, 9, 9, 0.9))]})
    assert sens_list(tp) == [0.5] * 8  # its sensitivity, 1 of 2 boxes, at every rate
    assert tp.ap == 0.5  # recall 0.5 at precision 1
    fp = evaluate_p3d(gt, {"b": [T((0, 0, 0, 9, 9, 0.9))]})
    assert sens_list(fp) == [0.0] * 8 and fp.ap == 0.0


def test_first_tracklet_fp_then_hits_at_a_reported_rate() -> None:
    # 8 volumes; ranking FP, TP, TP: fps [.125, .125, .125], sens [0, .5, 1]
    gt = {"a": [(0, B(0, 0, 9, 9)), (1, B(0, 0, 9, 9))], **{f"e{i}": [] for i in range(7)}}
    dets = {"a": [T((0, 0, 0, 9, 9, 0.8)), T((1, 0, 0, 9, 9, 0.7))],
            "e0": [T((0, 0, 0, 9, 9, 0.9))]}
    r = evaluate_p3d(gt, dets)
    assert r.fps.tolist() == [0.125] * 3 and r.sens.tolist() == [0, 0.5, 1]
    with np.errstate(all="ignore"):
        reference = interp1d(r.fps, r.sens, fill_value="extrapolate")(FP_RATES)
    assert not np.isfinite(reference).any()  # NaN at 0.125, inf past it
    # at 0.125: the first point (0); past it: the final sensitivity (1)
    assert sens_list(r) == [0.0] + [1.0] * 7


def test_no_ground_truth_boxes() -> None:
    r = evaluate_p3d({"a": [], "b": []}, {"a": [T((0, 0, 0, 9, 9, 0.9))]})
    assert r.ap == 0.0 and sens_list(r) == [0.0] * 8 and r.npos == 0
    assert evaluate_p3d({}, {}).n_volumes == 0


def test_froc_sensitivity_rule_equals_interp1d_wherever_finite() -> None:
    rng = np.random.default_rng(1)
    rates = np.array([0.0, 0.05, *FP_RATES, 40.0])
    for _ in range(500):
        hits = rng.random(rng.integers(2, 30)) < 0.5  # a tracklet moves up or right, never both
        fp = np.cumsum(~hits).astype(float) / rng.integers(1, 6)
        sens = np.cumsum(hits * rng.integers(1, 3, len(hits))).astype(float) / 50
        with np.errstate(all="ignore"):
            reference = interp1d(fp, sens, fill_value="extrapolate")(rates)
        index = np.clip(np.searchsorted(fp, rates, side="left") - 1, 0, len(fp) - 1)
        finite = np.isfinite(reference)
        assert np.array_equal(reference[finite], sens[index][finite])
        assert np.array_equal(froc_sensitivity(fp, sens, rates), sens[index])


def test_voc_ap_matches_the_loop() -> None:
    rec = np.array([0.2, 0.2, 0.4, 0.4, 0.8])
    prec = np.array([1.0, 0.5, 2 / 3, 0.5, 0.8])
    # envelope [1, .8, .8, .8, .8]; AP = .2 * 1 + .2 * .8 + .4 * .8 + .2 * 0 = 0.68
    assert voc_ap(rec, prec) == pytest.approx(0.68, rel=1e-15)
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def test_unknown_volume_is_refused() -> None:
    gt = {"a": [(0, B(0, 0, 9, 9))]}
    with pytest.raises(UnknownVolumeError, match=r"volume 'zz', which the ground truth"):
        evaluate_p3d(gt, {"a": [], "zz": [T((0, 0, 0, 9, 9, 0.9))]})
    with pytest.raises(UnknownVolumeError, match=r"'x'.*\(and 1 more\)"):
        match_p3d(gt, {"x": [], "y": []})


def test_bad_inputs_are_refused() -> None:
    gt = {"a": [(0, B(0, 0, 9, 9))]}
    with pytest.raises(ValueError, match="iou_threshold"):
        match_p3d(gt, {}, iou_threshold=0.0)
    with pytest.raises(EvalFormatError, match=r"detections: volume 'a', tracklet 0: .*empty"):
        match_p3d(gt, {"a": [[]]})
    with pytest.raises(EvalFormatError, match=r"ground truth: volume 'a', box 0: x2 = 1.0 < x1"):
        match_p3d({"a": [(0, B(5, 0, 1, 9))]}, {})


# ---------------------------------------------------------------------------------------------
# An independent, naive implementation of the protocol's words, compared bit for bit
# ---------------------------------------------------------------------------------------------


def naive_p3d(gt: dict, dets: dict, thr: float = 0.5) -> dict:
    """Loops and Python floats, written from METHOD.md's description of the reference."""

    def iou(g, d) -> float:  # +1 convention; ground truth first, as the reference
        iw = max(min(g[2], d[2]) - max(g[0], d[0]) + 1.0, 0.0)
        ih = max(min(g[3], d[3]) - max(g[1], d[1]) + 1.0, 0.0)
        inter = iw * ih
        union = (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) + (d[2] - d[0] + 1.0) * (
            d[3] - d[1] + 1.0) - inter
        return inter / max(1e-6, union)

    def overlap(gz, g, tracklet) -> float:
        for z, box in tracklet:
            if z == gz:  # the first box on that slice
                return iou([float(v) for v in g], [float(v) for v in box[:4]])
        return 0.0

    scores, volumes, tracklets = [], [], []
    for volume, ts in dets.items():
        if volume not in gt:
            raise KeyError(volume)
        for tracklet in ts:
            scores.append(max(float(box[4]) for _, box in tracklet))
            volumes.append(volume)
            tracklets.append(tracklet)
    npos = sum(len(items) for items in gt.values())
    hit = {v: [False] * len(items) for v, items in gt.items()}
    n_hits = fp_froc = fp_ap = 0
    tps, fps_froc, fps_ap, hit_sets = [], [], [], []
    for i in np.argsort(np.array(scores, dtype=np.float64))[::-1]:
        overlaps = [overlap(z, g, tracklets[i]) for z, g in gt[volumes[i]]]
        if not overlaps or max(overlaps) < thr:
            fp_froc += 1
            fp_ap += 1
        else:
            for j, o in enumerate(overlaps):
                if o >= thr:
                    if not hit[volumes[i]][j]:
                        hit[volumes[i]][j] = True
                        n_hits += 1
                    else:
                        fp_ap += 1
        tps.append(n_hits)
        fps_froc.append(fp_froc)
        fps_ap.append(fp_ap)
    for i in range(len(tracklets)):
        hit_sets.append([j for j, (z, g) in enumerate(gt[volumes[i]])
                         if overlap(z, g, tracklets[i]) >= thr])
    if npos == 0:  # the reference divides by zero; documented: AP 0, sensitivity 0
        zeros = [0.0] * len(tps)
        return {"ap": 0.0, "sens": [0.0] * len(FP_RATES), "rec": zeros, "prec": zeros,
                "fps": [f / len(gt) for f in fps_froc], "hit_sets": hit_sets}
    eps = float(np.finfo(np.float64).eps)
    rec = [t / npos for t in tps]
    prec = [t / max(t + a, eps) for t, a in zip(tps, fps_ap)]
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for k in range(len(mpre) - 1, 0, -1):
        mpre[k - 1] = max(mpre[k - 1], mpre[k])
    terms = [(mrec[k + 1] - mrec[k]) * mpre[k + 1] for k in range(len(mrec) - 1)
             if mrec[k + 1] != mrec[k]]
    ap = float(np.sum(np.array(terms)))  # the reference sums with np.sum: same rounding
    sens = [t / npos for t in tps]
    fps = [f / len(gt) for f in fps_froc]
    reference = None
    if len(fps) >= 2:
        with np.errstate(all="ignore"):
            reference = interp1d(fps, sens, fill_value="extrapolate")(FP_RATES).tolist()
    readings = []
    for k, rate in enumerate(FP_RATES):
        if reference is not None and np.isfinite(reference[k]):
            readings.append(reference[k])
        elif not fps:
            readings.append(0.0)
        else:  # the documented rule: the last point with fps < rate, else the first point
            before = [idx for idx, f in enumerate(fps) if f < rate]
            readings.append(sens[before[-1]] if before else sens[0])
    return {"ap": ap, "sens": readings, "tps": tps, "fp_froc": fps_froc, "fp_ap": fps_ap,
            "rec": rec, "prec": prec, "fps": fps, "hit_sets": hit_sets}


def random_case(rng: np.random.Generator, max_tracklets: int = 6) -> tuple[dict, dict]:
    return random_2d_case(rng, max_tracklets=max_tracklets)


def _compare(gt: dict, dets: dict) -> None:
    ours_m = match_p3d(gt, dets)
    ours = p3d_metrics(ours_m)
    naive = naive_p3d(gt, dets)
    offsets = np.cumsum([0] + [len(items) for items in gt.values()])
    start = {name: int(offsets[k]) for k, name in enumerate(gt)}
    for t in range(ours_m.n_tracklets):
        volume = ours_m.volumes[ours_m.volume_index[t]]
        assert (ours_m.hits(t) - start[volume]).tolist() == naive["hit_sets"][t]
    assert ours.ap == naive["ap"]  # exact, not approximate
    assert sens_list(ours) == naive["sens"]
    assert ours.recall.tolist() == naive["rec"] and ours.precision.tolist() == naive["prec"]
    assert ours.fps.tolist() == naive["fps"]
    assert ours.avg == float(np.mean(naive["sens"][:7]))


def test_equals_naive_implementation_on_random_small_cases() -> None:
    rng = np.random.default_rng(20260)
    for _ in range(400):
        _compare(*random_case(rng))


def test_equals_naive_implementation_with_many_ties() -> None:
    # Past 16 elements numpy's default argsort is no longer an insertion sort: the tie order
    # comes from its introsort / SIMD sort, which the naive code reproduces by calling it too.
    rng = np.random.default_rng(7)
    for _ in range(20):
        _compare(*random_case(rng, max_tracklets=60))


def test_equals_naive_implementation_on_the_real_test_set() -> None:
    gt = read_gt(REVISED_TEST)
    rng = np.random.default_rng(3)
    names = list(gt)
    dets: dict = {}
    for _ in range(1500):
        name = names[rng.integers(len(names))]
        rows = []
        z0 = int(rng.integers(0, 20))
        box = np.array([200.0, 200.0, 230.0, 230.0])
        if gt[name] and rng.random() < 0.7:
            z0, box = gt[name][rng.integers(len(gt[name]))]
            z0 = max(0, z0 - int(rng.integers(0, 2)))
        for k in range(int(rng.integers(1, 4))):
            jitter = rng.normal(0, 4, 4)
            b = box + jitter
            b[2:] = np.maximum(b[2:], b[:2])
            rows.append((z0 + k, np.append(b, round(float(rng.random()), 2))))
        dets.setdefault(name, []).append(rows)
    _compare(gt, dets)


# ---------------------------------------------------------------------------------------------
# The real test set
# ---------------------------------------------------------------------------------------------


def test_perfect_detections_on_revised_test1071() -> None:
    gt = read_gt(REVISED_TEST)
    assert len(gt) == 1071 and sum(len(items) for items in gt.values()) == 3665
    perfect = {name: [[(z, np.append(box, 1.0))] for z, box in items]
               for name, items in gt.items()}
    r = evaluate_p3d(gt, perfect)
    assert r.ap == 1.0 and r.avg == 1.0
    assert sens_list(r) == [1.0] * 8
    assert (r.npos, r.n_volumes, r.n_tracklets) == (3665, 1071, 3665)
    # one extra false positive ranked last: 1/1071 FPs per volume at the end of the curve
    perfect["001347_01_01_017-029"] = [[(0, np.array([0.0, 0.0, 9.0, 9.0, 0.5]))]]
    r = evaluate_p3d(gt, perfect)
    assert r.fps[-1] == 1 / 1071 and r.ap == 1.0 and sens_list(r) == [1.0] * 8


# ---------------------------------------------------------------------------------------------
# Plot and imports
# ---------------------------------------------------------------------------------------------


def test_plot_froc_writes_a_png(tmp_path: Path) -> None:
    r = evaluate_p3d(*random_case(np.random.default_rng(5), max_tracklets=30))
    path = plot_froc({"ours": (r.fps, r.sens), "empty": (np.zeros(0), np.zeros(0))},
                     tmp_path / "plots" / "froc.png", title="P3D")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["froc.png"]
    with pytest.raises(ValueError, match="differ"):
        plot_froc({"bad": (np.zeros(3), np.zeros(2))}, tmp_path / "x.png")


def test_eval_modules_do_not_import_torch() -> None:
    code = ("import sys, uld.safe_pickle, uld.data.annotations, uld.eval.p3d, uld.eval.plots; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_avg_rates_are_the_papers() -> None:
    assert AVG_FP_RATES == (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    assert FP_RATES[-1] == 16.0
