"""Hard negatives: which detections qualify, their files, and retraining with them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from uld.config import load_config
from uld.data.samples import KeySliceDataset
from uld.data.slice_boxes import SliceBox, read_slice_boxes, write_slice_boxes
from uld.data.sources import open_training_data
from uld.data.synth import SynthConfig, write_synthetic_dataset
from uld.infer.link import SliceDetections
from uld.mining.negatives import NegativeRule, hard_negatives
from uld.safe_pickle import load_pickle


def _det(z, boxes, scores):
    return SliceDetections(z=z, boxes=np.asarray(boxes, dtype=float).reshape(-1, 4),
                           scores=np.asarray(scores, dtype=float))


def test_hand_built_volume_keeps_confident_detections_that_touch_no_lesion():
    truth = [(5, np.array([10.0, 10.0, 30.0, 30.0]))]
    detections = [
        _det(5, [[11, 11, 30, 31], [60, 60, 80, 80]], [0.95, 0.9]),  # on the lesion; a hard negative
        _det(6, [[12, 10, 31, 29]], [0.8]),         # the lesion one slice off its drawn box
        _det(9, [[12, 10, 31, 29]], [0.7]),         # same place, 4 slices away: no lesion there
        _det(5, [[40, 40, 50, 50]], [0.3]),         # not confident
        _det(2, [[0, 0, 9, 9], [1, 1, 8, 8], [90, 90, 99, 99]], [0.6, 0.55, 0.52]),
    ]
    found = hard_negatives("v", detections, truth, NegativeRule(min_score=0.5, match_iou=0.3,
                                                                z_margin=2, per_volume=10))
    assert [(b.z, b.box, b.score) for b in found] == [
        (5, (60.0, 60.0, 80.0, 80.0), 0.9), (9, (12.0, 10.0, 31.0, 29.0), 0.7),
        (2, (0.0, 0.0, 9.0, 9.0), 0.6), (2, (1.0, 1.0, 8.0, 8.0), 0.55),
        (2, (90.0, 90.0, 99.0, 99.0), 0.52),
    ]
    top = hard_negatives("v", detections, truth, NegativeRule(per_volume=2))
    assert [b.score for b in top] == [0.9, 0.7]
    assert hard_negatives("v", detections, [], NegativeRule(per_volume=1))[0].score == 0.95


def test_files_hold_the_harvester_layout_and_json_reads_back(tmp_path):
    boxes = [SliceBox("a", 3, (1.0, 2.0, 5.0, 6.0), 0.9), SliceBox("a", 3, (7.0, 7.0, 9.0, 9.0), 0.95),
             SliceBox("b", 0, (0.0, 0.0, 4.0, 4.0), 0.5)]
    pkl, js = write_slice_boxes(boxes, tmp_path / "H.pkl", tmp_path / "h.json", "hard_negatives",
                                {"min_score": 0.5}, one_based=True, volumes=["a", "b", "c"])
    layout = load_pickle(pkl)
    assert layout == {"a": {3: [[8.0, 8.0, 10.0, 10.0, 3.0, 3.0], [2.0, 3.0, 6.0, 7.0, 3.0, 3.0]]},
                      "b": {0: [[1.0, 1.0, 5.0, 5.0, 0.0, 0.0]]}, "c": {}}
    back = read_slice_boxes(js)
    np.testing.assert_array_equal(back[("a", 3)], [[7, 7, 9, 9], [1, 2, 5, 6]])
    assert json.loads(js.read_text())["volumes"]["c"] == []
    bad = tmp_path / "bad.json"
    doc = json.loads(js.read_text())
    doc["volumes"]["a"][0]["box"] = [5, 5, 1, 1]
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="bad.json: volume 'a' entry 0: bad box"):
        read_slice_boxes(bad)


def test_retraining_data_adds_the_pool_with_full_labels_and_forced_negatives(tmp_path):
    root = tmp_path / "d"
    write_synthetic_dataset(root, SynthConfig(n_train=3, n_val=1, n_test=1, n_negatives=2, size=64,
                                              depth=(10, 12), seed=4), progress=False)
    plain = open_training_data(load_config("demo", [f"data.root={root}"]).data)
    pool = sorted(plain.negatives)
    assert len(pool) == 2 and not plain.complete
    assert not set(pool) & {str(v) for v in plain.labels.volume}
    hard = [SliceBox(pool[0], 4, (10.0, 10.0, 20.0, 22.0), 0.9)]
    write_slice_boxes(hard, tmp_path / "H.pkl", tmp_path / "h.json", "hard_negatives")
    config = load_config("demo", [f"data.root={root}", f"data.hard_negatives={tmp_path / 'h.json'}"])
    data = open_training_data(config.data)
    assert data.complete == set(pool)
    assert len(data.labels) == len(plain.labels) + len(plain.negative_labels)
    dataset = KeySliceDataset(data.store, data.labels, config.data, hard_negatives=data.hard_negatives,
                              complete=data.complete)
    assert (pool[0], 4) in dataset.items
    sample = dataset[dataset.items.index((pool[0], 4))]
    assert sample.complete and torch.equal(sample.hard_negatives, torch.tensor([[10.0, 10.0, 20.0, 22.0]]))
    train_sample = dataset[0]
    assert not train_sample.complete and train_sample.hard_negatives.shape == (0, 4)

    stray = [SliceBox("synth_00000", 1, (1.0, 1.0, 5.0, 5.0), 0.9)]
    write_slice_boxes(stray, tmp_path / "S.pkl", tmp_path / "s.json", "hard_negatives")
    config = load_config("demo", [f"data.root={root}", f"data.hard_negatives={tmp_path / 's.json'}"])
    with pytest.raises(ValueError, match="'synth_00000' is not a 'negatives' volume"):
        open_training_data(config.data)


class _Source:
    """A fully annotated volume that is never read (the output check comes first)."""

    name = "v"

    def load(self):  # pragma: no cover - reaching it means the check came too late
        raise AssertionError("the output folder must be checked before any volume is read")


def test_output_folder_is_checked_first_and_replaced_only_when_it_is_an_earlier_output(tmp_path):
    from uld.mining.negatives import HARD_NEGATIVES_JSON, mine_negatives

    config = load_config("demo")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="other: folder is not empty"):
        mine_negatives(torch.nn.Identity(), config, [_Source()], {"v": []}, other)
    assert (other / "notes.txt").read_text() == "keep me"

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / HARD_NEGATIVES_JSON).write_text("{}")
    summary = mine_negatives(torch.nn.Identity(), config, [], {}, earlier)  # no volumes: no boxes
    assert summary["hard_negatives"] == 0
    assert json.loads((earlier / HARD_NEGATIVES_JSON).read_text())["volumes"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier", "other"]  # no stage left
