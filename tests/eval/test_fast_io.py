"""The fast evaluation path (issue 12) gives the same numbers as the plain one.

orjson against the standard library's ``json``, array validation against the per-box path,
flat detections through ``match_p3d`` against dicts, the vectorised pair IoU against the
matrix, and the scipy-free linear extrapolation against ``interp1d``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import interp1d

from uld.boxes import iou_plus1, iou_plus1_pairs
from uld.data.annotations import (
    EvalFormatError,
    flatten_detections,
    read_detections,
    read_flat_detections,
    write_detections_json,
)
from uld.eval.froc import linear_extrapolate
from uld.eval.p3d import evaluate_p3d, match_p3d
from uld.eval.session import shift_detections


def _random(seed: int, n_volumes: int = 6, n_trk: int = 60) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    names = [f"v{i}" for i in range(n_volumes)]
    gt = {n: [] for n in names}
    for _ in range(40):
        n = names[rng.integers(n_volumes)]
        c, s = rng.uniform(20, 200, 2), rng.uniform(5, 40, 2)
        gt[n].append((int(rng.integers(0, 12)), np.array([*(c - s / 2), *(c + s / 2)])))
    for n in names:
        gt[n].sort(key=lambda item: item[0])
    dets: dict = {n: [] for n in names}
    for _ in range(n_trk):
        n = names[rng.integers(n_volumes)]
        z0, length = int(rng.integers(0, 12)), int(rng.integers(1, 5))
        if gt[n] and rng.random() < 0.6:
            z0, box = gt[n][rng.integers(len(gt[n]))]
            c, s = (box[:2] + box[2:]) / 2 + rng.normal(0, 2, 2), box[2:] - box[:2]
        else:
            c, s = rng.uniform(20, 200, 2), rng.uniform(5, 40, 2)
        dets[n].append([(z0 + k, np.array([*(c - s / 2), *(c + s / 2), round(rng.random(), 2)]))
                        for k in range(length)])
    return gt, dets


@pytest.mark.parametrize("seed", range(5))
def test_flat_detections_match_like_dicts(seed: int, tmp_path: Path) -> None:
    gt, dets = _random(seed)
    path = write_detections_json(dets, tmp_path / "d.json")
    flat = read_flat_detections(path)
    a, b = match_p3d(gt, dets), match_p3d(gt, flat)
    for name in ("scores", "volume_index", "hit_ptr", "hit_gt", "hit_iou"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    shifted = evaluate_p3d(gt, shift_detections(dets, 1.0))
    assert evaluate_p3d(gt, flat.shifted(1.0)).sensitivity == shifted.sensitivity
    assert evaluate_p3d(gt, flat.shifted(1.0)).ap == shifted.ap


def test_select_keeps_order_and_drops_volumes() -> None:
    _, dets = _random(3)
    flat = flatten_detections(dets)
    kept = flat.select({"v1", "v4", "nowhere"}).to_dict()
    expected = {n: t for n, t in dets.items() if n in ("v1", "v4")}
    assert list(kept) == list(expected)
    for name in expected:
        assert [[(z, b.tolist()) for z, b in t] for t in kept[name]] == \
            [[(z, b.tolist()) for z, b in t] for t in expected[name]]
    assert flat.select(dets) is flat


def test_orjson_and_json_read_the_same_bits(tmp_path: Path) -> None:
    _, dets = _random(7, n_trk=300)
    path = write_detections_json(dets, tmp_path / "d.json")
    fast = read_flat_detections(path)
    doc = json.loads(path.read_text())
    rows = [row for ts in doc["volumes"].values() for t in ts for row in t["boxes"]]
    assert np.array_equal(fast.boxes.view(np.int64), np.array(rows)[:, 1:].view(np.int64))
    assert fast.z.tolist() == [row[0] for row in rows]


def test_what_orjson_refuses_falls_back_to_json(tmp_path: Path) -> None:
    # NaN is not JSON; the standard library reads it and the validation names it, as before
    path = tmp_path / "d.json"
    path.write_text('{"format": "uld-detections", "version": 1, '
                    '"volumes": {"v": [{"boxes": [[0, NaN, 0, 1, 1, 0.5]]}]}}')
    with pytest.raises(EvalFormatError, match=r"d.json: volume 'v', tracklet 0, box 0: x1 = nan"):
        read_detections(path)
    path.write_text('{"format": "uld-detections", "version": 1, '
                    '"volumes": {"v": [{"boxes": [[0, 0, 0, 1, 1, 0.5], [1, "a", 0, 1, 1, 0.5]]}]}}')
    with pytest.raises(EvalFormatError, match=r"tracklet 0, box 1: box \['a', 0, 1, 1, 0.5\] is not"):
        read_detections(path)


def test_declared_scores_are_checked_at_once_and_named(tmp_path: Path) -> None:
    doc = {"format": "uld-detections", "version": 1, "volumes": {"v": [
        {"score": 0.5, "boxes": [[0, 0, 0, 1, 1, 0.5]]},
        {"score": True, "boxes": [[0, 0, 0, 1, 1, 1.0]]}]}}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(EvalFormatError, match=r"tracklet 1: score = True is not the maximum"):
        read_detections(path)


def test_pair_iou_is_the_matrix_diagonal() -> None:
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 100, (500, 2))
    a = np.hstack([lo, lo + rng.uniform(0, 30, (500, 2))])
    b = a + rng.normal(0, 5, a.shape)
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2])
    assert np.array_equal(iou_plus1_pairs(a, b), np.diag(iou_plus1(a, b)))


@pytest.mark.parametrize("seed", range(20))
def test_linear_extrapolate_is_interp1d_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    hit = rng.random(n) < 0.4  # a FROC: each step right (a miss) or up (a hit)
    fps = np.cumsum(~hit) / float(rng.integers(1, 9))
    sens = np.cumsum(hit) / float(max(1, hit.sum()) + 2)
    rates = np.array([0.0, 0.125, 0.25, 0.5, 1, 2, 4, 8, 16, fps[0], fps[-1], fps[-1] + 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        ours = linear_extrapolate(fps, sens, rates)
        ref = interp1d(fps, sens, fill_value="extrapolate")(rates)
    assert np.array_equal(ours, ref, equal_nan=True)
