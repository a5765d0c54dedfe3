"""``uld demo``: synthetic CT -> oracle, baseline and mining runs -> P3D report.

Three runs with the same budget and seed: an oracle trained on the complete labels, the
baseline (EMA teacher, no mining) and mining with the ``add`` policy, both on the partial
labels. They are the seed-0 main rows of ``uld experiment paper --budget small`` (same data
but the hard-negative pool, same config and steps), trained all at once. Each teacher is
evaluated on the fully annotated test split; ``report.md`` says on its first line whether this
one seed shows the paper's ordering (oracle > mining > baseline) beyond the noise of the test
split (paired bootstrap over its volumes), and holds a table shaped
like the paper's Table I, a FROC plot, the training diagnostics and a picture of mined lesions.
Finished runs are reused and interrupted ones resumed when the demo is started again.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from uld.atomic import write_text
from uld.config import load_config, override
from uld.data.dataset import DatasetFolder
from uld.data.synth import SynthConfig, format_summary
from uld.experiment.plan import BENCHMARK, BUDGETS, RunSpec
from uld.experiment.report import (
    by_kind,
    fmt3,
    per_seed_table,
    plot_main_froc,
    plot_training_diagnostics,
    read_run,
    table_one,
)
from uld.experiment.runner import ensure_dataset, paired_volume_difference, run_jobs
from uld.experiment.stats import Interval, closed_share
from uld.review import build_review

RUNS = (
    RunSpec("oracle", "Oracle (complete labels)", "oracle", 0,
            ("data.annotations=annotations_full.csv", "mining.policy=none")),
    RunSpec("baseline", "EMA teacher, no mining", "none", 0, ("mining.policy=none",)),
    RunSpec("mining", "EMA teacher, mining (add)", "add", 0, ("mining.policy=add",), mined=True),
)
EXPERIMENT_REPORT = "benchmarks/paper/report.md"
"""Where the repository keeps the experiment's multi-seed report (the demo points to it)."""


def demo_settings(quick: bool) -> tuple[SynthConfig, tuple[str, ...]]:
    """The dataset and the config overrides of the full or the quick demo."""
    budget = BUDGETS["small"].overrides
    if quick:
        return (
            replace(BENCHMARK, n_train=60, n_val=8, n_test=16, n_negatives=0, sparsity_levels=()),
            (*budget, "train.iterations=400", "train.eval_every=400",
             "train.checkpoint_every=200", "mining.start_iteration=150",
             "train.warmup_iterations=50"),
        )
    # one seed: a 160-volume test split (the experiment's has 400, for its noise bound)
    return replace(BENCHMARK, n_test=160, n_negatives=0, sparsity_levels=()), budget


def first_line(gap: Interval | None, change: Interval | None) -> str:
    """Whether this seed shows the paper's ordering (oracle > mining > baseline) beyond the
    test split's noise: both paired differences over the baseline, oracle - baseline and
    mining - baseline, positive with intervals above 0, and the oracle above mining."""
    shown = (gap is not None and change is not None and gap.low > 0 and change.low > 0
             and gap.mean > change.mean)
    if shown:
        return ("oracle > mining > baseline, the paper's ordering, in this one seed, beyond the "
                "test split's noise")
    return ("this run does not show the paper's ordering (oracle > mining > baseline) beyond "
            f"noise; the multi-seed result with its noise is in {EXPERIMENT_REPORT}")


def difference_lines(gap: Interval | None, change: Interval | None) -> list[str]:
    """The oracle's and mining's AP over the baseline, with their 95 % paired bootstrap
    intervals over the test volumes, and the share of the gap that mining closes."""
    if gap is None or change is None:
        return []
    share = closed_share(gap, change)
    closes = "" if share is None else f"; closes {100 * share:.0f} % of the oracle's lead"
    return [
        f"- oracle - baseline: {gap.text()} AP points",
        f"- mining - baseline: {change.text()} AP points{closes}",
        "",
        "(95 % paired bootstrap intervals: both runs scored on the same resampled test volumes, "
        f"{gap.n} resamples.)",
    ]


def run_demo(
    out: str | Path = "runs/demo",
    quick: bool = False,
    progress: bool = True,
    settings: tuple[SynthConfig, tuple[str, ...]] | None = None,
    workers: int = len(RUNS),
) -> Path:
    """Run the demo into ``out``; returns the path of ``report.md``.

    ``settings`` (dataset, config overrides) replaces :func:`demo_settings` (tests use it);
    ``workers`` runs train at once (all three by default; on 2 cores one thread each, which
    keeps both cores busy to the end instead of leaving one idle under the last run).
    """
    started = time.perf_counter()
    out = Path(out)
    synth, extra = settings or demo_settings(quick)
    data = out / "data"
    ensure_dataset(data, synth, progress)
    base = load_config("demo", [f"data.root={data}", *extra])
    run_jobs([(f"{run.name}: {run.label}", override(base, *run.overrides), out / run.name)
              for run in RUNS], data, workers, progress)
    results = [read_run(run, out / run.name, base.mining.tau) for run in RUNS]
    groups = by_kind(results)
    kinds = [run.kind for run in RUNS]
    plot_main_froc(groups, kinds, out / "froc.png")
    plot_training_diagnostics({run.name: out / run.name for run in RUNS}, base.mining.tau,
                              out / "training.png")
    gallery = out / "mining" / "mined_lesions.png"
    if gallery.is_file():
        shutil.copyfile(gallery, out / "mined_lesions.png")
    review = build_review(out / "mining", data, out / "mining" / "review")
    table = table_one(groups, kinds)
    minutes = (time.perf_counter() - started) / 60
    info = DatasetFolder(data).info()
    mining = results[-1].summary
    final = mining.get("final_teacher_mining") or {}
    gap = paired_volume_difference(out / "oracle", out / "baseline", data)
    change = paired_volume_difference(out / "mining", out / "baseline", data)
    n_test = len(DatasetFolder(data).volumes("test"))
    lines = [
        f"# uld demo{' (quick)' if quick else ''}: " + first_line(gap, change),
        "",
        f"One seed (0), so the seed-to-seed noise is not measured here; the intervals below hold "
        f"only the noise of the choice of the {n_test} test volumes. Over five seeds, with paired "
        f"95 % intervals: `uld experiment paper` ({EXPERIMENT_REPORT}).",
        "",
        "Teachers evaluated on the fully annotated synthetic test split, P3D protocol "
        "(sensitivity in % at false positives per volume; AVG = mean over 0.125..8; AP in %).",
        "",
        table,
        "",
        "![FROC](froc.png)",
        "",
        *difference_lines(gap, change),
        "",
        "## Mining",
        "",
        f"- boxes mined during training: {mining['mined']} (precision "
        f"{fmt3(mining.get('mined_precision'))}, recall {fmt3(mining.get('mined_recall'))} "
        "against the generator's complete labels)",
        f"- the final teacher re-mining the {final.get('slices_searched', '-')} training slices: "
        f"{final.get('mined', '-')} boxes (precision {fmt3(final.get('precision'))}, recall "
        f"{fmt3(final.get('recall'))})",
        "",
        "Mined lesions of the final teacher on training slices: labeled boxes green, mined boxes "
        "blue, unlabeled true lesions dashed white.",
        "",
        "![mined lesions](mined_lesions.png)",
        "",
        f"Review them in a browser: [{review.relative_to(out).as_posix()}]"
        f"({review.relative_to(out).as_posix()}) (keys: a accept, r reject, u unsure, arrows move; "
        "Export saves `verdicts.json`, and `uld review apply --verdicts verdicts.json --data "
        "DATA --out NEWDATA` adds the accepted lesions to the labels).",
        "",
        "Over training (validation AP; the teacher's scores on labeled and unlabeled lesions and "
        "on background of 64 training slices; precision and recall of the boxes mined in each "
        "500-step window):",
        "",
        "![training](training.png)",
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
        f"Wall time: {minutes:.1f} minutes, torch {torch.__version__}, {workers} run(s) at a "
        f"time on {os.cpu_count()} cores.",
    ]
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    print(table)
    print(f"\nreport: {path} ({minutes:.1f} min)")
    return path
