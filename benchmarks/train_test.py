"""Probe runner: train one run from a saved config with overrides, then test it.

For runs that the experiment's plan does not hold (a committed run trained longer, a variant of
it), trained and tested exactly as the experiment's are: ``uld.experiment.runner``'s
``train_or_reuse`` (a finished run is not trained again, an interrupted one resumes) and
``evaluate_run`` (the best validated teacher on the test split, ``test_p3d.json``).

Usage (one run a process, one thread each)::

    OMP_NUM_THREADS=1 python benchmarks/train_test.py \
        benchmarks/paper/runs/sweep85_none_aug_s0/config.yaml RUNS/long/none_aug_s0 \
        --data RUNS/data --set train.iterations=10000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from uld.config import Config, load_config
from uld.data.annotations import read_gt
from uld.experiment.runner import evaluate_run, train_or_reuse


def train_and_test(config: Config, run: Path) -> dict:
    """Train ``config`` into ``run`` (or reuse it) and score its teacher on the test split of
    ``config.data.root``; returns ``evaluate_run``'s result (``ap``, ``avg``, ...)."""
    data = Path(config.data.root)
    train_or_reuse(config, run, progress=False)
    return evaluate_run(run, data, read_gt(data, split="test"), progress=False)


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
    result = train_and_test(config, args.out.resolve())
    print(f"{args.out}: test AP {100 * result['ap']:.2f}, AVG {100 * result['avg']:.2f}", flush=True)


if __name__ == "__main__":
    main()
