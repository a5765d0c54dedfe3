"""The final teacher's mined lesions over the training set, written into the run folder.

After a mining run, :func:`export_mined` mines every training slice once more with the final
teacher and writes ``MinedLesions.pkl`` and ``mined_lesions.json`` (:mod:`uld.data.slice_boxes`)
and the review gallery ``mined_lesions.png`` (:mod:`uld.mining.gallery`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from uld.config import Config
from uld.data.samples import KeySliceDataset
from uld.data.slice_boxes import write_slice_boxes
from uld.mining.gallery import mined_gallery
from uld.mining.harvest import harvest

MINED_PICKLE = "MinedLesions.pkl"
MINED_JSON = "mined_lesions.json"
MINED_GALLERY = "mined_lesions.png"


def export_mined(
    teacher: torch.nn.Module, dataset: KeySliceDataset, config: Config, out: Path,
    device: torch.device | str = "cpu", progress: bool = False,
) -> dict[str, Any]:
    """Mine the whole training set with the final teacher; write ``MinedLesions.pkl``,
    ``mined_lesions.json`` (``uld.data.slice_boxes``) and the gallery ``mined_lesions.png``.
    Returns the counts (precision and recall where the truth is known)."""
    mined, counts = harvest(teacher, dataset, config.mining, device,
                            config.infer.batch_size, progress)
    boxes = [b for m in mined for b in m.slice_boxes()]
    meta = {"tau": config.mining.tau, "gt_nms_iou": config.mining.gt_nms_iou,
            "policy": config.mining.policy, "training_slices": len(dataset)}
    write_slice_boxes(boxes, out / MINED_PICKLE, out / MINED_JSON, "mined_lesions", meta,
                      one_based=config.data.format == "deeplesion")
    mined_gallery(dataset, mined, config, out / MINED_GALLERY)
    return {
        "slices_searched": len(dataset), "slices_with_mined": len(mined), "mined": counts.mined,
        "mined_true": counts.true,
        "precision": None if counts.mined == 0 or counts.missing == 0 else counts.precision,
        "recall": None if counts.missing == 0 else counts.recall,
        "files": [MINED_PICKLE, MINED_JSON, MINED_GALLERY],
    }
