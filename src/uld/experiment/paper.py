"""``uld experiment paper``: every comparison of the paper on the synthetic benchmark.

Runs (``plan.paper_runs``): oracle, baseline (``none``), ``add`` and ``ignore`` per seed;
``add`` + hard negatives, tau 0.95 / 0.90 / 0.85 / 0.80 and step lr decay on the first seed.
Each teacher is evaluated on the fully annotated test split with the P3D protocol; the
report (``report.md``) holds Tables I-IV, the oracle-baseline gap and how much of it mining
closes, the paper's orderings as found, mining precision/recall, FROC and mining plots.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import torch

from uld.atomic import write_text
from uld.config import Config, load_config, override
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
    workers: int = 1,
) -> Path:
    """Run (or finish) the experiment into ``out``; returns the path of ``report.md``.

    ``overrides`` apply to every run (after the budget's); ``only`` limits the runs to these
    names (the report then covers what is done). ``workers`` > 1 trains that many runs at once
    in separate processes, each with its share of the CPU threads (on 2 cores, 2 workers of
    one thread finish two runs in about 0.7 of the time of one after the other); runs that
    retrain with hard negatives start once the run they mine from is done.
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
    first_wave = [r for r in runs if not r.hard_negatives_from]
    second_wave = [r for r in runs if r.hard_negatives_from]
    for wave in (first_wave, second_wave):
        jobs = [(spec, _run_config(base, spec, out, data, progress)) for spec in wave]
        if workers <= 1:
            for i, (spec, config) in enumerate(jobs, 1):
                print(f"[{i}/{len(jobs)}] {spec.name}: {spec.label}", flush=True)
                _train_and_evaluate(config, out / "runs" / spec.name, data, progress)
        else:
            _in_parallel(jobs, out, data, workers)
    minutes = (time.perf_counter() - started) / 60
    return write_report(out, plan, runs, base.mining.tau, minutes, workers)


def _run_config(base: Config, spec: RunSpec, out: Path, data: Path, progress: bool) -> Config:
    config = override(base, *spec.overrides)
    if not spec.hard_negatives_from:
        return config
    source = out / "runs" / spec.hard_negatives_from
    if not (source / "model.pt").is_file():
        raise FileNotFoundError(f"{spec.name} needs the finished run {source} first")
    return override(config, f"data.hard_negatives={ensure_hard_negatives(source, data, progress)}")


def _train_and_evaluate(config: Config, run_dir: Path, data: Path, progress: bool,
                        threads: int | None = None) -> float:
    """Train (or reuse) and evaluate one run; returns its test AP."""
    if threads is not None:
        torch.set_num_threads(threads)
    train_or_reuse(config, run_dir, progress)
    return evaluate_run(run_dir, data, read_gt(data, split="test"), progress)["ap"]


def _in_parallel(jobs: list[tuple[RunSpec, Config]], out: Path, data: Path, workers: int) -> None:
    workers = min(workers, len(jobs))  # a lone run (the P- retraining) gets every thread
    threads = max(1, (os.cpu_count() or 1) // workers)
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_train_and_evaluate, config, out / "runs" / spec.name, data,
                               False, threads): spec for spec, config in jobs}
        plural = "s" if threads > 1 else ""
        print(f"{len(jobs)} runs, {workers} at a time ({threads} thread{plural} each)", flush=True)
        for done, future in enumerate(as_completed(futures), 1):
            spec = futures[future]
            try:
                ap = future.result()
            except Exception as error:
                raise RuntimeError(f"run {spec.name} failed: {error}") from error
            print(f"[{done}/{len(jobs)}] {spec.name}: AP {100 * ap:.1f} "
                  f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)


def write_report(out: Path, plan: Budget, runs: list[RunSpec], base_tau: float,
                 minutes: float, workers: int = 1) -> Path:
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
    policy_rows = [(k.replace("_", " "), r)
                   for k in ("none", "add", "ignore", "upper_add", "upper_ignore")
                   for r in groups.get(k, []) if r.spec.seed == first]
    lines += [f"## Table III: mined boxes added or ignored (seed {first})", "",
              "upper add / upper ignore: the true unlabeled lesions of each training slice "
              "added or ignored, as a perfect teacher would mine them (`mining.source=truth`).",
              "",
              ablation_table(policy_rows), ""]
    if decay and add_first:
        lines += [f"## Table IV: learning rate (seed {first})", "",
                  ablation_table([("constant", add_first[0]), ("step decay", decay[0])]), ""]
    benchmark = _missingness(plan)
    missing_rows = [(label, r) for label, kind in (
        ("oracle (complete labels)", "oracle"),
        (f"no mining, {benchmark} (the benchmark)", "none"),
        ("no mining, RECIST-style, largest first", "none_largest"),
        ("no mining, random (as many labels as the benchmark)", "none_random"),
        (f"add, {benchmark} (the benchmark)", "add"),
        ("add, random (as many labels as the benchmark)", "add_random"))
        for r in groups.get(kind, []) if r.spec.seed == first]
    if any(r.spec.kind in ("none_largest", "none_random") for _, r in missing_rows):
        lines += [f"## Which missing labels hurt (seed {first})", "",
                  "The same images; only which train lesions keep their label differs.", "",
                  ablation_table(missing_rows), ""]
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
              f"torch {torch.__version__}, " + (
                  f"{workers} runs at a time" if workers > 1
                  else f"{torch.get_num_threads()} threads") + "."]
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _missingness(plan: Budget) -> str:
    synth = plan.synth
    if synth.missing == "random":
        return f"random, {100 * synth.missing_rate:.0f} % dropped"
    return "RECIST-style, " + ("largest first" if synth.recist_choice == "largest"
                               else "any measurable lesions")


def _tau_rows(groups, base_tau: float, seed: int) -> list:
    rows = []
    for tau in sorted({*TAUS, base_tau}, reverse=True):
        kind = "add" if abs(tau - base_tau) < 1e-9 else f"tau{tau:.2f}"
        rows += [(f"tau {tau:.2f}", r) for r in groups.get(kind, []) if r.spec.seed == seed]
    return rows
