"""Does a variant of the synthetic benchmark make missing labels hurt? Oracle vs baseline.

    python benchmarks/probe_benchmark.py NAME '{"lesion_contrast": 3.0, ...}' \
        [--steps 1500] [--runs oracle,baseline,add] [--out /tmp/probe]

Writes the dataset ``SynthConfig(n_train=200, n_val=20, n_test=40, **JSON)`` into OUT/NAME/data
(once), trains the named runs with ``configs/demo.yaml`` for ``--steps`` steps (oracle: the
complete labels, baseline: no mining, add: mining), and prints each teacher's P3D AP/AVG on the
test split with the mining counts. Finished runs are reused. Run two at once with
``OMP_NUM_THREADS=1`` to use both cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from uld.config import load_config, override
from uld.data.annotations import read_gt
from uld.data.synth import SynthConfig
from uld.experiment.runner import ensure_dataset, evaluate_run, train_or_reuse

RUNS = {
    "oracle": ("data.annotations=annotations_full.csv", "mining.policy=none"),
    "baseline": ("mining.policy=none",),
    "add": ("mining.policy=add",),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("synth", help="SynthConfig fields as JSON")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--runs", default="oracle,baseline")
    parser.add_argument("--out", default="/tmp/probe")
    args = parser.parse_args()
    out = Path(args.out) / args.name
    data = out / "data"
    ensure_dataset(data, SynthConfig(**{"n_train": 200, "n_val": 20, "n_test": 40,
                                        **json.loads(args.synth)}), progress=False)
    base = load_config("demo", [f"data.root={data}", f"train.iterations={args.steps}",
                                f"train.eval_every={args.steps}"])
    gt = read_gt(data, split="test")
    for run in args.runs.split(","):
        start = time.perf_counter()
        train_or_reuse(override(base, *RUNS[run]), out / run, progress=False)
        result = evaluate_run(out / run, data, gt, progress=False)
        s = json.loads((out / run / "summary.json").read_text())
        print(f"{args.name} {run}: AP {100 * result['ap']:.1f} AVG {100 * result['avg']:.2f} "
              f"(val AP {s['best_val_ap']:.3f}; mined {s['mined']}, precision "
              f"{s['mined_precision']}, recall {s['mined_recall']}; "
              f"{time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
