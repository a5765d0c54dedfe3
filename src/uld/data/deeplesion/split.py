"""The paper's data split (:func:`paper_split`): train key slices, the fully annotated val, test and
hard-negative sub-volumes of Lesion Harvester's files, with their 1-based boxes made 0-based."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uld.data.annotations import EvalFormatError, GroundTruth, read_gt
from uld.data.deeplesion.dl_info import DLInfo, OnError, check_on_error
from uld.data.deeplesion.images import DeepLesionImages
from uld.data.subvolume import (
    DeepLesionError,
    parse_subvolume_name,
    subvolume_name,
)

HARVESTER_FILES = {
    "val": "Revised-Train100.pkl",
    "test": "Revised-Test1071.pkl",
    "negatives": "Revised-Train744.pkl",
}
"""Lesion Harvester's fully annotated sub-volumes: the paper's validation and test sets and the
training sub-volumes used for hard negatives (P-)."""


@dataclass(frozen=True)
class PaperSplit:
    """The data split of Bai & Xia (2023), in one convention.

    Each set maps a sub-volume name to its boxes ``[(z, box), ...]``: ``z`` the offset from
    the sub-volume's first slice, ``box`` ``ndarray[4]`` float64 ``x1, y1, x2, y2`` **0-based**
    pixels (DL_info / Lesion Harvester value - 1, clipped below at 0).

    train: official training split (code 1), non-noisy key-slice boxes of DL_info, minus every
        sub-volume of ``val``, ``test`` and ``negatives`` (partial labels).
    val: the 100 sub-volumes of ``Revised-Train100.pkl`` (fully annotated).
    test: the 1,071 sub-volumes of ``Revised-Test1071.pkl`` (fully annotated; one has no box).
    negatives: the 744 sub-volumes of ``Revised-Train744.pkl`` (fully annotated training
        sub-volumes for hard-negative mining, P-).
    removed_from_train: train sub-volumes dropped because they are fully annotated elsewhere.
    skipped: one-line messages of what ``on_error="skip"`` left out.
    """

    train: GroundTruth
    val: GroundTruth
    test: GroundTruth
    negatives: GroundTruth
    removed_from_train: tuple[str, ...] = ()
    skipped: list[str] = field(default_factory=list)

    def sets(self) -> dict[str, GroundTruth]:
        return {"train": self.train, "val": self.val, "test": self.test, "negatives": self.negatives}

    def counts(self) -> dict[str, dict[str, int]]:
        """``{set: {"volumes": n, "boxes": n}}``."""
        return {k: {"volumes": len(v), "boxes": sum(len(b) for b in v.values())}
                for k, v in self.sets().items()}


def to_zero_based(box: np.ndarray) -> np.ndarray:
    """A Lesion Harvester box (1-based, as DL_info) as ``[x1, y1, x2, y2]`` 0-based pixels,
    clamped at 0 (a 1-based coordinate below 1 would otherwise fall outside the image)."""
    return np.maximum(np.asarray(box, dtype=np.float64)[:4] - 1.0, 0.0)


def paper_split(
    dl_info: DLInfo,
    images: DeepLesionImages | None,
    harvester_dir: str | Path,
    on_error: OnError = "stop",
) -> PaperSplit:
    """Build the paper's split (see :class:`PaperSplit`).

    harvester_dir: the folder holding ``Revised-Train100.pkl``, ``Revised-Test1071.pkl`` and
        ``Revised-Train744.pkl`` (read with :func:`uld.data.annotations.read_gt`).
    images: when given, sub-volumes come from the PNG files: a training key slice belongs to the
        run of files that holds it (which must equal DL_info's ``Slice_range``), and every
        Lesion Harvester sub-volume must be a run of files. A missing series folder, a missing
        slice or a disagreeing run is an error that ``on_error`` stops at or skips (with a
        message). When ``None``, sub-volumes come from ``Slice_range`` and the pickle names.
    Noisy rows are left out even when ``dl_info`` kept them.
    """
    check_on_error(on_error)
    harvester_dir = Path(harvester_dir)
    skipped: list[str] = []

    def fail(message: str) -> None:
        if on_error == "stop":
            raise DeepLesionError(message)
        skipped.append(message)

    full: dict[str, GroundTruth] = {}
    owner: dict[str, str] = {}
    for which, filename in HARVESTER_FILES.items():
        path = harvester_dir / filename
        try:
            raw = read_gt(path)
        except EvalFormatError as exc:
            raise DeepLesionError(str(exc)) from None
        kept: GroundTruth = {}
        for name, boxes in raw.items():
            try:
                folder, first, last = parse_subvolume_name(name)
            except DeepLesionError as exc:
                raise DeepLesionError(f"{path}: {exc}") from None
            if name in owner:
                raise DeepLesionError(f"{path}: sub-volume {name} is also in {HARVESTER_FILES[owner[name]]}")
            owner[name] = which
            bad_z = [z for z, _ in boxes if z > last - first]
            if bad_z:
                fail(f"{path}: sub-volume {name}: box on z = {bad_z[0]} beyond its {last - first + 1} slices")
                continue
            if images is not None:
                if not images.has_folder(folder):
                    fail(f"{images.images / folder}: series folder of {name} ({which}) not found")
                    continue
                if (first, last) not in images.subvolumes(folder):
                    fail(f"{images.images / folder}: {name} ({which}) is not a run of the slice files "
                         f"(runs {images.subvolumes(folder)})")
                    continue
            kept[name] = [(z, to_zero_based(b)) for z, b in boxes]
        full[which] = kept

    train: GroundTruth = {}
    removed: dict[str, None] = {}
    for rec in dl_info.records:
        if rec.split != 1 or rec.noisy:
            continue
        where = f"{dl_info.path}, row {rec.row}"
        first, last = rec.slice_range
        name = subvolume_name(rec.folder, first, last)
        if name in owner:
            removed[name] = None
            continue
        if images is not None:
            if not images.has_folder(rec.folder):
                fail(f"{where}: series folder {images.images / rec.folder} not found")
                continue
            try:
                run = images.subvolume_of(rec.folder, rec.key_slice)
            except DeepLesionError as exc:
                fail(f"{where}: {exc}")
                continue
            if run != rec.slice_range:
                fail(f"{where}: Slice_range {rec.slice_range} of {rec.file_name} disagrees with the "
                     f"slice files' run {run}")
                continue
        train.setdefault(name, []).append((rec.key_slice - first, rec.box.copy()))
    for boxes in train.values():
        boxes.sort(key=lambda item: item[0])
    return PaperSplit(train=train, val=full["val"], test=full["test"], negatives=full["negatives"],
                      removed_from_train=tuple(removed), skipped=skipped)
