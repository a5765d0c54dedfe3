"""Probe (issue 16): drop a lesion's end box when it disagrees with the box next to it.

Session 11 found the boxes that spoil purity on a lesion's two outermost slices, placed loosely
(IoU 0.13-0.44 with the truth there). Smoothing the end boxes (``infer.smooth_ends``) moves
them towards their neighbours; this probe instead removes an end box whose IoU with the
adjacent box of the same lesion is below ``t`` (repeatedly, up to ``n`` boxes an end; a lesion
keeps at least its best box), then optionally smooths the ends, on top of the ``infer``
defaults. Removing boxes cannot lower completeness or add a fragment; it raises purity only if
the removed boxes are looser than the kept ones. Prints purity and P3D per variant.

    OMP_NUM_THREADS=1 python benchmarks/probes/issue16/loose_ends.py RUN/model.pt RUNS/data val CACHE
"""

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench_linking import evaluate_linked, probe_cells, split_inputs
from uld.boxes import iou
from uld.config import Config
from uld.infer.predict import find_lesions
from uld.infer.smooth import smooth_tracklets


def drop_loose_ends(trk: list, t: float, n: int) -> list:
    """The tracklet (slice, box) pairs without up to ``n`` end boxes a side whose IoU with the
    next box inwards is below ``t``; never the best-scoring box."""
    trk = sorted(trk, key=lambda item: item[0])
    best = int(np.argmax([b[4] for _, b in trk]))
    first, last = 0, len(trk) - 1
    for _ in range(n):
        if first < best and _iou(trk[first][1], trk[first + 1][1]) < t:
            first += 1
        if last > best and _iou(trk[last][1], trk[last - 1][1]) < t:
            last -= 1
    return trk[first:last + 1]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(iou(a[None, :4], b[None, :4])[0, 0])


def main() -> None:
    run, data, split, cache = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    dets, truth, gt_key, gt_full = split_inputs(run, data, split, cache)
    infer = Config().infer
    print("| smooth ends | drop below IoU | per end | purity | completeness | avg | ap | ap_full |\n"
          "|---|---|---|---|---|---|---|---|")
    raw = {name: find_lesions(slices, replace(infer, smooth_slices=0))[0]
           for name, slices in dets.items()}
    for smooth in (0, 1):
        for t, n in [(0.0, 0), (0.3, 1), (0.4, 1), (0.5, 1), (0.6, 1), (0.5, 2)]:
            linked = {name: smooth_tracklets([drop_loose_ends(trk, t, n) for trk in trks],
                                             smooth, smooth)
                      for name, trks in raw.items()}
            m = evaluate_linked(linked, truth, gt_key, gt_full)
            print(f"| {smooth} | {t} | {n} | {probe_cells(m)} |", flush=True)


if __name__ == "__main__":
    main()
