"""Hard negatives (P-, docs/method.md): confident detections on fully annotated volumes that match
no lesion.

A detection on slice z is a hard negative when its score is at least ``min_score`` and it
overlaps no ground-truth box on slices z - ``z_margin`` .. z + ``z_margin`` with IoU >=
``match_iou`` (Lesion Harvester's volumes carry boxes on some slices of each lesion only, so a
detection one slice away from a drawn box is still on that lesion). Of those, the
``per_volume`` highest scoring are kept (Lesion Harvester released 7,440 from 744 volumes: 10
each).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou
from tqdm import tqdm

from uld.config import Config
from uld.data.annotations import GroundTruth
from uld.data.dataset import DatasetFolder
from uld.data.slice_boxes import SliceBox, write_slice_boxes
from uld.data.sources import ScanSource
from uld.infer.link import SliceDetections
from uld.infer.predict import detect_slices
from uld.outdir import check_replaceable, staged_folder


@dataclass(frozen=True)
class NegativeRule:
    """What counts as a hard negative (module docstring)."""

    min_score: float = 0.5
    match_iou: float = 0.3
    z_margin: int = 2
    per_volume: int = 10


def hard_negatives(
    volume: str,
    detections: Sequence[SliceDetections],
    truth: Sequence[tuple[int, np.ndarray]],
    rule: NegativeRule = NegativeRule(),
) -> list[SliceBox]:
    """Hard negatives of one fully annotated volume.

    detections: per-slice boxes (native pixels) and scores; truth: ``[(z, box[4]), ...]``
    every lesion box of the volume, same pixels. Returns at most ``rule.per_volume`` boxes,
    highest score first.
    """
    gt_z = np.array([z for z, _ in truth], dtype=np.int64)
    gt_boxes = torch.as_tensor(np.array([b[:4] for _, b in truth], dtype=np.float64).reshape(-1, 4))
    found: list[SliceBox] = []
    for det in detections:
        confident = det.scores >= rule.min_score
        if not confident.any():
            continue
        boxes = torch.as_tensor(det.boxes[confident], dtype=torch.float64)
        scores = det.scores[confident]
        near = np.abs(gt_z - det.z) <= rule.z_margin
        on_lesion = np.zeros(len(scores), dtype=bool)
        if near.any():
            on_lesion = (box_iou(boxes, gt_boxes[near]) >= rule.match_iou).any(dim=1).numpy()
        for box, score in zip(boxes[~on_lesion].tolist(), scores[~on_lesion].tolist()):
            found.append(SliceBox(volume, det.z, tuple(box), float(score)))
    found.sort(key=lambda b: -b.score)
    return found[: rule.per_volume]


HARD_NEGATIVES_PICKLE = "HardNegatives.pkl"
HARD_NEGATIVES_JSON = "hard_negatives.json"


def mine_negatives(
    model: torch.nn.Module,
    config: Config,
    sources: Sequence[ScanSource],
    truth: GroundTruth,
    out_dir: str | Path,
    rule: NegativeRule = NegativeRule(),
    one_based: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``model`` over every slice of each fully annotated volume in ``sources`` and write
    its hard negatives to ``out_dir`` (``HardNegatives.pkl`` and ``hard_negatives.json``,
    :mod:`uld.data.slice_boxes`). ``truth`` holds every lesion box of those volumes, 0-based
    native pixels; a source it does not list is refused by name. Returns a summary."""
    missing = [s.name for s in sources if s.name not in truth]
    if missing:
        raise ValueError(f"{missing[0]}: not in the ground truth of the fully annotated volumes "
                         f"({len(missing)} such volumes)")
    out = Path(out_dir)
    check_replaceable(Path(os.path.abspath(out)), False, _earlier_output, "uld mine-negatives")
    found: list[SliceBox] = []
    for source in tqdm(sources, desc="mine negatives", unit="vol", disable=not progress):
        detections = detect_slices(model, source.load(), config, device)
        found += hard_negatives(source.name, detections, truth[source.name], rule)
    meta = {**asdict(rule), "volumes": len(sources)}
    with staged_folder(out, False, _earlier_output, "uld mine-negatives") as stage:
        write_slice_boxes(found, stage / HARD_NEGATIVES_PICKLE, stage / HARD_NEGATIVES_JSON,
                          "hard_negatives", meta, one_based, volumes=[s.name for s in sources])
    return {"volumes": len(sources), "hard_negatives": len(found),
            "json": str(out / HARD_NEGATIVES_JSON), "pickle": str(out / HARD_NEGATIVES_PICKLE)}


def _earlier_output(folder: Path) -> bool:
    """Whether ``folder`` holds only an earlier ``uld mine-negatives`` output (replaceable)."""
    return {p.name for p in folder.iterdir()} <= {HARD_NEGATIVES_PICKLE, HARD_NEGATIVES_JSON}


def pool_truth(root: str | Path, truth_file: str = "annotations_full.csv") -> GroundTruth:
    """Every lesion box of the ``negatives`` volumes of a dataset folder: from ``truth_file``
    when the folder has it (the synthetic generator's every-slice boxes), else from
    ``annotations.csv``. Volumes without boxes are listed with none."""
    folder = DatasetFolder(root)
    names = folder.volumes("negatives")
    if not names:
        raise ValueError(f"{folder.root}: splits.csv has no 'negatives' volumes (fully annotated "
                         "training volumes) to mine hard negatives from")
    table = folder.annotations(truth_file if folder.has(truth_file) else "annotations.csv")
    table = table.for_volumes(names)
    truth: GroundTruth = {name: [] for name in names}
    for name, z, box in zip(table.volume, table.z, table.boxes):
        truth[str(name)].append((int(z), box))
    return truth
