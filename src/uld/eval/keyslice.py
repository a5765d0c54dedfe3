"""The official DeepLesion key-slice protocol (MULAN / 3DCE): 2D boxes on key slices.

Reproduces ``sens_at_FP`` / ``FROC`` / ``IOU`` of MULAN's
``maskrcnn/data/datasets/evaluation/DeepLesion/detection_eval.py`` (rsummers11/CADLab,
Ke Yan, 2019) to the last digit; see DATA.md, "The official key-slice protocol". The same
FROC, generalised to 3D boxes, is the manual 1K set's (:mod:`uld.eval.iobb3d`), so the
ranking walk (:func:`~uld.eval.froc.froc_walk`) and the curve reading
(:func:`~uld.eval.froc.sens_at_fp`) live in the evaluation core, :mod:`uld.eval.froc`, and
serve both. "Match once, then metrics": :func:`match_keyslice` -> :func:`keyslice_metrics`.

From tracklets to key-slice detections
--------------------------------------

The images are the distinct ``(volume, z)`` of the ground truth
(:func:`uld.eval.ground_truth.keyslice_images`), in order of first appearance. Every box of
every tracklet that lies on an image's slice is one 2D detection of that image, scored by
its OWN score (``score="box"``, what a 2D detector run on that slice reports); with
``score="tracklet"`` it takes its tracklet's score (the maximum of its boxes) instead.
Boxes on other slices play no part (they are neither hits nor false positives).
Detections are concatenated image by image, in image order, and within an image in the
order of the detections dict (volume's tracklets, then boxes): that order breaks score ties
exactly as MULAN's concatenation does (MULAN orders images by sorted file name; we order
them as the ground truth lists them).

The reference algorithm
-----------------------

- overlap: ``IOU(det, gts)`` with the +1 convention, ``inter / (area_det + area_gt - inter)``,
  no floor on the union (a validated box has area >= 1);
- ranking: ``np.argsort(scores)[::-1]`` over the concatenated scores (numpy's default sort
  kind: ties follow the concatenation order through numpy's own algorithm);
- walk: a detection whose best overlap is ``< iou_th`` (or whose image has no box) is a
  false positive; otherwise it marks every not-yet-hit box with overlap ``>= iou_th`` as hit;
  a detection that only re-hits found boxes is neither a hit nor a false positive;
- ``sens = hits / n_boxes``, ``fps = false positives / n_images`` after each detection;
- reading: ``interp1d(fps, sens)`` (no extrapolation) at the rates ``<= fps[-1]``, and
  ``sens[-1]`` at the rates past it. Since scipy 0.17 (scipy PR 5359, 2015, before both
  reference scripts), ``interp1d`` hands float64 linear interpolation without extrapolation
  to ``np.interp``; on a curve whose every segment is flat or vertical that gives
  ``sens[j]`` for the LAST point ``j`` with ``fps[j] <= rate`` (all hits at that FP count
  included; P3D's extrapolating ``interp1d`` reads the first such point instead).
  :func:`~uld.eval.froc.sens_at_fp` computes exactly that; the tests compare it with ``interp1d`` itself.

Where the reference fails or misbehaves, and what we return
-----------------------------------------------------------

- a rate below ``fps[0]`` (the first ranked detection is a false positive and
  ``rate < 1 / n_images``): MULAN's ``interp1d`` raises; we return 0 (the sensitivity
  there is 0; the manual 1K script does the same);
- no detection at all: the reference indexes an empty array; we return 0 at every rate;
- no ground-truth box: the reference divides by zero (NaN); we return 0;
- rates not in ascending order: the reference returns its values grouped (in-range ones
  first), not in request order; we key every value by its rate.

Neither MULAN nor 3DCE computes an AP for this protocol: ``ap`` is ``None``. (3DCE's older
``sens_at_FP`` extrapolates instead of holding the last value; DATA.md names MULAN's rule.)

Numbers are float64; float32 detections are converted first (MULAN would compare float32).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from uld.data.annotations import MAX_Z, FlatDetections, flatten_detections, flatten_gt
from uld.eval.froc import (
    AVG_FP_RATES,
    FP_RATES,
    FrocResult,
    check_known_volumes,
    check_threshold,
    csr_pointers,
    official_froc_result,
    pair_ranges,
)

__all__ = [
    "KeySliceMatches",
    "evaluate_keyslice",
    "iou_plus1_pairs",
    "keyslice_metrics",
    "match_keyslice",
]

ScoreSource = Literal["box", "tracklet"]


def iou_plus1_pairs(det_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """``(N,)`` +1-pixel IoU of row ``i`` of ``det_xyxy`` with row ``i`` of ``gt_xyxy``.

    ``(N, 4)`` float64 each. MULAN's ``IOU(box1=det, gts)`` operation by operation:
    ``inter / (area_det + area_gt - inter)`` with ``w = x2 - x1 + 1``.
    """
    d, g = det_xyxy, gt_xyxy
    iw = np.maximum(np.minimum(g[:, 2], d[:, 2]) - np.maximum(g[:, 0], d[:, 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(g[:, 3], d[:, 3]) - np.maximum(g[:, 1], d[:, 1]) + 1.0, 0.0)
    inters = iw * ih
    union = ((d[:, 2] - d[:, 0] + 1.0) * (d[:, 3] - d[:, 1] + 1.0)
             + (g[:, 2] - g[:, 0] + 1.0) * (g[:, 3] - g[:, 1] + 1.0) - inters)
    return inters / union


@dataclass(frozen=True, eq=False)
class KeySliceMatches:
    """Which 2D key-slice detection hits which ground-truth box.

    scores (ndarray[D], float64): detection scores in concatenation order (images in
        ``images`` order, then detections-dict order).
    boxes (ndarray[D, 4], float64): the detections' ``x1, y1, x2, y2``.
    image_index (ndarray[D], int64): image of each detection (into ``images``).
    tracklet_index (ndarray[D], int64): the tracklet it came from (detections-dict order
        over all volumes, as :class:`~uld.data.annotations.FlatDetections` counts them).
    hit_ptr (ndarray[D + 1], int64), hit_gt (ndarray[H], int64): detection ``d`` hits boxes
        ``hit_gt[hit_ptr[d]:hit_ptr[d + 1]]`` (ground-truth order: volumes in dict order,
        then list order, as :func:`uld.data.annotations.flatten_gt`), ascending.
    hit_iou (ndarray[H], float64): the IoU of each hit (``>= iou_threshold``).
    gt_image_index (ndarray[P], int64): image of each ground-truth box.
    images (tuple[tuple[str, int], ...]): the key-slice images ``(volume, z)``.
    volumes (tuple[str, ...]): every ground-truth volume (detections elsewhere are refused).
    iou_threshold (float), score (str): the settings used.
    """

    scores: np.ndarray
    boxes: np.ndarray
    image_index: np.ndarray
    tracklet_index: np.ndarray
    hit_ptr: np.ndarray
    hit_gt: np.ndarray
    hit_iou: np.ndarray
    gt_image_index: np.ndarray
    images: tuple[tuple[str, int], ...]
    volumes: tuple[str, ...]
    iou_threshold: float
    score: str

    @property
    def npos(self) -> int:
        return len(self.gt_image_index)

    @property
    def n_images(self) -> int:
        """Number of key-slice images (the "per image" denominator)."""
        return len(self.images)

    @property
    def n_detections(self) -> int:
        return len(self.scores)

    def hits(self, detection: int) -> np.ndarray:
        """``(k,)`` int64: the ground-truth boxes that detection ``detection`` hits."""
        return self.hit_gt[self.hit_ptr[detection]:self.hit_ptr[detection + 1]]


def _keyslice_detections(
    d: FlatDetections, trk_volume: np.ndarray, image_keys: np.ndarray, image_of_key: np.ndarray,
    score: ScoreSource,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, image, scores, tracklet) of the detection boxes on key slices, image-major."""
    box_trk = np.repeat(np.arange(d.n_tracklets, dtype=np.int64), np.diff(d.tracklet_ptr))
    if len(box_trk) == 0 or len(image_keys) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64), empty
    key = trk_volume[box_trk] * MAX_Z + d.z
    pos = np.minimum(np.searchsorted(image_keys, key), len(image_keys) - 1)
    rows = np.flatnonzero(image_keys[pos] == key)
    image = image_of_key[pos[rows]]
    order = np.argsort(image, kind="stable")
    rows, image = rows[order], image[order]
    trk = box_trk[rows]
    scores = d.boxes[rows, 4] if score == "box" else d.tracklet_scores()[trk]
    return rows, image, scores.astype(np.float64), trk


def match_keyslice(
    gt: Mapping[str, Any],
    detections: Mapping[str, Any],
    iou_threshold: float = 0.5,
    score: ScoreSource = "box",
) -> KeySliceMatches:
    """Match the key-slice boxes of every tracklet against each image's ground truth.

    gt: 2D ground truth ``{volume: [(z, [x1, y1, x2, y2]), ...]}``
        (:func:`uld.eval.ground_truth.read_keyslice_gt`); each distinct ``(volume, z)`` is an
        image.
    detections: ``{volume: [[(z, [x1, y1, x2, y2, score]), ...], ...]}``.
    iou_threshold: hit when the +1 IoU is ``>= iou_threshold``, ``0 < iou_threshold <= 1``.
    score: ``"box"`` (each box's own score) or ``"tracklet"`` (its tracklet's maximum).

    Validates both inputs (:class:`~uld.data.annotations.EvalFormatError`); a detection volume
    that the ground truth does not list raises :class:`~uld.eval.p3d.UnknownVolumeError`.
    """
    thr = check_threshold("iou_threshold", iou_threshold)
    if score not in ("box", "tracklet"):
        raise ValueError(f"score = {score!r} must be 'box' or 'tracklet'")
    g = flatten_gt(gt)
    d = flatten_detections(detections)
    volume_map = check_known_volumes(d.volumes, g.volumes)
    trk_volume = volume_map[d.tracklet_volume] if d.n_tracklets else np.zeros(0, np.int64)

    # Images: distinct (volume, z) of the ground truth, numbered by first appearance.
    gt_key = g.volume_index * MAX_Z + g.z
    image_keys, first, inverse = np.unique(gt_key, return_index=True, return_inverse=True)
    appearance = np.argsort(first, kind="stable")
    image_of_key = np.empty(len(image_keys), dtype=np.int64)
    image_of_key[appearance] = np.arange(len(image_keys), dtype=np.int64)
    gt_image = image_of_key[inverse.reshape(-1)] if len(gt_key) else np.zeros(0, np.int64)
    images = tuple(
        (g.volumes[int(k // MAX_Z)], int(k % MAX_Z)) for k in image_keys[appearance].tolist()
    )

    rows, det_image, scores, trk = _keyslice_detections(d, trk_volume, image_keys, image_of_key,
                                                         score)
    boxes = d.boxes[rows, :4]
    n_det = len(rows)
    # Every detection against every box of its image (ground truth grouped by image).
    gt_order = np.argsort(gt_image, kind="stable")
    per_image = np.bincount(gt_image, minlength=len(images))
    starts = np.cumsum(per_image) - per_image
    pair_det, pair_slot = pair_ranges(per_image[det_image], starts[det_image])
    pair_gt = gt_order[pair_slot]
    overlap = iou_plus1_pairs(boxes[pair_det], g.boxes[pair_gt])
    keep = overlap >= thr
    pair_det, pair_gt, overlap = pair_det[keep], pair_gt[keep], overlap[keep]
    order = np.lexsort((pair_gt, pair_det))
    return KeySliceMatches(
        scores=scores,
        boxes=boxes,
        image_index=det_image,
        tracklet_index=trk,
        hit_ptr=csr_pointers(pair_det, n_det),
        hit_gt=pair_gt[order],
        hit_iou=overlap[order],
        gt_image_index=gt_image,
        images=images,
        volumes=g.volumes,
        iou_threshold=thr,
        score=score,
    )


def keyslice_metrics(
    matches: KeySliceMatches,
    fp_rates: Sequence[float] = FP_RATES,
    avg_rates: Sequence[float] = AVG_FP_RATES,
) -> FrocResult:
    """Sensitivity at FPs per image from :func:`match_keyslice` (see the module docstring)."""
    return official_froc_result(
        "keyslice", matches.scores, matches.hit_ptr, matches.hit_gt, matches.npos,
        matches.n_images, "image", matches.iou_threshold, fp_rates, avg_rates,
        {"overlap": "IoU (+1 px)", "score": matches.score},
    )


def evaluate_keyslice(
    gt: Mapping[str, Any],
    detections: Mapping[str, Any],
    iou_threshold: float = 0.5,
    score: ScoreSource = "box",
    fp_rates: Sequence[float] = FP_RATES,
) -> FrocResult:
    """:func:`match_keyslice` then :func:`keyslice_metrics`."""
    return keyslice_metrics(match_keyslice(gt, detections, iou_threshold, score), fp_rates)
