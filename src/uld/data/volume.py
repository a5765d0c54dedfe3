"""A CT volume in Hounsfield units with its geometry, read and written through SimpleITK."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from uld.atomic import atomic_path
from uld.data.checks import check_dicom_files, check_nifti, is_nifti


@dataclass(frozen=True)
class Volume:
    """A CT scan as axial slices.

    hu (ndarray[Z, Y, X], int16 or float32): Hounsfield units, indexed as SimpleITK's
        ``GetArrayFromImage`` returns them: slice z, row y, column x.
    spacing_xyz (tuple[float, float, float]): millimetres between columns, rows, slices.
    origin_xyz, direction: patient-space geometry (LPS, as SimpleITK/DICOM define it);
        ``direction`` is the row-major 3x3 matrix of the image axes.
    """

    hu: np.ndarray
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"a volume is [z, y, x]; got an array of shape {self.hu.shape}")
        sp = np.asarray(self.spacing_xyz, dtype=float)
        if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise ValueError(f"spacing must be three positive millimetre values, got {self.spacing_xyz}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        z, y, x = self.hu.shape
        return int(z), int(y), int(x)

    def to_physical(self, index_xyz: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``(N, 3)`` as ``(x, y, z)`` -> patient millimetres ``(N, 3)``."""
        idx = np.asarray(index_xyz, dtype=float).reshape(-1, 3)
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        return np.asarray(self.origin_xyz) + (idx * np.asarray(self.spacing_xyz)) @ d.T


def _first_line(exc: Exception) -> str:
    """ITK's reason, without the C++ source path it quotes first."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "ERROR:" in line:
            return line.split("ERROR:", 1)[1].strip()
    reasons = [line for line in lines if not re.search(r"\.(cxx|hxx|cpp|h):\d+:?$", line)]
    return reasons[-1] if reasons else "unreadable"


def _volume(image: sitk.Image, where: Path) -> Volume:
    if image.GetDimension() != 3:
        raise ValueError(f"{where}: expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        channels = image.GetNumberOfComponentsPerPixel()
        raise ValueError(f"{where}: expected one value per voxel, got {channels}")
    hu = sitk.GetArrayFromImage(image)
    if not np.issubdtype(hu.dtype, np.integer):
        hu = hu.astype(np.float32)
    try:
        return Volume(
            hu=hu,
            spacing_xyz=tuple(float(s) for s in image.GetSpacing()),
            origin_xyz=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI (or any SimpleITK-readable) file as a :class:`Volume`, axes as stored.

    Raises ``ValueError`` naming the file when it cannot be read or is not 3D.
    """
    path = Path(path)
    return _volume(_read_file(path), path)


def _read_file(path: Path) -> sitk.Image:
    """One image file; a NIfTI file's header and compressed stream are checked first
    (:func:`uld.data.checks.check_nifti`: ITK would hide bad spacing and truncation)."""
    if is_nifti(path):
        check_nifti(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot read image ({_first_line(exc)})") from exc


def _dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    try:
        series = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:
        raise ValueError(f"{folder}: cannot list DICOM series ({_first_line(exc)})") from exc
    if not series:
        raise ValueError(f"{folder}: no DICOM series in this folder")
    if len(series) > 1:
        shown = ", ".join(series[:3]) + (" ..." if len(series) > 3 else "")
        raise ValueError(
            f"{folder}: {len(series)} DICOM series in one folder ({shown}); give one series per folder"
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    check_dicom_files(files, folder)
    reader.SetFileNames(files)
    try:
        image = reader.Execute()  # applies RescaleSlope/Intercept: values are HU
    except RuntimeError as exc:
        raise ValueError(f"{folder}: cannot read the DICOM series ({_first_line(exc)})") from exc
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    return image


def read_scan(path: str | Path) -> Volume:
    """A user's CT scan as axial slices: a NIfTI (or other SimpleITK) file, or a folder
    holding one DICOM series.

    The image is reoriented (``sitk.DICOMOrient(image, "LPS")``, a permutation/flip of the
    array, no resampling) so that ``hu[z]`` is an axial slice, rows run anterior to
    posterior and columns right to left (the radiological view); the geometry (origin,
    direction) is updated with it, so millimetre positions are unchanged.
    """
    path = Path(path)
    if path.is_dir():
        image = _dicom_series(path)
    elif path.is_file():
        image = _read_file(path)
        if image.GetDimension() == 2:
            image = sitk.JoinSeries(image)
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    if image.GetDimension() == 3:
        image = sitk.DICOMOrient(image, "LPS")
    return _volume(image, path)


def write_volume(volume: Volume, path: str | Path) -> None:
    """Write atomically (temporary file, then rename) so no half-written file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(volume.hu)
    image.SetSpacing(volume.spacing_xyz)
    image.SetOrigin(volume.origin_xyz)
    image.SetDirection(volume.direction)
    with atomic_path(path, suffix="".join(path.suffixes) or ".nii.gz") as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
