"""Which teacher predictions become mined lesions (docs/method.md, steps 2-3). Pure functions."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

from uld.infer.suppress import intersection_over_smaller


def gt_nms(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float,
           contain_threshold: float = 1.0) -> torch.Tensor:
    """Keep-mask of predictions that overlap no known box by more than ``iou_threshold``
    (IoU) nor, when ``contain_threshold`` < 1, by more than ``contain_threshold`` of the
    smaller box's area (a box mostly inside, or mostly around, a known lesion is that lesion).

    pred_boxes (Tensor[N, 4]), gt_boxes (Tensor[M, 4]): x1, y1, x2, y2 in one pixel frame.
    Returns BoolTensor[N]; with no known box every prediction is kept.
    """
    if gt_boxes.numel() == 0 or pred_boxes.numel() == 0:
        return torch.ones(pred_boxes.shape[0], dtype=torch.bool, device=pred_boxes.device)
    gt_boxes = gt_boxes.to(pred_boxes)
    keep = box_iou(pred_boxes, gt_boxes).max(dim=1).values <= iou_threshold
    if contain_threshold < 1.0:
        keep &= intersection_over_smaller(pred_boxes, gt_boxes).max(dim=1).values <= contain_threshold
    return keep


def confident(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """BoolTensor[N]: ``scores >= tau``."""
    return scores >= tau


def mine(
    pred_boxes: torch.Tensor,
    pred_scores: torch.Tensor,
    gt_boxes: torch.Tensor,
    tau: float,
    gt_nms_iou: float,
    gt_contain: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mined lesions of one image: GT NMS (IoU, and containment when ``gt_contain`` < 1),
    then the confidence filter.

    Returns (boxes Tensor[K, 4], scores Tensor[K]) in the frame of the inputs.
    """
    keep = gt_nms(pred_boxes, gt_boxes, gt_nms_iou, gt_contain) & confident(pred_scores, tau)
    return pred_boxes[keep], pred_scores[keep]



def supported(
    boxes: torch.Tensor,
    neighbours: list[tuple[torch.Tensor, torch.Tensor]],
    min_score: float,
    iou: float,
    needed: int,
) -> torch.Tensor:
    """3D consistency of mined boxes: BoolTensor[K], true where at least ``needed`` of the
    ``neighbours`` (the teacher's (boxes Tensor[N, 4], scores Tensor[N]) on the stacks centred
    one spacing above and below) hold a box with score >= ``min_score`` and IoU >= ``iou``."""
    votes = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    for n_boxes, n_scores in neighbours:
        n_boxes = n_boxes[n_scores >= min_score]
        if boxes.numel() and n_boxes.numel():
            votes += (box_iou(boxes, n_boxes.to(boxes)) >= iou).any(dim=1).to(torch.int64)
    return votes >= needed
