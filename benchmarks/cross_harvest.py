"""Probe: can a teacher that never trained on a slice find its unlabeled lesions?

At 85 % unlabeled the run's own teacher scores the unlabeled lesions of its 153 training slices
near 0 at every size: the student has learned them as background, and the EMA teacher with it
(RESULTS.md, "Session 8"). This probe mines each training slice with a teacher that has not
seen it, as cross-validation pseudo-labelling does:

1. the training volumes that carry labels are split into two folds (alternating, sorted by name);
2. one baseline (``mining.policy=none``) is trained on each fold's labels alone;
3. each fold's teacher mines the other fold's key slices with the benchmark's mining settings
   (GT NMS, containment, tau), and the mined boxes are scored against the complete labels;
4. a baseline is trained on every fold's labels plus the mined boxes (``annotations_harvest.csv``)
   and evaluated on the test split, as the experiment's runs are.

Usage (one seed; two seeds run side by side with one thread each)::

    OMP_NUM_THREADS=1 python benchmarks/cross_harvest.py RUNS/data OUT --seed 0

``OUT`` receives ``fold0/``, ``fold1/``, ``final/`` (run folders), ``annotations_harvest.csv``
and ``harvest.json`` (counts, precision and recall of each fold's mining). Finished steps are
skipped when the command is repeated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from uld.atomic import write_text
from uld.config import load_config
from uld.data.annotations import read_gt
from uld.data.dataset import Annotations, DatasetFolder
from uld.data.samples import KeySliceDataset
from uld.data.sources import open_training_data
from uld.experiment.runner import evaluate_run, train_or_reuse
from uld.infer.predict import load_model
from uld.mining.harvest import harvest

FOLDS = 2


def fold_volumes(labels: Annotations, folds: int = FOLDS) -> list[list[str]]:
    """The volumes of ``labels``, sorted by name, dealt to ``folds`` folds in turn."""
    names = sorted({str(v) for v in labels.volume})
    return [names[k::folds] for k in range(folds)]


def write_rows(path: Path, rows: list[tuple]) -> None:
    """An annotations.csv of (volume, z, x1, y1, x2, y2, key, lesion) rows, written atomically."""
    lines = ["volume,z,x1,y1,x2,y2,key,lesion"]
    lines += [",".join(str(v) for v in row) for row in rows]
    write_text(path, "\n".join(lines) + "\n")


def label_rows(labels: Annotations, volumes: set[str]) -> list[tuple]:
    lesion = labels.extra.get("lesion")
    return [(str(v), int(z), *(float(x) for x in box), int(k), lesion[i] if lesion is not None else "")
            for i, (v, z, box, k) in enumerate(zip(labels.volume, labels.z, labels.boxes, labels.key))
            if str(v) in volumes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="the benchmark's dataset folder")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--annotations", default="annotations_unlabeled85.csv")
    parser.add_argument("--fold-steps", type=int, default=3000)
    parser.add_argument("--fold-amp", default="bf16", help="train.amp of the fold teachers")
    parser.add_argument("--final-policy", default="none", help="mining.policy of the final run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (after the others)")
    args = parser.parse_args()
    out, data = args.out.resolve(), args.data.resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = [f"data.root={data}", f"train.seed={args.seed}"]

    folder = DatasetFolder(data)
    labels = folder.annotations(args.annotations).for_volumes(folder.volumes("train"))
    folds = fold_volumes(labels)
    for k, names in enumerate(folds):
        write_rows(out / f"fold{k}.csv", label_rows(labels, set(names)))

    summary: dict = {"annotations": args.annotations, "seed": args.seed, "folds": []}
    rows = label_rows(labels, {n for names in folds for n in names})
    for k in range(FOLDS):
        config = load_config("demo", [*common, f"data.annotations={out / f'fold{k}.csv'}",
                                      "mining.policy=none", f"train.iterations={args.fold_steps}",
                                      f"train.amp={args.fold_amp}", *args.set])
        run = out / f"fold{k}"
        train_or_reuse(config, run, progress=False)
        teacher, _ = load_model(run)
        other = (k + 1) % FOLDS
        target = load_config("demo", [*common, f"data.annotations={out / f'fold{other}.csv'}",
                                           *args.set])
        training = open_training_data(target.data)
        dataset = KeySliceDataset(training.store, training.labels, target.data, training.truth)
        with torch.inference_mode():
            mined, counts = harvest(teacher, dataset, target.mining, "cpu", 8, progress=False)
        boxes = [b for m in mined for b in m.slice_boxes()]
        rows += [(b.volume, b.z, *b.box, 0, f"mined{k}") for b in boxes]
        summary["folds"].append({
            "fold": k, "teacher_volumes": len(folds[k]), "mined_on_volumes": len(folds[other]),
            "slices": len(dataset), "mined": counts.mined, "true": counts.true,
            "unlabeled_on_slices": counts.missing, "found": counts.found, "precision": counts.precision,
            "recall": counts.recall})
        print(json.dumps(summary["folds"][-1]), flush=True)
    harvested = out / "annotations_harvest.csv"
    write_rows(harvested, rows)
    write_text(out / "harvest.json", json.dumps(summary, indent=2) + "\n")

    final = load_config("demo", [*common, f"data.annotations={harvested}",
                                 f"mining.policy={args.final_policy}", *args.set])
    train_or_reuse(final, out / "final", progress=False)
    result = evaluate_run(out / "final", data, read_gt(data, split="test"), progress=False)
    print(f"seed {args.seed}: test AP {100 * result['ap']:.2f}", flush=True)


if __name__ == "__main__":
    main()
