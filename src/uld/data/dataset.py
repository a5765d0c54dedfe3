"""The generic dataset format, version 1.

::

    DATASET/
      volumes/<volume>.nii.gz   CT in HU with spacing, origin and direction
      annotations.csv           volume,z,x1,y1,x2,y2[,more columns]
      splits.csv                volume,split   (split: train | val | test | negatives)
      dataset.json              optional: {"format": "uld-dataset", "version": 1, ...}

A row of ``annotations.csv`` is one 2D box on axial slice ``z``; ``z``, ``y`` and ``x`` index
the array that SimpleITK's ``GetArrayFromImage`` returns (``[z, y, x]``, 0-based; x = column,
y = row). Boxes are float pixels ``x1 < x2``, ``y1 < y2``. An optional ``key`` column (0/1)
marks the slices a lesion was measured on; training samples are drawn at key slices, and a
file without the column treats every row as key. An optional ``background`` column (0/1,
default 1) says whether the rest of the row's slice is known to be background: a training slice
whose rows all say 0 trains its boxes as foreground only, with no background loss there (for
slices added by a partial harvest, whose other lesions are unknown). Val and test volumes are
taken as fully annotated; train volumes may be partially annotated. ``negatives`` volumes are fully annotated
training volumes kept apart: the pool that ``uld mine-negatives`` searches for hard negatives,
and that a hard-negative retraining (``data.hard_negatives``) adds to the training set.

Every reader validates what it reads and raises :class:`DataError` naming file, row and value.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from uld.atomic import write_text
from uld.messages import decode_error, plain
from uld.outdir import check_finished, leaves_folder

if TYPE_CHECKING:
    from uld.data.volume import Volume

SPLITS = ("train", "val", "test", "negatives")
REQUIRED_COLUMNS = ("volume", "z", "x1", "y1", "x2", "y2")
FORMAT_NAME = "uld-dataset"
FORMAT_VERSION = 1


class DataError(ValueError):
    """Bad input data; the message names the file, row and value."""


def check_volume_name(name: str, where: str) -> str:
    """A volume name is a plain file stem (:func:`uld.outdir.leaves_folder`)."""
    if leaves_folder(name):
        raise DataError(f"{where}: volume name {name!r} is not a plain name inside the dataset")
    return name


@dataclass(frozen=True)
class Annotations:
    """A table of 2D boxes.

    volume (ndarray[N], object): volume names.
    z (ndarray[N], int64): slice index.
    boxes (ndarray[N, 4], float64): x1, y1, x2, y2 in pixels.
    key (ndarray[N], bool): the box lies on a key (measured) slice.
    extra (dict[str, ndarray[N], object]): any further columns, as strings.
    row (ndarray[N], int64 | None): the row of the file each box came from (header = row 1).
    """

    volume: np.ndarray
    z: np.ndarray
    boxes: np.ndarray
    key: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    row: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.z)

    def by_slice(self) -> dict[tuple[str, int], np.ndarray]:
        """``{(volume, z): (n, 4) boxes}`` for every annotated slice."""
        groups: dict[tuple[str, int], list[int]] = {}
        for i, (v, z) in enumerate(zip(self.volume, self.z)):
            groups.setdefault((str(v), int(z)), []).append(i)
        return {k: self.boxes[idx] for k, idx in groups.items()}

    def foreground_only_slices(self) -> set[tuple[str, int]]:
        """``(volume, z)`` whose rows all say ``background`` = 0 (none without the column)."""
        column = self.extra.get("background")
        if column is None:
            return set()
        known = {(str(v), int(z)) for v, z, b in zip(self.volume, self.z, column) if b.strip() != "0"}
        return {(str(v), int(z)) for v, z in zip(self.volume, self.z)} - known

    def key_slices(self) -> list[tuple[str, int]]:
        """Distinct ``(volume, z)`` holding at least one key box, in file order."""
        seen: dict[tuple[str, int], None] = {}
        for v, z, k in zip(self.volume, self.z, self.key):
            if k:
                seen.setdefault((str(v), int(z)), None)
        return list(seen)

    def select(self, mask: np.ndarray) -> Annotations:
        """Rows where ``mask`` is true."""
        return Annotations(
            self.volume[mask], self.z[mask], self.boxes[mask], self.key[mask],
            {k: v[mask] for k, v in self.extra.items()},
            None if self.row is None else self.row[mask],
        )

    def concat(self, other: Annotations) -> Annotations:
        """This table's rows, then ``other``'s (extra columns both have are kept)."""
        shared = sorted(set(self.extra) & set(other.extra))
        rows = None if self.row is None or other.row is None else np.concatenate([self.row, other.row])
        return Annotations(
            np.concatenate([self.volume, other.volume]), np.concatenate([self.z, other.z]),
            np.concatenate([self.boxes.reshape(-1, 4), other.boxes.reshape(-1, 4)]),
            np.concatenate([self.key, other.key]),
            {k: np.concatenate([self.extra[k], other.extra[k]]) for k in shared}, rows,
        )

    def for_volumes(self, names: Iterable[str]) -> Annotations:
        """Rows of the named volumes."""
        wanted = set(names)
        return self.select(np.array([str(v) in wanted for v in self.volume], dtype=bool))


def _float(value: str, path: Path, row: int, column: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise DataError(f"{path}, row {row}: column {column} = {value!r} is not a number") from None
    if not np.isfinite(out):
        raise DataError(f"{path}, row {row}: column {column} = {value!r} is not finite")
    return out


def _parse_row(row: dict, header: list[str], path: Path, number: int) -> tuple[str, int, list[float], bool]:
    if None in row or any(row.get(c) is None for c in header):
        raise DataError(f"{path}, row {number}: expected {len(header)} fields")
    volume = check_volume_name(row["volume"].strip(), f"{path}, row {number}")
    z = _float(row["z"], path, number, "z")
    if z != int(z) or z < 0:
        raise DataError(f"{path}, row {number}: z = {row['z']!r} is not a slice index")
    box = [_float(row[c], path, number, c) for c in ("x1", "y1", "x2", "y2")]
    if not (box[0] < box[2] and box[1] < box[3]):
        raise DataError(f"{path}, row {number}: box {box} needs x1 < x2 and y1 < y2")
    if min(box) < 0:
        raise DataError(f"{path}, row {number}: box {box} has a negative coordinate")
    key = True
    if "key" in header:
        if row["key"].strip() not in ("0", "1"):
            raise DataError(f"{path}, row {number}: key = {row['key']!r} is not 0 or 1")
        key = row["key"].strip() == "1"
    if "background" in header and row["background"].strip() not in ("0", "1"):
        raise DataError(f"{path}, row {number}: background = {row['background']!r} is not 0 or 1")
    return volume, int(z), box, key


@contextmanager
def _text(path: Path) -> Iterator[TextIO]:
    """A CSV file opened as UTF-8 text; a file that is not UTF-8 is a :class:`DataError`
    naming it (the codec's own message names no file)."""
    with path.open(newline="", encoding="utf-8") as handle:
        try:
            yield handle
        except UnicodeDecodeError as exc:
            raise DataError(decode_error(path, exc)) from None


def read_annotations(
    path: str | Path, on_error: str = "stop", skipped: list[str] | None = None
) -> Annotations:
    """Read and validate an ``annotations.csv``. Row numbers count the header as row 1.

    A bad row raises :class:`DataError`; with ``on_error="skip"`` it is left out and its
    message appended to ``skipped``. A missing file or column always raises.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    with _text(path) as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header: {header})")
        others = [c for c in header if c not in REQUIRED_COLUMNS and c != "key"]
        volumes, zs, boxes, keys, numbers = [], [], [], [], []
        extra: dict[str, list[str]] = {c: [] for c in others}
        for number, row in enumerate(reader, start=2):
            try:
                volume, z, box, key = _parse_row(row, header, path, number)
            except DataError as exc:
                if on_error != "skip":
                    raise
                if skipped is not None:
                    skipped.append(str(exc))
                continue
            volumes.append(volume)
            zs.append(z)
            boxes.append(box)
            keys.append(key)
            numbers.append(number)
            for c in others:
                extra[c].append(row[c])
    return Annotations(
        volume=np.array(volumes, dtype=object),
        z=np.array(zs, dtype=np.int64),
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        key=np.array(keys, dtype=bool),
        extra={c: np.array(v, dtype=object) for c, v in extra.items()},
        row=np.array(numbers, dtype=np.int64),
    )


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a CSV atomically (no half-written file on failure)."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    write_text(path, buffer.getvalue())


def read_splits(path: str | Path) -> dict[str, str]:
    """``{volume: split}`` from a ``splits.csv``; validates names, splits and duplicates."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    out: dict[str, str] = {}
    with _text(path) as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"volume", "split"} <= set(reader.fieldnames):
            raise DataError(f"{path}: needs columns volume,split (header: {reader.fieldnames})")
        for row_number, row in enumerate(reader, start=2):
            name = check_volume_name((row["volume"] or "").strip(), f"{path}, row {row_number}")
            split = (row["split"] or "").strip()
            if split not in SPLITS:
                raise DataError(f"{path}, row {row_number}: split {split!r} is not one of {SPLITS}")
            if name in out:
                raise DataError(f"{path}, row {row_number}: volume {name!r} is listed twice")
            out[name] = split
    return out


class DatasetFolder:
    """A dataset in the generic format v1 (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder not found")
        try:
            check_finished(self.root)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        self.splits = read_splits(self.root / "splits.csv")

    def volumes(self, split: str | None = None) -> list[str]:
        """Volume names of one split (or all), in ``splits.csv`` order."""
        if split is not None and split not in SPLITS:
            raise DataError(f"split {split!r} is not one of {SPLITS}")
        return [v for v, s in self.splits.items() if split is None or s == split]

    def volume_path(self, name: str) -> Path:
        return self.root / "volumes" / f"{check_volume_name(name, str(self.root))}.nii.gz"

    def read_volume(self, name: str) -> Volume:
        # imported here, not at the top: reading the tables (and uld.eval through them) must not
        # load SimpleITK; only reading an image does
        from uld.data.volume import read_volume

        path = self.volume_path(name)
        if not path.is_file():
            raise DataError(f"{path}: volume file not found (listed in splits.csv)")
        return read_volume(path)

    def annotations(
        self, filename: str = "annotations.csv", on_error: str = "stop", skipped: list[str] | None = None
    ) -> Annotations:
        """Read an annotation file of this dataset; every volume it names must be in a split.

        ``on_error="skip"`` leaves bad rows (and rows of unknown volumes) out, appending their
        messages to ``skipped``.
        """
        path = self.root / filename
        table = read_annotations(path, on_error, skipped)
        known = np.array([name in self.splits for name in table.volume], dtype=bool)
        for i in np.flatnonzero(~known):
            message = f"{path}, row {table.row[i]}: volume {table.volume[i]!r} is not in splits.csv"
            if on_error != "skip":
                raise DataError(message)
            if skipped is not None:
                skipped.append(message)
        return table.select(known)

    def has(self, filename: str) -> bool:
        return bool(filename) and (self.root / filename).is_file()

    def info(self) -> dict:
        """Contents of ``dataset.json`` (empty when absent)."""
        path = self.root / "dataset.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(decode_error(path, exc)) from None
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None


def boxes_outside_volume(
    table: Annotations, name: str, shape_zyx: tuple[int, int, int], where: str,
    rows: Sequence[int] | None = None,
) -> list[tuple[int, str]]:
    """``(table index, message)`` of every box of volume ``name`` outside its image; the
    message names ``where`` and the row. ``rows``: the table indices of ``name``'s boxes, when
    the caller knows them (saves a scan of the table)."""
    depth, height, width = shape_zyx
    bad = []
    for i in np.flatnonzero(table.volume == name) if rows is None else rows:
        x1, y1, x2, y2 = table.boxes[i]
        if table.z[i] >= depth or x2 > width or y2 > height:
            row = f", row {table.row[i]}" if table.row is not None else ""
            shown = ", ".join(plain(v) for v in (x1, y1, x2, y2))
            bad.append((int(i), (
                f"{where}{row}: box [{shown}] on slice {int(table.z[i])} of {name!r} lies "
                f"outside the image (z < {depth}, x <= {width}, y <= {height})"
            )))
    return bad
