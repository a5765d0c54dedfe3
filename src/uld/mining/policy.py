"""How mined lesions and hard negatives enter the student's targets (docs/method.md, step 4)."""

from __future__ import annotations

import torch

POLICIES = ("none", "add", "ignore")


def targets_for_student(
    known_boxes: torch.Tensor,
    mined_boxes: torch.Tensor,
    policy: str,
    regress_mined: bool = True,
    hard_negatives: torch.Tensor | None = None,
    uncertain_boxes: torch.Tensor | None = None,
    nearby_boxes: torch.Tensor | None = None,
    background: bool = True,
) -> dict[str, torch.Tensor]:
    """The target dict of one image (torchvision's keys plus ``uld.model.sampling``'s).

    known_boxes (Tensor[N, 4]), mined_boxes (Tensor[K, 4]), hard_negatives (Tensor[H, 4]):
    in the student's pixel frame. ``none`` trains on the known boxes alone; ``add`` makes mined
    boxes extra foreground (with regression targets unless ``regress_mined`` is false);
    ``ignore`` takes the anchors and proposals on mined boxes out of the classification loss.
    Uncertain boxes (Tensor[U, 4], the ignore band of ``mining.ignore_low``) leave the
    classification loss under every policy, as do nearby boxes (Tensor[G, 4], the boxes labeled
    on neighbouring slices, ``Sample.nearby``). Hard negatives, when given, are forced into the
    background samples. ``background=False`` (a foreground-only slice) takes every other
    background sample of the image out of the classification loss. Labels are all 1.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown mining policy {policy!r} (known: {POLICIES})")
    known = known_boxes.reshape(-1, 4)
    mined = mined_boxes.to(known).reshape(-1, 4)
    boxes = torch.cat([known, mined]) if policy == "add" else known
    target = {
        "boxes": boxes,
        "labels": torch.ones(boxes.shape[0], dtype=torch.int64, device=boxes.device),
    }
    if policy == "add" and not regress_mined and len(mined):
        target["regress"] = torch.cat([
            torch.ones(len(known), dtype=torch.bool, device=boxes.device),
            torch.zeros(len(mined), dtype=torch.bool, device=boxes.device),
        ])
    ignored = [mined] if policy == "ignore" else []
    for extra in (uncertain_boxes, nearby_boxes):
        if extra is not None:
            ignored.append(extra.to(known).reshape(-1, 4))
    ignored = torch.cat(ignored) if ignored else known[:0]
    if len(ignored):
        target["ignore_boxes"] = ignored
    if hard_negatives is not None and hard_negatives.numel():
        target["hard_negatives"] = hard_negatives.to(known).reshape(-1, 4)
    if not background:
        target["foreground_only"] = torch.ones((), dtype=torch.bool, device=boxes.device)
    return target
