"""Training samples: a windowed 2.5D stack around an annotated key slice, with its boxes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from uld.config import DataConfig
from uld.data.dataset import Annotations, DatasetFolder, check_boxes_in_volume
from uld.data.preprocess import Frame, prepare_stacks
from uld.data.volume import Volume


class VolumeStore:
    """Reads volumes of a dataset on demand, optionally keeping them in memory."""

    def __init__(self, folder: DatasetFolder, cache: bool = True) -> None:
        self.folder = folder
        self.cache = cache
        self._volumes: dict[str, Volume] = {}

    def __getitem__(self, name: str) -> Volume:
        if name in self._volumes:
            return self._volumes[name]
        volume = self.folder.read_volume(name)
        if self.cache:
            self._volumes[name] = volume
        return volume


@dataclass(frozen=True)
class Sample:
    """One training sample.

    image (FloatTensor[S, H, W]): windowed stack in [0, 1], resampled and cropped as
        ``uld.data.preprocess`` says; the centre channel is slice ``z``.
    boxes (FloatTensor[N, 4]): labeled boxes on slice ``z`` in the image's pixels
        (x1, y1, x2, y2, clipped to the image); N may be 0.
    truth (FloatTensor[M, 4] | None): every true lesion on the slice, when known (diagnostics).
    frame: native slice pixels -> image pixels (``frame.to_native`` maps boxes back).
    """

    image: torch.Tensor
    boxes: torch.Tensor
    truth: torch.Tensor | None
    volume: str
    z: int
    frame: Frame = field(default_factory=Frame)


class KeySliceDataset(torch.utils.data.Dataset):
    """Samples at the key slices of ``labels``; targets are all boxes of ``labels`` on the slice.

    ``truth`` (optional) holds the complete labels used only to measure mining.
    Boxes are checked against each volume's size when it is first read; errors name ``source``
    (the annotation file) and the row.
    """

    def __init__(
        self,
        store: VolumeStore,
        labels: Annotations,
        config: DataConfig,
        truth: Annotations | None = None,
        source: str = "annotations",
    ) -> None:
        self.store = store
        self.source = source
        self.labels = labels
        self.config = config
        self.items = labels.key_slices()
        self.boxes = labels.by_slice()
        self.truth = truth.by_slice() if truth is not None else None
        self._checked: set[str] = set()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        name, z = self.items[index]
        volume = self.store[name]
        if name not in self._checked:
            check_boxes_in_volume(self.labels, name, volume.shape, self.source)
            self._checked.add(name)
        [(image, frame)] = prepare_stacks(volume, np.array([z]), self.config)
        truth = None
        if self.truth is not None:
            truth = _model_boxes(self.truth.get((name, z), np.zeros((0, 4))), frame)
        return Sample(
            image=torch.from_numpy(image),
            boxes=_model_boxes(self.boxes[(name, z)], frame),
            truth=truth,
            volume=name,
            z=z,
            frame=frame,
        )


def _model_boxes(native_xyxy: np.ndarray, frame: Frame) -> torch.Tensor:
    """Native boxes -> FloatTensor[N, 4] in the model image, clipped to it; boxes that lose
    all area (outside a body crop) are dropped."""
    boxes = frame.to_model(native_xyxy)
    height, width = frame.shape_yx
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return torch.as_tensor(boxes[keep], dtype=torch.float32).reshape(-1, 4)


def collate(samples: list[Sample]) -> list[Sample]:
    """Batches stay lists: images may differ in size, and box counts always do."""
    return samples
