"""Probe (issue 16): smoothing only the boxes that need it, a lesion's outer or weaker ones.

Session 11 found the boxes that spoil purity on the lesion's own slices at its two ends (35 of
40 on the last or second-last slice). Smoothing every box along z (``infer.smooth_slices``)
moves them, and moves the key-slice boxes as well, which costs P3D AP. This probe smooths only
the ``ends`` outermost boxes at each end of a lesion, or only boxes scoring below ``gate`` x the
lesion's best score, with reach ``k`` (``uld.infer.smooth.smooth_boxes``; the rest stay as
detected), on top of the ``infer`` defaults, and prints purity and P3D per variant.

    OMP_NUM_THREADS=1 python benchmarks/probes/issue16/end_boxes.py RUN/model.pt RUNS/data val CACHE \
        [TRIM ...] [--protect] [--only=LABEL ...]
"""

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench_linking import evaluate_linked, probe_cells, split_inputs
from uld.config import Config
from uld.infer.predict import find_lesions
from uld.infer.smooth import average_boxes, smooth_boxes


def own_weighted(z: np.ndarray, boxes: np.ndarray, k: int, own: float) -> np.ndarray:
    """smooth_boxes with each box's weight on itself scaled by ``own`` (1 = smooth_boxes)."""
    distance = np.abs(z[:, None] - z[None, :]).astype(float)
    score = np.maximum(boxes[:, 4], 1e-6)
    weights = np.where(distance <= k, score[None, :] / (1.0 + distance), 0.0)
    weights[np.diag_indices(len(z))] *= own
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    return average_boxes(boxes, weights)


def partial_smooth(trk: list, k: int, ends: int = 0, gate: float = 0.0, own: float = 1.0,
                   protect: bool = False) -> list:
    """The tracklet with its chosen boxes replaced by their smoothed version (``protect``: its
    best-scoring box never)."""
    if len(trk) < 2:
        return list(trk)
    z = np.array([zz for zz, _ in trk])
    boxes = np.stack([b for _, b in trk])
    smooth = smooth_boxes(z, boxes, k) if own == 1.0 else own_weighted(z, boxes, k, own)
    order = np.argsort(z)
    chosen = np.zeros(len(trk), bool)
    if ends:
        chosen[order[:ends]] = True
        chosen[order[-ends:]] = True
    if gate:
        chosen |= boxes[:, 4] < gate * boxes[:, 4].max()
    if protect:
        chosen[np.argmax(boxes[:, 4])] = False
    out = np.where(chosen[:, None], smooth, boxes)
    return list(zip(z.tolist(), out))


def main() -> None:
    run, data, split, cache = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    dets, truth, gt_key, gt_full = split_inputs(run, data, split, cache)
    infer = Config().infer
    protect = "--protect" in sys.argv
    only = [a.split("=", 1)[1] for a in sys.argv[5:] if a.startswith("--only=")]
    trims = [float(t) for t in sys.argv[5:] if not t.startswith("--")] or [0.0]
    variants = [("defaults", 0, 0, 0.0, 1.0)]
    variants += [(f"smooth all k={k}", k, 0, 1.01, 1.0) for k in (1, 2)]
    variants += [(f"ends={e} k={k} own={o}", k, e, 0.0, o) for e in (1, 2) for k in (1, 2, 3)
                 for o in (1.0, 0.5, 0.25)]
    variants += [(f"gate={g} k={k}", k, 0, g, 1.0) for g in (0.8, 0.9) for k in (1, 2)]
    print("| variant | trim | purity | completeness | avg | ap | ap_full |\n|---|---|---|---|---|---|---|")
    for trim in trims:
        base = {name: find_lesions(slices, replace(infer, trim_thresh=trim))[0]
                for name, slices in dets.items()}
        for label, k, ends, gate, own in variants:
            if only and label not in only:
                continue
            linked = base if k == 0 else {
                name: [partial_smooth(t, k, ends, gate, own, protect) for t in trks]
                for name, trks in base.items()}
            m = evaluate_linked(linked, truth, gt_key, gt_full)
            print(f"| {label} | {trim} | {probe_cells(m)} |", flush=True)


if __name__ == "__main__":
    main()
