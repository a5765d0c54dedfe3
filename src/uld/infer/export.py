"""Per-volume outputs of ``uld predict`` that other tools open: JSON, CSV, 3D Slicer ROIs, PNGs.

Conventions (one place for voxel -> millimetre):

* A voxel's centre is at its integer index: index ``(i, j, k)`` (column, row, slice) lies at
  ``origin + D @ (spacing * (i, j, k))`` in LPS millimetres (:meth:`Volume.to_physical`;
  ``D`` is the row-major ``direction``, its columns the image axes in LPS).
* ``box_voxel = (x1, y1, z1, x2, y2, z2)``: ``x1, y1, x2, y2`` are continuous pixel coordinates
  in that frame (the union of the lesion's 2D boxes), ``z1 .. z2`` the first and last slice
  (inclusive). A slice stands for a slab one slice spacing thick centred on it, so the box is
  the continuous index box ``[x1, x2] x [y1, y2] x [z1 - 0.5, z2 + 0.5]``.
* ``box_mm``: that index box mapped through the image geometry.
  ``center`` (LPS mm) is the index box's centre through ``to_physical``; ``size`` (mm) is measured
  along the image's own axes, in the order column, row, slice:
  ``((x2 - x1) * sx, (y2 - y1) * sy, (z2 - z1 + 1) * sz)``; ``min``/``max`` (LPS mm) are the
  axis-aligned bounds of the 8 corners in patient space (with a flipped or permuted direction
  they are not ``center -+ size / 2``). The Slicer ROI is ``center``, ``size`` and the image
  axes as ``orientation``, so it hugs the lesion even for oblique or flipped scans.
* ``long_axis_mm``: the longer side, in mm, of the highest-scoring box on the peak slice,
  ``max((x2 - x1) * sx, (y2 - y1) * sy)``. It equals the RECIST long axis of an ellipse
  aligned with the image axes; for a tilted lesion the true long axis lies between it and the
  box diagonal. It inherits whatever margin the detector puts around lesions.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uld.atomic import write_text
from uld.data.annotations import Tracklet
from uld.data.stack import REVIEW_WINDOW_HU
from uld.data.volume import Volume
from uld.infer.overlay import slice_overlay_figure, write_png
from uld.outdir import leaves_folder

__all__ = [
    "CSV_COLUMNS",
    "SLICER_SCHEMA",
    "BoxMM",
    "Lesion",
    "box_mm_from_voxel",
    "lesions_document",
    "lesions_from_tracklets",
    "read_slicer_roi",
    "roi_orientation",
    "slicer_roi_document",
    "voxel_box_corners",
    "write_summary_csv",
    "write_volume_outputs",
]

SLICER_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
    "Resources/Schema/markups-schema-v1.0.3.json#"
)
LESIONS_FORMAT = "uld-lesions"
LESIONS_VERSION = 1
CSV_COLUMNS = (
    "id", "score", "first_slice", "last_slice", "peak_slice",
    "x1", "y1", "z1", "x2", "y2", "z2",
    "center_lps_x_mm", "center_lps_y_mm", "center_lps_z_mm",
    "size_col_mm", "size_row_mm", "size_slice_mm", "long_axis_mm", "tracklets",
)
"""Columns of ``<name>.lesions.csv`` (``lesions.csv`` adds ``volume`` in front). New columns go
at the end, so a reader that takes columns by position keeps working; ``tracklets`` is the
JSON's ``tracklets`` (linked tracklets merged into the lesion, 1: none besides its own)."""
_ORTHONORMAL_TOL = 1e-3
_ROI_RGB = [1.0, 0.816, 0.0]  # the overlays' highlight colour


@dataclass(frozen=True)
class BoxMM:
    """A 3D box in patient millimetres; see the module docstring.

    center, min, max: LPS millimetres (x, y, z of patient space).
    size: millimetres along the image's column, row and slice axes.
    """

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    min: tuple[float, float, float]
    max: tuple[float, float, float]


@dataclass(frozen=True)
class Lesion:
    """One 3D lesion candidate of a volume.

    lesion_id: 1-based rank by ``score``, highest first.
    score: the maximum score of its boxes.
    slice_range: first and last slice index ``z`` (inclusive).
    peak_slice: ``z`` of its highest-scoring box.
    boxes: per box ``(z, x1, y1, x2, y2, score)``, sorted by ``z``; pixels, x = column, y = row.
    box_voxel: ``(x1, y1, z1, x2, y2, z2)``; box_mm, long_axis_mm: see the module docstring.
    tracklets: how many linked tracklets were merged into this lesion (1: none besides its own;
        ``infer.merge_thresh``, :func:`uld.infer.suppress.merge_tracklets`).
    """

    lesion_id: int
    score: float
    slice_range: tuple[int, int]
    peak_slice: int
    boxes: tuple[tuple[int, float, float, float, float, float], ...]
    box_voxel: tuple[float, float, int, float, float, int]
    box_mm: BoxMM
    long_axis_mm: float
    tracklets: int = 1

    @property
    def peak_box(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` of the highest-scoring box (on ``peak_slice``)."""
        best = max(self.boxes, key=lambda b: b[5])
        return best[1], best[2], best[3], best[4]

    @property
    def title(self) -> str:
        """``lesion-<id> (score 0.93)``: the name of its Slicer ROI."""
        return f"lesion-{self.lesion_id} (score {self.score:.2f})"


# --------------------------------------------------------------------------- geometry (pure)


def _direction_matrix(volume: Volume, name: str) -> np.ndarray:
    d = np.asarray(volume.direction, dtype=np.float64)
    if d.shape != (9,) or not np.all(np.isfinite(d)):
        raise ValueError(f"{name}: direction must be 9 finite numbers, got {volume.direction}")
    d = d.reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=_ORTHONORMAL_TOL):
        raise ValueError(f"{name}: direction is not orthonormal: {volume.direction}")
    origin = np.asarray(volume.origin_xyz, dtype=np.float64)
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        raise ValueError(f"{name}: origin must be 3 finite numbers, got {volume.origin_xyz}")
    return d


def voxel_box_corners(box_voxel: Sequence[float]) -> np.ndarray:
    """The 8 corners ``(8, 3)`` as continuous indices ``(x, y, z)`` of ``box_voxel``
    ``(x1, y1, z1, x2, y2, z2)``: ``[x1, x2] x [y1, y2] x [z1 - 0.5, z2 + 0.5]``."""
    x1, y1, z1, x2, y2, z2 = (float(v) for v in box_voxel)
    xs, ys, zs = (x1, x2), (y1, y2), (z1 - 0.5, z2 + 0.5)
    return np.array([(x, y, z) for z in zs for y in ys for x in xs], dtype=np.float64)


def box_mm_from_voxel(box_voxel: Sequence[float], volume: Volume) -> BoxMM:
    """``box_voxel`` ``(x1, y1, z1, x2, y2, z2)`` -> :class:`BoxMM` through ``volume``'s geometry."""
    x1, y1, z1, x2, y2, z2 = (float(v) for v in box_voxel)
    corners = volume.to_physical(voxel_box_corners(box_voxel))
    center = volume.to_physical(np.array([(x1 + x2) / 2, (y1 + y2) / 2, (z1 + z2) / 2]))[0]
    sx, sy, sz = (float(s) for s in volume.spacing_xyz)
    size = ((x2 - x1) * sx, (y2 - y1) * sy, (z2 - z1 + 1.0) * sz)
    return BoxMM(center=_floats(center), size=_floats(size),
                 min=_floats(corners.min(axis=0)), max=_floats(corners.max(axis=0)))


def roi_orientation(volume: Volume) -> np.ndarray:
    """The Slicer ROI's ``orientation`` ``(3, 3)`` in LPS: columns are the image's column, row and
    slice axes (``direction``). Slicer's ROI-to-world matrix is meant to be a rotation, so when
    ``det(direction) < 0`` the slice axis is negated; the box (centre -+ size / 2 along each axis)
    is the same."""
    d = _direction_matrix(volume, "volume").copy()
    if np.linalg.det(d) < 0:
        d[:, 2] = -d[:, 2]
    return d


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


# --------------------------------------------------------------------------- tracklets -> lesions


def _tracklet_boxes(
    tracklet: Tracklet, volume: Volume, name: str, index: int
) -> tuple[tuple[int, float, float, float, float, float], ...]:
    where = f"{name}: tracklet {index}"
    if len(tracklet) == 0:
        raise ValueError(f"{where} has no boxes")
    n_slices = volume.shape[0]
    rows = []
    for item in tracklet:
        if len(item) != 2:
            raise ValueError(f"{where}: an item is (z, [x1, y1, x2, y2, score]), got {item!r}")
        z_raw, box = item
        z = int(z_raw)
        if z != z_raw or not 0 <= z < n_slices:
            raise ValueError(f"{where}: slice {z_raw!r} is not an index of the {n_slices} slices")
        values = np.asarray(box, dtype=np.float64).ravel()
        if values.shape[0] < 5 or not np.all(np.isfinite(values[:5])):
            raise ValueError(f"{where}: slice {z} box must be 5 finite numbers, got {values.tolist()}")
        x1, y1, x2, y2, score = (float(v) for v in values[:5])
        if x2 < x1 or y2 < y1:
            raise ValueError(f"{where}: slice {z} box {[x1, y1, x2, y2]} has x2 < x1 or y2 < y1")
        rows.append((z, x1, y1, x2, y2, score))
    return tuple(sorted(rows, key=lambda r: (r[0], -r[5])))


def _lesion(lesion_id: int, boxes: tuple[tuple[int, float, float, float, float, float], ...],
            volume: Volume, tracklets: int = 1) -> Lesion:
    arr = np.array([b[1:5] for b in boxes], dtype=np.float64)
    zs = [b[0] for b in boxes]
    best = max(boxes, key=lambda b: b[5])  # ties: the first, lowest z
    box_voxel = (float(arr[:, 0].min()), float(arr[:, 1].min()), min(zs),
                 float(arr[:, 2].max()), float(arr[:, 3].max()), max(zs))
    sx, sy = float(volume.spacing_xyz[0]), float(volume.spacing_xyz[1])
    return Lesion(
        lesion_id=lesion_id,
        score=best[5],
        slice_range=(min(zs), max(zs)),
        peak_slice=best[0],
        boxes=boxes,
        box_voxel=box_voxel,
        box_mm=box_mm_from_voxel(box_voxel, volume),
        long_axis_mm=max((best[3] - best[1]) * sx, (best[4] - best[2]) * sy),
        tracklets=tracklets,
    )


def lesions_from_tracklets(
    tracklets: Sequence[Tracklet], volume: Volume, min_score: float = 0.0, *, name: str = "volume",
    merged: Sequence[int] | None = None,
) -> list[Lesion]:
    """Tracklets ``[(z, ndarray([x1, y1, x2, y2, score])), ...]`` of ``volume`` -> lesions.

    Lesions scoring below ``min_score`` are dropped; the rest are numbered 1, 2, ... by score,
    highest first (ties: lower first slice, then smaller x1, y1). ``name`` is only for messages.
    ``merged``: per tracklet, how many linked tracklets it holds (``Lesion.tracklets``; default 1).
    Raises ``ValueError`` naming ``name`` and the offending value for a slice outside the volume,
    a non-finite or inverted box, an empty tracklet or a non-orthonormal direction.
    """
    _direction_matrix(volume, name)
    counts = [1] * len(tracklets) if merged is None else [int(c) for c in merged]
    if len(counts) != len(tracklets) or any(c < 1 for c in counts):
        raise ValueError(f"{name}: merged must give a count >= 1 for each of the {len(tracklets)} "
                         f"tracklets, got {list(merged or [])}")
    kept = []
    for index, tracklet in enumerate(tracklets):
        boxes = _tracklet_boxes(tracklet, volume, name, index)
        score = max(b[5] for b in boxes)
        if score >= min_score:
            kept.append((score, boxes, counts[index]))
    kept.sort(key=lambda sb: (-sb[0], sb[1][0][0], min(b[1] for b in sb[1]), min(b[2] for b in sb[1])))
    return [_lesion(rank, boxes, volume, count) for rank, (_, boxes, count) in enumerate(kept, start=1)]


# --------------------------------------------------------------------------- JSON / CSV


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits) + 0.0  # + 0.0 turns -0.0 into 0.0


def _rs(values: Sequence[float], digits: int = 4) -> list[float]:
    return [_r(v, digits) for v in values]


def _lesion_json(lesion: Lesion) -> dict[str, Any]:
    x1, y1, z1, x2, y2, z2 = lesion.box_voxel
    mm = lesion.box_mm
    return {
        "id": lesion.lesion_id,
        "score": _r(lesion.score, 6),
        "slice_range": list(lesion.slice_range),
        "peak_slice": lesion.peak_slice,
        "box_voxel": [_r(x1), _r(y1), int(z1), _r(x2), _r(y2), int(z2)],
        "box_mm": {"center": _rs(mm.center), "size": _rs(mm.size), "min": _rs(mm.min), "max": _rs(mm.max)},
        "long_axis_mm": _r(lesion.long_axis_mm),
        "tracklets": lesion.tracklets,
        "boxes": [[int(z), *_rs((a, b, c, d)), _r(s, 6)] for z, a, b, c, d, s in lesion.boxes],
    }


def lesions_document(
    name: str, volume: Volume, lesions: Sequence[Lesion], source: str | None = None
) -> dict[str, Any]:
    """The ``<name>.lesions.json`` content as a dict (``format``, ``version``, ``geometry``, ...);
    ``source``: where the scan was read from (file, folder or sub-volume), when known."""
    return {
        "format": LESIONS_FORMAT,
        "version": LESIONS_VERSION,
        "volume": name,
        "source": source,
        "geometry": {
            "spacing": _floats(volume.spacing_xyz),
            "origin": _floats(volume.origin_xyz),
            "direction": _floats(volume.direction),
            "shape": list(volume.shape),
        },
        "conventions": {
            "shape": "[z, y, x] (slices, rows, columns); spacing and origin are x, y, z",
            "coordinates": "LPS millimetres; voxel centres at integer indices",
            "box_voxel": "[x1, y1, z1, x2, y2, z2]: pixels x1..x2, y1..y2; slices z1..z2 inclusive",
            "box_mm": "center/min/max in LPS mm; size in mm along the image column, row, slice axes",
            "long_axis_mm": "longer side in mm of the peak slice's box",
            "tracklets": "linked tracklets merged into this lesion (1: none besides its own)",
        },
        "lesions": [_lesion_json(lesion) for lesion in lesions],
    }


def _csv_row(lesion: Lesion) -> list[Any]:
    x1, y1, z1, x2, y2, z2 = lesion.box_voxel
    return [
        lesion.lesion_id, _r(lesion.score, 6), lesion.slice_range[0], lesion.slice_range[1],
        lesion.peak_slice, _r(x1), _r(y1), int(z1), _r(x2), _r(y2), int(z2),
        *_rs(lesion.box_mm.center), *_rs(lesion.box_mm.size), _r(lesion.long_axis_mm),
        lesion.tracklets,
    ]


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_summary_csv(volumes: Mapping[str, Sequence[Lesion]], path: str | Path) -> Path:
    """One CSV over all volumes: a ``volume`` column, then :data:`CSV_COLUMNS`; atomically."""
    rows = [[name, *_csv_row(lesion)] for name, lesions in volumes.items() for lesion in lesions]
    return write_text(path, _csv_text(("volume", *CSV_COLUMNS), rows))


# --------------------------------------------------------------------------- 3D Slicer markups


def slicer_roi_document(lesion: Lesion, volume: Volume) -> dict[str, Any]:
    """One lesion as a 3D Slicer markups file (schema v1.0.3): an ROI of type ``Box`` in LPS,
    ``center`` and ``size`` from ``lesion.box_mm``, ``orientation`` from :func:`roi_orientation`
    (row-major 3x3; its columns are the ROI's axes), the centre as its one control point."""
    center = _rs(lesion.box_mm.center, 6)
    orientation = _rs(roi_orientation(volume).ravel(), 9)
    name = lesion.title
    z1, z2 = lesion.slice_range
    markup = {
        "type": "ROI",
        "name": name,
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": True,
        "fixedNumberOfControlPoints": False,
        "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": 1,
        "roiType": "Box",
        "center": center,
        "orientation": orientation,
        "size": _rs(lesion.box_mm.size, 6),
        "controlPoints": [
            {
                "id": "1",
                "label": name,
                "description": (f"uld lesion {lesion.lesion_id}: score {lesion.score:.4f}, slices {z1}-{z2}, "
                                f"peak slice {lesion.peak_slice}, long axis {lesion.long_axis_mm:.1f} mm"),
                "associatedNodeID": "",
                "position": center,
                "orientation": orientation,
                "selected": True,
                "locked": True,
                "visibility": True,
                "positionStatus": "defined",
            }
        ],
        "measurements": [
            {"name": "volume", "enabled": False, "units": "cm3", "printFormat": "%-#4.4g%s"}
        ],
        "display": {
            "visibility": True,
            "opacity": 1.0,
            "color": _ROI_RGB,
            "selectedColor": _ROI_RGB,
            "activeColor": [0.4, 1.0, 0.0],
            "propertiesLabelVisibility": True,
            "pointLabelsVisibility": False,
            "textScale": 3.0,
            "glyphType": "Sphere3D",
            "glyphScale": 1.0,
            "glyphSize": 5.0,
            "useGlyphScale": True,
            "sliceProjection": False,
            "sliceProjectionUseFiducialColor": True,
            "sliceProjectionOutlinedBehindSlicePlane": False,
            "sliceProjectionColor": [1.0, 1.0, 1.0],
            "sliceProjectionOpacity": 0.6,
            "lineThickness": 0.2,
            "lineColorFadingStart": 1.0,
            "lineColorFadingEnd": 10.0,
            "lineColorFadingSaturation": 1.0,
            "lineColorFadingHueOffset": 0.0,
            "handlesInteractive": False,
            "snapMode": "toVisibleSurface",
        },
    }
    return {"@schema": SLICER_SCHEMA, "markups": [markup]}


def _numbers(markup: Mapping[str, Any], key: str, count: int, path: Path) -> np.ndarray:
    values = markup.get(key)
    ok = isinstance(values, list) and len(values) == count and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not ok:
        raise ValueError(f"{path}: ROI '{key}' must be {count} finite numbers, got {values!r}")
    return np.asarray(values, dtype=np.float64)


def read_slicer_roi(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a one-ROI Slicer markups file -> ``(center_lps (3,), size (3,), orientation (3, 3))``.

    ``orientation``'s columns are the ROI's axes in LPS; the box's corners are
    ``center + orientation @ (+-size / 2)``. Checks the schema's required fields (``@schema``,
    ``markups``, ``type``) and what an ROI box needs (``roiType`` Box, ``center``, ``size``,
    ``orientation``, units mm); a file in RAS is converted to LPS as Slicer does (x and y negated).
    Raises a one-line ``ValueError`` naming the file otherwise.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON file ({exc})") from exc
    schema = doc.get("@schema") if isinstance(doc, dict) else None
    if not isinstance(schema, str) or "markups-schema" not in schema:
        raise ValueError(f"{path}: not a Slicer markups file (no markups '@schema' string)")
    markups = doc.get("markups")
    if not isinstance(markups, list) or len(markups) != 1 or not isinstance(markups[0], dict):
        count = len(markups) if isinstance(markups, list) else markups
        raise ValueError(f"{path}: 'markups' must be a list of exactly one markup, got {count!r}")
    markup = markups[0]
    if markup.get("type") != "ROI":
        raise ValueError(f"{path}: markup type must be 'ROI', got {markup.get('type')!r}")
    if markup.get("roiType", "Box") != "Box":
        raise ValueError(f"{path}: roiType must be 'Box', got {markup.get('roiType')!r}")
    system = markup.get("coordinateSystem", "LPS")
    if system not in ("LPS", "RAS"):
        raise ValueError(f"{path}: coordinateSystem must be 'LPS' or 'RAS', got {system!r}")
    units = markup.get("coordinateUnits", "mm")
    if units != "mm" and not (isinstance(units, list) and units[:1] == ["mm"]):
        raise ValueError(f"{path}: coordinateUnits must be 'mm', got {units!r}")
    center = _numbers(markup, "center", 3, path)
    size = _numbers(markup, "size", 3, path)
    if np.any(size < 0):
        raise ValueError(f"{path}: ROI 'size' must not be negative, got {size.tolist()}")
    orientation = _numbers(markup, "orientation", 9, path).reshape(3, 3)
    if not np.allclose(orientation.T @ orientation, np.eye(3), atol=_ORTHONORMAL_TOL):
        raise ValueError(f"{path}: ROI 'orientation' is not orthonormal: {orientation.ravel().tolist()}")
    if system == "RAS":
        flip = np.diag([-1.0, -1.0, 1.0])
        center, orientation = flip @ center, flip @ orientation
    return center, size, orientation


# --------------------------------------------------------------------------- all outputs of a volume


def _check_name(name: str) -> None:
    if leaves_folder(name):
        raise ValueError(f"volume name {name!r} cannot name files (empty, '.', '..' or has a path separator)")


def _remove_stale(folder: Path, name: str, suffix: str, keep: set[Path]) -> None:
    """Delete ``<name>.lesion-<n><suffix>`` files of an earlier run that this run did not write."""
    if not folder.is_dir():
        return
    pattern = re.compile(re.escape(name) + r"\.lesion-\d+" + re.escape(suffix))
    for path in folder.iterdir():
        if pattern.fullmatch(path.name) and path not in keep and path.is_file():
            path.unlink()


def write_volume_outputs(
    name: str,
    volume: Volume,
    lesions: Sequence[Lesion],
    out_dir: str | Path,
    overlays: bool = True,
    max_overlays: int = 20,
    window: tuple[float, float] = REVIEW_WINDOW_HU,
    source: str | None = None,
) -> dict[str, Path | list[Path]]:
    """Write one volume's outputs into ``out_dir``, each file atomically:

    ``<name>.lesions.json``, ``<name>.lesions.csv``, ``slicer/<name>.lesion-<id>.mrk.json`` (one ROI
    per lesion) and, with ``overlays``, ``overlays/<name>.lesion-<id>.png`` for the
    ``max_overlays`` highest-scoring lesions (peak slice windowed to ``window`` HU, every box of
    that slice thin, the lesion's box bold). ROI and overlay files of this volume left by an
    earlier run that this run did not write are removed (the overlay folder only when
    ``overlays``), so the folders always match the JSON.

    Returns ``{"json": path, "csv": path, "slicer": [paths], "overlays": [paths]}``.
    """
    _check_name(name)
    if max_overlays < 0:
        raise ValueError(f"{name}: max_overlays must be >= 0, got {max_overlays}")
    ids = [lesion.lesion_id for lesion in lesions]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name}: lesion ids must be unique (they name files), got {ids}")
    _direction_matrix(volume, name)
    if overlays:
        _check_window(window)  # a bad window fails before any file is written
    out_dir = Path(out_dir)
    ranked = sorted(lesions, key=lambda lesion: (-lesion.score, lesion.lesion_id))

    document = json.dumps(lesions_document(name, volume, ranked, source), indent=2, allow_nan=False) + "\n"
    json_path = write_text(out_dir / f"{name}.lesions.json", document)
    rows = [_csv_row(lesion) for lesion in ranked]
    csv_path = write_text(out_dir / f"{name}.lesions.csv", _csv_text(CSV_COLUMNS, rows))

    slicer_dir = out_dir / "slicer"
    slicer_paths = [
        write_text(slicer_dir / f"{name}.lesion-{lesion.lesion_id}.mrk.json",
                   json.dumps(slicer_roi_document(lesion, volume), indent=4, allow_nan=False) + "\n")
        for lesion in ranked
    ]
    _remove_stale(slicer_dir, name, ".mrk.json", set(slicer_paths))

    overlay_paths: list[Path] = []
    if overlays:
        overlay_dir = out_dir / "overlays"
        for lesion in ranked[:max_overlays]:
            overlay_paths.append(_write_overlay(overlay_dir / f"{name}.lesion-{lesion.lesion_id}.png",
                                                name, volume, lesion, ranked, window))
        _remove_stale(overlay_dir, name, ".png", set(overlay_paths))
    return {"json": json_path, "csv": csv_path, "slicer": slicer_paths, "overlays": overlay_paths}


def _write_overlay(path: Path, name: str, volume: Volume, lesion: Lesion, all_lesions: Sequence[Lesion],
                   window: tuple[float, float]) -> Path:
    z = lesion.peak_slice
    peak = lesion.peak_box
    others = [b[1:5] for other in all_lesions for b in other.boxes if b[0] == z]
    others.remove(peak)  # drawn bold instead
    sx, sy = float(volume.spacing_xyz[0]), float(volume.spacing_xyz[1])
    width, height = (peak[2] - peak[0]) * sx, (peak[3] - peak[1]) * sy
    title = (f"{name}  slice {z}  lesion #{lesion.lesion_id}  score {lesion.score:.2f}  "
             f"{width:.1f} x {height:.1f} mm (long axis {lesion.long_axis_mm:.1f} mm)")
    figure = slice_overlay_figure(volume.hu[z], (sx, sy), others, peak,
                                  label=f"#{lesion.lesion_id} {lesion.score:.2f}", title=title, window=window)
    return write_png(figure, path)


def _check_window(window: tuple[float, float]) -> None:
    low, high = (float(v) for v in window)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"a HU window is (low, high) with low < high, got {tuple(window)}")

