"""What a review shows: the lesions of a ``uld predict`` folder or a training run's mined lesions,
and where their volumes are read from.

Two inputs, one item type (:class:`ReviewLesion`):

- a ``uld predict`` output folder: every ``<volume>.lesions.json`` (:mod:`uld.infer.export`),
  one item per 3D lesion with its 2D box on each slice it crosses;
- a training run folder holding ``mined_lesions.json`` (or that file itself,
  :mod:`uld.data.slice_boxes`): one item per mined box, a lesion on one slice.

Volumes come from, in this order: a dataset folder (``--data``, the generic format, or the
run's ``data.root`` from its ``config.yaml``), scans named on the command line (matched by
:func:`uld.data.sources.scan_name`), or the scan each ``lesions.json`` names as its ``source``.
Boxes are ``(z, x1, y1, x2, y2)``: slice index and 0-based pixels of that slice, x = column.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from uld.data.dataset import DatasetFolder
from uld.data.slice_boxes import FORMAT_NAME as SLICE_BOXES_FORMAT
from uld.data.slice_boxes import read_scored_slice_boxes
from uld.data.sources import scan_name
from uld.data.volume import Volume, read_scan, read_volume
from uld.outdir import leaves_folder

MINED_JSON = "mined_lesions.json"
"""The run's mined-lesion file (``uld.mining.export.MINED_JSON``; named here so that reading a
review imports no torch)."""
LESIONS_SUFFIX = ".lesions.json"


@dataclass(frozen=True)
class ReviewLesion:
    """One card of the review.

    key: ``"<volume>/<n>"``, unique in the review (the verdicts file's key); n is the lesion's id
        in a prediction, or the mined box's 1-based rank in its volume (slice, then score).
    boxes: ``((z, x1, y1, x2, y2), ...)`` sorted by z; pixels, x = column, y = row.
    peak_slice, peak_box: the slice and box shown first (the highest-scoring box).
    """

    key: str
    volume: str
    lesion: int
    score: float
    slice_range: tuple[int, int]
    peak_slice: int
    peak_box: tuple[float, float, float, float]
    boxes: tuple[tuple[int, float, float, float, float], ...]


@dataclass(frozen=True)
class ReviewInput:
    """The lesions to review and how to read each volume.

    kind: ``"predictions"`` or ``"mined_lesions"``. source: the folder or file they came from.
    read: volume name -> :class:`Volume`. data_root: the dataset folder, when there is one.
    """

    kind: str
    source: Path
    lesions: list[ReviewLesion]
    read: Callable[[str], Volume]
    data_root: Path | None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({' '.join(str(exc).split())})") from None


def _name(name: Any, where: str) -> str:
    if not isinstance(name, str) or leaves_folder(name):
        raise ValueError(f"{where}: volume name {name!r} cannot name files")
    return name


def _prediction_lesions(path: Path) -> tuple[str, str | None, list[ReviewLesion]]:
    doc = _json(path)
    if not isinstance(doc, dict) or doc.get("format") != "uld-lesions":
        raise ValueError(f"{path}: not a uld-lesions file (written by uld predict)")
    volume = _name(doc.get("volume"), str(path))
    out = []
    for i, entry in enumerate(doc.get("lesions") or []):
        try:
            lesion_id = int(entry["id"])
            boxes = tuple(sorted((int(b[0]), *(float(v) for v in b[1:5])) for b in entry["boxes"]))
            best = max(entry["boxes"], key=lambda b: float(b[5]))
            peak = (float(best[1]), float(best[2]), float(best[3]), float(best[4]))
            lesion = ReviewLesion(
                key=f"{volume}/{lesion_id}", volume=volume, lesion=lesion_id, score=float(entry["score"]),
                slice_range=(int(entry["slice_range"][0]), int(entry["slice_range"][1])),
                peak_slice=int(entry["peak_slice"]), peak_box=peak, boxes=boxes)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: lesion entry {i} is malformed "
                             f"({exc.__class__.__name__}: {exc})") from None
        if not boxes:
            raise ValueError(f"{path}: lesion entry {i} has no boxes")
        out.append(lesion)
    source = doc.get("source")
    return volume, source if isinstance(source, str) else None, out


def mined_review_lesions(path: Path) -> list[ReviewLesion]:
    """One :class:`ReviewLesion` per box of a ``mined_lesions.json`` (any ``uld-slice-boxes``
    file); in a volume, numbered 1, 2, ... by slice, then score (highest first)."""
    by_volume: dict[str, list] = {}
    for b in read_scored_slice_boxes(path):
        by_volume.setdefault(_name(b.volume, str(path)), []).append(b)
    out = []
    for volume in sorted(by_volume):
        for n, b in enumerate(sorted(by_volume[volume], key=lambda b: (b.z, -b.score, b.box)), start=1):
            out.append(ReviewLesion(
                key=f"{volume}/{n}", volume=volume, lesion=n, score=float(b.score), slice_range=(b.z, b.z),
                peak_slice=b.z, peak_box=tuple(float(v) for v in b.box), boxes=((b.z, *b.box),)))
    return out


def _run_data_root(run: Path) -> Path | None:
    """``data.root`` of a run's ``config.yaml`` (generic folders only), if any."""
    path = run / "config.yaml"
    if not path.is_file():
        return None
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    data = values.get("data", {}) if isinstance(values, dict) else {}
    if not isinstance(data, dict) or not data.get("root"):
        return None
    if data.get("format", "folder") != "folder":
        raise ValueError(f"{path}: data.format {data.get('format')!r}: a review reads generic dataset "
                         "folders; convert it (uld convert) and pass --data DIR")
    return Path(str(data["root"]))


def open_review_input(
    lesions: str | Path, data: str | Path | None = None, scans: Sequence[str | Path] = (),
) -> ReviewInput:
    """Find what ``lesions`` (a predict folder, a run folder or a ``mined_lesions.json``) holds
    and how to read its volumes (module docstring). Errors are one line naming the path."""
    lesions = Path(lesions)
    if not lesions.exists():
        raise FileNotFoundError(f"{lesions}: no such file or folder")
    sources: dict[str, str] = {}
    if lesions.is_file():
        doc = _json(lesions)
        if not (isinstance(doc, dict) and doc.get("format") == SLICE_BOXES_FORMAT):
            raise ValueError(f"{lesions}: not a mined-lesion file ({SLICE_BOXES_FORMAT})")
        kind, items, run = "mined_lesions", mined_review_lesions(lesions), lesions.parent
    elif (lesions / MINED_JSON).is_file():
        kind, items, run = "mined_lesions", mined_review_lesions(lesions / MINED_JSON), lesions
    else:
        files = sorted(lesions.glob(f"*{LESIONS_SUFFIX}"))
        if not files:
            raise ValueError(f"{lesions}: neither a uld predict folder (no *{LESIONS_SUFFIX}) nor a run "
                             f"folder with {MINED_JSON}")
        kind, items, run = "predictions", [], None
        for path in files:
            volume, source, found = _prediction_lesions(path)
            if volume in sources:
                raise ValueError(f"{path}: volume {volume!r} is listed by two lesions files")
            sources[volume] = source or ""
            items.extend(found)
    root = Path(data) if data else (_run_data_root(run) if run is not None else None)
    return ReviewInput(kind, lesions, items, _volume_reader(root, scans, sources), root)


def _volume_reader(root: Path | None, scans: Sequence[str | Path],
                   sources: dict[str, str]) -> Callable[[str], Volume]:
    folder = DatasetFolder(root) if root is not None else None
    by_name = {scan_name(Path(s)): Path(s) for s in scans}

    def read(name: str) -> Volume:
        if folder is not None:
            if name not in folder.splits:
                raise ValueError(f"{folder.root}/splits.csv: no volume {name!r} (a lesion to review "
                                 "is on it)")
            return folder.read_volume(name)
        if name in by_name:
            return read_scan(by_name[name])
        origin = sources.get(name)
        if not origin:
            raise ValueError(f"volume {name!r}: no scan to read it from; pass --data DIR or the scan")
        path = Path(origin)
        if path.parent.name == "volumes" and (path.parent.parent / "splits.csv").is_file():
            return read_volume(path)  # a dataset volume, read as uld predict --data read it
        return read_scan(path)

    return read
