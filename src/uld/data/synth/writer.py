"""A synthetic dataset on disk in the generic format v1 (:func:`write_synthetic_dataset`), and
the summary of its lesions and labels (:func:`summarize`, :func:`format_summary`)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from uld.atomic import write_text
from uld.data.dataset import FORMAT_NAME, FORMAT_VERSION, SPLITS, write_csv
from uld.data.synth.config import SIZE_BANDS, Lesion, SynthConfig, size_band, split_of, volume_name
from uld.data.synth.labels import largest_first_labels, matched_random_labels, sparsity_file, sparsity_labels
from uld.data.synth.phantom import generate_volume
from uld.data.volume import write_volume
from uld.outdir import staged_folder


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summarize(lesions: Sequence[Lesion], splits: Mapping[str, str],
              config: SynthConfig | None = None) -> dict[str, Any]:
    """Counts and missing-label shares of a generated dataset (what ``dataset.json`` holds).

    ``lesions``: every lesion of every volume; ``splits``: ``{volume: split}``. On a training
    slice (the key slice of a labeled train lesion) a lesion is visible when it has a 2D box
    there and unlabeled when ``annotations.csv`` has no box of it there (only labeled lesions'
    key slices carry boxes).
    """
    per_split: dict[str, dict[str, int]] = {
        s: {"volumes": 0, "lesions": 0, "labeled": 0} for s in SPLITS}
    for split in splits.values():
        per_split[split]["volumes"] += 1
    by_volume: dict[str, list[Lesion]] = {}
    by_kind: dict[str, dict[str, int]] = {}
    by_organ: dict[str, dict[str, int]] = {}
    band_train = {b: {"lesions": 0, "unlabeled": 0} for b in SIZE_BANDS}
    for les in lesions:
        split = splits[les.volume]
        per_split[split]["lesions"] += 1
        per_split[split]["labeled"] += int(les.labeled)
        by_volume.setdefault(les.volume, []).append(les)
        for table, key in ((by_kind, f"{les.organ}/{les.kind}"), (by_organ, les.organ)):
            row = table.setdefault(key, {"lesions": 0, "train": 0, "train_labeled": 0})
            row["lesions"] += 1
            row["train"] += int(split == "train")
            row["train_labeled"] += int(split == "train" and les.labeled)
        if split == "train":
            band_train[size_band(les.diameter_mm)]["lesions"] += 1
            band_train[size_band(les.diameter_mm)]["unlabeled"] += int(not les.labeled)
    visible = {b: {"visible": 0, "unlabeled": 0} for b in SIZE_BANDS}
    n_slices = 0
    for name, group in by_volume.items():
        if splits[name] != "train":
            continue
        for z in sorted({les.key_z for les in group if les.labeled}):
            n_slices += 1
            for les in group:
                if z in les.z:
                    row = visible[size_band(les.diameter_mm)]
                    row["visible"] += 1
                    row["unlabeled"] += int(not (les.labeled and les.key_z == z))
    for table, key in ((band_train, "lesions"), (visible, "visible")):
        total = {key: sum(r[key] for r in table.values()),
                 "unlabeled": sum(r["unlabeled"] for r in table.values())}
        table["all"] = total
        for row in table.values():
            row["unlabeled_share"] = _share(row["unlabeled"], row[key])
    train = per_split["train"]
    diameters = np.array([les.diameter_mm for les in lesions]) if lesions else np.zeros(1)
    return {
        "missing": config.missing if config is not None else None,
        "splits": per_split,
        "train_unlabeled_share": _share(train["lesions"] - train["labeled"], train["lesions"]),
        "train_lesions_by_size": band_train,
        "training_slices": n_slices,
        "training_slice_visible_by_size": visible,
        "diameter_mm": {"min": round(float(diameters.min()), 2),
                        "median": round(float(np.median(diameters)), 2),
                        "max": round(float(diameters.max()), 2)},
        "by_organ": dict(sorted(by_organ.items())),
        "by_kind": dict(sorted(by_kind.items())),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """A readable multi-line rendering of :func:`summarize`'s result."""

    def pct(value: float | None) -> str:
        return "   -" if value is None else f"{100 * value:5.1f}%"

    lines = [f"missing labels: {summary.get('missing')}"]
    lines.append(f"{'split':<6} {'volumes':>8} {'lesions':>8} {'labeled':>8}")
    for split, row in summary["splits"].items():
        lines.append(f"{split:<6} {row['volumes']:>8} {row['lesions']:>8} {row['labeled']:>8}")
    lines.append(f"train lesions left unlabeled: {pct(summary['train_unlabeled_share'])}")
    lines.append(f"training slices (key slices of labeled train lesions): "
                 f"{summary['training_slices']}")
    lines.append(f"{'size band':<10} {'train lesions':>14} {'unlabeled':>10}   "
                 f"{'visible on training slices':>27} {'unlabeled':>10}")
    lesions, visible = summary["train_lesions_by_size"], summary["training_slice_visible_by_size"]
    for band in (*SIZE_BANDS, "all"):
        a, b = lesions[band], visible[band]
        lines.append(f"{band:<10} {a['lesions']:>14} {pct(a['unlabeled_share']):>10}   "
                     f"{b['visible']:>27} {pct(b['unlabeled_share']):>10}")
    d = summary["diameter_mm"]
    lines.append(f"diameter mm: min {d['min']}, median {d['median']}, max {d['max']}")
    lines.append(f"{'organ/kind':<30} {'lesions':>8} {'train':>6} {'labeled':>8}")
    for key, row in summary["by_kind"].items():
        lines.append(f"{key:<30} {row['lesions']:>8} {row['train']:>6} {row['train_labeled']:>8}")
    return "\n".join(lines)


_VOLUME_FILE = re.compile(r"^synth_\d{5}\.nii\.gz$")
ANNOTATION_COLUMNS = ("volume", "z", "x1", "y1", "x2", "y2", "key", "lesion")
LESION_COLUMNS = ("volume", "lesion", "organ", "kind", "diameter_mm", "key_z",
                  "x1", "y1", "z1", "x2", "y2", "z2", "labeled")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_synthetic_dataset(out_dir: str | Path, config: SynthConfig | None = None,
                            progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Generate every volume of ``config`` into ``out_dir`` (generic dataset format v1).

    Writes ``volumes/<name>.nii.gz``, ``splits.csv``, ``annotations.csv`` (what a user has: the
    key-slice boxes of labeled lesions), ``annotations_full.csv`` (every lesion on every slice,
    ``key`` on its key slice), ``annotations_random.csv`` (the same number of train labels as
    ``annotations.csv``, dropped at random: the control for the missingness model),
    ``annotations_largest.csv`` (RECIST-style selection, largest first, with the config's
    limits: the other control), one ``annotations_unlabeledNN.csv`` per sparsity level,
    ``lesions.csv`` (per-lesion truth) and, last, ``dataset.json``;
    Everything is written into a temporary sibling that replaces ``out_dir`` only once complete
    (:func:`uld.outdir.staged_folder`): a failed or interrupted run leaves ``out_dir`` as it was.
    A non-empty ``out_dir`` is replaced only if it is an unfinished synthetic dataset or
    ``overwrite`` is given; otherwise ``FileExistsError`` and nothing is touched.
    Returns the summary.
    """
    config = SynthConfig() if config is None else config
    with staged_folder(out_dir, overwrite, _unfinished_synth, "uld synth") as out:
        return _write_dataset(out, config, progress)


def _unfinished_synth(folder: Path) -> bool:
    """``folder`` holds only what this writer writes, without the ``dataset.json`` that marks
    a finished dataset (what an interrupted run of an older ``uld`` left)."""
    if (folder / "dataset.json").exists():
        return False
    for path in folder.iterdir():
        if path.name == "volumes" and path.is_dir():
            if not all(_VOLUME_FILE.match(p.name) or p.name.startswith(".") for p in path.iterdir()):
                return False
        elif not re.match(r"^(splits|lesions|annotations\w*)\.csv$|^\.", path.name):
            return False
    return True


def _write_dataset(out: Path, config: SynthConfig, progress: bool) -> dict[str, Any]:
    volumes_dir = out / "volumes"
    volumes_dir.mkdir(exist_ok=True)
    splits: dict[str, str] = {}
    all_lesions: list[Lesion] = []
    for index in tqdm(range(config.n_volumes), desc="synthetic CT", unit="vol",
                      disable=not progress):
        volume, lesions = generate_volume(config, index)
        name = volume_name(index)
        write_volume(volume, volumes_dir / f"{name}.nii.gz")
        splits[name] = split_of(config, index)
        all_lesions.extend(lesions)
    write_csv(out / "splits.csv", ("volume", "split"), splits.items())
    partial, full, table, matched = [], [], [], []
    keep_random = matched_random_labels(all_lesions, splits, config.seed)
    keep_largest = largest_first_labels(all_lesions, splits, config)
    largest = []
    for les, kept, big in zip(all_lesions, keep_random, keep_largest):
        key_row = (les.volume, les.key_z, *les.key_box_xyxy, 1, les.index)
        if les.labeled:
            partial.append(key_row)
        if kept:
            matched.append(key_row)
        if big:
            largest.append(key_row)
        for z, box in zip(les.z, les.boxes_xyxy):
            full.append((les.volume, z, *box, int(z == les.key_z), les.index))
        table.append((les.volume, les.index, les.organ, les.kind, les.diameter_mm, les.key_z,
                      *les.box3d, int(les.labeled)))
    write_csv(out / "annotations.csv", ANNOTATION_COLUMNS, partial)
    write_csv(out / "annotations_full.csv", ANNOTATION_COLUMNS, full)
    write_csv(out / "annotations_random.csv", ANNOTATION_COLUMNS, matched)
    write_csv(out / "annotations_largest.csv", ANNOTATION_COLUMNS, largest)
    write_csv(out / "lesions.csv", LESION_COLUMNS, table)
    for level in config.sparsity_levels:
        kept = sparsity_labels(all_lesions, splits, level, config.seed)
        write_csv(out / sparsity_file(level), ANNOTATION_COLUMNS,
                  [(les.volume, les.key_z, *les.key_box_xyxy, 1, les.index)
                   for les, k in zip(all_lesions, kept) if k])
    for path in volumes_dir.iterdir():
        if _VOLUME_FILE.match(path.name) and path.name[: -len(".nii.gz")] not in splits:
            path.unlink()
    summary = summarize(all_lesions, splits, config)
    _write_json(out / "dataset.json", {
        "format": FORMAT_NAME, "version": FORMAT_VERSION,
        "generator": dataclasses.asdict(config), "summary": summary,
    })
    return summary
