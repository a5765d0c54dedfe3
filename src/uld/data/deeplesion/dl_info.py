"""``DL_info.csv``: one record per lesion, pixels made 0-based once, when reading (:func:`read_dl_info`)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from uld.data.subvolume import (
    DeepLesionError,
    subvolume_name,
)

DL_INFO_COLUMNS = (
    "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index",
    "Measurement_coordinates", "Bounding_boxes", "Lesion_diameters_Pixel_",
    "Normalized_lesion_location", "Coarse_lesion_type", "Possibly_noisy", "Slice_range",
    "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender", "Patient_age",
    "Train_Val_Test",
)
"""The header of ``DL_info.csv``, in order."""

SPLIT_CODES = {1: "train", 2: "val", 3: "test"}
"""``Train_Val_Test`` codes."""

LESION_TYPES = frozenset({-1, 1, 2, 3, 4, 5, 6, 7, 8})

OnError = Literal["stop", "skip"]

def check_on_error(on_error: str) -> None:
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")


@dataclass(frozen=True, eq=False)
class DLInfoRecord:
    """One row of ``DL_info.csv`` (one lesion), typed. Arrays are read-only.

    row: the CSV line number (the header is line 1), for messages.
    file_name: ``<folder>_<slice:03d>.png`` as in the file.
    patient, study, series: ``Patient_index``, ``Study_index``, ``Series_ID``.
    key_slice: the key slice's number as in the file name (``Key_slice_index``).
    measurement (ndarray[4, 2], float64): RECIST points ``(x, y)``, **0-based**: long axis
        (2 points), then short axis (2 points).
    box (ndarray[4], float64): ``x1, y1, x2, y2``, **0-based** (the file's values minus 1).
    diameters_px: long and short RECIST diameters in pixels.
    location: ``Normalized_lesion_location`` (x, y, z in 0..1).
    lesion_type: ``Coarse_lesion_type``: -1 on training rows, 1..8 on val/test rows.
    noisy: ``Possibly_noisy``.
    slice_range: ``(first, last)`` slice numbers of the run that holds the key slice.
    spacing_xyz: ``(sx, sy, sz)`` mm: pixel spacing x, y, then the slice interval.
    image_size: the two numbers of ``Image_size`` in the file's order. DeepLesion's readme
        does not name the order; every row of the real excerpt reads ``512, 512``. Nothing in
        this module relies on it (image sizes are taken from the PNGs).
    dicom_windows: ``(low, high)`` HU of the window the radiologist used (the real file holds
        one pair, e.g. ``"-175, 275"``, ``"-182.5, 322.5"``).
    gender: ``Patient_gender`` as written (``"M"``, ``"F"``).
    age: ``Patient_age`` in years, ``None`` when empty or NaN.
    split: ``Train_Val_Test`` code 1 (train), 2 (val) or 3 (test).
    """

    row: int
    file_name: str
    patient: int
    study: int
    series: int
    key_slice: int
    measurement: np.ndarray
    box: np.ndarray
    diameters_px: tuple[float, float]
    location: tuple[float, float, float]
    lesion_type: int
    noisy: bool
    slice_range: tuple[int, int]
    spacing_xyz: tuple[float, float, float]
    image_size: tuple[int, int]
    dicom_windows: tuple[float, float]
    gender: str
    age: float | None
    split: int

    @property
    def folder(self) -> str:
        """``<patient:06d>_<study:02d>_<series:02d>``: the file name up to its last ``_``."""
        return self.file_name.rsplit("_", 1)[0]

    @property
    def split_name(self) -> str:
        """``"train"``, ``"val"`` or ``"test"``."""
        return SPLIT_CODES[self.split]

    @property
    def subvolume(self) -> str:
        """The sub-volume holding the key slice, named from ``slice_range``."""
        return subvolume_name(self.folder, *self.slice_range)

    @property
    def z(self) -> int:
        """The key slice's offset inside :attr:`subvolume`."""
        return self.key_slice - self.slice_range[0]


@dataclass(frozen=True)
class DLInfo:
    """The rows of a ``DL_info.csv``.

    records: the rows kept, in file order (without the noisy ones when they were dropped).
    skipped: one-line messages of the rows left out by ``on_error="skip"``.
    dropped_noisy: how many ``Possibly_noisy`` rows were dropped.
    noisy_records: those dropped rows (their geometry, e.g. spacing, is still valid).
    """

    path: Path
    records: tuple[DLInfoRecord, ...]
    skipped: list[str] = field(default_factory=list)
    dropped_noisy: int = 0
    noisy_records: tuple[DLInfoRecord, ...] = ()

    def __len__(self) -> int:
        return len(self.records)

    def by_key_slice(self) -> dict[tuple[str, int], list[DLInfoRecord]]:
        """``{(folder, key_slice): [records]}``: the lesions of each key slice, in file order."""
        out: dict[tuple[str, int], list[DLInfoRecord]] = {}
        for rec in self.records:
            out.setdefault((rec.folder, rec.key_slice), []).append(rec)
        return out

    def for_split(self, name: str) -> tuple[DLInfoRecord, ...]:
        """Records of the official split ``"train"``, ``"val"`` or ``"test"``."""
        if name not in SPLIT_CODES.values():
            raise ValueError(f"split {name!r} is not one of {tuple(SPLIT_CODES.values())}")
        return tuple(r for r in self.records if r.split_name == name)


class _RowError(Exception):
    """Internal: a bad field; turned into a :class:`DeepLesionError` with file and row."""


def _numbers(value: str, column: str, count: int) -> list[float]:
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != count:
        raise _RowError(f"column {column} = {value!r} has {len(parts)} values, expected {count}")
    out = []
    for p in parts:
        try:
            number = float(p)
        except ValueError:
            raise _RowError(f"column {column} = {value!r} is not {count} numbers") from None
        if not math.isfinite(number):
            raise _RowError(f"column {column} = {value!r} holds a value that is not finite")
        out.append(number)
    return out


def _int(value: str, column: str) -> int:
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise _RowError(f"column {column} = {value!r} is not an integer") from None
    if not number.is_integer():
        raise _RowError(f"column {column} = {value!r} is not an integer")
    return int(number)


def _ints(value: str, column: str, count: int) -> list[int]:
    numbers = _numbers(value, column, count)
    if not all(n.is_integer() for n in numbers):
        raise _RowError(f"column {column} = {value!r} is not {count} integers")
    return [int(n) for n in numbers]


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _parse_record(fields: list[str], row: int) -> DLInfoRecord:
    """One CSV row -> record; raises :class:`_RowError` (without file and row) on bad input."""
    if len(fields) != len(DL_INFO_COLUMNS):
        raise _RowError(f"has {len(fields)} fields, expected {len(DL_INFO_COLUMNS)}")
    f = dict(zip(DL_INFO_COLUMNS, fields))
    file_name = f["File_name"].strip()
    patient = _int(f["Patient_index"], "Patient_index")
    study = _int(f["Study_index"], "Study_index")
    series = _int(f["Series_ID"], "Series_ID")
    key_slice = _int(f["Key_slice_index"], "Key_slice_index")
    folder = f"{patient:06d}_{study:02d}_{series:02d}"
    stem, _, number = file_name.rpartition("_")
    if not file_name.endswith(".png") or stem != folder or number != f"{key_slice:03d}.png":
        raise _RowError(
            f"column File_name = {file_name!r} does not match Patient_index, Study_index, "
            f"Series_ID and Key_slice_index (expected {folder}_{key_slice:03d}.png)"
        )
    measurement = np.array(_numbers(f["Measurement_coordinates"], "Measurement_coordinates", 8))
    box = np.array(_numbers(f["Bounding_boxes"], "Bounding_boxes", 4))
    if not (box[0] < box[2] and box[1] < box[3]):
        raise _RowError(f"column Bounding_boxes = {f['Bounding_boxes']!r} needs x1 < x2 and y1 < y2")
    d_long, d_short = _numbers(f["Lesion_diameters_Pixel_"], "Lesion_diameters_Pixel_", 2)
    lx, ly, lz = _numbers(f["Normalized_lesion_location"], "Normalized_lesion_location", 3)
    lesion_type = _int(f["Coarse_lesion_type"], "Coarse_lesion_type")
    if lesion_type not in LESION_TYPES:
        raise _RowError(f"column Coarse_lesion_type = {f['Coarse_lesion_type']!r} is not -1 or 1..8")
    noisy = _int(f["Possibly_noisy"], "Possibly_noisy")
    if noisy not in (0, 1):
        raise _RowError(f"column Possibly_noisy = {f['Possibly_noisy']!r} is not 0 or 1")
    first, last = _ints(f["Slice_range"], "Slice_range", 2)
    if not first <= key_slice <= last:
        raise _RowError(
            f"column Slice_range = {f['Slice_range']!r} does not hold the key slice {key_slice}"
        )
    sx, sy, sz = _numbers(f["Spacing_mm_px_"], "Spacing_mm_px_", 3)
    if min(sx, sy, sz) <= 0:
        raise _RowError(f"column Spacing_mm_px_ = {f['Spacing_mm_px_']!r} is not positive")
    size = _ints(f["Image_size"], "Image_size", 2)
    if min(size) <= 0:
        raise _RowError(f"column Image_size = {f['Image_size']!r} is not positive")
    low, high = _numbers(f["DICOM_windows"], "DICOM_windows", 2)
    age_text = f["Patient_age"].strip()
    age: float | None = None
    if age_text and age_text.lower() != "nan":
        try:
            age = float(age_text)
        except ValueError:
            raise _RowError(f"column Patient_age = {f['Patient_age']!r} is not a number") from None
        if not math.isfinite(age) or age < 0:
            raise _RowError(f"column Patient_age = {f['Patient_age']!r} is not an age")
    split = _int(f["Train_Val_Test"], "Train_Val_Test")
    if split not in SPLIT_CODES:
        raise _RowError(f"column Train_Val_Test = {f['Train_Val_Test']!r} is not 1, 2 or 3")
    return DLInfoRecord(
        row=row,
        file_name=file_name,
        patient=patient,
        study=study,
        series=series,
        key_slice=key_slice,
        measurement=_readonly(measurement.reshape(4, 2) - 1.0),
        box=_readonly(box - 1.0),
        diameters_px=(d_long, d_short),
        location=(lx, ly, lz),
        lesion_type=lesion_type,
        noisy=bool(noisy),
        slice_range=(first, last),
        spacing_xyz=(sx, sy, sz),
        image_size=(size[0], size[1]),
        dicom_windows=(low, high),
        gender=f["Patient_gender"].strip(),
        age=age,
        split=split,
    )


def read_dl_info(path: str | Path, drop_noisy: bool = True, on_error: OnError = "stop") -> DLInfo:
    """Read and validate a ``DL_info.csv``.

    The header must be the 18 names of :data:`DL_INFO_COLUMNS` in order. Every row is checked
    (field count, numbers, ``x1 < x2`` and ``y1 < y2``, finite positive spacing, split code 1..3,
    the file name against patient/study/series/key slice, ...); blank lines are ignored.
    ``drop_noisy`` leaves ``Possibly_noisy`` rows out of ``records`` (as MULAN and Lesion
    Harvester do) and keeps them in ``noisy_records``. ``on_error``: see the module docstring.
    Pixel coordinates become 0-based (file value - 1).
    """
    check_on_error(on_error)
    path = Path(path)
    if not path.is_file():
        raise DeepLesionError(f"{path}: DL_info file not found")
    kept: list[DLInfoRecord] = []
    noisy: list[DLInfoRecord] = []
    skipped: list[str] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DeepLesionError(f"{path}: empty file, expected the DL_info header")
        header = [h.strip() for h in header]
        for i, want in enumerate(DL_INFO_COLUMNS):
            got = header[i] if i < len(header) else None
            if got != want:
                raise DeepLesionError(
                    f"{path}: header column {i + 1} is {got!r}, expected {want!r} "
                    f"(DL_info.csv has the 18 columns {DL_INFO_COLUMNS[0]}..{DL_INFO_COLUMNS[-1]})"
                )
        if len(header) > len(DL_INFO_COLUMNS):
            raise DeepLesionError(
                f"{path}: header has {len(header)} columns, expected {len(DL_INFO_COLUMNS)} "
                f"(extra {header[len(DL_INFO_COLUMNS)]!r})"
            )
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                message = f"{path}, row {reader.line_num}: not valid CSV ({exc})"
                if on_error == "stop":
                    raise DeepLesionError(message) from None
                skipped.append(message)
                continue
            if not fields or all(not x.strip() for x in fields):
                continue
            row = reader.line_num
            try:
                record = _parse_record(fields, row)
            except _RowError as exc:
                message = f"{path}, row {row}: {exc}"
                if on_error == "stop":
                    raise DeepLesionError(message) from None
                skipped.append(message)
                continue
            (noisy if drop_noisy and record.noisy else kept).append(record)
    return DLInfo(path=path, records=tuple(kept), skipped=skipped, dropped_noisy=len(noisy),
                  noisy_records=tuple(noisy))


def spacing_by_folder(dl_info: DLInfo) -> dict[str, tuple[float, float, float]]:
    """``{folder: (sx, sy, sz)}`` from every row, noisy ones included.

    All rows of a series folder must agree (within 1e-6 relative); otherwise raises
    :class:`DeepLesionError` naming the file, both rows and both values.
    """
    out: dict[str, tuple[float, float, float]] = {}
    first_row: dict[str, int] = {}
    for rec in sorted((*dl_info.records, *dl_info.noisy_records), key=lambda r: r.row):
        known = out.get(rec.folder)
        if known is None:
            out[rec.folder] = rec.spacing_xyz
            first_row[rec.folder] = rec.row
        elif not np.allclose(known, rec.spacing_xyz, rtol=1e-6, atol=0.0):
            raise DeepLesionError(
                f"{dl_info.path}, row {rec.row}: Spacing_mm_px_ {rec.spacing_xyz} of {rec.folder} "
                f"disagrees with row {first_row[rec.folder]} ({known})"
            )
    return out
