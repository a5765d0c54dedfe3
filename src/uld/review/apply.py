"""``uld review apply``: the accepted lesions of a review, added to a copy of the dataset.

The new folder holds everything of the original (volumes hard-linked where the file system
allows, else copied; every other file copied) and an ``annotations.csv`` with, after the
original rows, one row per box of each accepted lesion:

- a mined lesion: its box on its slice, ``key = 1`` (it lies on a training key slice);
- a predicted lesion: its box on every slice it crosses, ``key = 1`` on its peak slice only;
- column ``provenance``: the original rows keep theirs (``label`` when the file had none), the
  added rows read ``review:<review id>:<lesion key>``.

``dataset.json`` records the review. The original folder is never written. Rejected and unsure
lesions add nothing. Errors are one line naming the file and the entry: a malformed verdicts
file, one from another review, a lesion the review does not hold, a volume the dataset lacks.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from uld.data.dataset import DatasetFolder, read_annotations
from uld.outdir import UNFINISHED, staged_folder
from uld.review.build import MANIFEST, REVIEW_FORMAT
from uld.review.page import VERDICTS, VERDICTS_FORMAT

PROVENANCE = "provenance"
ORIGINAL_PROVENANCE = "label"


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({' '.join(str(exc).split())})") from None


def read_verdicts(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """A ``verdicts.json`` exported by the review page -> ``(document, {lesion key: verdict})``.
    Raises a one-line ``ValueError`` naming the file and the entry when it is malformed."""
    path = Path(path)
    doc = _json(path, "verdicts file")
    if not isinstance(doc, dict) or doc.get("format") != VERDICTS_FORMAT:
        raise ValueError(f"{path}: not a {VERDICTS_FORMAT} file (export it with the review page's "
                         "Export button)")
    if doc.get("version") != 1:
        raise ValueError(f"{path}: version {doc.get('version')!r} is not 1")
    if not isinstance(doc.get("review_id"), str) or not doc["review_id"]:
        raise ValueError(f"{path}: 'review_id' must be the review's id, got {doc.get('review_id')!r}")
    verdicts = doc.get("verdicts")
    if not isinstance(verdicts, dict):
        raise ValueError(f"{path}: 'verdicts' must map lesion keys to {', '.join(VERDICTS)}")
    for key, verdict in verdicts.items():
        if verdict not in VERDICTS:
            raise ValueError(f"{path}: entry {key!r}: verdict {verdict!r} is not one of "
                             f"{', '.join(VERDICTS)}")
    return doc, dict(verdicts)


def read_manifest(review: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of a review folder (:mod:`uld.review.build`)."""
    path = Path(review) / MANIFEST
    doc = _json(path, "review manifest")
    if (not isinstance(doc, dict) or doc.get("format") != REVIEW_FORMAT
            or not isinstance(doc.get("lesions"), list)):
        raise ValueError(f"{path}: not a review manifest (written by uld review)")
    return doc


def accepted_rows(verdicts_path: str | Path, folder: DatasetFolder, review: str | Path | None = None,
                  ) -> tuple[str, list[tuple[str, int, list[float], bool, str]]]:
    """Check a verdicts file against its review and the dataset; return the review id and the
    rows to add: ``(volume, z, [x1, y1, x2, y2], key, provenance)``, in the review's order."""
    verdicts_path = Path(verdicts_path)
    doc, verdicts = read_verdicts(verdicts_path)
    if review is None:
        if not isinstance(doc.get("review_dir"), str):
            raise ValueError(f"{verdicts_path}: names no review folder ('review_dir'); pass --review DIR")
        review = doc["review_dir"]
    manifest = read_manifest(review)
    rid = manifest["review_id"]
    if doc["review_id"] != rid:
        raise ValueError(f"{verdicts_path}: review id {doc['review_id']!r} is from another review; "
                         f"{Path(review) / MANIFEST} is review {rid!r} (export the verdicts from its page)")
    lesions = {entry["key"]: entry for entry in manifest["lesions"]}
    for key in verdicts:
        if key not in lesions:
            raise ValueError(f"{verdicts_path}: entry {key!r} is not a lesion of review {rid} ({review})")
    kind = manifest.get("kind")
    rows = []
    for key, entry in lesions.items():
        if verdicts.get(key) != "accept":
            continue
        volume = entry["volume"]
        if volume not in folder.splits:
            raise ValueError(f"{verdicts_path}: entry {key!r}: volume {volume!r} is not in "
                             f"{folder.root / 'splits.csv'}")
        for z, x1, y1, x2, y2 in entry["boxes"]:
            key_slice = kind == "mined_lesions" or int(z) == int(entry["peak_slice"])
            rows.append((volume, int(z), [float(x1), float(y1), float(x2), float(y2)], key_slice,
                         f"review:{rid}:{key}"))
    return rid, rows


def _copy_dataset(src: Path, dst: Path) -> None:
    """Everything of ``src`` into ``dst``: files under ``volumes/`` hard-linked (copied where links
    fail), the rest copied. ``annotations.csv`` is written afterwards by the caller."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if rel.name == UNFINISHED:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.parts[0] == "volumes":
            try:
                os.link(path, target)
                continue
            except OSError:
                pass
        shutil.copy2(path, target)


def _annotations_text(original: Path, added: list[tuple[str, int, list[float], bool, str]]) -> str:
    table = read_annotations(original)  # validated first: a bad original row stops here, naming it
    foreground_only = table.foreground_only_slices()  # an added box keeps its slice's kind
    with original.open(newline="", encoding="utf-8") as handle:
        header = list(csv.DictReader(handle).fieldnames or [])
    had_key = "key" in header
    columns = list(header) + ([] if had_key else ["key"]) + ([] if PROVENANCE in header else [PROVENANCE])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    with original.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if not had_key:
                row["key"] = "1"
            if not row.get(PROVENANCE):
                row[PROVENANCE] = ORIGINAL_PROVENANCE
            writer.writerow([row.get(c, "") for c in columns])
    for volume, z, box, key, provenance in added:
        values = {"volume": volume, "z": str(z), "x1": repr(box[0]), "y1": repr(box[1]), "x2": repr(box[2]),
                  "y2": repr(box[3]), "key": "1" if key else "0", PROVENANCE: provenance,
                  "background": "0" if (volume, z) in foreground_only else "1"}
        writer.writerow([values.get(c, "") for c in columns])
    return buffer.getvalue()


def apply_verdicts(verdicts: str | Path, data: str | Path, out: str | Path, review: str | Path | None = None,
                   overwrite: bool = False) -> dict[str, Any]:
    """Write ``out``: the dataset ``data`` with the accepted lesions of ``verdicts`` added to its
    ``annotations.csv`` (module docstring). ``review``: the review folder (default: the one the
    verdicts file names). Returns ``{"out", "review_id", "accepted_lesions", "rows_added"}``."""
    folder = DatasetFolder(data)
    rid, rows = accepted_rows(verdicts, folder, review)
    original = folder.root / "annotations.csv"
    if not original.is_file():
        raise FileNotFoundError(f"{original}: annotation file not found")
    if Path(os.path.abspath(out)) == Path(os.path.abspath(folder.root)):
        raise ValueError(f"{out}: --out must be a new folder, not the dataset itself (it is never edited)")
    text = _annotations_text(original, rows)
    with staged_folder(out, overwrite, lambda p: False, "uld review apply") as stage:
        _copy_dataset(folder.root, stage)
        (stage / "annotations.csv").write_text(text, encoding="utf-8")
        info = folder.info() if isinstance(folder.info(), dict) else {}
        info.setdefault("format", "uld-dataset")
        info.setdefault("version", 1)
        info["review"] = {"review_id": rid, "verdicts": str(Path(verdicts).resolve()),
                          "derived_from": str(folder.root.resolve()), "rows_added": len(rows),
                          "accepted_lesions": len({r[4] for r in rows})}
        (stage / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {"out": str(out), "review_id": rid, "accepted_lesions": len({r[4] for r in rows}),
            "rows_added": len(rows)}
