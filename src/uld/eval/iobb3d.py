"""The manual 1K test set protocol: 3D boxes, intersection over the detected box (IOBB).

Reproduces ``evaluate`` of ``evaluation_sample.py`` with ``FROC(..., '3D', 'IOBB', .3)``,
``IOX`` and ``sens_at_FP`` of ``general_detection_evaluation.py``
(viggin/DeepLesion_manual_test_set, Ke Yan, the paper "Learning from Multiple Datasets with
Heterogeneous and Partial Labels for Universal Lesion Detection in CT") to the last digit;
see DATA.md, "The manual 1K test set". "Match once, then metrics": :func:`match_iobb3d` ->
:func:`iobb3d_metrics`.

From tracklets to 3D boxes
--------------------------

A tracklet ``[(z, [x1, y1, x2, y2, score]), ...]`` becomes one 3D box
``[min x1, min y1, min z, max x2, max y2, max z, max score]``. Against ground truth with
absolute slice numbers (the manual 1K set, :attr:`GroundTruth3D.z_absolute`) its ``z`` become
``first + z``, ``first`` parsed from its volume name ``<folder>_<first>-<last>``
(:func:`uld.data.deeplesion.parse_subvolume_name`). Boxes are concatenated volume by volume
in ground-truth order (the reference's ``fns = list(gts.keys())``), then in tracklet order.

The reference algorithm
-----------------------

- overlap: ``IOX(det, gts, '3D', 'IOBB')``: with ``w = x2 - x1 + 1`` on every axis,
  ``(iw * ih * id) / (w_det * h_det * d_det)``: the share of the DETECTED box that lies in
  the ground-truth box. A big box around a small lesion scores low; a small box inside a big
  lesion scores 1;
- ranking ``np.argsort(scores)[::-1]``; a detection is a false positive when its volume
  has no box, an overlap is NaN (impossible for validated boxes: every factor is >= 1), or
  its best overlap is ``< 0.3``; otherwise it marks every not-yet-hit box with overlap
  ``>= 0.3``; re-hits alone count as nothing (:func:`uld.eval.keyslice.froc_walk`);
- ``sens = hits / n_boxes``, ``fps = false positives / n_volumes`` (every ground-truth
  volume, also the 31 empty test sub-volumes);
- ``sens_at_FP``: 0 at rates below ``fps[0]``, ``interp1d(fps, sens)`` inside
  ``[fps[0], fps[-1]]`` (``np.interp`` in current scipy: ``sens[j]``, ``j`` the last point
  with ``fps[j] <= rate``), ``sens[-1]`` past the end (:func:`uld.eval.keyslice.sens_at_fp`);
- reported at ``2**p`` for ``p`` in ``-3 .. 10`` (0.125 .. 1024, :data:`REFERENCE_FP_RATES`),
  "average sensitivity" = mean over the first seven (0.125 .. 8). We report
  :data:`~uld.eval.keyslice.FP_RATES` (0.125 .. 16) by default; the average is the same.

The reference has no AP (``ap`` is ``None``). Where it fails (no detection: it indexes an
empty array; no box: it divides by zero), we return sensitivity 0. Volumes in the
detections that the ground truth does not list are refused (the reference ignores them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uld.data.annotations import EvalFormatError, FlatDetections, flatten_detections
from uld.data.subvolume import DeepLesionError, parse_subvolume_name
from uld.eval.froc import (
    AVG_FP_RATES,
    FP_RATES,
    FrocResult,
    TrackletHits,
    check_known_volumes,
    check_threshold,
    csr_pointers,
    official_froc_result,
    pair_ranges,
)
from uld.eval.ground_truth import GroundTruth3D

__all__ = [
    "IOBB_THRESHOLD",
    "REFERENCE_FP_RATES",
    "IOBB3DMatches",
    "evaluate_iobb3d",
    "iobb3d_metrics",
    "iobb_pairs",
    "match_iobb3d",
    "tracklet_boxes_3d",
]

IOBB_THRESHOLD = 0.3
REFERENCE_FP_RATES: tuple[float, ...] = tuple(2.0**p for p in range(-3, 11))
"""The rates the manual 1K script prints: 0.125, 0.25, ..., 1024 FPs per sub-volume."""


def iobb_pairs(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(N,)`` intersection over the detected box of row ``i`` of each ``(N, 6)`` array.

    Rows ``x1, y1, z1, x2, y2, z2`` float64; +1 on every axis; the reference's ``IOX(...,
    '3D', 'IOBB')`` operation by operation (``inters = iw * ih * id``; the detected volume
    ``(w + 1) * (h + 1) * (d + 1)`` multiplied left to right).
    """
    iw = np.maximum(np.minimum(gt[:, 3], det[:, 3]) - np.maximum(gt[:, 0], det[:, 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(gt[:, 4], det[:, 4]) - np.maximum(gt[:, 1], det[:, 1]) + 1.0, 0.0)
    idp = np.maximum(np.minimum(gt[:, 5], det[:, 5]) - np.maximum(gt[:, 2], det[:, 2]) + 1.0, 0.0)
    inters = iw * ih * idp
    size = (det[:, 3] - det[:, 0] + 1.0) * (det[:, 4] - det[:, 1] + 1.0) * (det[:, 5] - det[:, 2] + 1.0)
    return inters / size


def tracklet_boxes_3d(flat: FlatDetections, z_shift: np.ndarray | None = None) -> np.ndarray:
    """``(T, 7)`` float64 ``[x1, y1, z1, x2, y2, z2, score]`` of every tracklet.

    flat: validated detections (:func:`uld.data.annotations.flatten_detections`).
    z_shift (ndarray[V] | None): added to the slices of each detection volume (``flat.volumes``
        order), e.g. the first slice of a sub-volume to make slice numbers absolute.
    """
    if flat.n_tracklets == 0:
        return np.zeros((0, 7), dtype=np.float64)
    start = flat.tracklet_ptr[:-1]
    b, z = flat.boxes, flat.z.astype(np.float64)
    out = np.empty((flat.n_tracklets, 7), dtype=np.float64)
    out[:, 0] = np.minimum.reduceat(b[:, 0], start)
    out[:, 1] = np.minimum.reduceat(b[:, 1], start)
    out[:, 2] = np.minimum.reduceat(z, start)
    out[:, 3] = np.maximum.reduceat(b[:, 2], start)
    out[:, 4] = np.maximum.reduceat(b[:, 3], start)
    out[:, 5] = np.maximum.reduceat(z, start)
    out[:, 6] = np.maximum.reduceat(b[:, 4], start)
    if z_shift is not None:
        shift = np.asarray(z_shift, dtype=np.float64)[flat.tracklet_volume]
        out[:, 2] += shift
        out[:, 5] += shift
    return out


@dataclass(frozen=True, eq=False)
class IOBB3DMatches(TrackletHits):
    """Which tracklet's 3D box hits which 3D ground-truth box.

    scores (ndarray[T], float64): tracklet scores (max of box scores), in concatenation order
        (ground-truth volume order, then tracklet order).
    boxes (ndarray[T, 6], float64): the tracklets' 3D boxes as compared (absolute ``z`` when
        ``z_absolute``).
    volume_index (ndarray[T], int64): ground-truth volume of each tracklet.
    tracklet_index (ndarray[T], int64): position in the detections' own tracklet order.
    hit_ptr (ndarray[T + 1], int64), hit_gt (ndarray[H], int64): tracklet ``t`` hits boxes
        ``hit_gt[hit_ptr[t]:hit_ptr[t + 1]]`` (flat ground-truth order:
        :meth:`GroundTruth3D.flat`), ascending.
    hit_iobb (ndarray[H], float64): the IOBB of each hit (``>= iobb_threshold``).
    gt_volume_index (ndarray[P], int64): volume of each ground-truth box.
    volumes (tuple[str, ...]): the ground-truth volumes.
    iobb_threshold (float), z_absolute (bool): the settings used.
    """

    scores: np.ndarray
    boxes: np.ndarray
    volume_index: np.ndarray
    tracklet_index: np.ndarray
    hit_ptr: np.ndarray
    hit_gt: np.ndarray
    hit_iobb: np.ndarray
    gt_volume_index: np.ndarray
    volumes: tuple[str, ...]
    iobb_threshold: float
    z_absolute: bool


def _first_slices(flat: FlatDetections, source: str) -> np.ndarray:
    """``(V,)`` first slice of each detection volume (parsed from its sub-volume name)."""
    first = np.zeros(len(flat.volumes), dtype=np.float64)
    used = np.unique(flat.tracklet_volume)
    for v in used.tolist():
        name = flat.volumes[v]
        try:
            first[v] = parse_subvolume_name(name)[1]
        except DeepLesionError:
            raise EvalFormatError(
                f"{source}: z are absolute slice numbers, but detection volume {name!r} is not a "
                "sub-volume name <folder>_<first:03d>-<last:03d> to convert its slice offsets"
            ) from None
    return first


def match_iobb3d(
    gt: GroundTruth3D, detections: Mapping[str, Any], iobb_threshold: float = IOBB_THRESHOLD
) -> IOBB3DMatches:
    """Match every tracklet's 3D box against the 3D boxes of its volume (IOBB).

    gt: :class:`~uld.eval.ground_truth.GroundTruth3D` (:func:`~uld.eval.ground_truth.
        read_boxes3d_gt`).
    detections: ``{volume: [[(z, [x1, y1, x2, y2, score]), ...], ...]}``, ``z`` offsets.
    iobb_threshold: hit when IOBB ``>= iobb_threshold`` (0.3), ``0 < iobb_threshold <= 1``.

    A detection volume missing from ``gt`` raises :class:`~uld.eval.p3d.UnknownVolumeError`;
    malformed detections :class:`~uld.data.annotations.EvalFormatError`.
    """
    thr = check_threshold("iobb_threshold", iobb_threshold)
    if not isinstance(gt, GroundTruth3D):
        raise EvalFormatError(
            f"ground truth: expected 3D boxes (GroundTruth3D, see read_boxes3d_gt), got "
            f"{type(gt).__name__}"
        )
    d = flatten_detections(detections)
    volume_map = check_known_volumes(d.volumes, gt.volumes)
    shift = _first_slices(d, gt.source) if gt.z_absolute and d.n_tracklets else None
    boxes7 = tracklet_boxes_3d(d, shift)
    trk_volume = volume_map[d.tracklet_volume] if d.n_tracklets else np.zeros(0, np.int64)
    order = np.argsort(trk_volume, kind="stable")  # ground-truth volume order
    boxes7, trk_volume = boxes7[order], trk_volume[order]

    gt_volume, gt_boxes = gt.flat()
    per_volume = np.bincount(gt_volume, minlength=len(gt.volumes))
    starts = np.cumsum(per_volume) - per_volume
    pair_trk, pair_gt = pair_ranges(per_volume[trk_volume], starts[trk_volume])
    overlap = iobb_pairs(boxes7[pair_trk, :6], gt_boxes[pair_gt])
    keep = overlap >= thr
    pair_trk, pair_gt, overlap = pair_trk[keep], pair_gt[keep], overlap[keep]
    return IOBB3DMatches(
        scores=boxes7[:, 6].copy(),
        boxes=boxes7[:, :6].copy(),
        volume_index=trk_volume,
        tracklet_index=order.astype(np.int64),
        hit_ptr=csr_pointers(pair_trk, len(boxes7)),
        hit_gt=pair_gt,
        hit_iobb=overlap,
        gt_volume_index=gt_volume,
        volumes=gt.volumes,
        iobb_threshold=thr,
        z_absolute=gt.z_absolute,
    )


def iobb3d_metrics(
    matches: IOBB3DMatches,
    fp_rates: Sequence[float] = FP_RATES,
    avg_rates: Sequence[float] = AVG_FP_RATES,
) -> FrocResult:
    """Sensitivity at FPs per sub-volume from :func:`match_iobb3d` (see the module docstring)."""
    return official_froc_result(
        "iobb3d", matches.scores, matches.hit_ptr, matches.hit_gt, matches.npos,
        matches.n_volumes, "volume", matches.iobb_threshold, fp_rates, avg_rates,
        {"overlap": "IOBB (+1 px)", "z_absolute": bool(matches.z_absolute)},
    )


def evaluate_iobb3d(
    gt: GroundTruth3D,
    detections: Mapping[str, Any],
    iobb_threshold: float = IOBB_THRESHOLD,
    fp_rates: Sequence[float] = FP_RATES,
) -> FrocResult:
    """:func:`match_iobb3d` then :func:`iobb3d_metrics`: the manual 1K evaluation."""
    return iobb3d_metrics(match_iobb3d(gt, detections, iobb_threshold), fp_rates)
