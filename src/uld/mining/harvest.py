"""Mining as a batch step, and the final teacher's mined lesions over a whole training set.

``mine_samples`` is what the training loop calls every step (and what ``harvest`` calls at the
end of a run): teacher at ratio 1.0 -> optional containment suppression
(``mining.contain_thresh``) -> GT NMS -> confidence filter -> optional 3D consistency filter,
nothing mined on volumes whose labels are complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from uld.config import MiningConfig
from uld.data.preprocess import Frame
from uld.data.samples import KeySliceDataset, Sample
from uld.data.slice_boxes import SliceBox
from uld.infer.suppress import contained_keep
from uld.mining.diagnostics import MiningCounts, ScoreProfile, mining_counts, score_profile
from uld.mining.filter import confident, gt_nms, mine, supported


def mine_samples(
    teacher: torch.nn.Module, batch: Sequence[Sample], config: MiningConfig,
    device: torch.device | str = "cpu", floor: float | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Mined (boxes Tensor[K, 4], scores Tensor[K]) of each sample, in its image frame.

    ``floor`` (<= ``config.tau``) lowers the confidence filter, so that the result also holds
    the boxes scoring in [``floor``, ``tau``) that pass the same filters (the ignore band,
    ``mining.ignore_low``); the caller tells them apart by score.

    With ``config.consistency_neighbours`` the samples need ``context`` stacks; the teacher
    then also runs on the neighbouring stacks of the samples that have candidates.

    The teacher runs under ``torch.inference_mode`` (no autograd bookkeeping at all); the
    results are returned as ordinary tensors, which the student's targets may use.
    """
    with torch.inference_mode():
        mined = _mine_samples(teacher, batch, config, device,
                              config.tau if floor is None else min(floor, config.tau))
    return [(boxes.clone(), scores.clone()) for boxes, scores in mined]


def _mine_samples(
    teacher: torch.nn.Module, batch: Sequence[Sample], config: MiningConfig,
    device: torch.device | str, floor: float,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    predictions = teacher([s.image.to(device) for s in batch])
    mined = []
    for sample, p in zip(batch, predictions):
        if sample.complete:
            mined.append((p["boxes"][:0], p["scores"][:0]))
            continue
        boxes, scores = confident_only(p["boxes"], p["scores"], floor)
        if config.contain_thresh < 1.0:  # nested duplicates out first (uld.infer.suppress)
            keep = contained_keep(boxes, scores, config.contain_thresh, config.contain_area_ratio)
            boxes, scores = boxes[keep], scores[keep]
        mined.append(mine(boxes, scores, sample.known.to(device), floor, config.gt_nms_iou,
                          config.gt_contain))
    if not config.consistency_neighbours:
        return mined
    todo = [i for i, (boxes, _) in enumerate(mined) if len(boxes)]
    if not todo:
        return mined
    if any(batch[i].context is None for i in todo):
        raise ValueError("mining.consistency_neighbours needs samples built with context=True")
    stacks = [batch[i].context[:-2] for i in todo] + [batch[i].context[2:] for i in todo]
    around = teacher([s.to(device) for s in stacks])
    for j, i in enumerate(todo):
        neighbours = [(around[j]["boxes"], around[j]["scores"]),
                      (around[j + len(todo)]["boxes"], around[j + len(todo)]["scores"])]
        boxes, scores = mined[i]
        keep = supported(boxes, neighbours, config.consistency_score, config.consistency_iou,
                         config.consistency_neighbours)
        mined[i] = (boxes[keep], scores[keep])
    return mined


def confident_only(
    boxes: torch.Tensor, scores: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's boxes (Tensor[N, 4]) and scores (Tensor[N]) with score >= ``tau``, in
    their order.

    Dropping the others before the containment suppression and GT NMS changes nothing that
    is mined: only boxes >= ``tau`` are mined, and a box below ``tau`` can drop (in
    :func:`contained_keep`, greedy by score) only boxes scoring lower, below ``tau`` too; GT
    NMS and the confidence filter judge each box alone. It spares the suppression's loop over
    the teacher's many weak boxes. (The 3D consistency filter's neighbour boxes, compared at
    ``consistency_score`` < ``tau``, are the neighbour passes' and are not filtered here.)
    """
    keep = confident(scores, tau)
    return boxes[keep], scores[keep]


def mine_truth(batch: Sequence[Sample], config: MiningConfig,
               device: torch.device | str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """What a perfect teacher would mine (``mining.source=truth``): each sample's true boxes
    (``sample.truth``) that survive GT NMS against its known boxes, with score 1; nothing on
    complete samples. Same return as :func:`mine_samples`."""
    mined = []
    for sample in batch:
        if sample.truth is None:
            raise ValueError(f"mining.source=truth needs the complete labels, and slice "
                             f"{sample.volume} z={sample.z} has none (synthetic data only)")
        truth = sample.truth[:0] if sample.complete else sample.truth
        keep = gt_nms(truth, sample.known.to(truth), config.gt_nms_iou, config.gt_contain)
        mined.append((truth[keep].to(device), torch.ones(int(keep.sum()), device=device)))
    return mined


def count_mining(batch: Sequence[Sample], mined: Sequence[torch.Tensor]) -> MiningCounts:
    """Mining counts of a batch against the samples' complete labels where known."""
    total = MiningCounts()
    for sample, boxes in zip(batch, mined):
        if sample.complete:
            continue
        if sample.truth is None:
            total = total + MiningCounts(mined=int(boxes.shape[0]))
        else:
            total = total + mining_counts(boxes.cpu(), sample.known, sample.truth)
    return total


@dataclass(frozen=True)
class MinedSlice:
    """The mined boxes of one training slice (``index`` into the dataset)."""

    index: int
    volume: str
    z: int
    frame: Frame
    boxes: torch.Tensor
    """FloatTensor[K, 4] in the model image's pixels."""
    scores: torch.Tensor

    def slice_boxes(self) -> list[SliceBox]:
        """The boxes in native pixels, for export."""
        native = self.frame.to_native(self.boxes.numpy().astype(np.float64))
        return [SliceBox(self.volume, self.z, tuple(b), float(s))
                for b, s in zip(native.tolist(), self.scores.tolist())]


def harvest(
    teacher: torch.nn.Module, dataset: KeySliceDataset, config: MiningConfig,
    device: torch.device | str = "cpu", batch_size: int = 8, progress: bool = False,
) -> tuple[list[MinedSlice], MiningCounts]:
    """Mine every training slice of ``dataset`` with ``teacher``: the slices that gained
    boxes, and the counts (precision and recall where the truth is known)."""
    teacher.eval()
    found, counts = [], MiningCounts()
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="harvest", unit="batch", disable=not progress, leave=False):
        indices = range(start, min(start + batch_size, len(dataset)))
        batch = [dataset[i] for i in indices]
        mined = [(b.cpu(), s.cpu()) for b, s in mine_samples(teacher, batch, config, device)]
        counts = counts + count_mining(batch, [b for b, _ in mined])
        for index, sample, (boxes, scores) in zip(indices, batch, mined):
            if len(boxes):
                found.append(MinedSlice(index, sample.volume, sample.z, sample.frame, boxes, scores))
    return found, counts


PROFILE_SLICES = 64
"""Training slices scored by :func:`profile_teacher` (a fixed, evenly spaced subset)."""


@torch.no_grad()
def profile_teacher(
    teacher: torch.nn.Module, dataset: KeySliceDataset, device: torch.device | str = "cpu",
    batch_size: int = 16, n_slices: int = PROFILE_SLICES,
) -> ScoreProfile | None:
    """The teacher's :class:`ScoreProfile` on up to ``n_slices`` evenly spaced training slices
    of ``dataset`` whose labels are partial (None without complete labels to compare with)."""
    if dataset.truth is None or len(dataset) == 0:
        return None
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(n_slices, len(dataset))).astype(int))
    was_training = teacher.training
    teacher.eval()
    boxes, scores, known, truth = [], [], [], []
    for start in range(0, len(indices), batch_size):
        batch = [dataset[int(i)] for i in indices[start:start + batch_size]]
        batch = [s for s in batch if not s.complete and s.truth is not None]
        if not batch:
            continue
        for sample, p in zip(batch, teacher([s.image.to(device) for s in batch])):
            boxes.append(p["boxes"].cpu())
            scores.append(p["scores"].cpu())
            known.append(sample.known)
            truth.append(sample.truth)
    teacher.train(was_training)
    return score_profile(boxes, scores, known, truth)
