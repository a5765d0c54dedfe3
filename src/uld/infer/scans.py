"""``uld predict`` end to end: which scans to read, and what to write for each.

Inputs are :class:`uld.data.sources.ScanSource` values (file, DICOM folder, dataset split or
DeepLesion sub-volumes), each read only when its turn comes.

Outputs in ``out_dir`` (:func:`predict_scans`): per volume ``<name>.lesions.json``,
``<name>.lesions.csv``, ``slicer/<name>.lesion-<id>.mrk.json`` and
``overlays/<name>.lesion-<id>.png`` for lesions scoring at least ``min_score``
(:mod:`uld.infer.export`), and with ``dicom_sr`` a DICOM SR ``<name>.sr.dcm`` of the same lesions
per DICOM series (:mod:`uld.infer.dicom_sr`); over all volumes ``lesions.csv``, and ``detections.json`` with
every tracklet (all scores, for evaluation), written last so that its presence means the
prediction finished.
"""

from __future__ import annotations

import glob
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from uld.config import Config
from uld.data.annotations import DETECTIONS_FILENAME, write_detections_json
from uld.data.sources import ScanSource
from uld.infer.dicom_sr import SR_SUFFIX, series_files, write_dicom_sr
from uld.infer.export import lesions_from_tracklets, write_summary_csv, write_volume_outputs
from uld.infer.predict import detect_slices, find_lesions
from uld.outdir import check_out_folder, make_stage, merge_into, partial_sibling


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
    dicom_sr: bool = False,
) -> dict[str, Any]:
    """Detect and link lesions in every source and write the outputs (module docstring).

    ``dicom_sr``: every source must be a DICOM series (checked before anything is predicted).
    Everything is written into a temporary sibling of ``out_dir`` and merged in only when every
    source has been read and predicted (:func:`uld.outdir.merge_into`): a bad scan, a full disk
    or Ctrl-C leaves an earlier prediction in ``out_dir`` as it was. Earlier outputs of the
    volumes predicted again are replaced, ``detections.json`` last.

    Returns a summary: volumes, slices, lesions written, tracklets, seconds, slices per second.
    """
    if not sources:
        raise ValueError("nothing to predict: give scan files/folders, --data or --deeplesion")
    _unique(sources)
    if dicom_sr:
        for source in sources:
            series_files(source.origin)
    out = Path(out_dir)
    check_out_folder(out)
    stage = partial_sibling(out)
    make_stage(stage, out)
    try:
        summary = _predict_into(model, config, sources, stage, device, min_score, overlays,
                                max_overlays, progress, dicom_sr)
        stale = [f"{folder}/{glob.escape(s.name)}.lesion-*{suffix}"
                 for s in sources for folder, suffix in (("slicer", ".mrk.json"), ("overlays", ".png"))]
        stale += [f"{glob.escape(s.name)}{SR_SUFFIX}" for s in sources]  # an SR never outlives its JSON
        merge_into(stage, out, last=["lesions.csv", DETECTIONS_FILENAME], stale=stale)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    summary["detections"] = str(out / DETECTIONS_FILENAME)
    return summary


def _predict_into(
    model: nn.Module, config: Config, sources: Sequence[ScanSource], out: Path,
    device: torch.device | str, min_score: float, overlays: bool, max_overlays: int,
    progress: bool, dicom_sr: bool,
) -> dict[str, Any]:
    """The work of :func:`predict_scans` (whose arguments it takes, checked), written into the
    empty folder ``out`` (the stage). Returns the summary."""
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
        if dicom_sr:
            write_dicom_sr(source.name, volume, lesions[source.name], source.origin,
                           out / f"{source.name}{SR_SUFFIX}")
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
