import numpy as np
import pytest
import torch

from uld.config import load_config
from uld.data.dataset import DataError, DatasetFolder, write_csv
from uld.data.samples import KeySliceDataset, VolumeStore
from uld.data.stack import window
from uld.data.volume import Volume, write_volume


@pytest.fixture()
def folder(tmp_path):
    hu = (np.arange(6)[:, None, None] * 100 - 300 + np.zeros((6, 16, 20))).astype(np.int16)
    write_volume(Volume(hu, (1.0, 1.0, 2.0)), tmp_path / "volumes" / "v.nii.gz")
    write_csv(tmp_path / "splits.csv", ["volume", "split"], [["v", "train"]])
    write_csv(tmp_path / "annotations.csv", ["volume", "z", "x1", "y1", "x2", "y2", "key"], [
        ["v", 2, 1.0, 1.0, 5.0, 5.0, 1],
        ["v", 2, 8.0, 8.0, 12.0, 12.0, 1],
        ["v", 4, 1.0, 1.0, 5.0, 5.0, 0],  # not a key slice: a target only where sampled
    ])
    return DatasetFolder(tmp_path)


def test_a_sample_is_the_windowed_stack_around_a_key_slice_with_all_its_boxes(folder):
    config = load_config(None, ["data.num_slices=3", "data.window_hu=[-500, 500]",
                                "data.pixel_spacing_mm=0"]).data
    labels = folder.annotations()
    dataset = KeySliceDataset(VolumeStore(folder), labels, config, truth=labels)
    assert len(dataset) == 1
    sample = dataset[0]
    assert (sample.volume, sample.z) == ("v", 2)
    assert sample.image.shape == (3, 16, 20) and sample.image.dtype == torch.float32
    # 2 mm spacing on 2 mm slices: slices 1, 2, 3 = -200, -100, 0 HU
    expected = window(np.array([-200.0, -100.0, 0.0]), -500, 500)
    assert torch.allclose(sample.image[:, 0, 0], torch.from_numpy(expected))
    assert sample.boxes.tolist() == [[1, 1, 5, 5], [8, 8, 12, 12]]
    assert sample.truth is not None and sample.truth.shape == (2, 4)


def test_a_foreground_only_slice_is_marked_on_its_sample(folder):
    config = load_config(None, ["data.num_slices=3"]).data
    write_csv(folder.root / "fg.csv", ["volume", "z", "x1", "y1", "x2", "y2", "key", "background"],
              [["v", 2, 1.0, 1.0, 5.0, 5.0, 1, 1], ["v", 4, 1.0, 1.0, 5.0, 5.0, 1, 0]])
    dataset = KeySliceDataset(VolumeStore(folder), folder.annotations("fg.csv"), config)
    assert {(s.z, s.background) for s in (dataset[0], dataset[1])} == {(2, True), (4, False)}
    assert KeySliceDataset(VolumeStore(folder), folder.annotations(), config)[0].background


def test_samples_are_resampled_to_the_configured_pixel_size_with_their_boxes(folder):
    config = load_config(None, ["data.num_slices=3", "data.pixel_spacing_mm=0.8"]).data
    sample = KeySliceDataset(VolumeStore(folder), folder.annotations(), config)[0]
    # 1 mm pixels -> 0.8 mm: 16 x 20 becomes 20 x 25 and every box grows by 1.25
    assert sample.image.shape == (3, 20, 25)
    assert sample.boxes.tolist() == [[1.25, 1.25, 6.25, 6.25], [10, 10, 15, 15]]
    assert np.allclose(sample.frame.to_native(sample.boxes.numpy()), [[1, 1, 5, 5], [8, 8, 12, 12]])


def test_a_box_outside_its_image_is_named_with_its_row(folder):
    write_csv(folder.root / "annotations.csv", ["volume", "z", "x1", "y1", "x2", "y2"],
              [["v", 2, 1.0, 1.0, 25.0, 5.0]])
    dataset = KeySliceDataset(VolumeStore(folder), folder.annotations(), load_config().data,
                              source="annotations.csv")
    with pytest.raises(DataError, match=r"annotations.csv, row 2: .* outside the image"):
        dataset[0]


def test_skip_mode_drops_a_box_outside_its_image_and_keeps_the_rest(folder):
    write_csv(folder.root / "annotations.csv", ["volume", "z", "x1", "y1", "x2", "y2"],
              [["v", 2, 1.0, 1.0, 25.0, 5.0], ["v", 2, 2.0, 2.0, 6.0, 6.0]])
    config = load_config(None, ["data.on_bad_input=skip", "data.pixel_spacing_mm=0"]).data
    dataset = KeySliceDataset(VolumeStore(folder), folder.annotations(), config, source="annotations.csv")
    assert dataset[0].boxes.tolist() == [[2, 2, 6, 6]]
    assert len(dataset.skipped) == 1 and "annotations.csv, row 2" in dataset.skipped[0]


def test_skip_mode_replaces_an_unreadable_volume_by_the_next_sample(folder):
    empty = Volume(np.zeros((3, 8, 8), dtype=np.int16), (1.0, 1.0, 2.0))
    write_volume(empty, folder.root / "volumes" / "w.nii.gz")
    write_csv(folder.root / "splits.csv", ["volume", "split"], [["v", "train"], ["w", "train"]])
    write_csv(folder.root / "annotations.csv", ["volume", "z", "x1", "y1", "x2", "y2"],
              [["w", 1, 1.0, 1.0, 4.0, 4.0], ["v", 2, 1.0, 1.0, 5.0, 5.0]])
    (folder.root / "volumes" / "w.nii.gz").write_bytes(b"broken")
    folder = DatasetFolder(folder.root)
    stop = load_config(None, ["data.pixel_spacing_mm=0"]).data
    with pytest.raises(ValueError, match=r"w.nii.gz: (cannot read image|truncated file)"):
        KeySliceDataset(VolumeStore(folder), folder.annotations(), stop)[0]
    skip = load_config(None, ["data.on_bad_input=skip", "data.pixel_spacing_mm=0"]).data
    dataset = KeySliceDataset(VolumeStore(folder), folder.annotations(), skip)
    assert dataset[0].volume == "v" and len(dataset.skipped) == 1


def test_skip_mode_leaves_bad_csv_rows_out_and_names_them(folder):
    write_csv(folder.root / "annotations.csv", ["volume", "z", "x1", "y1", "x2", "y2"], [
        ["v", 2, 1.0, 1.0, 5.0, 5.0], ["v", 2, 9.0, 1.0, 5.0, 5.0],
        ["v", "x", 1, 1, 2, 2], ["nope", 1, 1, 1, 2, 2],
    ])
    with pytest.raises(DataError, match=r"annotations.csv, row 3: box .* needs x1 < x2"):
        folder.annotations()
    skipped: list[str] = []
    table = folder.annotations(on_error="skip", skipped=skipped)
    assert len(table) == 1 and table.row.tolist() == [2]
    assert [m.split(": ")[0].rsplit(", ", 1)[1] for m in skipped] == ["row 3", "row 4", "row 5"]


def test_unlabeled_neighbours_join_the_key_slices_and_carry_the_boxes_labeled_nearby(folder):
    # key slice 2 (two boxes), a non-key box on slice 4; the volume has slices 0-5
    config = load_config(None, ["data.num_slices=3", "data.pixel_spacing_mm=0",
                                "data.unlabeled_neighbours=1"]).data
    dataset = KeySliceDataset(VolumeStore(folder), folder.annotations(), config)
    # the key slice twice (as often as its two neighbours together), then slices 1 and 3
    assert dataset.items == [("v", 2), ("v", 2), ("v", 1), ("v", 3)]
    assert dataset.key_items == 1  # the key slice once: what batches draw from before they join
    key, below, above = dataset[0], dataset[2], dataset[3]
    assert len(key.boxes) == 2 and len(key.nearby) == 0
    assert (below.z, len(below.boxes), below.nearby.tolist()) == (1, 0, [[1, 1, 5, 5], [8, 8, 12, 12]])
    # slice 3 is one slice from both the key slice and the non-key box on slice 4
    assert (above.z, len(above.boxes), len(above.nearby)) == (3, 0, 3)
    assert len(above.known) == 3


def test_a_neighbour_past_the_volume_end_becomes_its_last_slice(folder):
    write_csv(folder.root / "annotations.csv", ["volume", "z", "x1", "y1", "x2", "y2", "key"],
              [["v", 5, 1.0, 1.0, 5.0, 5.0, 1]])
    config = load_config(None, ["data.num_slices=3", "data.pixel_spacing_mm=0",
                                "data.unlabeled_neighbours=2"]).data
    dataset = KeySliceDataset(VolumeStore(folder), folder.annotations(), config)
    assert dataset.items[-2:] == [("v", 6), ("v", 7)]
    clamped = dataset[len(dataset) - 1]
    assert (clamped.z, len(clamped.boxes)) == (5, 1)  # slice 5 itself, with its label


def test_unlabeled_neighbours_must_not_be_negative():
    with pytest.raises(ValueError, match="data.unlabeled_neighbours = -1: must be >= 0"):
        load_config(None, ["data.unlabeled_neighbours=-1"])
    with pytest.raises(ValueError, match="data.unlabeled_neighbours_from = -5: must be >= 0"):
        load_config(None, ["data.unlabeled_neighbours_from=-5"])
