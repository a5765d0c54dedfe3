"""DeepLesion: ``DL_info.csv``, the 16-bit PNG slices, the paper's data split, conversion.

Layout read here (facts: ``docs/DATA.md``)::

    ROOT/
      DL_info.csv                          one row per lesion, 18 columns
      Images_png/<folder>/<slice:03d>.png  16-bit unsigned PNG, HU = pixel - 32768

``<folder>`` is ``<patient:06d>_<study:02d>_<series:02d>``; slice numbers may have four digits.
A folder holds one or more *contiguous runs* of slices; each run is a *sub-volume* named
``<folder>_<first:03d>-<last:03d>`` (both ends inclusive), Lesion Harvester's naming.

Conventions of this module (one for everything it returns)
----------------------------------------------------------

- **Pixels are 0-based.** ``DL_info.csv`` writes 1-based pixel coordinates; :func:`read_dl_info`
  subtracts 1 from ``Measurement_coordinates`` and ``Bounding_boxes`` once, when reading.
  Lesion Harvester's pickles carry DL_info's boxes as written, i.e. also 1-based: the 58
  boxes of ``DL_info_excerpt.csv`` whose sub-volume is in ``RECIST-Box-Test``,
  ``RECIST-Box-Valid``, ``Revised-Test1071``, ``Revised-Train100`` or ``Revised-Train744``
  (75 box pairs) all agree within 0.0003 px (the pickles round to three decimals), where a
  0-based copy would be 1 px off. :func:`paper_split` subtracts 1 from every pickle box,
  also from the boxes the Lesion Harvester annotators added (no DL_info counterpart; two of
  them end exactly at 512, i.e. they were clipped to the 512-pixel image: consistent with
  1-based, and at worst 1 px off if those were 0-based).
  Boxes are ``[x1, y1, x2, y2]`` float pixels, x = column, y = row.
- **z is the offset from the sub-volume's first slice** (``slice_number - first``), the
  convention of Lesion Harvester's files and of the generic dataset format.
- Volumes are ``hu[z, y, x]`` int16 Hounsfield units with ``spacing_xyz = (sx, sy, sz)`` mm.

Errors are :class:`DeepLesionError` (a ``ValueError``) with one line naming the file, row,
column and value. Functions that walk many rows take ``on_error``: ``"stop"`` raises the first
error, ``"skip"`` leaves the offending row (or sub-volume) out, keeps its message and goes on.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from uld.atomic import write_text
from uld.data.annotations import EvalFormatError, GroundTruth, read_gt
from uld.data.dataset import FORMAT_NAME, FORMAT_VERSION, write_csv
from uld.data.subvolume import (
    DeepLesionError,
    check_plain,
    contiguous_runs,
    parse_subvolume_name,
    subvolume_name,
)
from uld.data.volume import Volume, write_volume
from uld.outdir import staged_folder

__all__ = [
    "ANNOTATION_COLUMNS",
    "DL_INFO_COLUMNS",
    "HARVESTER_FILES",
    "HU_OFFSET",
    "SPLIT_CODES",
    "DLInfo",
    "DLInfoRecord",
    "DeepLesionError",
    "DeepLesionImages",
    "PaperSplit",
    "contiguous_runs",
    "convert_deeplesion",
    "paper_split",
    "parse_subvolume_name",
    "read_dl_info",
    "read_png_slice",
    "spacing_by_folder",
    "subvolume_name",
    "to_zero_based",
]

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

HU_OFFSET = 32768
"""HU = PNG pixel value - ``HU_OFFSET``."""

HARVESTER_FILES = {
    "val": "Revised-Train100.pkl",
    "test": "Revised-Test1071.pkl",
    "negatives": "Revised-Train744.pkl",
}
"""Lesion Harvester's fully annotated sub-volumes: the paper's validation and test sets and the
training sub-volumes used for hard negatives (P-)."""

ANNOTATION_COLUMNS = ("volume", "z", "x1", "y1", "x2", "y2", "key")

LESION_TYPES = frozenset({-1, 1, 2, 3, 4, 5, 6, 7, 8})
_SLICE_FILE = re.compile(r"^(\d+)\.png$")

OnError = Literal["stop", "skip"]


def _check_on_error(on_error: str) -> None:
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")


# ---------------------------------------------------------------------------------------------
# DL_info.csv
# ---------------------------------------------------------------------------------------------


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
    _check_on_error(on_error)
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


# ---------------------------------------------------------------------------------------------
# PNG slices and the Images_png tree
# ---------------------------------------------------------------------------------------------


def _itk_reason(exc: RuntimeError, path: Path) -> str:
    """The informative line of an ITK exception, without ITK's source location and the path."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    picked = next((ln for ln in lines if ln.startswith("Reason")),
                  next((ln for ln in lines if "ITK ERROR" in ln), "unreadable"))
    picked = re.sub(r"^ITK ERROR: \w+\(0x[0-9a-f]+\): ", "", picked)
    return picked.replace(f": {path}", "").replace(f" {path}", "").strip() or "unreadable"


def read_png_slice(path: str | Path) -> np.ndarray:
    """One DeepLesion slice in HU: ``ndarray[Y, X] int16`` = PNG value - 32768 (exact).

    Decoded by SimpleITK's PNG reader: 5-15 % faster than Pillow on CT-like 512x512 slices
    (``benchmarks/bench_png_stacks.py``) and stricter (it refuses a file cut after its last
    image data, which Pillow accepts). Raises :class:`DeepLesionError` naming the file when
    it is missing, unreadable or truncated, or not a single-channel 16-bit PNG (an 8-bit PNG
    would silently lose the HU scale).
    """
    path = Path(path)
    if not path.is_file():
        raise DeepLesionError(f"{path}: slice file not found")
    try:
        image = sitk.ReadImage(str(path), imageIO="PNGImageIO")
    except RuntimeError as exc:
        raise DeepLesionError(f"{path}: cannot read the PNG ({_itk_reason(exc, path)})") from None
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetPixelID() != sitk.sitkUInt16:
        raise DeepLesionError(
            f"{path}: expected a 16-bit grayscale PNG (HU + 32768), got "
            f"{image.GetPixelIDTypeAsString()} with {image.GetNumberOfComponentsPerPixel()} channel(s)"
        )
    pixels = sitk.GetArrayViewFromImage(image)
    if pixels.ndim != 2:
        raise DeepLesionError(f"{path}: expected a 2D slice, got shape {pixels.shape}")
    # u - 32768 in 16-bit two's complement is u with its top bit flipped.
    return (pixels ^ np.uint16(HU_OFFSET)).view(np.int16)


class PngSlices:
    """The slices of one sub-volume as a read-on-demand array ``[z, y, x]`` of int16 HU.

    Indexing with an int, a slice or an integer array along z (what
    :func:`uld.data.stack.slice_stacks` does) reads only the PNG files it needs, once each
    (decoded slices are kept). A 9-slice stack of a 1 mm series thus costs about 9 PNG reads
    instead of the whole sub-volume's 60-120.
    """

    ndim = 3
    dtype = np.dtype(np.int16)

    def __init__(self, paths: Sequence[Path], name: str) -> None:
        self.paths = list(paths)
        self.name = name
        self._slices: dict[int, np.ndarray] = {}
        first = self._read(0)
        self.shape = (len(self.paths), *first.shape)

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, z: int) -> np.ndarray:
        if z not in self._slices:
            hu = read_png_slice(self.paths[z])
            if self._slices and hu.shape != next(iter(self._slices.values())).shape:
                raise DeepLesionError(
                    f"{self.paths[z]}: slice is {hu.shape[1]}x{hu.shape[0]} (width x height), other "
                    f"slices of {self.name} are {self.shape[2]}x{self.shape[1]}"
                )
            self._slices[z] = hu
        return self._slices[z]

    def __getitem__(self, index: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(index, tuple):
            index, rest = index[0], index[1:]
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        zs = np.asarray(index)
        if not np.issubdtype(zs.dtype, np.integer):
            raise TypeError(f"{self.name}: slices are indexed by integers, got {zs.dtype}")
        zs = np.where(zs < 0, zs + len(self), zs)
        if zs.size and (zs.min() < 0 or zs.max() >= len(self)):
            raise IndexError(f"{self.name}: slice index out of range 0..{len(self) - 1}")
        out = np.empty((*zs.shape, *self.shape[1:]), dtype=np.int16)
        for z in np.unique(zs).tolist():
            out[zs == z] = self._read(z)
        return out[(Ellipsis, *rest)] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


class DeepLesionImages:
    """The ``Images_png`` tree of a DeepLesion root.

    ``root`` is the folder that holds ``Images_png`` (or ``Images_png`` itself). Slice files
    are ``<folder>/<number>.png`` (``{number:03d}``); other files are ignored. Folder listings
    are read once and cached.
    """

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        images = root / "Images_png"
        if not images.is_dir() and root.name == "Images_png" and root.is_dir():
            images = root
        if not images.is_dir():
            raise DeepLesionError(f"{images}: Images_png folder not found")
        self.root = root
        self.images = images
        self._folders: list[str] | None = None
        self._slices: dict[str, dict[int, str]] = {}

    def series_folders(self) -> list[str]:
        """Sorted names of the series folders present."""
        if self._folders is None:
            self._folders = sorted(p.name for p in self.images.iterdir()
                                   if p.is_dir() and not p.name.startswith("."))
        return list(self._folders)

    def has_folder(self, folder: str) -> bool:
        check_plain(folder, "series folder")
        return folder in self.series_folders()

    def _files(self, folder: str) -> dict[int, str]:
        if folder not in self._slices:
            check_plain(folder, "series folder")
            path = self.images / folder
            if not path.is_dir():
                raise DeepLesionError(f"{path}: series folder not found")
            files: dict[int, str] = {}
            for entry in path.iterdir():
                match = _SLICE_FILE.match(entry.name)
                if match:
                    number = int(match[1])
                    if number in files:
                        raise DeepLesionError(
                            f"{path}: slice {number} appears twice ({files[number]}, {entry.name})")
                    files[number] = entry.name
            self._slices[folder] = files
        return self._slices[folder]

    def slice_numbers(self, folder: str) -> list[int]:
        """Sorted slice numbers of the PNG files of ``folder``."""
        return sorted(self._files(folder))

    def slice_path(self, folder: str, number: int) -> Path:
        """The file of a slice (the name found on disk, else ``{number:03d}.png``)."""
        name = self._files(folder).get(int(number), f"{int(number):03d}.png")
        return self.images / folder / name

    def subvolumes(self, folder: str) -> list[tuple[int, int]]:
        """``[(first, last), ...]``: the contiguous runs of slices present in ``folder``."""
        return contiguous_runs(self._files(folder))

    def subvolume_names(self, folder: str) -> list[str]:
        return [subvolume_name(folder, a, b) for a, b in self.subvolumes(folder)]

    def subvolume_of(self, folder: str, slice_number: int) -> tuple[int, int]:
        """The run of ``folder`` that holds ``slice_number``; raises when the slice is absent."""
        for first, last in self.subvolumes(folder):
            if first <= slice_number <= last:
                return first, last
        raise DeepLesionError(
            f"{self.images / folder / f'{int(slice_number):03d}.png'}: slice {slice_number} is not "
            f"in the folder (runs {self.subvolumes(folder)})"
        )

    def subvolume_paths(self, name: str) -> list[Path]:
        """The PNG files of sub-volume ``name``, first to last; a missing slice raises."""
        folder, first, last = parse_subvolume_name(name)
        files = self._files(folder)
        paths = []
        for number in range(first, last + 1):
            path = self.slice_path(folder, number)
            if number not in files:
                raise DeepLesionError(f"{path}: slice {number} of sub-volume {name} is missing")
            paths.append(path)
        return paths

    def lazy_subvolume(self, name: str, spacing_xyz: Sequence[float]) -> Volume:
        """Sub-volume ``name`` whose slices are read when first indexed (:class:`PngSlices`);
        otherwise as :meth:`read_subvolume`."""
        hu = PngSlices(self.subvolume_paths(name), name)
        try:
            return Volume(hu=hu, spacing_xyz=tuple(float(s) for s in spacing_xyz))  # type: ignore[arg-type]
        except ValueError as exc:
            raise DeepLesionError(f"{self.images}: sub-volume {name}: {exc}") from None

    def read_subvolume(self, name: str, spacing_xyz: Sequence[float]) -> Volume:
        """Slices ``first..last`` of sub-volume ``name`` as a :class:`Volume`.

        Returns ``hu[z, y, x]`` int16 with ``z = slice - first`` and ``spacing_xyz = (sx, sy, sz)``
        mm (DL_info's ``Spacing_mm_px_``); origin 0 and identity direction (the PNGs carry no
        patient geometry). Raises :class:`DeepLesionError` naming the file of a missing,
        unreadable or wrongly sized slice.
        """
        lazy = self.lazy_subvolume(name, spacing_xyz)
        return Volume(hu=np.asarray(lazy.hu), spacing_xyz=lazy.spacing_xyz)


# ---------------------------------------------------------------------------------------------
# The paper's data split
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperSplit:
    """The data split of Bai & Xia (2023), in one convention.

    Each set maps a sub-volume name to its boxes ``[(z, box), ...]``: ``z`` the offset from
    the sub-volume's first slice, ``box`` ``ndarray[4]`` float64 ``x1, y1, x2, y2`` **0-based**
    pixels (DL_info / Lesion Harvester value - 1, clipped below at 0).

    train: official training split (code 1), non-noisy key-slice boxes of DL_info, minus every
        sub-volume of ``val``, ``test`` and ``negatives`` (partial labels).
    val: the 100 sub-volumes of ``Revised-Train100.pkl`` (fully annotated).
    test: the 1,071 sub-volumes of ``Revised-Test1071.pkl`` (fully annotated; one has no box).
    negatives: the 744 sub-volumes of ``Revised-Train744.pkl`` (fully annotated training
        sub-volumes for hard-negative mining, P-).
    removed_from_train: train sub-volumes dropped because they are fully annotated elsewhere.
    skipped: one-line messages of what ``on_error="skip"`` left out.
    """

    train: GroundTruth
    val: GroundTruth
    test: GroundTruth
    negatives: GroundTruth
    removed_from_train: tuple[str, ...] = ()
    skipped: list[str] = field(default_factory=list)

    def sets(self) -> dict[str, GroundTruth]:
        return {"train": self.train, "val": self.val, "test": self.test, "negatives": self.negatives}

    def counts(self) -> dict[str, dict[str, int]]:
        """``{set: {"volumes": n, "boxes": n}}``."""
        return {k: {"volumes": len(v), "boxes": sum(len(b) for b in v.values())}
                for k, v in self.sets().items()}


def to_zero_based(box: np.ndarray) -> np.ndarray:
    """A Lesion Harvester box (1-based, as DL_info) as ``[x1, y1, x2, y2]`` 0-based pixels,
    clamped at 0 (a 1-based coordinate below 1 would otherwise fall outside the image)."""
    return np.maximum(np.asarray(box, dtype=np.float64)[:4] - 1.0, 0.0)


def paper_split(
    dl_info: DLInfo,
    images: DeepLesionImages | None,
    harvester_dir: str | Path,
    on_error: OnError = "stop",
) -> PaperSplit:
    """Build the paper's split (see :class:`PaperSplit`).

    harvester_dir: the folder holding ``Revised-Train100.pkl``, ``Revised-Test1071.pkl`` and
        ``Revised-Train744.pkl`` (read with :func:`uld.data.annotations.read_gt`).
    images: when given, sub-volumes come from the PNG files: a training key slice belongs to the
        run of files that holds it (which must equal DL_info's ``Slice_range``), and every
        Lesion Harvester sub-volume must be a run of files. A missing series folder, a missing
        slice or a disagreeing run is an error that ``on_error`` stops at or skips (with a
        message). When ``None``, sub-volumes come from ``Slice_range`` and the pickle names.
    Noisy rows are left out even when ``dl_info`` kept them.
    """
    _check_on_error(on_error)
    harvester_dir = Path(harvester_dir)
    skipped: list[str] = []

    def fail(message: str) -> None:
        if on_error == "stop":
            raise DeepLesionError(message)
        skipped.append(message)

    full: dict[str, GroundTruth] = {}
    owner: dict[str, str] = {}
    for which, filename in HARVESTER_FILES.items():
        path = harvester_dir / filename
        try:
            raw = read_gt(path)
        except EvalFormatError as exc:
            raise DeepLesionError(str(exc)) from None
        kept: GroundTruth = {}
        for name, boxes in raw.items():
            try:
                folder, first, last = parse_subvolume_name(name)
            except DeepLesionError as exc:
                raise DeepLesionError(f"{path}: {exc}") from None
            if name in owner:
                raise DeepLesionError(f"{path}: sub-volume {name} is also in {HARVESTER_FILES[owner[name]]}")
            owner[name] = which
            bad_z = [z for z, _ in boxes if z > last - first]
            if bad_z:
                fail(f"{path}: sub-volume {name}: box on z = {bad_z[0]} beyond its {last - first + 1} slices")
                continue
            if images is not None:
                if not images.has_folder(folder):
                    fail(f"{images.images / folder}: series folder of {name} ({which}) not found")
                    continue
                if (first, last) not in images.subvolumes(folder):
                    fail(f"{images.images / folder}: {name} ({which}) is not a run of the slice files "
                         f"(runs {images.subvolumes(folder)})")
                    continue
            kept[name] = [(z, to_zero_based(b)) for z, b in boxes]
        full[which] = kept

    train: GroundTruth = {}
    removed: dict[str, None] = {}
    for rec in dl_info.records:
        if rec.split != 1 or rec.noisy:
            continue
        where = f"{dl_info.path}, row {rec.row}"
        first, last = rec.slice_range
        name = subvolume_name(rec.folder, first, last)
        if name in owner:
            removed[name] = None
            continue
        if images is not None:
            if not images.has_folder(rec.folder):
                fail(f"{where}: series folder {images.images / rec.folder} not found")
                continue
            try:
                run = images.subvolume_of(rec.folder, rec.key_slice)
            except DeepLesionError as exc:
                fail(f"{where}: {exc}")
                continue
            if run != rec.slice_range:
                fail(f"{where}: Slice_range {rec.slice_range} of {rec.file_name} disagrees with the "
                     f"slice files' run {run}")
                continue
        train.setdefault(name, []).append((rec.key_slice - first, rec.box.copy()))
    for boxes in train.values():
        boxes.sort(key=lambda item: item[0])
    return PaperSplit(train=train, val=full["val"], test=full["test"], negatives=full["negatives"],
                      removed_from_train=tuple(removed), skipped=skipped)


# ---------------------------------------------------------------------------------------------
# Conversion to the generic dataset format v1
# ---------------------------------------------------------------------------------------------


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
    _check_on_error(on_error)
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
