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
