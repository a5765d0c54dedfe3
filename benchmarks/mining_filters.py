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
from dataclasses import replace

import torch

from uld.config import MiningConfig, config_from_dict
from uld.data.samples import KeySliceDataset
from uld.data.sources import open_training_data
from uld.mining.diagnostics import MiningCounts
from uld.mining.filter import supported
from uld.mining.harvest import count_mining, mine_samples
from uld.model.build import build_detector
from uld.train.checkpoint import load_checkpoint


def _unflip(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Boxes (Tensor[N, 4]) found on a left-right flipped image, in the original's pixels."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


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
    variants: dict[str, MiningConfig] = {
        "as trained": m,
        "3D, either": replace(m, consistency_neighbours=1),
        "3D, both": replace(m, consistency_neighbours=2),
    }
    counts = {name: MiningCounts() for name in [*variants, "flip", "flip >= tau"]}
    for start in range(0, len(dataset), 16):
        batch = [dataset[i] for i in range(start, min(start + 16, len(dataset)))]
        plain = None
        for name, mining in variants.items():
            mined = mine_samples(teacher, batch, mining)
            counts[name] = counts[name] + count_mining(batch, [b for b, _ in mined])
            plain = mined if name == "as trained" else plain
        with torch.inference_mode():
            flipped = teacher([s.image.flip(-1) for s in batch])
        for name, floor in (("flip", 0.5), ("flip >= tau", m.tau)):
            kept = []
            for sample, (boxes, _), p in zip(batch, plain, flipped):
                view = (_unflip(p["boxes"], sample.image.shape[-1]), p["scores"])
                kept.append(boxes[supported(boxes, [view], floor, 0.5, 1)])
            counts[name] = counts[name] + count_mining(batch, kept)
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
