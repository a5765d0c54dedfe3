"""Where volumes come from: a generic dataset folder, a DeepLesion tree, or scan files.

:func:`open_training_data` turns ``config.data`` into what the training loop needs: volumes by
name, the (partial) training boxes, the complete boxes where known (mining diagnostics), and
the fully annotated validation set. Both formats end up in the same types, so everything
downstream (samples, mining, validation) is blind to where the data came from.

``data.format: folder`` (the generic format v1, README): train = the ``train`` split's rows
of ``data.annotations``; truth = ``data.truth`` when the file exists; val = the ``val`` split.

``data.format: deeplesion`` (the paper's split, :func:`uld.data.deeplesion.paper_split`):
train = the official training split's key-slice boxes of ``DL_info.csv`` (noisy lesions left
out) minus the fully annotated sub-volumes; val = the 100 sub-volumes of
``Revised-Train100.pkl``; test = the 1,071 of ``Revised-Test1071.pkl``; the 744 of
``Revised-Train744.pkl`` are kept apart for hard-negative mining. Volumes are read from the
16-bit PNGs with DL_info's spacing.

Scans to predict (``uld predict``, hard-negative mining) are named :class:`ScanSource` values,
read only when their turn comes: a NIfTI (or other SimpleITK) file or a DICOM series folder
(:func:`scan_sources`), the volumes of a split of a dataset folder (:func:`dataset_sources`),
or DeepLesion sub-volumes by name or by set of the paper's split (:func:`deeplesion_sources`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from uld.config import DataConfig
from uld.data.annotations import GroundTruth, read_gt
from uld.data.dataset import Annotations, DatasetFolder
from uld.data.deeplesion import (
    HARVESTER_FILES,
    DeepLesionImages,
    paper_split,
    read_dl_info,
    spacing_by_folder,
)
from uld.data.slice_boxes import read_slice_boxes
from uld.data.subvolume import DeepLesionError, parse_subvolume_name
from uld.data.volume import Volume, read_scan


class VolumeReader(Protocol):
    def read_volume(self, name: str) -> Volume: ...


class VolumeStore:
    """Reads volumes by name on demand, optionally keeping them in memory."""

    def __init__(self, reader: VolumeReader, cache: bool = True) -> None:
        self.reader = reader
        self.cache = cache
        self._volumes: dict[str, Volume] = {}

    def __getitem__(self, name: str) -> Volume:
        if name in self._volumes:
            return self._volumes[name]
        volume = self.reader.read_volume(name)
        if self.cache:
            self._volumes[name] = volume
        return volume


class DeepLesionVolumes:
    """DeepLesion sub-volumes by name (``<folder>_<first:03d>-<last:03d>``), with DL_info's
    spacing of their series. Slices are read from their PNGs when first indexed, so a training
    sample reads the ~9 slices of its stack, not the whole sub-volume."""

    def __init__(self, images: DeepLesionImages, spacing: dict[str, tuple[float, float, float]]) -> None:
        self.images = images
        self.spacing = spacing

    def read_volume(self, name: str) -> Volume:

        folder = parse_subvolume_name(name)[0]
        if folder not in self.spacing:
            raise DeepLesionError(f"{name}: DL_info.csv has no row for series {folder} (no spacing)")
        return self.images.lazy_subvolume(name, self.spacing[folder])


def annotations_from_gt(gt: GroundTruth, key: bool = True) -> Annotations:
    """An :class:`Annotations` table of the boxes of ``gt`` (``{volume: [(z, box), ...]}``)."""
    rows = [(name, z, box) for name, boxes in gt.items() for z, box in boxes]
    return Annotations(
        volume=np.array([r[0] for r in rows], dtype=object),
        z=np.array([r[1] for r in rows], dtype=np.int64),
        boxes=np.array([np.asarray(r[2], dtype=np.float64)[:4] for r in rows]).reshape(-1, 4),
        key=np.full(len(rows), key, dtype=bool),
    )


@dataclass
class TrainingData:
    """Everything a run reads.

    store: volumes by name. labels: the boxes the student learns from (native pixels, key
    slices marked). truth: complete boxes of the training volumes when known (diagnostics
    only), else None. val: fully annotated validation set (``{volume: [(z, box)]}``) or None.
    negatives: fully annotated training volumes kept apart for hard negatives (may be empty),
    and ``negative_labels`` their boxes as a table (key slices marked).
    complete: volumes trained on with complete labels (the negatives, in a hard-negative
    retraining): no mining there. hard_negatives: ``{(volume, z): boxes[N, 4]}`` forced into
    the background samples (native pixels).
    source: the file the labels came from (for messages). skipped: one-line messages of what
    ``data.on_bad_input: skip`` left out.
    """

    store: VolumeStore
    labels: Annotations
    truth: Annotations | None
    val: GroundTruth | None
    source: str
    negatives: GroundTruth = field(default_factory=dict)
    negative_labels: Annotations | None = None
    complete: set[str] = field(default_factory=set)
    hard_negatives: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def volumes(self) -> Sequence[str]:
        return sorted({str(v) for v in self.labels.volume})


def _under(root: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else root / path


def open_training_data(config: DataConfig) -> TrainingData:
    """The data of a run, as ``config`` (``data.format``, ``data.root``, ...) says."""
    if not config.root:
        raise ValueError("no dataset: pass --data DIR (or --set data.root=DIR)")
    data = _deeplesion(config) if config.format == "deeplesion" else _folder(config)
    if config.hard_negatives:
        data = with_hard_negatives(data, config.hard_negatives)
    return data


def with_hard_negatives(data: TrainingData, path: str | Path) -> TrainingData:
    """``data`` set up for hard-negative retraining (P-): the ``negatives`` volumes join the
    labels with all their boxes, are marked complete, and carry the hard negatives of ``path``
    (a ``hard_negatives.json``). A hard negative on a volume outside the pool is an error."""
    if not data.negatives or data.negative_labels is None:
        raise ValueError(f"data.hard_negatives = {path}: the dataset has no 'negatives' volumes "
                         "(fully annotated training volumes) to retrain with")
    hard = read_slice_boxes(path)
    outside = sorted({v for v, _ in hard if v not in data.negatives})
    if outside:
        raise ValueError(f"{path}: volume {outside[0]!r} is not a 'negatives' volume of the dataset "
                         f"({len(outside)} such volumes)")
    return dataclasses.replace(
        data, labels=data.labels.concat(data.negative_labels), complete=set(data.negatives),
        hard_negatives=hard,
    )


def _folder(config: DataConfig) -> TrainingData:
    folder = DatasetFolder(config.root)
    names = folder.volumes("train")
    skipped: list[str] = []
    table = folder.annotations(config.annotations, config.on_bad_input, skipped)
    labels = table.for_volumes(names)
    truth = None
    if folder.has(config.truth):
        truth = folder.annotations(config.truth, config.on_bad_input, skipped).for_volumes(names)
    val = read_gt(folder.root, split="val") if folder.volumes("val") else None
    pool = folder.volumes("negatives")
    return TrainingData(
        store=VolumeStore(folder, cache=config.cache_volumes), labels=labels, truth=truth, val=val,
        source=str(folder.root / config.annotations), skipped=skipped,
        negatives=read_gt(folder.root, split="negatives") if pool else {},
        negative_labels=table.for_volumes(pool) if pool else None,
    )


def _deeplesion(config: DataConfig) -> TrainingData:
    root = Path(config.root)
    info_path = _under(root, config.dl_info)
    dl_info = read_dl_info(info_path, drop_noisy=config.drop_noisy, on_error=config.on_bad_input)
    images = DeepLesionImages(root)
    split = paper_split(dl_info, images, _under(root, config.harvester_dir), config.on_bad_input)
    store = VolumeStore(DeepLesionVolumes(images, spacing_by_folder(dl_info)), cache=config.cache_volumes)
    return TrainingData(
        store=store, labels=annotations_from_gt(split.train), truth=None, val=split.val or None,
        source=str(info_path), negatives=split.negatives,
        negative_labels=annotations_from_gt(split.negatives), skipped=[*dl_info.skipped, *split.skipped],
    )


@dataclass(frozen=True)
class ScanSource:
    """A volume to predict: its output name, where it comes from, and how to read it."""

    name: str
    origin: str
    load: Callable[[], Volume]


_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".dcm")


def scan_name(path: Path) -> str:
    """Output name of a scan file or DICOM folder: its name without the image suffix."""
    for suffix in _SUFFIXES:
        if path.name.lower().endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return path.name


def scan_sources(paths: Sequence[str | Path]) -> list[ScanSource]:
    """NIfTI files and DICOM series folders."""
    sources = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        sources.append(ScanSource(scan_name(path), str(path), lambda p=path: read_scan(p)))
    return sources


def dataset_sources(root: str | Path, split: str | None) -> list[ScanSource]:
    """The volumes of one split (or all) of a dataset folder."""
    folder = DatasetFolder(root)
    return [
        ScanSource(name, str(folder.volume_path(name)), lambda n=name: folder.read_volume(n))
        for name in folder.volumes(split)
    ]


def deeplesion_sources(
    root: str | Path, names: Sequence[str] = (), paper_set: str | None = None,
    dl_info: str = "DL_info.csv", harvester_dir: str = "lesion_harvester",
) -> list[ScanSource]:
    """DeepLesion sub-volumes by name, and/or every sub-volume of one set of the paper's split
    (``val``, ``test``, ``negatives``: the names in Lesion Harvester's ``Revised-*.pkl``)."""
    root = Path(root)
    info = read_dl_info(root / dl_info if not Path(dl_info).is_absolute() else Path(dl_info))
    images = DeepLesionImages(root)
    volumes = DeepLesionVolumes(images, spacing_by_folder(info))
    wanted = list(names)
    if paper_set is not None:
        if paper_set not in HARVESTER_FILES:
            raise ValueError(f"paper set {paper_set!r} is not one of {sorted(HARVESTER_FILES)}")
        harvester = Path(harvester_dir) if Path(harvester_dir).is_absolute() else root / harvester_dir
        wanted += list(read_gt(harvester / HARVESTER_FILES[paper_set]))
    return [
        ScanSource(name, f"{images.images}/{name}", lambda n=name: volumes.read_volume(n))
        for name in wanted
    ]
