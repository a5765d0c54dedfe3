"""``uld demo``: synthetic CT -> oracle, baseline and mining runs -> P3D report.

Three runs with the same budget and seed: an oracle trained on the complete labels, the
baseline (EMA teacher, no mining) and mining with the ``add`` policy, both on the partial
labels. Each teacher is evaluated on the fully annotated test split; ``report.md`` holds a
table shaped like the paper's Table I, a FROC plot and a picture of mined lesions.
Finished runs are reused and interrupted ones resumed when the demo is started again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from uld.config import Config, config_from_dict, load_config, override, upgrade_saved_config
from uld.data.dataset import DatasetFolder
from uld.data.samples import KeySliceDataset
from uld.data.sources import VolumeStore
from uld.data.synth import SynthConfig, format_summary, write_synthetic_dataset
from uld.eval.detections import read_gt, write_detections_json
from uld.eval.p3d import P3DResult, evaluate_p3d
from uld.eval.plots import plot_froc
from uld.infer.predict import load_model, predict_volumes
from uld.mining.gallery import mined_gallery
from uld.report import results_table
from uld.train.loop import train


@dataclass(frozen=True)
class DemoRun:
    """One row of the demo's table."""

    name: str
    label: str
    mined: bool
    overrides: tuple[str, ...]


RUNS = (
    DemoRun("oracle", "Oracle (complete labels)", False,
            ("data.annotations=annotations_full.csv", "mining.policy=none")),
    DemoRun("baseline", "EMA teacher, no mining", False, ("mining.policy=none",)),
    DemoRun("mining", "EMA teacher, mining (add)", True, ("mining.policy=add",)),
)


def demo_settings(quick: bool) -> tuple[SynthConfig, tuple[str, ...]]:
    """The dataset and the config overrides of the full or the quick demo."""
    if quick:
        return (
            SynthConfig(n_train=60, n_val=8, n_test=16, seed=0),
            ("train.iterations=400", "train.eval_every=400", "train.checkpoint_every=200",
             "mining.start_iteration=150", "train.warmup_iterations=50"),
        )
    return SynthConfig(n_train=200, n_val=20, n_test=40, seed=0), ()


def _ensure_dataset(root: Path, synth: SynthConfig, progress: bool) -> None:
    if (root / "dataset.json").is_file():
        stored = json.loads((root / "dataset.json").read_text()).get("generator", {})
        if stored == json.loads(json.dumps(synth.__dict__)):
            return
        raise FileExistsError(f"{root} holds another dataset: remove it or choose another --out")
    print(format_summary(write_synthetic_dataset(root, synth, progress=progress)))


def _saved_config(path: Path) -> Config:
    return config_from_dict(upgrade_saved_config(yaml.safe_load(path.read_text())))


def _train_or_reuse(config: Config, run_dir: Path, progress: bool) -> None:
    """Train, resume an interrupted run, or reuse a finished one made with the same config."""
    saved = run_dir / "config.yaml"
    if saved.is_file() and _saved_config(saved) != config:
        raise FileExistsError(f"{run_dir} holds a run with another config: remove it to rerun")
    if (run_dir / "model.pt").is_file():
        return
    train(config, run_dir, resume=(run_dir / "last.pt").is_file(), progress=progress)


def run_demo(
    out: str | Path = "runs/demo",
    quick: bool = False,
    progress: bool = True,
    settings: tuple[SynthConfig, tuple[str, ...]] | None = None,
) -> Path:
    """Run the demo into ``out``; returns the path of ``report.md``.

    ``settings`` (dataset, config overrides) replaces :func:`demo_settings` (tests use it).
    """
    started = time.perf_counter()
    out = Path(out)
    synth, extra = settings or demo_settings(quick)
    data = out / "data"
    _ensure_dataset(data, synth, progress)
    base = load_config("demo", [f"data.root={data}", *extra])
    folder = DatasetFolder(data)
    store = VolumeStore(folder, cache=True)
    gt = read_gt(data, split="test")
    results: dict[str, P3DResult] = {}
    for run in RUNS:
        config = override(base, *run.overrides)
        _train_or_reuse(config, out / run.name, progress)
        model, model_config = load_model(out / run.name)
        names = folder.volumes("test")
        detections = predict_volumes(
            model, ((n, store[n]) for n in names), model_config, "cpu", progress, len(names)
        )
        write_detections_json(detections, out / run.name / "test_detections.json")
        results[run.name] = evaluate_p3d(gt, detections, model_config.eval.iou)

    plot_froc({r.label: (results[r.name].fps, results[r.name].sens) for r in RUNS},
              out / "froc.png")
    mining_config = override(base, *RUNS[-1].overrides)
    teacher, _ = load_model(out / "mining")
    labels = folder.annotations(mining_config.data.annotations).for_volumes(folder.volumes("train"))
    truth = folder.annotations(mining_config.data.truth).for_volumes(folder.volumes("train"))
    n_mined = mined_gallery(
        teacher, KeySliceDataset(store, labels, mining_config.data, truth), mining_config,
        out / "mined_lesions.png",
    )
    rows = [(r.label, True, r.mined, results[r.name]) for r in RUNS]
    table = results_table(rows)
    summaries = {r.name: json.loads((out / r.name / "summary.json").read_text()) for r in RUNS}
    minutes = (time.perf_counter() - started) / 60
    report = _report(table, summaries, folder.info(), n_mined, minutes, quick)
    path = out / "report.md"
    path.write_text(report)
    print(table)
    print(f"\nreport: {path} ({minutes:.1f} min)")
    return path


def _report(table: str, summaries: dict, info: dict, n_mined: int, minutes: float,
            quick: bool) -> str:
    mining = summaries["mining"]
    precision = mining.get("mined_precision")
    recall = mining.get("mined_recall")
    lines = [
        f"# uld demo{' (quick)' if quick else ''}",
        "",
        "Teachers evaluated on the fully annotated synthetic test split, P3D protocol "
        "(sensitivity in % at false positives per volume; AVG = mean over 0.125..8; AP in %).",
        "",
        table,
        "",
        "![FROC](froc.png)",
        "",
        "## Mining",
        "",
        f"- boxes mined during training: {mining['mined']}",
        f"- of them on a true (unlabeled) lesion: {mining['mined_true']}"
        + (f" (precision {precision:.3f})" if precision is not None else ""),
        f"- unlabeled lesions on training slices found by mining: {mining['missing_lesions_found']}"
        f" of {mining['missing_lesions_seen']}"
        + (f" (recall {recall:.3f})" if recall is not None else ""),
        "",
        f"Mined lesions of the final teacher on training slices ({n_mined} shown): "
        "labeled boxes green, mined boxes blue, unlabeled true lesions dashed white.",
        "",
        "![mined lesions](mined_lesions.png)",
        "",
        "## Runs",
        "",
        "| run | steps | best val AP | s/step teacher | s/step student |",
        "|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        best = "-" if s["best_val_ap"] is None else f"{100 * s['best_val_ap']:.1f}"
        lines.append(f"| {name} | {s['steps']} | {best} | {s['seconds_per_step_teacher']:.3f} | "
                     f"{s['seconds_per_step_student']:.3f} |")
    lines += ["", "## Data", "", "```", format_summary(info.get("summary", {})), "```", "",
              f"Wall time: {minutes:.1f} minutes, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads."]
    return "\n".join(lines) + "\n"
