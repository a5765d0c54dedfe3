"""Ground truth and detections for the 3D evaluations: in-memory types and file formats.

In memory (Lesion Harvester's layouts)
--------------------------------------

Ground truth, ``GroundTruth = dict[str, list[tuple[int, ndarray[4]]]]``:
    ``{volume: [(z, box), ...]}``: the 2D boxes drawn on slice ``z`` (0-based offset from
    the volume's first slice), ``box`` = ``[x1, y1, x2, y2]`` float64 pixels. Every volume
    of the set is a key, also one without any box (it still counts in "per volume").
    Readers sort each volume's boxes by ``z`` (stable: file order within a slice).

Detections, ``Detections = dict[str, list[Tracklet]]``:
    ``{volume: [tracklet, ...]}``, ``Tracklet = list[tuple[int, ndarray[5]]]`` =
    ``[(z, [x1, y1, x2, y2, score]), ...]``: one 3D lesion as 2D boxes on consecutive (or
    any) slices. Its score is the maximum of its box scores. A volume may map to ``[]``.

Validation rules (readers, writers and the evaluation apply them): ``z`` is an integer
``0 <= z < 2**31`` (integer-valued floats are accepted and converted); every box value is
finite; ``x1 <= x2`` and ``y1 <= y2`` (a zero-width box is one pixel wide under the +1
convention); a tracklet has at least one box; volume names are non-empty strings.
A violation raises :class:`EvalFormatError` (a ``ValueError``) with a one-line message
naming the file (or ``"detections"`` / ``"ground truth"`` for in-memory data), the volume,
the tracklet and box index, and the offending value.

Files
-----

Ground truth (:func:`read_gt`):

- a Lesion Harvester 2D annotation pickle ``{"<volume>.annot" or "<volume>":
  {z: [[x1, y1, x2, y2, z, z], ...]}}`` (``Revised-Test1071.pkl`` and friends): the
  ``.annot`` suffix is stripped, ``boxes[:4]`` kept, ``z`` taken as an int;
- a dataset folder of the generic format (:class:`uld.data.dataset.DatasetFolder`): the
  rows of ``annotations.csv`` for the volumes of one split; every volume of the split is
  present, also those without rows.

Detections (:func:`read_detections`):

- a Lesion Harvester detection pickle ``{"<volume>": [tracklet, ...]}`` with
  ``tracklet = [(z, array([x1, y1, x2, y2, score])), ...]``;
- our JSON file (or a folder holding ``detections.json``)::

    {"format": "uld-detections",
     "version": 1,
     "volumes": {"<volume>": [{"score": s, "boxes": [[z, x1, y1, x2, y2, score], ...]},
                              ...]}}

  ``score`` is the tracklet's score and must equal the maximum of its box scores (within
  1e-6; it may be omitted); other keys, at the top level or in a tracklet object, are
  ignored. Numbers are written with Python's shortest round-trip repr, so a JSON round
  trip is exact.

Pickles are read with :func:`uld.safe_pickle.load_pickle` (no code runs) and all writers
are atomic (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uld.atomic import write_text
from uld.data.dataset import DatasetFolder
from uld.messages import short_repr
from uld.safe_pickle import dump_pickle, load_pickle, no_gc

try:  # a fast parser (a dependency); the standard library's when it is missing
    import orjson
except ImportError:  # pragma: no cover - orjson is installed with uld
    orjson = None

__all__ = [
    "DETECTIONS_FILENAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_Z",
    "Detections",
    "EvalFormatError",
    "FlatDetections",
    "FlatGroundTruth",
    "GroundTruth",
    "Tracklet",
    "flatten_detections",
    "flatten_gt",
    "gt_from_folder",
    "read_detections",
    "read_flat_detections",
    "read_gt",
    "validate_detections",
    "write_detections_json",
    "write_detections_pickle",
]

FORMAT_NAME = "uld-detections"
FORMAT_VERSION = 1
DETECTIONS_FILENAME = "detections.json"
MAX_Z = 2**31
"""Slice indices must be below this (keeps ``volume * MAX_Z + z`` keys inside int64)."""

Tracklet = list[tuple[int, np.ndarray]]
GroundTruth = dict[str, list[tuple[int, np.ndarray]]]
Detections = dict[str, list[Tracklet]]

_BOX_NAMES = ("x1", "y1", "x2", "y2", "score")
_SCORE_TOLERANCE = 1e-6
_REAL_KINDS = ("i", "u", "f")


class EvalFormatError(ValueError):
    """Malformed ground truth or detections; the message names the file and the entry."""


# ---------------------------------------------------------------------------------------------
# Flat (array) views used by the evaluation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FlatGroundTruth:
    """Ground truth as arrays, in dict order then list order.

    volumes (tuple[str, ...]): every volume, in dict order (also those without a box).
    volume_index (ndarray[P], int64): volume of each box, an index into ``volumes``.
    z (ndarray[P], int64): slice of each box.
    boxes (ndarray[P, 4], float64): x1, y1, x2, y2.
    """

    volumes: tuple[str, ...]
    volume_index: np.ndarray
    z: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.z)


@dataclass(frozen=True, eq=False)
class FlatDetections:
    """Detections as arrays, in dict order then tracklet order then box order.

    volumes (tuple[str, ...]): the volumes named by the detections (also those mapping to
        ``[]``), in dict order.
    tracklet_volume (ndarray[T], int64): volume of each tracklet, an index into ``volumes``.
    tracklet_ptr (ndarray[T + 1], int64): tracklet ``t`` owns rows
        ``tracklet_ptr[t]:tracklet_ptr[t + 1]`` of ``z`` and ``boxes`` (never empty).
    z (ndarray[N], int64): slice of each box.
    boxes (ndarray[N, 5], float64): x1, y1, x2, y2, score.
    """

    volumes: tuple[str, ...]
    tracklet_volume: np.ndarray
    tracklet_ptr: np.ndarray
    z: np.ndarray
    boxes: np.ndarray

    @property
    def n_tracklets(self) -> int:
        return len(self.tracklet_volume)

    def tracklet_scores(self) -> np.ndarray:
        """``(T,)`` float64: each tracklet's score, the maximum of its box scores."""
        if self.n_tracklets == 0:
            return np.zeros(0, dtype=np.float64)
        return np.maximum.reduceat(self.boxes[:, 4], self.tracklet_ptr[:-1])

    def select(self, keep: Iterable[str]) -> FlatDetections:
        """Only the volumes named in ``keep`` (order kept; tracklets and boxes unchanged)."""
        keep = set(keep)
        mask_v = np.array([name in keep for name in self.volumes], dtype=bool)
        if mask_v.all():
            return self
        new_index = np.cumsum(mask_v) - 1
        keep_t = mask_v[self.tracklet_volume]
        counts = np.diff(self.tracklet_ptr)
        keep_b = np.repeat(keep_t, counts)
        ptr = np.zeros(int(keep_t.sum()) + 1, dtype=np.int64)
        np.cumsum(counts[keep_t], out=ptr[1:])
        return FlatDetections(
            volumes=tuple(name for name, k in zip(self.volumes, mask_v) if k),
            tracklet_volume=new_index[self.tracklet_volume[keep_t]],
            tracklet_ptr=ptr,
            z=self.z[keep_b],
            boxes=self.boxes[keep_b],
        )

    def shifted(self, shift: float) -> FlatDetections:
        """Every box moved by ``shift`` pixels in x and y (scores unchanged; float64 sums, as
        adding ``[shift] * 4 + [0]`` to each box row)."""
        offset = np.array([shift, shift, shift, shift, 0.0])
        return FlatDetections(self.volumes, self.tracklet_volume, self.tracklet_ptr, self.z,
                              self.boxes + offset)

    def to_dict(self) -> Detections:
        """Back to the in-memory layout (float64 box rows, int ``z``)."""
        out: Detections = {name: [] for name in self.volumes}
        zs = self.z.tolist()
        for t in range(self.n_tracklets):
            s, e = int(self.tracklet_ptr[t]), int(self.tracklet_ptr[t + 1])
            out[self.volumes[self.tracklet_volume[t]]].append(
                [(zs[i], self.boxes[i].copy()) for i in range(s, e)]
            )
        return out


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise EvalFormatError(f"{where}: volume name {short_repr(name)} is not a non-empty string")
    return name


def _z_problem(z: Any) -> str | None:
    """Why ``z`` is not a slice index (None when it is one)."""
    if isinstance(z, (bool, np.bool_)) or not isinstance(z, (int, float, np.integer, np.floating)):
        return f"z = {short_repr(z)} is not a number"
    zf = float(z)
    if not math.isfinite(zf) or zf != int(zf) or not (0 <= zf < MAX_Z):
        return f"z = {short_repr(z)} is not a slice index (an integer 0 <= z < 2**31)"
    return None


def _box_problem(box: Any, names: Sequence[str]) -> str | None:
    """Why ``box`` is not a valid row with ``names`` (None when it is one)."""
    try:
        arr = np.asarray(box)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.dtype.kind not in _REAL_KINDS:
        return f"box {short_repr(box)} is not a row of numbers"
    arr = arr.astype(np.float64)
    if arr.ndim != 1 or arr.shape[0] != len(names):
        return (f"box {short_repr(box)} has shape {arr.shape}, expected {len(names)} values "
                f"[{', '.join(names)}]")
    values = arr.tolist()  # Python floats: their repr reads "1.5", not "np.float64(1.5)"
    for name, value in zip(names, values):
        if not math.isfinite(value):
            return f"{name} = {value!r} is not finite"
    if values[2] < values[0]:
        return f"x2 = {values[2]!r} < x1 = {values[0]!r}"
    if values[3] < values[1]:
        return f"y2 = {values[3]!r} < y1 = {values[1]!r}"
    return None


def _check_box_arrays(z: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: rows that break a rule (arrays already float64, right shape)."""
    bad = ~np.isfinite(boxes).all(axis=1)
    bad |= ~np.isfinite(z) | (z != np.floor(z)) | (z < 0) | (z >= MAX_Z)
    with np.errstate(invalid="ignore"):
        bad |= (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    return bad


def _local(trk_volume: list[int], t: int) -> int:
    """Index of global tracklet ``t`` within its volume (``trk_volume`` is non-decreasing)."""
    return t - bisect.bisect_left(trk_volume, trk_volume[t])


def _locate(ptr: list[int], index: int) -> tuple[int, int]:
    """(tracklet, box-within-tracklet) of flat box ``index``."""
    t = int(np.searchsorted(np.asarray(ptr), index, side="right")) - 1
    return t, index - ptr[t]


def _finish_flat(
    where: str,
    volumes: list[str],
    trk_volume: list[int],
    ptr: list[int],
    zs: Sequence[Any],
    boxes: Sequence[Any],
    row_desc: str,
    rows: Sequence[Any] | None = None,
) -> FlatDetections:
    """Validate the collected values as arrays; name the first offender on failure.

    ``zs`` and ``boxes`` may be arrays already; ``rows`` (``[z, *box]`` each), when given,
    are the values as read, which the messages quote."""

    def read_as(i: int) -> tuple[Any, Any]:
        return (rows[i][0], rows[i][1:]) if rows is not None else (zs[i], boxes[i])

    def fail(i: int, problem: str) -> None:
        t, b = _locate(ptr, i)
        raise EvalFormatError(
            f"{where}: volume {volumes[trk_volume[t]]!r}, tracklet {_local(trk_volume, t)}, "
            f"{row_desc} {b}: {problem}"
        )

    n = len(zs)
    try:
        box_arr = np.asarray(boxes) if n else np.zeros((0, 5))
        z_arr = np.asarray(zs) if n else np.zeros(0)
        ok_shape = (
            box_arr.ndim == 2 and box_arr.shape[1] == 5 and z_arr.ndim == 1
            and box_arr.dtype.kind in _REAL_KINDS and z_arr.dtype.kind in _REAL_KINDS
        )
    except (TypeError, ValueError, OverflowError):
        ok_shape = False
    if ok_shape:
        box_arr = box_arr.astype(np.float64, copy=False)
        z_arr = z_arr.astype(np.float64, copy=False)
    else:
        for i in range(n):
            z, box = read_as(i)
            problem = _z_problem(z) or _box_problem(box, _BOX_NAMES)
            if problem:
                fail(i, problem)
        raise EvalFormatError(f"{where}: boxes are not rows of 5 numbers")  # pragma: no cover
    bad = _check_box_arrays(z_arr, box_arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        z, box = read_as(i)
        fail(i, _z_problem(z) or _box_problem(box, _BOX_NAMES) or "invalid box")
    return FlatDetections(
        volumes=tuple(volumes),
        tracklet_volume=np.asarray(trk_volume, dtype=np.int64),
        tracklet_ptr=np.asarray(ptr, dtype=np.int64),
        z=z_arr.astype(np.int64),
        boxes=box_arr,
    )


def flatten_detections(
    detections: Mapping[str, Any] | FlatDetections, where: str = "detections"
) -> FlatDetections:
    """Validate in-memory detections (Lesion Harvester layout) and return them as arrays.

    ``detections``: ``{volume: [[(z, [x1, y1, x2, y2, score]), ...], ...]}``; boxes may be
    arrays, lists or tuples of any real dtype (they become float64). Raises
    :class:`EvalFormatError` naming ``where``, the volume, tracklet, box and value.
    A :class:`FlatDetections` (validated when it was made) is returned as it is.
    """
    if isinstance(detections, FlatDetections):
        return detections
    if not isinstance(detections, Mapping):
        raise EvalFormatError(
            f"{where}: expected a dict {{volume: [tracklet, ...]}}, got {type(detections).__name__}"
        )
    volumes: list[str] = []
    trk_volume: list[int] = []
    ptr: list[int] = [0]
    zs: list[Any] = []
    boxes: list[Any] = []
    for v, (name, tracklets) in enumerate(detections.items()):
        volumes.append(_check_name(name, where))
        if isinstance(tracklets, Mapping) or not isinstance(tracklets, (list, tuple)):
            hint = " (is this a ground-truth file?)" if isinstance(tracklets, Mapping) else ""
            raise EvalFormatError(
                f"{where}: volume {name!r}: expected a list of tracklets, got "
                f"{type(tracklets).__name__}{hint}"
            )
        for t, tracklet in enumerate(tracklets):
            if not isinstance(tracklet, (list, tuple)) or len(tracklet) == 0:
                what = "an empty tracklet" if isinstance(tracklet, (list, tuple)) else (
                    f"a {type(tracklet).__name__}")
                raise EvalFormatError(
                    f"{where}: volume {name!r}, tracklet {t}: expected a non-empty list of "
                    f"(z, [x1, y1, x2, y2, score]), got {what}"
                )
            try:  # fast path; anything odd is caught here or by the array checks
                for z, box in tracklet:
                    zs.append(z)
                    boxes.append(box)
            except (TypeError, ValueError):
                for b, item in enumerate(tracklet):
                    if not isinstance(item, (list, tuple)) or len(item) != 2:
                        raise EvalFormatError(
                            f"{where}: volume {name!r}, tracklet {t}, box {b}: expected "
                            f"(z, [x1, y1, x2, y2, score]), got {short_repr(item)}"
                        ) from None
                raise  # pragma: no cover - unreachable: every item is a 2-sequence
            ptr.append(len(zs))
            trk_volume.append(v)
    return _finish_flat(where, volumes, trk_volume, ptr, zs, boxes, "box")


def validate_detections(detections: Mapping[str, Any], where: str = "detections") -> Detections:
    """A validated copy of ``detections`` with int ``z`` and float64 ``ndarray[5]`` boxes."""
    return flatten_detections(detections, where).to_dict()


def flatten_gt(gt: Mapping[str, Any], where: str = "ground truth") -> FlatGroundTruth:
    """Validate in-memory ground truth ``{volume: [(z, [x1, y1, x2, y2]), ...]}``; as arrays."""
    if not isinstance(gt, Mapping):
        raise EvalFormatError(
            f"{where}: expected a dict {{volume: [(z, box), ...]}}, got {type(gt).__name__}"
        )
    volumes: list[str] = []
    vol_index: list[int] = []
    zs: list[int] = []
    boxes: list[np.ndarray] = []
    for v, (name, items) in enumerate(gt.items()):
        volumes.append(_check_name(name, where))
        if not isinstance(items, (list, tuple)):
            raise EvalFormatError(
                f"{where}: volume {name!r}: expected a list of (z, box), got {type(items).__name__}"
            )
        for b, item in enumerate(items):
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise EvalFormatError(
                    f"{where}: volume {name!r}, box {b}: expected (z, [x1, y1, x2, y2]), "
                    f"got {short_repr(item)}"
                )
            problem = _z_problem(item[0]) or _box_problem(item[1], _BOX_NAMES[:4])
            if problem:
                raise EvalFormatError(f"{where}: volume {name!r}, box {b}: {problem}")
            vol_index.append(v)
            zs.append(int(float(item[0])))
            boxes.append(np.asarray(item[1], dtype=np.float64))
    return FlatGroundTruth(
        volumes=tuple(volumes),
        volume_index=np.asarray(vol_index, dtype=np.int64),
        z=np.asarray(zs, dtype=np.int64),
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
    )


# ---------------------------------------------------------------------------------------------
# Ground truth readers
# ---------------------------------------------------------------------------------------------


def _gt_from_lesion_harvester(obj: Any, where: str) -> GroundTruth:
    if not isinstance(obj, Mapping):
        raise EvalFormatError(
            f"{where}: expected a dict {{volume: {{z: [[x1, y1, x2, y2, z, z], ...]}}}}, "
            f"got {type(obj).__name__}"
        )
    gt: GroundTruth = {}
    for key, slices in obj.items():
        if not isinstance(key, str) or not key:
            raise EvalFormatError(f"{where}: key {short_repr(key)} is not a volume name")
        name = key[: -len(".annot")] if key.endswith(".annot") else key
        _check_name(name, where)
        if name in gt:
            raise EvalFormatError(f"{where}: volume {name!r} is listed twice (key {key!r})")
        if not isinstance(slices, Mapping):
            raise EvalFormatError(
                f"{where}: volume {key!r}: expected {{z: [[x1, y1, x2, y2, z, z], ...]}}, got "
                f"{type(slices).__name__} (a 3D-box or detection file is not 2D ground truth)"
            )
        items: list[tuple[int, np.ndarray]] = []
        for z in slices:
            problem = _z_problem(z)
            if problem:
                raise EvalFormatError(f"{where}: volume {key!r}: {problem}")
        for z in sorted(slices, key=lambda z: int(float(z))):
            rows = slices[z]
            if not isinstance(rows, (list, tuple, np.ndarray)):
                raise EvalFormatError(
                    f"{where}: volume {key!r}, z {z}: expected a list of boxes, got "
                    f"{type(rows).__name__}"
                )
            for b, row in enumerate(rows):
                try:
                    values = np.asarray(row)
                except (TypeError, ValueError):
                    values = None
                if (values is None or values.dtype.kind not in _REAL_KINDS or values.ndim != 1
                        or values.shape[0] < 4):
                    raise EvalFormatError(
                        f"{where}: volume {key!r}, z {z}, box {b}: {short_repr(row)} is not a row "
                        "[x1, y1, x2, y2, ...] of numbers"
                    )
                problem = _box_problem(values[:4], _BOX_NAMES[:4])
                if problem:
                    raise EvalFormatError(f"{where}: volume {key!r}, z {z}, box {b}: {problem}")
                items.append((int(float(z)), values[:4].astype(np.float64)))
        gt[name] = items
    return gt


def gt_from_folder(
    root: Path, split: str | None, keep: Callable[[Any], np.ndarray] | None = None
) -> GroundTruth:
    """Ground truth of one split of a dataset folder: every volume of the split, its rows of
    ``annotations.csv`` sorted by ``z`` (stable). ``keep(table) -> bool mask`` selects rows
    (e.g. key slices only); default all."""
    if split is None:
        raise EvalFormatError(f"{root}: a dataset folder needs a split (train, val or test)")
    folder = DatasetFolder(root)
    names = folder.volumes(split)
    table = folder.annotations()
    mask = np.ones(len(table), dtype=bool) if keep is None else keep(table)
    gt: GroundTruth = {name: [] for name in names}
    rows = [i for i in np.argsort(table.z, kind="stable") if mask[i] and str(table.volume[i]) in gt]
    for i in rows:
        gt[str(table.volume[i])].append((int(table.z[i]), table.boxes[i].astype(np.float64)))
    return gt


def read_gt(source: str | Path, split: str | None = None) -> GroundTruth:
    """Read 2D ground truth from a Lesion Harvester pickle or a dataset folder.

    source: a ``.pkl`` file ``{"<volume>[.annot]": {z: [[x1, y1, x2, y2, z, z], ...]}}`` or a
        dataset folder of the generic format (then ``split`` is required).
    Returns ``{volume: [(z, ndarray[4] float64), ...]}`` with every volume of the set, boxes
    sorted by ``z`` (stable). Raises :class:`EvalFormatError` naming the file and entry.
    """
    path = Path(source)
    if path.is_dir():
        return gt_from_folder(path, split)
    if not path.is_file():
        raise EvalFormatError(f"{path}: ground-truth file or folder not found")
    if split is not None:
        raise EvalFormatError(
            f"{path}: split={split!r} applies only to a dataset folder, not to a pickle"
        )
    return _gt_from_lesion_harvester(load_pickle(path), str(path))


# ---------------------------------------------------------------------------------------------
# Detection readers and writers
# ---------------------------------------------------------------------------------------------


def _json_rows_problem(where: str, vols: dict[str, Any]) -> None:
    """Raise the error naming the first tracklet or row that is not of the format (slow path)."""
    for name, tracklets in vols.items():
        for t, trk in enumerate(tracklets):
            for b, row in enumerate(trk["boxes"]):
                if not isinstance(row, list) or len(row) != 6:
                    raise EvalFormatError(
                        f"{where}: volume {name!r}, tracklet {t}, box {b}: {short_repr(row)} is not "
                        "[z, x1, y1, x2, y2, score]"
                    )


def _flat_from_json(doc: Any, where: str) -> FlatDetections:
    if not isinstance(doc, dict):
        raise EvalFormatError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT_NAME:
        raise EvalFormatError(
            f"{where}: format = {short_repr(doc.get('format'))}, expected {FORMAT_NAME!r}"
        )
    if doc.get("version") != FORMAT_VERSION:
        raise EvalFormatError(
            f"{where}: version = {short_repr(doc.get('version'))}, this reader knows {FORMAT_VERSION}"
        )
    vols = doc.get("volumes")
    if not isinstance(vols, dict):
        raise EvalFormatError(
            f"{where}: 'volumes' must be an object {{volume: [tracklet, ...]}}, "
            f"got {type(vols).__name__}"
        )
    volumes: list[str] = []
    trk_volume: list[int] = []
    ptr: list[int] = [0]
    rows: list[Any] = []
    declared_t: list[int] = []
    declared_v: list[Any] = []
    for v, (name, tracklets) in enumerate(vols.items()):
        volumes.append(_check_name(name, where))
        if not isinstance(tracklets, list):
            raise EvalFormatError(
                f"{where}: volume {name!r}: expected a list of tracklets, got "
                f"{type(tracklets).__name__}"
            )
        for t, trk in enumerate(tracklets):
            boxes = trk.get("boxes") if isinstance(trk, dict) else None
            if not isinstance(boxes, list) or not boxes:
                raise EvalFormatError(
                    f"{where}: volume {name!r}, tracklet {t}: expected "
                    f'{{"score": s, "boxes": [[z, x1, y1, x2, y2, score], ...]}} with at least '
                    f"one box, got {short_repr(trk)}"
                )
            rows.extend(boxes)
            ptr.append(len(rows))
            trk_volume.append(v)
            if "score" in trk:
                declared_t.append(len(trk_volume) - 1)
                declared_v.append(trk["score"])
    # Every row at once: a (N, 6) array of numbers, else find the first row that is not one.
    try:
        table = np.array(rows) if rows else np.zeros((0, 6))
        ok = table.ndim == 2 and table.shape[1] == 6 and table.dtype.kind in _REAL_KINDS
    except (TypeError, ValueError, OverflowError):
        ok = False
    if ok and len(table) == len(rows):
        zs: Sequence[Any] = table[:, 0]
        boxes_in: Sequence[Any] = table[:, 1:]
        flat = _finish_flat(where, volumes, trk_volume, ptr, zs, boxes_in, "box", rows=rows)
    else:
        _json_rows_problem(where, vols)
        flat = _finish_flat(where, volumes, trk_volume, ptr, [row[0] for row in rows],
                            [row[1:] for row in rows], "box")
    if declared_t:
        scores = flat.tracklet_scores()[declared_t]
        plain = all(type(value) is float or type(value) is int for value in declared_v)
        if plain:
            ok_score = np.abs(np.array(declared_v, dtype=np.float64) - scores) <= _SCORE_TOLERANCE
        if not plain or not ok_score.all():
            for t, value, score in zip(declared_t, declared_v, scores.tolist()):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                if ok and abs(float(value) - score) <= _SCORE_TOLERANCE:
                    continue
                raise EvalFormatError(
                    f"{where}: volume {volumes[trk_volume[t]]!r}, tracklet {_local(trk_volume, t)}: "
                    f"score = {short_repr(value)} "
                    f"is not the maximum of its box scores ({score!r})"
                )
    return flat


def _parse_json(path: Path) -> Any:
    """The JSON document in ``path``: orjson when it reads the file; otherwise (and for what
    orjson refuses but the standard library reads, such as NaN or huge integers) ``json``."""
    data = path.read_bytes()
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvalFormatError(f"{path}: not valid JSON ({exc})") from exc
    except RecursionError:
        raise EvalFormatError(f"{path}: JSON nested too deeply to be a detection file") from None


def read_flat_detections(source: str | Path) -> FlatDetections:
    """:func:`read_detections`, returned as validated arrays (no per-box objects; what the
    evaluation reads)."""
    path = Path(source)
    if path.is_dir():
        path = path / DETECTIONS_FILENAME
    if not path.is_file():
        raise EvalFormatError(f"{path}: detection file not found")
    with path.open("rb") as handle:
        head = handle.read(64).lstrip()
    # Millions of small objects are made and dropped here: with the cyclic GC on, their
    # allocation rescans them again and again (2-3x the time); nothing read forms a cycle,
    # and the document is dropped before the GC runs again.
    with no_gc():
        if head.startswith(b"{"):
            doc = _parse_json(path)
            try:
                return _flat_from_json(doc, str(path))
            except RecursionError:
                raise EvalFormatError(
                    f"{path}: JSON nested too deeply to be a detection file") from None
            finally:
                del doc
        obj = load_pickle(path)
        try:
            return flatten_detections(obj, str(path))
        finally:
            del obj


def read_detections(source: str | Path) -> Detections:
    """Read detections from a Lesion Harvester pickle, our JSON file or a folder.

    source: a pickle ``{"<volume>": [[(z, [x1, y1, x2, y2, score]), ...], ...]}``, a JSON
        file in the ``uld-detections`` format (see the module docstring; recognised by its
        content, not its name), or a folder holding ``detections.json``.
    Returns ``{volume: [[(z, ndarray[5] float64), ...], ...]}``, in file order.
    Raises :class:`EvalFormatError` naming the file and the offending entry.
    """
    return read_flat_detections(source).to_dict()


def _json_document(flat: FlatDetections) -> dict[str, Any]:
    scores = flat.tracklet_scores().tolist()
    zs = flat.z.tolist()
    rows = flat.boxes.tolist()
    volumes: dict[str, list[dict[str, Any]]] = {name: [] for name in flat.volumes}
    for t in range(flat.n_tracklets):
        s, e = int(flat.tracklet_ptr[t]), int(flat.tracklet_ptr[t + 1])
        volumes[flat.volumes[flat.tracklet_volume[t]]].append(
            {"score": scores[t], "boxes": [[zs[i], *rows[i]] for i in range(s, e)]}
        )
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "volumes": volumes}


def write_detections_json(detections: Mapping[str, Any], path: str | Path) -> Path:
    """Validate and write ``detections`` as a ``uld-detections`` v1 JSON file, atomically.

    ``path`` may be a folder, in which case ``<path>/detections.json`` is written.
    Returns the file written.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DETECTIONS_FILENAME
    flat = flatten_detections(detections)
    text = json.dumps(_json_document(flat), allow_nan=False, separators=(",", ":"))
    return write_text(path, text)


def write_detections_pickle(detections: Mapping[str, Any], path: str | Path) -> Path:
    """Validate and write ``detections`` as a Lesion Harvester detection pickle, atomically.

    Layout ``{volume: [[(z, ndarray[5] float64), ...], ...]}`` with int ``z``.
    """
    return dump_pickle(flatten_detections(detections).to_dict(), path)
