"""Time the three evaluation protocols on the real ground truth with generated tracklets.

Usage: ``python benchmarks/bench_eval_protocols.py [--tracklets N] [--seed S] [--repeat R]``.
For each protocol (P3D on ``Revised-Test1071.pkl``, key-slice on ``RECIST-Box-Test.pkl``,
3D IOBB on the manual 1K test split) it generates ``N`` tracklets of 1..9 boxes on
consecutive slices, about a third of them around a ground-truth box, and prints the best of
``R`` timings of reading the ground truth, reading the detections back from a pickle and
from our JSON, matching (from dicts, and from the arrays ``uld evaluate`` reads), the
metrics and the size / type breakdown, then the figures. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from uld.data.annotations import (
    Detections,
    flatten_detections,
    read_flat_detections,
    write_detections_json,
    write_detections_pickle,
)
from uld.data.deeplesion import parse_subvolume_name
from uld.eval.breakdown import breakdown, gt_long_axis
from uld.eval.froc import FP_RATES
from uld.eval.ground_truth import GroundTruth3D
from uld.eval.protocols import PROTOCOLS, match_protocol, protocol_result, read_protocol_gt

T = TypeVar("T")
DL = Path(__file__).resolve().parents[2] / "shared" / "deeplesion"
SOURCES = {
    "p3d": (DL / "lesion_harvester" / "Revised-Test1071.pkl", None),
    "keyslice": (DL / "lesion_harvester" / "RECIST-Box-Test.pkl", None),
    "iobb3d": (DL / "manual_1k" / "DeepLesion_manual_1K_test_release.pkl", "test"),
}


def lesions_of(gt: Any) -> dict[str, list[tuple[int, np.ndarray]]]:
    """``{volume: [(z offset, [x1, y1, x2, y2]), ...]}`` for 2D or 3D ground truth."""
    if isinstance(gt, GroundTruth3D):
        out = {}
        for name, rows in gt.boxes.items():
            first = parse_subvolume_name(name)[1] if gt.z_absolute else 0
            out[name] = [(round((r[2] + r[5]) / 2) - first, r[[0, 1, 3, 4]]) for r in rows]
        return out
    return {name: [(int(z), np.asarray(b)) for z, b in items] for name, items in gt.items()}


def random_detections(gt: Any, n_tracklets: int, seed: int) -> Detections:
    """Tracklets of 1..9 boxes on consecutive slices; about a third start near a lesion."""
    rng = np.random.default_rng(seed)
    lesions = lesions_of(gt)
    names = list(lesions)
    dets: Detections = {name: [] for name in names}
    for _ in range(n_tracklets):
        name = names[rng.integers(len(names))]
        items = lesions[name]
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
    out: Any = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench(protocol: str, n_tracklets: int, seed: int, repeat: int) -> None:
    """Time one protocol and print its figures."""
    source, split = SOURCES[protocol]
    t_read, gt = best_of(repeat, lambda: read_protocol_gt(protocol, source, split))
    dets = random_detections(gt, n_tracklets, seed)
    n_boxes = sum(len(t) for ts in dets.values() for t in ts)
    t_match, matches = best_of(repeat, lambda: match_protocol(protocol, gt, dets))
    flat = flatten_detections(dets)
    t_flat, _ = best_of(repeat, lambda: match_protocol(protocol, gt, flat))
    with tempfile.TemporaryDirectory() as tmp:
        pkl = write_detections_pickle(dets, Path(tmp) / "d.pkl")
        js = write_detections_json(dets, Path(tmp) / "d.json")
        t_pkl, _ = best_of(repeat, lambda: read_flat_detections(pkl))
        t_json, _ = best_of(repeat, lambda: read_flat_detections(js))
    t_metrics, result = best_of(repeat, lambda: protocol_result(protocol, matches))
    sizes = gt_long_axis(gt)
    labels = np.random.default_rng(seed).integers(1, 9, len(sizes))
    t_break, _ = best_of(repeat, lambda: breakdown(
        matches, FP_RATES[:7], sizes=sizes, size_unit="px", labels=labels))
    print(f"\n== {protocol}: {source.name}{f' [{split}]' if split else ''}, "
          f"{n_tracklets} tracklets ({n_boxes} boxes)")
    print(f"read ground truth  {t_read:8.3f} s")
    print(f"read detections    {t_pkl:8.3f} s pickle, {t_json:.3f} s JSON (validated arrays)")
    print(f"match              {t_match:8.3f} s from dicts, {t_flat:.3f} s from arrays")
    print(f"metrics            {t_metrics:8.3f} s")
    print(f"breakdown          {t_break:8.3f} s  (size bands + 8 lesion types, 7 rates)")
    print(result.format())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tracklets", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--protocol", choices=PROTOCOLS, action="append",
                        help="protocol(s) to time (default: all)")
    args = parser.parse_args()
    print(f"{args.tracklets} generated tracklets per protocol, best of {args.repeat}")
    for protocol in args.protocol or PROTOCOLS:
        bench(protocol, args.tracklets, args.seed, args.repeat)


if __name__ == "__main__":
    main()
