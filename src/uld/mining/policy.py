"""How mined lesions enter the student's targets (METHOD.md, step 4)."""

from __future__ import annotations

import torch

POLICIES = ("none", "add")


def targets_for_student(
    known_boxes: torch.Tensor, mined_boxes: torch.Tensor, policy: str
) -> dict[str, torch.Tensor]:
    """The torchvision target dict of one image.

    known_boxes (Tensor[N, 4]), mined_boxes (Tensor[K, 4]): in the student's pixel frame.
    ``none`` trains on the known boxes alone; ``add`` makes mined boxes extra foreground
    (with regression targets, like any ground truth). Labels are all 1 ("lesion").
    """
    if policy == "none":
        boxes = known_boxes
    elif policy == "add":
        boxes = torch.cat([known_boxes, mined_boxes.to(known_boxes)], dim=0)
    else:
        raise ValueError(f"unknown mining policy {policy!r} (known: {POLICIES})")
    return {
        "boxes": boxes.reshape(-1, 4),
        "labels": torch.ones(boxes.shape[0], dtype=torch.int64, device=boxes.device),
    }
