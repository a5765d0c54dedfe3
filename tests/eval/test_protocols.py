"""uld.eval.protocols: one interface over P3D, key-slice and 3D IOBB, on the real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uld.data.annotations import EvalFormatError
from uld.data.deeplesion import parse_subvolume_name
from uld.eval.breakdown import breakdown, gt_long_axis
from uld.eval.froc import FP_RATES, UnknownVolumeError
from uld.eval.ground_truth import GroundTruth3D
from uld.eval.iobb3d import evaluate_iobb3d
from uld.eval.keyslice import evaluate_keyslice
from uld.eval.p3d import evaluate_p3d
from uld.eval.protocols import (
    DEFAULT_THRESHOLDS,
    PROTOCOLS,
    evaluate_protocol,
    match_protocol,
    protocol_result,
    read_protocol_gt,
)

DL = Path(__file__).resolve().parents[3] / "shared" / "deeplesion"
SOURCES = {
    "p3d": (DL / "lesion_harvester" / "Revised-Test1071.pkl", None),
    "keyslice": (DL / "lesion_harvester" / "RECIST-Box-Test.pkl", None),
    "iobb3d": (DL / "manual_1k" / "DeepLesion_manual_1K_test_release.pkl", "test"),
}
COUNTS = {"p3d": (1071, 3665), "keyslice": (3005, 4912), "iobb3d": (800, 4155)}


def boxes_of(gt) -> dict:
    """``{volume: [(z_first, z_last, [x1, y1, x2, y2]), ...]}`` with z offsets, any protocol."""
    out: dict = {}
    if isinstance(gt, GroundTruth3D):
        for name, rows in gt.boxes.items():
            first = parse_subvolume_name(name)[1] if gt.z_absolute else 0
            out[name] = [(int(r[2]) - first, int(r[5]) - first, r[[0, 1, 3, 4]]) for r in rows]
    else:
        for name, items in gt.items():
            out[name] = [(int(z), int(z), np.asarray(b, dtype=np.float64)) for z, b in items]
    return out


def generated_detections(gt, rng: np.random.Generator | None, keep: float = 1.0,
                         fp_per_volume: float = 0.0) -> dict:
    """One tracklet per ground-truth box (jittered when ``rng``), plus random false positives."""
    dets: dict = {}
    for name, items in boxes_of(gt).items():
        tracklets = []
        for z0, z1, box in items:
            if rng is not None and rng.random() > keep:
                continue
            score = 1.0 if rng is None else round(float(rng.random()), 2)
            rows = []
            for z in range(z0, z1 + 1):
                b = box if rng is None else box + rng.normal(0, 1.5, 4)
                b = np.concatenate([b[:2], np.maximum(b[2:], b[:2])])
                rows.append((z, np.append(b, score)))
            tracklets.append(rows)
        if rng is not None:
            for _ in range(int(rng.poisson(fp_per_volume))):
                x, y = rng.uniform(0, 450, 2)
                z = items[0][0] if items else 0
                tracklets.append([(z, np.array([x, y, x + 20, y + 20, round(float(rng.random()), 2)]))])
        dets[name] = tracklets
    return dets


def test_protocol_names_defaults_and_unknown_protocol() -> None:
    assert PROTOCOLS == ("p3d", "keyslice", "iobb3d")
    assert DEFAULT_THRESHOLDS == {"p3d": 0.5, "keyslice": 0.5, "iobb3d": 0.3}
    with pytest.raises(ValueError, match="protocol 'froc' is not one of p3d, keyslice, iobb3d"):
        read_protocol_gt("froc", SOURCES["p3d"][0])
    with pytest.raises(ValueError, match="protocol 'froc'"):
        evaluate_protocol("froc", {}, {})


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_real_files_perfect_and_generated_detections(protocol: str) -> None:
    source, split = SOURCES[protocol]
    gt = read_protocol_gt(protocol, source, split)
    volumes, boxes = COUNTS[protocol]
    n_volumes = len(gt.volumes) if isinstance(gt, GroundTruth3D) else len(gt)
    n_boxes = gt.npos if isinstance(gt, GroundTruth3D) else sum(map(len, gt.values()))
    assert (n_volumes, n_boxes) == (volumes, boxes)

    perfect = evaluate_protocol(protocol, gt, generated_detections(gt, None))
    assert list(perfect.sensitivity) == list(FP_RATES)
    assert all(v == 1.0 for v in perfect.sensitivity.values()) and perfect.avg == 1.0
    assert perfect.ap == (1.0 if protocol == "p3d" else None)

    rng = np.random.default_rng(12)
    dets = generated_detections(gt, rng, keep=0.7, fp_per_volume=3.0)
    r = evaluate_protocol(protocol, gt, dets)
    values = list(r.sensitivity.values())
    assert values == sorted(values) and 0.4 < values[-1] <= 0.75  # about 70% of boxes found
    assert values[0] < values[-1] and 0 < r.avg < values[-1]
    assert len(r.fps) == len(r.sens) == r.counts.get("n_tracklets", r.counts.get("n_detections"))
    assert np.all(np.diff(r.fps) >= 0) and np.all(np.diff(r.sens) >= 0)
    # the dispatcher adds nothing: the protocol's own evaluation gives the same numbers
    if protocol == "p3d":
        own = evaluate_p3d(gt, dets)
        assert r.ap == own.ap and r.unit == "volume"
    elif protocol == "keyslice":
        own = evaluate_keyslice(gt, dets)
        assert r.ap is None and r.unit == "image" and r.counts["n_images"] == 4817
    else:
        own = evaluate_iobb3d(gt, dets)
        assert r.ap is None and r.settings["threshold"] == 0.3 and r.settings["z_absolute"]
    assert r.sensitivity == own.sensitivity and r.avg == own.avg
    assert r.fps.tolist() == own.fps.tolist() and r.detail is not None

    doc = json.loads(json.dumps(r.to_json()))
    assert doc["protocol"] == protocol and set(doc["sensitivity"]) == {f"{x:g}" for x in FP_RATES}
    assert doc["npos"] == boxes and doc["avg"] == r.avg
    lines = r.format().splitlines()
    assert len(lines) == 3 and f"{boxes} lesion boxes" in lines[0]
    assert lines[1].startswith(f"sensitivity (%) at FPs per {r.unit}")
    assert ("AP n/a" in lines[2]) == (protocol != "p3d")

    sizes = gt_long_axis(gt)
    b = breakdown(r.matches, FP_RATES, sizes=sizes, size_unit="px", size_edges=(15, 30, 60))
    assert [b.overall.sensitivity[k] for k in FP_RATES] == values


def test_options_thresholds_and_ground_truth_kinds() -> None:
    gt2 = {"000001_01_01_000-010": [(2, np.array([0.0, 0, 9, 9]))]}
    gt3 = GroundTruth3D({"000001_01_01_000-010": np.array([[0.0, 0, 2, 9, 9, 3]])})
    # a box covering 40% of the ground truth's area: IoU 0.4
    dets = {"000001_01_01_000-010": [[(2, np.array([0.0, 0, 9, 3, 0.9]))]]}
    assert evaluate_protocol("keyslice", gt2, dets).sensitivity[1.0] == 0.0
    assert evaluate_protocol("keyslice", gt2, dets, threshold=0.4).sensitivity[1.0] == 1.0
    assert evaluate_protocol("iobb3d", gt3, dets).sensitivity[1.0] == 1.0  # IOBB 1 >= 0.3
    r = evaluate_protocol("keyslice", gt2, dets, score="tracklet", fp_rates=(1.0, 2.0))
    assert list(r.sensitivity) == [1.0, 2.0] and r.settings["score"] == "tracklet"
    with pytest.raises(ValueError, match="protocol 'p3d' has no option 'score' \\(its options: none\\)"):
        evaluate_protocol("p3d", gt2, dets, score="box")
    with pytest.raises(EvalFormatError, match="protocol 'iobb3d' needs 3D ground truth"):
        evaluate_protocol("iobb3d", gt2, dets)
    with pytest.raises(EvalFormatError, match="protocol 'keyslice' needs 2D ground truth"):
        evaluate_protocol("keyslice", gt3, dets)
    with pytest.raises(TypeError, match="protocol 'iobb3d' needs IOBB3DMatches"):
        protocol_result("iobb3d", match_protocol("p3d", gt2, dets))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_detection_volume_is_named(protocol: str) -> None:
    gt = read_protocol_gt(protocol, *SOURCES[protocol])
    with pytest.raises(UnknownVolumeError, match="'999999_01_01_000-010', which the ground truth"):
        evaluate_protocol(protocol, gt, {"999999_01_01_000-010": [[(0, np.array([0.0, 0, 9, 9, 1]))]]})


def test_dataset_folder_for_every_protocol(tmp_path: Path) -> None:
    from uld.data.synth import SynthConfig, write_synthetic_dataset

    write_synthetic_dataset(tmp_path, SynthConfig(n_train=1, n_val=1, n_test=2, size=64, seed=5),
                            progress=False)
    for protocol in PROTOCOLS:
        with pytest.raises(EvalFormatError, match="needs a split"):
            read_protocol_gt(protocol, tmp_path)
        gt = read_protocol_gt(protocol, tmp_path, "test")
        names = gt.volumes if isinstance(gt, GroundTruth3D) else tuple(gt)
        assert names == ("synth_00002", "synth_00003")
        r = evaluate_protocol(protocol, gt, generated_detections(gt, None))
        assert r.sensitivity[0.125] == 1.0 and r.counts["npos"] > 0
    # key-slice images are the key slices: one per lesion in the synthetic set
    keyslice = read_protocol_gt("keyslice", tmp_path, "test")
    iobb = read_protocol_gt("iobb3d", tmp_path, "test")
    assert sum(map(len, keyslice.values())) == iobb.npos


def test_the_protocols_load_no_image_or_training_library():
    import subprocess
    import sys

    code = ("import sys, uld.eval.iobb3d, uld.eval.p3d, uld.eval.keyslice; "
            "print(sorted(m for m in ('SimpleITK', 'torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
