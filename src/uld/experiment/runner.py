"""Train, mine hard negatives and evaluate the runs of an experiment; skip what is done.

Each step leaves one file that marks it done, written last and atomically: ``model.pt``
(training; an interrupted run resumes from ``last.pt``), ``hard_negatives.json`` (mining of
hard negatives) and ``test_p3d.json`` (evaluation). Starting the experiment again redoes only
what is missing; a run folder made with another config is refused, never overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
import yaml

from uld.atomic import write_text
from uld.config import Config, config_differences, config_from_dict, upgrade_saved_config
from uld.data.annotations import GroundTruth, read_detections, read_gt, write_detections_json
from uld.data.dataset import DatasetFolder
from uld.data.sources import VolumeStore, dataset_sources
from uld.data.synth import SynthConfig, format_summary, write_synthetic_dataset
from uld.eval.p3d import evaluate_p3d
from uld.experiment.stats import Interval, bootstrap_volumes, resampled
from uld.infer.predict import load_model, predict_volumes
from uld.mining.negatives import HARD_NEGATIVES_JSON, mine_negatives, pool_truth
from uld.train.loop import train

RESULT_FILE = "test_p3d.json"
TIMING_FILE = "timing.json"


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def ensure_dataset(root: Path, synth: SynthConfig, progress: bool) -> None:
    """Write the synthetic dataset ``synth`` into ``root`` unless it is already there."""
    if (root / "dataset.json").is_file():
        stored = json.loads((root / "dataset.json").read_text()).get("generator", {})
        if stored == json.loads(json.dumps(synth.__dict__)):
            return
        raise FileExistsError(f"{root} holds another dataset: remove it or choose another --out")
    print(format_summary(write_synthetic_dataset(root, synth, progress=progress)))


def _saved_config(path: Path) -> Config:
    return config_from_dict(upgrade_saved_config(yaml.safe_load(path.read_text())))


def _add_time(run_dir: Path, key: str, seconds: float) -> None:
    path = run_dir / TIMING_FILE
    timing = json.loads(path.read_text()) if path.is_file() else {}
    timing[key] = timing.get(key, 0.0) + seconds
    write_text(path, json.dumps(timing, indent=2) + "\n")


def train_or_reuse(config: Config, run_dir: Path, progress: bool) -> bool:
    """Train, resume an interrupted run, or reuse a finished one made with the same config.
    Returns whether any training happened."""
    saved = run_dir / "config.yaml"
    differ = config_differences(yaml.safe_load(saved.read_text()), config) if saved.is_file() else []
    if differ:
        raise FileExistsError(f"{run_dir} holds a run with another config ({', '.join(differ)}): "
                              "remove it to rerun")
    if (run_dir / "model.pt").is_file() or finished_elsewhere(run_dir):
        return False
    start = time.perf_counter()
    train(config, run_dir, resume=(run_dir / "last.pt").is_file(), progress=progress)
    _add_time(run_dir, "train_seconds", time.perf_counter() - start)
    return True


def finished_elsewhere(run_dir: Path) -> bool:
    """A run whose small result files were committed (``summary.json`` and ``test_p3d.json``)
    without its checkpoints, as ``benchmarks/paper`` keeps them: done, nothing to redo."""
    return not (run_dir / "model.pt").is_file() and (run_dir / "summary.json").is_file() \
        and (run_dir / RESULT_FILE).is_file()


def evaluate_run(run_dir: Path, data: Path, gt: GroundTruth, progress: bool) -> dict[str, Any]:
    """P3D result of a run's final teacher on the test split (``test_p3d.json``, with the FROC
    curve), computed once; ``test_detections.json`` holds its tracklets."""
    path = run_dir / RESULT_FILE
    if finished_elsewhere(run_dir) or (
            path.is_file() and path.stat().st_mtime >= (run_dir / "model.pt").stat().st_mtime):
        return json.loads(path.read_text())
    start = time.perf_counter()
    model, config = load_model(run_dir, _device())
    folder = DatasetFolder(data)
    store = VolumeStore(folder, cache=False)
    names = folder.volumes("test")
    detections = predict_volumes(model, ((n, store[n]) for n in names), config, _device(),
                                 progress, len(names))
    write_detections_json(detections, run_dir / "test_detections.json")
    result = evaluate_p3d(gt, detections, config.eval.iou)
    doc = {**result.to_json(), "fps": result.fps.tolist(), "sens": result.sens.tolist()}
    _add_time(run_dir, "eval_seconds", time.perf_counter() - start)
    write_text(path, json.dumps(doc) + "\n")
    return doc


def has_hard_negatives(source_run: Path) -> bool:
    """Whether ``source_run``'s hard negatives were mined already (the file is kept with the
    small result files, so P- retraining needs no checkpoint of its source run)."""
    return (source_run / "hard_negatives" / HARD_NEGATIVES_JSON).is_file()


def ensure_hard_negatives(source_run: Path, data: Path, progress: bool) -> Path:
    """Hard negatives of the ``negatives`` volumes mined by ``source_run``'s final teacher
    (``source_run/hard_negatives/hard_negatives.json``), mined once."""
    out = source_run / "hard_negatives"
    path = out / HARD_NEGATIVES_JSON
    if has_hard_negatives(source_run):
        return path
    model, config = load_model(source_run, _device())
    summary = mine_negatives(model, config, dataset_sources(data, "negatives"), pool_truth(data),
                             out, device=_device(), progress=progress)
    print(f"hard negatives: {summary['hard_negatives']} in {summary['volumes']} volumes -> {path}")
    return path


NOISE_FILE = "test_noise.json"


def _test_ap(run_dir: Path, data: Path) -> tuple[list[str], Callable[[list[str]], float]] | None:
    """The test volumes' names and ``ap(names)``: the run's P3D AP (in %) on a resample of
    them (names may repeat); None without ``test_detections.json``."""
    detections_path = run_dir / "test_detections.json"
    if not detections_path.is_file():
        return None
    gt = read_gt(data, split="test")
    detections = read_detections(detections_path)
    iou = _saved_config(run_dir / "config.yaml").eval.iou

    def ap(names: list[str]) -> float:
        return 100 * evaluate_p3d(resampled(gt, names), resampled(detections, names), iou).ap

    return sorted(gt), ap


def volume_noise(run_dir: Path, data: Path, n_resamples: int = 300) -> Interval | None:
    """How much the choice of test volumes moves a run's AP (in %): a percentile bootstrap over
    the test volumes of its ``test_detections.json`` (``test_noise.json``, computed once; None
    when neither file is there)."""
    path = run_dir / NOISE_FILE
    if path.is_file():
        return Interval(**json.loads(path.read_text()))
    scored = _test_ap(run_dir, data)
    if scored is None:
        return None
    noise = bootstrap_volumes(*scored, n_resamples)
    write_text(path, json.dumps(dataclasses.asdict(noise)) + "\n")
    return noise


def paired_volume_difference(run_a: Path, run_b: Path, data: Path,
                             n_resamples: int = 300) -> Interval | None:
    """AP of ``run_a`` minus AP of ``run_b`` (in %) on the same test volumes, with a paired
    percentile bootstrap over those volumes: the difference's noise from the choice of test
    volumes alone (not from the seed). None where a run has no ``test_detections.json``."""
    a, b = _test_ap(run_a, data), _test_ap(run_b, data)
    if a is None or b is None:
        return None
    return bootstrap_volumes(a[0], lambda names: a[1](names) - b[1](names), n_resamples)


def train_and_evaluate(config: Config, run_dir: Path, data: Path, progress: bool,
                       threads: int | None = None) -> float:
    """Train (or reuse) and evaluate one run on the test split; returns its test AP."""
    if threads is not None:
        torch.set_num_threads(threads)
    train_or_reuse(config, run_dir, progress)
    return evaluate_run(run_dir, data, read_gt(data, split="test"), progress)["ap"]


def run_jobs(jobs: list[tuple[str, Config, Path]], data: Path, workers: int = 1,
             progress: bool = True) -> None:
    """Train and evaluate ``(title, config, run_dir)`` jobs, ``workers`` at a time.

    With ``workers`` > 1 each run trains in its own spawned process with its share of the CPU
    threads (on 2 cores, 2 one-thread runs finish in about 0.7 of the time of one after the
    other); a lone run gets every thread.
    """
    if workers <= 1 or len(jobs) <= 1:
        for i, (title, config, run_dir) in enumerate(jobs, 1):
            print(f"[{i}/{len(jobs)}] {title}", flush=True)
            train_and_evaluate(config, run_dir, data, progress)
        return
    workers = min(workers, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_and_evaluate, config, run_dir, data, False, threads): title
                   for title, config, run_dir in jobs}
        plural = "s" if threads > 1 else ""
        print(f"{len(jobs)} runs, {workers} at a time ({threads} thread{plural} each)", flush=True)
        for done, future in enumerate(as_completed(futures), 1):
            title = futures[future]
            try:
                ap = future.result()
            except Exception as error:
                raise RuntimeError(f"run {title.split(':')[0]} failed: {error}") from error
            print(f"[{done}/{len(jobs)}] {title.split(':')[0]}: AP {100 * ap:.1f} "
                  f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)
