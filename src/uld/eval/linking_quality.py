"""How well a linker groups 2D detections into 3D lesions: tracklet purity, lesion completeness.

The P3D protocol (:mod:`uld.eval.p3d`) scores tracklets only on the slices where ground truth
was drawn (one key slice per lesion in most data sets), so it hardly sees how a linker groups
the other slices. These measures look at every slice of every lesion; they need ground truth
with a lesion identity on every slice a lesion crosses (the synthetic generator's
``annotations_full.csv``, column ``lesion``).

Definitions
-----------
- **Label of a detected box.** On its slice, the box belongs to the lesion whose ground-truth
  box there it overlaps best, provided that IoU (continuous convention, :func:`uld.boxes.iou`)
  is ``>= iou_threshold`` (0.5); otherwise it is background (label -1). Several boxes may
  belong to one lesion on one slice (say, from two tracklets).
- **Purity of a tracklet** = share of its boxes that carry its most frequent label, background
  counting as a label of its own. Tracklets without any lesion box (pure false positives) are
  left out: a linker cannot make them purer, and including them (purity 1) would reward a
  linker for splitting background into many tracklets. ``purity`` is the plain mean over the
  remaining tracklets (each tracklet weighs the same, as each is one candidate lesion in the
  P3D ranking); ``purity_boxes`` weighs each by its number of boxes (pooled: majority boxes over
  all boxes), which lets long tracklets count more.
- **Detected slices of a lesion** = slices where at least one box belongs to it. A lesion
  with none is not detected and is left out of completeness and fragments.
- **Completeness of a lesion** = share of its detected slices held (by a box belonging to
  it) by its single best tracklet, the tracklet that holds most of them. ``completeness`` is
  the mean over detected lesions.
- **Fragments of a lesion** = number of tracklets holding at least one box that belongs to it;
  ``fragments`` is the mean over detected lesions (1 is ideal, unless the detector itself
  puts two boxes on one slice of the lesion).
- **Mixed tracklets** = tracklets holding boxes of two or more lesions (the linking error that
  matters most: one candidate standing for two lesions). Purity also drops when a lesion's
  tracklet takes background boxes (a poorly placed box on the lesion's slices, or the
  detector's boxes just past the lesion's last slice); this count tells the two apart.

Means pool all tracklets (or lesions) of all volumes. A linker that puts every box in its own
tracklet has purity 1 and poor completeness; one that merges everything has the reverse.
Read the two together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uld.boxes import iou
from uld.data.annotations import Tracklet
from uld.data.dataset import DataError, DatasetFolder

__all__ = ["LesionTruth", "LinkingQuality", "label_boxes", "linking_quality", "read_lesion_truth"]


@dataclass(frozen=True, eq=False)
class LesionTruth:
    """Every ground-truth box of one volume with its lesion.

    z (ndarray[P], int64): slice of each box.
    boxes (ndarray[P, 4], float64): x1, y1, x2, y2 pixels.
    lesion (ndarray[P], int64): lesion identity of each box (>= 0; one value per lesion of the
        volume, at most one box per lesion and slice).
    """

    z: np.ndarray
    boxes: np.ndarray
    lesion: np.ndarray

    @staticmethod
    def empty() -> LesionTruth:
        return LesionTruth(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64))

    @property
    def n_lesions(self) -> int:
        return len(np.unique(self.lesion))


@dataclass(frozen=True)
class LinkingQuality:
    """Linking measures over a set of volumes (see the module docstring)."""

    purity: float
    """Mean purity over tracklets with at least one lesion box (NaN when there is none)."""
    purity_boxes: float
    """Box-weighted purity over the same tracklets."""
    completeness: float
    """Mean completeness over detected lesions (NaN when none is detected)."""
    fragments: float
    """Mean number of tracklets per detected lesion."""
    n_tracklets: int
    """All tracklets, background ones included."""
    n_lesion_tracklets: int
    """Tracklets with at least one lesion box (those in ``purity``)."""
    n_mixed_tracklets: int
    """Tracklets with boxes of two or more lesions."""
    n_lesions: int
    n_detected_lesions: int

    def to_json(self) -> dict[str, float | int]:
        return dict(vars(self))


def read_lesion_truth(
    root: str | Path, split: str, filename: str = "annotations_full.csv"
) -> dict[str, LesionTruth]:
    """``{volume: LesionTruth}`` for every volume of ``split`` of a dataset folder.

    ``filename`` must have a ``lesion`` column (an integer id per lesion within its volume), as
    the synthetic generator's ``annotations_full.csv`` has. Raises ``ValueError`` naming the
    file and row when the column is missing, not an integer, or a lesion has two boxes on one
    slice.
    """
    folder = DatasetFolder(root)
    names = folder.volumes(split)
    table = folder.annotations(filename)
    path = Path(root) / filename
    if "lesion" not in table.extra:
        raise DataError(f"{path}: no 'lesion' column; linking quality needs a lesion id per box")
    lesion = np.zeros(len(table), dtype=np.int64)
    for i, text in enumerate(table.extra["lesion"]):
        try:
            lesion[i] = int(text)
        except ValueError:
            raise DataError(f"{path}, row {i + 2}: lesion = {text!r} is not an integer") from None
        if lesion[i] < 0:
            raise DataError(f"{path}, row {i + 2}: lesion = {text!r} is negative")
    wanted = set(names)
    out: dict[str, LesionTruth] = {}
    rows_of: dict[str, list[int]] = {name: [] for name in names}
    for i, name in enumerate(table.volume):
        if name in wanted:
            rows_of[name].append(i)
    for name in names:
        rows = np.asarray(rows_of[name], dtype=np.int64)
        keys = np.stack([table.z[rows], lesion[rows]], axis=1) if len(rows) else np.zeros((0, 2))
        _, first, counts = np.unique(keys, axis=0, return_index=True, return_counts=True)
        if (counts > 1).any():
            dup = rows[first[np.argmax(counts > 1)]]
            raise DataError(
                f"{path}, row {dup + 2}: lesion {lesion[dup]} of {name!r} has two boxes on slice "
                f"{table.z[dup]}"
            )
        out[name] = LesionTruth(table.z[rows], table.boxes[rows], lesion[rows])
    return out


def label_boxes(
    truth: LesionTruth, z: np.ndarray, boxes_xyxy: np.ndarray, iou_threshold: float = 0.5
) -> np.ndarray:
    """``(N,)`` int64 lesion of each detected box (``z (ndarray[N])``, ``boxes (ndarray[N, 4])``).

    The lesion whose box on the same slice has the highest IoU with it, when that IoU is
    ``>= iou_threshold``; else -1 (background). Ties go to the ground-truth row listed first.
    """
    z = np.asarray(z, dtype=np.int64).reshape(-1)
    labels = np.full(len(z), -1, dtype=np.int64)
    if len(z) == 0 or len(truth.z) == 0:
        return labels
    overlap = iou(boxes_xyxy, truth.boxes)
    overlap[z[:, None] != truth.z[None, :]] = -1.0
    best = np.argmax(overlap, axis=1)
    hit = overlap[np.arange(len(z)), best] >= iou_threshold
    labels[hit] = truth.lesion[best[hit]]
    return labels


def _flatten(tracklets: Sequence[Tracklet]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``z (N,)``, ``boxes (N, 4)`` and tracklet index ``(N,)`` of all boxes."""
    zs = [int(z) for trk in tracklets for z, _ in trk]
    boxes = [np.asarray(b, dtype=np.float64)[:4] for trk in tracklets for _, b in trk]
    owner = [t for t, trk in enumerate(tracklets) for _ in trk]
    return (
        np.asarray(zs, dtype=np.int64),
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(owner, dtype=np.int64),
    )


def linking_quality(
    truth: Mapping[str, LesionTruth],
    detections: Mapping[str, Sequence[Tracklet]],
    iou_threshold: float = 0.5,
) -> LinkingQuality:
    """Purity, completeness and fragments of ``detections`` against ``truth``.

    truth: ``{volume: LesionTruth}`` (every volume of the set; see :func:`read_lesion_truth`).
    detections: ``{volume: [tracklet, ...]}``, ``tracklet = [(z, [x1, y1, x2, y2, score]), ...]``;
        a volume of ``truth`` missing here has no tracklets. A volume not in ``truth`` raises
        ``ValueError`` naming it.
    """
    unknown = [name for name in detections if name not in truth]
    if unknown:
        raise ValueError(f"detections name volume {unknown[0]!r}, which the ground truth lacks")
    purities: list[float] = []
    majority_boxes = 0
    lesion_boxes = 0
    completeness: list[float] = []
    fragments: list[int] = []
    n_tracklets = 0
    n_mixed = 0
    n_lesions = 0
    for name, gt in truth.items():
        tracklets = list(detections.get(name, []))
        n_tracklets += len(tracklets)
        n_lesions += gt.n_lesions
        z, boxes, owner = _flatten(tracklets)
        labels = label_boxes(gt, z, boxes, iou_threshold)
        for t in np.unique(owner[labels >= 0]):
            values, counts = np.unique(labels[owner == t], return_counts=True)
            n_mixed += int((values >= 0).sum() > 1)
            purities.append(counts.max() / counts.sum())
            majority_boxes += int(counts.max())
            lesion_boxes += int(counts.sum())
        for les in np.unique(labels[labels >= 0]):
            mine = labels == les
            detected = len(np.unique(z[mine]))
            pairs = np.unique(np.stack([owner[mine], z[mine]], axis=1), axis=0)
            _, slices_per_tracklet = np.unique(pairs[:, 0], return_counts=True)
            completeness.append(slices_per_tracklet.max() / detected)
            fragments.append(len(slices_per_tracklet))
    nan = float("nan")
    return LinkingQuality(
        purity=float(np.mean(purities)) if purities else nan,
        purity_boxes=majority_boxes / lesion_boxes if lesion_boxes else nan,
        completeness=float(np.mean(completeness)) if completeness else nan,
        fragments=float(np.mean(fragments)) if fragments else nan,
        n_tracklets=n_tracklets,
        n_lesion_tracklets=len(purities),
        n_mixed_tracklets=n_mixed,
        n_lesions=n_lesions,
        n_detected_lesions=len(completeness),
    )
