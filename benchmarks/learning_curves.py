"""Validation learning curves of training runs, and whether they have converged.

    python benchmarks/learning_curves.py RUN [RUN ...] [--window 500]

For each run folder (``metrics.jsonl``): the teacher's validation AP at every evaluation, the
gain over the last quarter of the steps so far (converged: less than 1 AP point, issue 11),
the step of the best validation AP, and for mining runs the precision and recall of the boxes
mined in each ``--window`` steps and the teacher's score profile on training slices.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from uld.experiment.report import windowed_mining


def last_quarter_gain(steps: list[int], aps: list[float]) -> float:
    """AP at the last evaluation minus AP interpolated at 3/4 of the last step (points)."""
    return aps[-1] - float(np.interp(0.75 * steps[-1], steps, aps))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--window", type=int, default=500)
    args = parser.parse_args()
    for run in args.runs:
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
        val = [r for r in rows if "val/ap" in r]
        if not val:
            print(f"{run}: no validation yet")
            continue
        steps, aps = [r["step"] for r in val], [100 * r["val/ap"] for r in val]
        best = int(np.argmax(aps))
        gain = last_quarter_gain(steps, aps)
        print(f"{run}\n  val AP: " + "  ".join(f"{s}: {a:.1f}" for s, a in zip(steps, aps)))
        verdict = "still rising" if gain >= 1.0 else "falling" if gain <= -1.0 else "levelled off"
        print(f"  best {aps[best]:.1f} at step {steps[best]}; last-quarter gain {gain:+.1f} "
              f"({verdict}; converged means a gain below 1 point)")
        windows = windowed_mining(rows, args.window)
        for w in windows if any(w["mined"] for w in windows) else []:
            print(f"  mined in steps to {w['step']}: {int(w['mined'])} boxes, precision "
                  f"{w['precision']:.2f}, recall {w['recall']:.3f}")
        for r in val:
            scores = {k.split("/", 1)[1]: round(v, 2) for k, v in r.items() if k.startswith("scores/")}
            if scores:
                print(f"  teacher scores at {r['step']}: {scores}")


if __name__ == "__main__":
    main()
