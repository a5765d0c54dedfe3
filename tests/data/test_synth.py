import csv
import json
from collections import defaultdict

import numpy as np
import pytest
from scipy import ndimage

from uld.data import synth
from uld.data.dataset import DatasetFolder, boxes_outside_volume, read_annotations
from uld.data.synth import (
    SIZE_BANDS,
    SynthConfig,
    Tissue,
    format_summary,
    generate_phantom,
    generate_volume,
    random_labels,
    recist_labels,
    size_band,
    write_synthetic_dataset,
)

TINY = SynthConfig(n_train=6, n_val=2, n_test=2, size=64, seed=3)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = write_synthetic_dataset(root, TINY, progress=False)
    return root, summary


def test_same_seed_same_volume_different_seed_differs():
    a, b = generate_phantom(TINY, 1), generate_phantom(TINY, 1)
    assert np.array_equal(a.volume.hu, b.volume.hu) and a.volume.hu.dtype == np.int16
    assert a.volume.spacing_xyz == b.volume.spacing_xyz
    assert a.lesions == b.lesions and np.array_equal(a.lesion_map, b.lesion_map)
    other = generate_phantom(SynthConfig(n_train=6, n_val=2, n_test=2, size=64, seed=4), 1)
    assert other.volume.shape != a.volume.shape or not np.array_equal(other.volume.hu, a.volume.hu)


def test_a_volume_does_not_depend_on_the_others_or_on_missingness():
    small = generate_volume(TINY, 1)[0]
    large = generate_volume(SynthConfig(n_train=50, size=64, seed=3, missing="random"), 1)[0]
    assert np.array_equal(small.hu, large.hu)


def test_written_dataset_is_deterministic(dataset, tmp_path):
    root, summary = dataset
    again = write_synthetic_dataset(tmp_path, TINY, progress=False)
    assert again == summary
    for name in ("splits.csv", "annotations.csv", "annotations_full.csv", "lesions.csv",
                 "annotations_random.csv", "annotations_largest.csv", "dataset.json"):
        assert (root / name).read_bytes() == (tmp_path / name).read_bytes(), name
    folder_a, folder_b = DatasetFolder(root), DatasetFolder(tmp_path)
    for name in folder_a.volumes():
        assert np.array_equal(folder_a.read_volume(name).hu, folder_b.read_volume(name).hu)


def test_dataset_round_trips_through_the_reader(dataset):
    root, _ = dataset
    folder = DatasetFolder(root)
    assert folder.volumes("train") == [f"synth_{i:05d}" for i in range(6)]
    assert folder.volumes("val") == ["synth_00006", "synth_00007"]
    assert folder.volumes("test") == ["synth_00008", "synth_00009"]
    info = folder.info()
    assert info["format"] == "uld-dataset" and info["version"] == 1
    assert SynthConfig(**info["generator"]) == TINY
    partial, full = folder.annotations(), folder.annotations("annotations_full.csv")
    assert len(partial) > 0 and len(full) > len(partial)
    assert set(partial.extra) == {"lesion"}
    for name in folder.volumes():
        volume, lesions = generate_volume(TINY, int(name[-5:]))
        read = folder.read_volume(name)
        assert read.hu.dtype == np.int16 and np.array_equal(read.hu, volume.hu)
        assert np.allclose(read.spacing_xyz, volume.spacing_xyz)
        assert np.allclose(read.direction, volume.direction)
        assert np.allclose(read.origin_xyz, volume.origin_xyz)
        assert len(full.for_volumes([name])) == sum(len(les.z) for les in lesions)


def test_boxes_lie_inside_their_image_and_volume(dataset):
    root, _ = dataset
    folder = DatasetFolder(root)
    for filename in ("annotations.csv", "annotations_full.csv"):
        table = folder.annotations(filename)
        assert np.all(table.boxes >= 0) and np.all(table.z >= 0)
        for name in folder.volumes():
            shape = folder.read_volume(name).shape
            assert boxes_outside_volume(table, name, shape, filename) == []
    for row in _rows(root / "lesions.csv"):
        shape = folder.read_volume(row["volume"]).shape
        x1, y1, z1, x2, y2, z2 = (float(row[c]) for c in ("x1", "y1", "z1", "x2", "y2", "z2"))
        assert 0 <= x1 < x2 <= shape[2] and 0 <= y1 < y2 <= shape[1] and 0 <= z1 < z2 <= shape[0]
        assert z1 <= int(row["key_z"]) < z2


@pytest.mark.parametrize("index", [0, 3, 6, 9])
def test_key_slice_is_the_largest_cross_section_and_boxes_match_the_mask(index):
    phantom = generate_phantom(TINY, index)
    assert phantom.lesions, "the tiny config should place lesions"
    for les in phantom.lesions:
        mask = phantom.lesion_map == les.index + 1
        areas = mask.sum(axis=(1, 2))
        assert areas[les.key_z] == areas.max()
        assert les.z == tuple(np.flatnonzero(areas >= TINY.min_cross_section_px).tolist())
        for z, box in zip(les.z, les.boxes_xyxy):
            rows = np.flatnonzero(mask[z].any(axis=1))
            cols = np.flatnonzero(mask[z].any(axis=0))
            assert box == (cols[0], rows[0], cols[-1] + 1.0, rows[-1] + 1.0)
        assert les.key_box_xyxy == les.box_on(les.key_z)
        x1, y1, z1, x2, y2, z2 = les.box3d
        assert (z1, z2) == (les.z[0], les.z[-1] + 1)
        boxes = np.array(les.boxes_xyxy)
        assert (x1, y1, x2, y2) == (boxes[:, 0].min(), boxes[:, 1].min(),
                                    boxes[:, 2].max(), boxes[:, 3].max())
        assert les.diameter_mm > 0 and les.organ in synth.LESION_KINDS
        assert les.kind in synth.LESION_KINDS[les.organ]


def test_csvs_hold_what_a_user_and_the_oracle_have(dataset):
    root, _ = dataset
    splits = {r["volume"]: r["split"] for r in _rows(root / "splits.csv")}
    lesions = {(r["volume"], r["lesion"]): r for r in _rows(root / "lesions.csv")}
    partial = _rows(root / "annotations.csv")
    full = _rows(root / "annotations_full.csv")
    assert all(r["key"] == "1" for r in partial)
    got = {(r["volume"], r["lesion"]) for r in partial}
    assert len(got) == len(partial)  # one key box per labeled lesion
    assert got == {k for k, r in lesions.items() if r["labeled"] == "1"}
    for r in partial:
        assert r["z"] == lesions[(r["volume"], r["lesion"])]["key_z"]
    keys = defaultdict(list)
    for r in full:
        keys[(r["volume"], r["lesion"])].append(r["z"] if r["key"] == "1" else None)
    for k, zs in keys.items():
        assert [z for z in zs if z is not None] == [lesions[k]["key_z"]]
    assert set(keys) == set(lesions)
    for (volume, _), r in lesions.items():
        if splits[volume] != "train":
            assert r["labeled"] == "1"


def test_recist_selection_by_hand():
    organs = ["liver", "liver", "liver", "lung"]
    # largest first: the 15 mm liver lesion is the third in its organ
    assert recist_labels([15, 30, 20, 9.9], organs).tolist() == [False, True, True, False]
    d = [11, 12, 13, 14, 15, 16, 5]
    o = ["a", "b", "c", "d", "e", "f", "g"]
    assert recist_labels(d, o).tolist() == [False, True, True, True, True, True, False]
    assert recist_labels([10.0, 10.0], ["a", "a"], max_per_organ=1).tolist() == [True, False]
    assert recist_labels([], []).shape == (0,)


def _assert_recist(rows, config, largest_first=True):
    by_volume = defaultdict(list)
    for r in rows:
        by_volume[r["volume"]].append(r)
    for group in by_volume.values():
        labeled = [r for r in group if r["labeled"] == "1"]
        assert len(labeled) <= config.recist_max_per_volume
        per_organ = defaultdict(list)
        for r in labeled:
            assert float(r["diameter_mm"]) >= config.recist_min_diameter_mm
            per_organ[r["organ"]].append(float(r["diameter_mm"]))
        assert all(len(v) <= config.recist_max_per_organ for v in per_organ.values())
        for r in group:  # an eligible lesion left out was crowded out (by larger ones)
            d = float(r["diameter_mm"])
            if r["labeled"] == "0" and d >= config.recist_min_diameter_mm:
                bar = d if largest_first else 0.0
                organ_full = len(per_organ[r["organ"]]) == config.recist_max_per_organ \
                    and min(per_organ[r["organ"]]) >= bar
                volume_full = len(labeled) == config.recist_max_per_volume \
                    and min(float(x["diameter_mm"]) for x in labeled) >= bar
                assert organ_full or volume_full


def test_recist_rules_hold_in_the_written_dataset(dataset):
    root, _ = dataset
    splits = {r["volume"]: r["split"] for r in _rows(root / "splits.csv")}
    rows = [r for r in _rows(root / "lesions.csv") if splits[r["volume"]] == "train"]
    _assert_recist(rows, TINY)


def test_recist_caps_bind_with_many_lesions():
    config = SynthConfig(n_train=8, n_val=0, n_test=0, size=64, seed=5, lesions_per_volume=(8, 8),
                         lesions_mean=8.0, diameter_median_mm=14.0)
    rows = []
    for i in range(config.n_train):
        for les in generate_volume(config, i)[1]:
            rows.append({"volume": les.volume, "organ": les.organ, "labeled": str(int(les.labeled)),
                         "diameter_mm": str(les.diameter_mm)})
    _assert_recist(rows, config)
    crowded = [r for r in rows if r["labeled"] == "0" and float(r["diameter_mm"]) >= 10]
    assert crowded, "with 8 lesions per volume some eligible lesions must be crowded out"


def test_random_missingness_rate():
    rng = np.random.default_rng(0)
    assert abs(random_labels(20000, 0.3, rng).mean() - 0.7) < 0.015
    config = SynthConfig(n_train=24, n_val=3, n_test=0, size=48, seed=2, missing="random",
                         missing_rate=0.5)
    train, val = [], []
    for i in range(config.n_volumes):
        lesions = generate_volume(config, i)[1]
        (train if i < config.n_train else val).extend(les.labeled for les in lesions)
    assert len(train) > 60
    assert abs(1 - np.mean(train) - 0.5) < 0.2
    assert all(val)


def test_vessels_run_through_every_slice():
    for index in (0, 4):
        phantom = generate_phantom(TINY, index)
        vessel = phantom.tissue == Tissue.VESSEL
        assert vessel.any(axis=(1, 2)).all()
        labels, n = ndimage.label(vessel, structure=np.ones((3, 3, 3)))
        assert n >= 2  # aorta, vena cava and smaller vessels (some may touch)
        for i in range(1, n + 1):
            assert (labels == i).any(axis=(1, 2)).all(), f"vessel {i} ends inside volume {index}"


def test_default_geometry_and_hounsfield_units():
    config = SynthConfig()
    for index in range(3):
        phantom = generate_phantom(config, index)
        hu, tissue = phantom.volume.hu.astype(float), phantom.tissue
        sx, sy, sz = phantom.volume.spacing_xyz
        lo, hi = config.pixel_spacing_mm
        assert lo <= sx == sy <= hi and sz in config.slice_spacings_mm
        assert phantom.volume.shape[1:] == (128, 128) and 24 <= phantom.volume.shape[0] <= 40
        assert np.median(hu[tissue == Tissue.AIR]) < -950
        assert -130 < np.median(hu[tissue == Tissue.SUBCUTANEOUS_FAT]) < -60
        vessel = hu[tissue == Tissue.VESSEL]  # small vessels lose contrast to the blur
        assert np.median(vessel) > 80 and 150 < np.percentile(vessel, 90) < 300
        assert np.median(hu[tissue == Tissue.BONE]) > 150
        if (tissue == Tissue.LIVER).any():
            assert 60 < np.median(hu[tissue == Tissue.LIVER]) < 130
        corner = hu[:, :12, :12]  # air far from the body: pure noise
        assert abs(corner.mean() + 1000) < 5 and 8 < corner.std() < 27


def test_summary_agrees_with_the_csvs(dataset):
    root, summary = dataset
    splits = {r["volume"]: r["split"] for r in _rows(root / "splits.csv")}
    lesions = {(r["volume"], r["lesion"]): r for r in _rows(root / "lesions.csv")}
    for split in ("train", "val", "test"):
        rows = [r for k, r in lesions.items() if splits[k[0]] == split]
        assert summary["splits"][split]["volumes"] == sum(s == split for s in splits.values())
        assert summary["splits"][split]["lesions"] == len(rows)
        assert summary["splits"][split]["labeled"] == sum(r["labeled"] == "1" for r in rows)
    train = [r for k, r in lesions.items() if splits[k[0]] == "train"]
    unlabeled = sum(r["labeled"] == "0" for r in train)
    assert summary["train_unlabeled_share"] == pytest.approx(unlabeled / len(train), abs=1e-4)
    # visible lesions on training slices, from the annotation files alone
    partial = read_annotations(root / "annotations.csv")
    full = read_annotations(root / "annotations_full.csv")
    boxed = {(v, int(z), lesion) for v, z, lesion in zip(partial.volume, partial.z,
                                                         partial.extra["lesion"])}
    train_slices = {(v, int(z)) for v, z in zip(partial.volume, partial.z) if splits[v] == "train"}
    counts = {b: [0, 0] for b in SIZE_BANDS}
    for v, z, lesion in zip(full.volume, full.z, full.extra["lesion"]):
        if (v, int(z)) in train_slices:
            band = size_band(float(lesions[(v, lesion)]["diameter_mm"]))
            counts[band][0] += 1
            counts[band][1] += (v, int(z), lesion) not in boxed
    table = summary["training_slice_visible_by_size"]
    assert summary["training_slices"] == len(train_slices)
    for band, (visible, missing) in counts.items():
        assert (table[band]["visible"], table[band]["unlabeled"]) == (visible, missing)
    assert table["all"]["visible"] == sum(c[0] for c in counts.values())
    assert json.loads((root / "dataset.json").read_text())["summary"] == summary
    text = format_summary(summary)
    assert "train lesions left unlabeled" in text and ">=30 mm" in text


def test_an_interrupted_run_leaves_the_earlier_dataset_byte_identical(tmp_path, monkeypatch):
    config = SynthConfig(n_train=3, n_val=1, n_test=1, size=48, seed=1)
    write_synthetic_dataset(tmp_path, config, progress=False)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    calls = []

    def failing_write(volume, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(synth.writer, "write_volume", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_synthetic_dataset(tmp_path, config, progress=False, overwrite=True)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not any(p.name.endswith(".partial") for p in tmp_path.parent.iterdir())


def test_a_non_empty_folder_is_replaced_only_with_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"not empty \(notes.txt\).*--overwrite"):
        write_synthetic_dataset(tmp_path, SynthConfig(n_train=1, n_val=0, n_test=0, size=48),
                                progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_stale_volumes_are_removed(tmp_path):
    write_synthetic_dataset(tmp_path, SynthConfig(n_train=3, n_val=0, n_test=0, size=48),
                            progress=False)
    write_synthetic_dataset(tmp_path, SynthConfig(n_train=2, n_val=0, n_test=0, size=48),
                            progress=False, overwrite=True)
    names = sorted(p.name for p in (tmp_path / "volumes").iterdir())
    assert names == ["synth_00000.nii.gz", "synth_00001.nii.gz"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"missing": "all"}, "missing"), ({"missing_rate": 1.5}, "missing_rate"),
     ({"size": 8}, "size"), ({"depth": (10, 5)}, "depth"),
     ({"slice_spacing_weights": (1.0,)}, "slice_spacing_weights")],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"SynthConfig.{field}"):
        SynthConfig(**kwargs)


def test_index_outside_the_dataset_is_refused():
    with pytest.raises(IndexError, match="volume index 10"):
        generate_volume(TINY, 10)

def test_recist_random_choice_keeps_the_limits_but_not_the_order():
    d = [30, 25, 20, 15, 12, 11, 9]
    organs = ["liver"] * 4 + ["lung"] * 3
    chosen = [recist_labels(d, organs, rng=np.random.default_rng(seed)) for seed in range(40)]
    for labeled in chosen:
        assert labeled[:4].sum() == 2 and labeled[4:6].sum() == 2 and not labeled[6]
    # any two liver lesions may be measured, not only the two largest
    assert {tuple(np.flatnonzero(labeled[:4])) for labeled in chosen} == {
        (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)}


def test_random_recist_choice_changes_only_which_lesions_are_labeled(tmp_path):
    crowded = dict(n_train=4, n_val=1, n_test=0, size=64, seed=5, lesions_per_volume=(8, 8),
                   lesions_mean=8.0, diameter_median_mm=14.0)
    largest, chosen = tmp_path / "largest", tmp_path / "random"
    write_synthetic_dataset(largest, SynthConfig(**crowded), progress=False)
    write_synthetic_dataset(chosen, SynthConfig(**crowded, recist_choice="random"), progress=False)
    for name in ("annotations_full.csv", "splits.csv"):
        assert (largest / name).read_bytes() == (chosen / name).read_bytes()
    # the control file of the random choice is the largest-first selection itself
    assert (chosen / "annotations_largest.csv").read_bytes() == \
        (largest / "annotations.csv").read_bytes() == (largest / "annotations_largest.csv").read_bytes()
    a, b = _rows(largest / "lesions.csv"), _rows(chosen / "lesions.csv")
    assert sum(r["labeled"] == "1" for r in a) == sum(r["labeled"] == "1" for r in b)
    assert [r["labeled"] for r in a] != [r["labeled"] for r in b]
    _assert_recist([r for r in b if r["volume"] != "synth_00004"], SynthConfig(**crowded),
                   largest_first=False)
    assert np.array_equal(DatasetFolder(largest).read_volume("synth_00001").hu,
                          DatasetFolder(chosen).read_volume("synth_00001").hu)


def test_synth_command_passes_the_missingness_options(tmp_path):
    from uld.cli import main

    assert main(["synth", "--out", str(tmp_path), "--train", "2", "--val", "1", "--test", "0",
                 "--size", "48", "--recist-choice", "random", "--quiet"]) == 0
    generator = json.loads((tmp_path / "dataset.json").read_text())["generator"]
    assert generator["recist_choice"] == "random" and generator["missing"] == "recist"


def _lesion(volume, index, diameter):
    return synth.Lesion(volume=volume, index=index, organ="liver", kind="cyst",
                        diameter_mm=diameter, key_z=0, box3d=(0, 0, 0, 1, 1, 1), z=(0,),
                        boxes_xyxy=((0.0, 0.0, 1.0, 1.0),), labeled=True)


def test_sparsity_labels_drop_the_smaller_and_further_lesions_first_and_nest():
    lesions = [_lesion("a", 0, 30.0), _lesion("a", 1, 20.0), _lesion("a", 2, 12.0),
               _lesion("b", 0, 15.0), _lesion("b", 1, 25.0), _lesion("t", 0, 9.0)]
    splits = {"a": "train", "b": "train", "t": "test"}
    kept = {level: synth.sparsity_labels(lesions, splits, level, seed=0)
            for level in (0.0, 0.3, 0.6, 0.8)}
    assert kept[0.0].all()
    # 5 train lesions: 0.6 leaves round(0.4 * 5) = 2 labels, the largest of each scan
    assert kept[0.6].tolist() == [True, False, False, False, True, True]
    assert kept[0.3].sum() == 1 + round(0.7 * 5)
    assert kept[0.8].sum() == 1 + 1 and kept[0.8][5]  # the test lesion always keeps its label
    for low, high in ((0.0, 0.3), (0.3, 0.6), (0.6, 0.8)):  # a higher level only removes labels
        assert not (kept[high] & ~kept[low]).any()
    with pytest.raises(ValueError, match="sparsity level 1.0"):
        synth.sparsity_labels(lesions, splits, 1.0, seed=0)


def test_sparsity_files_are_written_and_validated(tmp_path):
    config = SynthConfig(n_train=4, n_val=1, n_test=1, size=64, seed=3, sparsity_levels=[0.0, 0.5])
    write_synthetic_dataset(tmp_path, config, progress=False)
    lesions = _rows(tmp_path / "lesions.csv")
    train = {r["volume"] for r in _rows(tmp_path / "splits.csv") if r["split"] == "train"}
    n_train = sum(r["volume"] in train for r in lesions)
    for level, name in ((0.0, "annotations_unlabeled00.csv"), (0.5, "annotations_unlabeled50.csv")):
        rows = _rows(tmp_path / name)
        assert sum(r["volume"] in train for r in rows) == round((1 - level) * n_train)
        assert sum(r["volume"] not in train for r in rows) == len(lesions) - n_train
    with pytest.raises(ValueError, match=r"sparsity_levels .*1\.2 is not an unlabeled share"):
        SynthConfig(sparsity_levels=(0.3, 1.2))
