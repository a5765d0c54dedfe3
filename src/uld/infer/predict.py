"""Volume -> per-slice 2D detections (batched) -> nested duplicates suppressed -> 3D tracklets
-> tracklets of one lesion merged."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from uld.config import Config, InferConfig, config_from_dict, upgrade_saved_config
from uld.data.annotations import Tracklet
from uld.data.preprocess import prepare_stacks
from uld.data.volume import Volume
from uld.infer.kalman import link_kalman
from uld.infer.link import SliceDetections, link_by_iou
from uld.infer.smooth import smooth_tracklets
from uld.infer.suppress import merge_tracklets, suppress_slices, trim_tracklet_ends
from uld.model.build import LesionDetector, build_detector
from uld.model.files import read_model_file
from uld.model.precision import autocast, check_amp


@torch.no_grad()
def detect_slices(
    model: nn.Module,
    volume: Volume,
    config: Config,
    device: torch.device | str = "cpu",
    slices: Iterable[int] | None = None,
) -> list[SliceDetections]:
    """Run ``model`` (eval mode) on every slice of ``volume`` (or on ``slices``), batched.

    Each slice is the centre of a 2.5D stack prepared exactly as in training
    (:func:`uld.data.preprocess.prepare_stacks`); boxes are returned in the volume's own
    pixels (x = column, y = row of ``volume.hu[z]``).
    """
    check_amp(config.infer.amp, device, "infer.amp")
    model.eval()
    zs = np.arange(volume.shape[0]) if slices is None else np.asarray(list(slices), dtype=int)
    out: list[SliceDetections] = []
    for start in range(0, len(zs), config.infer.batch_size):
        batch_z = zs[start : start + config.infer.batch_size]
        prepared = prepare_stacks(volume, batch_z, config.data)
        images = [torch.from_numpy(image).to(device) for image, _ in prepared]
        with autocast(config.infer.amp, device):  # infer.amp; "off": fp32 as trained
            preds = model(images)
        for z, (_, frame), pred in zip(batch_z, prepared, preds):
            out.append(
                SliceDetections(
                    z=int(z),
                    boxes=frame.to_native(pred["boxes"].float().cpu().numpy().astype(np.float64)),
                    scores=pred["scores"].float().cpu().numpy().astype(np.float64),
                )
            )
    return out


def link_slices(slices: list[SliceDetections], config: InferConfig) -> list[Tracklet]:
    """Tracklets from per-slice detections with the linker ``config.linker`` names."""
    if config.linker == "overlap":
        return link_by_iou(slices, config.overlap.iou_threshold, config.overlap.max_gap)
    return link_kalman(slices, config.kalman)


def find_lesions(slices: list[SliceDetections], config: InferConfig) -> tuple[list[Tracklet], list[int]]:
    """Per-slice detections -> one tracklet per lesion: containment suppression on each slice
    (``infer.contain_thresh``), the linker (``infer.linker``), then 3D merging of tracklets
    (``infer.merge_thresh``, ``infer.merge_gap``), the trimming of each lesion's weak end
    boxes (``infer.trim_thresh``; see :mod:`uld.infer.suppress`) and the smoothing of its boxes
    along z (``infer.smooth_slices``, ``infer.smooth_ends``, :mod:`uld.infer.smooth`).

    Returns ``(tracklets, counts)``: per lesion, how many linked tracklets were merged into it
    (1: none besides its own). With the contain and merge thresholds at 1, the trim threshold
    and the smoothing at 0 this is :func:`link_slices` exactly.
    """
    slices = suppress_slices(slices, config.contain_thresh, config.contain_area_ratio)
    lesions, counts = merge_tracklets(link_slices(slices, config), config.merge_thresh,
                                      config.merge_gap, config.contain_area_ratio)
    lesions = trim_tracklet_ends(lesions, config.trim_thresh)
    return smooth_tracklets(lesions, config.smooth_slices, config.smooth_ends), counts


def predict_volume(
    model: nn.Module, volume: Volume, config: Config, device: torch.device | str = "cpu"
) -> list[Tracklet]:
    """3D lesion candidates of one volume as tracklets ``[(z, [x1, y1, x2, y2, score]), ...]``
    (:func:`detect_slices`, then :func:`find_lesions`)."""
    return find_lesions(detect_slices(model, volume, config, device), config.infer)[0]


def predict_volumes(
    model: nn.Module,
    volumes: Iterable[tuple[str, Volume]],
    config: Config,
    device: torch.device | str = "cpu",
    progress: bool = True,
    total: int | None = None,
) -> dict[str, list[Tracklet]]:
    """``{volume name: tracklets}`` for named volumes, with a progress bar."""
    detections: dict[str, list[Tracklet]] = {}
    for name, volume in tqdm(
        volumes, total=total, desc="predict", unit="vol", disable=not progress, leave=False
    ):
        detections[name] = predict_volume(model, volume, config, device)
    return detections


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[LesionDetector, Config]:
    """A trained detector (the teacher) and its config, from a run folder or a ``.pt`` file.

    A run folder gives its ``best.pt`` (the best validated teacher) or else ``model.pt``.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / "best.pt", path / "model.pt"]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{path}: no best.pt or model.pt in this run folder")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    state = read_model_file(path)  # every unreadable file is one ValueError naming it
    try:
        config = config_from_dict(upgrade_saved_config(state["config"]))
    except ValueError as exc:
        raise ValueError(f"{path}: its saved config is not valid ({exc})") from None
    # The weights come from the file: do not look for the ImageNet start again.
    model = build_detector(replace(config.model, pretrained=""), config.data.num_slices)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ValueError(f"{path}: the weights do not fit the model its config describes ({first})") from None
    return model.to(device).eval(), config
