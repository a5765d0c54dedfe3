"""The paper's DeepLesion path on a written mini tree whose names are real annotation entries:
the real DL_info excerpt, a few series folders of 16-bit PNGs, Lesion Harvester pickles
holding the real entries of those sub-volumes -> train -> predict -> evaluate -> convert."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uld.cli import main
from uld.data.dataset import DatasetFolder
from uld.safe_pickle import load_pickle

SHARED = Path(__file__).resolve().parents[2] / "shared" / "deeplesion"
EXCERPT = SHARED / "DL_info_excerpt.csv"
LH = SHARED / "lesion_harvester"

TRAIN = ["000089_01_01_031-043", "000089_02_01_029-041", "000089_02_01_044-056"]
VAL, TEST, NEGATIVE = "000093_01_01_052-067", "000097_01_01_110-122", "000094_07_01_044-074"

SMALL = [
    "model.backbone=small", "model.pretrained=", "model.small_channels=[8, 16]",
    "model.out_channels=16", "model.representation_size=32", "model.rpn_pre_nms_top_n_train=100",
    "model.rpn_post_nms_top_n_train=50", "model.rpn_pre_nms_top_n_test=50",
    "model.rpn_post_nms_top_n_test=20", "model.rpn_batch_size_per_image=32",
    "model.box_batch_size_per_image=32", "model.box_score_thresh=0.0",
    "data.pixel_spacing_mm=3.2", "train.iterations=2", "train.eval_every=2",
    "train.checkpoint_every=2", "train.warmup_iterations=1", "train.log_every=1",
]


def _slices(name: str) -> dict[int, np.ndarray]:
    """A body ellipse with a brighter disc that moves along z (flat areas: fast PNG writing)."""
    first, last = (int(v) for v in name.rsplit("_", 1)[1].split("-"))
    yy, xx = np.mgrid[:512, :512]
    body = ((yy - 256) / 200.0) ** 2 + ((xx - 256) / 240.0) ** 2 < 1
    out = {}
    for n in range(first, last + 1):
        disc = (yy - 200 - 2 * (n - first)) ** 2 + (xx - 300) ** 2 < 15**2
        out[n] = np.where(disc, 120, np.where(body, 40, -1000)).astype(np.int16)
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    from conftest import DeepLesionTree

    root = tmp_path_factory.mktemp("DeepLesion")
    names = [*TRAIN, VAL, TEST, NEGATIVE]
    series: dict[str, dict[int, np.ndarray]] = {}
    for name in names:
        series.setdefault(name.rsplit("_", 1)[0], {}).update(_slices(name))
    maker = DeepLesionTree()
    maker(root, series)
    (root / "DL_info.csv").write_bytes(EXCERPT.read_bytes())  # the real rows, all 158
    # Lesion Harvester's files, holding only (and exactly) the real entries of our sub-volumes
    (root / "lesion_harvester").mkdir()
    for filename, name in [("Revised-Train100.pkl", VAL), ("Revised-Test1071.pkl", TEST),
                           ("Revised-Train744.pkl", NEGATIVE)]:
        real = load_pickle(LH / filename)
        key = name + ".annot"
        assert key in real, f"{name} is not a real entry of {filename}"
        import pickle

        (root / "lesion_harvester" / filename).write_bytes(pickle.dumps({key: real[key]}))
    return root


def test_missing_imagenet_weights_stop_the_paper_config_with_where_to_put_them(tree, tmp_path, capsys,
                                                                                monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code = main(["train", "--config", "deeplesion", "--out", str(tmp_path / "run"), "--quiet",
                 "--set", f"data.root={tree}", "--set", "data.on_bad_input=skip"])
    assert code == 2
    err = capsys.readouterr().err
    assert "densenet121-a639ec97.pth not found" in err and "put the file there" in err


def test_a_missing_series_folder_stops_the_run_naming_the_row(tree, tmp_path, capsys):
    code = main(["train", "--config", "deeplesion", "--out", str(tmp_path / "run"), "--quiet",
                 "--set", f"data.root={tree}", *[a for s in SMALL for a in ("--set", s)]])
    assert code == 2
    assert "DL_info.csv, row" in capsys.readouterr().err


def test_train_predict_evaluate_convert_on_the_paper_split(tree, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "deeplesion", "--out", str(run), "--quiet",
                 "--set", f"data.root={tree}", "--set", "data.on_bad_input=skip",
                 *[a for s in SMALL for a in ("--set", s)]]) == 0
    summary = json.loads((run / "summary.json").read_text())
    # the key slices of our three training sub-volumes (one lesion each in the excerpt)
    assert summary["training_samples"] == 3
    # every other training row of the excerpt names a series folder we did not write
    skipped = (run / "skipped.txt").read_text().splitlines()
    assert summary["skipped_inputs"]["count"] == len(skipped) > 0
    assert all("not found" in m for m in skipped) and summary["skipped_inputs"]["first"] == skipped[:20]
    assert (run / "best.pt").is_file()   # the teacher was validated on the Revised-Train100 entry
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val/ap" in m for m in metrics)

    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(run), "--deeplesion", str(tree), "--paper-set", "test",
                 "--volume", VAL, "--out", str(pred), "--quiet", "--no-overlays"]) == 0
    detections = json.loads((pred / "detections.json").read_text())["volumes"]
    assert set(detections) == {TEST, VAL}
    assert (pred / f"{TEST}.lesions.json").is_file()

    # hard negatives on Revised-Train744's sub-volume, then a retraining with them (P-)
    neg = tmp_path / "neg"
    assert main(["mine-negatives", "--model", str(run), "--deeplesion", str(tree), "--out", str(neg),
                 "--min-score", "0.0", "--quiet"]) == 0
    doc = json.loads((neg / "hard_negatives.json").read_text())
    assert list(doc["volumes"]) == [NEGATIVE] and len(doc["volumes"][NEGATIVE]) <= 10
    layout = load_pickle(neg / "HardNegatives.pkl")
    for entry in doc["volumes"][NEGATIVE]:  # the pickle is 1-based, as every Lesion Harvester file
        rows = np.asarray(layout[NEGATIVE][entry["z"]])
        assert np.isclose(rows[:, :4], np.asarray(entry["box"]) + 1.0, atol=1e-3).all(axis=1).any()
    retrain = tmp_path / "retrain"
    assert main(["train", "--config", "deeplesion", "--out", str(retrain), "--quiet",
                 "--set", f"data.root={tree}", "--set", "data.on_bad_input=skip",
                 "--set", f"data.hard_negatives={neg / 'hard_negatives.json'}",
                 *[a for s in SMALL for a in ("--set", s)]]) == 0
    # the fully annotated sub-volume joins: its lesion slices and its hard-negative slices
    assert json.loads((retrain / "summary.json").read_text())["training_samples"] > 3

    out = tmp_path / "p3d.json"
    assert main(["evaluate", "--gt", str(tree / "lesion_harvester" / "Revised-Test1071.pkl"),
                 "--detections", str(pred), "--json", str(out)]) == 2  # the VAL volume is not in it
    assert VAL in capsys.readouterr().err
    assert main(["evaluate", "--gt", str(tree / "lesion_harvester" / "Revised-Test1071.pkl"),
                 "--detections", str(pred), "--json", str(out), "--only-gt-volumes"]) == 0
    figures = json.loads(out.read_text())
    assert figures["dropped_volumes"] == 1 and figures["n_volumes"] == 1 and figures["pixel_shift"] == 1.0

    dataset = tmp_path / "converted"
    assert main(["convert", "deeplesion", "--root", str(tree), "--out", str(dataset), "--quiet",
                 "--on-bad-input", "skip"]) == 0
    folder = DatasetFolder(dataset)
    assert sorted(folder.volumes("train")) == sorted(TRAIN)
    assert folder.volumes("val") == [VAL] and folder.volumes("test") == [TEST]
    assert folder.read_volume(VAL).shape == (16, 512, 512)
    assert folder.volumes("negatives") == [NEGATIVE]
