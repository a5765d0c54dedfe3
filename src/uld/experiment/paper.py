"""``uld experiment paper``: every comparison of the paper on the synthetic benchmark.

Runs (``plan.paper_runs``): oracle, baseline (``none``), ``add`` and ``ignore`` per seed;
``add`` + hard negatives, tau 0.95 / 0.90 / 0.85 / 0.80 and step lr decay on the first seed.
Each teacher is evaluated on the fully annotated test split with the P3D protocol; the
report (``report.md``) holds Tables I-IV, the oracle-baseline gap and how much of it mining
closes, the paper's orderings as found, mining precision/recall, FROC and mining plots.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from uld.atomic import write_text
from uld.config import load_config, override
from uld.data.dataset import DatasetFolder
from uld.data.synth import format_summary
from uld.eval.detections import read_gt
from uld.experiment.plan import BUDGETS, MAIN, TAUS, Budget, RunSpec, paper_runs
from uld.experiment.report import (
    ablation_table,
    by_kind,
    gap_lines,
    mean_ap,
    ordering,
    per_seed_table,
    plot_main_froc,
    plot_mining_curves,
    read_run,
    table_one,
)
from uld.experiment.runner import ensure_dataset, ensure_hard_negatives, evaluate_run, train_or_reuse

BENCHMARK_CONFIG = "demo"


def run_paper_experiment(
    out: str | Path = "runs/paper",
    budget: str | Budget = "default",
    progress: bool = True,
    overrides: tuple[str, ...] = (),
    only: tuple[str, ...] = (),
) -> Path:
    """Run (or finish) the experiment into ``out``; returns the path of ``report.md``.

    ``overrides`` apply to every run (after the budget's); ``only`` limits the runs to these
    names (the report then covers what is done).
    """
    started = time.perf_counter()
    plan = BUDGETS[budget] if isinstance(budget, str) else budget
    out = Path(out)
    data = out / "data"
    ensure_dataset(data, plan.synth, progress)
    base = load_config(BENCHMARK_CONFIG, [f"data.root={data}", *plan.overrides, *overrides])
    runs = paper_runs(plan, base.mining.tau)
    if only:
        unknown = sorted(set(only) - {r.name for r in runs})
        if unknown:
            raise ValueError(f"unknown run {unknown[0]!r} (runs: {[r.name for r in runs]})")
        runs = [r for r in runs if r.name in only]
    gt = read_gt(data, split="test")
    for i, spec in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] {spec.name}: {spec.label}", flush=True)
        config = override(base, *spec.overrides)
        if spec.hard_negatives_from:
            source = out / "runs" / spec.hard_negatives_from
            if not (source / "model.pt").is_file():
                raise FileNotFoundError(f"{spec.name} needs the finished run {source} first")
            config = override(config, f"data.hard_negatives={ensure_hard_negatives(source, data, progress)}")
        train_or_reuse(config, out / "runs" / spec.name, progress)
        evaluate_run(out / "runs" / spec.name, data, gt, progress)
    minutes = (time.perf_counter() - started) / 60
    return write_report(out, plan, runs, base.mining.tau, minutes)


def write_report(out: Path, plan: Budget, runs: list[RunSpec], base_tau: float,
                 minutes: float) -> Path:
    """``report.md``, ``froc.png`` and ``mining_curves.png`` from the finished runs."""
    results = [read_run(s, out / "runs" / s.name, base_tau) for s in runs]
    groups = by_kind(results)
    main_kinds = [*MAIN, "add_pminus"]
    plot_main_froc(groups, main_kinds, out / "froc.png")
    mining_dirs = {r.spec.name: out / "runs" / r.spec.name for r in results if r.spec.mined}
    if mining_dirs:
        plot_mining_curves(mining_dirs, out / "mining_curves.png")
    first = plan.seeds[0]
    lines = [
        f"# uld experiment paper (budget {plan.name}: {plan.note})",
        "",
        "Every teacher evaluated on the fully annotated synthetic test split with the P3D protocol "
        "(sensitivity in % at false positives per volume; AVG = mean over 0.125..8; AP in %). "
        "Rows with several seeds show mean ± standard deviation.",
        "",
        "## Table I: main results",
        "",
        table_one(groups, main_kinds),
        "",
        "![FROC](froc.png)",
        "",
        "## Missing labels and what mining recovers",
        "",
        *gap_lines(groups),
        "",
        "## The paper's orderings",
        "",
    ]
    if groups.get("add") and groups.get("ignore") and groups.get("none"):
        lines.append(ordering("policy", [("add", mean_ap(groups["add"])),
                                         ("ignore", mean_ap(groups["ignore"])),
                                         ("none", mean_ap(groups["none"]))]))
    tau_rows = _tau_rows(groups, base_tau, first)
    if len(tau_rows) > 1:
        best = max(tau_rows, key=lambda row: row[1].result["ap"])
        lines.append(f"- tau (paper: 0.90 best): best here {best[0]} "
                     f"(AP {100 * best[1].result['ap']:.1f})")
    decay = groups.get("decay")
    add_first = [r for r in groups.get("add", []) if r.spec.seed == first]
    if decay and add_first:
        lines.append(ordering("learning rate", [("constant", 100 * add_first[0].result["ap"]),
                                                ("step decay", 100 * decay[0].result["ap"])]))
    pminus = groups.get("add_pminus")
    if pminus and add_first:
        lines.append(ordering("hard negatives", [("add + P-", 100 * pminus[0].result["ap"]),
                                                 ("add", 100 * add_first[0].result["ap"])]))
    lines += ["", f"## Table II: tau (seed {first})", "", ablation_table(tau_rows), ""]
    policy_rows = [(k, r) for k in ("none", "add", "ignore") for r in groups.get(k, [])
                   if r.spec.seed == first]
    lines += [f"## Table III: mined boxes added or ignored (seed {first})", "",
              ablation_table(policy_rows), ""]
    if decay and add_first:
        lines += [f"## Table IV: learning rate (seed {first})", "",
                  ablation_table([("constant", add_first[0]), ("step decay", decay[0])]), ""]
    random_rows = [(label, r) for label, kind in (
        ("oracle (complete labels)", "oracle"), ("no mining, RECIST-style missing", "none"),
        ("no mining, random missing (same count)", "none_random"),
        ("add, RECIST-style missing", "add"), ("add, random missing (same count)", "add_random"))
        for r in groups.get(kind, []) if r.spec.seed == first]
    if any(label.startswith("no mining, random") for label, _ in random_rows):
        lines += [f"## Which missing labels hurt: RECIST-style vs random (seed {first})", "",
                  "The same images and the same number of train labels; only which lesions lost "
                  "their label differs.", "", ablation_table(random_rows), ""]
    lines += ["## Mining over training", "",
              "Cumulative precision (mined boxes on an unlabeled true lesion) and recall "
              "(unlabeled lesions on the training slices that a mined box hit), against the "
              "generator's complete labels. In 'Every run' below, the 'final teacher' columns "
              "re-mine the whole training set with each run's final teacher.", ""]
    if mining_dirs:
        lines += ["![mining curves](mining_curves.png)", ""]
    if (out / "runs" / f"add_s{first}" / "mined_lesions.png").is_file():
        lines += [f"Mined lesions of the final `add` teacher (seed {first}): labeled boxes green, "
                  "mined boxes blue with scores, every true lesion dashed white.", "",
                  f"![mined lesions](runs/add_s{first}/mined_lesions.png)", ""]
    lines += ["## Every run", "", per_seed_table(results), "",
              "## Data", "", "```", format_summary(DatasetFolder(out / "data").info().get("summary", {})),
              "```", "",
              f"Wall time of this invocation: {minutes:.1f} minutes (runs already done are "
              f"reused); sum of the runs' own times: {sum(r.minutes for r in results):.1f} minutes; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads."]
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _tau_rows(groups, base_tau: float, seed: int) -> list:
    rows = []
    for tau in sorted({*TAUS, base_tau}, reverse=True):
        kind = "add" if abs(tau - base_tau) < 1e-9 else f"tau{tau:.2f}"
        rows += [(f"tau {tau:.2f}", r) for r in groups.get(kind, []) if r.spec.seed == seed]
    return rows
