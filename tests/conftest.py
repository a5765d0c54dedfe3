"""Shared fixtures.

``deeplesion_tree``: writes small DeepLesion trees in the real layout (16-bit PNG slices,
``DL_info.csv`` with the real 18 columns, Lesion Harvester ``Revised-*.pkl`` files), so that
tests can run the DeepLesion reader and everything downstream of it without the 220 GB
dataset. Usage::

    def test_something(deeplesion_tree, tmp_path):
        hu = np.full((64, 64), -1000, np.int16)
        root = deeplesion_tree(
            tmp_path / "DeepLesion",
            {"000001_01_01": {11: hu, 12: hu, 13: hu}},              # folder -> {slice: image}
            dl_info_rows=[deeplesion_tree.row("000001_01_01_012.png", (20, 21, 40, 41),
                                              slice_range=(11, 13))],
        )
        # root/Images_png/000001_01_01/011.png ... and root/DL_info.csv
        deeplesion_tree.write_harvester(tmp_path / "lh",
                                        val={"000001_01_01_011-013": {1: [(19, 20, 39, 40)]}})

This module imports nothing of ``uld`` so that a broken package cannot break test collection.
"""

from __future__ import annotations

import csv
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uld.data.deeplesion import DL_INFO_COLUMNS


def _join(values: Sequence[float]) -> str:
    """DL_info's multi-value text: ``"1.5, 2, 3"`` (integers without a decimal point)."""
    return ", ".join(f"{v:g}" for v in values)


class DeepLesionTree:
    """Factory behind the ``deeplesion_tree`` fixture (call it, or use its helpers)."""

    columns = DL_INFO_COLUMNS

    def __call__(
        self,
        root: str | Path,
        series: Mapping[str, Mapping[int, np.ndarray]],
        dl_info_rows: Sequence[Mapping[str, object] | Sequence[object]] | None = None,
        header: Sequence[str] | None = None,
    ) -> Path:
        """Write ``root/Images_png/<folder>/<slice:03d>.png`` and, optionally, ``root/DL_info.csv``.

        series: ``{folder: {slice_number: image}}``; an image is ``ndarray[Y, X]``, either
            ``uint16`` (written as the raw PNG value) or ``int16`` Hounsfield units (written as
            HU + 32768, DeepLesion's encoding). Every PNG is 16-bit grayscale (checked).
        dl_info_rows: rows of ``DL_info.csv``: a mapping ``{column: value}`` (missing columns are
            written empty; :meth:`row` builds a complete one) or a sequence of values written
            verbatim (any length: for malformed-row tests). Multi-value fields are quoted as in
            the real file. ``None`` writes no CSV.
        header: replaces the real header (for wrong-header tests).
        Returns ``root``.
        """
        root = Path(root)
        for folder, slices in series.items():
            folder_dir = root / "Images_png" / folder
            folder_dir.mkdir(parents=True, exist_ok=True)
            for number, image in slices.items():
                self.write_png(folder_dir / f"{int(number):03d}.png", image)
        (root / "Images_png").mkdir(parents=True, exist_ok=True)
        if dl_info_rows is not None:
            self.write_dl_info(root / "DL_info.csv", dl_info_rows, header)
        return root

    @staticmethod
    def write_png(path: str | Path, image: np.ndarray) -> Path:
        """One 16-bit PNG slice: ``uint16`` as is, ``int16`` HU as HU + 32768."""
        image = np.asarray(image)
        if image.dtype == np.int16:
            pixels = (image.astype(np.int32) + 32768).astype(np.uint16)
        elif image.dtype == np.uint16:
            pixels = image
        else:
            raise TypeError(f"{path}: slice must be uint16 (PNG values) or int16 (HU), got {image.dtype}")
        if pixels.ndim != 2:
            raise ValueError(f"{path}: a slice is [Y, X], got shape {pixels.shape}")
        picture = Image.fromarray(pixels)
        assert picture.mode == "I;16", f"Pillow made mode {picture.mode}, not 16-bit"
        picture.save(path)
        return Path(path)

    @staticmethod
    def write_dl_info(
        path: str | Path,
        rows: Sequence[Mapping[str, object] | Sequence[object]],
        header: Sequence[str] | None = None,
    ) -> Path:
        """A ``DL_info.csv`` with the real header (or ``header``) and ``rows`` (see ``__call__``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(DL_INFO_COLUMNS if header is None else header)
            for row in rows:
                if isinstance(row, Mapping):
                    unknown = set(row) - set(DL_INFO_COLUMNS)
                    if unknown:
                        raise KeyError(f"not DL_info columns: {sorted(unknown)}")
                    writer.writerow([row.get(c, "") for c in DL_INFO_COLUMNS])
                else:
                    writer.writerow(list(row))
        return path

    @staticmethod
    def row(
        file_name: str,
        box: Sequence[float],
        *,
        slice_range: tuple[int, int],
        split: int = 1,
        spacing: Sequence[float] = (0.8, 0.8, 5.0),
        noisy: int = 0,
        lesion_type: int | None = None,
        image_size: tuple[int, int] = (512, 512),
        windows: tuple[float, float] = (-175, 275),
        gender: str = "F",
        age: object = 60,
    ) -> dict[str, str]:
        """A complete, consistent DL_info row (values as the file writes them, **1-based**).

        ``box`` is ``Bounding_boxes`` (x1, y1, x2, y2); the RECIST points are the box shrunk by
        the 5 px padding (long axis on the diagonal). ``lesion_type`` defaults to -1 on train
        rows and 2 otherwise. Patient, study, series and key slice come from ``file_name``.
        """
        folder, number = file_name[: -len(".png")].rsplit("_", 1)
        patient, study, series_id = (int(p) for p in folder.split("_"))
        x1, y1, x2, y2 = (float(v) for v in box)
        a, b, c, d = x1 + 5, y1 + 5, x2 - 5, y2 - 5
        points = (a, b, c, d, a, d, c, b)
        long_axis = float(np.hypot(c - a, d - b))
        return {
            "File_name": file_name,
            "Patient_index": str(patient),
            "Study_index": str(study),
            "Series_ID": str(series_id),
            "Key_slice_index": str(int(number)),
            "Measurement_coordinates": _join(points),
            "Bounding_boxes": _join((x1, y1, x2, y2)),
            "Lesion_diameters_Pixel_": _join((long_axis, long_axis)),
            "Normalized_lesion_location": "0.5, 0.5, 0.5",
            "Coarse_lesion_type": str(lesion_type if lesion_type is not None else (-1 if split == 1 else 2)),
            "Possibly_noisy": str(noisy),
            "Slice_range": _join(slice_range),
            "Spacing_mm_px_": _join(spacing),
            "Image_size": _join(image_size),
            "DICOM_windows": _join(windows),
            "Patient_gender": gender,
            "Patient_age": "" if age is None else str(age),
            "Train_Val_Test": str(split),
        }

    @staticmethod
    def write_harvester(
        directory: str | Path,
        val: Mapping[str, Mapping[int, Sequence[Sequence[float]]]] | None = None,
        test: Mapping[str, Mapping[int, Sequence[Sequence[float]]]] | None = None,
        negatives: Mapping[str, Mapping[int, Sequence[Sequence[float]]]] | None = None,
    ) -> Path:
        """Lesion Harvester's three ``Revised-*.pkl`` files in their real layout.

        Each argument is ``{subvolume: {z: [(x1, y1, x2, y2), ...]}}`` with **1-based** boxes
        (as the real files) and ``z`` the offset from the sub-volume's first slice; it becomes
        ``{"<subvolume>.annot": {z: [[x1, y1, x2, y2, z, z], ...]}}``. ``val`` ->
        ``Revised-Train100.pkl``, ``test`` -> ``Revised-Test1071.pkl``, ``negatives`` ->
        ``Revised-Train744.pkl``; ``None`` writes an empty dict. Returns ``directory``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for filename, sets in (("Revised-Train100.pkl", val), ("Revised-Test1071.pkl", test),
                               ("Revised-Train744.pkl", negatives)):
            doc = {
                f"{name}.annot": {int(z): [[*(float(v) for v in box), float(z), float(z)] for box in boxes]
                                  for z, boxes in slices.items()}
                for name, slices in (sets or {}).items()
            }
            with (directory / filename).open("wb") as handle:
                pickle.dump(doc, handle, protocol=2)
        return directory


@pytest.fixture
def deeplesion_tree() -> DeepLesionTree:
    """A factory writing mini DeepLesion trees; see :class:`DeepLesionTree`."""
    return DeepLesionTree()


def random_2d_case(
    rng: np.random.Generator, max_tracklets: int = 6, gt_slices: int = 4, max_boxes: int = 4,
    sort_gt: bool = False,
) -> tuple[dict, dict]:
    """Random 2D ground truth and tracklets for comparisons with reference implementations:
    small integer boxes on few slices, so ties, duplicate slices and IoUs at 0.5 are common.

    Ground truth ``{"v0": [(z, box), ...], ...}`` (1 to 5 volumes, 0 to 4 boxes, z below
    ``gt_slices``, sorted by z when ``sort_gt``); detections: 80 % of the volumes get 0 to
    ``max_tracklets`` tracklets of 1 to ``max_boxes`` boxes (60 % near a ground-truth box), with
    scores 0.1 .. 0.5 (ties).
    """
    def box(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
        return np.array([x1, y1, x2, y2], dtype=np.float64)

    gt: dict = {}
    for v in range(int(rng.integers(1, 6))):
        items = []
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.integers(0, 12, 2)
            w, h = rng.integers(0, 8, 2)
            items.append((int(rng.integers(0, gt_slices)), box(x, y, x + w, y + h)))
        gt[f"v{v}"] = sorted(items, key=lambda item: item[0]) if sort_gt else items
    dets: dict = {}
    for name in gt:
        if rng.random() < 0.2:
            continue  # a volume without detections
        tracklets = []
        for _ in range(int(rng.integers(0, max_tracklets + 1))):
            rows = []
            for _ in range(int(rng.integers(1, max_boxes + 1))):
                if gt[name] and rng.random() < 0.6:
                    z, g = gt[name][rng.integers(len(gt[name]))]
                    b = g + rng.integers(-2, 3, 4) * rng.choice([0.5, 1.0])
                    b[2:] = np.maximum(b[2:], b[:2])
                else:
                    z = int(rng.integers(0, 4))
                    x, y = rng.integers(0, 12, 2)
                    b = box(x, y, x + rng.integers(0, 8), y + rng.integers(0, 8))
                rows.append((int(z), np.append(b, float(rng.integers(1, 6)) / 10)))
            tracklets.append(rows)
        dets[name] = tracklets
    return gt, dets


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped, with the reason, without one")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped with a printed reason where torch sees no CUDA GPU."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch  # only when GPU tests were collected

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU here (torch.cuda.is_available() is False); "
                                   "benchmarks/gpu/check.sh runs these on one")
    for item in gpu_items:
        item.add_marker(skip)
