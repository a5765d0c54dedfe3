"""``uld evaluate`` end to end: read, align pixel conventions, score, break down, plot.

Pixel conventions. ``uld`` works in 0-based pixels (``DL_info.csv`` values - 1, see
:mod:`uld.data.deeplesion`); DeepLesion's annotation pickles (Lesion Harvester's files, the
RECIST boxes, ``3D-Box.pkl``, the manual 1K set) carry DL_info's 1-based values. When the
ground truth is such a pickle and the detections are ``uld predict`` output (our JSON), the
detections are shifted by +1 pixel in x and y (``pixel_shift="auto"``) so both sides use the
ground truth's convention; Lesion Harvester detection pickles are taken as they are. The
shift moves every box the same way, so it only matters through the +1-pixel IoU convention's
absolute box sizes: a few hundredths of IoU for 20-pixel boxes, enough to flip matches near
the threshold.

Breakdown. Sensitivity by lesion size (long axis in mm when the spacing is known: from the
volumes of a dataset folder, or from ``DL_info.csv`` for DeepLesion sub-volumes; else in
pixels) and by lesion type (DL_info's ``Coarse_lesion_type`` matched to the ground-truth box
it was drawn as; a synthetic dataset's organ from ``lesions.csv``).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uld.data.annotations import Detections, flatten_gt, read_flat_detections
from uld.data.dataset import DatasetFolder
from uld.data.subvolume import parse_subvolume_name
from uld.eval.breakdown import DEEPLESION_LESION_TYPES, Breakdown, breakdown, gt_long_axis
from uld.eval.ground_truth import GroundTruth3D
from uld.eval.protocols import ProtocolResult, evaluate_protocol, read_protocol_gt

if TYPE_CHECKING:  # imported where used: `uld evaluate` on a pickle starts without them
    from uld.data.deeplesion import DLInfo

__all__ = ["Evaluation", "box_types", "evaluate_files", "shift_detections"]


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A protocol's result, its breakdown, and how the inputs were aligned."""

    result: ProtocolResult
    breakdown: Breakdown
    pixel_shift: float
    size_unit: str
    dropped_volumes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "pixel_shift": self.pixel_shift,
                "dropped_volumes": self.dropped_volumes, "breakdown": self.breakdown.to_json()}

    def format(self) -> str:
        lines = [self.result.format()]
        if self.pixel_shift:
            lines.append(f"(detections shifted by {self.pixel_shift:+g} px into the ground truth's "
                         "1-based DL_info pixels)")
        if self.dropped_volumes:
            lines.append(f"({self.dropped_volumes} detection volumes not in the ground truth left out)")
        return "\n".join([*lines, "", self.breakdown.format()])


def shift_detections(detections: Detections, shift: float) -> Detections:
    """Every box moved by ``shift`` pixels in x and y (scores unchanged)."""
    offset = np.array([shift, shift, shift, shift, 0.0])
    return {
        name: [[(z, np.asarray(box, dtype=np.float64) + offset) for z, box in tracklet]
               for tracklet in tracklets]
        for name, tracklets in detections.items()
    }


def _is_uld_json(source: Path) -> bool:
    return source.is_dir() or source.suffix.lower() == ".json"


TypeTable = dict[tuple[str, int], list[tuple[np.ndarray, str]]]
"""``{(volume, z): [(box, type name), ...]}``."""

_SAME_BOX_PX = 0.01
"""Two boxes are the same drawn box when no coordinate differs by more than this (DeepLesion's
pickles round DL_info's values to 3 decimals)."""


def box_types(gt: Mapping[str, Any], types: TypeTable) -> tuple[np.ndarray, dict[int, str]]:
    """Per ground-truth box (``flatten_gt`` order) an integer label and the label names;
    a box with no entry in ``types`` is labelled "unknown"."""
    flat = flatten_gt(gt)
    names: dict[str, int] = {}
    labels = np.zeros(len(flat), dtype=np.int64)
    for i, (v, z, box) in enumerate(zip(flat.volume_index, flat.z, flat.boxes)):
        name = next((t for b, t in types.get((flat.volumes[v], int(z)), [])
                     if np.abs(b - box).max() <= _SAME_BOX_PX), "unknown")
        labels[i] = names.setdefault(name, len(names) + 1)
    return labels, {code: name for name, code in names.items()}


def _deeplesion_types(dl_info: DLInfo, one_based: bool) -> TypeTable:
    shift = 1.0 if one_based else 0.0
    table: TypeTable = {}
    for rec in dl_info.records:
        name = DEEPLESION_LESION_TYPES.get(rec.lesion_type, "unknown")
        table.setdefault((rec.subvolume, rec.z), []).append((rec.box + shift, name))
    return table


def _synthetic_types(root: Path) -> TypeTable:
    """``annotations.csv`` rows joined to ``lesions.csv`` organs through the ``lesion`` column."""
    lesions, annotations = root / "lesions.csv", root / "annotations.csv"
    if not lesions.is_file():
        return {}
    with lesions.open(newline="") as handle:
        organ = {(r["volume"], r["lesion"]): r["organ"] for r in csv.DictReader(handle)}
    table: TypeTable = {}
    with annotations.open(newline="") as handle:
        for r in csv.DictReader(handle):
            if "lesion" in r and (r["volume"], r["lesion"]) in organ:
                box = np.array([float(r[c]) for c in ("x1", "y1", "x2", "y2")])
                table.setdefault((r["volume"], int(float(r["z"]))), []).append(
                    (box, organ[(r["volume"], r["lesion"])]))
    return table


def _folder_spacing(root: Path, names: list[str]) -> dict[str, tuple[float, float]]:
    import SimpleITK as sitk

    folder = DatasetFolder(root)
    spacing = {}
    for name in names:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(folder.volume_path(name)))
        reader.ReadImageInformation()
        spacing[name] = tuple(float(s) for s in reader.GetSpacing()[:2])
    return spacing


def _deeplesion_spacing(dl_info: DLInfo, names: list[str]) -> dict[str, tuple[float, float]]:
    from uld.data.deeplesion import spacing_by_folder

    by_folder = spacing_by_folder(dl_info)
    out = {}
    for name in names:
        folder = parse_subvolume_name(name)[0]
        if folder in by_folder:
            out[name] = by_folder[folder][:2]
    return out


def evaluate_files(
    protocol: str,
    gt_source: str | Path,
    detections_source: str | Path,
    split: str | None = None,
    threshold: float | None = None,
    pixel_shift: float | str = "auto",
    dl_info: str | Path | None = None,
    only_gt_volumes: bool = False,
    **options: Any,
) -> Evaluation:
    """Read ground truth and detections, align their pixels, evaluate, break down.

    pixel_shift: ``"auto"`` (module docstring) or a number of pixels added to every
        detection box. dl_info: a ``DL_info.csv`` for mm sizes and lesion types of DeepLesion
        ground truth. only_gt_volumes: leave out (and count) detections of volumes the ground
        truth does not list, e.g. ``uld predict --paper-set test`` output (1,071 sub-volumes)
        against the manual 1K test set (800); otherwise such a volume is an error naming it.
        options: protocol options (``score`` for ``keyslice``).
    """
    gt_path, det_path = Path(gt_source), Path(detections_source)
    gt = read_protocol_gt(protocol, gt_path, split)
    detections = read_flat_detections(det_path)  # arrays all the way: no per-box objects
    volumes = list(gt.volumes) if isinstance(gt, GroundTruth3D) else list(gt)
    dropped = 0
    if only_gt_volumes:
        listed = set(volumes)
        dropped = sum(name not in listed for name in detections.volumes)
        detections = detections.select(listed)
    pickle_gt = gt_path.is_file()
    if pixel_shift == "auto":
        pixel_shift = 1.0 if pickle_gt and _is_uld_json(det_path) else 0.0
    shift = float(pixel_shift)
    if shift:
        detections = detections.shifted(shift)
    result = evaluate_protocol(protocol, gt, detections, threshold=threshold, **options)

    spacing: Mapping[str, tuple[float, float]] | None = None
    types: TypeTable = {}
    if gt_path.is_dir():
        spacing = _folder_spacing(gt_path, volumes)
        types = _synthetic_types(gt_path)
    elif dl_info is not None:
        from uld.data.deeplesion import read_dl_info

        info = read_dl_info(dl_info, drop_noisy=False)
        spacing = _deeplesion_spacing(info, volumes)
        if not isinstance(gt, GroundTruth3D):
            types = _deeplesion_types(info, one_based=pickle_gt)
    if spacing is not None and any(v not in spacing for v in volumes):
        spacing = None  # a sub-volume without DL_info rows: fall back to pixels for all
    sizes = gt_long_axis(gt, spacing)
    labels, names = (None, {})
    if types and not isinstance(gt, GroundTruth3D):
        labels, names = box_types(gt, types)
    table = breakdown(result.matches, sizes=sizes, size_unit="mm" if spacing else "px",
                      labels=labels, label_names=names)
    return Evaluation(result, table, shift, "mm" if spacing else "px", dropped)
