"""torchvision's RPN and RoI heads, taught the label codes of ``uld.model.sampling``.

Both subclasses keep torchvision's matching and sampling and change only what mining and hard
negatives need: ignored regions leave the classification loss, hard negatives are always
sampled as background, and positives on boxes without ``regress`` train the classifier only.
A target without the optional keys trains exactly as torchvision does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from uld.model.sampling import (
    HardNegativeSampler,
    classifier_targets,
    match_labels,
    regression_mask,
    soft_sampling_weights,
)


class LesionRPN(RegionProposalNetwork):
    """RPN whose anchor labels honour ``ignore_boxes``, ``hard_negatives`` and ``regress``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fg_bg_sampler = HardNegativeSampler(
            self.fg_bg_sampler.batch_size_per_image, self.fg_bg_sampler.positive_fraction
        )

    def assign_targets_to_anchors(
        self, anchors: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Label codes (Int64Tensor[A]) and matched boxes (FloatTensor[A, 4]) per image."""
        labels, matched_boxes = [], []
        for anchors_per_image, target in zip(anchors, targets):
            codes, matched = match_labels(self.proposal_matcher, anchors_per_image, target)
            gt = target["boxes"]
            labels.append(codes)
            matched_boxes.append(gt[matched] if gt.numel() else torch.zeros_like(anchors_per_image))
        return labels, matched_boxes

    def compute_loss(
        self, objectness: torch.Tensor, pred_bbox_deltas: torch.Tensor,
        labels: list[torch.Tensor], regression_targets: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """torchvision's RPN loss over the label codes: objectness on sampled entries
        (positive = 1, background and hard negatives = 0), box loss on POSITIVE ones."""
        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        sampled_pos = torch.where(torch.cat(pos_masks))[0]
        sampled = torch.cat([sampled_pos, torch.where(torch.cat(neg_masks))[0]])
        if sampled.numel() == 0:  # only foreground-only images without boxes: nothing to learn
            zero = objectness.sum() * 0
            return zero, zero + pred_bbox_deltas.sum() * 0
        codes = torch.cat(labels)
        regressed = sampled_pos[regression_mask(codes[sampled_pos])]
        box_loss = F.smooth_l1_loss(
            pred_bbox_deltas[regressed], torch.cat(regression_targets)[regressed],
            beta=1 / 9, reduction="sum",
        ) / sampled.numel()
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled], classifier_targets(codes[sampled]).to(objectness.dtype)
        )
        return objectness_loss, box_loss


class LesionRoIHeads(RoIHeads):
    """Box-only RoI heads whose proposal labels honour the optional target keys.

    Hard negatives join the proposals (as torchvision adds the ground-truth boxes), so each
    one is certain to be a candidate. ``soft_sampling_floor`` < 1 weights the background
    proposals' classification loss by their overlap with the known boxes
    (``uld.model.sampling.soft_sampling_weights``); 1 trains as torchvision does. Masks and
    keypoints are not supported.
    """

    def __init__(self, *args, soft_sampling_floor: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.soft_sampling_floor = soft_sampling_floor
        self.fg_bg_sampler = HardNegativeSampler(
            self.fg_bg_sampler.batch_size_per_image, self.fg_bg_sampler.positive_fraction
        )

    def select_training_samples(
        self, proposals: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Sampled proposals of each image with their label codes and regression targets."""
        self.check_targets(targets)
        dtype = proposals[0].dtype
        out_proposals, out_labels, out_targets = [], [], []
        candidates_all, codes_all, matched_all = [], [], []
        for proposals_in_image, target in zip(proposals, targets):
            hard = target.get("hard_negatives")
            extra = [target["boxes"].to(dtype)]
            if hard is not None:
                extra.append(hard.to(dtype).reshape(-1, 4))
            candidates = torch.cat([proposals_in_image, *extra])
            codes, matched = match_labels(self.proposal_matcher, candidates, target)
            candidates_all.append(candidates)
            codes_all.append(codes)
            matched_all.append(matched)
        pos_masks, neg_masks = self.fg_bg_sampler(codes_all)
        for candidates, codes, matched, pos, neg, target in zip(
            candidates_all, codes_all, matched_all, pos_masks, neg_masks, targets
        ):
            keep = torch.where(pos | neg)[0]
            gt = target["boxes"].to(dtype)
            if gt.numel() == 0:
                gt = torch.zeros((1, 4), dtype=dtype, device=candidates.device)
            out_proposals.append(candidates[keep])
            out_labels.append(codes[keep])
            out_targets.append(gt[matched[keep]])
        return out_proposals, out_labels, self.box_coder.encode(out_targets, out_proposals)

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        weights = None
        if self.soft_sampling_floor < 1.0:
            weights = torch.cat([
                soft_sampling_weights(codes, boxes, target["boxes"], self.soft_sampling_floor)
                for codes, boxes, target in zip(labels, proposals, targets)
            ])
        loss_classifier, loss_box_reg = box_losses(
            class_logits, box_regression, torch.cat(labels), torch.cat(regression_targets),
            weights,
        )
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}


def box_losses(
    class_logits: torch.Tensor, box_regression: torch.Tensor, labels: torch.Tensor,
    regression_targets: torch.Tensor, weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ``fastrcnn_loss`` over the label codes (one foreground class).

    class_logits (Tensor[N, 2]), box_regression (Tensor[N, 8]), labels (Int64Tensor[N] codes
    of the sampled proposals), regression_targets (Tensor[N, 4]). Cross-entropy on every
    sampled proposal (each multiplied by ``weights`` (Tensor[N]) where given, the sum still
    divided by N, so a weight below 1 only takes gradient away); smooth-L1 on the POSITIVE
    ones, divided by N as torchvision does. With nothing sampled (foreground-only images
    without boxes) both losses are 0.
    """
    if labels.numel() == 0:
        zero = class_logits.sum() * 0
        return zero, zero + box_regression.sum() * 0
    if weights is None:
        classification_loss = F.cross_entropy(class_logits, classifier_targets(labels))
    else:
        per_sample = F.cross_entropy(class_logits, classifier_targets(labels), reduction="none")
        classification_loss = (per_sample * weights.to(per_sample.dtype)).sum() / labels.numel()
    regressed = torch.where(regression_mask(labels))[0]
    per_class = box_regression.reshape(box_regression.shape[0], -1, 4)
    box_loss = F.smooth_l1_loss(
        per_class[regressed, 1], regression_targets[regressed], beta=1 / 9, reduction="sum"
    ) / labels.numel()
    return classification_loss, box_loss
