"""The evaluation core: what the P3D, key-slice and IOBB 3D protocols share.

- :data:`FP_RATES` / :data:`AVG_FP_RATES`: where every protocol reads its FROC;
- hit bookkeeping: match arrays hold hits as CSR lists (``hit_ptr``, ``hit_gt``: detection
  ``d`` hits boxes ``hit_gt[hit_ptr[d]:hit_ptr[d + 1]]``), built with :func:`pair_ranges`
  and :func:`csr_pointers`; :class:`TrackletHits` reads them for the volume-level protocols;
- :func:`froc_walk`: the ranking walk (misses are false positives, first hits count,
  re-hits count as nothing), MULAN's ``FROC`` operation by operation;
- operating points: :func:`operating_index` / :func:`sens_at_fp` (MULAN's and the manual 1K
  script's reading: the last point at or below a rate) and :func:`froc_sensitivity`
  (Lesion Harvester's extrapolating ``interp1d`` reading, used by P3D and the plots);
- :class:`FrocResult` / :func:`official_froc_result`: the figures of the key-slice and IOBB
  3D protocols (P3D adds an AP: :class:`uld.eval.p3d.P3DResult`).

Each protocol module (:mod:`uld.eval.p3d`, :mod:`uld.eval.keyslice`, :mod:`uld.eval.iobb3d`)
matches once and imports only this core; their docstrings say where each reference script
fails and what we return there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "AVG_FP_RATES",
    "FP_RATES",
    "FrocResult",
    "FrocWalk",
    "TrackletHits",
    "UnknownVolumeError",
    "check_known_volumes",
    "check_threshold",
    "csr_pointers",
    "froc_sensitivity",
    "froc_walk",
    "linear_extrapolate",
    "official_froc_result",
    "operating_index",
    "pair_ranges",
    "sens_at_fp",
]

FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
"""FPs per volume (P3D, IOBB 3D) or per image (key slice) at which the sensitivity is
reported: Lesion Harvester's list, which MULAN and the manual 1K script share."""
AVG_FP_RATES: tuple[float, ...] = FP_RATES[:7]
"""FP rates averaged into "avg" (the paper's AVG, 0.125 .. 8, as the manual 1K script)."""


class UnknownVolumeError(ValueError):
    """Detections name a volume that the ground truth does not list."""


class TrackletHits:
    """Accessors shared by the match arrays of the volume-level protocols (P3D, IOBB 3D):
    ``scores`` per tracklet, ``hit_ptr``/``hit_gt`` (CSR hit lists), ``gt_volume_index`` per
    ground-truth box, ``volumes``."""

    scores: np.ndarray
    hit_ptr: np.ndarray
    hit_gt: np.ndarray
    gt_volume_index: np.ndarray
    volumes: tuple[str, ...]

    @property
    def npos(self) -> int:
        """Number of ground-truth boxes."""
        return len(self.gt_volume_index)

    @property
    def n_volumes(self) -> int:
        """Number of ground-truth volumes (the "per volume" denominator)."""
        return len(self.volumes)

    @property
    def n_tracklets(self) -> int:
        return len(self.scores)

    def hits(self, tracklet: int) -> np.ndarray:
        """``(k,)`` int64: the ground-truth boxes that tracklet ``tracklet`` hits."""
        return self.hit_gt[self.hit_ptr[tracklet]:self.hit_ptr[tracklet + 1]]


def check_known_volumes(detection_volumes: Sequence[str], gt_volumes: Sequence[str]) -> np.ndarray:
    """``(V,)`` int64: the ground-truth index of each detection volume.

    Raises :class:`UnknownVolumeError` naming the first unknown volume.
    """
    position = {name: i for i, name in enumerate(gt_volumes)}
    unknown = [name for name in detection_volumes if name not in position]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise UnknownVolumeError(
            f"detections name volume {unknown[0]!r}, which the ground truth does not list{more}"
        )
    return np.array([position[name] for name in detection_volumes], dtype=np.int64)


def check_threshold(name: str, value: float) -> float:
    """``float(value)``; raises ``ValueError`` naming ``name`` unless ``0 < value <= 1``."""
    if not (0.0 < float(value) <= 1.0):
        raise ValueError(f"{name} = {value!r} must lie in (0, 1]")
    return float(value)


def pair_ranges(n_per_item: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For items with ``n_per_item[i]`` partners starting at ``starts[i]``: (item, partner)."""
    item = np.repeat(np.arange(len(n_per_item), dtype=np.int64), n_per_item)
    offsets = np.cumsum(n_per_item) - n_per_item
    within = np.arange(len(item), dtype=np.int64) - np.repeat(offsets, n_per_item)
    return item, np.repeat(starts, n_per_item) + within


def csr_pointers(owner: np.ndarray, n: int) -> np.ndarray:
    """``(n + 1,)`` int64 pointers of a grouping: item ``i`` owns ``ptr[i]:ptr[i + 1]``.

    owner (ndarray[H], int64): the item of each entry, non-decreasing, ``< n``.
    """
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n), out=ptr[1:])
    return ptr


@dataclass(frozen=True, eq=False)
class FrocWalk:
    """The ranking walk of MULAN's ``FROC``.

    order (ndarray[D], int64): detections in rank order (``np.argsort(scores)[::-1]``).
    first_hit_rank (ndarray[P], int64): rank of the detection that first hits each box
        (``D`` when none does).
    tps (ndarray[D], int64): boxes hit after each ranked detection.
    fp (ndarray[D], int64): false positives (detections hitting nothing) after each ranked
        detection.
    rehits (ndarray[D], int64): detections after each ranked detection that hit only boxes
        found before (neither hits nor false positives here; P3D's AP counts them as FPs).
    """

    order: np.ndarray
    first_hit_rank: np.ndarray
    tps: np.ndarray
    fp: np.ndarray
    rehits: np.ndarray


def froc_walk(scores: np.ndarray, hit_ptr: np.ndarray, hit_gt: np.ndarray, npos: int) -> FrocWalk:
    """Walk the ranking: misses are FPs, first hits count, re-hits count as nothing.

    scores (ndarray[D]): detection scores in concatenation order.
    hit_ptr (ndarray[D + 1]), hit_gt (ndarray[H]): detection ``d`` hits boxes
        ``hit_gt[hit_ptr[d]:hit_ptr[d + 1]]`` (each box at most once per detection).
    npos: number of ground-truth boxes (``hit_gt < npos``).
    """
    n = len(scores)
    order = np.argsort(np.asarray(scores, dtype=np.float64))[::-1]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    counts = np.diff(hit_ptr)
    pair_rank = np.repeat(rank, counts)
    first = np.full(npos, n, dtype=np.int64)
    np.minimum.at(first, hit_gt, pair_rank)
    new = pair_rank == first[hit_gt]
    tps = np.cumsum(np.bincount(pair_rank[new], minlength=n))
    fp = np.cumsum((counts == 0).astype(np.int64)[order])
    rehits = np.cumsum(np.bincount(pair_rank[~new], minlength=n))
    return FrocWalk(order=order, first_hit_rank=first, tps=tps, fp=fp, rehits=rehits)


def operating_index(fps: np.ndarray, fp_rates: Sequence[float]) -> np.ndarray:
    """``(R,)`` int64: the ranked point each rate reads (-1: before the first detection).

    The last point ``j`` with ``fps[j] <= rate``, which is where ``np.interp`` (hence the
    references' ``interp1d``) reads a flat-or-vertical FROC; past the end, the last point.
    """
    fps = np.asarray(fps, dtype=np.float64)
    return np.searchsorted(fps, np.asarray(fp_rates, dtype=np.float64), side="right") - 1


def sens_at_fp(fps: np.ndarray, sens: np.ndarray, fp_rates: Sequence[float] = FP_RATES) -> np.ndarray:
    """``(R,)`` sensitivity at ``fp_rates`` as MULAN's / the manual 1K ``sens_at_FP`` reads it.

    fps, sens (ndarray[D]): the FROC in ranking order (each step flat or vertical).
    In range: ``sens[j]``, ``j`` the last point with ``fps[j] <= rate``; past the end: the
    last value; below ``fps[0]``: 0; no point at all: 0.
    """
    sens = np.asarray(sens, dtype=np.float64)
    index = operating_index(fps, fp_rates)
    if len(sens) == 0:
        return np.zeros(len(index), dtype=np.float64)
    return np.where(index >= 0, sens[np.maximum(index, 0)], 0.0)


def froc_sensitivity(
    fps: np.ndarray, sens: np.ndarray, fp_rates: Sequence[float] = FP_RATES
) -> np.ndarray:
    """``(R,)`` sensitivity at ``fp_rates`` off an FROC curve (``(T,)`` arrays, ranking order).

    ``interp1d(fps, sens, fill_value="extrapolate")`` as the reference; where that is
    undefined (fewer than 2 points) or not finite,
    ``sens[clip(searchsorted(fps, rate, "left") - 1, 0, T - 1)]``, which is what the
    reference returns wherever it is finite (see :mod:`uld.eval.p3d`); 0 when ``T == 0``.
    """
    fps = np.asarray(fps, dtype=np.float64)
    sens = np.asarray(sens, dtype=np.float64)
    rates = np.asarray(fp_rates, dtype=np.float64)
    if len(fps) == 0:
        return np.zeros(len(rates), dtype=np.float64)
    index = np.clip(np.searchsorted(fps, rates, side="left") - 1, 0, len(fps) - 1)
    step = sens[index]
    if len(fps) < 2:
        return step
    with np.errstate(divide="ignore", invalid="ignore"):
        reference = linear_extrapolate(fps, sens, rates)
    return np.where(np.isfinite(reference), reference, step)


def linear_extrapolate(x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """``scipy.interpolate.interp1d(x, y, fill_value="extrapolate")(x_new)`` for 1-D float64
    ``x`` (non-decreasing, at least 2 points) and ``y``: scipy's ``_call_linear``, operation
    for operation (searchsorted left, indices clipped to ``[1, T - 1]``, slope times offset
    plus ``y_lo``), so equal bit for bit, without importing scipy (a third of a second).
    A vertical segment gives the same NaN / inf as scipy (callers replace them).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x_new = np.asarray(x_new, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")  # as interp1d does; the identity for a FROC
    x, y = x[order], y[order]
    hi = np.searchsorted(x, x_new).clip(1, len(x) - 1).astype(int)
    lo = hi - 1
    slope = (y[hi] - y[lo]) / (x[hi] - x[lo])
    return slope * (x_new - x[lo]) + y[lo]


@dataclass(frozen=True, eq=False)
class FrocResult:
    """FROC figures of the key-slice or the 3D IOBB protocol.

    protocol (str): ``"keyslice"`` or ``"iobb3d"``.
    sensitivity (dict[float, float]): sensitivity at each requested FP rate.
    avg (float): mean sensitivity over ``avg_rates``.
    ap: always ``None``: neither reference defines an AP.
    fps, sens (ndarray[D], float64): FPs per unit and sensitivity after each ranked detection.
    npos, n_units, n_detections (int): boxes, images (or volumes), ranked detections.
    n_hits, n_fp (int): boxes hit and false positives over the whole ranking.
    unit (str): ``"image"`` or ``"volume"``: what "FPs per ..." counts.
    threshold (float): the overlap threshold (IoU or IOBB).
    settings (dict): protocol options (overlap metric, score source, ...).
    """

    protocol: str
    sensitivity: dict[float, float]
    avg: float
    fps: np.ndarray
    sens: np.ndarray
    npos: int
    n_units: int
    n_detections: int
    n_hits: int
    n_fp: int
    unit: str
    threshold: float
    avg_rates: tuple[float, ...] = AVG_FP_RATES
    settings: dict[str, Any] = field(default_factory=dict)
    ap: None = None

    def to_json(self) -> dict[str, Any]:
        """Plain-Python figures: ``{"protocol", "sensitivity": {"0.125": ...}, "avg", ...}``."""
        return {
            "protocol": self.protocol,
            "ap": None,
            "sensitivity": {f"{rate:g}": float(v) for rate, v in self.sensitivity.items()},
            "avg": float(self.avg),
            "avg_rates": [float(r) for r in self.avg_rates],
            "npos": int(self.npos),
            f"n_{self.unit}s": int(self.n_units),
            "n_detections": int(self.n_detections),
            "n_hits": int(self.n_hits),
            "n_fp": int(self.n_fp),
            "threshold": float(self.threshold),
            **{k: v for k, v in self.settings.items()},
        }


def official_froc_result(
    protocol: str,
    scores: np.ndarray,
    hit_ptr: np.ndarray,
    hit_gt: np.ndarray,
    npos: int,
    n_units: int,
    unit: str,
    threshold: float,
    fp_rates: Sequence[float],
    avg_rates: Sequence[float],
    settings: Mapping[str, Any] | None = None,
) -> FrocResult:
    """The FROC of MULAN's ``FROC`` + ``sens_at_FP`` from match arrays (see :mod:`uld.eval.keyslice`)."""
    walk = froc_walk(scores, hit_ptr, hit_gt, npos)
    # the reference divides by zero when there is no box: sensitivity 0 instead
    sens = walk.tps.astype(np.float64) / npos if npos else np.zeros(len(scores), dtype=np.float64)
    fps = walk.fp.astype(np.float64) / max(n_units, 1)
    rates = tuple(float(r) for r in fp_rates)
    avg_r = tuple(float(r) for r in avg_rates)
    values = sens_at_fp(fps, sens, rates)
    avg_values = sens_at_fp(fps, sens, avg_r)
    return FrocResult(
        protocol=protocol,
        sensitivity={r: float(v) for r, v in zip(rates, values)},
        avg=float(np.mean(avg_values)) if avg_r else float("nan"),
        fps=fps,
        sens=sens,
        npos=int(npos),
        n_units=int(n_units),
        n_detections=len(scores),
        n_hits=int(walk.tps[-1]) if len(scores) else 0,
        n_fp=int(walk.fp[-1]) if len(scores) else 0,
        unit=unit,
        threshold=float(threshold),
        avg_rates=avg_r,
        settings=dict(settings or {}),
    )
