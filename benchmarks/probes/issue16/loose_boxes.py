"""Probe (issue 16): how the boxes on a lesion's tracklet that do not carry the lesion are off.

For every tracklet whose most frequent label is a lesion (``uld.eval.linking_quality``'s
labels, the ``infer`` defaults of ``uld.config``), its boxes that do not carry that lesion are
counted by where they lie (on the lesion's slices, beyond its extent, on another lesion), and
those on the lesion's slices are described against its ground-truth box there: IoU, size
ratio (square root of the area ratio), centre offset over the truth's side, and how many
slices from the lesion's nearer end.

    OMP_NUM_THREADS=1 python benchmarks/probes/issue16/loose_boxes.py RUN/model.pt RUNS/data val CACHE
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench_linking import detections_for
from uld.boxes import iou
from uld.config import Config
from uld.eval.linking_quality import label_boxes, read_lesion_truth
from uld.infer.predict import find_lesions


def main() -> None:
    run, data, split, cache = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    dets = detections_for(run, data, split, cache)
    truth = read_lesion_truth(data, split)
    infer = Config().infer
    kinds: dict[str, int] = {"hit": 0, "on its slices": 0, "beyond its extent": 0, "other lesion": 0}
    loose, hit_sizes = [], []
    for name, slices in dets.items():
        t = truth[name]
        for trk in find_lesions(slices, infer)[0]:
            z = np.array([zz for zz, _ in trk])
            b = np.stack([bb[:4] for _, bb in trk])
            labels = label_boxes(t, z, b)
            values, counts = np.unique(labels, return_counts=True)
            major = values[np.argmax(counts)]
            if major < 0:
                continue
            lz, lb = t.z[t.lesion == major], t.boxes[t.lesion == major]
            for k in range(len(z)):
                inside = lz.min() <= z[k] <= lz.max()
                if labels[k] not in (-1, major):
                    kinds["other lesion"] += 1
                    continue
                if not inside:
                    kinds["beyond its extent"] += 1
                    continue
                g = lb[lz == z[k]][0]
                side = np.sqrt((g[2] - g[0]) * (g[3] - g[1]))
                size = np.sqrt((b[k, 2] - b[k, 0]) * (b[k, 3] - b[k, 1])) / side
                if labels[k] == major:
                    kinds["hit"] += 1
                    hit_sizes.append(size)
                    continue
                kinds["on its slices"] += 1
                offset = np.hypot(*((b[k, :2] + b[k, 2:4] - g[:2] - g[2:4]) / 2)) / side
                end = min(z[k] - lz.min(), lz.max() - z[k])
                loose.append((float(iou(b[k:k + 1], g[None])[0, 0]), size, offset, end))
    print(f"boxes on lesion tracklets by kind: {kinds}")
    if loose:
        a = np.array(loose)
        print("not the lesion, on its slices: IoU quartiles", np.percentile(a[:, 0], [25, 50, 75]).round(2))
        print("  size / truth, 10/25/50/75/90 %:", np.percentile(a[:, 1], [10, 25, 50, 75, 90]).round(2))
        print("  centre offset / truth side, quartiles:", np.percentile(a[:, 2], [25, 50, 75]).round(2))
        print("  slices from the lesion's nearer end (0, 1, 2, ...):", np.bincount(a[:, 3].astype(int)))
    if hit_sizes:
        print("boxes carrying the lesion: size / truth, 10/25/50/75/90 %:",
              np.percentile(hit_sizes, [10, 25, 50, 75, 90]).round(2))


if __name__ == "__main__":
    main()
