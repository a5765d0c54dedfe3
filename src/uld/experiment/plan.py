"""Which runs the paper's experiments need, and how big each budget is.

Every run shares the benchmark config (``configs/demo.yaml`` plus the budget's overrides) and
differs from it only by its own overrides, so all runs get the same budget (steps, batch,
data). Main rows (oracle, baseline, ``add``, ``ignore``) run once per seed; the ablations
(hard negatives, tau, learning-rate decay, and the missingness control: the same number of
train labels dropped at random instead of RECIST-style) run on the first seed and share the ``add`` run of
that seed as their reference (the benchmark's tau, constant lr, no P-).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from uld.data.synth import SynthConfig

MAIN = ("oracle", "none", "add", "ignore")
TAUS = (0.95, 0.90, 0.85, 0.80)


@dataclass(frozen=True)
class RunSpec:
    """One training run of an experiment.

    name: folder name (unique). label: the row's text. overrides: config overrides on top of
    the benchmark config. kind: the variant without the seed (``add``, ``tau0.85``, ...).
    hard_negatives_from: the run whose final teacher mines the hard negatives this run
    retrains with (P-), or None.
    """

    name: str
    label: str
    kind: str
    seed: int
    overrides: tuple[str, ...]
    official: bool = True
    mined: bool = False
    hard_negatives_from: str | None = None


@dataclass(frozen=True)
class Budget:
    """Dataset, shared overrides and seeds of one budget."""

    name: str
    synth: SynthConfig
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    note: str = ""
    ablations: bool = field(default=True)


BENCHMARK = SynthConfig(
    n_train=200, n_val=20, n_test=40, n_negatives=40, seed=0,
    lesions_mean=8.0, lesions_per_volume=(1, 14), disease_organ_share=0.75, same_kind_share=0.9,
    lesion_contrast=3.0, diameter_mm=(8.0, 50.0), diameter_median_mm=16.0,
    missing="random", missing_rate=0.55,
)
"""The benchmark's data (README, 'The synthetic benchmark'): several lesions per scan that
cluster in one organ and repeat its kind (metastases), lesions of at least 8 mm at contrast 3
(so that the detectors of a CPU budget can learn them at all), and 55 % of the train labels
dropped at random (DeepLesion: about half the lesions carry no box).
Random, not RECIST-style: RECIST-style selection (>= 10 mm, two per organ, five per scan,
largest first or any) cost the baseline 0-4 AP points against the oracle, within the seed
noise, and single runs with random dropping 11-16; three seeds at 55 % then gave 1.2
(``benchmarks/RESULTS.md``: at 1,500 steps the run-to-run noise is as large as the effects).
The experiment keeps the largest-first selection as a control."""

BUDGETS = {
    "default": Budget(
        "default", BENCHMARK, ("train.iterations=1500",), (0, 1, 2),
        "1,500 steps a run; three seeds for the main rows, one for the ablations",
    ),
    "small": Budget(
        "small", BENCHMARK, ("train.iterations=1500",), (0,),
        "1,500 steps a run; one seed for every row (the default budget's seed-0 runs)",
    ),
    "tiny": Budget(
        "tiny", SynthConfig(n_train=8, n_val=2, n_test=3, n_negatives=2, size=64, seed=0,
                            depth=(10, 14)),
        ("train.iterations=6", "train.eval_every=6", "train.checkpoint_every=3",
         "train.warmup_iterations=2", "train.batch_size=2", "mining.start_iteration=2",
         "mining.tau=0.05", "mining.gt_nms_iou=0.3", "train.log_every=2"),
        (0,), "a pipeline check (CI): numbers mean nothing",
    ),
}

_SEEDED = {
    "oracle": ("Oracle (complete labels)", ("data.annotations=annotations_full.csv",
                                           "mining.policy=none"), False),
    "none": ("EMA teacher, no mining", ("mining.policy=none",), False),
    "add": ("Mining, add", ("mining.policy=add",), True),
    "ignore": ("Mining, ignore", ("mining.policy=ignore",), True),
}


def paper_runs(budget: Budget, base_tau: float) -> list[RunSpec]:
    """All runs of the paper's experiments under ``budget``; ``base_tau`` is the benchmark
    config's tau (its ``add`` run is that row of the tau ablation)."""
    runs = []
    for seed in budget.seeds:
        for kind in MAIN:
            label, overrides, mined = _SEEDED[kind]
            runs.append(RunSpec(f"{kind}_s{seed}", label, kind, seed,
                                (*overrides, f"train.seed={seed}"), mined=mined))
    if not budget.ablations:
        return runs
    first = budget.seeds[0]
    seed = (f"train.seed={first}",)
    runs.append(RunSpec(f"add_pminus_s{first}", "Mining, add + hard negatives", "add_pminus",
                        first, ("mining.policy=add", *seed), mined=True,
                        hard_negatives_from=f"add_s{first}"))
    for tau in TAUS:
        if abs(tau - base_tau) > 1e-9:
            runs.append(RunSpec(f"tau{tau:.2f}_s{first}", f"Mining, add, tau {tau:.2f}",
                                f"tau{tau:.2f}", first,
                                ("mining.policy=add", f"mining.tau={tau}", *seed), mined=True))
    runs.append(RunSpec(f"decay_s{first}", "Mining, add, lr step decay", "decay", first,
                        ("mining.policy=add", "train.lr_schedule=step", *seed), mined=True))
    controls = [
        ("upper_add", "Upper bound: add the true unlabeled lesions",
         ("mining.policy=add", "mining.source=truth"), True),
        ("upper_ignore", "Upper bound: ignore the true unlabeled lesions",
         ("mining.policy=ignore", "mining.source=truth"), True),
        ("none_largest", "EMA teacher, no mining, RECIST-style missingness (largest first)",
         ("mining.policy=none", "data.annotations=annotations_largest.csv"), False),
    ]
    if budget.synth.missing == "recist":
        random = "data.annotations=annotations_random.csv"
        controls += [
            ("none_random", "EMA teacher, no mining, random missingness",
             ("mining.policy=none", random), False),
            ("add_random", "Mining, add, random missingness", ("mining.policy=add", random), True),
        ]
    for kind, label, overrides, mined in controls:
        runs.append(RunSpec(f"{kind}_s{first}", label, kind, first, (*overrides, *seed),
                            mined=mined))
    return runs
