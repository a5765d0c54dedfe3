"""9-slice 2.5D stacks per second straight from DeepLesion-style 16-bit PNGs, on one core.

    OMP_NUM_THREADS=1 python benchmarks/bench_png_stacks.py [--slices 60] [--size 512] [--stacks 60]
        [--workers 0,1,2,4] [--loader-samples 64] [--json FILE] [--only-loader]

Writes ``--slices`` CT-like ``--size``x``--size`` 16-bit PNG slices (HU + 32768, like
DeepLesion's ``Images_png``) into a temporary folder, then measures

1. PNG decoding, ms per slice: Pillow (``np.asarray(Image.open(p))``) against SimpleITK
   (``ReadImage(p, imageIO="PNGImageIO")``), each followed by the HU shift;
2. the training-input path per stack, without any cache: a freshly opened lazy sub-volume
   (:meth:`uld.data.deeplesion.DeepLesionImages.lazy_subvolume`) reads the slices a 9-slice
   stack at 2 mm needs -> HU -> z-interpolated stack (:func:`uld.data.stack.slice_stacks`) ->
   window -1024..3071 (:func:`uld.data.stack.window`), for a 5 mm and a 1 mm series (5 and 9
   PNG reads per stack, plus the first slice for the shape);
3. the whole model input of ``configs/deeplesion.yaml`` (:func:`uld.data.preprocess.prepare_stacks`:
   the same, then resampled to 0.8 mm pixels, longer side capped at 512) from 0.6 and 0.9 mm
   pixels.

4. with ``--workers``: samples/s of item 3 (1 mm slices, 0.9 mm pixels: 9 PNG reads per
   sample) through a ``torch.utils.data.DataLoader`` with each number of worker processes, as
   ``uld train`` builds it (persistent workers, prefetch 2, batch 2); what a GPU can be fed.

Single-threaded: OMP/MKL/OpenBLAS threads are set to 1 before numpy loads and SimpleITK's
global thread count to 1. Not part of the test suite.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TypeVar  # noqa: E402

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from uld.config import load_config  # noqa: E402
from uld.data.deeplesion import HU_OFFSET, DeepLesionImages  # noqa: E402
from uld.data.preprocess import prepare_stacks  # noqa: E402
from uld.data.stack import slice_stacks, stack_positions, window  # noqa: E402

T = TypeVar("T")
TARGET_MM = 2.0
NUM_SLICES = 9
WINDOW_HU = (-1024.0, 3071.0)


def fake_ct_slice(size: int, index: int, rng: np.random.Generator) -> np.ndarray:
    """An int16 HU slice that compresses like CT: air, an elliptic body, a spine, noise."""
    y, x = np.mgrid[:size, :size] / size - 0.5
    body = (x / 0.42) ** 2 + (y / 0.32) ** 2 < 1
    spine = (x / 0.05) ** 2 + ((y - 0.18) / 0.05) ** 2 < 1
    organ = ((x + 0.12 + 0.002 * index) / 0.12) ** 2 + ((y + 0.02) / 0.1) ** 2 < 1
    hu = np.where(body, 30.0, -1000.0) + np.where(spine, 600.0, 0.0) + np.where(organ, 30.0, 0.0)
    hu += rng.normal(0.0, 12.0, hu.shape)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16)


def write_series(folder: Path, slices: int, size: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for n in range(1, slices + 1):
        pixels = (fake_ct_slice(size, n, rng).astype(np.int32) + HU_OFFSET).astype(np.uint16)
        path = folder / f"{n:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def read_pillow(path: Path) -> np.ndarray:
    pixels = np.asarray(Image.open(path))
    return (pixels ^ np.uint16(HU_OFFSET)).view(np.int16)


def read_sitk(path: Path) -> np.ndarray:
    image = sitk.ReadImage(str(path), imageIO="PNGImageIO")  # alive while its view is read
    pixels = sitk.GetArrayViewFromImage(image)
    return (pixels ^ np.uint16(HU_OFFSET)).view(np.int16)


def best_ms_per_item(fn: Callable[[T], object], items: Sequence[T], repeat: int) -> float:
    """Milliseconds per ``fn(item)`` over all ``items``: the best of ``repeat`` passes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return best * 1e3


def stack_from_pngs(images: DeepLesionImages, name: str, centre: int, slice_mm: float) -> np.ndarray:
    """The windowed ``[9, Y, X]`` stack around slice index ``centre`` of a freshly opened lazy
    sub-volume (what a training sample reads with ``data.cache_volumes: false``)."""
    volume = images.lazy_subvolume(name, (0.8, 0.8, slice_mm))
    return window(slice_stacks(volume.hu, np.array([centre]), slice_mm, TARGET_MM, NUM_SLICES)[0],
                  *WINDOW_HU)


def model_input(
    images: DeepLesionImages, name: str, centre: int, slice_mm: float, pixel_mm: float
) -> np.ndarray:
    """The whole model input of the paper's config: stack, window, resample to 0.8 mm pixels."""
    volume = images.lazy_subvolume(name, (pixel_mm, pixel_mm, slice_mm))
    return prepare_stacks(volume, np.array([centre]), load_config("deeplesion").data)[0][0]


def check_against_full_volume(images: DeepLesionImages, name: str, slice_mm: float) -> None:
    """The partial read gives exactly the stack computed from the whole volume."""
    volume = images.read_subvolume(name, (0.8, 0.8, slice_mm)).hu
    for centre in (0, 1, len(volume) // 2, len(volume) - 1):
        want = window(slice_stacks(volume, np.array([centre]), slice_mm, TARGET_MM, NUM_SLICES)[0],
                      *WINDOW_HU)
        np.testing.assert_array_equal(stack_from_pngs(images, name, centre, slice_mm), want)


class PngSamples(torch.utils.data.Dataset):
    """Model inputs of ``centres`` read from the PNGs each time (no cache), as training reads."""

    def __init__(self, root: str, name: str, centres: Sequence[int]) -> None:
        self.root, self.name, self.centres = root, name, list(centres)
        self.images: DeepLesionImages | None = None

    def __len__(self) -> int:
        return len(self.centres)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.images is None:  # opened in each worker
            self.images = DeepLesionImages(self.root)
        return torch.from_numpy(model_input(self.images, self.name, self.centres[index], 1.0, 0.9))


def loader_rate(dataset: PngSamples, workers: int, samples: int) -> float:
    """Samples per second through a DataLoader with ``workers`` processes (after one batch of
    warm-up: the workers' start is not counted, as persistent workers start once per run)."""
    indices = [i % len(dataset) for i in range(samples + 2)]
    batches = [indices[i:i + 2] for i in range(0, len(indices), 2)]
    extra = {"persistent_workers": True, "prefetch_factor": 2} if workers else {}
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                                         collate_fn=list, **extra)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    n = sum(len(batch) for batch in it)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--stacks", type=int, default=60, help="stacks timed per series")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", default="", help="comma-separated DataLoader worker counts")
    parser.add_argument("--loader-samples", type=int, default=64)
    parser.add_argument("--only-loader", action="store_true", help="skip items 1-3")
    parser.add_argument("--json", help="append the loader figures as one JSON line to this file")
    args = parser.parse_args()
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_series(Path(tmp) / "Images_png" / "000001_01_01", args.slices, args.size, args.seed)
        mean_kb = np.mean([p.stat().st_size for p in paths]) / 1024
        print(f"{args.slices} slices of {args.size}x{args.size}, 16-bit PNG, {mean_kb:.0f} KiB each; "
              f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, SimpleITK threads 1")
        np.testing.assert_array_equal(read_pillow(paths[0]), read_sitk(paths[0]))

        for name, reader in (("Pillow", read_pillow), ("SimpleITK", read_sitk)):
            ms = best_ms_per_item(reader, paths, args.repeat)
            print(f"decode + HU  {name:<10} {ms:6.2f} ms/slice  ({1e3 / ms:6.0f} slices/s)")

        images = DeepLesionImages(tmp)
        name = images.subvolume_names("000001_01_01")[0]
        if args.workers:
            dataset = PngSamples(tmp, name, np.linspace(0, len(paths) - 1, 32).round().astype(int))
            rates = {}
            for workers in (int(w) for w in args.workers.split(",")):
                rates[workers] = loader_rate(dataset, workers, args.loader_samples)
                print(f"DataLoader, {workers:2d} workers: {rates[workers]:6.1f} samples/s "
                      f"(1 mm slices, 0.9 -> 0.8 mm pixels, 9 PNG reads per sample)")
            if args.json:
                with open(args.json, "a") as handle:
                    handle.write(json.dumps({"loader_samples_per_s": rates, "size": args.size,
                                             "cores": len(os.sched_getaffinity(0))}) + "\n")
        if args.only_loader:
            return
        for slice_mm in (5.0, 1.0):
            check_against_full_volume(images, name, slice_mm)
            centres = np.linspace(0, len(paths) - 1, args.stacks).round().astype(int)
            positions = stack_positions(centres, len(paths), slice_mm, TARGET_MM, NUM_SLICES)
            reads = np.mean([len(np.unique(np.concatenate([np.floor(p), np.ceil(p)]))) for p in positions])
            ms = best_ms_per_item(lambda c, mm=slice_mm: stack_from_pngs(images, name, int(c), mm),
                                  list(centres), args.repeat)
            print(f"{slice_mm:g} mm series -> 9 x 2 mm stack: {ms:6.2f} ms/stack ({1e3 / ms:5.1f} stacks/s), "
                  f"{reads:.1f} PNG reads per stack (+1 for the shape)")
            for pixel_mm in (0.6, 0.9):
                def sample(c: int, mm: float = slice_mm, px: float = pixel_mm) -> np.ndarray:
                    return model_input(images, name, int(c), mm, px)

                ms = best_ms_per_item(sample, list(centres), args.repeat)
                shape = sample(0).shape
                print(f"   + window + resample {pixel_mm:g} -> 0.8 mm ({shape[1]}x{shape[2]}): "
                      f"{ms:6.2f} ms/sample ({1e3 / ms:5.1f} samples/s)")


if __name__ == "__main__":
    main()
