"""Paired comparisons of finished runs kept outside the experiment's plan.

    python benchmarks/compare_runs.py FOLDER --pair add_aug none_aug --pair oracle_aug none_aug

``FOLDER`` holds run folders named ``ROW_sSEED`` (``summary.json``, ``test_p3d.json``,
``metrics.jsonl``), as ``benchmarks/train_test.py`` writes them. Prints each run's test AP and
AVG, best validation AP and its step, and the validation gain over the last quarter of the run
(converged: below 1 point, issue 11); then, for each ``--pair A B``, A - B paired by seed with
the 95 % t interval (test AP, AVG and best validation AP). With ``--data`` (the benchmark's
dataset folder; the runs' ``test_detections.json`` are needed, which the committed copies do
not keep), also each seed's A - B test AP with a paired bootstrap over the test volumes: the
noise of the test split alone. ``--test-file test_p3d_final.json`` compares the runs' final
teachers instead (``benchmarks/final_teacher.py``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from learning_curves import last_quarter_gain
from uld.experiment.runner import RESULT_FILE, paired_volume_difference
from uld.experiment.stats import paired_by_seed

RUN_NAME = re.compile(r"(?P<row>.+)_s(?P<seed>\d+)$")


def run_scores(run: Path, test_file: str = RESULT_FILE) -> dict[str, float] | None:
    """Test AP and AVG (from ``test_file``), best validation AP (all in %), its step and the
    last-quarter gain of a finished run; None while it is not finished."""
    test, summary = run / test_file, run / "summary.json"
    if not (test.is_file() and summary.is_file()):
        return None
    result, info = json.loads(test.read_text()), json.loads(summary.read_text())
    curve = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
             if '"val/ap"' in line]
    steps, aps = [c["step"] for c in curve], [100 * c["val/ap"] for c in curve]
    return {"ap": 100 * result["ap"], "avg": 100 * result["avg"], "val": 100 * info["best_val_ap"],
            "best_step": info.get("best_step"), "gain": last_quarter_gain(steps, aps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"))
    parser.add_argument("--data", type=Path, help="the dataset folder: per-seed volume bootstrap")
    parser.add_argument("--test-file", default=RESULT_FILE,
                        help="the test result read from each run (test_p3d_final.json: the final "
                             "teacher's, from final_teacher.py)")
    args = parser.parse_args()
    if args.data and args.test_file != RESULT_FILE:
        parser.error("--data bootstraps each run's test_detections.json, its best validated "
                     "teacher's: for the final teachers run it on final_teacher.py's OUT folder")
    table: dict[str, dict[int, dict[str, float]]] = {}
    for run in sorted(p for p in args.folder.iterdir() if p.is_dir()):
        match, scores = RUN_NAME.match(run.name), run_scores(run, args.test_file)
        if match and scores:
            table.setdefault(match["row"], {})[int(match["seed"])] = scores
    print("| run | test AP | AVG | best val AP (step) | val gain, last quarter |")
    print("|---|---|---|---|---|")
    for row, seeds in table.items():
        for seed, s in sorted(seeds.items()):
            print(f"| {row}_s{seed} | {s['ap']:.2f} | {s['avg']:.2f} | {s['val']:.1f} "
                  f"({s['best_step']}) | {s['gain']:+.1f} |")
    print("\n| comparison | seeds | test AP | AVG | best val AP |\n|---|---|---|---|---|")
    for a, b in args.pair:
        common = sorted(set(table.get(a, {})) & set(table.get(b, {})))
        if len(common) < 2:
            print(f"| {a} - {b} | {len(common)} | (needs two seeds) | | |")
            continue
        cells = []
        for measure in ("ap", "avg", "val"):
            iv = paired_by_seed({s: table[a][s][measure] for s in common},
                                {s: table[b][s][measure] for s in common})
            cells.append(f"{iv.mean:+.1f} [{iv.low:+.1f}, {iv.high:+.1f}]")
        print(f"| {a} - {b} | {len(common)} | " + " | ".join(cells) + " |")
    if args.data:
        print("\n| comparison | seed | test AP, paired bootstrap over test volumes |\n|---|---|---|")
        for a, b in args.pair:
            for seed in sorted(set(table.get(a, {})) & set(table.get(b, {}))):
                iv = paired_volume_difference(args.folder / f"{a}_s{seed}",
                                              args.folder / f"{b}_s{seed}", args.data)
                text = "no test_detections.json" if iv is None else \
                    f"{iv.mean:+.1f} [{iv.low:+.1f}, {iv.high:+.1f}]"
                print(f"| {a} - {b} | {seed} | {text} |")


if __name__ == "__main__":
    main()
