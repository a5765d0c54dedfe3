"""Probe: train a harvest's new slices on their foreground only.

A whole-volume harvest (``benchmarks/cross_harvest.py --final volumes``) gives each lesion it
keeps a key slice of its own. Trained as ordinary labels, those slices lost the baseline 7 AP
(RESULTS.md, "Session 9"): about half of the lesions crossing them were not harvested, and each
was taught as background. This probe writes the harvest's labels with the ``background``
column (0 on the mined rows, 1 on the labels), so that a slice holding only mined boxes trains
them as lesions and nothing there as background, then trains and tests a baseline on it with
the harvest's own final-run settings.

Usage (one seed a process, one thread each)::

    OMP_NUM_THREADS=1 python benchmarks/foreground_only.py RUNS/data \
        benchmarks/probes/issue11/harvest85/s0/annotations_harvest_volumes_min3_tau0.98.csv \
        RUNS/harvest85/s0/final_fg --seed 0

``OUT`` receives ``annotations_fg.csv`` and the run (``config.yaml``, ``summary.json``,
``test_p3d.json``, ...). A finished run is not trained again.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from uld.config import load_config
from uld.data.dataset import DataError, write_csv
from uld.experiment.runner import train_and_evaluate


def foreground_only_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The harvest file's header and rows with a ``background`` column: 0 where the ``lesion``
    column names a mined lesion (``mined...``), else 1."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if "lesion" not in header:
            raise DataError(f"{path}: no lesion column to tell mined rows from labels")
        at = header.index("lesion")
        rows = [[*row, "0" if row[at].startswith("mined") else "1"] for row in reader]
    return [*header, "background"], rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="the benchmark's dataset folder")
    parser.add_argument("harvest", type=Path, help="a cross_harvest.py annotation file")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override (after the others)")
    args = parser.parse_args()
    out, data = args.out.resolve(), args.data.resolve()
    out.mkdir(parents=True, exist_ok=True)
    labels = out / "annotations_fg.csv"
    write_csv(labels, *foreground_only_rows(args.harvest))
    config = load_config("demo", [f"data.root={data}", f"train.seed={args.seed}",
                                  f"data.annotations={labels}", "mining.policy=none", *args.set])
    ap = train_and_evaluate(config, out / "run", data, progress=False)
    print(f"seed {args.seed}: test AP {100 * ap:.2f}", flush=True)


if __name__ == "__main__":
    main()
