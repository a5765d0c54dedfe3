"""Training samples: a windowed 2.5D stack around an annotated key slice (or one of its
unlabeled neighbours, ``data.unlabeled_neighbours``), with its boxes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from uld.config import DataConfig
from uld.data.dataset import Annotations, DataError, boxes_outside_volume
from uld.data.preprocess import Frame, prepare_stacks
from uld.data.sources import VolumeStore
from uld.data.volume import Volume


@dataclass(frozen=True)
class Sample:
    """One training sample.

    image (FloatTensor[S, H, W]): windowed stack in [0, 1], resampled and cropped as
        ``uld.data.preprocess`` says; the centre channel is slice ``z``.
    boxes (FloatTensor[N, 4]): labeled boxes on slice ``z`` in the image's pixels
        (x1, y1, x2, y2, clipped to the image); N may be 0.
    truth (FloatTensor[M, 4] | None): every true lesion on the slice, when known (diagnostics).
    frame: native slice pixels -> image pixels (``frame.to_native`` maps boxes back).
    hard_negatives (FloatTensor[H, 4]): boxes to force into the background samples (P-).
    complete: the volume's labels are complete (nothing to mine).
    background: the slice's unboxed area is known background (False on a foreground-only slice,
        the annotation file's ``background`` column: it trains no background there).
    context (FloatTensor[S + 2, H, W] | None): the stack with one more slice at each end (same
        spacing), when the 3D consistency filter needs the neighbouring stacks:
        ``context[1:-1]`` equals ``image``, ``context[:-2]`` and ``context[2:]`` are the stacks
        centred one stack spacing away.
    nearby (FloatTensor[G, 4]): boxes labeled on other slices within ``data.unlabeled_neighbours``
        of ``z``: the lesion probably crosses this slice too, so the regions leave the
        background and are never mined (empty unless that setting is on).
    """

    image: torch.Tensor
    boxes: torch.Tensor
    truth: torch.Tensor | None
    volume: str
    z: int
    frame: Frame = field(default_factory=Frame)
    hard_negatives: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4)))
    complete: bool = False
    background: bool = True
    context: torch.Tensor | None = None
    nearby: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4)))

    @property
    def known(self) -> torch.Tensor:
        """FloatTensor[N + G, 4]: the labeled boxes and the nearby ones, what mining must not
        find again."""
        return torch.cat([self.boxes, self.nearby.to(self.boxes)]) if len(self.nearby) else self.boxes

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Sample:
        """The sample with its tensors on ``device`` (itself when they are there already)."""
        if self.image.device == torch.device(device):
            return self
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)
        return replace(self, image=move(self.image), boxes=move(self.boxes), truth=move(self.truth),
                       hard_negatives=move(self.hard_negatives), context=move(self.context),
                       nearby=move(self.nearby))

    def pin_memory(self) -> Sample:
        """The sample with its tensors in page-locked memory (the DataLoader calls this with
        ``pin_memory=True``), so that :meth:`to` a GPU can be non-blocking."""
        def pin(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.pin_memory()
        return replace(self, image=pin(self.image), boxes=pin(self.boxes), truth=pin(self.truth),
                       hard_negatives=pin(self.hard_negatives), context=pin(self.context),
                       nearby=pin(self.nearby))


class KeySliceDataset(torch.utils.data.Dataset):
    """Samples at the key slices of ``labels``; targets are all boxes of ``labels`` on the slice.

    With ``config.unlabeled_neighbours`` = k > 0 the slices up to k away from each key slice
    that hold no label join them (the key slices repeated 2k times, so that a key slice is
    drawn about as often as its neighbours together; a neighbour past the volume's end becomes
    its last slice), and each sample carries as ``nearby`` the boxes labeled within k slices.

    ``truth`` (optional) holds the complete labels used only to measure mining.
    ``hard_negatives`` (``{(volume, z): boxes[N, 4]}``, native pixels) adds their slices as
    samples and attaches the boxes; volumes in ``complete`` are marked so. ``context`` builds
    ``Sample.context`` (for the 3D consistency filter).
    Boxes are checked against each volume's size when it is first read; errors name ``source``
    (the annotation file) and the row. With ``config.on_bad_input == "skip"`` a box outside
    its image is dropped and an unreadable volume's samples are replaced by the next readable
    one; each message is kept once in ``skipped``.
    """

    def __init__(
        self,
        store: VolumeStore,
        labels: Annotations,
        config: DataConfig,
        truth: Annotations | None = None,
        source: str = "annotations",
        hard_negatives: dict[tuple[str, int], np.ndarray] | None = None,
        complete: set[str] | frozenset[str] = frozenset(),
        context: bool = False,
    ) -> None:
        self.store = store
        self.source = source
        self.labels = labels
        self.config = config
        self.hard = hard_negatives or {}
        self.complete = set(complete)
        self.context = context
        self.items, self.key_items = training_slices(labels, sorted(self.hard),
                                                     config.unlabeled_neighbours)
        """The first ``key_items`` items are the key and extra slices, each once."""
        self.boxes = labels.by_slice()
        self.foreground_only = labels.foreground_only_slices()
        self.truth = truth.by_slice() if truth is not None else None
        self._rows: dict[str, list[int]] = {}
        for i, name in enumerate(labels.volume):
            self._rows.setdefault(str(name), []).append(i)
        for name, _ in self.hard:
            self._rows.setdefault(name, [])
        self._nearby = config.unlabeled_neighbours
        self._checked: set[str] = set()
        self._unreadable: set[str] = set()
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.items)

    def _skip_or_raise(self, message: str) -> None:
        if self.config.on_bad_input != "skip":
            raise DataError(message)
        self.skipped.append(message)

    def _first_use(self, name: str, shape: tuple[int, int, int]) -> None:
        rows = self._rows[name]
        bad = {i: message for i, message in
               boxes_outside_volume(self.labels, name, shape, self.source, rows)}
        for message in bad.values():
            self._skip_or_raise(message)
        for z in {int(self.labels.z[i]) for i in bad}:
            keep = [i for i in rows if self.labels.z[i] == z and i not in bad]
            self.boxes[(name, z)] = self.labels.boxes[keep].reshape(-1, 4)
        if bad:  # a skipped box is gone everywhere, the nearby regions of other slices included
            self._rows[name] = [i for i in rows if i not in bad]
        self._checked.add(name)

    def __getitem__(self, index: int) -> Sample:
        for attempt in range(len(self.items)):
            name, z = self.items[(index + attempt) % len(self.items)]
            if name in self._unreadable:
                continue
            try:
                volume = self.store[name]
            except ValueError as exc:
                self._skip_or_raise(str(exc))
                self._unreadable.add(name)
                continue
            if name not in self._checked:
                self._first_use(name, volume.shape)
            return self._sample(volume, name, min(max(z, 0), volume.shape[0] - 1))
        raise DataError(f"{self.source}: no readable volume left ({len(self._unreadable)} skipped)")

    def _sample(self, volume: Volume, name: str, z: int) -> Sample:
        config = self.config
        if self.context:
            config = replace(config, num_slices=config.num_slices + 2)
        [(stack, frame)] = prepare_stacks(volume, np.array([z]), config)
        stack = torch.from_numpy(stack)
        truth = None
        if self.truth is not None:
            truth = _model_boxes(self.truth.get((name, z), _NO_BOXES), frame)
        return Sample(
            image=stack[1:-1] if self.context else stack,
            boxes=_model_boxes(self.boxes.get((name, z), _NO_BOXES), frame),
            truth=truth,
            volume=name,
            z=z,
            frame=frame,
            hard_negatives=_model_boxes(self.hard.get((name, z), _NO_BOXES), frame),
            complete=name in self.complete,
            background=(name, z) not in self.foreground_only,
            context=stack if self.context else None,
            nearby=_model_boxes(self._nearby_boxes(name, z), frame),
        )

    def _nearby_boxes(self, name: str, z: int) -> np.ndarray:
        """Native boxes labeled on the other slices within ``unlabeled_neighbours`` of z."""
        if not self._nearby:
            return _NO_BOXES
        rows = np.asarray(self._rows[name], dtype=int)
        distance = np.abs(self.labels.z[rows] - z)
        return self.labels.boxes[rows[(distance > 0) & (distance <= self._nearby)]].reshape(-1, 4)


_NO_BOXES = np.zeros((0, 4))


def training_slices(
    labels: Annotations, extra: list[tuple[str, int]], unlabeled_neighbours: int = 0,
) -> tuple[list[tuple[str, int]], int]:
    """The ``(volume, z)`` items of a training epoch and how many of them come first as the key
    slices of ``labels`` and the ``extra`` slices (hard negatives), each once. With
    ``unlabeled_neighbours`` = k > 0 those are repeated 2k times, then come every slice within k
    of a key slice that holds no label (z may fall outside the volume; the dataset clamps it)."""
    base = list(dict.fromkeys([*labels.key_slices(), *extra]))
    if unlabeled_neighbours <= 0:
        return base, len(base)
    labeled = {(str(v), int(z)) for v, z in zip(labels.volume, labels.z)}
    neighbours = dict.fromkeys(
        (name, z + d) for name, z in labels.key_slices()
        for d in range(-unlabeled_neighbours, unlabeled_neighbours + 1)
        if d and (name, z + d) not in labeled)
    return base * (2 * unlabeled_neighbours) + list(neighbours), len(base)


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
