"""uld evaluate's glue: pixel conventions, sizes and lesion types on the real DeepLesion files."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from uld.data.annotations import write_detections_json, write_detections_pickle
from uld.data.deeplesion import read_dl_info
from uld.eval.session import evaluate_files
from uld.safe_pickle import load_pickle

SHARED = Path(__file__).resolve().parents[3] / "shared" / "deeplesion"


@pytest.fixture()
def excerpt_test_set(tmp_path):
    """RECIST-Box-Test's real entries for the excerpt's test sub-volumes, and detections equal
    to DL_info's boxes (0-based, as uld predicts)."""
    info = read_dl_info(SHARED / "DL_info_excerpt.csv")
    real = load_pickle(SHARED / "lesion_harvester" / "RECIST-Box-Test.pkl")
    records = [r for r in info.records if r.split == 3]
    keys = {r.subvolume: k for r in records for k in real if k.split(".")[0] == r.subvolume}
    gt = {keys[name]: real[keys[name]] for name in keys}
    (tmp_path / "gt.pkl").write_bytes(pickle.dumps(gt))
    detections = {name: [] for name in keys}
    for r in records:
        if r.subvolume in keys:
            detections[r.subvolume].append([(r.z, np.append(r.box, 0.9))])
    return tmp_path / "gt.pkl", detections, records


def test_uld_json_is_shifted_into_the_pickles_one_based_pixels(excerpt_test_set, tmp_path):
    gt, detections, _ = excerpt_test_set
    write_detections_json(detections, tmp_path / "detections.json")
    exact = evaluate_files("keyslice", gt, tmp_path / "detections.json", threshold=0.999)
    assert exact.pixel_shift == 1.0 and exact.result.sensitivity[8.0] == 1.0
    unshifted = evaluate_files("keyslice", gt, tmp_path / "detections.json", threshold=0.999,
                               pixel_shift=0)
    assert unshifted.result.sensitivity[8.0] == 0.0   # off by one pixel everywhere
    # a Lesion Harvester pickle of detections is taken as it is (same convention as the GT)
    write_detections_pickle(detections, tmp_path / "detections.pkl")
    assert evaluate_files("keyslice", gt, tmp_path / "detections.pkl").pixel_shift == 0.0


def test_breakdown_uses_dl_info_spacing_and_lesion_types(excerpt_test_set, tmp_path):
    gt, detections, records = excerpt_test_set
    write_detections_json(detections, tmp_path / "detections.json")
    evaluation = evaluate_files("keyslice", gt, tmp_path / "detections.json",
                                dl_info=SHARED / "DL_info_excerpt.csv")
    assert evaluation.size_unit == "mm"
    by_label = {g.name: g.n for g in evaluation.breakdown.by_label}
    from uld.eval.breakdown import DEEPLESION_LESION_TYPES

    expected: dict[str, int] = {}
    for r in records:
        if r.subvolume in detections:
            name = DEEPLESION_LESION_TYPES[r.lesion_type]
            expected[name] = expected.get(name, 0) + 1
    assert by_label == expected
    assert sum(g.n for g in evaluation.breakdown.by_size) == evaluation.breakdown.overall.n
