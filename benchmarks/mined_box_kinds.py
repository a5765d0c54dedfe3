"""What the boxes a final teacher mines are, against the benchmark's complete labels.

    python benchmarks/mined_box_kinds.py --data BENCHMARK_DATA RUN [RUN ...]

RUN: a mining run's folder (its ``mined_lesions.json``: the final teacher re-mining every
training slice). Each mined box is put in the first kind that fits, judged on its own slice
against ``annotations_full.csv`` (every lesion, on every slice it crosses) and the train labels
(``annotations.csv``); a lesion is unlabeled on a slice that holds no label of it, as in the
training diagnostics:

- ``true``: IoU >= 0.5 with an unlabeled lesion (what the training diagnostics count as true),
  split by whether that lesion has a label on another slice (its key slice) or none at all;
- ``poor box on an unlabeled lesion``: IoU >= 0.2, or half of either box inside the other;
- ``part of or around a labeled lesion``: the same overlap with a lesion labeled on that slice;
- ``a lesion's end on a nearby slice``: IoU >= 0.3 with a lesion within 3 slices;
- ``background``: none of these.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from uld.data.dataset import DatasetFolder
from uld.data.slice_boxes import read_slice_boxes
from uld.infer.suppress import intersection_over_smaller

KINDS = ("true: a lesion labeled on another slice", "true: a lesion with no label",
         "poor box on an unlabeled lesion", "part of or around a labeled lesion",
         "a lesion's end on a nearby slice", "background")
NEARBY = 3


def _overlaps(box: torch.Tensor, others: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(IoU Tensor[N], intersection over the smaller box Tensor[N]) of ``box`` (Tensor[1, 4])
    with each of ``others`` (ndarray[N, 4])."""
    others_t = torch.as_tensor(others, dtype=torch.float64).reshape(-1, 4)
    return box_iou(box, others_t)[0], intersection_over_smaller(box, others_t)[0]


def _hits(iou: torch.Tensor, ios: torch.Tensor) -> bool:
    """Overlap enough to be on that lesion, if not a good box of it."""
    return bool(((iou >= 0.2) | (ios >= 0.5)).any())


def kind_of(box: np.ndarray, unlabeled: np.ndarray, labeled_elsewhere: np.ndarray,
            labeled: np.ndarray, nearby: np.ndarray) -> str:
    """The kind (one of ``KINDS``) of one mined box (ndarray[4]). The others are ndarray[N, 4]:
    the boxes of the lesions unlabeled on its slice, a bool mask of those labeled on another
    slice, the boxes of the lesions labeled on its slice, and every lesion's on nearby slices."""
    b = torch.as_tensor(box, dtype=torch.float64).reshape(1, 4)
    iou, ios = _overlaps(b, unlabeled)
    if len(iou) and iou.max() >= 0.5:
        return KINDS[0] if labeled_elsewhere[int(iou.argmax())] else KINDS[1]
    if _hits(iou, ios):
        return KINDS[2]
    if _hits(*_overlaps(b, labeled)):
        return KINDS[3]
    if bool((_overlaps(b, nearby)[0] >= 0.3).any()):
        return KINDS[4]
    return KINDS[5]


def mined_box_kinds(data: Path, run: Path) -> Counter:
    """How many of ``run``'s finally mined boxes are of each kind."""
    folder = DatasetFolder(data)
    full, known = folder.annotations("annotations_full.csv"), folder.annotations("annotations.csv")
    # a lesion labeled on another slice is unlabeled where it crosses this one
    rows = list(zip(known.volume, known.z, known.extra["lesion"]))
    labeled_here = {(str(v), int(z), lesion) for v, z, lesion in rows}
    labeled_anywhere = {(str(v), lesion) for v, _, lesion in rows}
    by_slice: dict[tuple[str, int], list[tuple[np.ndarray, bool, bool]]] = {}
    for volume, z, box, lesion in zip(full.volume, full.z, full.boxes, full.extra["lesion"]):
        key = (str(volume), int(z))
        by_slice.setdefault(key, []).append(
            (box, (*key, lesion) in labeled_here, (key[0], lesion) in labeled_anywhere))
    empty = np.zeros((0, 4))

    def boxes(key: tuple[str, int], labeled: bool | None) -> np.ndarray:
        found = [b for b, here, _ in by_slice.get(key, []) if labeled is None or here == labeled]
        return np.stack(found) if found else empty

    def elsewhere(key: tuple[str, int]) -> np.ndarray:
        return np.array([anywhere for _, here, anywhere in by_slice.get(key, []) if not here], dtype=bool)

    counts: Counter = Counter()
    for (volume, z), mined in read_slice_boxes(run / "mined_lesions.json").items():
        key = (volume, z)
        around = (boxes(key, False), elsewhere(key), boxes(key, True), np.concatenate(
            [boxes((volume, z + dz), None) for dz in range(-NEARBY, NEARBY + 1) if dz]))
        counts.update(kind_of(box, *around) for box in mined)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="the benchmark's dataset folder")
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print("| run | mined | " + " | ".join(KINDS) + " |")
    print("|---|---|" + "---|" * len(KINDS))
    for run in args.runs:
        counts = mined_box_kinds(Path(args.data), run)
        total = sum(counts.values())
        print(f"| {run.name} | {total} | " + " | ".join(str(counts[k]) for k in KINDS) + " |")


if __name__ == "__main__":
    main()
