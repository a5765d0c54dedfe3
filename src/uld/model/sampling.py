"""Which anchors and proposals train the classifier: ignored regions and forced hard negatives.

torchvision labels each anchor (RPN) or proposal (RoI head) as foreground, background or
"discard" from its overlap with the ground truth, then samples a fixed number of foreground
and background ones per image. Mining and hard-negative retraining (docs/method.md) add three
kinds of box to a target dict, and this module turns them into labels. Pure functions on
tensors; ``uld.model.heads`` calls them from torchvision subclasses.

Target keys (all optional except ``boxes``/``labels``; boxes x1, y1, x2, y2 in image pixels):

- ``regress`` BoolTensor[N]: which ``boxes`` get box-regression targets (mined boxes under
  ``mining.regress_mined: false`` do not); absent = all.
- ``ignore_boxes`` FloatTensor[K, 4]: mined boxes under the ``ignore`` policy. A sample that
  would be background but overlaps one at IoU >= the stage's background threshold (0.3 for
  anchors, 0.5 for proposals: the overlap that would have stopped it being background had the
  box been a known lesion) is labelled IGNORE: neither positive nor negative.
- ``hard_negatives`` FloatTensor[H, 4]: hard negatives (P-). A background sample that overlaps
  one at IoU >= ``HARD_NEGATIVE_IOU`` is labelled HARD_NEGATIVE and is drawn before any other
  background sample (within the sampler's background quota), so it is always trained on.

The label codes below extend torchvision's 1 / 0 / -1 (one tensor per image).
"""

from __future__ import annotations

import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, Matcher
from torchvision.ops import box_iou

POSITIVE = 1
"""Foreground with a regression target."""
POSITIVE_NO_REGRESSION = 2
"""Foreground for the classifier only (a mined box under ``regress_mined: false``)."""
BACKGROUND = 0
IGNORE = -1
"""Neither positive nor negative: never sampled (torchvision's "discard")."""
HARD_NEGATIVE = -2
"""Background that the sampler must take first."""

HARD_NEGATIVE_IOU = 0.5
"""A sample overlapping a hard negative at least this much counts as that hard negative."""

SOFT_SAMPLING_RISE = 20.0
"""Steepness of the soft-sampling weight: background overlapping a known box at IoU 0.1 gets
0.86 of full weight, at 0.2 0.98 (``soft_sampling_weights``)."""


def _max_iou(candidates: torch.Tensor, boxes: torch.Tensor | None) -> torch.Tensor:
    """FloatTensor[C]: each candidate's best IoU with ``boxes`` (0 where there are none)."""
    if boxes is None or boxes.numel() == 0 or candidates.numel() == 0:
        return torch.zeros(candidates.shape[0], device=candidates.device)
    return box_iou(candidates, boxes.to(candidates).reshape(-1, 4)).max(dim=1).values


def match_labels(
    matcher: Matcher, candidates: torch.Tensor, target: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label codes and matched box index of each candidate of one image.

    candidates (FloatTensor[C, 4]): anchors or proposals. torchvision's matching (``matcher``
    thresholds; 1 / 0 / -1 for above, below and between) against ``target["boxes"]``, then
    ``mark_unregressed`` and ``refine_labels``. Returns (codes Int64Tensor[C], matched
    Int64Tensor[C], index into ``boxes``, 0 where unmatched or when there are no boxes).
    """
    gt = target["boxes"]
    if gt.numel() == 0:
        codes = torch.zeros(candidates.shape[0], dtype=torch.int64, device=candidates.device)
        matched = torch.zeros_like(codes)
    else:
        raw = matcher(box_iou(gt.to(candidates), candidates))
        codes = torch.full_like(raw, POSITIVE)
        codes[raw == matcher.BELOW_LOW_THRESHOLD] = BACKGROUND
        codes[raw == matcher.BETWEEN_THRESHOLDS] = IGNORE
        matched = raw.clamp(min=0)
        codes = mark_unregressed(codes, matched, target)
    return refine_labels(codes, candidates, target, matcher.low_threshold), matched


def refine_labels(
    labels: torch.Tensor,
    candidates: torch.Tensor,
    target: dict[str, torch.Tensor],
    ignore_iou: float,
) -> torch.Tensor:
    """Apply a target's ignore boxes and hard negatives to torchvision's labels of one image.

    labels (Tensor[C]): torchvision's 1 / 0 / -1 labels of the candidates (any dtype).
    candidates (FloatTensor[C, 4]): the anchors or proposals.
    Only BACKGROUND entries change: to IGNORE (overlap with an ignore box >= ``ignore_iou``),
    else to HARD_NEGATIVE (overlap with a hard negative >= ``HARD_NEGATIVE_IOU``), else to
    IGNORE on a ``foreground_only`` image.
    Returns a new tensor of the same dtype.
    """
    out = labels.clone()
    background = labels == BACKGROUND
    ignored = background & (_max_iou(candidates, target.get("ignore_boxes")) >= ignore_iou)
    hard = background & ~ignored & (
        _max_iou(candidates, target.get("hard_negatives")) >= HARD_NEGATIVE_IOU
    )
    fg_only = target.get("foreground_only")
    if fg_only is not None and bool(fg_only):
        ignored = background & ~hard
    out[ignored] = IGNORE
    out[hard] = HARD_NEGATIVE
    return out


def mark_unregressed(
    labels: torch.Tensor, matched_idxs: torch.Tensor, target: dict[str, torch.Tensor]
) -> torch.Tensor:
    """POSITIVE entries matched to a box with ``regress == False`` -> POSITIVE_NO_REGRESSION.

    matched_idxs (Int64Tensor[C]): index of each candidate's matched box (clamped to >= 0).
    """
    regress = target.get("regress")
    if regress is None or bool(regress.all()) or regress.numel() == 0:
        return labels
    out = labels.clone()
    out[(labels == POSITIVE) & ~regress[matched_idxs]] = POSITIVE_NO_REGRESSION
    return out


class HardNegativeSampler(BalancedPositiveNegativeSampler):
    """torchvision's balanced sampler over the label codes above.

    Positives: labels >= 1. Negatives: HARD_NEGATIVE ones first (at random if more than the
    background quota), then BACKGROUND ones at random. IGNORE is never drawn. Without hard
    negatives it draws exactly as torchvision's sampler does.
    """

    def __call__(self, labels: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pos_masks, neg_masks = [], []
        for per_image in labels:
            positive = torch.where(per_image >= 1)[0]
            hard = torch.where(per_image == HARD_NEGATIVE)[0]
            negative = torch.where(per_image == BACKGROUND)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = self.batch_size_per_image - num_pos
            num_hard = min(hard.numel(), num_neg)
            num_rest = min(negative.numel(), num_neg - num_hard)
            chosen_pos = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
            chosen_neg = torch.cat([
                hard[torch.randperm(hard.numel(), device=hard.device)[:num_hard]],
                negative[torch.randperm(negative.numel(), device=negative.device)[:num_rest]],
            ])
            pos_mask = torch.zeros_like(per_image, dtype=torch.uint8)
            neg_mask = torch.zeros_like(per_image, dtype=torch.uint8)
            pos_mask[chosen_pos] = 1
            neg_mask[chosen_neg] = 1
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks


def soft_sampling_weights(
    labels: torch.Tensor, proposals: torch.Tensor, known: torch.Tensor, floor: float
) -> torch.Tensor:
    """Loss weight of each sampled proposal of one image under Soft Sampling.

    Soft Sampling (Wu et al., *Soft Sampling for Robust Object Detection*, BMVC 2019) weights a
    background RoI by its overlap with the annotated boxes: background next to a known lesion is
    a reliable hard negative, background far from every known box may be a lesion nobody
    labeled. Here a BACKGROUND entry weighs ``max(floor, 1 - exp(-SOFT_SAMPLING_RISE * o))``,
    ``o`` its best IoU with ``known``; positives and HARD_NEGATIVE entries weigh 1. (The
    paper weights background RoIs by their overlap with the annotated objects; this curve and
    its rise constant are ours.)

    labels (Int64Tensor[N]): label codes of the sampled proposals. proposals (FloatTensor[N, 4]).
    known (FloatTensor[K, 4]): the target's boxes (labeled and mined). floor in [0, 1]; 1 gives
    all ones. Returns FloatTensor[N].
    """
    weights = torch.ones(labels.shape[0], dtype=proposals.dtype, device=proposals.device)
    background = labels == BACKGROUND
    if floor >= 1.0 or not bool(background.any()):
        return weights
    rise = 1.0 - torch.exp(-SOFT_SAMPLING_RISE * _max_iou(proposals[background], known))
    weights[background] = rise.clamp(min=floor).to(weights.dtype)
    return weights


def classifier_targets(labels: torch.Tensor) -> torch.Tensor:
    """Class index per sampled entry: positives -> 1, background and hard negatives -> 0."""
    return (labels >= 1).to(torch.int64)


def regression_mask(labels: torch.Tensor) -> torch.Tensor:
    """BoolTensor: entries that get a box-regression loss (POSITIVE only)."""
    return labels == POSITIVE
