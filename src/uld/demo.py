"""``uld demo``: synthetic CT -> oracle, baseline and mining runs -> P3D report.

Three runs with the same budget and seed: an oracle trained on the complete labels, the
baseline (EMA teacher, no mining) and mining with the ``add`` policy, both on the partial
labels. Each teacher is evaluated on the fully annotated test split; ``report.md`` holds a
table shaped like the paper's Table I, a FROC plot and a picture of mined lesions. It is the
main rows of ``uld experiment paper --budget small`` (same data but the hard-negative pool,
same steps, seed 0); finished runs are reused and interrupted ones resumed when the demo is
started again.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from uld.atomic import write_text
from uld.config import load_config, override
from uld.data.annotations import read_gt
from uld.data.dataset import DatasetFolder
from uld.data.synth import SynthConfig, format_summary
from uld.experiment.plan import BENCHMARK, RunSpec
from uld.experiment.report import by_kind, gap_lines, per_seed_table, plot_main_froc, read_run, table_one
from uld.experiment.runner import ensure_dataset, evaluate_run, train_or_reuse

RUNS = (
    RunSpec("oracle", "Oracle (complete labels)", "oracle", 0,
            ("data.annotations=annotations_full.csv", "mining.policy=none")),
    RunSpec("baseline", "EMA teacher, no mining", "none", 0, ("mining.policy=none",)),
    RunSpec("mining", "EMA teacher, mining (add)", "add", 0, ("mining.policy=add",), mined=True),
)


def demo_settings(quick: bool) -> tuple[SynthConfig, tuple[str, ...]]:
    """The dataset and the config overrides of the full or the quick demo."""
    if quick:
        return (
            replace(BENCHMARK, n_train=60, n_val=8, n_test=16, n_negatives=0),
            ("train.iterations=400", "train.eval_every=400", "train.checkpoint_every=200",
             "mining.start_iteration=150", "train.warmup_iterations=50"),
        )
    return replace(BENCHMARK, n_negatives=0), ("train.iterations=1500",)


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
    ensure_dataset(data, synth, progress)
    base = load_config("demo", [f"data.root={data}", *extra])
    gt = read_gt(data, split="test")
    for run in RUNS:
        train_or_reuse(override(base, *run.overrides), out / run.name, progress)
        evaluate_run(out / run.name, data, gt, progress)
    results = [read_run(run, out / run.name, base.mining.tau) for run in RUNS]
    groups = by_kind(results)
    kinds = [run.kind for run in RUNS]
    plot_main_froc(groups, kinds, out / "froc.png")
    gallery = out / "mining" / "mined_lesions.png"
    if gallery.is_file():
        shutil.copyfile(gallery, out / "mined_lesions.png")
    table = table_one(groups, kinds)
    minutes = (time.perf_counter() - started) / 60
    info = DatasetFolder(data).info()
    mining = results[-1].summary
    final = mining.get("final_teacher_mining") or {}
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
        *gap_lines(groups),
        "",
        "## Mining",
        "",
        f"- boxes mined during training: {mining['mined']} (precision "
        f"{_fmt(mining.get('mined_precision'))}, recall {_fmt(mining.get('mined_recall'))} "
        "against the generator's complete labels)",
        f"- the final teacher re-mining the {final.get('slices_searched', '-')} training slices: "
        f"{final.get('mined', '-')} boxes (precision {_fmt(final.get('precision'))}, recall "
        f"{_fmt(final.get('recall'))})",
        "",
        "Mined lesions of the final teacher on training slices: labeled boxes green, mined boxes "
        "blue, unlabeled true lesions dashed white.",
        "",
        "![mined lesions](mined_lesions.png)",
        "",
        "## Runs",
        "",
        per_seed_table(results),
        "",
        "## Data",
        "",
        "```",
        format_summary(info.get("summary", {})),
        "```",
        "",
        f"Wall time: {minutes:.1f} minutes, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.",
    ]
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    print(table)
    print(f"\nreport: {path} ({minutes:.1f} min)")
    return path


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
