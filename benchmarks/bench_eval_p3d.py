"""Time the P3D evaluation on the real test ground truth with ~100,000 random tracklets.

Usage: ``python benchmarks/bench_eval_p3d.py [--gt PATH] [--tracklets N] [--seed S]``.
Prints the time of ``read_gt``, ``match_p3d``, ``p3d_metrics`` and ``evaluate_p3d`` (best of
``--repeat`` runs) and the resulting metrics. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from uld.eval.detections import Detections, GroundTruth, read_gt
from uld.eval.p3d import evaluate_p3d, match_p3d, p3d_metrics

T = TypeVar("T")
DEFAULT_GT = (
    Path(__file__).resolve().parents[2] / "shared" / "deeplesion" / "lesion_harvester"
    / "Revised-Test1071.pkl"
)


def random_detections(gt: GroundTruth, n_tracklets: int, seed: int) -> Detections:
    """Tracklets of 1..9 boxes on consecutive slices; about a third start near a GT box."""
    rng = np.random.default_rng(seed)
    names = list(gt)
    dets: Detections = {name: [] for name in names}
    for _ in range(n_tracklets):
        name = names[rng.integers(len(names))]
        items = gt[name]
        length = int(rng.integers(1, 10))
        if items and rng.random() < 0.35:
            z0, box = items[rng.integers(len(items))]
            z0 = max(0, int(z0) - int(rng.integers(0, length)))
            centre = (box[:2] + box[2:]) / 2 + rng.normal(0, 3, 2)
            size = (box[2:] - box[:2]) * rng.uniform(0.7, 1.3, 2)
        else:
            z0 = int(rng.integers(0, 60))
            centre = rng.uniform(50, 460, 2)
            size = rng.uniform(8, 60, 2)
        tracklet = []
        for k in range(length):
            c = centre + rng.normal(0, 1, 2)
            score = round(float(rng.random()), 3)  # rounding makes ties
            tracklet.append((z0 + k, np.array([*(c - size / 2), *(c + size / 2), score])))
        dets[name].append(tracklet)
    return dets


def best_of(repeat: int, fn: Callable[[], T]) -> tuple[float, T]:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, default=DEFAULT_GT)
    parser.add_argument("--tracklets", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    t_read, gt = best_of(args.repeat, lambda: read_gt(args.gt))
    dets = random_detections(gt, args.tracklets, args.seed)
    n_boxes = sum(len(t) for ts in dets.values() for t in ts)
    t_match, matches = best_of(args.repeat, lambda: match_p3d(gt, dets))
    t_metrics, _ = best_of(args.repeat, lambda: p3d_metrics(matches))
    t_total, result = best_of(args.repeat, lambda: evaluate_p3d(gt, dets))
    print(f"ground truth: {args.gt.name}, {len(gt)} volumes, {sum(map(len, gt.values()))} boxes")
    print(f"detections:   {result.n_tracklets} tracklets, {n_boxes} boxes")
    print(f"read_gt       {t_read:8.3f} s")
    print(f"match_p3d     {t_match:8.3f} s")
    print(f"p3d_metrics   {t_metrics:8.3f} s")
    print(f"evaluate_p3d  {t_total:8.3f} s  (best of {args.repeat})")
    sens = ", ".join(f"{k:g}: {v:.4f}" for k, v in result.sensitivity.items())
    print(f"AP {result.ap:.4f}  avg {result.avg:.4f}  sensitivity {{{sens}}}")


if __name__ == "__main__":
    main()
