"""Which filter keeps a late teacher's mined boxes precise: one checkpoint, several filters.

    python benchmarks/mining_filters.py RUN/last.pt [RUN/best.pt ...]

Re-mines every training slice with the checkpoint's teacher and the run's own mining settings,
then again with each filter on top, and prints the mined boxes, how many are true (IoU >= 0.5
with a lesion unlabeled on the slice, as in the training diagnostics), precision and recall:

- ``as trained``: the run's settings;
- ``3D, either`` / ``3D, both``: the 3D consistency filter (``mining.consistency_neighbours`` 1
  or 2; the teacher also finds the box, score >= 0.5, IoU >= 0.5, on the stack one spacing above
  and / or below);
- ``flip``: the teacher also finds the box (score >= 0.5, IoU >= 0.5) on the left-right flipped
  stack (view agreement, as Co-mining's two views; Wang et al., AAAI 2021);
- ``flip >= tau``: the same with the flipped view's score >= tau.
"""

from __future__ import annotations

import sys

import torch

from uld.config import config_from_dict
from uld.data.samples import KeySliceDataset
from uld.data.sources import open_training_data
from uld.data.transforms import flip_boxes
from uld.mining.diagnostics import MiningCounts
from uld.mining.filter import supported
from uld.mining.harvest import count_mining, mine_samples
from uld.model.build import build_detector
from uld.train.checkpoint import load_checkpoint


def study(path: str) -> None:
    checkpoint = load_checkpoint(path)
    config = config_from_dict(checkpoint["config"])
    teacher = build_detector(config.model, config.data.num_slices)
    teacher.load_state_dict(checkpoint["teacher"]["module"])
    teacher.eval()
    data = open_training_data(config.data)
    dataset = KeySliceDataset(data.store, data.labels, config.data, data.truth,
                              source=data.source, context=True)
    m = config.mining
    # (neighbour views, score floor, views needed) of each filter on top of the run's settings
    filters = {"3D, either": ("3D", m.consistency_score, 1), "3D, both": ("3D", m.consistency_score, 2),
               "flip": ("flip", 0.5, 1), "flip >= tau": ("flip", m.tau, 1)}
    counts = {name: MiningCounts() for name in ["as trained", *filters]}
    for start in range(0, len(dataset), 16):
        batch = [dataset[i] for i in range(start, min(start + 16, len(dataset)))]
        plain = [boxes for boxes, _ in mine_samples(teacher, batch, m)]
        counts["as trained"] = counts["as trained"] + count_mining(batch, plain)
        with torch.inference_mode():  # one pass over each view of the whole batch
            below = teacher([s.context[:-2] for s in batch])
            above = teacher([s.context[2:] for s in batch])
            flipped = teacher([s.image.flip(-1) for s in batch])
        for i, sample in enumerate(batch):
            width = sample.image.shape[-1]
            views = {"3D": [(p["boxes"], p["scores"]) for p in (below[i], above[i])],
                     "flip": [(flip_boxes(flipped[i]["boxes"], width), flipped[i]["scores"])]}
            for name, (view, floor, needed) in filters.items():
                iou = m.consistency_iou if view == "3D" else 0.5
                kept = plain[i][supported(plain[i], views[view], floor, iou, needed)]
                counts[name] = counts[name] + count_mining([sample], [kept])
    step = checkpoint.get("step", "?")
    print(f"\n{path} (step {step}, tau {m.tau}, {len(dataset)} training slices)")
    print("| filter | mined | true | precision | recall |")
    print("|---|---|---|---|---|")
    for name, c in counts.items():
        precision = f"{c.precision:.2f}" if c.mined else "-"
        print(f"| {name} | {c.mined} | {c.true} | {precision} | {c.recall:.3f} |")


def main() -> None:
    torch.set_num_threads(1)
    for path in sys.argv[1:]:
        study(path)


if __name__ == "__main__":
    main()
