"""Compare the cross-fold harvest runs (``benchmarks/cross_harvest.py``) with the experiment's
rows at the same sparsity, paired by seed.

Usage::

    python benchmarks/harvest_compare.py benchmarks/probes/issue11/harvest85 \
        --runs benchmarks/paper/runs --level 85

``PROBES`` holds one folder per seed (``s0``, ``s1``, ...), each with ``harvest.json`` and the
final runs (the folders named in ``FINALS``, with ``summary.json`` and ``test_p3d.json``).
Prints each seed's test AP, the harvests' counts, and the paired 95 % t intervals (test AP,
AVG, best validation AP) against the baseline, ``add``, perfect mining and the oracle, with
the share of the oracle's lead that each harvest closes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compare_runs import run_scores
from uld.boxes import iou
from uld.data.dataset import Annotations, DatasetFolder, read_annotations
from uld.experiment.stats import paired_by_seed

FINALS = {"final": "harvest, key slices", "final_volumes": "harvest, volumes, tau 0.9",
          "final_volumes_min3_tau0.98": "harvest, volumes, >= 3 slices at >= 0.98",
          "final_volumes_min3_tau0.98_fg": "the same, new slices foreground only"}


def slice_completeness(harvest: Annotations, truth: Annotations,
                       labeled: set[tuple[str, str]]) -> dict[str, int]:
    """How complete the training key slices of a harvest's labels are: on the labeled key slices
    (``orig``) and on the key slices the harvest added (``new``), how many of the lesions that
    cross them (``truth``, every slice of every lesion) have a box there (IoU >= 0.5), split
    into lesions the run's labels name (``labeled``) and the others. A lesion without a box on
    a training slice is taught as background there."""
    targets = harvest.by_slice()
    mined = harvest.extra["lesion"] == "mined"
    keys = set(harvest.key_slices())
    new = {(str(v), int(z)) for v, z, m, k in zip(harvest.volume, harvest.z, mined, harvest.key)
           if m and k} - set(harvest.select(~mined).key_slices())
    counts: dict[str, int] = {}
    for i, (v, z, les) in enumerate(zip(truth.volume, truth.z, truth.extra["lesion"])):
        key = (str(v), int(z))
        if key not in keys:
            continue
        where = "new" if key in new else "orig"
        kind = "labeled" if (str(v), str(les)) in labeled else "unlabeled"
        covered = iou(truth.boxes[i][None], targets[key])[0].max() >= 0.5
        name = f"{where} slices: {kind} lesions {'with a box' if covered else 'without'}"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("probes", type=Path)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/paper/runs"))
    parser.add_argument("--level", type=int, default=85, help="the sweep level, in %%")
    parser.add_argument("--data", type=Path,
                        help="the benchmark's dataset: also count the lesions with and without a "
                             "box on each harvest's training slices")
    args = parser.parse_args()
    truth, labeled = None, set()
    if args.data:
        folder = DatasetFolder(args.data)
        train = folder.volumes("train")
        truth = folder.annotations("annotations_full.csv").for_volumes(train)
        labels = folder.annotations(f"annotations_unlabeled{args.level}.csv").for_volumes(train)
        labeled = {(str(v), str(les)) for v, les in zip(labels.volume, labels.extra["lesion"])}
    rows = {"none": f"sweep{args.level}_none", "add": f"sweep{args.level}_add",
            "perfect mining": f"sweep{args.level}_upper_add", "oracle": "oracle"}
    table: dict[str, dict[int, dict[str, float]]] = {name: {} for name in [*rows, *FINALS.values()]}
    for seed_dir in sorted(args.probes.glob("s[0-9]*")):
        seed = int(seed_dir.name[1:])
        for name, run in rows.items():
            found = run_scores(args.runs / f"{run}_s{seed}")
            if found:
                table[name][seed] = found
        for run_name, name in FINALS.items():
            found = run_scores(seed_dir / run_name)
            if found:
                table[name][seed] = found
        if not (seed_dir / "harvest.json").is_file():
            continue
        harvest = json.loads((seed_dir / "harvest.json").read_text())
        parts = [f"key slices {sum(f['true'] for f in harvest['folds'])} true of "
                 f"{sum(f['mined'] for f in harvest['folds'])}"]
        for key, h in harvest.items():
            if key.startswith("volumes"):
                parts.append(f"{key}: {h['mined']} mined, precision {h['precision']:.2f}, "
                             f"recall {h['recall']:.2f} of {h['unlabeled_lesions']}")
        print(f"seed {seed}: " + "; ".join(parts))
        if truth is not None:
            for csv_file in sorted(seed_dir.glob("annotations_harvest_volumes*.csv")):
                counts = slice_completeness(read_annotations(csv_file), truth, labeled)
                print(f"  {csv_file.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    seeds = sorted(table["none"])
    print("\n| row | " + " | ".join(f"s{s}" for s in seeds) + " |")
    print("|---" * (len(seeds) + 1) + "|")
    for name, by_seed in table.items():
        cells = [f"{by_seed[s]['ap']:.1f}" if s in by_seed else "-" for s in seeds]
        print(f"| {name} | " + " | ".join(cells) + " |")

    print("\n| comparison | seeds | test AP | AVG | best val AP | share of oracle - none |")
    print("|---" * 6 + "|")
    for name in FINALS.values():
        if not table[name]:
            continue
        for reference in ("none", "add", "perfect mining", "oracle"):
            mine, ref = table[name], table[reference]
            cells = [paired_by_seed({s: v[k] for s, v in mine.items()},
                                    {s: v[k] for s, v in ref.items()}) for k in ("ap", "avg", "val")]
            share = ""
            if reference == "none":
                gap = paired_by_seed({s: v["ap"] for s, v in table["oracle"].items() if s in mine},
                                     {s: v["ap"] for s, v in ref.items()})
                share = f"{cells[0].mean / gap.mean:.0%} of {gap.mean:.1f}"
            print(f"| {name} - {reference} | {cells[0].n} | {cells[0].text()} | {cells[1].text()} | "
                  f"{cells[2].text()} | {share} |")


if __name__ == "__main__":
    main()
