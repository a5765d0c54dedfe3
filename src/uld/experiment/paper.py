"""``uld experiment paper``: every comparison of the paper on the synthetic benchmark.

Runs (``plan.paper_runs``): the main rows (oracle, baseline ``none``, ``add``, ``ignore``) per
seed, the ablations (tau, lr decay, upper bounds, hard negatives, random missingness) and, with
``--only sweep``, the sparsity sweep. Each teacher is evaluated on the fully annotated test
split with the P3D protocol; the report (``report.md``) holds Tables I-IV, every comparison as a
paired difference with its 95 % interval over seeds, the oracle-baseline gap and how much of it
mining closes, the sweep, the paper's orderings as found, and FROC, sweep and training plots.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from uld.atomic import write_text
from uld.config import Config, load_config, override
from uld.data.dataset import DatasetFolder
from uld.data.synth import format_summary
from uld.experiment.plan import BUDGETS, MAIN, TAUS, Budget, RunSpec, paper_runs, select_runs
from uld.experiment.report import (
    ablation_table,
    by_kind,
    compare,
    gap_lines,
    mean_ap,
    on_seeds,
    ordering,
    paired_table,
    per_seed_table,
    plot_main_froc,
    plot_sweep,
    plot_training_diagnostics,
    read_run,
    sweep_comparisons,
    sweep_rows,
    sweep_table,
    table_one,
)
from uld.experiment.runner import (
    RESULT_FILE,
    ensure_dataset,
    ensure_hard_negatives,
    finished_elsewhere,
    has_hard_negatives,
    run_jobs,
    volume_noise,
)

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
    all_runs = paper_runs(plan, base.mining.tau)
    runs = select_runs(all_runs, only)
    todo = [r for r in runs if not finished_elsewhere(out / "runs" / r.name)]
    for wave in ([r for r in todo if not r.hard_negatives_from],
                 [r for r in todo if r.hard_negatives_from]):
        jobs = [(f"{spec.name}: {spec.label}", _run_config(base, spec, out, data, progress),
                 out / "runs" / spec.name) for spec in wave]
        run_jobs(jobs, data, workers, progress)
    minutes = (time.perf_counter() - started) / 60
    finished = [r for r in all_runs if (out / "runs" / r.name / RESULT_FILE).is_file()]
    return write_report(out, plan, finished, base.mining.tau, minutes, workers)


def _run_config(base: Config, spec: RunSpec, out: Path, data: Path, progress: bool) -> Config:
    config = override(base, *spec.overrides)
    if not spec.hard_negatives_from:
        return config
    source = out / "runs" / spec.hard_negatives_from
    if not (source / "model.pt").is_file() and not has_hard_negatives(source):
        raise FileNotFoundError(f"{spec.name} needs the finished run {source} first")
    return override(config, f"data.hard_negatives={ensure_hard_negatives(source, data, progress)}")


def write_report(out: Path, plan: Budget, runs: list[RunSpec], base_tau: float,
                 minutes: float, workers: int = 1) -> Path:
    """``report.md``, ``froc.png``, ``training.png`` and ``sweep.png`` from the finished runs."""
    results = [read_run(s, out / "runs" / s.name, base_tau) for s in runs]
    groups = by_kind(results)
    main_kinds = [*MAIN, "add_pminus"]
    plot_main_froc(groups, main_kinds, out / "froc.png")
    first = plan.seeds[0]
    traced = {r.spec.name: out / "runs" / r.spec.name for r in results
              if r.spec.seed == first and r.spec.kind in ("oracle", "none", "add", "ignore")}
    if traced:
        plot_training_diagnostics(traced, base_tau, out / "training.png")
    seeds = sorted({r.spec.seed for r in groups.get("oracle", [])})
    lines = [
        f"# uld experiment paper (budget {plan.name}: {plan.note})",
        "",
        "Every teacher (the best validated one, as in the paper) evaluated on the fully annotated "
        "synthetic test split with the P3D protocol (sensitivity in % at false positives per "
        "volume; AVG = mean over 0.125..8; AP in %). Rows with several seeds show mean ± "
        "standard deviation; comparisons are paired differences (same seed: same data, batches "
        "and initialisation) with 95 % t intervals over the seeds, and 'effect' means that "
        "interval excludes 0.",
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
        *_noise_lines(out, groups, first),
        "",
        "## Every comparison, paired over seeds",
        "",
        paired_table(groups),
        "",
        "## The paper's orderings",
        "",
    ]
    lines += _orderings(groups, base_tau) or ["- none yet: they need the add, ignore and none rows "
                                              "(and the tau, lr and P- ablations)"]
    sweep = sweep_rows(groups)
    if sweep:
        plot_sweep(groups, out / "sweep.png")
        lines += ["", "## Sparsity sweep: where missing labels start to hurt", "",
                  "The same images; train labels kept RECIST-style (the largest lesion of each scan "
                  "first, then the second largest, ...) until the given share of train lesions is "
                  "unlabeled. Perfect mining adds the true unlabeled lesions of each training slice "
                  "(`mining.source=truth`). 'recovers' = (row - none) / (oracle - none), both means "
                  "over the seeds the row shares with none ('seeds': every seed of the level; the "
                  "paired table below gives each row's count).", "",
                  sweep_table(sweep), "", "![sweep](sweep.png)", "",
                  "Paired over the seeds each pair shares (95 % t intervals):", "",
                  paired_table(groups, sweep_comparisons(groups))]
    tau_rows = _tau_rows(groups, base_tau, first)
    lines += ["", f"## Table II: tau (seed {first})", "", ablation_table(tau_rows), ""]
    policy_rows = [(k.replace("_", " "), r)
                   for k in ("none", "add", "band", "ignore", "upper_add", "upper_ignore")
                   for r in groups.get(k, []) if r.spec.seed == first]
    lines += [f"## Table III: mined boxes added or ignored (seed {first})", "",
              "upper add / upper ignore: the true unlabeled lesions of each training slice "
              "added or ignored, as a perfect teacher would mine them (`mining.source=truth`).",
              "", ablation_table(policy_rows), ""]
    decay = on_seeds(groups, "decay", {first})
    add_first = on_seeds(groups, "add", {first})
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
    lines += ["## Training: the teacher's scores and the mined boxes", "",
              f"Seed {first}. Scores: for each true lesion on 64 fixed training slices, the best "
              "score of the teacher's boxes on it (IoU >= 0.5), labeled and unlabeled lesions "
              "apart; background boxes overlap no lesion. Precision of the boxes mined in each "
              "500-step window (mined boxes on an unlabeled true lesion) and recall (unlabeled "
              "lesions on the training slices that a mined box hit), against the generator's "
              "complete labels. 'Every run' below re-mines the whole training set with each "
              "run's final teacher.", ""]
    if traced:
        lines += ["![training](training.png)", ""]
    if (out / "runs" / f"add_s{first}" / "mined_lesions.png").is_file():
        lines += [f"Mined lesions of the final `add` teacher (seed {first}): labeled boxes green, "
                  "mined boxes blue with scores, every true lesion dashed white.", "",
                  f"![mined lesions](runs/add_s{first}/mined_lesions.png)", ""]
    lines += ["## Every run", "", per_seed_table(results), "",
              "## Data", "", "```", format_summary(DatasetFolder(out / "data").info().get("summary", {})),
              "```", "",
              f"Seeds of the oracle: {seeds}. Wall time of this invocation: {minutes:.1f} minutes "
              "(runs already done are reused); sum of the runs' own times: "
              f"{sum(r.minutes for r in results if r.minutes == r.minutes):.1f} minutes; "
              f"torch {torch.__version__}, " + (
                  f"{workers} runs at a time" if workers > 1
                  else f"{torch.get_num_threads()} threads") + "."]
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _orderings(groups, base_tau: float) -> list[str]:
    lines = []
    shared = set.intersection(*({r.spec.seed for r in groups.get(k, [])}
                                for k in ("add", "ignore", "none")))
    if shared:  # means over the seeds all three rows have, as the paired differences below
        lines.append(ordering("policy", [(k, mean_ap(on_seeds(groups, k, shared)))
                                         for k in ("add", "ignore", "none")])
                     + f" (means over seeds {sorted(shared)})")
        for a, b in (("add", "none"), ("ignore", "none"), ("add", "ignore")):
            d = compare(groups, a, b)
            if d is not None:
                lines.append(f"  - {a} - {b}: {d.text()} AP points ({d.n} seeds)")
    ablation_seeds = {r.spec.seed for r in groups.get(f"tau{TAUS[0]:.2f}", [])}
    means = []
    for tau in sorted({*TAUS, base_tau}, reverse=True):
        runs = on_seeds(groups, "add" if abs(tau - base_tau) < 1e-9 else f"tau{tau:.2f}",
                        ablation_seeds)
        if runs:
            means.append((f"tau {tau:.2f}", mean_ap(runs, "val_ap"), mean_ap(runs)))
    if len(means) > 1:
        best = max(means, key=lambda m: m[1])
        lines.append(f"- tau (paper: 0.90 best): best on validation here {best[0]} (val AP "
                     f"{best[1]:.1f}, test AP {best[2]:.1f}; means over the ablation seeds; "
                     + ", ".join(f"{t}: {v:.1f} / {a:.1f}" for t, v, a in means) + ")")
    for kind, name, claim in (("decay", "learning rate", [("constant", "add"), ("step decay", "decay")]),
                              ("add_pminus", "hard negatives", [("add + P-", "add_pminus"),
                                                                ("add", "add")])):
        seeds = {r.spec.seed for r in groups.get(kind, [])}
        values = [(label, mean_ap(runs)) for label, k in claim
                  if (runs := on_seeds(groups, k, seeds))]
        if len(values) == 2:
            lines.append(ordering(name, values))
    return lines


def _noise_lines(out: Path, groups, seed: int) -> list[str]:
    """How much the choice of test volumes alone moves AP (bootstrap over volumes)."""
    lines = []
    for kind in ("oracle", "none", "add"):
        runs = on_seeds(groups, kind, {seed})
        if not runs:
            continue
        noise = volume_noise(out / "runs" / runs[0].spec.name, out / "data")
        if noise is not None:
            lines.append(f"- test-split noise, {kind} (seed {seed}): AP {noise.mean:.1f}; "
                         f"resampling the test volumes moves it by {noise.sd:.1f} points (sd), "
                         f"95 % interval [{noise.low:.1f}, {noise.high:.1f}] "
                         f"({noise.n} bootstrap resamples)")
    return lines


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
