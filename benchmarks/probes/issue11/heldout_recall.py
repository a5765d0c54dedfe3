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
from uld.data.dataset import Annotations, DatasetFolder


def largest_lesion(lesions_csv: Path) -> dict[str, str]:
    """``{volume: its largest lesion}`` by ``lesions.csv``'s ``diameter_mm``."""
    largest: dict[str, tuple[float, str]] = {}
    with lesions_csv.open() as f:
        for row in csv.DictReader(f):
            size = float(row["diameter_mm"])
            if size > largest.get(row["volume"], (-1.0, ""))[0]:
                largest[row["volume"]] = (size, row["lesion"])
    return {volume: lesion for volume, (_, lesion) in largest.items()}


def not_largest(table: Annotations, largest: dict[str, str]) -> np.ndarray:
    """Mask (ndarray[N], bool) of ``table``'s rows whose lesion is not its volume's largest."""
    return np.array([largest[str(v)] != str(les)
                     for v, les in zip(table.volume, table.extra["lesion"])], dtype=bool)


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
    folder = DatasetFolder(args.data)
    test = folder.volumes("test")
    keys = folder.annotations("annotations.csv").for_volumes(test)
    full = folder.annotations("annotations_full.csv").for_volumes(test)
    largest = largest_lesion(args.data / "lesions.csv")
    key_slices = keys.key_slices()
    largest_keys = keys.select(~not_largest(keys, largest)).key_slices()
    truth = full.by_slice()
    smaller = full.select(not_largest(full, largest)).by_slice()
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
