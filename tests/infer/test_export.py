import csv
import json
import os
from itertools import product

import numpy as np
import pytest
from PIL import Image

from uld.data.volume import Volume
from uld.infer.export import (
    CSV_COLUMNS,
    SLICER_SCHEMA,
    lesions_from_tracklets,
    read_slicer_roi,
    write_summary_csv,
    write_volume_outputs,
)
from uld.infer.overlay import HIGHLIGHT_COLOR

SPACING = (0.7, 0.8, 2.5)
ORIGIN = (-100.0, -200.0, 50.0)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
FLIP_XY = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # RAS-stored image seen in LPS
PERMUTED = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # columns -> S... (det +1)
SWAPPED_XY = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # columns along P, rows along L (det -1)
_c, _s = np.cos(np.pi / 6), np.sin(np.pi / 6)
OBLIQUE = tuple(np.array([[_c, 0.0, _s], [0.0, 1.0, 0.0], [-_s, 0.0, _c]]).ravel())


def _volume(direction=IDENTITY, shape=(8, 64, 64)):
    rng = np.random.default_rng(0)
    hu = rng.integers(-200, 300, size=shape).astype(np.int16)
    return Volume(hu=hu, spacing_xyz=SPACING, origin_xyz=ORIGIN, direction=direction)


def _track(*items):
    return [(z, np.array(box, dtype=float)) for z, box in items]


LESION_A = _track((2, [10, 30, 20, 40, 0.5]), (3, [12, 31, 18, 39, 0.9]), (4, [11, 32, 19, 38, 0.7]))
LESION_B = _track((5, [40, 5, 50, 15, 0.95]))
LESION_C = _track((3, [40, 40, 60, 50, 0.2]), (4, [41, 41, 59, 49, 0.3]))


def _index_corners(box_voxel):
    """Hand-written: pixels x1..x2, y1..y2 as they are, slices z1..z2 as slabs z1 - 0.5 .. z2 + 0.5."""
    x1, y1, z1, x2, y2, z2 = box_voxel
    return np.array(list(product((x1, x2), (y1, y2), (z1 - 0.5, z2 + 0.5))), dtype=float)


def _same_points(a, b, atol=1e-3):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    dist = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    assert dist.min(axis=1).max() < atol and dist.min(axis=0).max() < atol


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


# ------------------------------------------------------------------------------------------ geometry


def test_identity_geometry_matches_a_hand_computed_box():
    (lesion,) = lesions_from_tracklets([LESION_A], _volume())
    assert lesion.lesion_id == 1 and lesion.score == 0.9
    assert lesion.slice_range == (2, 4) and lesion.peak_slice == 3
    assert lesion.box_voxel == (10.0, 30.0, 2, 20.0, 40.0, 4)
    # x: -100 + 0.7 * [10, 20]; y: -200 + 0.8 * [30, 40]; z: 50 + 2.5 * [1.5, 4.5]
    np.testing.assert_allclose(lesion.box_mm.min, (-93.0, -176.0, 53.75))
    np.testing.assert_allclose(lesion.box_mm.max, (-86.0, -168.0, 61.25))
    np.testing.assert_allclose(lesion.box_mm.center, (-89.5, -172.0, 57.5))
    np.testing.assert_allclose(lesion.box_mm.size, (7.0, 8.0, 7.5))
    # peak-slice box 12..18 x 31..39: 6 * 0.7 = 4.2 mm wide, 8 * 0.8 = 6.4 mm tall
    assert lesion.long_axis_mm == pytest.approx(6.4)
    assert lesion.boxes[1] == (3, 12.0, 31.0, 18.0, 39.0, 0.9)


@pytest.mark.parametrize("direction", [IDENTITY, FLIP_XY, PERMUTED, SWAPPED_XY, OBLIQUE],
                         ids=["identity", "flip_xy", "permuted", "swapped_xy", "oblique"])
def test_mm_box_and_slicer_roi_reproduce_the_voxel_box_corners(tmp_path, direction):
    volume = _volume(direction)
    (lesion,) = lesions_from_tracklets([LESION_A], volume)
    corners = volume.to_physical(_index_corners(lesion.box_voxel))
    np.testing.assert_allclose(lesion.box_mm.min, corners.min(axis=0), atol=1e-9)
    np.testing.assert_allclose(lesion.box_mm.max, corners.max(axis=0), atol=1e-9)
    np.testing.assert_allclose(lesion.box_mm.center, corners.mean(axis=0), atol=1e-9)

    out = write_volume_outputs("scan", volume, [lesion], tmp_path, overlays=False)
    (roi_path,) = out["slicer"]
    center, size, orientation = read_slicer_roi(roi_path)
    np.testing.assert_allclose(orientation.T @ orientation, np.eye(3), atol=1e-9)
    assert np.linalg.det(orientation) == pytest.approx(1.0)  # a rotation, as Slicer expects
    signs = np.array(list(product((-0.5, 0.5), repeat=3)))
    roi_corners = center + (signs * size) @ orientation.T  # centre +- size / 2 along the ROI axes
    _same_points(roi_corners, corners)


def test_roi_axes_are_the_image_axes():
    volume = _volume(PERMUTED)
    (lesion,) = lesions_from_tracklets([LESION_A], volume)
    from uld.infer.export import roi_orientation

    d = np.asarray(PERMUTED).reshape(3, 3)
    np.testing.assert_allclose(roi_orientation(volume), d)
    # the slice axis of a left-handed image is flipped to keep a rotation; same line, same box
    flipped = roi_orientation(_volume(SWAPPED_XY))
    d2 = np.asarray(SWAPPED_XY).reshape(3, 3)
    np.testing.assert_allclose(flipped[:, :2], d2[:, :2])
    np.testing.assert_allclose(flipped[:, 2], -d2[:, 2])
    # size follows the image axes: column, row, slice
    np.testing.assert_allclose(lesion.box_mm.size, (7.0, 8.0, 7.5))


# ------------------------------------------------------------------------------- tracklets -> lesions


def test_ids_rank_by_score_and_min_score_drops_weak_lesions():
    lesions = lesions_from_tracklets([LESION_C, LESION_A, LESION_B], _volume())
    assert [(x.lesion_id, x.score) for x in lesions] == [(1, 0.95), (2, 0.9), (3, 0.3)]
    kept = lesions_from_tracklets([LESION_C, LESION_A, LESION_B], _volume(), min_score=0.5)
    assert [x.score for x in kept] == [0.95, 0.9]


@pytest.mark.parametrize(
    "tracklet, message",
    [
        (_track((8, [1, 1, 5, 5, 0.9])), r"scan7: tracklet 0: slice 8 is not an index of the 8 slices"),
        (_track((-1, [1, 1, 5, 5, 0.9])), r"slice -1 is not"),
        (_track((1, [5, 1, 1, 5, 0.9])), r"x2 < x1"),
        (_track((1, [1, 1, 5, np.nan, 0.9])), r"5 finite numbers"),
        ([], r"tracklet 0 has no boxes"),
    ],
)
def test_bad_tracklets_are_refused_naming_the_volume(tracklet, message):
    with pytest.raises(ValueError, match=message) as info:
        lesions_from_tracklets([tracklet], _volume(), name="scan7")
    assert "\n" not in str(info.value)


def test_a_non_orthonormal_direction_is_refused():
    with pytest.raises(ValueError, match="scan7: direction is not orthonormal"):
        lesions_from_tracklets([LESION_A], _volume((2.0, 0, 0, 0, 1, 0, 0, 0, 1)), name="scan7")


# ------------------------------------------------------------------------------------- files


def test_json_and_csv_contents(tmp_path):
    volume = _volume()
    lesions = lesions_from_tracklets([LESION_C, LESION_A, LESION_B], volume)
    out = write_volume_outputs("scan", volume, lesions, tmp_path, overlays=False)
    assert out["json"] == tmp_path / "scan.lesions.json" and out["csv"] == tmp_path / "scan.lesions.csv"

    doc = json.loads(out["json"].read_text())
    assert doc["format"] == "uld-lesions" and doc["version"] == 1 and doc["volume"] == "scan"
    assert doc["geometry"] == {"spacing": list(SPACING), "origin": list(ORIGIN),
                               "direction": list(IDENTITY), "shape": [8, 64, 64]}
    assert [x["id"] for x in doc["lesions"]] == [1, 2, 3]
    assert [x["score"] for x in doc["lesions"]] == [0.95, 0.9, 0.3]
    a = doc["lesions"][1]
    assert a["slice_range"] == [2, 4] and a["peak_slice"] == 3
    assert a["box_voxel"] == [10.0, 30.0, 2, 20.0, 40.0, 4]
    assert a["box_mm"] == {"center": [-89.5, -172.0, 57.5], "size": [7.0, 8.0, 7.5],
                           "min": [-93.0, -176.0, 53.75], "max": [-86.0, -168.0, 61.25]}
    assert a["long_axis_mm"] == 6.4
    assert a["boxes"] == [[2, 10.0, 30.0, 20.0, 40.0, 0.5], [3, 12.0, 31.0, 18.0, 39.0, 0.9],
                          [4, 11.0, 32.0, 19.0, 38.0, 0.7]]

    with out["csv"].open(newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    row = dict(zip(rows[0], rows[2]))
    assert (row["score"], row["first_slice"], row["last_slice"], row["peak_slice"]) == ("0.9", "2", "4", "3")
    assert [float(row[k]) for k in ("x1", "y1", "z1", "x2", "y2", "z2")] == [10, 30, 2, 20, 40, 4]
    assert [float(row[f"center_lps_{k}_mm"]) for k in "xyz"] == [-89.5, -172.0, 57.5]
    assert [float(row[f"size_{k}_mm"]) for k in ("col", "row", "slice")] == [7.0, 8.0, 7.5]
    assert float(row["long_axis_mm"]) == 6.4


def test_slicer_markup_follows_the_schema(tmp_path):
    volume = _volume(FLIP_XY)
    lesions = lesions_from_tracklets([LESION_A, LESION_B], volume)
    out = write_volume_outputs("scan", volume, lesions, tmp_path, overlays=False)
    assert out["slicer"] == [tmp_path / "slicer" / "scan.lesion-1.mrk.json",
                             tmp_path / "slicer" / "scan.lesion-2.mrk.json"]
    doc = json.loads(out["slicer"][1].read_text())
    assert doc["@schema"] == SLICER_SCHEMA
    assert doc["@schema"].endswith("/Markups/Resources/Schema/markups-schema-v1.0.3.json#")
    (markup,) = doc["markups"]
    assert markup["type"] == "ROI" and markup["roiType"] == "Box"
    assert markup["coordinateSystem"] == "LPS" and markup["coordinateUnits"] == "mm"
    assert markup["name"] == "lesion-2 (score 0.90)"
    assert markup["center"] == list(lesions[1].box_mm.center)
    assert markup["size"] == list(lesions[1].box_mm.size)
    assert markup["orientation"] == list(FLIP_XY)
    (point,) = markup["controlPoints"]
    assert point["position"] == markup["center"] and point["positionStatus"] == "defined"
    assert len(point["orientation"]) == 9
    assert markup["display"]["visibility"] is True and len(markup["display"]["selectedColor"]) == 3


def test_read_slicer_roi_converts_ras_and_refuses_bad_files(tmp_path):
    good = {"@schema": SLICER_SCHEMA, "markups": [{"type": "ROI", "coordinateSystem": "RAS", "roiType": "Box",
                                                  "center": [1.0, 2.0, 3.0], "size": [4.0, 5.0, 6.0],
                                                  "orientation": list(IDENTITY)}]}
    path = tmp_path / "ras.mrk.json"
    path.write_text(json.dumps(good))
    center, size, orientation = read_slicer_roi(path)
    np.testing.assert_allclose(center, [-1.0, -2.0, 3.0])
    np.testing.assert_allclose(size, [4.0, 5.0, 6.0])
    np.testing.assert_allclose(orientation, np.diag([-1.0, -1.0, 1.0]))

    bad = [
        ("{not json", "not a JSON file"),
        (json.dumps({"markups": good["markups"]}), "not a Slicer markups file"),
        (json.dumps({**good, "markups": []}), "exactly one markup"),
        (json.dumps({**good, "markups": [{**good["markups"][0], "type": "Line"}]}), "type must be 'ROI'"),
        (json.dumps({**good, "markups": [{**good["markups"][0], "center": [1, 2]}]}), "'center' must be 3"),
        (json.dumps({**good, "markups": [{k: v for k, v in good["markups"][0].items() if k != "size"}]}),
         "'size' must be 3"),
    ]
    for i, (text, message) in enumerate(bad):
        path = tmp_path / f"bad{i}.mrk.json"
        path.write_text(text)
        with pytest.raises(ValueError, match=message) as info:
            read_slicer_roi(path)
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_no_lesions_write_valid_empty_files_and_no_temp_files(tmp_path):
    out = write_volume_outputs("empty", _volume(), [], tmp_path)
    doc = json.loads(out["json"].read_text())
    assert doc["lesions"] == [] and doc["volume"] == "empty"
    assert out["csv"].read_text() == ",".join(CSV_COLUMNS) + "\n"
    assert out["slicer"] == [] and out["overlays"] == []
    assert _files(tmp_path) == ["empty.lesions.csv", "empty.lesions.json"]


def test_overlays_are_pngs_of_the_highest_scores_capped(tmp_path):
    volume = _volume()
    more = [_track((z % 8, [5 * z, 5 * z, 5 * z + 4, 5 * z + 4, 0.1 + 0.05 * z])) for z in range(5)]
    lesions = lesions_from_tracklets([LESION_A, LESION_B, LESION_C, *more], volume)
    out = write_volume_outputs("scan", volume, lesions, tmp_path, max_overlays=2)
    assert out["overlays"] == [tmp_path / "overlays" / "scan.lesion-1.png",
                               tmp_path / "overlays" / "scan.lesion-2.png"]
    assert len(out["slicer"]) == len(lesions) == 8
    with Image.open(out["overlays"][1]) as im:
        assert im.format == "PNG" and im.width > 100
        rgb = np.asarray(im.convert("RGB")).astype(int)
    highlight = np.array([int(HIGHLIGHT_COLOR[i : i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(rgb - highlight).sum(axis=-1) < 40).sum() > 20  # the bold box is there
    files = _files(tmp_path)
    assert not [f for f in files if os.path.basename(f).startswith(".")]  # no temporary files left
    assert [f for f in files if f.startswith("overlays")] == ["overlays/scan.lesion-1.png",
                                                             "overlays/scan.lesion-2.png"]


def test_a_rerun_removes_stale_files_of_that_volume_only(tmp_path):
    volume = _volume()
    three = lesions_from_tracklets([LESION_A, LESION_B, LESION_C], volume)
    write_volume_outputs("scan", volume, three, tmp_path, max_overlays=3)
    write_volume_outputs("scan.b", volume, three[:1], tmp_path, overlays=False)
    write_volume_outputs("scan", volume, three[:1], tmp_path, max_overlays=3)
    assert _files(tmp_path / "slicer") == ["scan.b.lesion-1.mrk.json", "scan.lesion-1.mrk.json"]
    assert _files(tmp_path / "overlays") == ["scan.lesion-1.png"]


def test_summary_csv_has_the_volume_first(tmp_path):
    volume = _volume()
    per_volume = {"v1": lesions_from_tracklets([LESION_A, LESION_B], volume),
                  "v2": lesions_from_tracklets([LESION_C], volume), "v3": []}
    path = write_summary_csv(per_volume, tmp_path / "all.csv")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["volume", *CSV_COLUMNS]
    assert [tuple(r[:3]) for r in rows[1:]] == [("v1", "1", "0.95"), ("v1", "2", "0.9"), ("v2", "1", "0.3")]


def test_csv_rows_give_the_tracklets_merged_into_each_lesion_as_the_json_does(tmp_path):
    volume = _volume()
    lesions = lesions_from_tracklets([LESION_C, LESION_A, LESION_B], volume, merged=[1, 3, 2])
    out = write_volume_outputs("scan", volume, lesions, tmp_path, overlays=False)
    doc = json.loads(out["json"].read_text())
    with out["csv"].open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["tracklets"] for r in rows] == [str(x["tracklets"]) for x in doc["lesions"]] == ["2", "3", "1"]
    summary = write_summary_csv({"scan": lesions}, tmp_path / "all.csv")
    with summary.open(newline="") as f:
        assert [r["tracklets"] for r in csv.DictReader(f)] == ["2", "3", "1"]


def test_the_csv_columns_before_tracklets_keep_their_positions():
    """Readers that take columns by position (written before ``tracklets`` existed) still work."""
    assert CSV_COLUMNS[:18] == (
        "id", "score", "first_slice", "last_slice", "peak_slice",
        "x1", "y1", "z1", "x2", "y2", "z2",
        "center_lps_x_mm", "center_lps_y_mm", "center_lps_z_mm",
        "size_col_mm", "size_row_mm", "size_slice_mm", "long_axis_mm",
    )
    assert CSV_COLUMNS[-1] == "tracklets"


@pytest.mark.parametrize("name", ["", "a/b", ".."])
def test_a_volume_name_that_cannot_name_files_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="volume name"):
        write_volume_outputs(name, _volume(), [], tmp_path)
