"""What the synthetic generator draws from (:class:`SynthConfig`) and what it returns: a
:class:`Lesion`'s ground truth and a :class:`Phantom` (the volume with its hidden truth);
volume names and splits by index."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from uld.data.volume import Volume

LESION_KINDS: dict[str, tuple[str, ...]] = {
    "liver": ("cyst", "metastasis", "hyperdense_nodule"),
    "lung": ("solid_nodule", "ground_glass"),
    "kidney": ("cyst", "solid_mass"),
    "spleen": ("hypodense_lesion",),
    "bone": ("lytic", "sclerotic"),
    "soft_tissue": ("lymph_node", "necrotic_mass"),
}
"""Lesion kinds per organ (organ names as written in ``lesions.csv``)."""

ORGAN_WEIGHTS = {
    "liver": 0.30, "lung": 0.20, "soft_tissue": 0.22, "kidney": 0.12, "bone": 0.08, "spleen": 0.08,
}
KIND_WEIGHTS = {
    "liver": (0.3, 0.45, 0.25), "lung": (0.65, 0.35), "kidney": (0.6, 0.4), "spleen": (1.0,),
    "bone": (0.55, 0.45), "soft_tissue": (0.6, 0.4),
}
SIZE_BANDS: tuple[str, ...] = ("<10 mm", "10-20 mm", "20-30 mm", ">=30 mm")
"""Diameter bands of the summary."""


def size_band(diameter_mm: float) -> str:
    """The :data:`SIZE_BANDS` entry of a lesion diameter."""
    if diameter_mm < 10.0:
        return SIZE_BANDS[0]
    if diameter_mm < 20.0:
        return SIZE_BANDS[1]
    if diameter_mm < 30.0:
        return SIZE_BANDS[2]
    return SIZE_BANDS[3]


@dataclass(frozen=True)
class SynthConfig:
    """Everything the generator draws from; ``dataset.json`` stores it as ``generator``."""

    n_train: int = 300
    n_val: int = 30
    n_test: int = 60
    n_negatives: int = 0
    """Fully annotated training-like volumes (split ``negatives``, after the test volumes):
    the pool that ``uld mine-negatives`` searches for hard negatives (Revised-Train744's role)."""
    size: int = 128
    """Slices are ``size x size`` pixels."""
    seed: int = 0
    missing: Literal["recist", "random"] = "recist"
    """How train labels go missing (see the module docstring); val/test are fully labeled."""
    missing_rate: float = 0.5
    """Probability that a train label is dropped (``missing="random"`` only)."""
    recist_min_diameter_mm: float = 10.0
    recist_max_per_organ: int = 2
    recist_max_per_volume: int = 5
    recist_choice: Literal["largest", "random"] = "largest"
    """Which measurable lesions RECIST-style selection measures first: the largest, or any."""
    pixel_spacing_mm: tuple[float, float] = (1.2, 1.5)
    """Uniform range of the in-plane pixel spacing. Anatomy scales with the field of view and
    lesions keep their size in mm, so a fine spacing gives a small body with lesions large
    enough in pixels for a CPU-sized detector (a 10 mm lesion spans about 7 pixels)."""
    slice_spacings_mm: tuple[float, ...] = (2.0, 2.5, 3.0, 5.0)
    slice_spacing_weights: tuple[float, ...] = (0.35, 0.3, 0.2, 0.15)
    depth: tuple[int, int] = (24, 40)
    """Inclusive range of the number of slices."""
    lesions_per_volume: tuple[int, int] = (1, 8)
    """Inclusive range of the lesions drawn per volume (a few may not find room)."""
    lesions_mean: float = 4.5
    """Mean of the count before the cap at the maximum (see ``lesions_count``)."""
    lesions_count: Literal["poisson", "geometric"] = "poisson"
    """Law of the count: ``min + Poisson(mean - min)``, or ``min - 1 + Geometric(p)`` with
    ``p = 1 / (mean - min + 1)`` (many scans with one lesion and a long tail, as in
    DeepLesion's fully annotated sub-volumes: median 2, 31 % with one)."""
    diameter_mm: tuple[float, float] = (5.0, 50.0)
    """Range of the nominal lesion diameter (further capped by the organ's size)."""
    diameter_median_mm: float = 14.0
    diameter_sigma: float = 0.6
    """Nominal diameters are log-normal(median, sigma) truncated to ``diameter_mm``."""
    disease_organ_share: float = 0.45
    """Probability that a lesion goes to the volume's main organ (metastases cluster)."""
    same_kind_share: float = 0.6
    """Probability that a further lesion of an organ repeats that organ's first kind."""
    noise_sd_hu: tuple[float, float] = (10.0, 25.0)
    """Uniform range of the noise standard deviation in the final image."""
    blur_sigma_px: tuple[float, float] = (0.5, 0.8)
    """Uniform range of the in-plane Gaussian blur (pixels); along z a third of it."""
    lung_probability: float = 0.45
    """Share of volumes whose first slices reach into the lungs."""
    min_cross_section_px: int = 2
    """A lesion has a 2D box only on slices where its cross-section has this many pixels."""
    lesion_contrast: float = 2.0
    """Multiplies each lesion's difference from the tissue it replaces (1 = the HU of its kind).
    The default 2 lets a random-init detector find lesions within a few minutes of CPU time
    (at 1, a demo-sized run had learned nothing after 600 steps)."""

    sparsity_levels: tuple[float, ...] = ()
    """Shares of train lesions left unlabeled for the sparsity sweep: one
    ``annotations_unlabeledNN.csv`` per level (:func:`sparsity_labels`), each in [0, 1)."""

    def __post_init__(self) -> None:
        for name in ("pixel_spacing_mm", "slice_spacings_mm", "slice_spacing_weights", "depth",
                     "lesions_per_volume", "diameter_mm", "noise_sd_hu", "blur_sigma_px",
                     "sparsity_levels"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"SynthConfig.{name} = {getattr(self, name)!r}: {why}")

        for name in ("n_train", "n_val", "n_test", "n_negatives"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        if self.n_volumes > 100_000:
            raise bad("n_train", "n_train + n_val + n_test + n_negatives must be at most 100000 "
                      "(5-digit names)")
        if self.size < 32:
            raise bad("size", "must be >= 32 pixels")
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if any(isinstance(v, float) and not np.isfinite(v)
                   for v in (value if isinstance(value, tuple) else (value,))):
                raise bad(item.name, "must be finite")
        if not self.lesion_contrast > 0:
            raise bad("lesion_contrast", "must be positive")
        if self.missing not in ("recist", "random"):
            raise bad("missing", "must be 'recist' or 'random'")
        if self.lesions_count not in ("poisson", "geometric"):
            raise bad("lesions_count", "must be 'poisson' or 'geometric'")
        if self.recist_choice not in ("largest", "random"):
            raise bad("recist_choice", "must be 'largest' or 'random'")
        if not 0.0 <= self.missing_rate <= 1.0:
            raise bad("missing_rate", "must lie in [0, 1]")
        if self.recist_max_per_organ < 0 or self.recist_max_per_volume < 0:
            raise bad("recist_max_per_organ", "RECIST limits must be >= 0")
        for name in ("pixel_spacing_mm", "depth", "lesions_per_volume", "diameter_mm",
                     "noise_sd_hu", "blur_sigma_px"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1]:
                raise bad(name, "must be a (low, high) pair with 0 <= low <= high")
        if self.pixel_spacing_mm[0] <= 0:
            raise bad("pixel_spacing_mm", "must be positive")
        if self.depth[0] < 3:
            raise bad("depth", "needs at least 3 slices")
        if self.diameter_mm[0] <= 0:
            raise bad("diameter_mm", "must be positive")
        if not self.slice_spacings_mm or any(s <= 0 for s in self.slice_spacings_mm):
            raise bad("slice_spacings_mm", "must be positive millimetres")
        weights = self.slice_spacing_weights
        if len(weights) != len(self.slice_spacings_mm) or any(w < 0 for w in weights) \
                or sum(weights) <= 0:
            raise bad("slice_spacing_weights", "one non-negative weight per slice spacing")
        if self.lesions_mean < self.lesions_per_volume[0]:
            raise bad("lesions_mean", "must be >= the minimum of lesions_per_volume")
        if self.diameter_median_mm <= 0 or self.diameter_sigma <= 0:
            raise bad("diameter_sigma", "median and sigma must be positive")
        for name in ("disease_organ_share", "same_kind_share", "lung_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must lie in [0, 1]")
        if self.min_cross_section_px < 1:
            raise bad("min_cross_section_px", "must be >= 1")
        for level in self.sparsity_levels:
            if not 0.0 <= level < 1.0:
                raise bad("sparsity_levels", f"{level} is not an unlabeled share in [0, 1)")

    @property
    def n_volumes(self) -> int:
        return self.n_train + self.n_val + self.n_test + self.n_negatives


@dataclass(frozen=True)
class Lesion:
    """Ground truth of one lesion.

    z (tuple[int, ...]): slices where it has a 2D box, ascending.
    boxes_xyxy (tuple[tuple[float, float, float, float], ...]): one box per entry of ``z``,
        ``[xmin, ymin, xmax + 1, ymax + 1]`` of the mask pixels, ``0 <= x1 < x2 <= size``.
    box3d (tuple[float, ...]): ``x1, y1, z1, x2, y2, z2`` in voxel indices, the union of the
        2D boxes, ``z2`` exclusive.
    key_z: slice of the largest cross-section. diameter_mm: RECIST long axis on that slice.
    labeled: the label is in ``annotations.csv`` (always true outside train).
    """

    volume: str
    index: int
    organ: str
    kind: str
    diameter_mm: float
    key_z: int
    box3d: tuple[float, float, float, float, float, float]
    z: tuple[int, ...]
    boxes_xyxy: tuple[tuple[float, float, float, float], ...]
    labeled: bool

    @property
    def key_box_xyxy(self) -> tuple[float, float, float, float]:
        return self.boxes_xyxy[self.z.index(self.key_z)]

    def box_on(self, z: int) -> tuple[float, float, float, float] | None:
        """The 2D box on slice ``z``, or ``None`` where the lesion has none."""
        return self.boxes_xyxy[self.z.index(z)] if z in self.z else None


@dataclass(frozen=True)
class Phantom:
    """A generated volume with its hidden truth.

    volume: the CT, ``hu (ndarray[Z, Y, X], int16)``.
    tissue (ndarray[Z, Y, X], uint8): :class:`Tissue` labels of the anatomy (lesions not drawn).
    lesion_map (ndarray[Z, Y, X], int16): 0 outside lesions, ``i + 1`` inside lesion ``i``.
    """

    name: str
    split: str
    volume: Volume
    lesions: tuple[Lesion, ...]
    tissue: np.ndarray
    lesion_map: np.ndarray


def volume_name(index: int) -> str:
    """``synth_00042`` for index 42."""
    return f"synth_{index:05d}"


def split_of(config: SynthConfig, index: int) -> str:
    """Volumes ``0..n_train-1`` are train, then val, then test, then negatives."""
    if not 0 <= index < config.n_volumes:
        raise IndexError(f"volume index {index} outside 0..{config.n_volumes - 1}")
    for split, count in (("train", config.n_train), ("val", config.n_val), ("test", config.n_test)):
        if index < count:
            return split
        index -= count
    return "negatives"
