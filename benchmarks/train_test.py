"""Probe runner: train one run from a saved config with overrides, then test it.

For runs that the experiment's plan does not hold (a committed run trained longer, a variant of
it), trained and tested exactly as the experiment's are (``uld.experiment.runner``'s
``train_and_evaluate``: a finished run is not trained again, an interrupted one resumes, and
the best validated teacher is scored on the test split, ``test_p3d.json``).

Usage (one run a process, one thread each)::

    OMP_NUM_THREADS=1 python benchmarks/train_test.py \
        benchmarks/paper/runs/sweep85_none_aug_s0/config.yaml RUNS/long/none_aug_s0 \
        --data RUNS/data --set train.iterations=10000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from uld.config import load_config
from uld.experiment.runner import train_and_evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="a config file or preset (a run's config.yaml)")
    parser.add_argument("out", type=Path, help="the run folder")
    parser.add_argument("--data", type=Path, help="the dataset folder (data.root)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override (after --data)")
    args = parser.parse_args()
    overrides = [f"data.root={args.data.resolve()}"] if args.data else []
    config = load_config(args.config, [*overrides, *args.set])
    ap = train_and_evaluate(config, args.out.resolve(), Path(config.data.root), progress=False)
    print(f"{args.out}: test AP {100 * ap:.2f}", flush=True)


if __name__ == "__main__":
    main()
