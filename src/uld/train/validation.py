"""Validation of a detector on the val split with the P3D protocol."""

from __future__ import annotations

import torch
from torch import nn

from uld.config import Config
from uld.data.annotations import GroundTruth
from uld.data.sources import VolumeStore
from uld.eval.p3d import P3DResult, evaluate_p3d
from uld.infer.predict import predict_volumes


def validate(
    model: nn.Module,
    store: VolumeStore,
    gt: GroundTruth,
    config: Config,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> P3DResult:
    """Predict every volume of ``gt`` (read once by the caller with ``read_gt``) and score the
    tracklets against its boxes."""
    detections = predict_volumes(
        model, ((n, store[n]) for n in gt), config, device, progress, total=len(gt)
    )
    return evaluate_p3d(gt, detections, config.eval.iou)
