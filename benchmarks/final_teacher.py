"""Score each run's final teacher (``model.pt``), not its best validated one, on the test split.

A run's ``test_p3d.json`` scores the teacher that the validation split chose (``best.pt``). With
60 validation volumes that choice can pick a step whose lead was noise, and a comparison of
two rows then carries the noise of two choices. This scores the teacher every run ends with
instead, the same way (``uld.experiment.runner.evaluate_run``), so that the rows can also be
compared at equal training length with no choice made.

    python benchmarks/final_teacher.py RUNS/long OUT --data RUNS/data
    python benchmarks/compare_runs.py RUNS/long --pair add_aug none_aug --test-file test_p3d_final.json
    python benchmarks/compare_runs.py OUT --pair add_aug none_aug --data RUNS/data   # + bootstrap

For every ``ROW_sSEED`` folder of ``RUNS/long`` holding ``model.pt``, ``OUT/ROW_sSEED`` gets a
link to that ``model.pt``, copies of ``config.yaml``, ``summary.json`` and ``metrics.jsonl``
(so that ``compare_runs.py`` reads it as a run; its validation columns are the run's own),
and the final teacher's ``test_p3d.json`` and ``test_detections.json``; the run folder itself
gets a copy of that ``test_p3d.json`` as ``test_p3d_final.json`` (small: the file to keep).
Runs already scored are skipped.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from compare_runs import RUN_NAME
from uld.data.annotations import read_gt
from uld.experiment.runner import RESULT_FILE, evaluate_run

COPIED = ("config.yaml", "summary.json", "metrics.jsonl")
FINAL_RESULT = "test_p3d_final.json"


def mirror(run: Path, out: Path) -> Path:
    """``out/run.name`` holding a link to ``run``'s final teacher and copies of ``COPIED``."""
    target = out / run.name
    target.mkdir(parents=True, exist_ok=True)
    link = target / "model.pt"
    if not link.exists():
        link.symlink_to((run / "model.pt").resolve())
    for name in COPIED:
        shutil.copy2(run / name, target / name)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="the finished runs (ROW_sSEED folders)")
    parser.add_argument("out", type=Path, help="where the final teachers' results go")
    parser.add_argument("--data", type=Path, required=True, help="the dataset folder")
    args = parser.parse_args()
    gt = read_gt(args.data, split="test")
    runs = sorted(p for p in args.folder.iterdir()
                  if p.is_dir() and RUN_NAME.match(p.name) and (p / "model.pt").is_file())
    if not runs:
        parser.error(f"{args.folder}: no ROW_sSEED run folder with a model.pt")
    for run in runs:
        scored = mirror(run, args.out)
        result = evaluate_run(scored, args.data, gt, progress=False)
        shutil.copy2(scored / RESULT_FILE, run / FINAL_RESULT)
        print(f"{run.name}: final teacher, test AP {100 * result['ap']:.2f}, "
              f"AVG {100 * result['avg']:.2f}", flush=True)


if __name__ == "__main__":
    main()
