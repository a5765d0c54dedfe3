"""uld.data.deeplesion: DL_info.csv, 16-bit PNG sub-volumes, the paper's split, conversion.

Real files: DL_info_excerpt.csv (158 real rows) and Lesion Harvester's Revised-* pickles.
Image trees are written by the ``deeplesion_tree`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uld.data.annotations import read_gt
from uld.data.dataset import DatasetFolder
from uld.data.deeplesion import (
    DL_INFO_COLUMNS,
    DeepLesionError,
    DeepLesionImages,
    contiguous_runs,
    convert_deeplesion,
    paper_split,
    parse_subvolume_name,
    read_dl_info,
    read_png_slice,
    spacing_by_folder,
    subvolume_name,
)
from uld.data.volume import read_volume

SHARED = Path(__file__).resolve().parents[3] / "shared" / "deeplesion"
EXCERPT = SHARED / "DL_info_excerpt.csv"
HARVESTER = SHARED / "lesion_harvester"


def excerpt_rows() -> list[dict[str, str]]:
    """The excerpt read independently of the code under test."""
    with EXCERPT.open(newline="") as handle:
        return list(csv.DictReader(handle))


def png_bit_depth(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR chunk."""
    data = path.read_bytes()[:29]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return data[24], data[25]


# ---------------------------------------------------------------------------------------------
# DL_info.csv
# ---------------------------------------------------------------------------------------------


def test_excerpt_counts_match_an_independent_reading():
    rows = excerpt_rows()
    assert len(rows) == 158
    noisy = sum(r["Possibly_noisy"] == "1" for r in rows)
    per_split = Counter({"1": "train", "2": "val", "3": "test"}[r["Train_Val_Test"]] for r in rows)
    key_slices = {(r["File_name"].rsplit("_", 1)[0], int(r["Key_slice_index"])) for r in rows}
    assert (noisy, dict(per_split), len(key_slices)) == (0, {"train": 105, "val": 18, "test": 35}, 152)

    info = read_dl_info(EXCERPT)
    assert len(info.records) == 158 - noisy and info.dropped_noisy == noisy and info.skipped == []
    assert {s: len(info.for_split(s)) for s in ("train", "val", "test")} == dict(per_split)
    groups = info.by_key_slice()
    assert set(groups) == key_slices
    assert sum(len(g) for g in groups.values()) == 158
    # the same file name repeats when a slice holds several lesions
    assert [r.row for r in groups[("000098_03_01", 38)]] == [133, 134]
    assert [r.row for r in info.records] == list(range(2, 160))
    assert spacing_by_folder(info)["000093_01_01"] == (0.976562, 0.976562, 5.0)


def test_excerpt_record_every_field_by_hand():
    # line 133: 000098_03_01_038.png,98,3,1,38,"314.894, 244.113, 281.935, 204.13, 284.637,
    # 233.307, 315.434, 211.694","276.935, 199.13, 320.434, 249.113","51.8165, 37.6245",
    # "0.710439, 0.513166, 0.204881",7,0,"23, 53","0.488281, 0.488281, 2","512, 512",
    # "-182.5, 322.5",F,63,2
    rec = next(r for r in read_dl_info(EXCERPT).records if r.row == 133)
    assert rec.file_name == "000098_03_01_038.png"
    assert (rec.patient, rec.study, rec.series, rec.key_slice) == (98, 3, 1, 38)
    # 1-based in the file, 0-based here: every coordinate minus 1
    np.testing.assert_allclose(rec.measurement, [[313.894, 243.113], [280.935, 203.13],
                                                 [283.637, 232.307], [314.434, 210.694]])
    np.testing.assert_allclose(rec.box, [275.935, 198.13, 319.434, 248.113])
    assert rec.measurement.shape == (4, 2) and rec.box.shape == (4,)
    assert not rec.box.flags.writeable
    assert rec.diameters_px == (51.8165, 37.6245)
    assert rec.location == (0.710439, 0.513166, 0.204881)
    assert (rec.lesion_type, rec.noisy, rec.slice_range) == (7, False, (23, 53))
    assert rec.spacing_xyz == (0.488281, 0.488281, 2.0)
    assert rec.image_size == (512, 512) and rec.dicom_windows == (-182.5, 322.5)
    assert (rec.gender, rec.age, rec.split, rec.split_name) == ("F", 63.0, 2, "val")
    assert (rec.folder, rec.subvolume, rec.z) == ("000098_03_01", "000098_03_01_023-053", 15)


def test_noisy_rows_dropped_and_empty_or_nan_age(tmp_path, deeplesion_tree):
    rows = [
        deeplesion_tree.row("000001_01_01_012.png", (10, 10, 30, 30), slice_range=(10, 14), age=""),
        deeplesion_tree.row("000001_01_01_012.png", (40, 40, 60, 60), slice_range=(10, 14), noisy=1),
        deeplesion_tree.row("000002_01_01_1003.png", (10, 10, 30, 30), slice_range=(1000, 1010),
                            age="nan", split=3),
    ]
    path = deeplesion_tree.write_dl_info(tmp_path / "DL_info.csv", rows)
    info = read_dl_info(path)
    assert [r.row for r in info.records] == [2, 4] and info.dropped_noisy == 1
    assert [r.row for r in info.noisy_records] == [3]
    assert [r.age for r in info.records] == [None, None]
    four = info.records[1]
    assert (four.folder, four.key_slice, four.subvolume) == ("000002_01_01", 1003, "000002_01_01_1000-1010")
    kept = read_dl_info(path, drop_noisy=False)
    assert [r.noisy for r in kept.records] == [False, True, False] and kept.dropped_noisy == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: list(r.values())[:12], r"row 3: has 12 fields, expected 18"),
        (lambda r: {**r, "Bounding_boxes": "10, 10, abc, 30"},
         r"row 3: column Bounding_boxes = '10, 10, abc, 30' is not 4 numbers"),
        (lambda r: {**r, "Bounding_boxes": "30, 10, 30, 40"},
         r"row 3: column Bounding_boxes = '30, 10, 30, 40' needs x1 < x2"),
        (lambda r: {**r, "Spacing_mm_px_": "0.8, nan, 5"},
         r"row 3: column Spacing_mm_px_ = '0.8, nan, 5' holds a value that is not finite"),
        (lambda r: {**r, "Train_Val_Test": "4"}, r"row 3: column Train_Val_Test = '4' is not 1, 2 or 3"),
        (lambda r: {**r, "Slice_range": "13, 20"}, r"row 3: column Slice_range = '13, 20' does not hold"),
        (lambda r: {**r, "File_name": "000001_01_02_012.png"},
         r"row 3: column File_name = '000001_01_02_012.png' does not match"),
    ],
)
def test_bad_rows_name_file_row_column_value(tmp_path, deeplesion_tree, change, message):
    good = deeplesion_tree.row("000001_01_01_012.png", (10, 10, 30, 30), slice_range=(10, 14))
    path = deeplesion_tree.write_dl_info(tmp_path / "DL_info.csv", [good, change(good), good])
    with pytest.raises(DeepLesionError, match=rf"^{re.escape(str(path))}, {message}"):
        read_dl_info(path)
    info = read_dl_info(path, on_error="skip")
    assert [r.row for r in info.records] == [2, 4]
    assert len(info.skipped) == 1 and info.skipped[0].startswith(f"{path}, row 3: ")


def test_wrong_header_names_the_first_mismatch(tmp_path, deeplesion_tree):
    header = list(DL_INFO_COLUMNS)
    header[5], header[6] = header[6], header[5]
    good = deeplesion_tree.row("000001_01_01_012.png", (10, 10, 30, 30), slice_range=(10, 14))
    path = deeplesion_tree.write_dl_info(tmp_path / "DL_info.csv", [good], header=header)
    with pytest.raises(DeepLesionError, match=r"DL_info.csv: header column 6 is 'Bounding_boxes', "
                                              r"expected 'Measurement_coordinates'"):
        read_dl_info(path, on_error="skip")  # a bad header is never skippable
    short = deeplesion_tree.write_dl_info(tmp_path / "short.csv", [], header=DL_INFO_COLUMNS[:17])
    with pytest.raises(DeepLesionError, match=r"header column 18 is None, expected 'Train_Val_Test'"):
        read_dl_info(short)


# ---------------------------------------------------------------------------------------------
# Sub-volume names
# ---------------------------------------------------------------------------------------------


def test_contiguous_runs_and_names():
    assert contiguous_runs([]) == []
    assert contiguous_runs([12, 3, 1, 2, 2, 7, 8, 999, 1000, 1001]) == [(1, 3), (7, 8), (12, 12), (999, 1001)]
    assert subvolume_name("001344_01_01", 12, 24) == "001344_01_01_012-024"
    assert subvolume_name("000001_01_01", 999, 1001) == "000001_01_01_999-1001"
    assert parse_subvolume_name("000001_01_01_999-1001") == ("000001_01_01", 999, 1001)
    # every real key of Lesion Harvester's test file parses and is rebuilt exactly
    names = list(read_gt(HARVESTER / "Revised-Test1071.pkl"))
    assert "001344_01_01_012-024" in names
    assert all(subvolume_name(*parse_subvolume_name(n)) == n for n in names)


@pytest.mark.parametrize("name", ["../000001_01_01_001-003", "000001_01_01/../x_001-003", "/etc/passwd",
                                  "..\\000001_01_01_001-003", "000001_01_01_003-001", "000001_01_01",
                                  "000001_01_01_1-x", ""])
def test_bad_subvolume_names_refused(name):
    with pytest.raises(DeepLesionError, match="sub-volume name"):
        parse_subvolume_name(name)


# ---------------------------------------------------------------------------------------------
# PNG slices and the Images_png tree
# ---------------------------------------------------------------------------------------------


def hu_slice(value: int, shape=(6, 5)) -> np.ndarray:
    """A slice whose pixels encode (value, row, column), so order and orientation show."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    return (value + 10 * y + x).astype(np.int16)


@pytest.fixture
def mini_tree(tmp_path, deeplesion_tree):
    """Two series: A holds runs 8..10 and 999..1001 (four-digit numbers), B holds 1..3."""
    series = {
        "000001_01_01": {n: hu_slice(n) for n in (8, 9, 10, 999, 1000, 1001)},
        "000002_01_02": {n: hu_slice(-1000 - n) for n in (1, 2, 3)},
    }
    return deeplesion_tree(tmp_path / "DL", series)


def test_png_slices_are_16_bit_and_hu_is_exact(tmp_path, deeplesion_tree):
    raw = np.array([[0, 1, 32767, 32768], [32769, 31744, 33768, 65535]], dtype=np.uint16)
    path = deeplesion_tree.write_png(tmp_path / "001.png", raw)
    assert png_bit_depth(path) == (16, 0)  # 16-bit grayscale
    assert Image.open(path).mode in ("I;16", "I")
    hu = read_png_slice(path)
    assert hu.dtype == np.int16
    assert hu.tolist() == [[-32768, -32767, -1, 0], [1, -1024, 1000, 32767]]


def test_bad_pngs_refused_with_the_file_named(tmp_path, deeplesion_tree):
    eight = tmp_path / "eight.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(eight)
    assert png_bit_depth(eight) == (8, 0)
    with pytest.raises(DeepLesionError, match=rf"^{re.escape(str(eight))}: expected a 16-bit grayscale PNG"):
        read_png_slice(eight)
    good = deeplesion_tree.write_png(tmp_path / "good.png", hu_slice(0, (64, 64)))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(DeepLesionError, match=rf"^{re.escape(str(truncated))}: cannot read the PNG"):
        read_png_slice(truncated)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(DeepLesionError, match=rf"^{re.escape(str(junk))}: cannot read the PNG"):
        read_png_slice(junk)
    missing = re.escape(str(tmp_path / "missing.png"))
    with pytest.raises(DeepLesionError, match=rf"^{missing}: slice file not found"):
        read_png_slice(tmp_path / "missing.png")


def test_images_tree_runs_and_subvolumes(mini_tree):
    images = DeepLesionImages(mini_tree)
    assert images.series_folders() == ["000001_01_01", "000002_01_02"]
    assert images.subvolumes("000001_01_01") == [(8, 10), (999, 1001)]
    assert images.subvolume_names("000001_01_01") == ["000001_01_01_008-010", "000001_01_01_999-1001"]
    assert images.subvolume_of("000001_01_01", 1000) == (999, 1001)
    assert images.slice_path("000001_01_01", 1000).name == "1000.png"
    with pytest.raises(DeepLesionError, match=r"000001_01_01/011.png: slice 11 is not in the folder"):
        images.subvolume_of("000001_01_01", 11)

    vol = images.read_subvolume("000001_01_01_999-1001", (0.7, 0.75, 2.5))
    assert vol.hu.dtype == np.int16 and vol.shape == (3, 6, 5)
    assert vol.spacing_xyz == (0.7, 0.75, 2.5)
    np.testing.assert_array_equal(vol.hu, np.stack([hu_slice(n) for n in (999, 1000, 1001)]))
    assert vol.hu[2, 5, 4] == 1001 + 50 + 4  # z = slice - first, y = row, x = column
    other = images.read_subvolume("000002_01_02_001-003", (1, 1, 5))
    assert other.hu[:, 0, 0].tolist() == [-1001, -1002, -1003]
    # a sub-volume name is not required to be a whole run, but every slice must exist
    assert images.read_subvolume("000001_01_01_009-010", (1, 1, 1)).shape == (2, 6, 5)


def test_images_tree_refuses_missing_slices_bad_pngs_and_traversal(mini_tree):
    images = DeepLesionImages(mini_tree)
    with pytest.raises(DeepLesionError, match=r"000001_01_01/011.png: slice 11 of sub-volume "
                                              r"000001_01_01_008-011 is missing"):
        images.read_subvolume("000001_01_01_008-011", (1, 1, 1))
    with pytest.raises(DeepLesionError, match=r"Images_png/000003_01_01: series folder not found"):
        images.read_subvolume("000003_01_01_001-002", (1, 1, 1))
    for name in ("../000001_01_01_008-010", "000001_01_01/../000001_01_01_008-010", "/tmp_001-002"):
        with pytest.raises(DeepLesionError, match="would leave the data folder"):
            images.read_subvolume(name, (1, 1, 1))
    eight = mini_tree / "Images_png" / "000002_01_02" / "002.png"
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(eight)
    with pytest.raises(DeepLesionError, match=rf"^{re.escape(str(eight))}: expected a 16-bit grayscale PNG"):
        images.read_subvolume("000002_01_02_001-003", (1, 1, 5))
    with pytest.raises(DeepLesionError, match="Images_png folder not found"):
        DeepLesionImages(mini_tree / "nowhere")


# ---------------------------------------------------------------------------------------------
# The paper's split on the real files
# ---------------------------------------------------------------------------------------------


def revised_names() -> dict[str, set[str]]:
    return {k: set(read_gt(HARVESTER / f)) for k, f in
            (("val", "Revised-Train100.pkl"), ("test", "Revised-Test1071.pkl"),
             ("negatives", "Revised-Train744.pkl"))}


def test_paper_split_from_dl_info_and_the_full_harvester_files():
    split = paper_split(read_dl_info(EXCERPT), None, HARVESTER)
    assert {k: v["volumes"] for k, v in split.counts().items()} == {
        "train": 64, "val": 100, "test": 1071, "negatives": 744}
    assert {k: v["boxes"] for k, v in split.counts().items()} == {
        "train": 100, "val": 420, "test": 3665, "negatives": 3033}

    # train, computed independently: code-1, non-noisy rows grouped by Slice_range sub-volume,
    # minus every sub-volume of the three Revised files
    full = set().union(*revised_names().values())
    expected: dict[str, list[tuple[int, list[float]]]] = {}
    for r in excerpt_rows():
        if r["Train_Val_Test"] != "1" or r["Possibly_noisy"] != "0":
            continue
        first, last = (int(v) for v in r["Slice_range"].split(","))
        name = f"{r['File_name'].rsplit('_', 1)[0]}_{first:03d}-{last:03d}"
        if name not in full:
            box = [float(v) - 1 for v in r["Bounding_boxes"].split(",")]
            expected.setdefault(name, []).append((int(r["Key_slice_index"]) - first, box))
    assert set(split.train) == set(expected)
    for name, items in expected.items():
        got = sorted((z, b.tolist()) for z, b in split.train[name])
        assert [z for z, _ in got] == sorted(z for z, _ in items)
        np.testing.assert_allclose([b for _, b in got], [b for _, b in sorted(items)])
    assert set(split.removed_from_train) == {"000093_01_01_052-067", "000094_07_01_044-074",
                                             "000089_14_02_219-279"}
    assert not set(split.train) & full

    # Lesion Harvester's boxes are DL_info's 1-based values: after the shift they equal the
    # 0-based DL_info boxes. Line 63: key 59 of 000093_01_01 (z = 59 - 52 = 7) in Train100.
    rec = next(r for r in read_dl_info(EXCERPT).records if r.row == 63)
    val_boxes = [b for z, b in split.val["000093_01_01_052-067"] if z == rec.z]
    np.testing.assert_allclose(val_boxes, [rec.box])
    raw = read_gt(HARVESTER / "Revised-Train100.pkl")["000093_01_01_052-067"]
    np.testing.assert_allclose([b for z, b in raw if z == 7], [rec.box + 1])
    assert split.test["001347_01_01_017-029"] == []  # the one test sub-volume without a box


def test_paper_split_on_a_mini_tree_with_real_names(tmp_path, deeplesion_tree):
    tiny = hu_slice(0, (4, 4))
    runs = {
        "000093_01_01": range(52, 68),   # val (Revised-Train100), also official train rows
        "000116_03_01": range(1, 12),    # val
        "000091_01_02": range(1, 13),    # test (Revised-Test1071)
        "000097_01_01": range(110, 123),  # test
        "000094_07_01": range(44, 75),   # negatives (Revised-Train744), an official train row
        "000089_01_01": range(31, 44),   # train: one key slice (37), partial labels
        "000089_02_01": range(29, 43),   # train rows 35 (run 29-41 in DL_info: files 29-42) and 50
    }
    root = deeplesion_tree(tmp_path / "DL", {f: {n: tiny for n in r} for f, r in runs.items()})
    info = read_dl_info(EXCERPT)
    images = DeepLesionImages(root)
    with pytest.raises(DeepLesionError, match=r"Images_png/\d{6}_\d\d_\d\d: series folder of "):
        paper_split(info, images, HARVESTER)

    split = paper_split(info, images, HARVESTER, on_error="skip")
    assert set(split.val) == {"000093_01_01_052-067", "000116_03_01_001-011"}
    assert set(split.test) == {"000091_01_02_001-012", "000097_01_01_110-122"}
    assert set(split.negatives) == {"000094_07_01_044-074"}
    assert set(split.train) == {"000089_01_01_031-043"}
    z, box = split.train["000089_01_01_031-043"][0]
    assert z == 37 - 31
    np.testing.assert_allclose(box, [131.977, 170.808, 164.939, 213.029])  # line 2 minus 1
    assert {"000093_01_01_052-067", "000094_07_01_044-074"} <= set(split.removed_from_train)

    names = revised_names()
    present = set(runs)
    train_missing = sum(
        1 for r in excerpt_rows()
        if r["Train_Val_Test"] == "1" and r["File_name"].rsplit("_", 1)[0] not in present
        and f"{r['File_name'].rsplit('_', 1)[0]}_{int(r['Slice_range'].split(',')[0]):03d}-"
            f"{int(r['Slice_range'].split(',')[1]):03d}" not in set().union(*names.values()))
    assert len(split.skipped) == (100 - 2) + (1071 - 2) + (744 - 1) + train_missing + 2
    assert sum("disagrees with the slice files' run (29, 42)" in m for m in split.skipped) == 1
    assert sum("050.png: slice 50 is not in the folder" in m for m in split.skipped) == 1


# ---------------------------------------------------------------------------------------------
# Conversion to the generic dataset format
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_deeplesion(tmp_path, deeplesion_tree):
    """A complete mini DeepLesion: images, DL_info.csv and Revised-* files (1-based boxes)."""
    size = (40, 48)  # rows, columns
    series = {
        "000010_01_01": {n: hu_slice(n, size) for n in range(1, 6)},       # train 001-005
        "000011_01_01": {n: hu_slice(-n, size) for n in (7, 8, 9, 20, 21)},  # val 007-009, train 020-021
        "000012_01_01": {n: hu_slice(3 * n, size) for n in range(3, 7)},   # test 003-006
        "000013_01_01": {n: hu_slice(n, size) for n in (1, 2)},            # negatives 001-002
    }
    row = deeplesion_tree.row
    rows = [
        row("000010_01_01_003.png", (5, 6, 20, 22), slice_range=(1, 5), spacing=(0.7, 0.7, 2.5)),
        row("000010_01_01_003.png", (30, 10, 48, 30), slice_range=(1, 5), spacing=(0.7, 0.7, 2.5)),
        row("000010_01_01_005.png", (1, 1, 12, 12), slice_range=(1, 5), spacing=(0.7, 0.7, 2.5)),
        row("000010_01_01_004.png", (2, 2, 9, 9), slice_range=(1, 5), spacing=(0.7, 0.7, 2.5), noisy=1),
        row("000011_01_01_008.png", (10, 10, 20, 20), slice_range=(7, 9), spacing=(0.8, 0.8, 5)),
        row("000011_01_01_021.png", (11, 12, 25, 26), slice_range=(20, 21), spacing=(0.8, 0.8, 5)),
        row("000012_01_01_004.png", (3, 4, 15, 16), slice_range=(3, 6), spacing=(0.6, 0.6, 1), split=3),
        row("000013_01_01_002.png", (8, 8, 18, 18), slice_range=(1, 2), spacing=(0.9, 0.9, 2)),
    ]
    root = deeplesion_tree(tmp_path / "DeepLesion", series, dl_info_rows=rows)
    harvester = deeplesion_tree.write_harvester(
        tmp_path / "lh",
        val={"000011_01_01_007-009": {1: [(10, 10, 20, 20), (25, 3, 30, 9)], 2: [(5, 5, 8, 8)]}},
        test={"000012_01_01_003-006": {1: [(3, 4, 15, 16)], 3: [(40, 30, 51, 41)]}},  # clipped
        negatives={"000013_01_01_001-002": {1: [(8, 8, 18, 18)], 0: [(20, 20, 30, 30)]}},
    )
    return root, harvester


def test_convert_round_trip_matches_the_split(tmp_path, small_deeplesion):
    root, harvester = small_deeplesion
    out = tmp_path / "dataset"
    summary = convert_deeplesion(root, out, harvester, progress=False)
    split = paper_split(read_dl_info(root / "DL_info.csv"), DeepLesionImages(root), harvester)
    assert split.skipped == []
    assert set(split.train) == {"000010_01_01_001-005", "000011_01_01_020-021"}

    folder = DatasetFolder(out)
    assert folder.splits == {"000010_01_01_001-005": "train", "000011_01_01_020-021": "train",
                             "000011_01_01_007-009": "val", "000012_01_01_003-006": "test",
                             "000013_01_01_001-002": "negatives"}
    for set_name in ("train", "val", "test"):
        written = read_gt(out, split=set_name)
        expected = getattr(split, set_name)
        assert set(written) == set(expected)
        for name, items in expected.items():
            _, h, w = folder.read_volume(name).shape
            want = [(z, np.minimum(b, [w, h, w, h])) for z, b in items]  # clipped to the image
            assert [z for z, _ in written[name]] == [z for z, _ in want]
            np.testing.assert_allclose([b for _, b in written[name]], [b for _, b in want], atol=1e-9)
    table = folder.annotations()
    assert table.key.all() and len(table) == 3 + 1 + 3 + 2 + 2  # train, val, test, negatives
    # z is the offset from the first slice; boxes 0-based: DL_info (5, 6, 20, 22) on key 3
    train = table.for_volumes(["000010_01_01_001-005"])
    assert train.z.tolist() == [2, 2, 4]
    np.testing.assert_allclose(train.boxes[0], [4, 5, 19, 21])
    test = table.for_volumes(["000012_01_01_003-006"])
    np.testing.assert_allclose(test.boxes[1], [39, 29, 48, 40])  # x2 clipped to the 48 columns

    vol = folder.read_volume("000012_01_01_003-006")
    assert vol.hu.dtype == np.int16 and vol.spacing_xyz == pytest.approx((0.6, 0.6, 1.0))
    np.testing.assert_array_equal(vol.hu, np.stack([hu_slice(3 * n, (40, 48)) for n in range(3, 7)]))

    # the hard-negative pool: its own split, full labels in annotations.csv
    assert folder.volumes("negatives") == ["000013_01_01_001-002"]
    neg = table.for_volumes(["000013_01_01_001-002"])
    assert neg.z.tolist() == [0, 1] and neg.boxes.tolist() == [[19, 19, 29, 29], [7, 7, 17, 17]]
    assert read_volume(out / "volumes" / "000013_01_01_001-002.nii.gz").shape == (2, 40, 48)

    info = json.loads((out / "dataset.json").read_text())
    assert info["format"] == "uld-dataset" and info["version"] == 1
    assert info["summary"] == summary
    assert summary["volumes"] == {"train": 2, "val": 1, "test": 1}
    assert summary["boxes"] == {"train": 4, "val": 3, "test": 2}
    assert summary["dropped_noisy"] == 1 and summary["skipped"] == []


def test_convert_negatives_as_train(tmp_path, small_deeplesion):
    root, harvester = small_deeplesion
    convert_deeplesion(root, tmp_path / "d", harvester, progress=False, negatives="train")
    folder = DatasetFolder(tmp_path / "d")
    assert folder.splits["000013_01_01_001-002"] == "train"
    assert len(read_gt(tmp_path / "d", split="train")["000013_01_01_001-002"]) == 2
    assert folder.volumes("negatives") == []


def test_convert_errors_stop_or_skip(tmp_path, small_deeplesion):
    root, harvester = small_deeplesion
    bad = root / "Images_png" / "000012_01_01" / "005.png"
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(bad)
    out = tmp_path / "d"
    out.mkdir()
    (out / "dataset.json").write_text("{}")  # an earlier result
    with pytest.raises(FileExistsError, match=r"not empty \(dataset.json\).*--overwrite"):
        convert_deeplesion(root, out, harvester, progress=False)
    with pytest.raises(DeepLesionError, match=rf"^{re.escape(str(bad))}: expected a 16-bit grayscale PNG"):
        convert_deeplesion(root, out, harvester, progress=False, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["dataset.json"]  # a failed conversion touches nothing
    assert (out / "dataset.json").read_text() == "{}"

    summary = convert_deeplesion(root, out, harvester, progress=False, on_error="skip", overwrite=True)
    assert DatasetFolder(out).volumes("test") == []
    assert summary["volumes"] == {"train": 2, "val": 1, "test": 0}
    assert len(summary["skipped"]) == 1 and summary["skipped"][0].startswith(f"{bad}: ")
    assert (out / "dataset.json").is_file()


def test_a_lazy_subvolume_reads_only_the_slices_a_stack_needs(deeplesion_tree, tmp_path, monkeypatch):
    import uld.data.deeplesion.images as dl
    from uld.data.stack import slice_stacks

    hu = {n: np.full((6, 7), 10 * n, dtype=np.int16) for n in range(30, 50)}
    root = deeplesion_tree(tmp_path / "DL", {"000001_01_01": hu})
    images = DeepLesionImages(root)
    reads: list[str] = []
    real = dl.read_png_slice
    monkeypatch.setattr(dl, "read_png_slice", lambda path: reads.append(Path(path).name) or real(path))
    lazy = images.lazy_subvolume("000001_01_01_030-049", (0.8, 0.8, 1.0))
    assert lazy.shape == (20, 6, 7) and reads == ["030.png"]  # the first slice gives the shape
    stack = slice_stacks(lazy.hu, np.array([10]), 1.0, 2.0, 9)   # slices 2, 4, ..., 18
    assert np.array_equal(stack[0, :, 0, 0], [10 * (30 + z) for z in range(2, 19, 2)])
    assert len(reads) == 10
    slice_stacks(lazy.hu, np.array([10]), 1.0, 2.0, 9)
    assert len(reads) == 10                                       # decoded slices are kept
    eager = images.read_subvolume("000001_01_01_030-049", (0.8, 0.8, 1.0))
    assert np.array_equal(np.asarray(lazy.hu), eager.hu) and np.array_equal(lazy.hu[3], eager.hu[3])
    with pytest.raises(IndexError, match="out of range"):
        lazy.hu[np.array([20])]
