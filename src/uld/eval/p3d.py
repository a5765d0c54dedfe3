"""The Lesion Harvester P3D evaluation: 3D tracklets against 2D ground-truth boxes.

Reproduces the protocol of Lesion Harvester's ``evaluation.py`` (Cai et al.) to the last
digit wherever that script returns finite numbers (docs/method.md, "What the method does").
Structured as "match once, then metrics":
:func:`match_p3d` turns ground truth and detections into arrays (which tracklet hits which
box), :func:`p3d_metrics` computes AP and the FROC from them.

The protocol
------------

- Ground truth: 2D boxes ``(z, [x1, y1, x2, y2])`` per volume; ``npos`` = number of boxes;
  ``n_volumes`` = number of ground-truth volumes, also those without boxes or detections.
- A tracklet ``[(z, [x1, y1, x2, y2, score]), ...]`` scores the maximum of its box scores.
  Its overlap with a ground-truth box ``(z, g)`` is the +1-pixel IoU
  (:func:`uld.boxes.iou_plus1`, ground truth first, as the reference computes it) of ``g``
  with the tracklet's FIRST box on slice ``z``, and 0 when it has no box there. It hits the
  box when the overlap is ``>= iou_threshold`` (0.5).
- Ranking: ``np.argsort(scores)[::-1]`` (numpy's default sort kind, scores in the order
  volumes and then tracklets appear in the detections dict; this decides ties).
- Walking the ranking: a tracklet that hits nothing (or lies in a volume without boxes)
  adds 1 to the FROC false positives and 1 to the AP false positives. Otherwise each box it
  hits counts as a new hit if not yet hit, else as one more AP-only false positive.
- ``recall = sensitivity = hits / npos``; ``precision = hits / max(hits + fp_ap, eps)``;
  AP is Pascal VOC's all-point AP (:func:`voc_ap`); FPs per volume = ``fp_froc / n_volumes``;
  the sensitivity at each FP rate comes from
  ``scipy.interpolate.interp1d(fps, sens, fill_value="extrapolate")``; "avg" is the mean
  over 0.125 .. 8.

Every tracklet moves the FROC curve either right (a miss: one more FP) or up (a hit: more
sensitivity), never both, so each segment is flat or vertical. The reference's linear
interpolation and extrapolation therefore always read ``sens[i]`` at
``i = clip(searchsorted(fps, rate, "left") - 1, 0, T - 1)``: the sensitivity of the last
ranked point with fewer FPs per volume than ``rate`` (the first point when there is none),
never a value outside [0, 1]; except where it lands on a vertical segment, where it gives
NaN or +-inf.

Numbers are computed in float64. For float64 inputs this is the reference bit for bit;
for float32 detections, the reference (numpy >= 2) forms each tracklet box's area in
float32, which can move an IoU by about 1e-7 relative and so flip a match whose IoU lies
that close to the threshold.

Degenerate cases (where the reference crashes or returns NaN/inf)
------------------------------------------------------------------

We extend the same reading, ``sens[clip(searchsorted(fps, rate, "left") - 1, 0, T - 1)]``,
to every case:

- no tracklet (reference: ``interp1d`` raises): sensitivity 0 at every rate, AP 0;
- one tracklet (reference raises): its sensitivity at every rate;
- a rate past the curve's end when the last tracklets are hits (the last segment is
  vertical; reference: +inf or NaN): the final sensitivity. So a ranking of only true
  positives (every FP value 0) reads its final sensitivity at every rate > 0;
- a rate at or before the first point when the first two points share their FP value
  (reference: NaN or -inf): the first point's sensitivity (0 when the first tracklet is a
  false positive, which is the only way the first point lies right of 0);
- ``npos == 0`` (reference divides by zero): sensitivity 0 at every rate, AP 0.

Only those non-finite reference values are replaced; every finite one is kept as is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uld.boxes import iou_plus1_pairs
from uld.data.annotations import MAX_Z, FlatDetections, FlatGroundTruth, flatten_detections, flatten_gt
from uld.eval.froc import (
    AVG_FP_RATES,
    FP_RATES,
    TrackletHits,
    UnknownVolumeError,
    froc_sensitivity,
    froc_walk,
    pair_ranges,
)

__all__ = [
    "P3DMatches",
    "P3DResult",
    "evaluate_p3d",
    "match_p3d",
    "p3d_metrics",
    "voc_ap",
]

@dataclass(frozen=True, eq=False)
class P3DMatches(TrackletHits):
    """Which tracklet hits which ground-truth box: everything the metrics need.

    scores (ndarray[T], float64): tracklet scores (max of box scores), in detection order
        (volumes, then tracklets, as they appear in the detections dict).
    volume_index (ndarray[T], int64): ground-truth volume of each tracklet (into ``volumes``).
    hit_ptr (ndarray[T + 1], int64): tracklet ``t`` hits boxes
        ``hit_gt[hit_ptr[t]:hit_ptr[t + 1]]``.
    hit_gt (ndarray[H], int64): ground-truth box indices (dict order, then list order),
        ascending within a tracklet.
    hit_iou (ndarray[H], float64): the overlap of each hit (``>= iou_threshold``).
    gt_volume_index (ndarray[npos], int64): volume of each ground-truth box.
    volumes (tuple[str, ...]): the ground-truth volumes, in dict order.
    iou_threshold (float): the threshold used.
    """

    scores: np.ndarray
    volume_index: np.ndarray
    hit_ptr: np.ndarray
    hit_gt: np.ndarray
    hit_iou: np.ndarray
    gt_volume_index: np.ndarray
    volumes: tuple[str, ...]
    iou_threshold: float



@dataclass(frozen=True, eq=False)
class P3DResult:
    """AP and FROC of one evaluation.

    ap (float): Pascal VOC all-point AP.
    sensitivity (dict[float, float]): sensitivity at each requested FP rate per volume.
    avg (float): mean sensitivity over ``avg_rates`` (default 0.125 .. 8).
    fps (ndarray[T], float64): FPs per volume after each ranked tracklet (the FROC x).
    sens (ndarray[T], float64): sensitivity after each ranked tracklet (the FROC y).
    recall, precision (ndarray[T], float64): the PR curve behind ``ap``.
    npos, n_volumes, n_tracklets (int): ground-truth boxes, volumes, tracklets.
    iou_threshold (float): the overlap threshold used.
    """

    ap: float
    sensitivity: dict[float, float]
    avg: float
    fps: np.ndarray
    sens: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    npos: int
    n_volumes: int
    n_tracklets: int
    iou_threshold: float
    avg_rates: tuple[float, ...] = field(default=AVG_FP_RATES)

    def to_json(self) -> dict[str, Any]:
        """``{"ap", "sensitivity": {"0.125": ...}, "avg", ...}`` with plain Python numbers."""
        return {
            "ap": float(self.ap),
            "sensitivity": {f"{rate:g}": float(v) for rate, v in self.sensitivity.items()},
            "avg": float(self.avg),
            "avg_rates": [float(r) for r in self.avg_rates],
            "npos": int(self.npos),
            "n_volumes": int(self.n_volumes),
            "n_tracklets": int(self.n_tracklets),
            "iou_threshold": float(self.iou_threshold),
        }


def match_p3d(
    gt: Mapping[str, Any],
    detections: Mapping[str, Any] | FlatDetections,
    iou_threshold: float = 0.5,
) -> P3DMatches:
    """Match every tracklet against the ground-truth boxes of its volume (P3D IoU).

    gt: ``{volume: [(z, [x1, y1, x2, y2]), ...]}`` (see :mod:`uld.data.annotations`).
    detections: ``{volume: [[(z, [x1, y1, x2, y2, score]), ...], ...]}``, or the same as
        :class:`uld.data.annotations.FlatDetections` (as read by ``read_flat_detections``).
    iou_threshold: a tracklet hits a box when the overlap is ``>= iou_threshold``;
        ``0 < iou_threshold <= 1``.

    Both inputs are validated (:class:`uld.data.annotations.EvalFormatError`); a detection
    volume missing from ``gt`` raises :class:`UnknownVolumeError` naming it.
    """
    if not (0.0 < float(iou_threshold) <= 1.0):
        raise ValueError(f"iou_threshold = {iou_threshold!r} must lie in (0, 1]")
    thr = float(iou_threshold)
    g = flatten_gt(gt)
    d = flatten_detections(detections)
    position = {name: i for i, name in enumerate(g.volumes)}
    unknown = [name for name in d.volumes if name not in position]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise UnknownVolumeError(
            f"detections name volume {unknown[0]!r}, which the ground truth does not list{more}"
        )
    volume_map = np.array([position[name] for name in d.volumes], dtype=np.int64)
    trk_volume = volume_map[d.tracklet_volume] if d.n_tracklets else np.zeros(0, np.int64)
    scores = d.tracklet_scores()
    n_trk = d.n_tracklets

    pair_trk, pair_gt, pair_iou = _hit_pairs(g, d, trk_volume, thr)
    order = np.lexsort((pair_gt, pair_trk))
    pair_trk, pair_gt, pair_iou = pair_trk[order], pair_gt[order], pair_iou[order]
    hit_ptr = np.zeros(n_trk + 1, dtype=np.int64)
    np.cumsum(np.bincount(pair_trk, minlength=n_trk), out=hit_ptr[1:])
    return P3DMatches(
        scores=scores,
        volume_index=trk_volume,
        hit_ptr=hit_ptr,
        hit_gt=pair_gt,
        hit_iou=pair_iou,
        gt_volume_index=g.volume_index,
        volumes=g.volumes,
        iou_threshold=thr,
    )


def _hit_pairs(
    g: FlatGroundTruth, d: FlatDetections, trk_volume: np.ndarray, thr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tracklet, gt box, overlap)`` for every pair with overlap ``>= thr``, in no set order.

    Every (first box of a tracklet on a slice, ground-truth box on that slice) pair at once;
    the overlap is :func:`uld.boxes.iou_plus1`'s arithmetic on each pair (ground truth first),
    so each value is the same float64 as the (G, D) matrix of one slice gives.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if d.n_tracklets == 0 or len(g) == 0:
        return empty
    # The first box of each tracklet on each slice: np.unique's indices are first occurrences.
    box_trk = np.repeat(np.arange(d.n_tracklets, dtype=np.int64), np.diff(d.tracklet_ptr))
    _, first = np.unique(box_trk * MAX_Z + d.z, return_index=True)
    # Pair each with the ground-truth boxes of its slice (volume, z).
    gt_key = g.volume_index * MAX_Z + g.z
    det_key = trk_volume[box_trk[first]] * MAX_Z + d.z[first]
    gt_order = np.argsort(gt_key, kind="stable")
    gt_sorted = gt_key[gt_order]
    lo = np.searchsorted(gt_sorted, det_key, side="left")
    n_gt = np.searchsorted(gt_sorted, det_key, side="right") - lo
    keep = n_gt > 0
    if not keep.any():
        return empty
    rows = first[keep]
    det_of_pair, slot = pair_ranges(n_gt[keep], lo[keep])
    pair_gt = gt_order[slot]
    pair_row = rows[det_of_pair]
    overlaps = iou_plus1_pairs(g.boxes[pair_gt], d.boxes[pair_row, :4])
    hit = overlaps >= thr
    return box_trk[pair_row[hit]], pair_gt[hit], overlaps[hit]


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Pascal VOC all-point AP of a PR curve (``(T,)`` arrays in ranking order).

    Sentinels (0, 0) in front and (1, 0) at the end, the precision envelope from the right,
    then the sum of (delta recall) * precision where recall changes: py-faster-rcnn's
    ``voc_ap(use_07_metric=False)``, same operations in the same order.
    """
    mrec = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _walk(matches: P3DMatches) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (hits, fp_froc, fp_ap) after each tracklet of the ranking, ``(T,)`` int64:
    the FROC counts misses as false positives, the AP also re-hits."""
    walk = froc_walk(matches.scores, matches.hit_ptr, matches.hit_gt, matches.npos)
    return walk.tps, walk.fp, walk.fp + walk.rehits


def p3d_metrics(
    matches: P3DMatches,
    fp_rates: Sequence[float] = FP_RATES,
    avg_rates: Sequence[float] = AVG_FP_RATES,
) -> P3DResult:
    """AP and FROC sensitivities from :func:`match_p3d`'s output (see the module docstring).

    fp_rates: FPs per volume at which ``sensitivity`` is reported.
    avg_rates: FPs per volume averaged into ``avg``.
    """
    n = matches.n_tracklets
    if n:
        tps, fp_froc, fp_ap = _walk(matches)
    else:
        tps = fp_froc = fp_ap = np.zeros(0, dtype=np.int64)
    npos, n_volumes = matches.npos, matches.n_volumes
    if npos == 0:
        recall = sens = np.zeros(n, dtype=np.float64)
        precision = np.zeros(n, dtype=np.float64)
        ap = 0.0
    else:
        recall = tps / float(npos)
        precision = tps / np.maximum(tps + fp_ap, np.finfo(np.float64).eps)
        ap = voc_ap(recall, precision)
        sens = tps.astype(np.float64) / npos
    fps = fp_froc.astype(np.float64) / max(n_volumes, 1)
    rates = tuple(float(r) for r in fp_rates)
    avg_r = tuple(float(r) for r in avg_rates)
    if npos == 0:
        values = np.zeros(len(rates))
        avg_values = np.zeros(len(avg_r))
    else:
        values = froc_sensitivity(fps, sens, rates)
        avg_values = froc_sensitivity(fps, sens, avg_r)
    return P3DResult(
        ap=float(ap),
        sensitivity={r: float(v) for r, v in zip(rates, values)},
        avg=float(np.mean(avg_values)) if len(avg_r) else float("nan"),
        fps=fps,
        sens=sens,
        recall=recall,
        precision=precision,
        npos=npos,
        n_volumes=n_volumes,
        n_tracklets=n,
        iou_threshold=matches.iou_threshold,
        avg_rates=avg_r,
    )


def evaluate_p3d(
    gt: Mapping[str, Any],
    detections: Mapping[str, Any],
    iou_threshold: float = 0.5,
    fp_rates: Sequence[float] = FP_RATES,
) -> P3DResult:
    """:func:`match_p3d` then :func:`p3d_metrics`: the Lesion Harvester P3D evaluation."""
    return p3d_metrics(match_p3d(gt, detections, iou_threshold), fp_rates=fp_rates)
