"""One lesion, one finding: suppress nested boxes per slice, merge overlapping tracklets in 3D.

The detector's NMS (IoU 0.5) keeps a small box inside a large one, because their IoU is low
although both stand for one lesion; the linker, which takes one box per slice and track, then
builds one tracklet from each. Two pure steps remove those duplicates (``docs/linking.md``):

1. **Per slice, before linking** (:func:`contained_keep`, :func:`suppress_slices`): greedily by
   score, a box is dropped when it and a higher-scoring kept box overlap by more than
   ``contain_thresh`` measured as **intersection over the smaller box's area** (IoS). IoS is 1
   for a box fully inside another, whatever their sizes; two distinct lesions that touch share
   only an edge strip and stay.
2. **In 3D, after linking** (:func:`merge_tracklets`): greedily by tracklet score, a tracklet is
   merged into a higher-scoring kept one when, over the slices both hold a box, the summed
   intersections divided by the smaller of their summed areas exceed ``merge_thresh`` (the same
   IoS, in 3D); or when they hold no common slice but continue each other, the nearest slices of
   the two lying at most ``merge_gap`` missed slices apart and their boxes there overlapping by
   IoS > ``merge_thresh``. The kept lesion takes the union of the slices (where both have a box,
   the higher-scoring box), and its score stays the best box score.

A third, optional step trims a lesion's ends (:func:`trim_tracklet_ends`): the 2.5D detector sees a
lesion in its neighbouring slices and still fires, with a falling score, a slice or two before and
after it. Boxes are removed from each end of a tracklet while their score is below ``trim_thresh``
times the tracklet's best score; the best box and everything between stays (a lesion's own weak
slices inside it are not touched). It raises tracklet purity (``uld.eval.linking_quality``); a
lesion's key slice that the detector scored that low is lost with it (``docs/linking.md``).

Both suppression steps share a size guard, ``area_ratio``: a pair counts as duplicates only when the smaller
box (tracklet: summed area over the common slices) covers at least ``area_ratio`` of the larger
one, so a lesion inside an organ-sized false box (or a false box inside a large lesion) is not
taken for its duplicate, whichever of the two scores higher.

A threshold of 1 turns a step off and returns its input unchanged: IoS never exceeds 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_area

from uld.data.annotations import Tracklet
from uld.infer.link import SliceDetections

__all__ = [
    "contained_keep",
    "intersection_over_smaller",
    "merge_tracklets",
    "suppress_slices",
    "trim_tracklet_ends",
    "trimmed_span",
]


def _intersection(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor) -> torch.Tensor:
    lt = torch.max(a_xyxy[:, None, :2], b_xyxy[None, :, :2])
    rb = torch.min(a_xyxy[:, None, 2:], b_xyxy[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def intersection_over_smaller(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor) -> torch.Tensor:
    """IoS of every pair: intersection area over the smaller of the two boxes' areas.

    a_xyxy (Tensor[N, 4]), b_xyxy (Tensor[M, 4]): x1, y1, x2, y2 in one pixel frame, x1 <= x2,
    y1 <= y2. Returns Tensor[N, M] in [0, 1]; a pair with a zero-area box gives 0.
    """
    inter = _intersection(a_xyxy, b_xyxy)
    smaller = torch.min(box_area(a_xyxy)[:, None], box_area(b_xyxy)[None, :])
    return torch.where(smaller > 0, inter / smaller.clamp(min=torch.finfo(inter.dtype).tiny),
                       torch.zeros_like(inter))


def contained_keep(
    boxes_xyxy: torch.Tensor, scores: torch.Tensor, contain_thresh: float, area_ratio: float = 0.0
) -> torch.Tensor:
    """Keep-mask of containment suppression on one slice (greedy, highest score first).

    boxes_xyxy (Tensor[N, 4]): x1, y1, x2, y2 in pixels, x1 <= x2, y1 <= y2 (after the
    detector's NMS). scores (Tensor[N]). A box is dropped when a higher-scoring box that is kept
    overlaps it by IoS (:func:`intersection_over_smaller`) > ``contain_thresh`` and the smaller
    of the two has at least ``area_ratio`` times the larger one's area. Ties in score: the box
    listed first wins. Returns BoolTensor[N] in the input's order (all true when
    ``contain_thresh >= 1`` or N < 2), so ``boxes_xyxy[keep]`` keeps the input's order.
    """
    n = boxes_xyxy.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=boxes_xyxy.device)
    if n < 2 or contain_thresh >= 1.0:
        return keep
    ios = intersection_over_smaller(boxes_xyxy, boxes_xyxy)
    areas = box_area(boxes_xyxy)
    ratio = torch.min(areas[:, None], areas[None, :]) / torch.max(areas[:, None], areas[None, :]).clamp(
        min=torch.finfo(areas.dtype).tiny)
    duplicate = (ios > contain_thresh) & (ratio >= area_ratio)
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    for rank, i in enumerate(order):
        if keep[i]:
            lower = torch.as_tensor(order[rank + 1:], dtype=torch.long, device=keep.device)
            keep[lower] &= ~duplicate[i, lower]
    return keep


def suppress_slices(
    slices: Sequence[SliceDetections], contain_thresh: float, area_ratio: float = 0.0
) -> list[SliceDetections]:
    """:func:`contained_keep` on every slice; ``contain_thresh >= 1`` returns ``slices`` as given."""
    if contain_thresh >= 1.0:
        return list(slices)
    out = []
    for det in slices:
        boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(det.scores, dtype=np.float64).reshape(-1)
        keep = contained_keep(torch.from_numpy(boxes), torch.from_numpy(scores), contain_thresh,
                              area_ratio).numpy()
        out.append(SliceDetections(det.z, boxes[keep], scores[keep]))
    return out


# --------------------------------------------------------------------------- 3D


@dataclass
class _Lesion:
    """A tracklet being merged: ``{z: [x1, y1, x2, y2, score]}`` and how many tracklets it holds."""

    boxes: dict[int, np.ndarray]
    score: float
    count: int = 1

    def zs(self) -> np.ndarray:
        return np.fromiter(sorted(self.boxes), dtype=np.int64)


def _area(box: np.ndarray) -> float:
    return max(float(box[2] - box[0]), 0.0) * max(float(box[3] - box[1]), 0.0)


def _inter(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(float(w), 0.0) * max(float(h), 0.0)


def _duplicate(pairs: Sequence[tuple[np.ndarray, np.ndarray]], thresh: float, area_ratio: float) -> bool:
    """IoS over the summed areas of paired boxes (one pair per slice) > thresh, size guard held."""
    inter = sum(_inter(a, b) for a, b in pairs)
    area_a = sum(_area(a) for a, _ in pairs)
    area_b = sum(_area(b) for _, b in pairs)
    smaller, larger = min(area_a, area_b), max(area_a, area_b)
    if smaller <= 0:
        return False
    return inter / smaller > thresh and smaller >= area_ratio * larger


def _continues(a: _Lesion, b: _Lesion, thresh: float, gap: int, area_ratio: float) -> bool:
    """No common slice; the nearest slices of ``a`` and ``b`` lie at most ``gap`` missed slices
    apart and their boxes there are duplicates."""
    za, zb = a.zs(), b.zs()
    pos = np.clip(np.searchsorted(zb, za), 1, len(zb)) - 1
    candidates = np.stack([zb[pos], zb[np.minimum(pos + 1, len(zb) - 1)]], axis=1)
    dist = np.abs(candidates - za[:, None])
    i, j = np.unravel_index(int(np.argmin(dist)), dist.shape)
    if dist[i, j] - 1 > gap:
        return False
    return _duplicate([(a.boxes[int(za[i])], b.boxes[int(candidates[i, j])])], thresh, area_ratio)


def _matches(kept: _Lesion, new: _Lesion, thresh: float, gap: int, area_ratio: float) -> bool:
    common = kept.boxes.keys() & new.boxes.keys()
    if common:
        return _duplicate([(kept.boxes[z], new.boxes[z]) for z in common], thresh, area_ratio)
    k_lo, k_hi = min(kept.boxes), max(kept.boxes)
    n_lo, n_hi = min(new.boxes), max(new.boxes)
    if n_lo - k_hi - 1 > gap or k_lo - n_hi - 1 > gap:
        return False
    return _continues(new, kept, thresh, gap, area_ratio)


def merge_tracklets(
    tracklets: Sequence[Tracklet], merge_thresh: float, merge_gap: int = 1, area_ratio: float = 0.0
) -> tuple[list[Tracklet], list[int]]:
    """Merge tracklets that stand for one lesion (greedy, highest tracklet score first).

    tracklets: ``[(z, ndarray([x1, y1, x2, y2, score])), ...]``, one box per slice, as the
        linkers return them. A tracklet is merged into the first higher-scoring kept lesion
        that it overlaps in 3D (summed intersection over the smaller summed area, on the slices
        both hold, > ``merge_thresh``) or that it continues across at most ``merge_gap`` missed
        slices (nearest boxes with IoS > ``merge_thresh``); either way the smaller must have at
        least ``area_ratio`` times the larger's (summed) area. Ties in score: listed first wins.
        The lesion keeps the union of slices; on a slice both hold, the higher-scoring box.
    Returns ``(lesions, counts)``: the kept lesions as tracklets (increasing z), in the order of
    the input tracklet each one started from, and per lesion how many input tracklets it holds
    (1: nothing merged into it). ``merge_thresh >= 1`` returns the input unchanged, counts 1.
    """
    if merge_thresh >= 1.0 or len(tracklets) < 2:
        return [list(t) for t in tracklets], [1] * len(tracklets)
    items = []
    for trk in tracklets:
        boxes = {int(z): np.asarray(b, dtype=np.float64) for z, b in trk}
        items.append(_Lesion(boxes, max(float(b[4]) for b in boxes.values())))
    order = sorted(range(len(items)), key=lambda i: -items[i].score)  # stable: ties keep input order
    kept: list[int] = []
    for i in order:
        new = items[i]
        target = next((k for k in kept if _matches(items[k], new, merge_thresh, merge_gap, area_ratio)),
                      None)
        if target is None:
            kept.append(i)
            continue
        lesion = items[target]
        for z, box in new.boxes.items():
            if z not in lesion.boxes or box[4] > lesion.boxes[z][4]:
                lesion.boxes[z] = box
        lesion.score = max(lesion.score, new.score)
        lesion.count += new.count
    kept.sort()
    return ([[(z, items[k].boxes[z]) for z in sorted(items[k].boxes)] for k in kept],
            [items[k].count for k in kept])


# --------------------------------------------------------------------------- ends


def trimmed_span(scores: np.ndarray, trim_thresh: float) -> tuple[int, int]:
    """``(first, last)`` indices (inclusive) kept of a tracklet's ``scores (ndarray[L], L >= 1)``,
    in slice order: from each end, entries below ``trim_thresh * max(scores)`` are dropped until
    one is not; the first highest-scoring entry always stays."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    peak = int(np.argmax(scores))
    weak = scores < trim_thresh * scores[peak]
    first, last = 0, len(scores) - 1
    while first < peak and weak[first]:
        first += 1
    while last > peak and weak[last]:
        last -= 1
    return first, last


def trim_tracklet_ends(tracklets: Sequence[Tracklet], trim_thresh: float) -> list[Tracklet]:
    """Each tracklet without its weak ends (:func:`trimmed_span`), in the input's order.

    tracklets: ``[(z, ndarray([x1, y1, x2, y2, score])), ...]``, increasing z, not empty.
    trim_thresh: in [0, 1]; 0 returns the input unchanged (copied lists). A tracklet keeps its
    score (its best box) and at least that box; boxes are not altered.
    """
    if not 0.0 <= trim_thresh <= 1.0:
        raise ValueError(f"trim_thresh = {trim_thresh}: must lie in [0, 1]")
    out = []
    for index, trk in enumerate(tracklets):
        if len(trk) == 0:
            raise ValueError(f"tracklet {index} has no boxes")
        if trim_thresh <= 0.0:
            out.append(list(trk))
            continue
        first, last = trimmed_span(np.array([float(box[4]) for _, box in trk]), trim_thresh)
        out.append(list(trk[first:last + 1]))
    return out
