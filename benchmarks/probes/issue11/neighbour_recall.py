"""Probe (issue 11): does the teacher find on the slices next to its key slices what it has
memorised as background on the key slices themselves?

The student trains on the key slices alone, so the 2.5D stacks centred 1 or 2 slices away are
inputs it never trained on, though they show the same lesions. For a run's teacher (its
``best.pt``) this mines, with the run's own mining settings, every training key slice and every
slice up to ``--reach`` away from one (``data.unlabeled_neighbours``: boxes labeled within that
distance count as known), and prints precision and recall of the mined boxes against the
complete labels by distance from the nearest key slice.

    OMP_NUM_THREADS=1 python benchmarks/probes/issue11/neighbour_recall.py RUN [RUN ...] \
        --data RUNS/data [--reach 2]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from uld.config import load_config
from uld.data.samples import KeySliceDataset
from uld.data.sources import open_training_data
from uld.infer.predict import load_model
from uld.mining.diagnostics import MiningCounts
from uld.mining.harvest import count_mining, mine_samples


def by_distance(run: Path, data: Path, reach: int, batch_size: int = 8) -> dict[int, MiningCounts]:
    """Mining counts of ``run``'s best teacher by distance (0 = the key slice) from a key slice."""
    teacher, _ = load_model(run)
    teacher.eval()
    config = load_config(run / "config.yaml", [f"data.root={data.resolve()}"])
    training = open_training_data(config.data)
    dataset = KeySliceDataset(training.store, training.labels,
                              replace(config.data, unlabeled_neighbours=reach), training.truth)
    keys: dict[str, list[int]] = {}
    for name, z in dataset.items[:dataset.key_items]:
        keys.setdefault(name, []).append(z)
    indices = list(range(dataset.key_items)) + list(range(dataset.key_items * 2 * reach, len(dataset)))
    counts: dict[int, MiningCounts] = {}
    for start in range(0, len(indices), batch_size):
        batch = [dataset[i] for i in indices[start:start + batch_size]]
        mined = [b.cpu() for b, _ in mine_samples(teacher, batch, config.mining)]
        for sample, boxes in zip(batch, mined):
            d = min(abs(sample.z - z) for z in keys[sample.volume])
            counts[d] = counts.get(d, MiningCounts()) + count_mining([sample], [boxes])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--reach", type=int, default=2)
    args = parser.parse_args()
    print("| run | slices from the key slice | mined | precision | unlabeled lesions | recall |\n"
          "|---|---|---|---|---|---|")
    for run in args.runs:
        for d, c in sorted(by_distance(run, args.data, args.reach).items()):
            print(f"| {run.name} | {d} | {c.mined} | {c.precision:.2f} | {c.missing} | "
                  f"{c.recall:.2f} |", flush=True)


if __name__ == "__main__":
    main()
