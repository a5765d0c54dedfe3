"""Checks on image files that SimpleITK does not make, or hides.

ITK replaces a zero, NaN or negative voxel spacing by 1 mm (or its absolute value) without a
word, and reads a ``.nii.gz`` cut short with the missing voxels as zeros. These functions read
the raw NIfTI header and the whole compressed stream first, and raise ``ValueError`` naming
the file and the value when either is wrong:

- :func:`check_nifti`: gzip CRC and length (a truncated or corrupt ``.gz``), the header's
  ``pixdim`` (and the ``sform`` column lengths when ITK would use them), and the voxel count
  the header promises against the bytes present;
- :func:`check_dicom_files`: every file of a DICOM series parses, its ``PixelSpacing`` is
  positive and its pixel data is as long as rows x columns x bits say;
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from uld.messages import plain

#: NIfTI datatype code -> bits per voxel (NIfTI-1 and -2 share the codes).
_NIFTI_BITS = {2: 8, 4: 16, 8: 32, 16: 32, 32: 64, 64: 64, 128: 24, 256: 8, 512: 16, 768: 32,
               1024: 64, 1280: 64, 1536: 128, 1792: 128, 2048: 256, 2304: 32}


def _read_decoded(path: Path, need: int | None = None) -> bytes:
    """The file's bytes, gunzipped if it is gzip; the whole stream is decoded when ``need`` is
    None, so that the CRC and length trailer are checked."""
    with path.open("rb") as handle:
        magic = handle.read(2)
    if magic != b"\x1f\x8b":
        with path.open("rb") as handle:
            return handle.read() if need is None else handle.read(need)
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read() if need is None else handle.read(need)
    except EOFError:
        raise ValueError(f"{path}: truncated file (the gzip stream ends early)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt gzip data ({exc})") from None


def _header(raw: bytes, path: Path) -> tuple[list[int], list[float], int, int, list[list[float]] | None]:
    """``(dim[0..7], pixdim[0..7], vox_offset, bitpix, sform rows or None)`` of a NIfTI header."""
    if len(raw) < 348:
        raise ValueError(f"{path}: truncated file ({len(raw)} bytes, shorter than a NIfTI header)")
    for endian in "<>":
        size = struct.unpack(f"{endian}i", raw[:4])[0]
        if size == 348:  # NIfTI-1
            dim = list(struct.unpack(f"{endian}8h", raw[40:56]))
            bitpix = struct.unpack(f"{endian}h", raw[72:74])[0]
            datatype = struct.unpack(f"{endian}h", raw[70:72])[0]
            pixdim = list(struct.unpack(f"{endian}8f", raw[76:108]))
            offset = struct.unpack(f"{endian}f", raw[108:112])[0]
            sform_code = struct.unpack(f"{endian}h", raw[254:256])[0]
            rows = [list(struct.unpack(f"{endian}4f", raw[280 + 16 * i: 296 + 16 * i])) for i in range(3)]
            break
        if size == 540:  # NIfTI-2
            if len(raw) < 540:
                raise ValueError(f"{path}: truncated file ({len(raw)} bytes, shorter than a NIfTI-2 header)")
            datatype, bitpix = struct.unpack(f"{endian}hh", raw[12:16])
            dim = list(struct.unpack(f"{endian}8q", raw[16:80]))
            pixdim = list(struct.unpack(f"{endian}8d", raw[104:168]))
            offset = struct.unpack(f"{endian}q", raw[168:176])[0]
            sform_code = struct.unpack(f"{endian}i", raw[348:352])[0]
            rows = [list(struct.unpack(f"{endian}4d", raw[400 + 32 * i: 432 + 32 * i])) for i in range(3)]
            break
    else:
        raise ValueError(f"{path}: not a NIfTI file (header size field is neither 348 nor 540)")
    bitpix = _NIFTI_BITS.get(datatype, bitpix)
    if not math.isfinite(offset) or offset < 0:
        raise ValueError(f"{path}: NIfTI vox_offset = {plain(offset)} is not a byte position")
    return dim, pixdim, int(offset), bitpix, rows if sform_code > 0 else None


def check_nifti(path: str | Path) -> None:
    """Reject a NIfTI file (``.nii`` or ``.nii.gz``) that SimpleITK would read wrongly:
    truncated or corrupt compression, zero/NaN/negative spacing in ``pixdim`` or in the
    ``sform``, or fewer voxel bytes than the header's dimensions need."""
    path = Path(path)
    raw = _read_decoded(path)
    dim, pixdim, offset, bitpix, sform = _header(raw, path)
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise ValueError(f"{path}: NIfTI dim[0] = {ndim} is not a number of dimensions (1-7)")
    sizes = dim[1: ndim + 1]
    if any(n < 1 for n in sizes):
        raise ValueError(f"{path}: NIfTI dimensions {sizes} must all be >= 1")
    spatial = min(ndim, 3)
    names = "xyz"
    for axis in range(spatial):
        value = pixdim[axis + 1]
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{path}: voxel spacing along {names[axis]} is {plain(value)} mm in the "
                             "NIfTI header (pixdim); it must be positive and finite")
    if sform is not None:
        matrix = np.asarray(sform, dtype=float)[:, :3]
        if not np.all(np.isfinite(np.asarray(sform, dtype=float))):
            raise ValueError(f"{path}: the NIfTI sform holds a non-finite value")
        norms = np.linalg.norm(matrix, axis=0)
        for axis in range(spatial):
            if not norms[axis] > 0:
                raise ValueError(f"{path}: voxel spacing along {names[axis]} is {plain(norms[axis])} mm "
                                 "in the NIfTI sform; it must be positive")
    need = offset + int(np.prod(sizes, dtype=np.int64)) * bitpix // 8
    if len(raw) < need:
        raise ValueError(f"{path}: truncated file ({len(raw)} bytes of voxel data and header, the "
                         f"header's {'x'.join(str(n) for n in sizes)} voxels need {need})")


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def check_dicom_files(files: Sequence[str], folder: Path) -> None:
    """One DICOM series, file by file: every file of the folder belongs to it (GDCM leaves a
    truncated or unreadable file out of the series without a word), each has a positive finite
    ``PixelSpacing`` and pixel data as long as its header says, and the slice positions are
    distinct and evenly spaced (ITK reads missing or duplicate slices with a made-up spacing)."""
    import SimpleITK as sitk

    listed = {Path(f).resolve() for f in files}
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and not entry.name.startswith(".") and entry.name.upper() != "DICOMDIR" \
                and entry.resolve() not in listed:
            raise ValueError(f"{entry}: not a readable DICOM file of this folder's series (truncated, "
                             "damaged or another series); remove it or give one series per folder")
    positions = []
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise ValueError(f"{name}: not a readable DICOM file") from None
        if reader.HasMetaDataKey("0028|0030"):
            text = reader.GetMetaData("0028|0030").strip()
            try:
                values = [float(v) for v in text.split("\\")]
            except ValueError:
                raise ValueError(f"{name}: PixelSpacing {text!r} is not two numbers") from None
            if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"{name}: PixelSpacing {text!r} mm must be two positive, finite values")
        cols, rows = (int(n) for n in reader.GetSize()[:2])
        bits = _tag(reader, "0028|0100") or "16"
        transfer = _tag(reader, "0002|0010")
        if transfer in ("", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"):
            need = rows * cols * max(int(bits) if bits.isdigit() else 16, 8) // 8
            _check_dicom_pixel_length(Path(name), need)
        if reader.HasMetaDataKey("0020|0032") and reader.HasMetaDataKey("0020|0037"):
            try:
                position = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
                cosines = np.array([float(v) for v in reader.GetMetaData("0020|0037").split("\\")])
            except ValueError:
                raise ValueError(f"{name}: ImagePositionPatient or ImageOrientationPatient is not "
                                 "numbers") from None
            if position.shape == (3,) and cosines.shape == (6,):
                positions.append((float(position @ np.cross(cosines[:3], cosines[3:])), name))
    _check_slice_positions(positions)


def _tag(reader: object, key: str) -> str:
    return reader.GetMetaData(key).strip("\x00 ") if reader.HasMetaDataKey(key) else ""  # type: ignore[attr-defined]


def _check_slice_positions(positions: list[tuple[float, str]]) -> None:
    if len(positions) < 2:
        return
    positions.sort()
    gaps = np.diff([p for p, _ in positions])
    for gap, (_, name) in zip(gaps, positions[1:]):
        if not gap > 1e-3:
            raise ValueError(f"{name}: slice position {plain(gap)} mm from the "
                             "previous slice: two slices of the series lie at the same position")
    typical = float(np.median(gaps))
    for gap, (_, name) in zip(gaps, positions[1:]):
        if abs(gap - typical) > 0.1 * typical:
            raise ValueError(f"{name}: {plain(gap)} mm from the previous slice where the series "
                             f"spacing is {plain(typical)} mm: a slice is missing or misplaced")


def _check_dicom_pixel_length(path: Path, need: int) -> None:
    """The (7FE0,0010) pixel data element holds at least ``need`` bytes and the file is long
    enough for what it declares."""
    data = path.read_bytes()
    tag = b"\xe0\x7f\x10\x00"
    at = data.rfind(tag)
    if at < 0:
        raise ValueError(f"{path}: no pixel data (7FE0,0010) in this DICOM file")
    # explicit VR ("OW"/"OB" + 2 reserved bytes + 4-byte length) or implicit (4-byte length)
    if data[at + 4: at + 6] in (b"OW", b"OB"):
        length = struct.unpack("<I", data[at + 8: at + 12])[0]
        start = at + 12
    else:
        length = struct.unpack("<I", data[at + 4: at + 8])[0]
        start = at + 8
    have = len(data) - start
    if length != 0xFFFFFFFF and (have < length or length < need):
        raise ValueError(f"{path}: truncated DICOM file ({have} bytes of pixel data, the header's "
                         f"image needs {max(length, need)})")
