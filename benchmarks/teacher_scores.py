"""How confident is a trained teacher on the lesions of its training slices, labeled or not?

    python benchmarks/teacher_scores.py DATA RUN [RUN ...] [--annotations annotations.csv]

For every training key slice of DATA (the slices a run trained on, from ``--annotations``)
and every true lesion on it (``annotations_full.csv``), the highest score of the run's final
teacher (``RUN/model.pt``) among its boxes with IoU >= 0.5 (0 when none). Prints, for the
labeled and the unlabeled lesions, the mean and the share at or above 0.5 ... 0.95, overall
and by the lesion's size on the slice: the share of unlabeled lesions at or above tau is what
mining at tau can find at most.
"""

from __future__ import annotations

import argparse
from itertools import pairwise

import numpy as np
import torch
from torchvision.ops import box_iou

from uld.config import override
from uld.data.samples import KeySliceDataset
from uld.data.sources import open_training_data
from uld.infer.predict import load_model

LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95)
SIZE_BANDS = (8, 12, 16, 24)
"""Bands of a true box's long side in pixels (1.2-1.5 mm pixels on the benchmark)."""


def best_scores(run: str, data: str, annotations: str) -> tuple[np.ndarray, np.ndarray]:
    """Best matching score of each (labeled, unlabeled) true lesion on the training slices:
    two arrays [N, 2] of (score, long side of the true box in pixels)."""
    model, config = load_model(f"{run}/model.pt")
    model.eval()
    config = override(config, f"data.root={data}", f"data.annotations={annotations}")
    training = open_training_data(config.data)
    dataset = KeySliceDataset(training.store, training.labels, config.data, training.truth,
                              source=training.source)
    labeled, unlabeled = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), 16):
            batch = [dataset[i] for i in range(start, min(start + 16, len(dataset)))]
            for sample, p in zip(batch, model([s.image for s in batch])):
                if sample.truth is None or not len(sample.truth):
                    continue
                best = torch.zeros(len(sample.truth))
                if len(p["boxes"]):
                    hit = box_iou(sample.truth, p["boxes"]) >= 0.5
                    best = torch.where(hit, p["scores"][None, :], 0.0).max(dim=1).values
                known = torch.zeros(len(sample.truth), dtype=torch.bool)
                if len(sample.boxes):
                    known = box_iou(sample.truth, sample.boxes).max(dim=1).values >= 0.99
                side = (sample.truth[:, 2:] - sample.truth[:, :2]).max(dim=1).values
                pairs = torch.stack([best, side], dim=1)
                labeled += pairs[known].tolist()
                unlabeled += pairs[~known].tolist()
    return np.asarray(labeled).reshape(-1, 2), np.asarray(unlabeled).reshape(-1, 2)


def describe(scores: np.ndarray) -> str:
    shares = "  ".join(f">={t:.2f}: {np.mean(scores >= t):.2f}" for t in LEVELS)
    return f"n={len(scores):4d}  mean {scores.mean():.2f}  {shares}"


def by_size(pairs: np.ndarray, indent: str) -> str:
    """``describe`` per band of the true box's long side (pixels)."""
    lines = []
    for low, high in pairwise((0, *SIZE_BANDS, np.inf)):
        inside = (pairs[:, 1] >= low) & (pairs[:, 1] < high)
        if inside.any():
            lines.append(f"{indent}{low:>3.0f}-{high:<3.0f} px  {describe(pairs[inside, 0])}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--annotations", default="annotations.csv",
                        help="the partial labels that define the training slices")
    args = parser.parse_args()
    for run in args.runs:
        labeled, unlabeled = best_scores(run, args.data, args.annotations)
        print(f"{run}\n  labeled    {describe(labeled[:, 0])}\n{by_size(labeled, '    ')}"
              f"\n  unlabeled  {describe(unlabeled[:, 0])}\n{by_size(unlabeled, '    ')}", flush=True)


if __name__ == "__main__":
    main()
