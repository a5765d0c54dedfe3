"""Link per-slice 2D detections into 3D lesions ("tracklets") with a Kalman filter along z.

The method (docs/method.md) links the 2D boxes of a volume with a Kalman filter, as Lesion
Harvester did, but no public text gives that filter. This is our design; ``docs/linking.md`` explains it
for users and reports what it measured against :func:`uld.infer.link.link_by_iou`.

State and motion model
----------------------
A track's state is ``x = [cx, cy, w, h, vcx, vcy, vw, vh]``: the box centre and size in pixels
and their change per slice. Slices play the role of time: from a track's last update on slice
``z0`` to slice ``z`` (``dt = z - z0 >= 1``) the state moves at constant velocity,
``x' = F(dt) x`` with ``F(dt) = [[I4, dt I4], [0, I4]]``. A box changes along z because the
lesion is a 3D blob (its cross-section grows, then shrinks) and because lesions and vessels run
obliquely (the centre drifts); the velocities carry that trend over to the next slice.

Noise, scaled with the box
--------------------------
Every standard deviation is a fraction of the track's size ``s = sqrt(w h)`` (``w`` and ``h``
floored at ``min_size_px``), so a 40-pixel lesion may move 4 pixels where a 6-pixel one may move
0.6, and the gate below means the same for every size:

- process noise, per slice: ``pos_process_std * s`` on cx, cy; ``size_process_std * s`` on w, h;
  ``vel_process_std * s`` on the four velocities. Over ``dt`` slices the covariance grows as
  ``dt`` repeated one-slice steps (closed form in :func:`predict`), so a track that missed a
  slice is searched for in a wider window;
- measurement noise: ``pos_measure_std * s`` on the measured cx, cy and ``size_measure_std * s``
  on w, h (the detector's box jitter);
- a new track starts at its box with the measurement covariance on the first four entries and
  zero velocity with standard deviation ``init_vel_std * s``.

The defaults (``KalmanLinkerParams``) were chosen on the synthetic validation split
(``benchmarks/bench_linking.py --split val --tune``; ``docs/linking.md`` has the figures). The
one that mattered is ``init_vel_std`` = 0.05: a new track expects its box to stay put, and
learns a trend from the boxes it is given. A wide prior (0.3) let new tracks jump to the
detector's shifted duplicates around a lesion and cost purity (0.71 vs 0.76) and completeness
(0.92 vs 0.96). It matches the truth: in the synthetic volumes a lesion's centre moves by a
median 0.04 ``s`` per slice (99th percentile 0.18 ``s``); its size changes more (median 0.2
``s``, 90th percentile 0.55 ``s``, largest near the lesion's ends), which ``size_process_std``
and the gate absorb.

Scoring a box against a track: the Mahalanobis gate
---------------------------------------------------
For a new box ``m = [cx, cy, w, h]`` and a track predicted to the box's slice, the innovation
is ``y = m - H x'`` with covariance ``S = H P' H^T + R`` (``H`` picks the first four entries) and
the cost is the squared Mahalanobis distance ``d2 = y^T S^-1 y``. A pair is allowed only when
``d2 <= gate``; the default 13.28 is the 99 % quantile of chi-square with 4 degrees of freedom,
the distribution of ``d2`` when the box really is the track's next measurement and the noise
model holds. Gates from 9.5 to 16 gave the same purity and completeness on the validation
split; at 20 completeness fell (0.93 vs 0.96).

Why Mahalanobis and not IoU with the prediction: the IoU of two boxes says nothing about how
sure the prediction is. A track with one box knows no trend, one with five boxes knows it
well, and through a missed slice the prediction lies twice as far from its last evidence;
``S`` grows and shrinks accordingly, and the gate follows. A box drifting 0.3 of its size per
slice keeps an IoU of 0.54 with its neighbour, but 0.25 across a missed slice, where an IoU
linker at 0.3 breaks; the filter has learned the drift and predicts across the gap. Because
every standard deviation scales with ``s``, ``d2`` is scale-free, like IoU; size enters through
``w`` and ``h``, so a large box is not linked to a small one at the same centre. An additional
IoU floor on the predicted box (a pair also needs IoU >= 0.1, 0.2 or 0.3) was tried on the
validation split: it changed nothing at 0.1 and lowered purity, completeness and AP a little
at 0.2 and 0.3, so there is none (one parameter fewer).

Per slice: assignment, birth, bridging, death
---------------------------------------------
Slices are processed in increasing z (the input order does not matter). On each slice:

1. every open track is predicted to the slice; a track whose last box lies more than
   ``max_gap + 1`` slices behind (it missed more than ``max_gap`` slices) is closed first;
2. tracks and boxes are paired one-to-one by :func:`scipy.optimize.linear_sum_assignment` on
   the cost ``min(d2, gate)``, and the pairs above the gate are then refused. Capping the cost
   at the gate makes "pair outside the gate" cost the same as "leave both unpaired", so the
   assignment minimises the total distance of the pairs it keeps. (Giving forbidden pairs a
   prohibitive cost instead makes it maximise the number of pairs first: with two tracks and
   two boxes around one lesion it then pairs each track with a mediocre box rather than one
   track with the right box. On the training split that version lost 0.02 completeness to
   ``link_by_iou``; the capped cost closed the gap.)
3. a paired track is updated with its box (standard Kalman update) and records the box;
4. every box left unpaired starts a new track (birth);
5. an unpaired track keeps its last estimate: it is "bridging". The skipped slice gets no box
   in the tracklet (we do not invent a box the detector did not see); if the track is paired
   again within ``max_gap`` missed slices, the tracklet simply has a hole there. A slice
   absent from the input counts as a slice without boxes.

Output
------
A tracklet is Lesion Harvester's layout ``[(z, ndarray([x1, y1, x2, y2, score])), ...]``, one
box per slice, in increasing z, tracklets ordered by their first slice (then by their first
box's index on that slice). Its boxes are the **measured** boxes, not the filtered ones: the
P3D protocol compares the tracklet's box on each ground-truth slice with the box drawn there,
and the detector's box on that slice is the best evidence of what lies on it. A filtered box
mixes in the other slices and lags behind real size changes: at the key slice (the largest
cross-section, where a lesion stops growing) a constant-velocity filter overshoots the size.
Keeping the measured boxes also makes linking a pure grouping of the detections (no box or
score is altered), so two linkers differ only in how they group. A tracklet's score is the
maximum of its box scores (:func:`uld.infer.link.tracklet_score`), the protocol's convention.

Cost: a few small batched array operations per slice and one ``linear_sum_assignment`` of at
most (open tracks x boxes): about 0.45 ms per slice, 0.13 s for 300 slices of 30 random boxes
(``link_by_iou``: 0.08 s) on the project's CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from scipy.optimize import linear_sum_assignment

from uld.config import KalmanLinkerParams
from uld.data.annotations import Tracklet
from uld.infer.link import SliceDetections

__all__ = [
    "boxes_to_state",
    "initial_state",
    "innovation_cov",
    "link_kalman",
    "mahalanobis2",
    "predict",
    "update",
]

_N = 4  # measured entries: cx, cy, w, h


# --------------------------------------------------------------------------------------------
# the filter (pure functions on batches of tracks)


def _scale(state: np.ndarray, min_size_px: float) -> np.ndarray:
    """``(T,)`` size scale ``sqrt(w h)`` of ``(T, >=4)`` states, each side floored."""
    w = np.maximum(state[:, 2], min_size_px)
    h = np.maximum(state[:, 3], min_size_px)
    return np.sqrt(w * h)


def boxes_to_state(boxes_xyxy: np.ndarray) -> np.ndarray:
    """``(N, 4)`` boxes x1, y1, x2, y2 -> ``(N, 4)`` measurements cx, cy, w, h (pixels)."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([(b[:, :2] + b[:, 2:]) / 2.0, b[:, 2:] - b[:, :2]], axis=1)


def _measure_cov(scale: np.ndarray, params: KalmanLinkerParams) -> np.ndarray:
    """``(T, 4, 4)`` measurement covariance ``R`` for tracks of size ``scale`` ``(T,)``."""
    var = np.array([params.pos_measure_std] * 2 + [params.size_measure_std] * 2) ** 2
    return np.eye(_N) * (scale[:, None] ** 2 * var)[:, :, None]


def initial_state(boxes_xyxy: np.ndarray, params: KalmanLinkerParams) -> tuple[np.ndarray, np.ndarray]:
    """New tracks at ``(N, 4)`` boxes: states ``(N, 8)`` (zero velocity), covariances ``(N, 8, 8)``."""
    m = boxes_to_state(boxes_xyxy)
    state = np.concatenate([m, np.zeros_like(m)], axis=1)
    scale = _scale(state, params.min_size_px)
    cov = np.zeros((len(m), 2 * _N, 2 * _N))
    cov[:, :_N, :_N] = _measure_cov(scale, params)
    cov[:, _N:, _N:] = np.eye(_N) * ((params.init_vel_std * scale) ** 2)[:, None, None]
    return state, cov


def predict(
    state: np.ndarray, cov: np.ndarray, dt: np.ndarray, params: KalmanLinkerParams
) -> tuple[np.ndarray, np.ndarray]:
    """Move ``T`` tracks ``dt`` slices ahead at constant velocity.

    state (ndarray[T, 8]): cx, cy, w, h, vcx, vcy, vw, vh. cov (ndarray[T, 8, 8]).
    dt (ndarray[T], int >= 1): slices to move each track.
    Returns the predicted ``(T, 8)`` states and ``(T, 8, 8)`` covariances. The covariance is
    exactly ``dt`` one-slice steps ``P <- F P F^T + Q`` with ``Q`` taken at the track's current
    size: per coordinate, ``sum_{j<dt} F^j Q F^jT = [[dt q + S2 qv, S1 qv], [S1 qv, dt qv]]`` with
    ``S1 = sum j``, ``S2 = sum j^2`` (``q``: the entry's own noise, ``qv``: its velocity's).
    """
    dt = np.asarray(dt, dtype=np.float64).reshape(-1)
    new_state = state.copy()
    new_state[:, :_N] += dt[:, None] * state[:, _N:]
    # F P F^T by blocks: [[P11 + dt (P12 + P21) + dt^2 P22, P12 + dt P22], [P21 + dt P22, P22]]
    d = dt[:, None, None]
    p11, p12, p21, p22 = cov[:, :_N, :_N], cov[:, :_N, _N:], cov[:, _N:, :_N], cov[:, _N:, _N:]
    new_cov = np.empty_like(cov)
    new_cov[:, :_N, :_N] = p11 + d * (p12 + p21) + d**2 * p22
    new_cov[:, :_N, _N:] = p12 + d * p22
    new_cov[:, _N:, :_N] = p21 + d * p22
    new_cov[:, _N:, _N:] = p22
    # + the process noise of dt steps (diagonal blocks, per coordinate)
    scale2 = _scale(state, params.min_size_px) ** 2
    q = scale2[:, None] * np.array([params.pos_process_std] * 2 + [params.size_process_std] * 2) ** 2
    qv = scale2 * params.vel_process_std**2  # (T,)
    s1 = dt * (dt - 1) / 2.0
    s2 = (dt - 1) * dt * (2 * dt - 1) / 6.0
    diag = np.arange(_N)
    new_cov[:, diag, diag] += dt[:, None] * q + (s2 * qv)[:, None]
    new_cov[:, diag, diag + _N] += (s1 * qv)[:, None]
    new_cov[:, diag + _N, diag] += (s1 * qv)[:, None]
    new_cov[:, diag + _N, diag + _N] += (dt * qv)[:, None]
    return new_state, new_cov


def innovation_cov(
    state: np.ndarray, cov: np.ndarray, params: KalmanLinkerParams
) -> np.ndarray:
    """``(T, 4, 4)`` covariance ``S = H P H^T + R`` of the measurement predicted by each track."""
    return cov[:, :_N, :_N] + _measure_cov(_scale(state, params.min_size_px), params)


def mahalanobis2(
    state: np.ndarray, cov: np.ndarray, boxes_xyxy: np.ndarray, params: KalmanLinkerParams
) -> np.ndarray:
    """``(T, N)`` squared Mahalanobis distance of ``(N, 4)`` boxes to ``T`` predicted tracks."""
    m = boxes_to_state(boxes_xyxy)
    y = m[None, :, :] - state[:, None, :_N]  # (T, N, 4)
    s_inv = np.linalg.inv(innovation_cov(state, cov, params))
    return ((y @ s_inv) * y).sum(axis=2)


def update(
    state: np.ndarray, cov: np.ndarray, boxes_xyxy: np.ndarray, params: KalmanLinkerParams
) -> tuple[np.ndarray, np.ndarray]:
    """Kalman update of ``T`` predicted tracks with one box each (``(T, 4)`` boxes)."""
    y = boxes_to_state(boxes_xyxy) - state[:, :_N]
    s_inv = np.linalg.inv(innovation_cov(state, cov, params))
    gain = cov[:, :, :_N] @ s_inv  # (T, 8, 4) = P H^T S^-1
    new_state = state + (gain @ y[:, :, None])[:, :, 0]
    new_cov = cov - gain @ cov[:, :_N, :]
    return new_state, (new_cov + new_cov.transpose(0, 2, 1)) / 2.0


# --------------------------------------------------------------------------------------------
# the linker


@dataclass
class _Tracks:
    """Open tracks: posterior at each track's last box, birth number, boxes so far."""

    state: np.ndarray = field(default_factory=lambda: np.zeros((0, 2 * _N)))
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 2 * _N, 2 * _N)))
    last_z: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    birth: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    items: list[Tracklet] = field(default_factory=list)
    n_born: int = 0

    def close(self, mask: np.ndarray) -> list[tuple[int, Tracklet]]:
        """Close the tracks where ``mask`` holds; return their ``(birth, tracklet)``."""
        gone = [(int(b), it) for b, it, m in zip(self.birth, self.items, mask) if m]
        keep = ~mask
        self.state, self.cov = self.state[keep], self.cov[keep]
        self.last_z, self.birth = self.last_z[keep], self.birth[keep]
        self.items = [it for it, k in zip(self.items, keep) if k]
        return gone

    def start(self, rows: np.ndarray, z: int, params: KalmanLinkerParams) -> None:
        """Start one track per box (``(N, 5)`` rows x1, y1, x2, y2, score) on slice ``z``."""
        boxes = rows[:, :4]
        state, cov = initial_state(boxes, params)
        self.state = np.concatenate([self.state, state])
        self.cov = np.concatenate([self.cov, cov])
        self.last_z = np.concatenate([self.last_z, np.full(len(boxes), z, dtype=np.int64)])
        self.birth = np.concatenate([self.birth, self.n_born + np.arange(len(boxes))])
        self.n_born += len(boxes)
        self.items.extend([(z, row.copy())] for row in rows)


def _checked(det: SliceDetections) -> np.ndarray:
    """The slice's ``(N, 5)`` rows x1, y1, x2, y2, score as float64; raises naming the slice."""
    boxes = np.asarray(det.boxes, dtype=np.float64)
    scores = np.asarray(det.scores, dtype=np.float64).reshape(-1)
    if boxes.size == 0 and scores.size == 0:
        return np.zeros((0, 5))
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(scores):
        raise ValueError(
            f"slice z={det.z}: boxes of shape {boxes.shape} and scores of shape {scores.shape}; "
            "expected (N, 4) and (N,)"
        )
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError(f"slice z={det.z}: boxes or scores are not finite")
    return np.column_stack([boxes, scores])


def link_kalman(
    slices: Sequence[SliceDetections], params: KalmanLinkerParams = KalmanLinkerParams()
) -> list[Tracklet]:
    """Tracklets from per-slice detections by Kalman-filter tracking along z.

    slices: one :class:`SliceDetections` per slice (``boxes (ndarray[N, 4])`` x1, y1, x2, y2
        pixels, ``scores (ndarray[N])``), in any order; N may be 0; each ``z`` at most once.
    Returns tracklets ``[(z, ndarray([x1, y1, x2, y2, score])), ...]`` (measured boxes, one per
    slice, increasing z), ordered by first slice, then by box index there. The design is in
    the module docstring.
    """
    ordered = sorted(slices, key=lambda d: d.z)
    for prev, cur in pairwise(ordered):
        if prev.z == cur.z:
            raise ValueError(f"slice z={cur.z} appears twice in the input")
    tracks = _Tracks()
    done: list[tuple[int, Tracklet]] = []
    for det in ordered:
        rows = _checked(det)
        boxes = rows[:, :4]
        done.extend(tracks.close(det.z - tracks.last_z > params.max_gap + 1))
        taken = np.zeros(len(boxes), dtype=bool)
        if tracks.items and len(boxes):
            pred_state, pred_cov = predict(tracks.state, tracks.cov, det.z - tracks.last_z, params)
            d2 = mahalanobis2(pred_state, pred_cov, boxes, params)
            trk, box = linear_sum_assignment(np.minimum(d2, params.gate))
            ok = d2[trk, box] <= params.gate
            trk, box = trk[ok], box[ok]
            if len(trk):
                tracks.state[trk], tracks.cov[trk] = update(
                    pred_state[trk], pred_cov[trk], boxes[box], params
                )
                tracks.last_z[trk] = det.z
                for t, b in zip(trk, box):
                    tracks.items[t].append((det.z, rows[b].copy()))
                taken[box] = True
        if not taken.all():
            tracks.start(rows[~taken], det.z, params)
    done.extend(tracks.close(np.ones(len(tracks.items), dtype=bool)))
    done.sort(key=lambda entry: entry[0])
    return [tracklet for _, tracklet in done]
