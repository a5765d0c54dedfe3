"""Smooth each lesion's boxes along z: one box per slice, fitted with its neighbours' evidence.

The detector places each slice's box on its own, and on a lesion's outer slices, where the
lesion is small and faint, the box often sits loosely: shifted, or too large or too small. A
lesion's outline changes smoothly from slice to slice, so the boxes of its neighbouring slices
say where its box should be. :func:`smooth_tracklets` replaces each box's centre and (log)
width and height by their mean over the tracklet's boxes within ``reach`` slices, each
weighted by its score and by ``1 / (1 + |dz|)`` (the box itself weighs its full score). Scores
and slices are unchanged, so a lesion's ranking and extent stay as they were; only where its
boxes lie moves. With ``ends`` > 0 only the ``ends`` outermost boxes at each end of a lesion
move, where the loose boxes are, and its inner boxes (the key slice among them) stay as
detected. Off by default (``infer.smooth_slices`` 0); ``docs/linking.md`` has the
measurements.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uld.data.annotations import Tracklet

__all__ = ["average_boxes", "smooth_boxes", "smooth_tracklets"]


def average_boxes(boxes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each row's weighted mean box: centre and log width and height averaged.

    boxes: ndarray[L, 5] ``[x1, y1, x2, y2, score]``; weights: ndarray[M, L], each row summing to
    1. Returns ndarray[M, 5]; row i's score is ``boxes[i]``'s (so M = L: one box in, one out).
    """
    centre = (boxes[:, :2] + boxes[:, 2:4]) / 2
    log_side = np.log(np.maximum(boxes[:, 2:4] - boxes[:, :2], 1e-6))
    centre, half = weights @ centre, np.exp(weights @ log_side) / 2
    return np.concatenate([centre - half, centre + half, boxes[:, 4:]], axis=1)


def smooth_boxes(z: np.ndarray, boxes: np.ndarray, reach: int, ends: int = 0) -> np.ndarray:
    """Boxes smoothed along z.

    z: ndarray[L] slice of each box (distinct); boxes: ndarray[L, 5] ``[x1, y1, x2, y2, score]``
    with ``x1 < x2``, ``y1 < y2`` and scores in [0, 1]. Returns a new ndarray[L, 5]: each centre
    and log side is the weighted mean (weights ``score / (1 + |dz|)``) over the boxes with
    ``|dz| <= reach``; scores copied. ``ends`` > 0: only the ``ends`` boxes of lowest and of
    highest z are replaced, the others copied. ``reach`` 0 returns a copy.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    if reach <= 0 or len(boxes) < 2:
        return boxes.copy()
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    distance = np.abs(z[:, None] - z[None, :])
    score = np.maximum(boxes[:, 4], 1e-6)  # a zero score still counts for its own box
    weights = np.where(distance <= reach, score[None, :] / (1.0 + distance), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    smoothed = average_boxes(boxes, weights)
    if ends > 0:
        rank = np.argsort(np.argsort(z))  # 0 = lowest slice
        inner = (rank >= ends) & (rank < len(z) - ends)
        smoothed[inner] = boxes[inner]
    return smoothed


def smooth_tracklets(tracklets: Sequence[Tracklet], reach: int, ends: int = 0) -> list[Tracklet]:
    """Each tracklet with its boxes smoothed (:func:`smooth_boxes`), in the input's order.

    tracklets: ``[(z, ndarray([x1, y1, x2, y2, score])), ...]``. ``reach`` and ``ends`` must be
    >= 0; ``reach`` 0 returns the input unchanged (copied lists); ``ends`` 0 smooths every box.
    """
    if reach < 0 or ends < 0:
        raise ValueError(f"reach = {reach}, ends = {ends}: must be >= 0")
    if reach == 0:
        return [list(trk) for trk in tracklets]
    out = []
    for trk in tracklets:
        if len(trk) < 2:
            out.append(list(trk))
            continue
        zs = [z for z, _ in trk]
        smoothed = smooth_boxes(np.array(zs), np.stack([b for _, b in trk]), reach, ends)
        out.append(list(zip(zs, smoothed)))
    return out
