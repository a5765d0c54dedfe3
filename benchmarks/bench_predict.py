"""`uld predict` speed on CPU, and a look at its outputs.

Runs a trained model (default: the demo's mining teacher) over the test split of a dataset
folder (default: the demo's synthetic data) through ``uld.infer.scans.predict_scans``, the code
behind ``uld predict``, and prints slices per second (detection and linking; reading the
volumes and writing the files not counted), then reads one 3D Slicer ROI back and checks it
against the lesion's JSON entry. ``--keep DIR`` keeps the outputs (overlay PNGs included).

    python benchmarks/bench_predict.py [--model runs/demo/mining] [--data runs/demo/data] [--volumes 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from uld.data.sources import dataset_sources
from uld.infer.export import read_slicer_roi
from uld.infer.predict import load_model
from uld.infer.scans import predict_scans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo/mining")
    parser.add_argument("--data", default="runs/demo/data")
    parser.add_argument("--volumes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--keep", help="copy the outputs to this folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, config = load_model(args.model)
    sources = dataset_sources(args.data, "test")[: args.volumes]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = predict_scans(model, config, sources, tmp, progress=False)
        wall = time.perf_counter() - started
        print(f"model {args.model} ({config.model.backbone}), {args.threads} threads, "
              f"linker {config.infer.linker}, batch {config.infer.batch_size} slices")
        print(f"{summary['volumes']} volumes, {summary['slices']} slices: "
              f"{summary['slices_per_second']:.1f} slices/s detection + linking, "
              f"{summary['slices'] / wall:.1f} slices/s with reading and writing "
              f"({wall:.1f} s in all); {summary['tracklets']} tracklets, "
              f"{summary['lesions_written']} lesions >= {summary['min_score']}")

        # read one Slicer ROI back and compare it with the JSON of the same lesion
        documents = sorted(Path(tmp).glob("*.lesions.json"))
        best = max((json.loads(p.read_text()) for p in documents),
                   key=lambda d: max((lesion["score"] for lesion in d["lesions"]), default=-1))
        if best["lesions"]:
            lesion = best["lesions"][0]
            roi = Path(tmp) / "slicer" / f"{best['volume']}.lesion-{lesion['id']}.mrk.json"
            centre, size, orientation = read_slicer_roi(roi)
            same = (np.allclose(centre, lesion["box_mm"]["center"], atol=1e-3)
                    and np.allclose(size, lesion["box_mm"]["size"], atol=1e-3))
            print(f"Slicer ROI {roi.name}: centre {np.round(centre, 1).tolist()} mm, size "
                  f"{np.round(size, 1).tolist()} mm, axes {np.round(orientation, 3).tolist()}; "
                  f"{'matches' if same else 'DOES NOT MATCH'} the JSON's box_mm")
        if args.keep:
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
            print(f"outputs copied to {args.keep}")


if __name__ == "__main__":
    main()
