"""Probe: can a teacher that never trained on a volume find its unlabeled lesions, and does
training on what it finds help?

At 85 % unlabeled the run's own teacher scores the unlabeled lesions of its 153 training slices
near 0 at every size: the student has learned them as background, and the EMA teacher with it
(RESULTS.md, "Session 8"). This probe mines with teachers that have not seen the volume, as
cross-validation pseudo-labelling does:

1. the training volumes that carry labels are dealt to two folds (sorted by name, in turn);
2. one baseline (``mining.policy=none``, ``--fold-steps``, ``--fold-amp``) is trained on each
   fold's labels alone;
3. each fold's teacher mines the other fold's key slices with the benchmark's mining settings
   (GT NMS, containment, tau): ``annotations_harvest.csv``; with ``--final volumes`` it also
   mines whole training volumes (every slice, linked into lesions; the volumes without labels
   are shared between the teachers): a lesion scoring >= ``--harvest-tau`` on at least
   ``--min-slices`` slices that overlaps no label gets a key row on its best slice (outside the
   slices of lesions left unkept with ``--clean-slices``) and its boxes on every training key
   slice: ``annotations_harvest_volumes*.csv``. Both are scored against the complete labels;
4. a baseline (``--final-policy``) is trained on each harvest's labels (``final``,
   ``final_volumes*``) and evaluated on the test split, as the experiment's runs are.

``--val-precision`` scores the fold teachers' confident lesions on the val split by length and
score, to choose ``--min-slices`` and ``--harvest-tau`` there.

Usage (one seed; seeds run side by side with one thread each)::

    OMP_NUM_THREADS=1 python benchmarks/cross_harvest.py RUNS/data OUT --seed 0 \
        --final volumes --min-slices 3 --harvest-tau 0.98

``--train-fold K`` trains fold K's teacher alone and stops, so that the two fold teachers can
train side by side (one process each); the same command without it then reuses them.

``OUT`` receives ``fold0/``, ``fold1/`` and the final run folders, the harvests' annotation
files and ``harvest.json`` (counts, precision and recall of each harvest). Finished steps are
skipped when the command is repeated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from uld.atomic import write_text
from uld.boxes import iou
from uld.config import Config, load_config
from uld.data.annotations import read_gt
from uld.data.dataset import Annotations, DatasetFolder, write_csv
from uld.data.samples import KeySliceDataset
from uld.data.sources import VolumeStore, open_training_data
from uld.experiment.runner import evaluate_run, train_or_reuse
from uld.infer.predict import load_model, predict_volume
from uld.mining.filter import gt_nms
from uld.mining.harvest import harvest

FOLDS = 2


def fold_volumes(labels: Annotations, folds: int = FOLDS) -> list[list[str]]:
    """The volumes of ``labels``, sorted by name, dealt to ``folds`` folds in turn."""
    names = sorted({str(v) for v in labels.volume})
    return [names[k::folds] for k in range(folds)]


COLUMNS = ("volume", "z", "x1", "y1", "x2", "y2", "key", "lesion")
"""The columns of the annotation files this probe writes (``uld.data.dataset.write_csv``)."""


def best_box(tracklet: list) -> tuple[int, np.ndarray]:
    """A tracklet's best-scoring (z, [x1, y1, x2, y2, score])."""
    return max(tracklet, key=lambda zb: zb[1][4])


def rows_by_slice(truth: Annotations) -> dict[tuple[str, int], list[int]]:
    """``{(volume, z): row indices of truth}``."""
    rows: dict[tuple[str, int], list[int]] = {}
    for i, (v, z) in enumerate(zip(truth.volume, truth.z)):
        rows.setdefault((str(v), int(z)), []).append(i)
    return rows


def label_rows(labels: Annotations, volumes: set[str]) -> list[tuple]:
    """The rows of ``labels`` on ``volumes`` (``COLUMNS``)."""
    lesion = labels.extra.get("lesion")
    return [(str(v), int(z), *(float(x) for x in box), int(k), lesion[i] if lesion is not None else "")
            for i, (v, z, box, k) in enumerate(zip(labels.volume, labels.z, labels.boxes, labels.key))
            if str(v) in volumes]


def known_lesion(tracklet: list, known: list[tuple[int, np.ndarray]], iou_thresh: float,
                 contain_thresh: float, reach: int = 2) -> bool:
    """Whether ``tracklet`` ([(z, [x1, y1, x2, y2, score])]) is a labeled lesion: one of its boxes
    within ``reach`` slices of a labeled box overlaps it by more than the mining's GT NMS allows
    (IoU > ``iou_thresh`` or intersection over the smaller box > ``contain_thresh``)."""
    for z, row in tracklet:
        near = [kbox for kz, kbox in known if abs(z - kz) <= reach]
        if near and not gt_nms(torch.as_tensor(np.asarray(row[:4], dtype=np.float64))[None],
                               torch.as_tensor(np.stack(near)), iou_thresh, contain_thresh)[0]:
            return True
    return False


def harvest_volumes(teachers: list, assign: dict[str, int], store: VolumeStore,
                    labels: Annotations, config: Config, truth: Annotations, labeled: set[tuple[str, str]],
                    progress: bool = False, min_slices: int = 1,
                    tau: float | None = None,
                    unsure_low: float = 1.0) -> tuple[list, dict, dict[str, set[int]]]:
    """Mine whole training volumes: each volume's tracklets from the teacher that never trained
    on it (``assign``), kept where their score is >= ``tau`` (default the mining's), they span
    at least ``min_slices`` slices and they overlap no labeled lesion.
    Returns the kept tracklets as (volume, tracklet), the counts against ``truth`` (a kept
    tracklet is true when its best box hits (IoU >= 0.5) an unlabeled lesion on that slice) and
    each volume's unsure slices: those crossed by a lesion that was not kept but scores
    >= ``unsure_low``, or that overlaps a label."""
    known: dict[str, list] = {}
    for v, z, box in zip(labels.volume, labels.z, labels.boxes):
        known.setdefault(str(v), []).append((int(z), np.asarray(box, dtype=np.float64)))
    truth_rows = rows_by_slice(truth)
    lesion_ids = truth.extra["lesion"]
    unlabeled = {(str(v), str(les)) for v, les in zip(truth.volume, lesion_ids)} - labeled
    kept, hits, true = [], set(), 0
    unsure: dict[str, set[int]] = {}
    m = config.mining
    tau = m.tau if tau is None else tau
    for name in tqdm(sorted(assign), desc="harvest volumes", unit="vol", leave=False,
                     disable=not progress):
        with torch.inference_mode():
            tracklets = predict_volume(teachers[assign[name]], store[name], config, "cpu")
        for t in tracklets:
            z, best = best_box(t)
            labeled_lesion = known_lesion(t, known.get(name, []), m.gt_nms_iou, m.gt_contain)
            if len(t) < min_slices or best[4] < tau or labeled_lesion:
                if labeled_lesion or best[4] >= unsure_low:
                    unsure.setdefault(name, set()).update(int(zb[0]) for zb in t)
                continue
            kept.append((name, t))
            rows = truth_rows.get((name, int(z)), [])
            if rows:
                overlap = iou(np.asarray(best[:4])[None], truth.boxes[rows])[0]
                hit = [(name, str(lesion_ids[rows[j]])) for j in np.flatnonzero(overlap >= 0.5)]
                hit = [h for h in hit if h in unlabeled]
                true += bool(hit)
                hits.update(hit)
    counts = {"mined": len(kept), "true": true, "unlabeled_lesions": len(unlabeled),
              "found": len(hits), "precision": true / len(kept) if kept else None,
              "recall": len(hits) / len(unlabeled) if unlabeled else None}
    return kept, counts, unsure


LENGTHS = ((1, 1), (2, 2), (3, 4), (5, 10_000))
"""Lesion length bins (slices, inclusive) of :func:`val_precision`."""
SCORES = (0.9, 0.95, 0.98)
"""Lower ends of the lesion score bins of :func:`val_precision` (the last bin ends at 1)."""


def _bin_name(low: int, high: int) -> str:
    return f"{low}" if low == high else f"{low}+" if high > 100 else f"{low}-{high}"


def val_precision(teachers: list, store: VolumeStore, truth: Annotations, names: list[str],
                  config: Config) -> list[dict]:
    """How many of the teachers' confident lesions (score >= tau) on fully annotated volumes are
    lesions, by how many slices they span and by score: the validation split's answer to which
    lesions a harvest should keep. A lesion's best box is ``true`` with IoU >= 0.5 against any
    lesion on its slice, ``loose`` with 0.1-0.5 and ``background`` below."""
    truth_rows = rows_by_slice(truth)
    counts: dict[tuple, dict[str, int]] = {}
    for teacher in teachers:
        for name in names:
            with torch.inference_mode():
                tracklets = predict_volume(teacher, store[name], config, "cpu")
            for t in tracklets:
                z, best = best_box(t)
                if best[4] < config.mining.tau:
                    continue
                rows = truth_rows.get((name, int(z)), [])
                overlap = iou(np.asarray(best[:4])[None], truth.boxes[rows])[0].max() if rows else 0.0
                kind = "true" if overlap >= 0.5 else "loose" if overlap >= 0.1 else "background"
                length = next(b for b in LENGTHS if b[0] <= len(t) <= b[1])
                score = max(low for low in SCORES if best[4] >= low) if best[4] >= SCORES[0] else None
                cell = counts.setdefault((length, score), {"true": 0, "loose": 0, "background": 0})
                cell[kind] += 1
    table = []
    for (length, score), c in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        n = sum(c.values())
        table.append({"slices": _bin_name(*length), "score_from": score, "lesions": n, **c,
                      "precision": c["true"] / n if n else None})
    return table


def volume_rows(labels: Annotations, kept: list,
                unsure: dict[str, set[int]] | None = None) -> list[tuple]:
    """The labels' rows, a key row for each mined lesion and each mined box that lies on a
    training key slice (the labeled ones or the new ones) as a further target.

    A mined lesion's key slice is its best-scoring slice; with ``unsure`` (volume -> slices),
    its best-scoring slice outside those, and no key slice where it has none (a slice crossed by
    a lesion that is neither kept nor labeled there would teach that lesion as background)."""
    rows = label_rows(labels, {str(v) for v in labels.volume})
    key_slices = {(str(v), int(z)) for v, z in labels.key_slices()}
    keys: list[int | None] = []
    for name, t in kept:
        clean = [zb for zb in t if unsure is None or int(zb[0]) not in unsure.get(name, set())]
        keys.append(int(best_box(clean)[0]) if clean else None)
    key_slices |= {(name, z) for (name, _), z in zip(kept, keys) if z is not None}
    for (name, t), key in zip(kept, keys):
        for z, row in t:
            if (name, int(z)) in key_slices:
                rows.append((name, int(z), *(float(x) for x in row[:4]), int(z == key), "mined"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="the benchmark's dataset folder")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--annotations", default="annotations_unlabeled85.csv")
    parser.add_argument("--fold-steps", type=int, default=3000)
    parser.add_argument("--fold-amp", default="bf16", help="train.amp of the fold teachers")
    parser.add_argument("--final", action="append", choices=["slices", "volumes"], default=[],
                        help="train the final run on this harvest (default: slices); repeatable")
    parser.add_argument("--no-final", action="store_true",
                        help="stop after the harvests: train no final run")
    parser.add_argument("--min-slices", type=int, default=1,
                        help="volumes harvest: keep lesions found on at least this many slices")
    parser.add_argument("--harvest-tau", type=float,
                        help="volumes harvest: the lesion score to keep (default mining.tau)")
    parser.add_argument("--clean-slices", type=float, metavar="LOW",
                        help="volumes harvest: give a mined lesion a key slice only where no lesion "
                             "scoring >= LOW that was not kept, and no labeled lesion, crosses it")
    parser.add_argument("--final-policy", default="none", help="mining.policy of the final runs")
    parser.add_argument("--val-precision", action="store_true",
                        help="the fold teachers' precision on the val split by lesion length")
    parser.add_argument("--train-fold", type=int, choices=range(FOLDS), metavar="K",
                        help="only train fold K's teacher and stop (run one process a fold side "
                             "by side, then the command without it reuses both)")
    parser.add_argument("--progress", action="store_true", help="a progress bar while mining")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (after the others)")
    args = parser.parse_args()
    out, data = args.out.resolve(), args.data.resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = [f"data.root={data}", f"train.seed={args.seed}"]

    folder = DatasetFolder(data)
    train_names = folder.volumes("train")
    labels = folder.annotations(args.annotations).for_volumes(train_names)
    folds = fold_volumes(labels)
    for k, names in enumerate(folds):
        write_csv(out / f"fold{k}.csv", COLUMNS, label_rows(labels, set(names)))

    summary: dict = {"annotations": args.annotations, "seed": args.seed, "folds": []}
    rows = label_rows(labels, {n for names in folds for n in names})
    teachers = []
    for k in range(FOLDS):
        config = load_config("demo", [*common, f"data.annotations={out / f'fold{k}.csv'}",
                                      "mining.policy=none", f"train.iterations={args.fold_steps}",
                                      f"train.amp={args.fold_amp}", *args.set])
        run = out / f"fold{k}"
        if args.train_fold not in (None, k):
            continue
        train_or_reuse(config, run, progress=False)
        if args.train_fold is not None:
            continue
        teacher, _ = load_model(run)
        teachers.append(teacher)
        other = (k + 1) % FOLDS
        target = load_config("demo", [*common, f"data.annotations={out / f'fold{other}.csv'}",
                                      *args.set])
        training = open_training_data(target.data)
        dataset = KeySliceDataset(training.store, training.labels, target.data, training.truth)
        mined, counts = harvest(teacher, dataset, target.mining, "cpu", 8, progress=False)
        boxes = [b for m in mined for b in m.slice_boxes()]
        rows += [(b.volume, b.z, *b.box, 0, f"mined{k}") for b in boxes]
        summary["folds"].append({
            "fold": k, "teacher_volumes": len(folds[k]), "mined_on_volumes": len(folds[other]),
            "slices": len(dataset), "mined": counts.mined, "true": counts.true,
            "unlabeled_on_slices": counts.missing, "found": counts.found,
            "precision": counts.precision, "recall": counts.recall})
        print(json.dumps(summary["folds"][-1]), flush=True)
    if args.train_fold is not None:
        return
    suffix = f"_min{args.min_slices}" if args.min_slices > 1 else ""
    suffix += f"_tau{args.harvest_tau:g}" if args.harvest_tau is not None else ""
    suffix += f"_clean{args.clean_slices:g}" if args.clean_slices is not None else ""
    harvested = {"slices": out / "annotations_harvest.csv",
                 "volumes": out / f"annotations_harvest_volumes{suffix}.csv"}
    write_csv(harvested["slices"], COLUMNS, rows)

    kinds = args.final or ["slices"]
    if args.val_precision or "volumes" in kinds:
        base = load_config("demo", [*common, *args.set])
        training = open_training_data(base.data)
    if args.val_precision:
        folder_truth = folder.annotations(base.data.truth)
        summary["val_precision"] = val_precision(
            teachers, training.store, folder_truth, folder.volumes("val"), base)
        for row in summary["val_precision"]:
            print(json.dumps(row), flush=True)

    if "volumes" in kinds:
        assign = {name: (k + 1) % FOLDS for k, names in enumerate(folds) for name in names}
        free = [n for n in sorted(train_names) if n not in assign]
        assign.update({name: i % FOLDS for i, name in enumerate(free)})
        lesions = labels.extra["lesion"]
        labeled = {(str(v), str(les)) for v, les in zip(labels.volume, lesions)}
        low = 1.0 if args.clean_slices is None else args.clean_slices
        kept, counts, unsure = harvest_volumes(teachers, assign, training.store, labels, base,
                                               training.truth, labeled, args.progress,
                                               args.min_slices, args.harvest_tau, low)
        summary[f"volumes{suffix}"] = {"volumes": len(assign), "min_slices": args.min_slices,
                                       "tau": args.harvest_tau or base.mining.tau, **counts}
        print(json.dumps(summary[f"volumes{suffix}"]), flush=True)
        write_csv(harvested["volumes"], COLUMNS,
                  volume_rows(labels, kept, None if args.clean_slices is None else unsure))
    previous = out / "harvest.json"
    if previous.is_file():  # keep the other harvests' counts
        summary = {**json.loads(previous.read_text()), **summary}
    write_text(previous, json.dumps(summary, indent=2) + "\n")

    for kind in [] if args.no_final else kinds:
        final = load_config("demo", [*common, f"data.annotations={harvested[kind]}",
                                     f"mining.policy={args.final_policy}", *args.set])
        run = out / ("final" if kind == "slices" else f"final_volumes{suffix}")
        train_or_reuse(final, run, progress=False)
        result = evaluate_run(run, data, read_gt(data, split="test"), progress=False)
        print(f"seed {args.seed}, {kind}: test AP {100 * result['ap']:.2f}", flush=True)


if __name__ == "__main__":
    main()
