"""Mined lesions and hard negatives on disk: Lesion Harvester's 2D layout plus JSON.

Both are sets of scored 2D boxes on slices. Each is written twice, atomically:

- a pickle in the layout of Lesion Harvester's 2D annotation files (``MinedLesions.pkl``,
  ``HardNegatives.pkl``): ``{"<volume>": {z: [[x1, y1, x2, y2, z, z], ...]}}``, z the slice
  index (the offset in a DeepLesion sub-volume) and coordinates 1-based for DeepLesion data (as
  DL_info and every Lesion Harvester file), 0-based otherwise;
- JSON with the scores: ``{"format": "uld-slice-boxes", "version": 1, "kind": ...,
  "pixel_origin": 0, "meta": {...}, "volumes": {"<volume>": [{"z": z, "box": [x1, y1, x2,
  y2], "score": s}, ...]}}``, always 0-based native pixels; this is the file ``uld`` reads back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uld.atomic import write_text
from uld.safe_pickle import dump_pickle

FORMAT_NAME = "uld-slice-boxes"


@dataclass(frozen=True)
class SliceBox:
    """One scored box: volume name, slice index, x1, y1, x2, y2 (0-based native pixels)."""

    volume: str
    z: int
    box: tuple[float, float, float, float]
    score: float


def harvester_layout(boxes: Iterable[SliceBox], one_based: bool) -> dict[str, dict[int, list]]:
    """``{volume: {z: [[x1, y1, x2, y2, z, z], ...]}}`` sorted by volume and slice."""
    shift = 1.0 if one_based else 0.0
    out: dict[str, dict[int, list]] = {}
    for b in sorted(boxes, key=lambda b: (b.volume, b.z, -b.score)):
        row = [float(v) + shift for v in b.box] + [float(b.z), float(b.z)]
        out.setdefault(b.volume, {}).setdefault(int(b.z), []).append(row)
    return out


def write_slice_boxes(
    boxes: Iterable[SliceBox],
    pickle_path: str | Path,
    json_path: str | Path,
    kind: str,
    meta: Mapping[str, Any] | None = None,
    one_based: bool = False,
    volumes: Iterable[str] = (),
) -> tuple[Path, Path]:
    """Write ``boxes`` as the Harvester-layout pickle and as JSON (module docstring).

    ``volumes``: names listed even when they hold no box (the set that was searched).
    """
    boxes = list(boxes)
    by_volume: dict[str, list[dict[str, Any]]] = {str(v): [] for v in volumes}
    for b in sorted(boxes, key=lambda b: (b.volume, b.z, -b.score)):
        by_volume.setdefault(b.volume, []).append(
            {"z": int(b.z), "box": [round(float(v), 3) for v in b.box], "score": round(b.score, 5)}
        )
    doc = {"format": FORMAT_NAME, "version": 1, "kind": kind, "pixel_origin": 0,
           "meta": dict(meta or {}), "volumes": dict(sorted(by_volume.items()))}
    layout = {name: {} for name in doc["volumes"]}
    layout.update(harvester_layout(boxes, one_based))
    return dump_pickle(layout, pickle_path), write_text(json_path, json.dumps(doc, indent=1) + "\n")


def read_slice_boxes(path: str | Path) -> dict[tuple[str, int], np.ndarray]:
    """``{(volume, z): ndarray[N, 4]}`` (0-based native pixels) from a JSON file written by
    :func:`write_slice_boxes`. Errors name the file and the entry."""
    out: dict[tuple[str, int], list] = {}
    for b in read_scored_slice_boxes(path):
        out.setdefault((b.volume, b.z), []).append(list(b.box))
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in out.items()}


def read_scored_slice_boxes(path: str | Path) -> list[SliceBox]:
    """Every box of a :func:`write_slice_boxes` JSON file with its score, in file order
    (0-based native pixels; a missing score reads as 1.0). Errors name the file and the entry."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not a {FORMAT_NAME!r} file (written by uld mine-negatives or "
                         "a training run)")
    volumes = doc.get("volumes", {})
    if not isinstance(volumes, dict):
        raise ValueError(f"{path}: 'volumes' must map volume names to lists of boxes")
    out: list[SliceBox] = []
    for name, entries in volumes.items():
        if not isinstance(entries, list):
            raise ValueError(f"{path}: volume {name!r}: expected a list of boxes, "
                             f"got {type(entries).__name__}")
        for i, entry in enumerate(entries):
            try:
                z, box = int(entry["z"]), [float(v) for v in entry["box"]]
                score = float(entry.get("score", 1.0))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"{path}: volume {name!r} entry {i}: bad box ({exc})") from exc
            if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
                raise ValueError(f"{path}: volume {name!r} entry {i}: bad box {box}")
            if not (np.all(np.isfinite(box)) and np.isfinite(score)) or z < 0:
                raise ValueError(f"{path}: volume {name!r} entry {i}: slice {z}, box {box}, score "
                                 f"{score} must be finite (slice >= 0)")
            out.append(SliceBox(str(name), z, (box[0], box[1], box[2], box[3]), score))
    return out
