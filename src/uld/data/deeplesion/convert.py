"""A DeepLesion tree converted into the generic dataset format v1 (:func:`convert_deeplesion`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from uld.atomic import write_text
from uld.data.dataset import FORMAT_NAME, FORMAT_VERSION, write_csv
from uld.data.deeplesion.dl_info import OnError, check_on_error, read_dl_info, spacing_by_folder
from uld.data.deeplesion.images import DeepLesionImages
from uld.data.deeplesion.split import paper_split
from uld.data.subvolume import (
    DeepLesionError,
    parse_subvolume_name,
)
from uld.data.volume import write_volume
from uld.outdir import staged_folder

ANNOTATION_COLUMNS = ("volume", "z", "x1", "y1", "x2", "y2", "key")


def convert_deeplesion(
    root: str | Path,
    out: str | Path,
    harvester_dir: str | Path,
    on_error: OnError = "stop",
    progress: bool = True,
    dl_info_path: str | Path | None = None,
    negatives: Literal["list", "train", "omit"] = "list",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert DeepLesion (PNGs + DL_info) into the generic dataset format v1 at ``out``.

    Writes ``volumes/<sub-volume>.nii.gz`` (:func:`uld.data.volume.write_volume`),
    ``annotations.csv`` (``volume,z,x1,y1,x2,y2,key``: every box is a drawn 2D box, so
    ``key`` is 1), ``splits.csv`` (train / val / test of :func:`paper_split`) and, last,
    ``dataset.json``. Everything is written into a temporary sibling that replaces ``out``
    only once complete (:func:`uld.outdir.staged_folder`): a failed or interrupted conversion
    leaves ``out`` as it was. A non-empty ``out`` is replaced only if it is an unfinished
    conversion or ``overwrite`` is given; otherwise ``FileExistsError`` and nothing is touched.

    negatives: what to do with the 744 ``Revised-Train744`` sub-volumes:
        ``"list"`` (default): write their volumes as split ``negatives`` of ``splits.csv``
        with their full labels in ``annotations.csv`` (the hard-negative pool; no run trains
        on them unless asked to with ``data.hard_negatives``);
        ``"train"``: add them to the train split with their full labels;
        ``"omit"``: leave them out.
    dl_info_path: defaults to ``root/DL_info.csv``.
    Boxes are clipped to the image; a box left empty by clipping, a missing slice, an
    unreadable PNG or a folder without DL_info rows (no spacing) is an error that ``on_error``
    stops at or skips (the sub-volume or box is left out, the message kept in the summary).
    Returns the summary that ``dataset.json`` holds.
    """
    check_on_error(on_error)
    if negatives not in ("list", "train", "omit"):
        raise ValueError(f"negatives must be 'list', 'train' or 'omit', got {negatives!r}")
    root = Path(root)
    if not root.is_dir():
        raise DeepLesionError(f"{root}: DeepLesion root not found")
    with staged_folder(out, overwrite, _unfinished_conversion, "uld convert") as stage:
        return _convert(root, stage, harvester_dir, on_error, progress, dl_info_path, negatives)


def _unfinished_conversion(folder: Path) -> bool:
    """What an interrupted conversion of an older ``uld`` left: volumes and CSVs, no
    ``dataset.json``."""
    if (folder / "dataset.json").exists():
        return False
    allowed = {"volumes", "splits.csv", "annotations.csv"}
    return all(p.name in allowed or p.name.startswith(".") for p in folder.iterdir())


def _convert(root: Path, out: Path, harvester_dir: str | Path, on_error: OnError, progress: bool,
             dl_info_path: str | Path | None, negatives: str) -> dict[str, Any]:
    info = read_dl_info(dl_info_path or root / "DL_info.csv", drop_noisy=True, on_error=on_error)
    images = DeepLesionImages(root)
    split = paper_split(info, images, harvester_dir, on_error=on_error)
    spacing = spacing_by_folder(info)
    skipped = [*info.skipped, *split.skipped]

    jobs: list[tuple[str, str, list[tuple[int, np.ndarray]]]] = []
    for set_name in ("train", "val", "test"):
        jobs += [(set_name, v, b) for v, b in split.sets()[set_name].items()]
    if negatives != "omit":
        target = "train" if negatives == "train" else "negatives"
        jobs += [(target, v, b) for v, b in split.negatives.items()]

    splits: dict[str, str] = {}
    rows: list[tuple[Any, ...]] = []
    for set_name, name, boxes in tqdm(jobs, desc="DeepLesion -> dataset", unit="vol", disable=not progress):
        folder = parse_subvolume_name(name)[0]
        try:
            if folder not in spacing:
                raise DeepLesionError(f"{info.path}: no row of series {folder}, so no spacing for {name}")
            volume = images.read_subvolume(name, spacing[folder])
            depth, height, width = volume.shape
            table = []
            for z, box in boxes:
                x1, y1, x2, y2 = (float(v) for v in box)
                clipped = (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
                           min(x2, float(width)), min(y2, float(height)))
                if not (clipped[0] < clipped[2] and clipped[1] < clipped[3]) or not 0 <= z < depth:
                    raise DeepLesionError(
                        f"{name}: box {[x1, y1, x2, y2]} on z = {z} lies outside the {width}x{height}x"
                        f"{depth} volume")
                table.append((name, int(z), *clipped, 1))
        except DeepLesionError as exc:
            if on_error == "stop":
                raise
            skipped.append(str(exc))
            continue
        write_volume(volume, out / "volumes" / f"{name}.nii.gz")
        splits[name] = set_name
        rows += table

    write_csv(out / "splits.csv", ("volume", "split"), splits.items())
    write_csv(out / "annotations.csv", ANNOTATION_COLUMNS, rows)
    summary = {
        "volumes": {s: sum(1 for v in splits.values() if v == s) for s in ("train", "val", "test")},
        "boxes": {s: sum(1 for r in rows if splits[r[0]] == s) for s in ("train", "val", "test")},
        "negatives": {"mode": negatives,
                      "volumes": sum(1 for v in splits.values() if v == "negatives"),
                      "boxes": sum(1 for r in rows if splits[r[0]] == "negatives")},
        "dropped_noisy": info.dropped_noisy,
        "removed_from_train": len(split.removed_from_train),
        "skipped": skipped,
    }
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "source": "DeepLesion",
        "split": "Bai & Xia 2023: train = official training key slices minus Lesion Harvester's fully "
                 "annotated sub-volumes; val = Revised-Train100; test = Revised-Test1071",
        "boxes": "0-based pixels (DL_info and Lesion Harvester values - 1), z = slice - first slice",
        "summary": summary,
    }
    write_text(out / "dataset.json", json.dumps(document, indent=2) + "\n")
    return summary
