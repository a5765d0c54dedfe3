"""Probe (issue 11): mine each lesion where it is easiest to see, and carry its box to the key slice.

The lesions that mining misses on a training key slice are mostly small cross-sections of
lesions centred a few slices away, which the same teacher finds twice as often on their own
central slice (``heldout_recall.py``). This probe runs a run's best teacher over every slice of
each labeled training volume and links the boxes into lesions as ``uld predict`` does; a lesion
whose best box scores >= ``peak`` (on at least ``min_slices`` slices) and that crosses a key
slice gives that slice its box there, whatever that box's own score, when it passes the run's
GT NMS against the slice's labels. Precision and recall against the complete labels, next to
what the teacher mines on the key slices alone (the run's mining, ``tau``).

    OMP_NUM_THREADS=1 python benchmarks/probes/issue11/carried_boxes.py RUN [RUN ...] --data RUNS/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from uld.config import load_config
from uld.data.dataset import DatasetFolder
from uld.data.sources import VolumeStore, open_training_data
from uld.infer.predict import load_model, predict_volume
from uld.mining.diagnostics import MiningCounts, mining_counts
from uld.mining.filter import gt_nms

RULES = [(0.9, 1), (0.9, 3), (0.95, 3), (0.98, 3), (0.98, 5)]
"""(peak score, slices at >= 0.5 of it) a lesion needs to give the key slice its box."""


def carried_counts(run: Path, data: Path) -> dict[str, MiningCounts]:
    """Counts of the carried boxes on the training key slices, by rule, and of direct mining."""
    teacher, _ = load_model(run)
    teacher.eval()
    config = load_config(run / "config.yaml", [f"data.root={data.resolve()}"])
    training = open_training_data(config.data)
    labels, truth = training.labels.by_slice(), training.truth.by_slice()
    keys: dict[str, list[int]] = {}
    for volume, z in training.labels.key_slices():
        keys.setdefault(volume, []).append(z)
    store = VolumeStore(DatasetFolder(data), cache=False)
    counts = {f"peak >= {p}, {n}+ slices": MiningCounts() for p, n in RULES}
    direct_label = "key slice alone, >= tau"
    counts[direct_label] = MiningCounts()
    for name in tqdm(sorted(keys), desc=run.name, unit="vol", leave=False):
        with torch.no_grad():
            lesions = predict_volume(teacher, store[name], config)
        peaks = [max(b[4] for _, b in lesion) for lesion in lesions]
        for z in keys[name]:
            known = torch.as_tensor(labels[(name, z)], dtype=torch.float32).reshape(-1, 4)
            true = torch.as_tensor(truth.get((name, z), [])).float().reshape(-1, 4)
            on_z = [(peak, lesion, box) for peak, lesion in zip(peaks, lesions)
                    for zz, box in lesion if zz == z]
            for (least, slices), label in zip(RULES, counts):
                boxes = [box[:4] for peak, lesion, box in on_z if peak >= least
                         and sum(b[4] >= 0.5 * least for _, b in lesion) >= slices]
                counts[label] = counts[label] + _counts(boxes, known, true, config.mining)
            direct = [box[:4] for _, _, box in on_z if box[4] >= config.mining.tau]
            counts[direct_label] = counts[direct_label] + _counts(direct, known, true, config.mining)
    return counts


def _counts(boxes: list, known: torch.Tensor, true: torch.Tensor, mining) -> MiningCounts:
    mined = torch.as_tensor(np.array(boxes, dtype=np.float32)).reshape(-1, 4)
    mined = mined[gt_nms(mined, known, mining.gt_nms_iou, mining.gt_contain)]
    return mining_counts(mined, known, true)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        for label, c in carried_counts(run, args.data).items():
            rows.append(f"| {run.name} | {label} | {c.mined} | {c.precision:.2f} | {c.missing} | "
                        f"{c.recall:.2f} |")
    print("| run | boxes | mined | precision | unlabeled lesions | recall |\n|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
