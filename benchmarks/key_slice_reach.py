"""How many unlabeled lesions can mining on the labeled key slices reach at all?

    python benchmarks/key_slice_reach.py [--harvester DIR] [--data BENCHMARK_DATA]

A detector trained on key slices (DeepLesion's, and the partial-label runs of the benchmark)
sees an unlabeled lesion only where it lies on a labeled lesion's key slice. This prints:

- DeepLesion (``Revised-Test1071.pkl`` against ``RECIST-Box-Test.pkl``): every lesion of the
  fully annotated sub-volumes is one box on its own slice; a lesion is RECIST when a RECIST box
  lies on its slice with IoU >= 0.7. For the others, the share whose slice is within 0, 1, 2,
  3, 5 and 8 slices of a RECIST key slice of the same sub-volume (DeepLesion's sub-volumes mix
  1, 2.5 and 5 mm slices, so a lesion a few slices away may still cross the key slice).
- The synthetic benchmark (``--data``, written by ``uld experiment paper``): every lesion has a
  box on each slice it crosses (``annotations_full.csv``); of the unlabeled training lesions, the
  share with a box on a labeled key slice (``annotations.csv``), which is what a perfect miner
  can add, against the oracle's extra key slices, and the share within 1, 2, 3, 5 and 8 slices
  of one (what a miner that also sees those slices, ``data.unlabeled_neighbours``, could reach);
  then the same at each sparsity level of the sweep (``annotations_unlabeledNN.csv``).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from uld.data.annotations import read_gt
from uld.data.dataset import DatasetFolder

SLICE_DISTANCES = (0, 1, 2, 3, 5, 8)


def deeplesion_distances(revised: Path, recist: Path) -> tuple[int, np.ndarray]:
    """(RECIST lesions, |z - nearest RECIST key slice| of every other lesion) over the
    sub-volumes that have RECIST boxes."""
    full, official = read_gt(revised), read_gt(recist)
    recist_by_volume = {name.removesuffix(".annot"): boxes for name, boxes in official.items()}
    n_recist, distances = 0, []
    for name, lesions in full.items():
        keys = recist_by_volume.get(name.removesuffix(".annot"), [])
        if not keys:
            continue
        key_z = np.array([z for z, _ in keys])
        for z, box in lesions:
            same = [b for kz, b in keys if kz == z]
            if same and box_iou(torch.tensor(box[None]), torch.tensor(np.stack(same))).max() >= 0.7:
                n_recist += 1
            else:
                distances.append(int(np.abs(key_z - z).min()))
    return n_recist, np.asarray(distances)


def benchmark_reach(data: Path, labels: str = "annotations.csv",
                    distance: int = 0) -> tuple[int, int, int]:
    """(unlabeled training lesions, those crossing a slice within ``distance`` of a labeled key
    slice, labeled lesions) under the train labels of ``labels`` (the benchmark's, or a sweep
    level's)."""
    folder = DatasetFolder(data)
    train = folder.volumes("train")
    labeled = folder.annotations(labels).for_volumes(train)
    full = folder.annotations("annotations_full.csv").for_volumes(train)
    key_slices = {(name, z + d) for name, z in labeled.key_slices()
                  for d in range(-distance, distance + 1)}
    labeled_ids = set(zip(labeled.volume, labeled.extra["lesion"]))
    crossings = defaultdict(set)
    for volume, lesion, z in zip(full.volume, full.extra["lesion"], full.z):
        crossings[(volume, lesion)].add((str(volume), int(z)))
    unlabeled = [lesion for lesion in crossings if lesion not in labeled_ids]
    reachable = sum(bool(crossings[lesion] & key_slices) for lesion in unlabeled)
    return len(unlabeled), reachable, len(labeled_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--harvester", default="../shared/deeplesion/lesion_harvester")
    parser.add_argument("--data", help="a benchmark dataset folder (uld experiment paper's OUT/data)")
    args = parser.parse_args()
    folder = Path(args.harvester)
    n_recist, distances = deeplesion_distances(folder / "Revised-Test1071.pkl",
                                               folder / "RECIST-Box-Test.pkl")
    print(f"DeepLesion Revised-Test1071: {n_recist} RECIST lesions, {len(distances)} others")
    for d in SLICE_DISTANCES:
        print(f"  others within {d} slice(s) of a RECIST key slice: {np.mean(distances <= d):.2f}")
    if args.data:
        data = Path(args.data)
        for labels in ["annotations.csv", *sorted(p.name for p in data.glob("annotations_unlabeled*.csv"))]:
            unlabeled, reachable, labeled = benchmark_reach(data, labels)
            print(f"benchmark {args.data}, {labels}: {labeled} labeled and {unlabeled} unlabeled "
                  f"training lesions; {reachable} of the unlabeled ({reachable / unlabeled:.2f}) "
                  "cross a labeled key slice")
            if labels == "annotations.csv":
                for d in SLICE_DISTANCES[1:]:
                    near = benchmark_reach(data, labels, d)[1]
                    print(f"  within {d} slice(s) of one: {near} ({near / unlabeled:.2f})")


if __name__ == "__main__":
    main()
