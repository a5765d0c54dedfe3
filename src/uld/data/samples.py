"""Training samples: a windowed 2.5D stack around an annotated key slice, with its boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from uld.config import DataConfig
from uld.data.dataset import Annotations, DatasetFolder, check_boxes_in_volume
from uld.data.stack import slice_stacks, window
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


def stack_image(volume: Volume, centres: np.ndarray, config: DataConfig) -> np.ndarray:
    """Windowed stacks ``(K, S, Y, X)`` float32 in [0, 1] around ``centres`` of ``volume``."""
    stacks = slice_stacks(
        volume.hu, centres, volume.spacing_xyz[2], config.slice_spacing_mm, config.num_slices
    )
    return window(stacks, *config.window_hu)


@dataclass(frozen=True)
class Sample:
    """One training sample.

    image (FloatTensor[S, H, W]): windowed stack in [0, 1]; the centre channel is slice ``z``.
    boxes (FloatTensor[N, 4]): labeled boxes on slice ``z`` (x1, y1, x2, y2 pixels); N may be 0.
    truth (FloatTensor[M, 4] | None): every true lesion on the slice, when known (diagnostics).
    """

    image: torch.Tensor
    boxes: torch.Tensor
    truth: torch.Tensor | None
    volume: str
    z: int


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
        image = stack_image(volume, np.array([z]), self.config)[0]
        truth = None
        if self.truth is not None:
            truth = torch.as_tensor(
                self.truth.get((name, z), np.zeros((0, 4))), dtype=torch.float32
            ).reshape(-1, 4)
        return Sample(
            image=torch.from_numpy(image),
            boxes=torch.as_tensor(self.boxes[(name, z)], dtype=torch.float32).reshape(-1, 4),
            truth=truth,
            volume=name,
            z=z,
        )


def collate(samples: list[Sample]) -> list[Sample]:
    """Batches stay lists: images may differ in size, and box counts always do."""
    return samples
