"""Link per-slice 2D detections into 3D lesions ("tracklets") by overlap.

The simple linker: slices are visited in increasing z. A track is open while its last box lies
at most ``max_gap`` slices behind the current one. On each slice, the open tracks and the new
boxes are paired by ``scipy.optimize.linear_sum_assignment`` on ``1 - IoU`` (IoU between the
track's last box and the new box), pairs below ``iou_threshold`` are refused; every box left
over starts a new track. A track takes at most one box per slice. A tracklet's score is the
maximum of its boxes' scores (the P3D protocol's convention).

A tracklet is Lesion Harvester's layout: ``[(z, ndarray([x1, y1, x2, y2, score])), ...]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from uld.boxes import iou
from uld.data.annotations import Tracklet


@dataclass(frozen=True)
class SliceDetections:
    """Detections on one slice: boxes (ndarray[N, 4]) x1, y1, x2, y2; scores (ndarray[N])."""

    z: int
    boxes: np.ndarray
    scores: np.ndarray


@dataclass
class _Track:
    items: list[tuple[int, np.ndarray]] = field(default_factory=list)

    @property
    def last_z(self) -> int:
        return self.items[-1][0]

    @property
    def last_box(self) -> np.ndarray:
        return self.items[-1][1][:4]


def link_by_iou(
    slices: Sequence[SliceDetections], iou_threshold: float = 0.3, max_gap: int = 1
) -> list[Tracklet]:
    """Tracklets from per-slice detections (any order of ``slices``; sorted by z here)."""
    finished: list[_Track] = []
    open_tracks: list[_Track] = []
    for det in sorted(slices, key=lambda d: d.z):
        still_open = [t for t in open_tracks if det.z - t.last_z <= max_gap + 1]
        finished.extend(t for t in open_tracks if det.z - t.last_z > max_gap + 1)
        open_tracks = still_open
        boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(det.scores, dtype=np.float64).reshape(-1)
        taken = np.zeros(len(boxes), dtype=bool)
        if open_tracks and len(boxes):
            overlap = iou(np.stack([t.last_box for t in open_tracks]), boxes)
            rows, cols = linear_sum_assignment(1.0 - overlap)
            for r, c in zip(rows, cols):
                if overlap[r, c] >= iou_threshold:
                    open_tracks[r].items.append((det.z, np.append(boxes[c], scores[c])))
                    taken[c] = True
        for c in np.flatnonzero(~taken):
            open_tracks.append(_Track([(det.z, np.append(boxes[c], scores[c]))]))
    finished.extend(open_tracks)
    return [t.items for t in finished]


def tracklet_score(tracklet: Tracklet) -> float:
    """The maximum score over the tracklet's boxes."""
    return float(max(item[1][4] for item in tracklet))
