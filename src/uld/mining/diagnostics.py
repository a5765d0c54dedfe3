"""How good the mined boxes are, where the complete labels are known (synthetic data)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou


@dataclass(frozen=True)
class MiningCounts:
    """Counts for one image or summed over many.

    mined: boxes mined; true: mined boxes on a lesion that had no known box (IoU >= 0.5; a
    box on an already known lesion is not a find); missing: true lesions on the slice without
    a known box; found: missing lesions hit by a mined box.
    """

    mined: int = 0
    true: int = 0
    missing: int = 0
    found: int = 0

    def __add__(self, other: MiningCounts) -> MiningCounts:
        return MiningCounts(
            self.mined + other.mined, self.true + other.true,
            self.missing + other.missing, self.found + other.found,
        )

    @property
    def precision(self) -> float:
        return self.true / self.mined if self.mined else float("nan")

    @property
    def recall(self) -> float:
        return self.found / self.missing if self.missing else float("nan")


def _hits(a: torch.Tensor, b: torch.Tensor, iou: float) -> torch.Tensor:
    """BoolTensor[len(a)]: each box of ``a`` overlaps some box of ``b`` with IoU >= iou."""
    if a.numel() == 0 or b.numel() == 0:
        return torch.zeros(a.shape[0], dtype=torch.bool)
    return (box_iou(a, b) >= iou).any(dim=1)


def mining_counts(
    mined: torch.Tensor, known: torch.Tensor, truth: torch.Tensor, iou: float = 0.5
) -> MiningCounts:
    """Counts of one image; all boxes (Tensor[., 4]) in the same pixel frame, on the CPU."""
    missing = truth[~_hits(truth, known, iou)]
    return MiningCounts(
        mined=int(mined.shape[0]),
        true=int(_hits(mined, missing, iou).sum()),
        missing=int(missing.shape[0]),
        found=int(_hits(missing, mined, iou).sum()),
    )


@dataclass(frozen=True)
class ScoreProfile:
    """How confident a teacher is on the lesions and background of some training slices.

    labeled / unlabeled (FloatTensor[N]): for each true lesion on the slices, with or without
    a known box there, the best score of the teacher's boxes with IoU >= 0.5 (0 when none).
    background (FloatTensor[M]): scores of the teacher's boxes that overlap no true lesion
    (IoU < 0.1 with every one). slices: how many slices were scored.
    """

    labeled: torch.Tensor
    unlabeled: torch.Tensor
    background: torch.Tensor
    slices: int

    def scalars(self, tau: float) -> dict[str, float]:
        """Means, shares at or above ``tau`` and background boxes at or above ``tau`` per slice."""

        def share(x: torch.Tensor) -> float:
            return float((x >= tau).float().mean()) if x.numel() else float("nan")

        def mean(x: torch.Tensor) -> float:
            return float(x.mean()) if x.numel() else float("nan")

        return {
            "scores/labeled_mean": mean(self.labeled),
            "scores/unlabeled_mean": mean(self.unlabeled),
            "scores/labeled_at_tau": share(self.labeled),
            "scores/unlabeled_at_tau": share(self.unlabeled),
            "scores/background_at_tau_per_slice":
                float((self.background >= tau).sum()) / max(self.slices, 1),
            "scores/background_top_mean": mean(self.background.topk(
                min(self.slices, self.background.numel())).values),
        }


def score_profile(
    boxes: list[torch.Tensor], scores: list[torch.Tensor], known: list[torch.Tensor],
    truth: list[torch.Tensor],
) -> ScoreProfile:
    """:class:`ScoreProfile` of per-slice teacher predictions (``boxes[i]`` FloatTensor[K, 4],
    ``scores[i]`` FloatTensor[K]) against the known and the true boxes of each slice (all in
    the same pixel frame, on the CPU)."""
    labeled, unlabeled, background = [], [], []
    for b, s, k, t in zip(boxes, scores, known, truth):
        if t.numel() == 0:
            background.append(s)
            continue
        iou = box_iou(t, b) if b.numel() else torch.zeros((t.shape[0], 0))
        best = torch.where(iou >= 0.5, s[None, :], 0.0).amax(dim=1) if b.numel() \
            else torch.zeros(t.shape[0])
        is_known = _hits(t, k, 0.99)
        labeled.append(best[is_known])
        unlabeled.append(best[~is_known])
        background.append(s[iou.amax(dim=0) < 0.1] if b.numel() else s)
    empty = torch.zeros(0)
    return ScoreProfile(torch.cat(labeled) if labeled else empty,
                        torch.cat(unlabeled) if unlabeled else empty,
                        torch.cat(background) if background else empty, len(boxes))
