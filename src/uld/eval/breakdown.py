"""Sensitivity by lesion size and by lesion type, at the operating points of a whole-set FROC.

Works on the match arrays of every protocol (:class:`~uld.eval.p3d.P3DMatches`,
:class:`~uld.eval.keyslice.KeySliceMatches`, :class:`~uld.eval.iobb3d.IOBB3DMatches`).

The operating point
-------------------

For an FP rate ``k`` the whole detection set is ranked exactly as the protocol ranks it
(``np.argsort(scores)[::-1]``) and cut where the protocol reads its sensitivity at ``k``:

- key-slice and IOBB 3D: after the last ranked detection with ``fps <= k`` (nothing kept
  when the first detection already exceeds ``k``), see :func:`uld.eval.keyslice.sens_at_fp`;
- P3D: after the last ranked detection with ``fps < k`` (the first one at least), see
  :mod:`uld.eval.p3d`.

A ground-truth box counts as hit at ``k`` when a kept detection hits it. So the pooled
sensitivity of all groups equals the protocol's own sensitivity at ``k``, and every group is
judged at the same score threshold (``score_threshold``: the score of the last kept
detection; with tied scores the cut may fall inside a tie, as the protocol's does).

Groups
------

- by size (:func:`size_bands`): the long axis of each ground-truth box,
  :func:`gt_long_axis` = ``max((x2 - x1) * sx, (y2 - y1) * sy)`` in mm when the pixel
  spacing is known, else in pixels (``sx = sy = 1``); for 3D boxes the axial (x, y) extent.
  Bands ``< 10``, ``10-20``, ``20-30``, ``>= 30`` (edges :data:`SIZE_EDGES`, lower edge
  inclusive; NaN sizes go to "unknown"). DeepLesion boxes are the RECIST end points padded
  by 5 px on every side: ``pad_px=5`` measures the end points' extent instead.
- by label: any integer per ground-truth box, named by ``label_names`` (default
  :data:`DEEPLESION_LESION_TYPES`, DL_info's ``Coarse_lesion_type`` 1..8; other codes,
  e.g. -1, are named by their number).

Per-box arrays follow the protocol's ground-truth order: volumes in dict order, then list
(or row) order: :func:`uld.data.annotations.flatten_gt` for 2D ground truth,
:meth:`uld.eval.ground_truth.GroundTruth3D.flat` for 3D.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from uld.data.annotations import flatten_gt
from uld.eval.froc import AVG_FP_RATES, froc_walk, operating_index
from uld.eval.ground_truth import GroundTruth3D
from uld.eval.iobb3d import IOBB3DMatches
from uld.eval.keyslice import KeySliceMatches
from uld.eval.p3d import P3DMatches

__all__ = [
    "DEEPLESION_LESION_TYPES",
    "SIZE_EDGES",
    "Breakdown",
    "GroupSensitivity",
    "box_long_axis",
    "breakdown",
    "gt_long_axis",
    "operating_points",
    "size_bands",
]

DEEPLESION_LESION_TYPES: dict[int, str] = {
    1: "bone", 2: "abdomen", 3: "mediastinum", 4: "liver", 5: "lung", 6: "kidney",
    7: "soft tissue", 8: "pelvis",
}
"""DL_info.csv's ``Coarse_lesion_type`` codes (val / test rows; -1 on training rows)."""
SIZE_EDGES: tuple[float, ...] = (10.0, 20.0, 30.0)
"""Band edges of the long axis: ``< 10``, ``10-20``, ``20-30``, ``>= 30``."""

AnyMatches = P3DMatches | KeySliceMatches | IOBB3DMatches


def box_long_axis(
    boxes: np.ndarray, spacing_xy: Sequence[float] | np.ndarray | None = None, pad_px: float = 0.0
) -> np.ndarray:
    """``(P,)`` long axis ``max(w * sx, h * sy)`` of boxes, ``w = x2 - x1 - 2 * pad_px``.

    boxes: ``(P, 4)`` ``x1, y1, x2, y2`` or ``(P, 6)`` ``x1, y1, z1, x2, y2, z2`` (axial extent).
    spacing_xy: ``None`` (pixels), one ``(sx, sy)`` pair, or ``(P, 2)`` per box.
    pad_px: padding to remove from every side first (5 for DeepLesion's RECIST boxes);
        sizes are clipped at 0.
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] not in (4, 6):
        raise ValueError(f"boxes of shape {b.shape}: expected (P, 4) or (P, 6)")
    x1, y1, x2, y2 = (b[:, 0], b[:, 1], b[:, 2], b[:, 3]) if b.shape[1] == 4 else (
        b[:, 0], b[:, 1], b[:, 3], b[:, 4])
    w = np.maximum(x2 - x1 - 2.0 * pad_px, 0.0)
    h = np.maximum(y2 - y1 - 2.0 * pad_px, 0.0)
    if spacing_xy is None:
        return np.maximum(w, h)
    s = np.broadcast_to(np.asarray(spacing_xy, dtype=np.float64), (len(b), 2))
    return np.maximum(w * s[:, 0], h * s[:, 1])


def gt_long_axis(
    gt: Mapping[str, Any] | GroundTruth3D,
    spacing: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    pad_px: float = 0.0,
) -> np.ndarray:
    """``(P,)`` long axis of every ground-truth box, in the protocol's box order.

    gt: 2D ground truth ``{volume: [(z, box), ...]}`` or a :class:`GroundTruth3D`.
    spacing: ``None`` (pixels), one ``(sx, sy)`` for all, or ``{volume: (sx, sy)}`` covering
        every volume with boxes (a missing one raises ``ValueError`` naming it).
    """
    if isinstance(gt, GroundTruth3D):
        volume_index, boxes = gt.flat()
        volumes = gt.volumes
    else:
        flat = flatten_gt(gt)
        volume_index, boxes, volumes = flat.volume_index, flat.boxes, flat.volumes
    if spacing is None or not isinstance(spacing, Mapping):
        return box_long_axis(boxes, spacing, pad_px)
    table = np.full((len(volumes), 2), np.nan)
    for v in np.unique(volume_index).tolist():
        if volumes[v] not in spacing:
            raise ValueError(f"spacing: no (sx, sy) for volume {volumes[v]!r}")
        table[v] = np.asarray(spacing[volumes[v]], dtype=np.float64)[:2]
    return box_long_axis(boxes, table[volume_index], pad_px)


def size_bands(
    sizes: np.ndarray, edges: Sequence[float] = SIZE_EDGES, unit: str = "mm"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(band (P,) int64, names)``: the band of each size; NaN goes to a last "unknown" band.

    Band ``i`` holds ``edges[i - 1] <= size < edges[i]``; names ``"<10 mm"``, ``"10-20 mm"``,
    ..., ``">=30 mm"``, then ``"unknown"``.
    """
    e = [float(x) for x in edges]
    if any(b <= a for a, b in pairwise(e)):
        raise ValueError(f"size edges {tuple(edges)} must increase")
    s = np.asarray(sizes, dtype=np.float64)
    band = np.searchsorted(np.asarray(e), s, side="right").astype(np.int64)
    band[np.isnan(s)] = len(e) + 1
    if e:
        names = [f"<{e[0]:g} {unit}"]
        names += [f"{a:g}-{b:g} {unit}" for a, b in pairwise(e)]
        names += [f">={e[-1]:g} {unit}"]
    else:
        names = [f"all sizes ({unit})"]
    return band, (*names, "unknown")


@dataclass(frozen=True, eq=False)
class GroupSensitivity:
    """One group of ground-truth boxes at every operating point.

    name (str); n (int): boxes in the group; hits (dict[rate, int]): boxes hit;
    sensitivity (dict[rate, float]): ``hits / n`` (NaN when ``n == 0``).
    """

    name: str
    n: int
    hits: dict[float, int]
    sensitivity: dict[float, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": int(self.n),
            "hits": {f"{r:g}": int(v) for r, v in self.hits.items()},
            "sensitivity": {f"{r:g}": (None if np.isnan(v) else float(v))
                            for r, v in self.sensitivity.items()},
        }


@dataclass(frozen=True, eq=False)
class Breakdown:
    """Sensitivity by size band and label at the whole set's operating points.

    protocol (str): ``"p3d"``, ``"keyslice"`` or ``"iobb3d"``; unit: ``"volume"`` / ``"image"``.
    fp_rates (tuple[float, ...]): the FPs per unit of each operating point.
    kept (dict[rate, int]): ranked detections kept at that point.
    score_threshold (dict[rate, float | None]): score of the last kept detection.
    overall: every box; by_size, by_label: the groups (empty when not asked for).
    """

    protocol: str
    unit: str
    fp_rates: tuple[float, ...]
    kept: dict[float, int]
    score_threshold: dict[float, float | None]
    overall: GroupSensitivity
    by_size: tuple[GroupSensitivity, ...]
    by_label: tuple[GroupSensitivity, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "unit": self.unit,
            "fp_rates": [float(r) for r in self.fp_rates],
            "kept": {f"{r:g}": int(v) for r, v in self.kept.items()},
            "score_threshold": {f"{r:g}": (None if v is None else float(v))
                                for r, v in self.score_threshold.items()},
            "overall": self.overall.to_json(),
            "by_size": [g.to_json() for g in self.by_size],
            "by_label": [g.to_json() for g in self.by_label],
        }

    def format(self) -> str:
        """A table: one row per group, sensitivity (%) at each FP rate, then the box count."""
        width = max([len(g.name) for g in (self.overall, *self.by_size, *self.by_label)] + [5])
        head = "".join(f"{r:>8g}" for r in self.fp_rates)
        lines = [f"sensitivity (%) at FPs per {self.unit} ({self.protocol})",
                 f"{'group':<{width}}{head}{'boxes':>8}"]

        def row(g: GroupSensitivity) -> str:
            cells = "".join("     n/a" if np.isnan(v) else f"{100 * v:8.2f}"
                            for v in g.sensitivity.values())
            return f"{g.name:<{width}}{cells}{g.n:>8d}"

        lines.append(row(self.overall))
        lines += [row(g) for g in self.by_size]
        lines += [row(g) for g in self.by_label]
        return "\n".join(lines)


def _protocol_of(matches: AnyMatches) -> tuple[str, str, int]:
    if isinstance(matches, P3DMatches):
        return "p3d", "volume", matches.n_volumes
    if isinstance(matches, KeySliceMatches):
        return "keyslice", "image", matches.n_images
    if isinstance(matches, IOBB3DMatches):
        return "iobb3d", "volume", matches.n_volumes
    raise TypeError(f"expected P3DMatches, KeySliceMatches or IOBB3DMatches, got {type(matches).__name__}")


def operating_points(
    matches: AnyMatches, fp_rates: Sequence[float] = AVG_FP_RATES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the protocol cuts its ranking at each rate.

    Returns ``(index (R,), order (D,), first_hit_rank (P,))``: the rank of the last kept
    detection (-1: none), the ranking, and the rank at which each box is first hit (``D``
    when never). A box is hit at rate ``r`` iff ``first_hit_rank <= index[r]``.
    """
    protocol, _, n_units = _protocol_of(matches)
    walk = froc_walk(matches.scores, matches.hit_ptr, matches.hit_gt, matches.npos)
    fps = walk.fp.astype(np.float64) / max(n_units, 1)
    rates = np.asarray(fp_rates, dtype=np.float64)
    n = len(fps)
    if protocol == "p3d":
        index = np.clip(np.searchsorted(fps, rates, side="left") - 1, 0, n - 1) if n else (
            np.full(len(rates), -1, dtype=np.int64))
    else:
        index = operating_index(fps, rates)
    return index.astype(np.int64), walk.order, walk.first_hit_rank


def _group(name: str, mask: np.ndarray, first_hit: np.ndarray, index: np.ndarray,
           rates: tuple[float, ...]) -> GroupSensitivity:
    ranks = first_hit[mask]
    n = int(mask.sum())
    hits = {r: int(np.count_nonzero(ranks <= i)) for r, i in zip(rates, index.tolist())}
    sens = {r: (h / n if n else float("nan")) for r, h in hits.items()}
    return GroupSensitivity(name=name, n=n, hits=hits, sensitivity=sens)


def breakdown(
    matches: AnyMatches,
    fp_rates: Sequence[float] = AVG_FP_RATES,
    *,
    sizes: np.ndarray | None = None,
    size_edges: Sequence[float] = SIZE_EDGES,
    size_unit: str = "mm",
    labels: np.ndarray | Sequence[int] | None = None,
    label_names: Mapping[int, str] = DEEPLESION_LESION_TYPES,
) -> Breakdown:
    """Sensitivity and hit counts per size band and per label at each FP rate.

    matches: the output of ``match_p3d``, ``match_keyslice`` or ``match_iobb3d``.
    sizes (ndarray[P] | None): long axis per ground-truth box (:func:`gt_long_axis`), in
        ``size_unit``; bands from ``size_edges``.
    labels (ndarray[P] | None): an integer per ground-truth box (lesion type 1..8, ...).
    Raises ``ValueError`` when a per-box array does not have one entry per box.
    """
    protocol, unit, _ = _protocol_of(matches)
    rates = tuple(float(r) for r in fp_rates)
    npos = matches.npos
    index, order, first_hit = operating_points(matches, rates)
    scores = np.asarray(matches.scores, dtype=np.float64)
    kept = {r: int(i + 1) for r, i in zip(rates, index.tolist())}
    threshold = {r: (float(scores[order[i]]) if i >= 0 else None)
                 for r, i in zip(rates, index.tolist())}
    overall = _group("all", np.ones(npos, dtype=bool), first_hit, index, rates)

    by_size: list[GroupSensitivity] = []
    if sizes is not None:
        s = np.asarray(sizes, dtype=np.float64)
        if s.shape != (npos,):
            raise ValueError(f"sizes has shape {s.shape}; the ground truth has {npos} boxes")
        band, names = size_bands(s, size_edges, size_unit)
        for b, name in enumerate(names):
            if name != "unknown" or (band == b).any():
                by_size.append(_group(name, band == b, first_hit, index, rates))

    by_label: list[GroupSensitivity] = []
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (npos,) or (npos and lab.dtype.kind not in ("i", "u")):
            raise ValueError(
                f"labels has shape {lab.shape} and dtype {lab.dtype}; expected {npos} integers"
            )
        codes = sorted(set(label_names) | set(np.unique(lab).tolist()))
        for code in codes:
            name = label_names.get(code, f"label {code}")
            by_label.append(_group(name, lab == code, first_hit, index, rates))

    return Breakdown(
        protocol=protocol, unit=unit, fp_rates=rates, kept=kept, score_threshold=threshold,
        overall=overall, by_size=tuple(by_size), by_label=tuple(by_label),
    )
