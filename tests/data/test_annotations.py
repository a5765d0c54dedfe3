"""uld.data.annotations: ground-truth and detection readers, writers and validation."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from uld.data.annotations import (
    EvalFormatError,
    flatten_detections,
    read_detections,
    read_gt,
    validate_detections,
    write_detections_json,
    write_detections_pickle,
)
from uld.safe_pickle import UnsafePickleError, load_pickle

LH = Path(__file__).resolve().parents[3] / "shared" / "deeplesion" / "lesion_harvester"


def _box(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def _dets() -> dict:
    """Awkward floats (0.1 + 0.2, 1/3) check that round trips are exact."""
    return {
        "vol_a": [
            [(3, _box(10.5, 20.25, 30.0, 40.0, 0.1 + 0.2)), (4, _box(11, 21, 31, 41, 1 / 3))],
            [(0, _box(0, 0, 0, 0, 0.9))],  # a one-pixel box (x1 == x2) is valid
        ],
        "vol_b": [],
        "vol_c": [[(7, _box(1e-3, 2e-7, 1e5, 123456.789, -2.5))]],  # any finite score
    }


def _assert_same_detections(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert len(a[name]) == len(b[name])
        for ta, tb in zip(a[name], b[name]):
            assert [z for z, _ in ta] == [z for z, _ in tb]
            assert all(isinstance(z, int) for z, _ in tb)
            for (_, ba), (_, bb) in zip(ta, tb):
                assert isinstance(bb, np.ndarray) and bb.dtype == np.float64 and bb.shape == (5,)
                assert np.array_equal(np.asarray(ba, dtype=np.float64), bb)  # bit for bit


def _write_lh_gt(path: Path, obj: dict) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


# ---------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------


def test_read_real_revised_test1071() -> None:
    gt = read_gt(LH / "Revised-Test1071.pkl")
    assert len(gt) == 1071
    assert sum(len(items) for items in gt.values()) == 3665
    assert not any(name.endswith(".annot") for name in gt)
    assert gt["001347_01_01_017-029"] == []  # a volume without any box is still listed
    for items in gt.values():
        zs = [z for z, _ in items]
        assert zs == sorted(zs)
        for z, box in items:
            assert type(z) is int and z >= 0
            assert box.shape == (4,) and box.dtype == np.float64
            assert box[0] <= box[2] and box[1] <= box[3]
    # the file holds {6: [[215.383, 176.983, 267.122, 220.374, 6.0, 6.0]]} for this volume
    ((z, box),) = gt["001344_01_01_012-024"]
    assert z == 6
    assert box.tolist() == [215.383, 176.983, 267.122, 220.374]


@pytest.mark.parametrize(
    ("name", "volumes", "boxes"),
    [
        ("Revised-Train100.pkl", 100, 420),
        ("Revised-Train744.pkl", 744, 3033),
        ("RECIST-Box-Valid.pkl", 3001, 4885),
        ("RECIST-Box-Test.pkl", 3005, 4912),
    ],
)
def test_read_real_2d_files(name: str, volumes: int, boxes: int) -> None:
    gt = read_gt(LH / name)
    assert len(gt) == volumes
    assert sum(len(items) for items in gt.values()) == boxes


def test_3d_box_file_is_not_2d_ground_truth() -> None:
    with pytest.raises(EvalFormatError, match="3D-Box.pkl: volume '.*': expected .*3D-box"):
        read_gt(LH / "3D-Box.pkl")


def test_lesion_harvester_pickle_is_normalised(tmp_path: Path) -> None:
    path = _write_lh_gt(tmp_path / "gt.pkl", {
        "v1.annot": {5: [[1.0, 2.0, 3.0, 4.0, 5, 5]], 2: [[9, 9, 10, 10, 2, 2], [0, 0, 1, 1, 2, 2]]},
        "v2": {},
        "v3.annot": {np.int64(1): [np.array([1.5, 2.5, 3.5, 4.5])], 0.0: [[0, 0, 1, 1]]},
    })
    gt = read_gt(path)
    assert list(gt) == ["v1", "v2", "v3"]
    assert [(z, b.tolist()) for z, b in gt["v1"]] == [
        (2, [9.0, 9.0, 10.0, 10.0]), (2, [0.0, 0.0, 1.0, 1.0]), (5, [1.0, 2.0, 3.0, 4.0]),
    ]  # sorted by z, file order within a slice, boxes[:4]
    assert gt["v2"] == []
    assert [z for z, _ in gt["v3"]] == [0, 1] and all(type(z) is int for z, _ in gt["v3"])


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], r"gt.pkl: expected a dict"),
        ({"a": {0: [[5.0, 0, 4.0, 1]]}}, r"gt.pkl: volume 'a', z 0, box 0: x2 = 4.0 < x1 = 5.0"),
        ({"a": {0: [[0, 5.0, 1, 4.0]]}}, r"volume 'a', z 0, box 0: y2 = 4.0 < y1 = 5.0"),
        ({"a": {0: [[0, 0, float("nan"), 1]]}}, r"box 0: x2 = nan is not finite"),
        ({"a": {0: [[0, 0, 1]]}}, r"volume 'a', z 0, box 0: \[0, 0, 1\] is not a row"),
        ({"a": {0: [["0", "0", "1", "1"]]}}, r"is not a row \[x1, y1, x2, y2, \.\.\.\]"),
        ({"a": {2.5: [[0, 0, 1, 1]]}}, r"volume 'a': z = 2.5 is not a slice index"),
        ({"a": {-1: [[0, 0, 1, 1]]}}, r"volume 'a': z = -1 is not a slice index"),
        ({"a": {"3": [[0, 0, 1, 1]]}}, r"volume 'a': z = '3' is not a number"),
        ({"a": {0: 7}}, r"volume 'a', z 0: expected a list of boxes"),
        ({"a.annot": {}, "a": {}}, r"volume 'a' is listed twice"),
        ({"": {}}, r"key '' is not a volume name"),
        ({"x/y": {}}, None),  # any non-empty string is a name here
    ],
)
def test_bad_ground_truth_pickles_name_file_and_entry(
    tmp_path: Path, obj: object, message: str | None
) -> None:
    path = _write_lh_gt(tmp_path / "gt.pkl", obj)  # type: ignore[arg-type]
    if message is None:
        read_gt(path)
        return
    with pytest.raises(EvalFormatError, match=message) as info:
        read_gt(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_ground_truth_pickle_refuses_split_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EvalFormatError, match="applies only to a dataset folder"):
        read_gt(LH / "Revised-Train100.pkl", split="test")
    with pytest.raises(EvalFormatError, match="not found"):
        read_gt(tmp_path / "nope.pkl")


def _dataset(root: Path) -> Path:
    root.mkdir()
    (root / "splits.csv").write_text(
        "volume,split\ncase1,test\ncase2,train\ncase3,test\ncase4,test\n"
    )
    (root / "annotations.csv").write_text(
        "volume,z,x1,y1,x2,y2,key\n"
        "case1,4,10,10,20,20,1\n"
        "case2,0,1,1,2,2,1\n"
        "case1,1,5,6,7,8,0\n"
        "case3,2,0.5,0.5,9.5,9.5,1\n"
        "case1,4,30,30,40,40,1\n"
    )
    return root


def test_read_gt_from_dataset_folder(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    gt = read_gt(root, split="test")
    assert list(gt) == ["case1", "case3", "case4"]  # splits.csv order, every test volume
    assert [(z, b.tolist()) for z, b in gt["case1"]] == [
        (1, [5.0, 6.0, 7.0, 8.0]), (4, [10.0, 10.0, 20.0, 20.0]), (4, [30.0, 30.0, 40.0, 40.0]),
    ]  # every row (key or not), sorted by z, file order within a slice
    assert gt["case4"] == []
    assert list(read_gt(root, split="train")) == ["case2"]
    with pytest.raises(EvalFormatError, match="needs a split"):
        read_gt(root)


# ---------------------------------------------------------------------------------------------
# Detections: round trips
# ---------------------------------------------------------------------------------------------


def test_json_round_trip_is_exact(tmp_path: Path) -> None:
    dets = _dets()
    path = write_detections_json(dets, tmp_path / "out" / "dets.json")
    _assert_same_detections(dets, read_detections(path))
    doc = json.loads(path.read_text())
    assert doc["format"] == "uld-detections" and doc["version"] == 1
    assert list(doc["volumes"]) == ["vol_a", "vol_b", "vol_c"]
    first = doc["volumes"]["vol_a"][0]
    assert first["score"] == 1 / 3  # the maximum of the box scores
    assert first["boxes"][0] == [3, 10.5, 20.25, 30.0, 40.0, 0.1 + 0.2]
    assert sorted(p.name for p in path.parent.iterdir()) == ["dets.json"]


def test_json_folder_and_content_sniffing(tmp_path: Path) -> None:
    dets = _dets()
    folder = tmp_path / "run"
    folder.mkdir()
    assert write_detections_json(dets, folder) == folder / "detections.json"
    _assert_same_detections(dets, read_detections(folder))
    odd_name = tmp_path / "dets.pkl"
    odd_name.write_text("  \n" + (folder / "detections.json").read_text())
    _assert_same_detections(dets, read_detections(odd_name))  # recognised by content
    with pytest.raises(EvalFormatError, match="detections.json: detection file not found"):
        read_detections(tmp_path)


def test_pickle_round_trip_is_exact_and_in_lesion_harvester_layout(tmp_path: Path) -> None:
    dets = _dets()
    path = write_detections_pickle(dets, tmp_path / "dets.pkl")
    _assert_same_detections(dets, read_detections(path))
    raw = load_pickle(path)  # the raw layout, not normalised by read_detections
    tracklet = raw["vol_a"][0]
    assert isinstance(tracklet, list) and isinstance(tracklet[0], tuple)
    assert tracklet[0][0] == 3 and tracklet[0][1].shape == (5,)


def test_lesion_harvester_float32_detections_become_float64(tmp_path: Path) -> None:
    raw = {"v": [[(np.int64(2), np.array([1.5, 2, 3, 4, 0.7], dtype=np.float32)),
                  (3.0, [1, 2, 3, 4, 1])]]}
    path = tmp_path / "det.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=2))
    dets = read_detections(path)
    (z0, b0), (z1, b1) = dets["v"][0]
    assert (z0, z1) == (2, 3) and type(z0) is int and type(z1) is int
    assert b0.dtype == np.float64 and b0[4] == np.float64(np.float32(0.7))
    assert b1.tolist() == [1.0, 2.0, 3.0, 4.0, 1.0]


def test_validate_detections_normalises_lists() -> None:
    out = validate_detections({"v": [[(1, [0, 0, 1, 1, 0.5])]], "w": []})
    assert list(out) == ["v", "w"] and out["w"] == []
    (z, box), = out["v"][0]
    assert z == 1 and box.dtype == np.float64
    flat = flatten_detections({"v": [[(1, [0, 0, 1, 1, 0.5]), (2, [0, 0, 1, 1, 0.7])]]})
    assert flat.tracklet_ptr.tolist() == [0, 2] and flat.tracklet_scores().tolist() == [0.7]


def test_code_running_detection_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "det.pkl"
    path.write_bytes(pickle.dumps({"v": [[(0, Evil())]]}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"det.pkl: refused global \w+\.system"):
        read_detections(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Detections: validation
# ---------------------------------------------------------------------------------------------


def _trk(*boxes: tuple) -> list:
    return [(b[0], np.array(b[1:], dtype=np.float64)) for b in boxes]


@pytest.mark.parametrize(
    ("dets", "message"),
    [
        ({"v": [_trk((0, 0, 0, 1, 1, 0.5)), [(1, [0, 0, 1, 1])]]},
         r"volume 'v', tracklet 1, box 0: box \[0, 0, 1, 1\] has shape \(4,\), expected 5"),
        ({"v": [[(0, [0, 0, 1, 1, 0.5]), (1, [0, 0, 1, 1, 0.5, 9])]]},
         r"tracklet 0, box 1: box .* has shape \(6,\)"),
        ({"v": [_trk((0, 0, 0, 1, 1, float("nan")))]}, r"tracklet 0, box 0: score = nan"),
        ({"v": [_trk((0, 0, 0, float("inf"), 1, 0.5))]}, r"x2 = inf is not finite"),
        ({"a": [], "v": [_trk((0, 0, 0, 1, 1, 0.5)), _trk((0, 0, 0, 1, 1, 0.5),
                                                           (2, 5, 0, 4, 1, 0.5))]},
         r"volume 'v', tracklet 1, box 1: x2 = 4.0 < x1 = 5.0"),
        ({"v": [_trk((0, 0, 5, 1, 4, 0.5))]}, r"y2 = 4.0 < y1 = 5.0"),
        ({"v": [_trk((2.5, 0, 0, 1, 1, 0.5))]}, r"box 0: z = 2.5 is not a slice index"),
        ({"v": [_trk((-1, 0, 0, 1, 1, 0.5))]}, r"z = -1 is not a slice index"),
        ({"v": [_trk(("3", 0, 0, 1, 1, 0.5))]}, r"z = '3' is not a number"),
        ({"v": [[(0, ["0", "0", "1", "1", "0.5"])]]}, r"is not a row of numbers"),
        ({"v": [[]]}, r"volume 'v', tracklet 0: expected a non-empty list .* an empty tracklet"),
        ({"v": [np.zeros((1, 5))]}, r"tracklet 0: expected a non-empty list .* a ndarray"),
        ({"v": [[(0, 1, 2)]]}, r"tracklet 0, box 0: expected \(z, \[x1, y1, x2, y2, score\]\)"),
        ({"v": {0: [[0, 0, 1, 1, 0, 0]]}}, r"expected a list of tracklets, got dict \(is this a"),
        ({1: []}, r"volume name 1 is not a non-empty string"),
        ([], r"expected a dict"),
    ],
)
def test_bad_detections_are_refused_with_one_line(dets: object, message: str) -> None:
    with pytest.raises(EvalFormatError, match=message) as info:
        validate_detections(dets, where="mydets")  # type: ignore[arg-type]
    assert str(info.value).startswith("mydets: ") and "\n" not in str(info.value)


def test_bad_detection_files_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "det.pkl"
    path.write_bytes(pickle.dumps({"v": [[(0, np.array([3.0, 0, 1, 1, 0.5]))]]}, protocol=4))
    with pytest.raises(EvalFormatError, match=r"det.pkl: volume 'v', tracklet 0, box 0: x2 = 1.0"):
        read_detections(path)


def _json(tmp_path: Path, doc: object, raw: str | None = None) -> Path:
    path = tmp_path / "d.json"
    path.write_text(raw if raw is not None else json.dumps(doc))
    return path


GOOD_TRACKLET = {"score": 0.5, "boxes": [[0, 0, 0, 1, 1, 0.5]]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"format": "other", "version": 1, "volumes": {}}, r"format = 'other', expected"),
        ({"format": "uld-detections", "version": 2, "volumes": {}}, r"version = 2, this reader"),
        ({"format": "uld-detections", "version": 1, "volumes": []}, r"'volumes' must be an obj"),
        ({"format": "uld-detections", "version": 1, "volumes": {"v": {}}},
         r"volume 'v': expected a list of tracklets"),
        ({"format": "uld-detections", "version": 1,
          "volumes": {"v": [GOOD_TRACKLET, {"score": 0.5, "boxes": []}]}},
         r"volume 'v', tracklet 1: expected .* at least one box"),
        ({"format": "uld-detections", "version": 1,
          "volumes": {"v": [{"boxes": [[0, 0, 0, 1, 1]]}]}},
         r"volume 'v', tracklet 0, box 0: \[0, 0, 0, 1, 1\] is not \[z, x1, y1, x2, y2, score\]"),
        ({"format": "uld-detections", "version": 1,
          "volumes": {"v": [GOOD_TRACKLET, {"score": 0.9, "boxes": [[1, 0, 0, 1, 1, 0.5]]}]}},
         r"volume 'v', tracklet 1: score = 0.9 is not the maximum of its box scores \(0.5\)"),
        ({"format": "uld-detections", "version": 1,
          "volumes": {"v": [{"score": 0.5, "boxes": [[1, 3, 0, 1, 1, 0.5]]}]}},
         r"volume 'v', tracklet 0, box 0: x2 = 1.0 < x1 = 3.0"),
    ],
)
def test_bad_json_files_name_file_and_entry(tmp_path: Path, doc: object, message: str) -> None:
    path = _json(tmp_path, doc)
    with pytest.raises(EvalFormatError, match=message) as info:
        read_detections(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_json_score_may_be_omitted_and_extra_keys_are_ignored(tmp_path: Path) -> None:
    doc = {"format": "uld-detections", "version": 1, "model": "x",
           "volumes": {"v": [{"boxes": [[0, 0, 0, 1, 1, 0.25], [1, 0, 0, 1, 1, 0.75]], "id": 3}]}}
    dets = read_detections(_json(tmp_path, doc))
    assert [b[4] for _, b in dets["v"][0]] == [0.25, 0.75]


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    path = _json(tmp_path, None, raw='{"format": "uld-detections", ')
    with pytest.raises(EvalFormatError, match=r"d.json: not valid JSON"):
        read_detections(path)


def test_writers_refuse_invalid_detections_and_write_nothing(tmp_path: Path) -> None:
    bad = {"v": [_trk((0, 0, 0, 1, 1, float("nan")))]}
    with pytest.raises(EvalFormatError, match="score = nan"):
        write_detections_json(bad, tmp_path / "a.json")
    with pytest.raises(EvalFormatError, match="score = nan"):
        write_detections_pickle(bad, tmp_path / "a.pkl")
    assert list(tmp_path.iterdir()) == []
