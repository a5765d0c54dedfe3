"""uld review and uld review apply without a browser (the page itself: test_browser.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from uld.cli import main
from uld.config import DataConfig
from uld.data.dataset import DatasetFolder
from uld.data.slice_boxes import SliceBox, write_slice_boxes
from uld.data.sources import open_training_data
from uld.data.synth import SynthConfig, write_synthetic_dataset
from uld.infer.export import lesions_from_tracklets, write_volume_outputs
from uld.review import apply_verdicts, build_review
from uld.review.page import page_html

TINY = [
    "model.small_channels=[8, 16]", "model.out_channels=16", "model.representation_size=32",
    "model.rpn_pre_nms_top_n_train=100", "model.rpn_post_nms_top_n_train=50",
    "model.rpn_pre_nms_top_n_test=50", "model.rpn_post_nms_top_n_test=20",
    "model.rpn_batch_size_per_image=32", "model.box_batch_size_per_image=32", "train.batch_size=2",
    "train.warmup_iterations=1", "train.iterations=2", "train.eval_every=2", "train.checkpoint_every=2",
    "mining.policy=none",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("review") / "data"
    write_synthetic_dataset(root, SynthConfig(n_train=3, n_val=1, n_test=1, n_negatives=0, size=64, seed=2),
                            progress=False)
    return root


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def mined_run(dataset: Path, run: Path, limit: int = 12) -> list[SliceBox]:
    """A run folder as training leaves it: config.yaml naming the data, and mined_lesions.json
    holding the train split's unlabeled boxes of the complete labels (what a perfect teacher mines)."""
    folder = DatasetFolder(dataset)
    full, labels = folder.annotations("annotations_full.csv"), folder.annotations()
    labelled = {(str(v), int(z), tuple(b)) for v, z, b in zip(labels.volume, labels.z, labels.boxes)}
    train = set(folder.volumes("train"))
    boxes = [SliceBox(str(v), int(z), tuple(float(x) for x in b), round(0.99 - 0.005 * i, 4))
             for i, (v, z, b) in enumerate(zip(full.volume, full.z, full.boxes))
             if str(v) in train and (str(v), int(z), tuple(b)) not in labelled][:limit]
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"data:\n  root: {dataset}\n  format: folder\n")
    write_slice_boxes(boxes, run / "MinedLesions.pkl", run / "mined_lesions.json", "mined_lesions")
    return boxes


def _accept_all(review: Path, path: Path, verdict: str = "accept") -> Path:
    manifest = json.loads((review / "manifest.json").read_text())
    doc = {"format": "uld-verdicts", "version": 1, "review_id": manifest["review_id"],
           "review_dir": str(review), "verdicts": {L["key"]: verdict for L in manifest["lesions"]}}
    path.write_text(json.dumps(doc))
    return path


def test_accept_all_adds_exactly_the_mined_boxes_and_trains(dataset, tmp_path, capsys):
    mined = mined_run(dataset, tmp_path / "run")
    assert len(mined) >= 5
    before = _digest(dataset)
    assert main(["review", "--lesions", str(tmp_path / "run"), "--out", str(tmp_path / "review"),
                 "--quiet", "--neighbours", "2"]) == 0  # volumes found through the run's config.yaml
    manifest = json.loads((tmp_path / "review" / "manifest.json").read_text())
    assert manifest["kind"] == "mined_lesions" and len(manifest["lesions"]) == len(mined)
    first = manifest["lesions"][0]
    assert (tmp_path / "review" / "images" / first["volume"] / str(first["key"].split("/")[1])
            / f"z{first['peak_slice']}.png").is_file()
    verdicts = _accept_all(tmp_path / "review", tmp_path / "verdicts.json")
    new = tmp_path / "new"
    assert main(["review", "apply", "--verdicts", str(verdicts), "--data", str(dataset),
                 "--out", str(new)]) == 0
    assert f"{len(mined)} accepted lesions" in capsys.readouterr().out
    assert _digest(dataset) == before  # the original is never written
    old, table = DatasetFolder(dataset).annotations(), DatasetFolder(new).annotations()
    added = table.extra["provenance"] != "label"
    assert int((~added).sum()) == len(old)
    got = sorted((str(v), int(z), tuple(b)) for v, z, b in
                 zip(table.volume[added], table.z[added], table.boxes[added].tolist()))
    assert got == sorted((b.volume, b.z, tuple(b.box)) for b in mined)
    assert table.key[added].all()
    assert all(p.startswith(f"review:{manifest['review_id']}:") for p in table.extra["provenance"][added])
    # the training reader takes the new column, and a run trains on the new labels
    data = open_training_data(DataConfig(root=str(new)))
    assert len(data.labels) == len(data.labels.volume) == int((np.isin(table.volume, DatasetFolder(new)
                                                                        .volumes("train"))).sum())
    overrides = [a for s in TINY for a in ("--set", s)]
    assert main(["train", "--config", "demo", "--data", str(new), "--out", str(tmp_path / "retrain"),
                 "--quiet", *overrides]) == 0
    assert (tmp_path / "retrain" / "model.pt").is_file()


def _predictions(dataset: Path, out: Path) -> dict[str, list]:
    """A uld predict folder with two lesions on the first test volume."""
    folder = DatasetFolder(dataset)
    name = folder.volumes("test")[0]
    volume = folder.read_volume(name)
    tracklets = [
        [(5, np.array([10.0, 12.0, 20.0, 22.0, 0.6])), (6, np.array([10.0, 11.0, 21.0, 23.0, 0.9])),
         (7, np.array([11.0, 12.0, 20.0, 21.0, 0.7]))],
        [(2, np.array([30.0, 30.0, 40.0, 44.0, 0.55]))],
    ]
    lesions = lesions_from_tracklets(tracklets, volume, 0.5, name=name)
    write_volume_outputs(name, volume, lesions, out, overlays=False, source=str(folder.volume_path(name)))
    return {name: tracklets}


def test_prediction_review_adds_each_slice_with_the_peak_as_key(dataset, tmp_path):
    (name, _tracklets), = _predictions(dataset, tmp_path / "pred").items()
    # no --data: each lesions.json names the dataset volume it was read from
    page = build_review(tmp_path / "pred", None, tmp_path / "review", neighbours=1)
    text = page.read_text()
    assert 'loading="lazy"' in text and "http://" not in text and "https://" not in text
    manifest = json.loads((tmp_path / "review" / "manifest.json").read_text())
    assert [L["key"] for L in manifest["lesions"]] == [f"{name}/1", f"{name}/2"]
    shown = sorted(p.name for p in (tmp_path / "review" / "images" / name / "1").iterdir())
    assert shown == ["context.png", "z5.png", "z6.png", "z7.png"]  # peak 6, one either side
    doc = {"format": "uld-verdicts", "version": 1, "review_id": manifest["review_id"],
           "verdicts": {f"{name}/1": "accept", f"{name}/2": "reject"}}
    (tmp_path / "v.json").write_text(json.dumps(doc))
    summary = apply_verdicts(tmp_path / "v.json", dataset, tmp_path / "new", review=tmp_path / "review")
    assert summary["rows_added"] == 3 and summary["accepted_lesions"] == 1
    table = DatasetFolder(tmp_path / "new").annotations()
    added = table.extra["provenance"] != "label"
    rows = sorted(zip(table.z[added].tolist(), table.boxes[added].tolist(), table.key[added].tolist()))
    assert rows == [(5, [10.0, 12.0, 20.0, 22.0], False), (6, [10.0, 11.0, 21.0, 23.0], True),
                    (7, [11.0, 12.0, 20.0, 21.0], False)]
    # building again gives the same review id (verdicts carry over); other lesions another
    again = build_review(tmp_path / "pred", dataset, tmp_path / "review")  # replaces its own review
    assert json.loads((again.parent / "manifest.json").read_text())["review_id"] == manifest["review_id"]
    other = build_review(tmp_path / "pred", dataset, tmp_path / "other", min_score=0.8)
    assert json.loads((other.parent / "manifest.json").read_text())["review_id"] != manifest["review_id"]


def test_accepted_boxes_keep_their_slices_foreground_only_or_not(dataset, tmp_path):
    import csv
    import shutil
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    (name, _tracklets), = _predictions(data, tmp_path / "pred").items()
    path = data / "annotations.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = [*rows[0], "background"]
    rows = [{**r, "background": "1"} for r in rows]
    rows.append({**rows[0], "volume": name, "z": "6", "key": "1", "background": "0"})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert DatasetFolder(data).annotations().foreground_only_slices() == {(name, 6)}
    manifest = json.loads(build_review(tmp_path / "pred", data, tmp_path / "review", neighbours=0)
                          .parent.joinpath("manifest.json").read_text())
    doc = {"format": "uld-verdicts", "version": 1, "review_id": manifest["review_id"],
           "verdicts": {f"{name}/1": "accept", f"{name}/2": "reject"}}
    (tmp_path / "v.json").write_text(json.dumps(doc))
    assert apply_verdicts(tmp_path / "v.json", data, tmp_path / "new",
                          review=tmp_path / "review")["rows_added"] == 3
    # slice 6 stays foreground-only with its accepted box; slices 5 and 7 train as labels do
    assert DatasetFolder(tmp_path / "new").annotations().foreground_only_slices() == {(name, 6)}


def test_bad_verdicts_are_one_line_naming_file_and_entry(dataset, tmp_path, capsys):
    _predictions(dataset, tmp_path / "pred")
    build_review(tmp_path / "pred", dataset, tmp_path / "review", neighbours=0)
    build_review(tmp_path / "pred", dataset, tmp_path / "other", neighbours=0, min_score=0.8)
    good = json.loads(_accept_all(tmp_path / "review", tmp_path / "good.json").read_text())
    key = next(iter(good["verdicts"]))

    def refused(doc: object, *, data: Path = dataset, raw: str | None = None) -> str:
        path = tmp_path / "bad.json"
        path.write_text(raw if raw is not None else json.dumps(doc))
        code = main(["review", "apply", "--verdicts", str(path), "--data", str(data),
                     "--out", str(tmp_path / "never")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and str(path) in err
        assert not (tmp_path / "never").exists()
        return err

    assert "not a readable JSON file" in refused(None, raw="{not json")
    assert "not a uld-verdicts file" in refused({"format": "other"})
    assert f"entry '{key}': verdict 'maybe'" in refused({**good, "verdicts": {key: "maybe"}})
    assert "is not a lesion of review" in refused({**good, "verdicts": {**good["verdicts"], "x/9": "accept"}})
    other = json.loads((tmp_path / "other" / "manifest.json").read_text())["review_id"]
    assert "from another review" in refused({**good, "review_id": other})
    # a dataset without the volume the accepted lesion is on
    smaller = tmp_path / "smaller"
    write_synthetic_dataset(smaller, SynthConfig(n_train=1, n_val=1, n_test=1, n_negatives=0, size=64,
                                                 seed=3),
                            progress=False)
    lines = (smaller / "splits.csv").read_text().splitlines()
    (smaller / "splits.csv").write_text("\n".join(lines[:2]) + "\n")
    assert f"entry '{key}': volume" in refused(good, data=smaller)


def test_review_folder_rules(dataset, tmp_path, capsys):
    _predictions(dataset, tmp_path / "pred")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["review", "--lesions", str(tmp_path / "pred"), "--out", str(busy), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err and (busy / "notes.txt").read_text() == "mine"
    assert main(["review", "--lesions", str(tmp_path), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "neither a uld predict folder" in capsys.readouterr().err


def test_page_data_cannot_close_its_script():
    text = page_html({"review_id": "x", "review_dir": "/r", "kind": "predictions", "title": "t",
                      "lesions": [{"key": "</script><b>", "volume": "v", "score": 0.5, "z1": 0, "z2": 0,
                                   "peak": 0, "zmin": 0, "zmax": 0, "size_mm": 1.0, "dir": "v/1"}]})
    assert "</script><b>" not in text and text.count("</script>") == 2
