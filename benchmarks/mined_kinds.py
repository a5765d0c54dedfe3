"""What a run's teacher would mine on its training slices, by kind.

    python benchmarks/mined_kinds.py RUN/last.pt [TAU] [GT_NMS_IOU] [GT_CONTAIN]

Mines every second training slice with the teacher of a checkpoint (``last.pt``) and sorts each
mined box against the generator's complete labels: ``true`` (IoU >= 0.5 with an unlabeled
lesion), ``unlabeled_poor_iou`` (half of it or more on an unlabeled lesion, IoU < 0.5),
``part_of_labeled`` (30 % or more of the smaller box shared with a labeled lesion: a part of a
known lesion or a box around it) and ``background``. TAU and GT_NMS_IOU default to the run's
config; GT_CONTAIN (``mining.gt_contain``) to 1 (off).
"""

from __future__ import annotations

import sys
from collections import Counter

import torch
from torchvision.ops import box_iou

from uld.config import config_from_dict
from uld.data.samples import KeySliceDataset, Sample
from uld.data.sources import open_training_data
from uld.infer.suppress import intersection_over_smaller
from uld.mining.filter import mine
from uld.model.build import build_detector
from uld.train.checkpoint import load_checkpoint


def kind_of(box: torch.Tensor, sample: Sample) -> str:
    """The kind of one mined box (Tensor[4]) on a sample with complete labels."""
    truth, box = sample.truth, box[None]
    known = (box_iou(truth, sample.boxes).max(dim=1).values >= 0.99 if len(sample.boxes)
             else torch.zeros(len(truth), dtype=torch.bool))
    unlabeled, labeled = truth[~known], truth[known]
    if len(unlabeled) and box_iou(box, unlabeled).max() >= 0.5:
        return "true"
    if len(unlabeled) and intersection_over_smaller(box, unlabeled).max() >= 0.5:
        return "unlabeled_poor_iou"
    if len(labeled) and intersection_over_smaller(box, labeled).max() >= 0.3:
        return "part_of_labeled"
    return "background"


def main() -> None:
    torch.set_num_threads(1)
    checkpoint = load_checkpoint(sys.argv[1])
    config = config_from_dict(checkpoint["config"])
    tau = float(sys.argv[2]) if len(sys.argv) > 2 else config.mining.tau
    gt_nms = float(sys.argv[3]) if len(sys.argv) > 3 else config.mining.gt_nms_iou
    gt_contain = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    model = build_detector(config.model, config.data.num_slices)
    model.load_state_dict(checkpoint["teacher"]["module"])
    model.eval()
    data = open_training_data(config.data)
    dataset = KeySliceDataset(data.store, data.labels, config.data, data.truth, source=data.source)
    indices = list(range(0, len(dataset), 2))
    kinds: Counter[str] = Counter()
    with torch.no_grad():
        for start in range(0, len(indices), 16):
            batch = [dataset[i] for i in indices[start:start + 16]]
            for sample, p in zip(batch, model([s.image for s in batch])):
                boxes, _ = mine(p["boxes"], p["scores"], sample.boxes, tau, gt_nms, gt_contain)
                kinds.update(kind_of(b, sample) for b in boxes)
    print(f"{sys.argv[1]}: tau {tau}, GT NMS {gt_nms}, gt_contain {gt_contain}, "
          f"{len(indices)} slices: {dict(kinds)}")


if __name__ == "__main__":
    main()
