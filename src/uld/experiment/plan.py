"""Which runs the paper's experiments need, and how big each budget is.

Every run shares the benchmark config (``configs/demo.yaml`` plus the budget's overrides) and
differs from it only by its own overrides, so all runs get the same budget (steps, batch,
data). Runs come in three groups:

- ``main``: oracle, baseline (``none``), ``add`` and ``ignore``, once per seed of the budget;
- ``ablations``: tau 0.95 / 0.85 / 0.80, step lr decay and the ignore band (their reference is
  the ``add`` run of the same seed), the upper bounds of mining (``mining.source=truth``), ``add`` + hard
  negatives, the oracle with stronger augmentation (``AUGMENT``; the 0 % point of the 85 %
  ``aug`` rows), and the missingness control (as many train labels, dropped at random);
- ``sweep``: ``none``, ``add`` and perfect mining at each sparsity level of the benchmark
  (the share of train lesions left unlabeled; the 0 % point is the oracle).
"""

from __future__ import annotations

from dataclasses import dataclass

from uld.data.synth import SynthConfig, sparsity_file

MAIN = ("oracle", "none", "add", "ignore")
TAUS = (0.95, 0.90, 0.85, 0.80)
GROUPS = ("main", "ablations", "sweep")
IGNORE_LOW = 0.5
"""The ``band`` ablation's ``mining.ignore_low``: teacher boxes in [0.5, tau) are not taught as
background (above the teacher's typical top background score, about 0.2 in the benchmark)."""
NEIGHBOURS = 2
"""``data.unlabeled_neighbours`` of the ``nb`` ablation: within 2 slices of a labeled key slice
lie 46 % of the benchmark's unlabeled training lesions (23 % on the key slices themselves;
``benchmarks/key_slice_reach.py``)."""
NEIGHBOURS_FROM = 2500
"""``data.unlabeled_neighbours_from`` of the ``nb2late`` ablation: half of the 5,000-step run,
when the baseline's teacher is near its plateau. From step 0 (``nb2``) the neighbours, where the
young teacher mines nothing, held the teacher about 1,000 steps behind the baseline."""
SWEEP_ROWS = ("none", "add", "upper_add")
AUGMENT = ("train.hflip=0.5", "train.resize_range=[0.6, 1.4]")
AUGMENT_LABEL = "flip and resize 0.6-1.4"
"""The ``aug`` rows' stronger augmentation (the preset: no flip, resize 0.8-1.2). At 85 %
unlabeled the final teachers score the labeled lesions on their 153 training slices >= 0.9 at
every size (8-12 pixels: 0.97) and the unlabeled ones of the same sizes near 0 (8-12 pixels:
0.00): with each slice drawn about 130 times, the student memorises those lesions as background,
and the teacher never finds them to mine (RESULTS.md, "Session 8"). More distinct views of each
slice is the usual remedy against memorising wrong labels."""


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
    group: str = "main"
    """``main``, ``ablations`` or ``sweep`` (``uld experiment paper --only GROUP``)."""
    unlabeled: float | None = None
    """Sweep runs: the share of train lesions left unlabeled."""


@dataclass(frozen=True)
class Budget:
    """Dataset, shared overrides and seeds of one budget."""

    name: str
    synth: SynthConfig
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    note: str = ""
    ablation_seeds: tuple[int, ...] = (0,)
    """Seeds of the ablation runs (the first also gets the single-seed controls)."""
    sweep_seeds: tuple[int, ...] = (0,)
    """Seeds of each sparsity level (the budget's ``synth.sparsity_levels``)."""
    sweep_more: tuple[tuple[float, str, tuple[int, ...]], ...] = ()
    """(level, row, seeds): further runs at one sparsity level beyond ``sweep_seeds`` x
    ``SWEEP_ROWS``: more seeds where two cannot tell mining's effect from noise, and the rows of
    ``SWEEP_MORE_ROWS`` where there is the most to recover."""


SWEEP_LEVELS = (0.3, 0.55, 0.7, 0.85)

BENCHMARK = SynthConfig(
    n_train=300, n_val=60, n_test=400, n_negatives=40, seed=0,
    lesions_count="geometric", lesions_mean=3.6, lesions_per_volume=(1, 20),
    disease_organ_share=0.75, same_kind_share=0.9, lesion_contrast=3.0,
    diameter_mm=(8.0, 60.0), diameter_median_mm=19.0, diameter_sigma=0.5,
    missing="recist", recist_max_per_organ=2, recist_max_per_volume=2,
    sparsity_levels=SWEEP_LEVELS,
)
"""The benchmark's data, fitted to DeepLesion's fully annotated sub-volumes (README, 'The
synthetic benchmark'): lesion counts per scan geometric with mean 3.4 (median 3, 30 % of scans
with one; Revised-Test1071: 3.4, median 2, 31 %), lesions that cluster in one organ and repeat
its kind, at contrast 3 and at least 8 mm; train labels RECIST-style, as DeepLesion's are: per
scan the largest lesions of at least 10 mm, at most two per organ and two per scan, which leaves
52 % of the train lesions unlabeled (DeepLesion's test set: 55 % of its lesions carry no
original RECIST box). 300 train, 60 val and 400 test volumes (resampling 160 test volumes
moved a run's AP by 1.5 points, sd of the bootstrap; 400 bring that to about 1, the issue's
bound; RESULTS.md) and 40 fully annotated volumes for hard negatives. Missing labels are
biased, not random: the small lesions and the second and further lesions of a scan stay
unlabeled."""

BUDGETS = {
    "default": Budget(
        "default", BENCHMARK, (), (0, 1, 2, 3, 4),
        "the demo preset's 5,000 steps a run; five seeds for the main rows, two for the "
        "ablations and each sweep point; at 85 % unlabeled five for none, add and perfect "
        "mining, two of tau 0.85 and of the ignore band, and three of none and add with "
        "stronger augmentation",
        ablation_seeds=(0, 1), sweep_seeds=(0, 1),
        sweep_more=((0.85, "none", (2, 3, 4)), (0.85, "add", (2, 3, 4)),
                    (0.85, "upper_add", (2, 3, 4)),
                    (0.85, "tau0.85", (0, 1)), (0.85, "band", (0, 1)),
                    (0.85, "none_aug", (0, 1, 2)), (0.85, "add_aug", (0, 1, 2))),
    ),
    "small": Budget(
        "small", BENCHMARK, (), (0,),
        "the demo preset's 5,000 steps a run; one seed for every row (the default budget's "
        "seed-0 runs)",
    ),
    "tiny": Budget(
        "tiny", SynthConfig(n_train=8, n_val=2, n_test=3, n_negatives=2, size=64, seed=0,
                            depth=(10, 14), sparsity_levels=(0.5,)),
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
    """All runs of the paper's experiments under ``budget``, main rows first, then the
    ablations and the sweep; ``base_tau`` is the benchmark config's tau (its ``add`` runs are
    that row of the tau ablation)."""
    return [*_main_runs(budget), *_ablation_runs(budget, base_tau), *_sweep_runs(budget)]


def select_runs(runs: list[RunSpec], only: tuple[str, ...]) -> list[RunSpec]:
    """The runs named by ``only`` (run names or group names); all but the sweep when empty."""
    if not only:
        return [r for r in runs if r.group != "sweep"]
    known = {r.name for r in runs}
    unknown = sorted(set(only) - known - set(GROUPS))
    if unknown:
        raise ValueError(f"--only {unknown[0]!r}: neither a run nor a group "
                         f"(groups: {', '.join(GROUPS)}; runs: {', '.join(sorted(known))})")
    return [r for r in runs if r.name in only or r.group in only]


def _seeded(kind: str, seed: int, group: str = "main") -> RunSpec:
    label, overrides, mined = _SEEDED[kind]
    return RunSpec(f"{kind}_s{seed}", label, kind, seed, (*overrides, f"train.seed={seed}"),
                   mined=mined, group=group)


def _main_runs(budget: Budget) -> list[RunSpec]:
    return [_seeded(kind, seed) for seed in budget.seeds for kind in MAIN]


def _ablation_runs(budget: Budget, base_tau: float) -> list[RunSpec]:
    runs: list[RunSpec] = []
    main_seeds = set(budget.seeds)
    for seed in budget.ablation_seeds:
        s = (f"train.seed={seed}",)
        runs += [_seeded(kind, seed, "ablations")
                 for kind in ("add", "none") if seed not in main_seeds]  # the references
        for tau in TAUS:
            if abs(tau - base_tau) > 1e-9:
                runs.append(RunSpec(f"tau{tau:.2f}_s{seed}", f"Mining, add, tau {tau:.2f}",
                                    f"tau{tau:.2f}", seed, ("mining.policy=add", f"mining.tau={tau}", *s),
                                    mined=True, group="ablations"))
        runs.append(RunSpec(f"decay_s{seed}", "Mining, add, lr step decay", "decay", seed,
                            ("mining.policy=add", "train.lr_schedule=step", *s), mined=True,
                            group="ablations"))
        runs.append(RunSpec(f"band_s{seed}", f"Mining, add + ignore band [{IGNORE_LOW}, tau)",
                            "band", seed, ("mining.policy=add", f"mining.ignore_low={IGNORE_LOW}",
                                           *s), mined=True, group="ablations"))
        nb = (f"data.unlabeled_neighbours={NEIGHBOURS}",)
        runs.append(RunSpec(f"nb{NEIGHBOURS}_s{seed}",
                            f"Mining, add, also on the unlabeled slices within {NEIGHBOURS}",
                            f"nb{NEIGHBOURS}", seed, ("mining.policy=add", *nb, *s), mined=True,
                            group="ablations"))
        runs.append(RunSpec(f"nb{NEIGHBOURS}late_s{seed}",
                            f"Mining, add, also on the unlabeled slices within {NEIGHBOURS} from "
                            f"step {NEIGHBOURS_FROM:,}", f"nb{NEIGHBOURS}late", seed,
                            ("mining.policy=add", *nb,
                             f"data.unlabeled_neighbours_from={NEIGHBOURS_FROM}", *s),
                            mined=True, group="ablations"))
        runs.append(RunSpec(f"upper_nb{NEIGHBOURS}_s{seed}",
                            f"Upper bound: add the true unlabeled lesions, also on the unlabeled "
                            f"slices within {NEIGHBOURS}", f"upper_nb{NEIGHBOURS}", seed,
                            ("mining.policy=add", "mining.source=truth", *nb, *s), mined=True,
                            group="ablations"))
        runs.append(RunSpec(f"oracle_aug_s{seed}", f"Oracle, {AUGMENT_LABEL}", "oracle_aug",
                            seed, (*_SEEDED["oracle"][1], *AUGMENT, *s), group="ablations"))
        for kind, label, policy in (
                ("upper_add", "Upper bound: add the true unlabeled lesions", "add"),
                ("upper_ignore", "Upper bound: ignore the true unlabeled lesions", "ignore")):
            runs.append(RunSpec(f"{kind}_s{seed}", label, kind, seed,
                                (f"mining.policy={policy}", "mining.source=truth", *s),
                                mined=True, group="ablations"))
    first = budget.ablation_seeds[0]
    s = (f"train.seed={first}",)
    runs.append(RunSpec(f"add_pminus_s{first}", "Mining, add + hard negatives", "add_pminus",
                        first, ("mining.policy=add", *s), mined=True,
                        hard_negatives_from=f"add_s{first}", group="ablations"))
    controls = []
    if budget.synth.missing == "recist":
        random = "data.annotations=annotations_random.csv"
        controls += [
            ("none_random", "EMA teacher, no mining, random missingness",
             ("mining.policy=none", random), False),
            ("add_random", "Mining, add, random missingness", ("mining.policy=add", random), True),
        ]
    if budget.synth.missing != "recist" or budget.synth.recist_choice != "largest":
        controls.append(("none_largest",
                         "EMA teacher, no mining, RECIST-style missingness (largest first)",
                         ("mining.policy=none", "data.annotations=annotations_largest.csv"), False))
    for kind, label, overrides, mined in controls:
        runs.append(RunSpec(f"{kind}_s{first}", label, kind, first, (*overrides, *s),
                            mined=mined, group="ablations"))
    return runs


_SWEEP = {
    "none": ("EMA teacher, no mining", ("mining.policy=none",), False),
    "add": ("Mining, add", ("mining.policy=add",), True),
    "upper_add": ("Perfect mining, add", ("mining.policy=add", "mining.source=truth"), True),
}
SWEEP_MORE_ROWS = {
    "tau0.85": ("Mining, add, tau 0.85", ("mining.policy=add", "mining.tau=0.85"), True),
    "band": (f"Mining, add + ignore band [{IGNORE_LOW}, tau)",
             ("mining.policy=add", f"mining.ignore_low={IGNORE_LOW}"), True),
    "none_aug": (f"EMA teacher, no mining, {AUGMENT_LABEL}", ("mining.policy=none", *AUGMENT), False),
    "add_aug": (f"Mining, add, {AUGMENT_LABEL}", ("mining.policy=add", *AUGMENT), True),
}
"""Further rows for the sweep levels with the most to recover: mining settings that validation
preferred to the paper's on the headline benchmark (the tau and ignore-band ablations), and
``none`` and ``add`` with stronger augmentation (``AUGMENT``)."""
SWEEP_REFERENCE = {"add_aug": "none_aug"}
"""The row each further row of ``SWEEP_MORE_ROWS`` is compared with where not ``none``: a row
that changes the training as well as the mining is compared with the baseline trained alike."""


def _sweep_runs(budget: Budget) -> list[RunSpec]:
    rows = {**_SWEEP, **SWEEP_MORE_ROWS}
    runs = []
    for level in budget.synth.sparsity_levels:
        if level == 0.0:
            continue  # the oracle's labels: the main rows' oracle is that point
        pct = round(100 * level)
        cells = [(seed, kind) for seed in budget.sweep_seeds for kind in SWEEP_ROWS]
        cells += [(seed, kind) for more_level, kind, seeds in budget.sweep_more
                  if more_level == level for seed in seeds]
        for seed, kind in cells:
            label, overrides, mined = rows[kind]
            runs.append(RunSpec(
                f"sweep{pct:02d}_{kind}_s{seed}", f"{label}, {pct} % unlabeled",
                f"sweep{pct:02d}_{kind}", seed,
                (*overrides, f"data.annotations={sparsity_file(level)}", f"train.seed={seed}"),
                official=True, mined=mined, group="sweep", unlabeled=level))
    return runs
