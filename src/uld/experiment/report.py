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
from uld.eval.froc import AVG_FP_RATES as FP_RATES
from uld.eval.plots import plot_froc
from uld.experiment.plan import AUGMENT_LABEL, SWEEP_REFERENCE, SWEEP_ROWS, RunSpec
from uld.experiment.stats import Interval, closed_share, paired_by_seed


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
    """``ap``, ``avg`` or a sensitivity (key: the FP rate) on test, or ``val_ap``: the best
    validation AP, on which settings are chosen; in %."""
    if key in ("ap", "avg"):
        return 100 * r.result[key]
    if key == "val_ap":
        best = r.summary.get("best_val_ap")
        return float("nan") if best is None else 100 * best
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


def mean_ap(runs: Sequence[RunResult], key: str = "ap") -> float:
    """Mean test AP of ``runs`` (``key="val_ap"``: mean best validation AP), in %."""
    return statistics.mean(_metric(r, key) for r in runs)


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
            str(s.get("mined", 0)), fmt3(s.get("mined_precision")), fmt3(s.get("mined_recall")),
            f"{final.get('mined', '-')} / {fmt3(final.get('precision'))} / "
            f"{fmt3(final.get('recall'))}" if final else "-",
            f"{r.minutes:.1f}",
        ]) + " |")
    return "\n".join(lines)


def fmt3(value: Any) -> str:
    """A share or rate with 3 decimals, ``-`` when unknown."""
    return "-" if value is None else f"{value:.3f}"


def ablation_table(rows: Sequence[tuple[str, RunResult]]) -> str:
    lines = ["| setting | AVG | AP | mined (training) | precision | recall |",
             "|---|---|---|---|---|---|"]
    for label, r in rows:
        s = r.summary
        lines.append(f"| {label} | {_metric(r, 'avg'):.2f} | {_metric(r, 'ap'):.1f} | "
                     f"{s.get('mined', 0)} | {fmt3(s.get('mined_precision'))} | "
                     f"{fmt3(s.get('mined_recall'))} |")
    return "\n".join(lines)


def ordering(name: str, values: Sequence[tuple[str, float]]) -> str:
    """Whether the paper's order ``values`` ((label, AP), best first as claimed) holds."""
    holds = all(a[1] > b[1] for a, b in pairwise(values))
    found = " > ".join(f"{label} {v:.1f}" for label, v in sorted(values, key=lambda x: -x[1]))
    return (f"- {name} (paper's order: {' > '.join(label for label, _ in values)}): "
            f"{'holds' if holds else 'fails'}; measured AP {found}")


def seed_values(runs: Sequence[RunResult], key: str = "ap") -> dict[int, float]:
    """``{seed: metric}`` (AP or AVG in %) of the runs of one row."""
    return {r.spec.seed: _metric(r, key) for r in runs}


def compare(groups: Mapping[str, Sequence[RunResult]], a: str, b: str,
            key: str = "ap") -> Interval | None:
    """Paired difference ``a - b`` over the seeds both rows have (None when they share none)."""
    va, vb = seed_values(groups.get(a, []), key), seed_values(groups.get(b, []), key)
    return paired_by_seed(va, vb) if set(va) & set(vb) else None


def _with_verdict(d: Interval) -> str:
    """``+5.4 [+3.1, +7.7] AP points over 5 seeds: effect`` (one seed: no interval)."""
    if d.n < 2:
        return f"{d.mean:+.1f} AP points (one seed: no interval)"
    return f"{d.text()} AP points over {d.n} seeds: {verdict(d)}"


def verdict(interval: Interval) -> str:
    """``effect`` when the 95 % interval excludes 0, else ``within noise`` (or why there is no
    interval)."""
    if interval.n < 2:
        return "one seed: no interval"
    return "effect" if interval.excludes_zero else "within noise"


COMPARISONS = (
    ("oracle", "none", "what missing labels cost"),
    ("add", "none", "what mining (add) recovers"),
    ("ignore", "none", "what mining (ignore) recovers"),
    ("add", "ignore", "add against ignore"),
    ("upper_add", "none", "perfect mining (add) against the baseline"),
    ("upper_ignore", "none", "perfect mining (ignore) against the baseline"),
    ("tau0.95", "add", "tau 0.95 against 0.90"),
    ("tau0.85", "add", "tau 0.85 against 0.90"),
    ("tau0.80", "add", "tau 0.80 against 0.90"),
    ("decay", "add", "step lr decay against constant"),
    ("band", "add", "ignore band [0.5, tau) against add alone"),
    ("band", "none", "what mining (add + ignore band) recovers"),
    ("nb2", "none", "what mining recovers also on unlabeled neighbouring slices"),
    ("nb2", "add", "mining also on unlabeled neighbouring slices against key slices only"),
    ("nb2late", "none", "what mining recovers also on unlabeled neighbouring slices from mid-run"),
    ("nb2late", "add", "mining also on unlabeled neighbouring slices from mid-run against key slices only"),
    ("upper_nb2", "none", "perfect mining, also on unlabeled neighbouring slices"),
    ("upper_nb2", "upper_add", "perfect mining on unlabeled neighbouring slices too, against key slices"),
    ("add_pminus", "add", "hard negatives (P-) against add"),
    ("none_random", "none", "random missingness against the benchmark's (no mining)"),
    ("add_random", "none_random", "mining under random missingness"),
    ("oracle_aug", "oracle", f"{AUGMENT_LABEL} against the preset's augmentation (complete labels)"),
    ("oracle_aug", "sweep85_none_aug", f"85 % unlabeled, {AUGMENT_LABEL}: what missing labels cost"),
)


def paired_table(groups: Mapping[str, Sequence[RunResult]],
                 comparisons: Sequence[tuple[str, str, str]] = COMPARISONS) -> str:
    """Every comparison whose two rows exist: paired differences of test AP and AVG (points)
    with their 95 % t intervals over the shared seeds, the verdict on AP, and the paired
    difference of the best validation AP (what a setting is chosen on)."""
    lines = ["| comparison | rows | seeds | AP difference [95 % CI] | AVG difference [95 % CI] "
             "| verdict (AP) | val AP difference [95 % CI] |", "|---|---|---|---|---|---|---|"]
    for a, b, text in comparisons:
        ap, avg = compare(groups, a, b, "ap"), compare(groups, a, b, "avg")
        if ap is None or avg is None:
            continue
        val = compare(groups, a, b, "val_ap")
        lines.append(f"| {text} | {a} - {b} | {ap.n} | {ap.text()} | {avg.text(2)} | "
                     f"{verdict(ap)} | {val.text()} |")
    return "\n".join(lines)


GAPS = (
    ("oracle", "oracle - baseline", "the oracle gap"),
    ("upper_add", "perfect mining - baseline (complete labels on the same training slices: all "
     "that mining can reach; the oracle also trains on the key slices of the lesions that "
     "carry no label)", "the reachable gap"),
)
"""The gaps a mining row is measured against: (row above the baseline, line label, name)."""
GAP_TOPS = frozenset(top for top, _, _ in GAPS)


def gap_lines(groups: Mapping[str, Sequence[RunResult]]) -> list[str]:
    """The oracle - baseline gap, the part of it on the runs' own training slices (perfect
    mining - baseline) and the share of each that every mining row closes, as paired
    differences over the seeds each pair shares (95 % t intervals)."""
    found = [(top, label, name, compare(groups, top, "none")) for top, label, name in GAPS]
    found = [(top, label, name, gap) for top, label, name, gap in found if gap is not None]
    lines = []
    for _, label, _, gap in found:
        lines.append(f"- {label}: {_with_verdict(gap)}")
        if gap.n >= 2 and not gap.excludes_zero:
            lines.append("  - its interval contains 0: shares of it are noise, not effects")
    if not found:
        return []
    for kind in groups:
        if kind == "none" or kind in GAP_TOPS or kind.endswith(("_random", "_largest")) \
                or kind.startswith(("sweep", "oracle")):
            continue
        change = compare(groups, kind, "none")
        if change is None:
            continue
        seeds = set(seed_values(groups[kind])) & set(seed_values(groups["none"]))
        closes = [_closes(groups, top, seeds, change, name) for top, _, name, _ in found]
        lines.append(f"- {groups[kind][0].spec.label} - baseline: {_with_verdict(change)}; "
                     + ", ".join(closes))
    return lines


def on_seeds(groups: Mapping[str, Sequence[RunResult]], kind: str,
             seeds: set[int]) -> list[RunResult]:
    """The runs of one row whose seed is in ``seeds``."""
    return [r for r in groups.get(kind, []) if r.spec.seed in seeds]


def _closes(groups: Mapping[str, Sequence[RunResult]], top: str, seeds: set[int],
            change: Interval, name: str) -> str:
    """'closes N % of NAME', over the seeds the row shares with the baseline and ``top``."""
    gap = compare({kind: on_seeds(groups, kind, seeds) for kind in (top, "none")}, top, "none")
    share = closed_share(gap, change) if gap is not None else None
    return f"no {name} to close" if share is None else f"closes {100 * share:.0f} % of {name}"


def _sweep_groups(groups: Mapping[str, Sequence[RunResult]]) -> dict[str, tuple[str, str]]:
    """The sweep's kinds (``sweepNN_ROW``), sorted, each with its level and row: ``("sweep85",
    "add")``."""
    return {kind: tuple(kind.split("_", 1)) for kind, runs in sorted(groups.items())
            if runs and runs[0].spec.group == "sweep"}


def sweep_comparisons(groups: Mapping[str, Sequence[RunResult]]) -> list[tuple[str, str, str]]:
    """The paired comparisons of each sparsity level present (kinds ``sweepNN_ROW``): ``add``,
    perfect mining and any further row of the level against ``none``, or against the row
    ``SWEEP_REFERENCE`` names for it (when the level has that row), for :func:`paired_table`."""
    sweep = _sweep_groups(groups)
    out = []
    for level in sorted({level for level, _ in sweep.values()}):
        none = f"{level}_none"
        texts = [(f"{level}_add", none, "what mining (add) recovers"),
                 (f"{level}_upper_add", none, "what perfect mining recovers")]
        for kind, (lv, row) in sweep.items():
            reference = f"{level}_{SWEEP_REFERENCE.get(row, 'none')}"
            if lv == level and row not in SWEEP_ROWS and reference in groups:
                label = _row_label(groups[kind][0])
                texts.append((kind, reference,
                              f"what {label} recovers" if reference == none and groups[kind][0].spec.mined
                              else f"{label} against {_row_label(groups[reference][0])}"))
        out += [(kind, ref, f"{level[5:]} % unlabeled: {text}") for kind, ref, text in texts]
    return out


def _row_label(run: RunResult) -> str:
    """A sweep run's row without its sparsity level: 'mining, add, tau 0.85'."""
    base = run.spec.label.rsplit(", ", 1)[0]
    return base if base[1:2].isupper() else base[:1].lower() + base[1:]


def sweep_rows(groups: Mapping[str, Sequence[RunResult]]) -> list[dict[str, Any]]:
    """One record per sparsity level present: the unlabeled share, the mean AP of ``none``,
    ``add`` and perfect mining over their seeds, the oracle's (the 0 % point), and the share of
    the level's gap (oracle - none) that add and perfect mining recover, each over the seeds it
    shares with ``none`` (a level may hold more seeds of some rows than of others)."""
    levels: dict[float, dict[str, list[RunResult]]] = {}
    for runs in groups.values():
        for r in runs:
            if r.spec.group == "sweep" and r.spec.unlabeled is not None:
                row = r.spec.kind.split("_", 1)[1]
                levels.setdefault(r.spec.unlabeled, {}).setdefault(row, []).append(r)
    oracle = mean_ap(groups["oracle"]) if groups.get("oracle") else None
    out = []
    for level in sorted(levels):
        rows = levels[level]
        record: dict[str, Any] = {"unlabeled": level, "oracle": oracle,
                                  "seeds": sorted({r.spec.seed for v in rows.values() for r in v})}
        for name in ("none", "add", "upper_add"):
            record[name] = mean_ap(rows[name]) if rows.get(name) else None
        for name in ("add", "upper_add"):
            record[f"{name}_recovers"] = _recovers(rows.get(name, []), rows.get("none", []), oracle)
        out.append(record)
    return out


def _recovers(row: Sequence[RunResult], none: Sequence[RunResult],
              oracle: float | None) -> float | None:
    """(row - none) / (oracle - none), both means over the seeds the two rows share."""
    seeds = {r.spec.seed for r in row} & {r.spec.seed for r in none}
    if oracle is None or not seeds:
        return None
    base = mean_ap([r for r in none if r.spec.seed in seeds])
    gap = oracle - base
    return None if gap <= 0 else (mean_ap([r for r in row if r.spec.seed in seeds]) - base) / gap


def sweep_table(records: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| train lesions unlabeled | seeds | oracle AP | none AP | add AP | perfect mining AP "
             "| gap (oracle - none) | add recovers | perfect recovers |",
             "|---|---|---|---|---|---|---|---|---|"]

    def ap(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f} %"

    for r in records:
        gap = None if r["oracle"] is None or r["none"] is None else r["oracle"] - r["none"]
        lines.append(f"| {100 * r['unlabeled']:.0f} % | {', '.join(map(str, r['seeds']))} | "
                     f"{ap(r['oracle'])} | {ap(r['none'])} | {ap(r['add'])} | {ap(r['upper_add'])} "
                     f"| {ap(gap)} | {pct(r['add_recovers'])} | {pct(r['upper_add_recovers'])} |")
    return "\n".join(lines)


def sweep_series(groups: Mapping[str, Sequence[RunResult]]) -> list[dict[str, Any]]:
    """The sweep plot's series: ``none``, ``add`` and perfect mining (the oracle as their 0 %
    point), then any further mining row of a level; each {label, style, x, y, low, high}: test AP
    mean over seeds and its distance to the lowest and highest seed, sorted by x (% unlabeled)."""
    labels = dict(zip(SWEEP_ROWS, ("no mining", "mining (add)", "perfect mining (add)")))
    sweep = _sweep_groups(groups)
    more = {row: _row_label(groups[kind][0]) for kind, (_, row) in sweep.items()
            if row not in labels}
    styles = [("none", "o-"), ("add", "s-"), ("upper_add", "^--"),
              *zip(more, ("D", "v", "P", "X", "*"))]
    series = []
    for row, style in styles:
        points = [(0.0, [_metric(r, "ap") for r in groups["oracle"]])] \
            if groups.get("oracle") and row in labels else []
        points += [(100 * groups[kind][0].spec.unlabeled, [_metric(r, "ap") for r in groups[kind]])
                   for kind, (_, kind_row) in sweep.items() if kind_row == row]
        points.sort()
        means = [statistics.mean(values) for _, values in points]
        series.append({"label": labels.get(row) or more[row], "style": style,
                       "x": [x for x, _ in points], "y": means,
                       "low": [m - min(v) for m, (_, v) in zip(means, points)],
                       "high": [max(v) - m for m, (_, v) in zip(means, points)]})
    return series


def plot_sweep(groups: Mapping[str, Sequence[RunResult]], path: Path) -> Path:
    """AP against the share of unlabeled train lesions (:func:`sweep_series`)."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for line in sweep_series(groups):
        ax.errorbar(line["x"], line["y"], yerr=[line["low"], line["high"]], fmt=line["style"],
                    capsize=3, label=line["label"])
    ax.set_xlabel("train lesions left unlabeled (%)")
    ax.set_ylabel("test AP (%), P3D")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("what missing labels cost, and what mining recovers")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    return path


def windowed_mining(rows: Sequence[Mapping[str, Any]], window: int = 500) -> list[dict[str, float]]:
    """Precision and recall of the boxes mined in each ``window`` steps, from the cumulative
    totals that ``metrics.jsonl`` logs (rows without them are skipped)."""
    points = [r for r in rows if "mining/missing_total" in r]
    out, last = [], None
    for r in points:
        if last is not None and r["step"] - last["step"] < window and r is not points[-1]:
            continue
        if last is not None:
            mined = r["mining/mined_total"] - last["mining/mined_total"]
            missing = r["mining/missing_total"] - last["mining/missing_total"]
            out.append({
                "step": r["step"], "mined": mined,
                "precision": (r["mining/true_total"] - last["mining/true_total"]) / mined
                if mined else float("nan"),
                "recall": (r["mining/found_total"] - last["mining/found_total"]) / missing
                if missing else float("nan"),
            })
        last = r
    return out


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """``key`` of each row, NaN where the logger left it out (NaN values are not logged)."""
    return [r.get(key, float("nan")) for r in rows]


def plot_training_diagnostics(run_dirs: Mapping[str, Path], tau: float, path: Path) -> Path:
    """Over training: the teacher's scores on the labeled and unlabeled lesions and on the
    background of training slices (``scores/*`` in ``metrics.jsonl``), the validation AP, and
    the precision and recall of the boxes mined in each 500-step window."""
    fig = Figure(figsize=(12, 7))
    axes = fig.subplots(2, 3).ravel()
    titles = ("validation AP (teacher)", "mean best score: labeled (solid), unlabeled (dashed)",
              f"share of unlabeled lesions scored >= {tau:g}",
              f"background boxes >= {tau:g} per slice", "precision of mined boxes (500-step windows)",
              "recall of unlabeled lesions (500-step windows)")
    for label, run_dir in run_dirs.items():
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        val = [r for r in rows if "val/ap" in r]
        steps = [r["step"] for r in val]
        line, = axes[0].plot(steps, [100 * r["val/ap"] for r in val], label=label)
        color = line.get_color()
        axes[1].plot(steps, _series(val, "scores/labeled_mean"), color=color)
        axes[1].plot(steps, _series(val, "scores/unlabeled_mean"), "--", color=color)
        axes[2].plot(steps, _series(val, "scores/unlabeled_at_tau"), color=color)
        axes[3].plot(steps, _series(val, "scores/background_at_tau_per_slice"), color=color)
        windows = windowed_mining(rows)
        if windows:
            axes[4].plot([w["step"] for w in windows], [w["precision"] for w in windows], "o-",
                         color=color)
            axes[5].plot([w["step"] for w in windows], [w["recall"] for w in windows], "o-",
                         color=color)
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    return path


def plot_main_froc(groups: Mapping[str, Sequence[RunResult]], kinds: Sequence[str], path: Path) -> Path:
    """FROC curves of the first seed of each main row."""
    curves = {}
    for kind in kinds:
        if groups.get(kind):
            r = groups[kind][0]
            curves[f"{r.spec.label} (seed {r.spec.seed})"] = (np.asarray(r.result["fps"]),
                                                              np.asarray(r.result["sens"]))
    return plot_froc(curves, path, title="synthetic test split, P3D")
