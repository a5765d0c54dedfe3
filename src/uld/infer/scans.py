"""``uld predict`` end to end: which scans to read, and what to write for each.

Inputs (each becomes a named :class:`ScanSource`, read only when its turn comes):

- a NIfTI (or other SimpleITK) file, or a folder holding one DICOM series: read with
  :func:`uld.data.volume.read_scan` (axial LPS); the name is the file's stem or the folder's;
- the volumes of a split of a dataset folder (generic format v1), by their names;
- DeepLesion sub-volumes (``<folder>_<first:03d>-<last:03d>``) of a DeepLesion root, by name,
  or all sub-volumes of one set of the paper's split (``val``, ``test``, ``negatives``).

Outputs in ``out_dir`` (:func:`predict_scans`): per volume ``<name>.lesions.json``,
``<name>.lesions.csv``, ``slicer/<name>.lesion-<id>.mrk.json`` and
``overlays/<name>.lesion-<id>.png`` for lesions scoring at least ``min_score``
(:mod:`uld.infer.export`); over all volumes ``lesions.csv``, and ``detections.json`` with
every tracklet (all scores, for evaluation), written last so that its presence means the
prediction finished.
"""

from __future__ import annotations

import glob
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from uld.config import Config
from uld.data.volume import Volume, read_scan
from uld.eval.detections import DETECTIONS_FILENAME, read_gt, write_detections_json
from uld.infer.export import lesions_from_tracklets, write_summary_csv, write_volume_outputs
from uld.infer.predict import detect_slices, find_lesions
from uld.outdir import check_out_folder, make_stage, merge_into, partial_sibling


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
    from uld.data.dataset import DatasetFolder

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
    from uld.data.deeplesion import HARVESTER_FILES, DeepLesionImages, read_dl_info, spacing_by_folder
    from uld.data.sources import DeepLesionVolumes

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


def _unique(sources: Sequence[ScanSource]) -> None:
    seen: dict[str, str] = {}
    for source in sources:
        if source.name in seen:
            raise ValueError(
                f"two inputs would write the same outputs {source.name!r}: {seen[source.name]} "
                f"and {source.origin}"
            )
        seen[source.name] = source.origin


def predict_scans(
    model: nn.Module,
    config: Config,
    sources: Sequence[ScanSource],
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    min_score: float = 0.5,
    overlays: bool = True,
    max_overlays: int = 20,
    progress: bool = True,
) -> dict[str, Any]:
    """Detect and link lesions in every source and write the outputs (module docstring).

    Everything is written into a temporary sibling of ``out_dir`` and merged in only when every
    source has been read and predicted (:func:`uld.outdir.merge_into`): a bad scan, a full disk
    or Ctrl-C leaves an earlier prediction in ``out_dir`` as it was. Earlier outputs of the
    volumes predicted again are replaced, ``detections.json`` last.

    Returns a summary: volumes, slices, lesions written, tracklets, seconds, slices per second.
    """
    if not sources:
        raise ValueError("nothing to predict: give scan files/folders, --data or --deeplesion")
    _unique(sources)
    out = Path(out_dir)
    check_out_folder(out)
    stage = partial_sibling(out)
    make_stage(stage, out)
    try:
        summary = _predict_into(model, config, sources, stage, device, min_score, overlays,
                                max_overlays, progress)
        stale = [f"{folder}/{glob.escape(s.name)}.lesion-*{suffix}"
                 for s in sources for folder, suffix in (("slicer", ".mrk.json"), ("overlays", ".png"))]
        merge_into(stage, out, last=["lesions.csv", DETECTIONS_FILENAME], stale=stale)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    summary["detections"] = str(out / DETECTIONS_FILENAME)
    return summary


def _predict_into(
    model: nn.Module,
    config: Config,
    sources: Sequence[ScanSource],
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    min_score: float = 0.5,
    overlays: bool = True,
    max_overlays: int = 20,
    progress: bool = True,
) -> dict[str, Any]:
    """Detect and link lesions in every source and write the outputs (module docstring).

    Returns a summary: volumes, slices, lesions written, tracklets, seconds, slices per second.
    """
    if not sources:
        raise ValueError("nothing to predict: give scan files/folders, --data or --deeplesion")
    _unique(sources)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / DETECTIONS_FILENAME
    detections, lesions, slices, seconds = {}, {}, 0, 0.0
    bar = tqdm(sources, desc="predict", unit="vol", disable=not progress)
    for source in bar:
        bar.set_postfix_str(source.name)
        volume = source.load()
        start = time.perf_counter()
        tracklets, merged = find_lesions(detect_slices(model, volume, config, device), config.infer)
        seconds += time.perf_counter() - start
        slices += volume.shape[0]
        detections[source.name] = tracklets
        lesions[source.name] = lesions_from_tracklets(tracklets, volume, min_score, name=source.name,
                                                      merged=merged)
        write_volume_outputs(source.name, volume, lesions[source.name], out, overlays=overlays,
                             max_overlays=max_overlays, source=source.origin)
    write_summary_csv(lesions, out / "lesions.csv")
    write_detections_json(detections, final)
    return {
        "volumes": len(sources),
        "slices": slices,
        "tracklets": sum(len(t) for t in detections.values()),
        "lesions_written": sum(len(v) for v in lesions.values()),
        "min_score": min_score,
        "seconds": seconds,
        "slices_per_second": slices / seconds if seconds > 0 else None,
        "detections": str(final),
    }
