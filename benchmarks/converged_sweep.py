"""The sparsity sweep of the converged runs: flip and resize, 10,000 steps (issue 11).

``uld experiment paper``'s sweep trains the budget's 5,000 steps with the preset's augmentation.
The runs trained to convergence with flips and resizing (``benchmarks/train_test.py``, kept in
``benchmarks/probes/issue11/aug10k``) are named ``ROW_aug[NN]_sSEED``: ``none_aug``,
``add_aug`` and ``upper_aug`` (perfect mining) at 85 % unlabeled, ``none_aug55`` ... at 55 %,
and ``oracle_aug`` (complete labels, the 0 % point). This script reads them with the
experiment's own report code and writes, beside them, ``sweep.md`` (the sweep table: the share
of the oracle's lead that ``add`` and perfect mining recover at each level, and every
comparison paired over seeds with its 95 % t interval) and ``sweep.png`` (AP against the share
of unlabeled training lesions)::

    python benchmarks/converged_sweep.py benchmarks/probes/issue11/aug10k
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from uld.atomic import write_text
from uld.config import load_config
from uld.experiment.plan import RunSpec
from uld.experiment.report import (
    by_kind,
    paired_table,
    plot_sweep,
    read_run,
    sweep_comparisons,
    sweep_rows,
    sweep_table,
)
from uld.experiment.runner import RESULT_FILE

RUN_NAME = re.compile(r"(?P<row>none|add|upper|oracle)_aug(?P<level>\d\d)?_s(?P<seed>\d+)$")
ROWS = {"none": ("EMA teacher, no mining", "none"), "add": ("Mining, add", "add"),
        "upper": ("Perfect mining, add", "upper_add")}
DEFAULT_LEVEL = 85
"""The level of runs named without one (``none_aug_s0``): the first converged rows."""


def converged_spec(name: str) -> RunSpec | None:
    """The sweep (or oracle) spec of a converged run folder's name; None for other runs."""
    match = RUN_NAME.match(name)
    if not match:
        return None
    seed = int(match["seed"])
    if match["row"] == "oracle":
        if match["level"]:
            return None
        return RunSpec(name, "Oracle (complete labels)", "oracle", seed, ())
    level = int(match["level"] or DEFAULT_LEVEL)
    label, row = ROWS[match["row"]]
    return RunSpec(name, f"{label}, {level} % unlabeled", f"sweep{level:02d}_{row}", seed, (),
                   mined=row != "none", group="sweep", unlabeled=level / 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="the converged runs' folder")
    args = parser.parse_args()
    specs = [(spec, run) for run in sorted(args.folder.iterdir())
             if (spec := converged_spec(run.name)) and (run / RESULT_FILE).is_file()]
    groups = by_kind([read_run(spec, run, load_config(run / "config.yaml").mining.tau)
                      for spec, run in specs])
    levels = sorted({kind.split("_", 1)[0] for kind in groups if kind.startswith("sweep")})
    costs = [("oracle", f"{level}_none", f"{level[5:]} % unlabeled: what missing labels cost")
             for level in levels]
    text = "\n".join([
        "# The sparsity sweep, converged (flip and resize 0.6-1.4, 10,000 steps)",
        "",
        f"Written by `python benchmarks/converged_sweep.py {args.folder}` from the runs in this "
        "folder: each row's best validated teacher on the 400 test volumes (P3D AP, %). "
        "'recovers' = (row - none) / (oracle - none), means over the seeds the row shares with "
        "none; the oracle's mean over all its seeds is the 0 % point.",
        "",
        sweep_table(sweep_rows(groups)),
        "",
        "![sweep](sweep.png)",
        "",
        "Paired over the seeds each pair shares (95 % t intervals):",
        "",
        paired_table(groups, [*costs, *sweep_comparisons(groups)]),
        "",
    ])
    plot_sweep(groups, args.folder / "sweep.png")
    write_text(args.folder / "sweep.md", text)
    print(text)


if __name__ == "__main__":
    main()
