"""Probe (issue 11): how many lesions would a teacher mine on volumes it never trained on?

Mining's recall on the training slices is bounded by the teacher's scores there, and the student
learns the unlabeled lesions of those slices as background. The same teacher's boxes on the
test volumes, which it never saw, say what it scores where nothing was memorised: on every key
slice of the (fully annotated) test split, the share of the lesions crossing that slice
(``annotations_full.csv``) that a box scoring >= ``tau`` overlaps at IoU >= 0.5 (recall), and the
share of those boxes that overlap a lesion (precision). Boxes are those of the run's
``test_detections.json`` (the best validated teacher, linked as ``uld predict`` links them).
The sparsity sweep's labels keep each training volume's largest lesions first, so the
unlabeled lesions are the smaller ones: recall is also given for the lesions that are not
their volume's largest (``lesions.csv``), on every key slice and on the key slice of the
volume's largest lesion alone. The last is what mining meets in training: there the key slices
are those of the labeled (largest) lesions, which the smaller lesions cross off their centre.

    python benchmarks/probes/issue11/heldout_recall.py RUNS/data RUN [RUN ...] [--tau 0.9]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from uld.boxes import iou


def slice_boxes(path: Path, names: set[str], key_only: bool,
                lesions: set[tuple[str, str]] | None = None) -> dict[tuple[str, int], np.ndarray]:
    """``{(volume, z): boxes [K, 4]}`` of an annotation file, for ``names`` (key rows only;
    only the ``(volume, lesion)`` in ``lesions`` where given)."""
    out: dict[tuple[str, int], list] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["volume"] in names and (not key_only or row["key"] == "1") and (
                    lesions is None or (row["volume"], row["lesion"]) in lesions):
                out.setdefault((row["volume"], int(row["z"])), []).append(
                    [float(row[k]) for k in ("x1", "y1", "x2", "y2")])
    return {k: np.array(v) for k, v in out.items()}


def largest_lesions(path: Path) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """``(volume, lesion)`` of each volume's largest lesion in ``lesions.csv``, and of the others."""
    largest: dict[str, tuple[float, str]] = {}
    every = []
    with path.open() as f:
        for row in csv.DictReader(f):
            key = (row["volume"], row["lesion"])
            every.append(key)
            size = float(row["diameter_mm"])
            if size > largest.get(row["volume"], (-1.0, ""))[0]:
                largest[row["volume"]] = (size, row["lesion"])
    biggest = {(volume, lesion) for volume, (_, lesion) in largest.items()}
    return biggest, set(every) - biggest


def recall_precision(detections: dict, truth: dict, key_slices, tau: float) -> tuple[float, float, int]:
    """Recall of the lesions in ``truth`` crossing the key slices, the precision of the boxes
    >= tau there against ``truth``, and the number of lesions."""
    hit = total = true = boxes = 0
    for volume, z in key_slices:
        lesions = truth.get((volume, z), np.zeros((0, 4)))
        mined = np.array([b[1:5] for t in detections.get(volume, []) for b in t["boxes"]
                          if b[0] == z and b[5] >= tau]).reshape(-1, 4)
        overlap = iou(mined, lesions) >= 0.5 if len(mined) and len(lesions) else \
            np.zeros((len(mined), len(lesions)), bool)
        hit += int(overlap.any(axis=0).sum())
        total += len(lesions)
        true += int(overlap.any(axis=1).sum())
        boxes += len(mined)
    return hit / max(total, 1), true / max(boxes, 1), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--tau", type=float, default=0.9)
    args = parser.parse_args()
    with (args.data / "splits.csv").open() as f:
        test = {r["volume"] for r in csv.DictReader(f) if r["split"] == "test"}
    biggest, others = largest_lesions(args.data / "lesions.csv")
    key_slices = sorted(slice_boxes(args.data / "annotations.csv", test, key_only=True))
    largest_keys = sorted(slice_boxes(args.data / "annotations.csv", test, key_only=True,
                                      lesions=biggest))
    truth = slice_boxes(args.data / "annotations_full.csv", test, key_only=False)
    smaller = slice_boxes(args.data / "annotations_full.csv", test, key_only=False, lesions=others)
    print(f"| run | recall at tau {args.tau:g} | precision | recall, not the volume's largest | "
          "the same on the largest lesion's key slice |\n|---|---|---|---|---|")
    for run in args.runs:
        detections = json.loads((run / "test_detections.json").read_text())["volumes"]
        recall, precision, total = recall_precision(detections, truth, key_slices, args.tau)
        small, _, n_small = recall_precision(detections, smaller, key_slices, args.tau)
        beside, _, n_beside = recall_precision(detections, smaller, largest_keys, args.tau)
        print(f"| {run.name} | {recall:.2f} ({total}) | {precision:.2f} | {small:.2f} ({n_small}) | "
              f"{beside:.2f} ({n_beside}) |", flush=True)


if __name__ == "__main__":
    main()
