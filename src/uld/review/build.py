"""``uld review``: write the review folder of a prediction or of a run's mined lesions.

::

    REVIEW/
      index.html              the page (uld.review.page), self-contained
      manifest.json           the review id and every lesion with its boxes (what apply reads)
      images/<volume>/<n>/    context.png (the whole peak slice) and z<z>.png per slice shown

The review id is a hash of the kind and the lesions (keys, scores, boxes): building the same
review again gives the same id, so verdicts kept in the browser and exported files still fit;
a review of other lesions gets another id, and ``uld review apply`` refuses its verdicts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from uld.data.stack import REVIEW_WINDOW_HU
from uld.outdir import staged_folder
from uld.review.lesions import ReviewInput, ReviewLesion, open_review_input
from uld.review.page import page_html
from uld.review.render import crop_region, render_context, render_crop

REVIEW_FORMAT = "uld-review"
MANIFEST = "manifest.json"
PAGE = "index.html"


def review_id(kind: str, lesions: Sequence[ReviewLesion]) -> str:
    """16 hex digits identifying ``kind`` and the lesions (key, volume, score, boxes)."""
    canonical = json.dumps(
        [kind, [[L.key, L.volume, round(L.score, 6), [[round(v, 3) for v in b] for b in L.boxes]]
                for L in lesions]], separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def is_review_folder(path: Path) -> bool:
    """Whether ``path`` holds a review written by :func:`build_review` (which may be replaced)."""
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("format") == REVIEW_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def build_review(
    lesions: str | Path, data: str | Path | None, out: str | Path, scans: Sequence[str | Path] = (),
    neighbours: int = 3, min_score: float = 0.0, overwrite: bool = False, progress: bool = False,
) -> Path:
    """Write the review of ``lesions`` (a ``uld predict`` folder, a run folder with
    ``mined_lesions.json``, or that file) into ``out``; returns ``out/index.html``.

    ``data``: the dataset folder holding the volumes (default: the run's ``data.root``, or each
    prediction's source scan); ``scans``: scan files/folders, matched to volumes by name.
    ``neighbours``: slices rendered on either side of the peak. Lesions scoring below
    ``min_score`` are left out. ``out`` is written as a whole and swapped in at the end; an
    earlier review there is replaced, any other non-empty folder only with ``overwrite``.
    """
    if neighbours < 0:
        raise ValueError(f"neighbours must be >= 0, got {neighbours}")
    found = open_review_input(lesions, data, scans)
    items = sorted((L for L in found.lesions if L.score >= min_score), key=lambda L: (-L.score, L.key))
    out = Path(os.path.abspath(out))
    with staged_folder(out, overwrite, is_review_folder, "uld review") as stage:
        _write(found, items, stage, out, neighbours, progress)
    return out / PAGE


def _write(found: ReviewInput, items: list[ReviewLesion], stage: Path, out: Path, neighbours: int,
           progress: bool) -> None:
    rid = review_id(found.kind, items)
    by_volume: dict[str, list[ReviewLesion]] = {}
    for L in items:
        by_volume.setdefault(L.volume, []).append(L)
    page_lesions: dict[str, dict[str, Any]] = {}
    volumes: dict[str, Any] = {}
    bar = tqdm(sorted(by_volume), desc="review", unit="vol", disable=not progress)
    for name in bar:
        volume = found.read(name)
        depth, height, width = volume.shape
        sx, sy = float(volume.spacing_xyz[0]), float(volume.spacing_xyz[1])
        volumes[name] = {"shape": [depth, height, width], "spacing": [float(s) for s in volume.spacing_xyz]}
        for L in by_volume[name]:
            for z, x1, y1, x2, y2 in L.boxes:
                if not (0 <= z < depth and x2 <= width + 1e-6 and y2 <= height + 1e-6 and min(x1, y1) >= 0):
                    raise ValueError(f"{found.source}: lesion {L.key}: box {[x1, y1, x2, y2]} on slice "
                                     f"{z} lies outside volume {name!r} ({depth} slices of {width} x "
                                     f"{height})")
            region = crop_region(L.peak_box, (height, width))
            folder = stage / "images" / name / str(L.lesion)
            folder.mkdir(parents=True, exist_ok=True)
            on_slice = {z: (x1, y1, x2, y2) for z, x1, y1, x2, y2 in L.boxes}
            zmin, zmax = max(0, L.peak_slice - neighbours), min(depth - 1, L.peak_slice + neighbours)
            for z in range(zmin, zmax + 1):
                (folder / f"z{z}.png").write_bytes(
                    render_crop(volume.hu[z], region, on_slice.get(z), L.peak_box, REVIEW_WINDOW_HU))
            (folder / "context.png").write_bytes(render_context(volume.hu[L.peak_slice], L.peak_box, region))
            x1, y1, x2, y2 = L.peak_box
            page_lesions[L.key] = {
                "key": L.key, "volume": name, "score": round(L.score, 6), "z1": L.slice_range[0],
                "z2": L.slice_range[1], "peak": L.peak_slice, "zmin": zmin, "zmax": zmax,
                "size_mm": round(max((x2 - x1) * sx, (y2 - y1) * sy), 2), "dir": f"{name}/{L.lesion}",
            }
    data = {"review_id": rid, "review_dir": str(out), "kind": found.kind,
            "title": f"uld review: {len(items)} {found.kind.replace('_', ' ')} of {found.source.name}",
            "lesions": [page_lesions[L.key] for L in items]}
    (stage / PAGE).write_text(page_html(data), encoding="utf-8")
    manifest = {
        "format": REVIEW_FORMAT, "version": 1, "review_id": rid, "kind": found.kind,
        "source": str(found.source.resolve()),
        "data_root": str(found.data_root.resolve()) if found.data_root else None,
        "volumes": volumes,
        "lesions": [{"key": L.key, "volume": L.volume, "lesion": L.lesion, "score": round(L.score, 6),
                     "slice_range": list(L.slice_range), "peak_slice": L.peak_slice,
                     "peak_box": [round(v, 4) for v in L.peak_box],
                     "boxes": [[int(b[0]), *(round(v, 4) for v in b[1:])] for b in L.boxes]}
                    for L in items],
    }
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
