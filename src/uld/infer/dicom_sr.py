"""DICOM Structured Reports of ``uld predict`` (``--dicom-sr``): what PACS viewers and OHIF read.

One Comprehensive 3D SR per DICOM series, a TID 1500 Measurement Report built with highdicom:

- each lesion (those in ``NAME.lesions.json``) is one Planar ROI measurement group (TID 1410):
  tracking identifier ``lesion-<id>`` with a UID, finding type Lesion (SCT 52988006), the
  algorithm ``uld`` and its version;
- its region is the peak slice's box as a closed POLYLINE (5 points, the first repeated) in that
  image's pixel coordinates, referencing the SOP Instance UID of the file holding that slice;
- its measurement is the detector score, ``Certainty of Finding`` (DCM 111012), unitless (UCUM
  ``1``), in [0, 1].

Coordinates. ``uld`` boxes are pixel-edge coordinates of the volume's slice: pixel ``i`` spans
``[i, i + 1)``, as in DICOM's SCOORD frame, whose (0, 0) is the top-left corner of the image.
``read_scan`` reorients to LPS (a flip or permutation of the axes, never a resampling), so each
slice ``z`` of the volume is one file of the series, possibly with its rows or columns reversed:
the file's geometry (Image Position / Orientation, Pixel Spacing) maps each box corner to the
file's own column and row (:class:`SliceReference`). A series whose files are not axial slices of
the volume (e.g. acquired sagittally) is refused with one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes

import uld
from uld.data.volume import Volume
from uld.infer.export import Lesion

SR_SUFFIX = ".sr.dcm"
SCORE_CONCEPT = codes.DCM.CertaintyOfFinding
_TOL = 1e-3


@dataclass(frozen=True)
class SliceReference:
    """The DICOM file holding slice ``z`` of a volume, and the map of box corners into it.

    dataset: the file's header (no pixels). ``offset`` (2,) and ``matrix`` (2, 2) map a volume
    pixel-edge point ``(x, y)`` to the file's ``(column, row)``:
    ``(column, row) = matrix @ ((x, y) - 0.5 - offset) + 0.5``.
    """

    z: int
    dataset: pydicom.Dataset
    offset: np.ndarray
    matrix: np.ndarray

    def to_image(self, points_xy: np.ndarray) -> np.ndarray:
        """Volume points ``(N, 2)`` (x = column, y = row, pixel edges) -> the file's
        ``(N, 2)`` column, row (DICOM SCOORD)."""
        centres = np.asarray(points_xy, dtype=np.float64) - 0.5 - self.offset
        return centres @ self.matrix.T + 0.5


def series_files(path: str | Path) -> list[Path]:
    """The DICOM files ``read_scan`` reads for ``path``: a folder's one series (GDCM's file list),
    or a single ``.dcm`` file. Anything else is a one-line error naming ``path``."""
    path = Path(path)
    if path.is_file() and path.name.lower().endswith(".dcm"):
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: --dicom-sr needs DICOM input (a series folder or a .dcm file)")
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(path))
    if len(series) != 1:
        raise ValueError(f"{path}: --dicom-sr needs a folder holding one DICOM series, found {len(series)}")
    return [Path(f) for f in reader.GetGDCMSeriesFileNames(str(path), series[0])]


def slice_references(volume: Volume, files: Sequence[Path], where: str) -> dict[int, SliceReference]:
    """``{z: SliceReference}``: which file holds each slice of ``volume`` and how its pixels map.

    ``where`` names the series in messages. Raises ``ValueError`` when a file lacks geometry, is not
    an axial slice of the volume, or two files land on one slice."""
    d = np.asarray(volume.direction, dtype=np.float64).reshape(3, 3)
    origin = np.asarray(volume.origin_xyz, dtype=np.float64)
    spacing = np.asarray(volume.spacing_xyz, dtype=np.float64)
    depth = volume.shape[0]

    def index(point: np.ndarray) -> np.ndarray:
        return (d.T @ (point - origin)) / spacing

    out: dict[int, SliceReference] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        try:
            position = np.array([float(v) for v in ds.ImagePositionPatient])
            cosines = np.array([float(v) for v in ds.ImageOrientationPatient])
            row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"{path}: no image geometry (ImagePositionPatient, ImageOrientationPatient, "
                             "PixelSpacing) to place the report's regions") from None
        along_row, along_col = cosines[:3], cosines[3:]
        v0 = index(position)
        vc = index(position + col_mm * along_row) - v0  # one column to the right
        vr = index(position + row_mm * along_col) - v0  # one row down
        z = round(float(v0[2]))
        if abs(v0[2] - z) > 0.05 or abs(vc[2]) > _TOL or abs(vr[2]) > _TOL or not 0 <= z < depth:
            raise ValueError(f"{where}: {path.name} is not an axial slice of the volume as read "
                             "(--dicom-sr needs an axially acquired series)")
        if z in out:
            raise ValueError(f"{where}: {path.name} and another file both hold slice {z}")
        a = np.array([[vc[0], vr[0]], [vc[1], vr[1]]])  # (column, row) -> (x, y), centres
        out[z] = SliceReference(z, ds, offset=v0[:2], matrix=np.linalg.inv(a))
    return out


def box_polyline(box_xyxy: Sequence[float]) -> np.ndarray:
    """The closed polyline ``(5, 2)`` of a box ``(x1, y1, x2, y2)``: corners clockwise on screen
    from the top left, the first repeated."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]])


def measurement_report(name: str, volume: Volume, lesions: Sequence[Lesion], files: Sequence[Path],
                       series_number: int = 9001) -> hd.sr.Comprehensive3DSR:
    """The SR of one series (module docstring) as a highdicom dataset."""
    refs = slice_references(volume, files, name)
    missing = sorted({lesion.peak_slice for lesion in lesions} - set(refs))
    if missing:
        raise ValueError(f"{name}: no DICOM file holds slice {missing[0]} (a lesion's peak slice)")
    algorithm = hd.sr.AlgorithmIdentification(name="uld", version=uld.__version__)
    groups = []
    for lesion in lesions:
        ref = refs[lesion.peak_slice]
        corners = ref.to_image(box_polyline(lesion.peak_box))  # axis-aligned: a flip or a swap of axes
        points = box_polyline([*corners.min(axis=0), *corners.max(axis=0)]).astype(np.float32)
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=points,
                                   source_image=hd.sr.SourceImageForRegion.from_source_image(ref.dataset))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(),
                                                         identifier=f"lesion-{lesion.lesion_id}"),
            referenced_region=region, finding_type=codes.SCT.Lesion, algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(name=SCORE_CONCEPT, value=float(lesion.score),
                                            unit=codes.UCUM.NoUnits, algorithm_id=algorithm)],
        ))
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="uld", model_name=f"uld {uld.__version__}"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    evidence = [refs[z].dataset for z in sorted(refs)]
    return hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="uld",
        series_description=f"uld lesions ({len(groups)})",
    )


def write_dicom_sr(name: str, volume: Volume, lesions: Sequence[Lesion], source: str | Path,
                   path: str | Path) -> Path:
    """Write ``path``: the SR of the lesions of the DICOM series ``source`` (folder or file)."""
    report = measurement_report(name, volume, lesions, series_files(source))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report.save_as(path)
    return path
