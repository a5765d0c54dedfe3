"""Ground truth of the key-slice and the 3D (IOBB) protocols, and how volume names meet it.

Key-slice ground truth (:func:`read_keyslice_gt`)
-------------------------------------------------

The 2D layout of :mod:`uld.data.annotations`, ``GroundTruth = {volume: [(z, box), ...]}``:
every distinct ``(volume, z)`` that holds a box is one key-slice *image*; the boxes on it are
that image's lesions. Sources:

- ``RECIST-Box-Valid.pkl`` / ``RECIST-Box-Test.pkl`` (or any Lesion Harvester 2D pickle,
  keys with or without ``.annot``): read by :func:`uld.data.annotations.read_gt`. Every box of
  the RECIST files lies on a key slice; ``z`` is the offset in the sub-volume.
- a dataset folder (:class:`uld.data.dataset.DatasetFolder`, also one written by the
  synthetic generator): the rows of ``annotations.csv`` with ``key = 1`` (every row when the
  file has no ``key`` column) of the split's volumes. Non-key boxes on a key slice are not
  part of the image's ground truth (DeepLesion's key images carry only measured lesions);
  ``key_only=False`` keeps every box of a slice that holds a key box. Every volume of the
  split is a key, also one without boxes, so that its detections are known (and ignored).

3D ground truth (:func:`read_boxes3d_gt`)
-----------------------------------------

:class:`GroundTruth3D`: ``{volume: ndarray[n, 6]}`` rows ``[x1, y1, z1, x2, y2, z2]`` (the
manual 1K layout, which the IOBB reference reads), ``z1 <= z2`` inclusive slice numbers.
Sources:

- ``manual_1k/DeepLesion_manual_1K_test_release.pkl``: ``{"val": {...200}, "test": {...800}}``
  (pick one with ``split``), ``(n, 6)`` float arrays; 31 test sub-volumes are ``(0, 6)``.
  Its keys are sub-volume names ``<patient>_<study>_<series>_<first:03d>-<last:03d>`` and
  its ``z`` are ABSOLUTE slice numbers of the series (every box lies in
  ``[first, last]``): ``z_absolute = True``.
- ``lesion_harvester/3D-Box.pkl``: ``{name: [[x1, y1, x2, y2, z1, z2], ...]}``, z OFFSETS in
  the sub-volume; reordered to ``[x1, y1, z1, x2, y2, z2]``. The z are computed floats: 70
  of the 874 boxes have half-integer ends (both ends), 16 values lie about 1e-14 off an
  integer or half-integer, and nine boxes have ``z1 = -0.5`` (``z2 = 0.5``: a lesion on
  the first slice). All are kept exactly as stored; the IOBB arithmetic needs no integer
  ``z``.
- a dataset folder: ``lesions.csv`` when present (the synthetic generator's per-lesion table,
  columns ``volume, x1, y1, z1, x2, y2, z2``, ``z2`` EXCLUSIVE there, so ``z2 - 1`` is
  stored), otherwise an annotation file with a ``lesion`` column: each lesion's 3D box is the
  min / max of its 2D boxes and slices (``annotations_full.csv`` of the generator holds every
  slice of every lesion; ``annotations.csv`` only the key slice, which gives flat boxes).
  Other columns of ``lesions.csv`` (``diameter_mm``, ``organ``, ...) are kept, per box, in
  :attr:`GroundTruth3D.attributes`.

Volume names and slice numbers
------------------------------

``uld predict`` names each volume as the dataset does; for DeepLesion that is the sub-volume
``<folder>_<first:03d>-<last:03d>`` (:func:`uld.data.deeplesion.parse_subvolume_name`), and a
detection's ``z`` is the offset from ``first``. A detection volume is matched to the
ground-truth key of the same name, exactly; against ``z_absolute`` ground truth its slices
become ``first + z``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uld.data.annotations import EvalFormatError, GroundTruth, gt_from_folder, read_gt
from uld.data.dataset import DatasetFolder
from uld.messages import short_repr
from uld.safe_pickle import load_pickle

__all__ = [
    "MANUAL_1K_SPLITS",
    "GroundTruth3D",
    "keyslice_images",
    "read_boxes3d_gt",
    "read_keyslice_gt",
]

MANUAL_1K_SPLITS = ("val", "test")
_BOX3D_NAMES = ("x1", "y1", "z1", "x2", "y2", "z2")


@dataclass(frozen=True, eq=False)
class GroundTruth3D:
    """3D lesion boxes per volume.

    boxes (dict[str, ndarray[n, 6] float64]): ``x1, y1, z1, x2, y2, z2`` per lesion, ``z``
        inclusive; every volume of the set is a key, also one without boxes (``(0, 6)``).
    z_absolute (bool): ``z`` are absolute slice numbers of the series (the manual 1K set);
        detections' slice offsets are then shifted by the first slice of their volume name.
    attributes (dict[str, ndarray[P]]): optional per-box columns (e.g. ``diameter_mm``) in
        flat order (volumes in dict order, then rows).
    source (str): where it was read from (for messages).
    """

    boxes: dict[str, np.ndarray]
    z_absolute: bool = False
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "ground truth"

    def __post_init__(self) -> None:
        """Validate and convert: ``(n, 6)`` float64 rows, finite, ``x1 <= x2`` etc."""
        if not isinstance(self.boxes, Mapping):
            raise EvalFormatError(
                f"{self.source}: expected {{volume: (n, 6) boxes}}, got {type(self.boxes).__name__}"
            )
        clean: dict[str, np.ndarray] = {}
        for name, rows in self.boxes.items():
            _volume_key(name, self.source)
            arr = np.asarray(rows, dtype=np.float64) if _is_numeric(rows) else None
            ok = arr is not None and (arr.size == 0 or (arr.ndim == 2 and arr.shape[1] == 6))
            if ok and arr.size:
                ok = bool(np.isfinite(arr).all() and (arr[:, 3:] >= arr[:, :3]).all())
            clean[name] = (arr.reshape(-1, 6) if ok else  # type: ignore[union-attr]
                           _boxes3d(rows, self.source, name, (0, 1, 2, 3, 4, 5)))
        object.__setattr__(self, "boxes", clean)

    @property
    def volumes(self) -> tuple[str, ...]:
        return tuple(self.boxes)

    @property
    def npos(self) -> int:
        """Number of lesion boxes."""
        return sum(len(b) for b in self.boxes.values())

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """``(volume_index (P,) int64, boxes (P, 6) float64)`` in dict order, then row order."""
        counts = [len(b) for b in self.boxes.values()]
        index = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        rows = [b for b in self.boxes.values() if len(b)]
        boxes = np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 6))
        return index, boxes


def _is_numeric(rows: Any) -> bool:
    try:
        return np.asarray(rows).dtype.kind in ("i", "u", "f")
    except (TypeError, ValueError):
        return False


def _boxes3d(rows: Any, where: str, name: str, order: tuple[int, ...]) -> np.ndarray:
    """Validate one volume's rows and return them as ``(n, 6)`` ``[x1, y1, z1, x2, y2, z2]``."""
    try:
        arr = np.asarray(rows)
    except (TypeError, ValueError):
        arr = None
    if arr is not None and arr.size == 0:
        return np.zeros((0, 6), dtype=np.float64)
    if arr is None or arr.dtype.kind not in ("i", "u", "f") or arr.ndim != 2 or arr.shape[1] != 6:
        raise EvalFormatError(
            f"{where}: volume {name!r}: expected rows of 6 numbers, got {short_repr(rows)}"
        )
    arr = arr.astype(np.float64)[:, order]
    for r, row in enumerate(arr.tolist()):
        problem = None
        for key, value in zip(_BOX3D_NAMES, row):
            if not math.isfinite(value):
                problem = f"{key} = {value!r} is not finite"
                break
        for lo in range(3):
            if problem is None and row[lo + 3] < row[lo]:
                a, b = _BOX3D_NAMES[lo + 3], _BOX3D_NAMES[lo]
                problem = f"{a} = {row[lo + 3]!r} < {b} = {row[lo]!r}"
        if problem:
            raise EvalFormatError(f"{where}: volume {name!r}, box {r}: {problem}")
    return arr


def _volume_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not key:
        raise EvalFormatError(f"{where}: key {short_repr(key)} is not a volume name")
    return key


# ---------------------------------------------------------------------------------------------
# Key-slice ground truth
# ---------------------------------------------------------------------------------------------


def read_keyslice_gt(
    source: str | Path, split: str | None = None, key_only: bool = True
) -> GroundTruth:
    """Key-slice ground truth from a 2D annotation pickle or a dataset folder.

    source: ``RECIST-Box-Test.pkl`` and friends (``{"<volume>[.annot]": {z: [[x1, y1, x2,
        y2, z, z], ...]}}``), or a dataset folder (then ``split`` is required).
    key_only: for a dataset folder, keep only ``key = 1`` rows (see the module docstring).
    Returns ``{volume: [(z, ndarray[4] float64), ...]}``, boxes sorted by ``z`` (stable);
    each distinct ``(volume, z)`` is one image (:func:`keyslice_images`).
    """
    path = Path(source)
    if not path.is_dir():
        return read_gt(path, split)

    def on_key_slices(table: Any) -> np.ndarray:
        if key_only:
            return np.asarray(table.key, dtype=bool)
        key_slices = {(str(v), int(z)) for v, z, k in zip(table.volume, table.z, table.key) if k}
        return np.array([(str(v), int(z)) in key_slices for v, z in zip(table.volume, table.z)],
                        dtype=bool)

    return gt_from_folder(path, split, on_key_slices)


def keyslice_images(gt: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Distinct ``(volume, z)`` images of 2D ground truth, in order of first appearance."""
    seen: dict[tuple[str, int], None] = {}
    for name, items in gt.items():
        for z, _ in items:
            seen.setdefault((name, int(z)), None)
    return list(seen)


# ---------------------------------------------------------------------------------------------
# 3D ground truth
# ---------------------------------------------------------------------------------------------


def _is_manual_1k(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and set(obj) == set(MANUAL_1K_SPLITS)
            and all(isinstance(v, Mapping) for v in obj.values()))


def _from_pickle(path: Path, split: str | None) -> GroundTruth3D:
    obj = load_pickle(path)
    where = str(path)
    if _is_manual_1k(obj):
        if split not in MANUAL_1K_SPLITS:
            raise EvalFormatError(
                f"{where}: the manual 1K set has splits 'val' (200) and 'test' (800); "
                f"split = {split!r}"
            )
        volumes = obj[split]
        boxes = {
            _volume_key(k, where): _boxes3d(v, f"{where} [{split!r}]", k, (0, 1, 2, 3, 4, 5))
            for k, v in volumes.items()
        }
        return GroundTruth3D(boxes, z_absolute=True, source=f"{where} [{split}]")
    if not isinstance(obj, Mapping):
        raise EvalFormatError(
            f"{where}: expected {{volume: [[x1, y1, x2, y2, z1, z2], ...]}} or the manual 1K "
            f"{{'val': ..., 'test': ...}}, got {type(obj).__name__}"
        )
    if split is not None:
        raise EvalFormatError(f"{where}: split = {split!r} applies only to the manual 1K set")
    boxes = {}
    for k, v in obj.items():
        name = _volume_key(k, where)
        if isinstance(v, Mapping):
            raise EvalFormatError(
                f"{where}: volume {name!r} holds {{z: boxes}}: a 2D annotation file is not 3D "
                "ground truth"
            )
        boxes[name] = _boxes3d(v, where, name, (0, 1, 4, 2, 3, 5))  # x1 y1 x2 y2 z1 z2
    return GroundTruth3D(boxes, z_absolute=False, source=where)


def _read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise EvalFormatError(f"{path}: file not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _number(row: dict[str, str], column: str, where: str) -> float:
    text = row.get(column)
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise EvalFormatError(f"{where}: column {column} = {text!r} is not a finite number")
    return value


def _from_lesion_table(path: Path, header: list[str], rows: list[dict[str, str]],
                       names: list[str]) -> GroundTruth3D:
    """The generator's ``lesions.csv``: one 3D box per row, ``z2`` exclusive."""
    missing = [c for c in ("volume", *_BOX3D_NAMES) if c not in header]
    if missing:
        raise EvalFormatError(f"{path}: missing column(s) {', '.join(missing)} (header: {header})")
    wanted = set(names)
    per_volume: dict[str, list[list[float]]] = {name: [] for name in names}
    extra_cols = [c for c in header if c not in ("volume", *_BOX3D_NAMES)]
    per_volume_extra: dict[str, list[dict[str, str]]] = {name: [] for name in names}
    for r, row in enumerate(rows, start=2):
        name = (row.get("volume") or "").strip()
        if name not in wanted:
            continue
        where = f"{path}, row {r}"
        box = [_number(row, c, where) for c in _BOX3D_NAMES]
        if box[5] <= box[2] or box[5] != int(box[5]) or box[2] != int(box[2]):
            raise EvalFormatError(
                f"{where}: z1 = {row['z1']!r}, z2 = {row['z2']!r} is not a slice range "
                "(integers, z2 exclusive, z2 > z1)"
            )
        box[5] -= 1.0  # exclusive -> inclusive
        per_volume[name].append(box)
        per_volume_extra[name].append({c: row.get(c) or "" for c in extra_cols})
    boxes = {name: _boxes3d(per_volume[name], str(path), name, (0, 1, 2, 3, 4, 5))
             for name in names}
    flat_extra = [e for name in names for e in per_volume_extra[name]]
    attributes = {c: _column(c, [e[c] for e in flat_extra]) for c in extra_cols}
    return GroundTruth3D(boxes, z_absolute=False, attributes=attributes, source=str(path))


def _column(name: str, values: list[str]) -> np.ndarray:
    """Numbers as float64 when every value parses, else the strings."""
    try:
        return np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return np.array(values, dtype=object)


def _from_annotations(folder: Any, filename: str, names: list[str]) -> GroundTruth3D:
    """Each lesion's 3D box from its 2D boxes: rows grouped by ``(volume, lesion)``."""
    path = folder.root / filename
    table = folder.annotations(filename)
    if "lesion" not in table.extra:
        raise EvalFormatError(
            f"{path}: 3D boxes need a 'lesion' column naming each row's lesion (or a lesions.csv)"
        )
    wanted = set(names)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (v, lesion) in enumerate(zip(table.volume, table.extra["lesion"])):
        if str(v) in wanted:
            groups.setdefault((str(v), str(lesion).strip()), []).append(i)
    per_volume: dict[str, list[list[float]]] = {name: [] for name in names}
    lesion_ids: dict[str, list[str]] = {name: [] for name in names}
    for (name, lesion), idx in groups.items():
        b = table.boxes[idx]
        z = table.z[idx]
        per_volume[name].append([b[:, 0].min(), b[:, 1].min(), float(z.min()),
                                 b[:, 2].max(), b[:, 3].max(), float(z.max())])
        lesion_ids[name].append(lesion)
    boxes = {name: _boxes3d(per_volume[name], str(path), name, (0, 1, 2, 3, 4, 5))
             for name in names}
    attributes = {"lesion": _column("lesion", [x for name in names for x in lesion_ids[name]])}
    return GroundTruth3D(boxes, z_absolute=False, attributes=attributes, source=str(path))


def _from_folder(root: Path, split: str | None, filename: str | None) -> GroundTruth3D:
    if split is None:
        raise EvalFormatError(f"{root}: a dataset folder needs a split (train, val or test)")
    folder = DatasetFolder(root)
    names = folder.volumes(split)
    if filename is None:
        filename = "lesions.csv" if folder.has("lesions.csv") else "annotations.csv"
    path = root / filename
    header, rows = _read_table(path)
    if "z1" in header and "z2" in header:
        return _from_lesion_table(path, header, rows, names)
    return _from_annotations(folder, filename, names)


def read_boxes3d_gt(
    source: str | Path, split: str | None = None, filename: str | None = None
) -> GroundTruth3D:
    """3D ground truth from the manual 1K pickle, ``3D-Box.pkl`` or a dataset folder.

    source: a pickle (the manual 1K set needs ``split`` ``"val"`` or ``"test"``; ``3D-Box.pkl``
        takes none) or a dataset folder (``split`` required; ``filename`` picks the table,
        default ``lesions.csv`` when present, else ``annotations.csv``).
    Returns a :class:`GroundTruth3D` (see the module docstring for each layout). Raises
    :class:`EvalFormatError` naming the file, volume, box and value.
    """
    path = Path(source)
    if path.is_dir():
        return _from_folder(path, split, filename)
    if not path.is_file():
        raise EvalFormatError(f"{path}: ground-truth file or folder not found")
    if filename is not None:
        raise EvalFormatError(f"{path}: filename = {filename!r} applies only to a dataset folder")
    return _from_pickle(path, split)
