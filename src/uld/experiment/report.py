"""The experiment's report: tables shaped like the paper's Tables I-IV, FROC and mining plots.

Pure functions from per-run results (``test_p3d.json``, ``summary.json``, ``metrics.jsonl``)
to markdown and PNGs; nothing here trains or evaluates.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from uld.atomic import atomic_path
from uld.eval.p3d import AVG_FP_RATES as FP_RATES
from uld.eval.plots import plot_froc
from uld.experiment.plan import RunSpec


@dataclass(frozen=True)
class RunResult:
    """What the report needs of one finished run."""

    spec: RunSpec
    result: Mapping[str, Any]
    """``test_p3d.json``: ap, avg, sensitivity {"0.125": ...}, fps, sens."""
    summary: Mapping[str, Any]
    """The run's ``summary.json``."""
    tau: float
    minutes: float


def read_run(spec: RunSpec, run_dir: Path, tau: float) -> RunResult:
    timing = run_dir / "timing.json"
    seconds = sum(json.loads(timing.read_text()).values()) if timing.is_file() else float("nan")
    return RunResult(spec, json.loads((run_dir / "test_p3d.json").read_text()),
                     json.loads((run_dir / "summary.json").read_text()), tau, seconds / 60)


def _metric(r: RunResult, key: str) -> float:
    if key in ("ap", "avg"):
        return 100 * r.result[key]
    return 100 * r.result["sensitivity"][f"{float(key):g}"]


def _cell(values: Sequence[float], decimals: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{decimals}f}"
    return f"{statistics.mean(values):.{decimals}f} ± {statistics.stdev(values):.{decimals}f}"


def by_kind(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    out: dict[str, list[RunResult]] = {}
    for r in results:
        out.setdefault(r.spec.kind, []).append(r)
    return out


def mean_ap(runs: Sequence[RunResult]) -> float:
    return statistics.mean(_metric(r, "ap") for r in runs)


def table_one(groups: Mapping[str, Sequence[RunResult]], kinds: Sequence[str]) -> str:
    """Table I: method | R | P+ | P- | sensitivity at 0.125..8 | AVG | AP; mean ± sd over seeds."""
    header = ["method", "R", "P+", "P-", "seeds", *[f"{f:g}" for f in FP_RATES], "AVG", "AP"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind in kinds:
        runs = groups.get(kind)
        if not runs:
            continue
        spec = runs[0].spec
        cells = [spec.label, "x" if spec.official else "", "x" if spec.mined else "",
                 "x" if spec.hard_negatives_from else "", str(len(runs))]
        cells += [_cell([_metric(r, str(f)) for r in runs], 2) for f in FP_RATES]
        cells += [_cell([_metric(r, "avg") for r in runs], 2), _cell([_metric(r, "ap") for r in runs], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(results: Sequence[RunResult]) -> str:
    """Every run: AVG, AP, mined boxes and their precision/recall, minutes."""
    lines = ["| run | seed | AVG | AP | mined (training) | precision | recall | final teacher: "
             "mined / precision / recall | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r.summary
        final = s.get("final_teacher_mining") or {}
        lines.append("| " + " | ".join([
            r.spec.name, str(r.spec.seed), f"{_metric(r, 'avg'):.2f}", f"{_metric(r, 'ap'):.1f}",
            str(s.get("mined", 0)), _fmt(s.get("mined_precision")), _fmt(s.get("mined_recall")),
            f"{final.get('mined', '-')} / {_fmt(final.get('precision'))} / "
            f"{_fmt(final.get('recall'))}" if final else "-",
            f"{r.minutes:.1f}",
        ]) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def ablation_table(rows: Sequence[tuple[str, RunResult]]) -> str:
    lines = ["| setting | AVG | AP | mined (training) | precision | recall |",
             "|---|---|---|---|---|---|"]
    for label, r in rows:
        s = r.summary
        lines.append(f"| {label} | {_metric(r, 'avg'):.2f} | {_metric(r, 'ap'):.1f} | "
                     f"{s.get('mined', 0)} | {_fmt(s.get('mined_precision'))} | "
                     f"{_fmt(s.get('mined_recall'))} |")
    return "\n".join(lines)


def ordering(name: str, values: Sequence[tuple[str, float]]) -> str:
    """Whether the paper's order ``values`` ((label, AP), best first as claimed) holds."""
    holds = all(a[1] > b[1] for a, b in pairwise(values))
    found = " > ".join(f"{label} {v:.1f}" for label, v in sorted(values, key=lambda x: -x[1]))
    return (f"- {name} (paper's order: {' > '.join(label for label, _ in values)}): "
            f"{'holds' if holds else 'fails'}; measured AP {found}")


def gap_lines(groups: Mapping[str, Sequence[RunResult]]) -> list[str]:
    """Oracle - baseline gap (mean AP of the seeds) and how much of it each mining row closes
    (rows with one seed are compared with the oracle and baseline of that seed)."""
    if not groups.get("oracle") or not groups.get("none"):
        return []
    oracle, none = mean_ap(groups["oracle"]), mean_ap(groups["none"])
    gap = oracle - none
    lines = [f"- oracle - baseline: {gap:.1f} AP points ({oracle:.1f} vs {none:.1f}, mean over "
             f"{len(groups['oracle'])} seed(s))"]
    spread = max(statistics.stdev(_metric(r, "ap") for r in groups[k])
                 if len(groups[k]) > 1 else 0.0 for k in ("oracle", "none"))
    if gap <= spread:
        lines.append(f"- the gap is within the seed spread (sd up to {spread:.1f} AP points): "
                     "the shares below are noise, not effects")
    for kind, runs in groups.items():
        if kind in ("oracle", "none") or kind.endswith(("_random", "_largest")):  # own table
            continue
        seeds = {r.spec.seed for r in runs}
        ref_o = [r for r in groups["oracle"] if r.spec.seed in seeds]
        ref_n = [r for r in groups["none"] if r.spec.seed in seeds]
        if not ref_o or not ref_n:
            continue
        g = mean_ap(ref_o) - mean_ap(ref_n)
        change = mean_ap(runs) - mean_ap(ref_n)
        share = (f"closes {100 * change / g:.0f} % of the gap" if g > 0
                 else "no gap to close")
        lines.append(f"- {runs[0].spec.label}: AP {mean_ap(runs):.1f} ({change:+.1f} over the "
                     f"baseline; {share}; seed(s) {sorted(seeds)})")
    return lines


def plot_main_froc(groups: Mapping[str, Sequence[RunResult]], kinds: Sequence[str], path: Path) -> Path:
    """FROC curves of the first seed of each main row."""
    curves = {}
    for kind in kinds:
        if groups.get(kind):
            r = groups[kind][0]
            curves[f"{r.spec.label} (seed {r.spec.seed})"] = (np.asarray(r.result["fps"]),
                                                              np.asarray(r.result["sens"]))
    return plot_froc(curves, path, title="synthetic test split, P3D")


def plot_mining_curves(run_dirs: Mapping[str, Path], path: Path) -> Path:
    """Cumulative precision and recall of the mined boxes over training (``metrics.jsonl``)."""
    fig = Figure(figsize=(10, 3.8))
    ax_p, ax_r = fig.subplots(1, 2)
    for label, run_dir in run_dirs.items():
        steps, precision, recall = [], [], []
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if "mining/precision" in row and row.get("mining/mined_total", 0) > 0:
                steps.append(row["step"])
                precision.append(row["mining/precision"])
                recall.append(row["mining/recall"])
        ax_p.plot(steps, precision, label=label)
        ax_r.plot(steps, recall, label=label)
    for ax, name in ((ax_p, "precision of the mined boxes"), (ax_r, "recall of unlabeled lesions")):
        ax.set_xlabel("training step")
        ax.set_ylabel(name)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    ax_p.set_ylim(top=1.02)
    ax_p.legend(fontsize=7)
    fig.suptitle("mining over training (cumulative, against the generator's complete labels)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    return path
