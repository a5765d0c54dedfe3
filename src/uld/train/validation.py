"""Validation of a detector on the val split with the P3D protocol."""

from __future__ import annotations

import torch
from torch import nn

from uld.config import Config
from uld.data.dataset import DatasetFolder
from uld.data.samples import VolumeStore
from uld.eval.detections import read_gt
from uld.eval.p3d import P3DResult, evaluate_p3d
from uld.infer.predict import predict_volumes


def validate(
    model: nn.Module,
    folder: DatasetFolder,
    store: VolumeStore,
    config: Config,
    device: torch.device | str = "cpu",
    split: str = "val",
    progress: bool = False,
) -> P3DResult:
    """Predict every volume of ``split`` and score the tracklets against its annotations."""
    names = folder.volumes(split)
    detections = predict_volumes(
        model, ((n, store[n]) for n in names), config, device, progress, total=len(names)
    )
    return evaluate_p3d(read_gt(folder.root, split=split), detections, config.eval.iou)
