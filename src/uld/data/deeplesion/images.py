"""The 16-bit PNG slices of ``Images_png/`` and the sub-volumes they form (:class:`DeepLesionImages`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from uld.data.subvolume import (
    DeepLesionError,
    check_plain,
    contiguous_runs,
    parse_subvolume_name,
    subvolume_name,
)
from uld.data.volume import Volume

HU_OFFSET = 32768
"""HU = PNG pixel value - ``HU_OFFSET``."""

_SLICE_FILE = re.compile(r"^(\d+)\.png$")


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
