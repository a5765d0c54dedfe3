"""Deterministic synthetic CT with lesions and realistic (RECIST-like) missing labels.

DeepLesion cannot be downloaded on the project's machines, so the CPU benchmark runs on
phantoms written here in the generic dataset format v1 (:mod:`uld.data.dataset`).

What a volume holds
-------------------
Anatomy-like background in Hounsfield units: air, a body outline (a super-ellipse that varies
per volume and slowly along z), subcutaneous fat, a muscle wall, visceral fat, liver, spleen,
kidneys (cortex, medulla, sinus), stomach and bowel loops (gas, fluid or oral contrast),
a spine (vertebral bodies with cortex, discs, canal, posterior arch, paraspinal muscles), rib
fragments, and, in the upper slices of some volumes, lungs with pulmonary vessels and the heart.
Distractors that look like lesions on one slice: contrast-enhanced vessels (tubes running
along z and drifting slowly in x/y, present on every slice: aorta and vena cava of radius
8-12 mm, 3-6 smaller vessels of radius 2-6 mm), pulmonary vessel branches, non-enhancing tubes
(ureter-like, also on every slice), bowel loops and calcifications. Only the 9-slice context
tells a vessel from a round lesion.

Lesions are slightly irregular 3D ellipsoids with a per-kind appearance (12 kinds in six
organs, see :data:`LESION_KINDS`), diameters about 5-50 mm skewed to small, 1-8 per volume,
clustered in a volume's "disease organ" as metastases are. The image is blurred a little and
has Gaussian noise of 10-25 HU standard deviation.

Geometry
--------
Array ``[z, y, x]`` as SimpleITK returns it. Slice 0 is the most superior (head end), so lungs
lie in the first slices; columns run from the patient's right to left (radiological display),
rows from anterior to posterior. The image direction is ``diag(1, 1, -1)`` and the origin puts
the volume in LPS millimetres. Anatomy is laid out along a craniocaudal axis ``s`` in
millimetres (``s`` grows toward the feet); each volume covers a random window of it. Anatomy
sizes scale with the field of view (``size * pixel spacing``), lesion sizes are millimetres.

Ground truth and missing labels
-------------------------------
A lesion's mask is the set of voxels inside its irregular ellipsoid (voxel centres). Its 2D
box on a slice is ``[xmin, ymin, xmax + 1, ymax + 1]`` of the mask pixels (continuous pixel
coordinates), kept where the cross-section has at least ``min_cross_section_px`` pixels. The
key slice is the slice of largest cross-section (the first one on ties). ``diameter_mm`` is
the RECIST long axis: the largest distance between mask pixel centres on the key slice, plus
one pixel. Train volumes get partial labels (``missing``): ``"recist"`` measures per volume
lesions of at least ``recist_min_diameter_mm``, at most ``recist_max_per_organ`` per organ and
``recist_max_per_volume`` in all, visiting them largest first (``recist_choice="largest"``) or
in random order (``"random"``: the reader picks any measurable lesions, not the largest);
``"random"`` drops each label with probability ``missing_rate``. Val and test volumes are
fully annotated. (RECIST proper measures lymph nodes by their short axis; we use the long
axis for every lesion.)

Determinism
-----------
Volume ``i`` is drawn from ``np.random.SeedSequence(seed, spawn_key=(i,))`` alone (independent
streams for anatomy, lesions, noise and missingness), so any single volume can be regenerated
and the image does not depend on the missingness settings.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage, special
from tqdm import tqdm

from uld.atomic import write_text
from uld.data.dataset import FORMAT_NAME, FORMAT_VERSION, SPLITS, write_csv
from uld.data.volume import Volume, write_volume
from uld.outdir import staged_folder

__all__ = [
    "ANNOTATION_COLUMNS",
    "LESION_COLUMNS",
    "LESION_KINDS",
    "SIZE_BANDS",
    "Lesion",
    "Phantom",
    "SynthConfig",
    "Tissue",
    "format_summary",
    "generate_phantom",
    "generate_volume",
    "largest_first_labels",
    "random_labels",
    "recist_labels",
    "size_band",
    "sparsity_file",
    "sparsity_labels",
    "split_of",
    "summarize",
    "volume_name",
    "write_synthetic_dataset",
]

LESION_KINDS: dict[str, tuple[str, ...]] = {
    "liver": ("cyst", "metastasis", "hyperdense_nodule"),
    "lung": ("solid_nodule", "ground_glass"),
    "kidney": ("cyst", "solid_mass"),
    "spleen": ("hypodense_lesion",),
    "bone": ("lytic", "sclerotic"),
    "soft_tissue": ("lymph_node", "necrotic_mass"),
}
"""Lesion kinds per organ (organ names as written in ``lesions.csv``)."""

_ORGAN_WEIGHTS = {
    "liver": 0.30, "lung": 0.20, "soft_tissue": 0.22, "kidney": 0.12, "bone": 0.08, "spleen": 0.08,
}
_KIND_WEIGHTS = {
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


class Tissue(IntEnum):
    """Labels of :attr:`Phantom.tissue` (the anatomy before lesions are drawn)."""

    AIR = 0
    SUBCUTANEOUS_FAT = 1
    MUSCLE = 2
    VISCERAL_FAT = 3
    LUNG = 4
    LIVER = 5
    SPLEEN = 6
    KIDNEY = 7
    KIDNEY_MEDULLA = 8
    KIDNEY_SINUS = 9
    BONE = 10
    CORTICAL_BONE = 11
    RIB = 12
    DISC = 13
    CANAL = 14
    VESSEL = 15
    LUNG_VESSEL = 16
    HEART = 17
    HEART_BLOOD = 18
    BOWEL_WALL = 19
    BOWEL_GAS = 20
    BOWEL_FLUID = 21
    BOWEL_CONTRAST = 22
    TUBE = 23
    CALCIFICATION = 24


# where lesion centres of an organ are drawn, and where most of the lesion must lie
_ORGAN_SEED = {
    "liver": (Tissue.LIVER,),
    "lung": (Tissue.LUNG,),
    "kidney": (Tissue.KIDNEY, Tissue.KIDNEY_MEDULLA),
    "spleen": (Tissue.SPLEEN,),
    "bone": (Tissue.BONE,),
    "soft_tissue": (Tissue.VISCERAL_FAT,),
}
_ORGAN_ALLOWED = {
    "liver": (Tissue.LIVER, Tissue.VESSEL),
    "lung": (Tissue.LUNG, Tissue.LUNG_VESSEL),
    "kidney": (Tissue.KIDNEY, Tissue.KIDNEY_MEDULLA, Tissue.KIDNEY_SINUS),
    "spleen": (Tissue.SPLEEN,),
    "bone": (Tissue.BONE, Tissue.CORTICAL_BONE, Tissue.DISC),
    "soft_tissue": (Tissue.VISCERAL_FAT, Tissue.MUSCLE, Tissue.TUBE),
}
_ORGAN_MIN_INSIDE = {
    "liver": 0.7, "lung": 0.7, "kidney": 0.6, "spleen": 0.6, "bone": 0.6, "soft_tissue": 0.6,
}
# largest diameter per organ, millimetres at the reference body size (scaled by kappa)
_ORGAN_MAX_DIAMETER = {
    "liver": 50.0, "lung": 40.0, "kidney": 30.0, "spleen": 35.0, "bone": 26.0, "soft_tissue": 45.0,
}

_REFERENCE_FOV_MM = 128 * 2.6  # the default field of view; anatomy scales with fov / this


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


# --------------------------------------------------------------------------------------------
# missingness


def recist_labels(
    diameters_mm: Sequence[float],
    organs: Sequence[str],
    min_diameter_mm: float = 10.0,
    max_per_organ: int = 2,
    max_per_volume: int = 5,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """RECIST-style selection of the measured lesions of one volume.

    Lesions are visited largest first (ties: lower index first), or in the random order of
    ``rng`` when given; one is measured when it is at least ``min_diameter_mm`` long and its
    organ and the volume still have room. Returns ``labeled (ndarray[N], bool)``.
    """
    d = np.asarray(diameters_mm, dtype=float).reshape(-1)
    if len(organs) != len(d):
        raise ValueError(f"{len(d)} diameters but {len(organs)} organs")
    labeled = np.zeros(len(d), dtype=bool)
    per_organ: dict[str, int] = {}
    total = 0
    order = np.argsort(-d, kind="stable") if rng is None else rng.permutation(len(d))
    for i in order:
        if d[i] < min_diameter_mm or total >= max_per_volume:
            continue
        if per_organ.get(organs[i], 0) >= max_per_organ:
            continue
        labeled[i] = True
        per_organ[organs[i]] = per_organ.get(organs[i], 0) + 1
        total += 1
    return labeled


def matched_random_labels(lesions: Sequence[Lesion], splits: Mapping[str, str],
                          seed: int) -> np.ndarray:
    """The control for a missingness model: as many train labels as ``lesions`` keep, but
    dropped at random (every lesion of a train volume equally likely to stay unlabeled);
    val/test/negatives lesions stay labeled. Returns ``kept (ndarray[N], bool)``."""
    train = np.array([splits[les.volume] == "train" for les in lesions], dtype=bool)
    kept = ~train
    n_labeled = sum(les.labeled for les, t in zip(lesions, train) if t)
    chosen = np.random.default_rng([seed, 0x52414E44]).permutation(np.flatnonzero(train))[:n_labeled]
    kept[chosen] = True
    return kept


def largest_first_labels(lesions: Sequence[Lesion], splits: Mapping[str, str],
                         config: SynthConfig) -> np.ndarray:
    """RECIST-style selection, largest first, of every train volume of ``lesions`` (in
    volume order, as written) with ``config``'s limits; val/test/negatives lesions stay
    labeled. Returns ``kept (ndarray[N], bool)``."""
    kept = np.array([splits[les.volume] != "train" for les in lesions], dtype=bool)
    by_volume: dict[str, list[int]] = {}
    for i, les in enumerate(lesions):
        if not kept[i]:
            by_volume.setdefault(les.volume, []).append(i)
    for index in by_volume.values():
        kept[index] = recist_labels([lesions[i].diameter_mm for i in index],
                                    [lesions[i].organ for i in index],
                                    config.recist_min_diameter_mm, config.recist_max_per_organ,
                                    config.recist_max_per_volume)
    return kept


def sparsity_labels(lesions: Sequence[Lesion], splits: Mapping[str, str], unlabeled: float,
                    seed: int) -> np.ndarray:
    """Labels of the sparsity sweep: ``unlabeled`` (in [0, 1)) of the train lesions left
    without a label, the rest chosen RECIST-style.

    Every train lesion gets its rank in its volume, largest first (0 = the largest). Labels go
    to all rank-0 lesions first, then all rank-1 lesions, and so on (ties within a rank broken
    at random by ``seed``) until ``round((1 - unlabeled) * n_train_lesions)`` are labeled, so a
    higher level only ever removes labels, the smallest and the further lesions of a scan
    first, as a radiologist who measures fewer targets would. 0 is the oracle's labels;
    val/test/negatives lesions stay labeled. Returns ``kept (ndarray[N], bool)``.
    """
    if not 0.0 <= unlabeled < 1.0:
        raise ValueError(f"sparsity level {unlabeled}: the unlabeled share must lie in [0, 1)")
    train = np.array([splits[les.volume] == "train" for les in lesions], dtype=bool)
    rank = np.zeros(len(lesions), dtype=int)
    by_volume: dict[str, list[int]] = {}
    for i in np.flatnonzero(train):
        by_volume.setdefault(lesions[i].volume, []).append(int(i))
    for index in by_volume.values():
        order = sorted(index, key=lambda i: (-lesions[i].diameter_mm, i))
        rank[order] = np.arange(len(order))
    tiebreak = np.random.default_rng([seed, 0x5350]).random(len(lesions))
    candidates = np.flatnonzero(train)
    ranked = candidates[np.lexsort((tiebreak[candidates], rank[candidates]))]
    kept = ~train
    kept[ranked[: round((1.0 - unlabeled) * len(candidates))]] = True
    return kept


def sparsity_file(unlabeled: float) -> str:
    """Annotation file of one sweep level: ``annotations_unlabeled55.csv`` for 0.55."""
    return f"annotations_unlabeled{round(100 * unlabeled):02d}.csv"


def random_labels(n: int, missing_rate: float, rng: np.random.Generator) -> np.ndarray:
    """``labeled (ndarray[n], bool)``: each label kept with probability ``1 - missing_rate``."""
    return rng.random(n) >= missing_rate


# --------------------------------------------------------------------------------------------
# geometry and drawing helpers


@dataclass(frozen=True)
class _Geometry:
    size: int
    depth: int
    px: float  # pixel spacing, mm
    dz: float  # slice spacing, mm
    s0: float  # craniocaudal position of slice 0, mm
    kappa: float  # anatomy scale (field of view / reference field of view)
    xs: np.ndarray  # (X,) mm, column centres relative to the image centre
    ys: np.ndarray  # (Y,) mm, row centres
    s: np.ndarray  # (Z,) mm, craniocaudal positions of the slices

    def col(self, x_mm: float) -> float:
        return x_mm / self.px + (self.size - 1) / 2

    def row(self, y_mm: float) -> float:
        return y_mm / self.px + (self.size - 1) / 2

    def slice_index(self, s_mm: float) -> float:
        return (s_mm - self.s0) / self.dz


def _box_window(geo: _Geometry, lo: float, hi: float) -> slice:
    """Pixel index window covering the mm interval ``[lo, hi]`` (clipped to the image)."""
    i0 = int(np.floor(lo / geo.px + (geo.size - 1) / 2))
    i1 = int(np.ceil(hi / geo.px + (geo.size - 1) / 2)) + 1
    return slice(max(i0, 0), min(max(i1, 0), geo.size))


def _profile(s: np.ndarray, top: float, bottom: float, power: float = 0.6,
             skew: float = 1.0) -> np.ndarray:
    """(Z,) organ size factor along s: 0 outside ``[top, bottom]``, a rounded bump inside."""
    t = np.clip((s - top) / max(bottom - top, 1e-6), 0.0, 1.0)
    return np.sin(np.pi * t**skew) ** power


def _labels_in(tissue: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """``np.isin(tissue, labels)`` for a few labels (faster than ``isin`` on uint8 maps)."""
    out = tissue == labels[0]
    for label in labels[1:]:
        out |= tissue == label
    return out


def _ellipse_rho(
    x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray, ax: np.ndarray, ay: np.ndarray,
    angle: float = 0.0, harmonics: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
) -> np.ndarray:
    """Normalised radius of a (rotated, slightly lumpy) ellipse; <= 1 inside.

    x (ndarray[1, 1, X]), y (ndarray[1, Y, 1]): mm; cx, cy, ax, ay (ndarray[Z, 1, 1]): centre
    and semi-axes per slice (a semi-axis of 0 means absent: ``inf`` on that slice).
    ``harmonics`` = amplitudes and phases of a 2- and 3-lobed boundary wobble
    ``(h2, phi2, h3, phi3)``. Returns ``rho (ndarray[Z, Y, X], float32)``.
    """
    f32 = np.float32
    c, s = f32(np.cos(angle)), f32(np.sin(angle))
    absent = ((ax <= 0) | (ay <= 0)).reshape(-1)
    inv_ax = np.where(ax > 0, 1 / np.where(ax > 0, ax, 1), 0).astype(f32)
    inv_ay = np.where(ay > 0, 1 / np.where(ay > 0, ay, 1), 0).astype(f32)
    dx, dy = (x - cx).astype(f32), (y - cy).astype(f32)
    # the rotation is applied to the small factors; only the sums are full size
    u = (c * inv_ax) * dx + (s * inv_ax) * dy
    v = (-s * inv_ay) * dx + (c * inv_ay) * dy
    r2 = u * u + v * v
    rho = np.sqrt(r2)
    h2, p2, h3, p3 = harmonics
    if h2 or h3:
        uu, vv, uv = u * u, v * v, u * v
        lobes = (f32(h2 * np.cos(2 * p2)) * (uu - vv) + f32(2 * h2 * np.sin(2 * p2)) * uv) * rho
        lobes += f32(h3 * np.cos(3 * p3)) * u * (uu - 3 * vv)
        lobes += f32(h3 * np.sin(3 * p3)) * v * (3 * uu - vv)
        rho = rho / (1 + lobes / np.maximum(r2 * rho, f32(1e-12)))
    if absent.any():
        rho[absent] = np.inf
    return rho


class _Canvas:
    """The HU and tissue arrays being painted (internal; one per generated volume)."""

    def __init__(self, geo: _Geometry) -> None:
        self.geo = geo
        shape = (geo.depth, geo.size, geo.size)
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.tissue = np.zeros(shape, dtype=np.uint8)
        self.x = geo.xs.astype(np.float32)[None, None, :]
        self.y = geo.ys.astype(np.float32)[None, :, None]

    def paint(self, region: tuple[slice, slice, slice], mask: np.ndarray, label: int,
              value: float | np.ndarray) -> None:
        """Set ``tissue = label`` and ``hu = value`` where ``mask`` (in ``region``) is true."""
        t, h = self.tissue[region], self.hu[region]
        t[mask] = label
        h[mask] = value if np.isscalar(value) else np.broadcast_to(value, mask.shape)[mask]

    def ellipse(
        self, cx: np.ndarray, cy: np.ndarray, ax: np.ndarray, ay: np.ndarray, *,
        angle: float = 0.0, harmonics: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
        within: tuple[int, ...] | None = None,
    ) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        """Normalised radius of an ellipse, computed only over its bounding region.

        cx, cy, ax, ay (ndarray[Z], mm). Returns ``(region, rho)`` with ``rho`` of the region's
        shape, where ``within`` (tissue labels) restricts it (``inf`` elsewhere), or ``None``
        when the ellipse is on no slice.
        """
        present = np.flatnonzero((ax > 0) & (ay > 0))
        if present.size == 0:
            return None
        z = slice(int(present[0]), int(present[-1]) + 1)
        wobble = max(1.0 - abs(harmonics[0]) - abs(harmonics[2]), 0.5)
        reach = np.maximum(ax, ay)[z] / wobble + 1.0
        region = (
            z,
            _box_window(self.geo, float(np.min(cy[z] - reach)), float(np.max(cy[z] + reach))),
            _box_window(self.geo, float(np.min(cx[z] - reach)), float(np.max(cx[z] + reach))),
        )
        cx3, cy3, ax3, ay3 = (np.asarray(v[z], dtype=np.float32)[:, None, None]
                              for v in (cx, cy, ax, ay))
        rho = _ellipse_rho(self.x[..., region[2]], self.y[:, region[1], :], cx3, cy3, ax3, ay3,
                           angle, harmonics)
        if within is not None:
            rho[~_labels_in(self.tissue[region], within)] = np.inf
        return region, rho


def _tube_centres(rng: np.random.Generator, s: np.ndarray, x0: float, y0: float,
                  amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """(Z,) x and y of a tube drifting slowly along s (slope at most ~0.12 mm per mm)."""
    out = []
    for start in (x0, y0):
        wavelength = rng.uniform(150.0, 400.0)
        amp = min(amplitude * rng.uniform(0.3, 1.0), 0.12 * wavelength / (2 * np.pi))
        out.append(start + amp * np.sin(2 * np.pi * s / wavelength + rng.uniform(0, 2 * np.pi)))
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# anatomy


@dataclass(frozen=True)
class _Anatomy:
    enhancement: float
    organ_hu: dict[str, float]
    lung_base: float
    vertebra_radius: float


def _sample_geometry(config: SynthConfig, rng: np.random.Generator) -> tuple[_Geometry, float]:
    px = float(rng.uniform(*config.pixel_spacing_mm))
    w = np.asarray(config.slice_spacing_weights, dtype=float)
    dz = float(config.slice_spacings_mm[rng.choice(len(w), p=w / w.sum())])
    depth = int(rng.integers(config.depth[0], config.depth[1] + 1))
    lung_base = float(rng.uniform(190.0, 215.0))
    length = depth * dz
    # slice 0 reaches above the lung base with probability lung_probability
    if rng.random() < config.lung_probability:
        s0 = lung_base - rng.uniform(0.15, 0.6) * min(length, 90.0) - 1.0
    else:
        s0 = lung_base + rng.uniform(0.0, 110.0)
    size = config.size
    centre = (np.arange(size) - (size - 1) / 2) * px
    geo = _Geometry(
        size=size, depth=depth, px=px, dz=dz, s0=float(s0),
        kappa=size * px / _REFERENCE_FOV_MM,
        xs=centre, ys=centre.copy(), s=s0 + np.arange(depth) * dz,
    )
    return geo, lung_base


def _draw_anatomy(canvas: _Canvas, lung_base: float, rng: np.random.Generator) -> _Anatomy:
    """Paint the background anatomy into ``canvas``; returns what lesions need to know."""
    geo = canvas.geo
    k = geo.kappa
    s = geo.s
    nz = geo.depth
    x, y = canvas.x, canvas.y
    e = float(rng.uniform(0.5, 0.95))  # contrast enhancement of the portal-venous phase
    hu = {
        "fat": rng.uniform(-115, -85), "muscle": rng.uniform(40, 55),
        "visceral_fat": rng.uniform(-100, -75), "lung": rng.uniform(-880, -820),
        "liver": 55 + 50 * e + rng.uniform(-8, 8), "spleen": 45 + 70 * e + rng.uniform(-8, 8),
        "kidney": 35 + 125 * e + rng.uniform(-8, 8), "vessel": 45 + 210 * e + rng.uniform(-10, 10),
        "bone": rng.uniform(180, 350), "cortex": rng.uniform(600, 1000),
    }

    # body outline: super-ellipse, flatter at the back, breathing slowly along s
    fov_half = geo.size * geo.px / 2
    a = rng.uniform(0.80, 0.92) * fov_half
    b = a * rng.uniform(0.64, 0.78)
    b_post = b * rng.uniform(0.88, 0.97)
    power = rng.uniform(2.0, 2.5)
    cy0 = rng.uniform(-0.03, 0.03) * fov_half
    scale = 1 + 0.035 * np.sin(2 * np.pi * s / rng.uniform(150, 300) + rng.uniform(0, 2 * np.pi))
    yy = y[0] - cy0
    xn, yn = np.abs(x[0] / a), np.abs(yy / np.where(yy > 0, b_post, b))
    rho2 = (xn**power + yn**power) ** (1 / power)
    angle2 = np.arctan2(yy, x[0])
    rho2 = rho2 / (1 + 0.025 * np.cos(3 * angle2 + rng.uniform(0, 2 * np.pi)))
    body = (rho2[None] / scale.astype(np.float32)[:, None, None]).astype(np.float32)
    f_fat = rng.uniform(0.06, 0.2)
    f_muscle = rng.uniform(0.06, 0.1)
    inner = 1 - f_fat - f_muscle
    # AIR 0, SUBCUTANEOUS_FAT 1, MUSCLE 2, VISCERAL_FAT 3: the count of thresholds passed
    layer = (body <= 1).view(np.uint8) + (body <= 1 - f_fat).view(np.uint8)
    layer += (body <= inner).view(np.uint8)
    canvas.tissue = layer
    lut = np.array([-1000.0, hu["fat"], hu["muscle"], hu["visceral_fat"]], dtype=np.float32)
    canvas.hu = lut[layer]
    a_in, b_in = a * inner, b * inner
    smin = float(scale.min())
    ones = np.ones(nz)

    # spine geometry (needed to keep vessels in front of it)
    r_v = rng.uniform(13, 17) * k
    y_v = cy0 + b_post * inner * smin - 1.1 * r_v
    x_v = rng.uniform(-0.03, 0.03) * a

    # lungs and heart (upper slices of some volumes)
    lb_r, lb_l = lung_base, lung_base + rng.uniform(5, 20)
    for side, lb in ((-1, lb_r), (1, lb_l)):
        g = np.sqrt(np.clip((lb - s) / 45.0, 0, 1))
        out = canvas.ellipse(side * 0.49 * a_in * ones, 0.06 * b_in * ones,
                             0.44 * a_in * g, 0.84 * b_in * g,
                             harmonics=(rng.uniform(-0.06, 0.06), rng.uniform(0, np.pi), 0.03, 0.0),
                             within=(Tissue.VISCERAL_FAT,))
        if out is not None:
            canvas.paint(out[0], out[1] <= 1, Tissue.LUNG, hu["lung"])
    g = _profile(s, lb_l - 120, lb_l - 5, power=0.5, skew=0.6)
    out = canvas.ellipse(0.14 * a_in * ones, -0.3 * b_in * ones, 0.34 * a_in * g, 0.4 * b_in * g,
                         angle=rng.uniform(-0.5, -0.2), within=(Tissue.VISCERAL_FAT, Tissue.LUNG))
    if out is not None:
        canvas.paint(out[0], out[1] <= 1, Tissue.HEART, hu["muscle"] + 5)
        canvas.paint(out[0], out[1] <= 0.72, Tissue.HEART_BLOOD, hu["vessel"] * 0.9)

    # bowel loops and stomach (drawn before the solid organs, which cover them)
    _draw_bowel(canvas, rng, a_in, b_in, y_v - r_v, lb_r, lb_l, e)

    # liver, spleen, kidneys
    top, bottom = lb_r - rng.uniform(25, 35), lb_r + rng.uniform(120, 170)
    g = _profile(s, top, bottom, power=0.6, skew=0.7)
    frac = np.clip((s - top) / (bottom - top), 0, 1)
    size_var = rng.uniform(0.9, 1.1)
    out = canvas.ellipse((-0.40 - 0.12 * frac) * a_in, (-0.05 + 0.12 * frac) * b_in,
                         0.5 * a_in * g * size_var, 0.62 * b_in * g * size_var,
                         angle=rng.uniform(-0.3, 0.3),
                         harmonics=(rng.uniform(-0.1, 0.1), rng.uniform(0, np.pi),
                                    rng.uniform(-0.06, 0.06), rng.uniform(0, np.pi)),
                         within=(Tissue.VISCERAL_FAT, Tissue.LUNG, Tissue.BOWEL_WALL,
                                 Tissue.BOWEL_GAS, Tissue.BOWEL_FLUID, Tissue.BOWEL_CONTRAST))
    if out is not None:
        canvas.paint(out[0], out[1] <= 1, Tissue.LIVER, hu["liver"])
    top = lb_l - rng.uniform(0, 15)
    g = _profile(s, top, top + rng.uniform(80, 110))
    out = canvas.ellipse(0.6 * a_in * ones, 0.3 * b_in * ones, 0.2 * a_in * g, 0.34 * b_in * g,
                         angle=rng.uniform(-0.7, -0.3),
                         harmonics=(rng.uniform(-0.08, 0.08), rng.uniform(0, np.pi), 0.0, 0.0),
                         within=(Tissue.VISCERAL_FAT, Tissue.BOWEL_WALL, Tissue.BOWEL_GAS,
                                 Tissue.BOWEL_FLUID, Tissue.BOWEL_CONTRAST))
    if out is not None:
        canvas.paint(out[0], out[1] <= 1, Tissue.SPLEEN, hu["spleen"])
    top_r = lb_r + rng.uniform(50, 70)
    for side, top in ((-1, top_r), (1, top_r - rng.uniform(5, 20))):
        g = _profile(s, top, top + rng.uniform(100, 125), power=0.5)
        cx = side * rng.uniform(0.42, 0.5) * a_in * ones
        cy = (y_v - rng.uniform(0, 0.3) * r_v) * ones
        ax, ay = 0.2 * a_in * g, 0.24 * b_in * g
        angle = -side * rng.uniform(0.3, 0.7)
        out = canvas.ellipse(cx, cy, ax, ay, angle=angle)
        if out is None:
            continue
        region, rho = out
        canvas.paint(region, rho <= 1, Tissue.KIDNEY, hu["kidney"])
        canvas.paint(region, rho <= 0.68, Tissue.KIDNEY_MEDULLA, hu["kidney"] - rng.uniform(30, 60))
        sinus = canvas.ellipse(cx - side * 0.55 * ax, cy, 0.4 * ax, 0.35 * ay, angle=angle)
        if sinus is not None:
            canvas.paint(sinus[0], sinus[1] <= 1, Tissue.KIDNEY_SINUS, rng.uniform(-60, 5))

    # ribs: oblique bands that cut the body wall ring into fragments
    _draw_ribs(canvas, rng, rho2, scale, inner, np.abs(np.arctan2(x[0], yy)),
               lb_r + rng.uniform(60, 100))

    # non-enhancing tubes (ureter-like) and enhancing vessels, all on every slice
    y_front = y_v - r_v - 3 * k  # vessels stay in front of the vertebral body
    for _ in range(int(rng.integers(1, 4))):
        r = max(rng.uniform(1.5, 4.0) * k, 0.75 * geo.px)
        cx, cy = _tube_centres(rng, s, rng.choice([-1, 1]) * rng.uniform(0.3, 0.5) * a_in,
                               y_v - rng.uniform(0.2, 1.2) * r_v, 6 * k)
        out = canvas.ellipse(cx, cy, r * ones, r * ones)
        if out is not None:
            canvas.paint(out[0], out[1] <= 1, Tissue.TUBE, rng.uniform(20, 45))
    r_ao = rng.uniform(9, 12) * k
    ao_x = x_v + rng.uniform(0.3, 0.7) * r_v
    ao_y = y_front - r_ao
    ao = canvas.ellipse(ao_x * ones, ao_y * ones, r_ao * ones, r_ao * ones)
    if ao is not None:
        canvas.paint(ao[0], ao[1] <= 1, Tissue.VESSEL, hu["vessel"])
    r_ivc = rng.uniform(8, 11) * k
    out = canvas.ellipse((x_v - 0.8 * r_v - r_ivc) * ones, (y_front - 0.8 * r_ivc) * ones,
                         1.2 * r_ivc * ones, 0.8 * r_ivc * ones)
    if out is not None:
        canvas.paint(out[0], out[1] <= 1, Tissue.VESSEL, hu["vessel"] * rng.uniform(0.75, 0.95))
    placed = 0
    for _ in range(40):
        if placed >= int(rng.integers(3, 7)):
            break
        r = max(rng.uniform(2.0, 6.0) * k, 0.75 * geo.px)
        amp = rng.uniform(2.0, 12.0) * k
        x0 = rng.uniform(-0.68, 0.68) * a_in * smin
        y0 = rng.uniform(-0.68, 0.68) * b_in * smin
        if (x0 / (0.72 * a_in * smin)) ** 2 + (y0 / (0.72 * b_in * smin)) ** 2 > 1:
            continue
        if y0 + amp + r > y_front or np.hypot(x0 - ao_x, y0 - ao_y) < r + r_ao + amp + 4 * k:
            continue
        cx, cy = _tube_centres(rng, s, x0, y0, amp)
        out = canvas.ellipse(cx, cy, r * ones, r * ones)
        if out is not None:
            canvas.paint(out[0], out[1] <= 1, Tissue.VESSEL,
                         hu["vessel"] * rng.uniform(0.75, 1.05))
            placed += 1

    # spine last: paraspinal muscles, posterior arch, canal, vertebral bodies with discs
    wall = (Tissue.SUBCUTANEOUS_FAT, Tissue.MUSCLE, Tissue.VISCERAL_FAT)
    for side in (-1, 1):
        out = canvas.ellipse((x_v + side * 1.55 * r_v) * ones, (y_v + 1.5 * r_v) * ones,
                             1.15 * r_v * ones, 0.95 * r_v * ones, within=wall)
        if out is not None:
            canvas.paint(out[0], out[1] <= 1, Tissue.MUSCLE, hu["muscle"])
    canal_y = y_v + 1.55 * r_v
    out = canvas.ellipse(x_v * ones, (canal_y + 0.8 * r_v) * ones, 0.22 * r_v * ones,
                         0.75 * r_v * ones, within=(*wall, Tissue.MUSCLE))
    if out is not None:
        canvas.paint(out[0], out[1] <= 1, Tissue.CORTICAL_BONE, hu["cortex"] * 0.8)
    out = canvas.ellipse(x_v * ones, canal_y * ones, 0.85 * r_v * ones, 0.8 * r_v * ones)
    if out is not None:
        canvas.paint(out[0], out[1] <= 1, Tissue.CORTICAL_BONE, hu["cortex"] * 0.8)
        canvas.paint(out[0], out[1] <= 0.6, Tissue.CANAL, rng.uniform(10, 30))
    pitch = rng.uniform(28, 34)
    disc = ((s + rng.uniform(0, pitch)) % pitch) < rng.uniform(6, 9)
    r_body = r_v * (1 + 0.04 * np.sin(2 * np.pi * s / pitch))
    out = canvas.ellipse(x_v * ones, y_v * ones, r_body * 1.05, r_body * 0.95)
    if out is not None:
        region, rho = out
        disc3 = disc[region[0]][:, None, None]
        canvas.paint(region, (rho <= 1) & disc3, Tissue.DISC, rng.uniform(70, 100))
        canvas.paint(region, (rho <= 1) & ~disc3, Tissue.CORTICAL_BONE, hu["cortex"])
        canvas.paint(region, (rho <= 1 - 2.0 / r_v) & ~disc3, Tissue.BONE, hu["bone"])

    # pulmonary vessels: short bright branches inside the lungs
    lung_idx = np.flatnonzero(canvas.tissue == Tissue.LUNG)
    for _ in range(int(rng.integers(8, 18)) if lung_idx.size > 200 else 0):
        zc, yc, xc = np.unravel_index(lung_idx[rng.integers(lung_idx.size)], canvas.tissue.shape)
        p0 = np.array([geo.xs[xc], geo.ys[yc], geo.s[zc]])
        direction = rng.normal(size=3)
        direction[2] *= 1.5
        p1 = p0 + direction / np.linalg.norm(direction) * rng.uniform(15, 50) * k
        _capsule(canvas, p0, p1, max(rng.uniform(1.0, 3.0) * k, 0.6 * geo.px),
                 Tissue.LUNG_VESSEL, hu["vessel"] * rng.uniform(0.4, 0.8), within=(Tissue.LUNG,))

    # calcifications: on the aortic wall or anywhere in the visceral fat / kidneys
    calc_idx = np.flatnonzero(_labels_in(canvas.tissue, (Tissue.VISCERAL_FAT, Tissue.KIDNEY_SINUS)))
    for _ in range(int(rng.integers(0, 6))):
        if rng.random() < 0.5 or calc_idx.size == 0:
            phi = rng.uniform(0, 2 * np.pi)
            centre = np.array([ao_x + r_ao * np.cos(phi), ao_y + r_ao * np.sin(phi),
                               rng.uniform(s[0], s[-1])])
        else:
            zc, yc, xc = np.unravel_index(calc_idx[rng.integers(calc_idx.size)],
                                          canvas.tissue.shape)
            centre = np.array([geo.xs[xc], geo.ys[yc], geo.s[zc]])
        _calcification(canvas, centre, rng.uniform(0.8, 2.5), rng.uniform(300, 900))

    # slow texture, so organs are not flat
    amp = rng.uniform(3, 8)
    for _ in range(2):
        fx, fy, fz = 2 * np.pi / rng.uniform(25, 80, size=3)
        px_, py_, pz_ = rng.uniform(0, 2 * np.pi, size=3)
        along_z = (amp * np.cos(fz * s + pz_)).astype(np.float32)[:, None, None]
        in_plane = (np.cos(fy * geo.ys + py_)[:, None] * np.cos(fx * geo.xs + px_)[None, :])
        canvas.hu += along_z * in_plane.astype(np.float32)
    return _Anatomy(
        enhancement=e,
        organ_hu={"liver": hu["liver"], "spleen": hu["spleen"], "kidney": hu["kidney"],
                  "lung": hu["lung"], "bone": hu["bone"], "soft_tissue": hu["visceral_fat"]},
        lung_base=lb_r, vertebra_radius=r_v,
    )


def _draw_ribs(canvas: _Canvas, rng: np.random.Generator, rho2: np.ndarray, scale: np.ndarray,
               inner: float, angle_from_back: np.ndarray, s_end: float) -> None:
    """Rib fragments: a ring just inside the body wall, cut by oblique bands along s.

    rho2, angle_from_back (ndarray[Y, X]): normalised body radius and the angle from the
    posterior midline (0 at the spine, pi at the front); scale (ndarray[Z]): body scale.
    """
    geo = canvas.geo
    rows = np.flatnonzero(geo.s < s_end)
    if rows.size == 0:
        return
    thickness = rng.uniform(0.035, 0.055)
    pitch, width, slope = rng.uniform(28, 36), rng.uniform(7, 10), rng.uniform(40, 70)
    phase = rng.uniform(0, 2 * np.pi)
    sc = scale[rows][:, None]
    candidates = (rho2 <= (inner + 0.015) * sc.max()) & (rho2 > (inner - thickness) * sc.min()) \
        & (angle_from_back > 0.45) & (angle_from_back < 2.55)
    idx = np.flatnonzero(candidates)
    r = rho2.reshape(-1)[idx][None, :] / sc
    band = np.cos(2 * np.pi * (geo.s[rows, None] + slope * angle_from_back.reshape(-1)[idx][None])
                  / pitch + phase)
    zi, pi = np.nonzero((r <= inner + 0.015) & (r > inner - thickness)
                        & (band > np.cos(np.pi * width / pitch)))
    flat = (rows[zi], *np.unravel_index(idx[pi], rho2.shape))
    canvas.tissue[flat] = Tissue.RIB
    canvas.hu[flat] = rng.uniform(350, 700)


def _draw_bowel(canvas: _Canvas, rng: np.random.Generator, a_in: float, b_in: float,
                y_back: float, lb_r: float, lb_l: float, e: float) -> None:
    geo = canvas.geo
    k = geo.kappa
    loops: list[tuple[np.ndarray, np.ndarray, float, bool]] = []
    # stomach: big, gas in front of fluid
    s_top = lb_l - 5
    centre_s = s_top + rng.uniform(25, 45)
    loops.append((np.array([0.32 * a_in, -0.4 * b_in, centre_s]),
                  np.array([0.26 * a_in, 0.22 * b_in, rng.uniform(30, 45)]), 3.0 * k, True))
    start = lb_r + 70
    covered = max(0.0, geo.s[-1] - max(start, geo.s[0]))
    for _ in range(round(float(rng.uniform(4, 9)) * covered / 150)):
        xy = rng.uniform(-0.75, 0.75, size=2) * np.array([a_in, b_in])
        if np.sum((xy / (0.78 * np.array([a_in, b_in]))) ** 2) > 1 or xy[1] > y_back:
            continue
        centre = np.array([xy[0], xy[1], rng.uniform(max(start, geo.s[0]), geo.s[-1])])
        semi = np.array([*(rng.uniform(8, 18, size=2) * k), rng.uniform(8, 30)])
        loops.append((centre, semi, rng.uniform(2.0, 3.0) * k, False))
    inside = (Tissue.VISCERAL_FAT, Tissue.BOWEL_WALL)
    for centre, semi, wall, stomach in loops:
        region, d = _local_frame(geo, centre, semi)
        if region is None:
            continue
        angle = rng.uniform(0, np.pi)
        c, sn = np.cos(angle), np.sin(angle)
        u = (c * d[0] + sn * d[1]) / semi[0]
        v = (-sn * d[0] + c * d[1]) / semi[1]
        rho = np.sqrt(u * u + v * v + (d[2] / semi[2]) ** 2)
        ok = _labels_in(canvas.tissue[region], inside)
        outer = (rho <= 1) & ok
        lumen = (rho <= 1 - wall / semi[:2].min()) & ok
        canvas.paint(region, outer, Tissue.BOWEL_WALL, 40 + 30 * e)
        content = rng.choice(4, p=[0.35, 0.35, 0.15, 0.15]) if not stomach else 3
        if content == 0:
            canvas.paint(region, lumen, Tissue.BOWEL_GAS, rng.uniform(-1000, -900))
        elif content == 1:
            canvas.paint(region, lumen, Tissue.BOWEL_FLUID, rng.uniform(0, 20))
        elif content == 2:
            canvas.paint(region, lumen, Tissue.BOWEL_CONTRAST, rng.uniform(200, 400))
        else:  # gas above (anterior to) a fluid level
            level = rng.uniform(-0.3, 0.4) * semi[1]
            gas = np.broadcast_to(d[1] < level, lumen.shape)
            canvas.paint(region, lumen & gas, Tissue.BOWEL_GAS, rng.uniform(-1000, -900))
            canvas.paint(region, lumen & ~gas, Tissue.BOWEL_FLUID, rng.uniform(0, 25))


def _local_frame(geo: _Geometry, centre: np.ndarray, reach: np.ndarray
                 ) -> tuple[tuple[slice, slice, slice] | None, list[np.ndarray]]:
    """Region around ``centre = (x, y, s)`` mm reaching ``reach = (rx, ry, rs)`` mm, and the
    offsets ``[dx (1, 1, X'), dy (1, Y', 1), ds (Z', 1, 1)]`` of its voxels from the centre."""
    zc = geo.slice_index(centre[2])
    z0 = max(int(np.floor(zc - reach[2] / geo.dz)), 0)
    z1 = min(int(np.ceil(zc + reach[2] / geo.dz)) + 1, geo.depth)
    ys = _box_window(geo, centre[1] - reach[1], centre[1] + reach[1])
    xs = _box_window(geo, centre[0] - reach[0], centre[0] + reach[0])
    if z0 >= z1 or ys.start >= ys.stop or xs.start >= xs.stop:
        return None, []
    d = [
        (geo.xs[xs] - centre[0]).astype(np.float32)[None, None, :],
        (geo.ys[ys] - centre[1]).astype(np.float32)[None, :, None],
        (geo.s[z0:z1] - centre[2]).astype(np.float32)[:, None, None],
    ]
    return (slice(z0, z1), ys, xs), d


def _capsule(canvas: _Canvas, p0: np.ndarray, p1: np.ndarray, radius: float, label: int,
             value: float, within: tuple[int, ...]) -> None:
    centre = (p0 + p1) / 2
    reach = np.abs(p1 - p0) / 2 + radius + canvas.geo.px
    region, d = _local_frame(canvas.geo, centre, reach)
    if region is None:
        return
    axis = (p1 - p0).astype(np.float32)
    length2 = float(axis @ axis)
    rel = [d[i] + np.float32(centre[i] - p0[i]) for i in range(3)]
    t = np.clip((rel[0] * axis[0] + rel[1] * axis[1] + rel[2] * axis[2]) / length2, 0, 1)
    dist2 = sum((rel[i] - t * axis[i]) ** 2 for i in range(3))
    mask = (dist2 <= radius * radius) & _labels_in(canvas.tissue[region], within)
    canvas.paint(region, mask, label, value)


def _calcification(canvas: _Canvas, centre: np.ndarray, radius: float, value: float) -> None:
    geo = canvas.geo
    sigma = max(radius, 0.45 * geo.px)
    region, d = _local_frame(geo, centre, np.array([3 * sigma, 3 * sigma, max(3 * sigma, geo.dz)]))
    if region is None:
        return
    g = np.exp(-(d[0] ** 2 + d[1] ** 2) / (2 * sigma**2) - d[2] ** 2 / (2 * max(sigma, 0.4 * geo.dz) ** 2))
    h = canvas.hu[region]
    h += (value - h) * g
    t = canvas.tissue[region]
    t[(g > 0.5) & (t != Tissue.VESSEL)] = Tissue.CALCIFICATION


# --------------------------------------------------------------------------------------------
# lesions


@dataclass(frozen=True)
class _Look:
    core: float
    edge_mm: float
    irregular: float
    het: float = 5.0
    rim: float | None = None
    rim_mm: float = 0.0
    necrotic: float | None = None
    necro_frac: float = 0.5
    flat: tuple[float, float] = (0.7, 1.0)
    max_mm: float = 1e9


def _look(organ: str, kind: str, bg: float, e: float, rng: np.random.Generator) -> _Look:
    u = rng.uniform
    if kind == "cyst":
        return _Look(core=u(0, 15), edge_mm=u(0.3, 0.6), irregular=u(0.0, 0.04), het=2.0,
                     flat=(0.8, 1.0))
    if kind == "metastasis":
        core = bg - u(35, 70)
        return _Look(core=core, edge_mm=u(1.0, 2.0), irregular=u(0.05, 0.12), het=8.0,
                     rim=bg + u(10, 40), rim_mm=u(1.5, 3.0), necrotic=core - 15, necro_frac=0.45)
    if kind == "hyperdense_nodule":
        return _Look(core=bg + u(35, 80), edge_mm=u(1.0, 2.5), irregular=u(0.03, 0.08), het=10.0)
    if kind == "solid_nodule":
        return _Look(core=u(10, 50), edge_mm=u(0.4, 1.0), irregular=u(0.08, 0.18), het=10.0)
    if kind == "ground_glass":
        return _Look(core=u(-650, -400), edge_mm=u(1.5, 3.0), irregular=u(0.05, 0.12), het=40.0)
    if kind == "solid_mass":
        return _Look(core=25 + 40 * e + u(-10, 10), edge_mm=u(1.0, 2.0), irregular=u(0.05, 0.1),
                     het=15.0)
    if kind == "hypodense_lesion":
        return _Look(core=bg - u(40, 70), edge_mm=u(1.0, 2.0), irregular=u(0.04, 0.1), het=6.0)
    if kind == "lytic":
        return _Look(core=u(20, 80), edge_mm=u(0.8, 1.5), irregular=u(0.05, 0.12), het=10.0)
    if kind == "sclerotic":
        return _Look(core=u(500, 1000), edge_mm=u(0.8, 2.0), irregular=u(0.08, 0.15), het=60.0)
    if kind == "lymph_node":
        return _Look(core=30 + 25 * e + u(-8, 8), edge_mm=u(0.8, 1.5), irregular=u(0.02, 0.06),
                     het=5.0, flat=(0.5, 0.8), max_mm=30.0)
    if kind == "necrotic_mass":
        return _Look(core=35 + 30 * e + u(-5, 5), edge_mm=u(1.0, 2.0), irregular=u(0.08, 0.15),
                     het=10.0, necrotic=u(5, 25), necro_frac=u(0.4, 0.7))
    raise ValueError(f"unknown lesion kind {organ}/{kind}")


def _truncated_lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float,
                         hi: float) -> float:
    """One draw of log-normal(median, sigma) restricted to [lo, hi] (inverse-CDF sampling)."""
    if hi <= lo:
        return lo
    c_lo, c_hi = special.ndtr((np.log([lo, hi]) - np.log(median)) / sigma)
    q = rng.uniform(c_lo, c_hi)
    q = min(max(q, 1e-12), 1 - 1e-12)
    return float(np.clip(np.exp(np.log(median) + sigma * special.ndtri(q)), lo, hi))


@dataclass(frozen=True)
class _Shape:
    """A lesion's irregular ellipsoid: the implicit field and the blend into the image."""

    region: tuple[slice, slice, slice]
    mask: np.ndarray  # (z, y, x) bool, inside the lesion
    alpha: np.ndarray  # (z, y, x) float32 in [0, 1]
    value: np.ndarray  # (z, y, x) float32 HU of the lesion


def _lesion_shape(geo: _Geometry, rng: np.random.Generator, centre: np.ndarray,
                  diameter: float, look: _Look) -> _Shape | None:
    a = diameter / 2
    semi = np.array([a, a * rng.uniform(*look.flat), a * rng.uniform(0.75, 1.15)])
    reach = semi.max() * (1 + 3 * look.irregular) + look.edge_mm + geo.px
    region, d = _local_frame(geo, centre, np.array([reach, reach, reach]))
    if region is None:
        return None
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    u = (c * d[0] + s * d[1]) / semi[0]
    v = (-s * d[0] + c * d[1]) / semi[1]
    w = d[2] / semi[2]
    rho = np.sqrt(u * u + v * v + w * w)
    safe = np.maximum(rho, 1e-6)
    f = np.ones_like(rho)
    for _ in range(3):
        n = rng.normal(size=3)
        n /= np.linalg.norm(n)
        proj = (u * n[0] + v * n[1] + w * n[2]) / safe
        f = f + (look.irregular * rng.uniform(0.5, 1.0)) * np.sin(
            rng.uniform(2.0, 4.5) * proj + rng.uniform(0, 2 * np.pi))
    dist = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    # signed distance to the boundary along the ray from the centre (mm, > 0 inside)
    t_mm = np.where(rho > 1e-3, (f - rho) * dist / safe, f * semi.min())
    mask = t_mm >= 0
    alpha = np.clip(0.5 + t_mm / (2 * look.edge_mm), 0, 1).astype(np.float32)
    value = np.full(rho.shape, look.core, dtype=np.float32)
    if look.necrotic is not None:
        nec = np.clip((look.necro_frac * f - rho) / 0.15 + 0.5, 0, 1)
        value = value + (look.necrotic - look.core) * nec
    if look.rim is not None:
        value = value + (look.rim - value) * np.clip(1 - t_mm / look.rim_mm, 0, 1)
    if look.het:
        k1, k2 = 2 * np.pi / rng.uniform(5, 14, size=2)
        p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
        value = value + look.het * np.sin(k1 * (d[0] + 0.7 * d[2]) + p1) * np.sin(k2 * d[1] + p2)
    return _Shape(region, mask, alpha, value.astype(np.float32))


def _measure(shape: _Shape, geo: _Geometry, min_px: int
             ) -> tuple[list[int], list[tuple[float, float, float, float]], int, float] | None:
    """2D boxes per slice, key slice and RECIST diameter of a lesion mask (None if too small)."""
    zr, yr, xr = shape.region
    areas = shape.mask.sum(axis=(1, 2))
    keep = np.flatnonzero(areas >= min_px)
    if keep.size == 0:
        return None
    zs, boxes = [], []
    for i in keep:
        rows = np.flatnonzero(shape.mask[i].any(axis=1))
        cols = np.flatnonzero(shape.mask[i].any(axis=0))
        zs.append(int(zr.start + i))
        boxes.append((float(xr.start + cols[0]), float(yr.start + rows[0]),
                      float(xr.start + cols[-1] + 1), float(yr.start + rows[-1] + 1)))
    key = int(np.argmax(areas))
    m = shape.mask[key]
    edge = m & ~ndimage.binary_erosion(m)
    pts = np.argwhere(edge).astype(float) * geo.px
    diameter = float(np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).max()) + geo.px
    return zs, boxes, int(zr.start + key), diameter


def _place_lesions(
    config: SynthConfig, geo: _Geometry, canvas: _Canvas, anatomy: _Anatomy, name: str,
    rng: np.random.Generator,
) -> tuple[list[Lesion], np.ndarray]:
    """Draw lesions into ``canvas.hu``; returns their truth (labels unset) and the lesion map."""
    lo, hi = config.lesions_per_volume
    if config.lesions_count == "geometric":
        n_wanted = int(min(hi, lo - 1 + rng.geometric(1.0 / (config.lesions_mean - lo + 1))))
    else:
        n_wanted = int(min(hi, lo + rng.poisson(config.lesions_mean - lo)))
    tissue = canvas.tissue
    counts = np.bincount(tissue.reshape(-1), minlength=len(Tissue))
    organs = [o for o in _ORGAN_WEIGHTS if counts[list(_ORGAN_SEED[o])].sum() >= 40]
    if not organs:
        return [], np.zeros(tissue.shape, dtype=np.int16)
    seeds: dict[str, np.ndarray] = {}
    weights = np.array([_ORGAN_WEIGHTS[o] for o in organs])
    weights /= weights.sum()
    main = organs[rng.choice(len(organs), p=weights)]
    first_kind: dict[str, str] = {}
    lesion_map = np.zeros(tissue.shape, dtype=np.int16)
    lesions: list[Lesion] = []
    for _ in range(n_wanted):
        organ = main if rng.random() < config.disease_organ_share \
            else organs[rng.choice(len(organs), p=weights)]
        kinds = LESION_KINDS[organ]
        if organ in first_kind and rng.random() < config.same_kind_share:
            kind = first_kind[organ]
        else:
            kind = kinds[rng.choice(len(kinds), p=np.asarray(_KIND_WEIGHTS[organ]))]
        look = _look(organ, kind, anatomy.organ_hu[organ], anatomy.enhancement, rng)
        cap = min(config.diameter_mm[1], look.max_mm, _ORGAN_MAX_DIAMETER[organ] * geo.kappa)
        if organ == "bone":
            cap = min(cap, 1.6 * anatomy.vertebra_radius)
        diameter = _truncated_lognormal(rng, config.diameter_median_mm, config.diameter_sigma,
                                        config.diameter_mm[0], max(cap, config.diameter_mm[0]))
        allowed = _ORGAN_ALLOWED[organ]
        if organ not in seeds:
            seeds[organ] = np.flatnonzero(_labels_in(tissue, _ORGAN_SEED[organ]))
        for attempt in range(12):
            if attempt >= 6:
                diameter = max(config.diameter_mm[0], diameter * 0.85)
            idx = seeds[organ][rng.integers(seeds[organ].size)]
            zc, yc, xc = np.unravel_index(idx, tissue.shape)
            jitter = rng.uniform(-0.5, 0.5, size=3) * np.array([geo.px, geo.px, geo.dz])
            centre = np.array([geo.xs[xc], geo.ys[yc], geo.s[zc]]) + jitter
            shape = _lesion_shape(geo, rng, centre, diameter, look)
            if shape is None or not shape.mask.any():
                continue
            inside = _labels_in(tissue[shape.region], allowed)[shape.mask].mean()
            if inside < _ORGAN_MIN_INSIDE[organ]:
                continue
            near = ndimage.binary_dilation(shape.mask, iterations=1)
            if np.any(lesion_map[shape.region][near]):
                continue
            measured = _measure(shape, geo, config.min_cross_section_px)
            if measured is None:
                continue
            zs, boxes, key_z, diam = measured
            h = canvas.hu[shape.region]
            h += config.lesion_contrast * (shape.value - h) * shape.alpha
            lesion_map[shape.region][shape.mask] = len(lesions) + 1
            box_arr = np.asarray(boxes)
            lesions.append(Lesion(
                volume=name, index=len(lesions), organ=organ, kind=kind,
                diameter_mm=round(diam, 3), key_z=key_z,
                box3d=(float(box_arr[:, 0].min()), float(box_arr[:, 1].min()), float(zs[0]),
                       float(box_arr[:, 2].max()), float(box_arr[:, 3].max()), float(zs[-1] + 1)),
                z=tuple(zs), boxes_xyxy=tuple(boxes), labeled=True,
            ))
            first_kind.setdefault(organ, kind)
            break
    return lesions, lesion_map


def _acquire(hu: np.ndarray, geo: _Geometry, config: SynthConfig,
             rng: np.random.Generator) -> np.ndarray:
    """Blur and noise; ``hu (ndarray[Z, Y, X], float32)`` -> ``(ndarray[Z, Y, X], int16)``."""
    sigma_xy = float(rng.uniform(*config.blur_sigma_px))
    sigma = (sigma_xy / 3, sigma_xy, sigma_xy)
    noise_sd = float(rng.uniform(*config.noise_sd_hu))
    gain = 1.0  # how much the blur shrinks white noise
    for sg in sigma:
        if sg > 0:
            radius = int(4 * sg + 0.5)
            delta = np.zeros(2 * radius + 1)
            delta[radius] = 1.0
            gain *= float(np.sqrt(np.sum(ndimage.gaussian_filter1d(delta, sg) ** 2)))
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    noise *= np.float32(noise_sd / gain)
    out = ndimage.gaussian_filter(hu + noise, sigma, mode="nearest")
    return np.clip(np.rint(out), -1024, 3071).astype(np.int16)


# --------------------------------------------------------------------------------------------
# public generation


def generate_phantom(config: SynthConfig, index: int) -> Phantom:
    """Volume ``index`` of the dataset ``config`` describes, with its hidden truth.

    Depends only on ``config`` and ``index`` (see the module docstring); labels follow the
    volume's split and ``config.missing``.
    """
    split = split_of(config, index)
    name = volume_name(index)
    anat_ss, lesion_ss, noise_ss, missing_ss = np.random.SeedSequence(
        config.seed, spawn_key=(index,)).spawn(4)
    rng = np.random.default_rng(anat_ss)
    geo, lung_base = _sample_geometry(config, rng)
    canvas = _Canvas(geo)
    anatomy = _draw_anatomy(canvas, lung_base, rng)
    lesions, lesion_map = _place_lesions(config, geo, canvas, anatomy, name,
                                         np.random.default_rng(lesion_ss))
    hu = _acquire(canvas.hu, geo, config, np.random.default_rng(noise_ss))
    if split == "train" and lesions:
        if config.missing == "recist":
            labeled = recist_labels([les.diameter_mm for les in lesions],
                                    [les.organ for les in lesions],
                                    config.recist_min_diameter_mm, config.recist_max_per_organ,
                                    config.recist_max_per_volume,
                                    None if config.recist_choice == "largest"
                                    else np.random.default_rng(missing_ss))
        else:
            labeled = random_labels(len(lesions), config.missing_rate,
                                    np.random.default_rng(missing_ss))
        lesions = [dataclasses.replace(les, labeled=bool(lab)) for les, lab in zip(lesions, labeled)]
    size = geo.size
    volume = Volume(
        hu=hu, spacing_xyz=(geo.px, geo.px, geo.dz),
        origin_xyz=(-(size - 1) / 2 * geo.px, -(size - 1) / 2 * geo.px, -geo.s0),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    )
    return Phantom(name=name, split=split, volume=volume, lesions=tuple(lesions),
                   tissue=canvas.tissue, lesion_map=lesion_map)


def generate_volume(config: SynthConfig, index: int) -> tuple[Volume, list[Lesion]]:
    """Volume ``index`` (``hu (ndarray[Z, Y, X], int16)``) and its lesions' ground truth."""
    phantom = generate_phantom(config, index)
    return phantom.volume, list(phantom.lesions)


# --------------------------------------------------------------------------------------------
# summary


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summarize(lesions: Sequence[Lesion], splits: Mapping[str, str],
              config: SynthConfig | None = None) -> dict[str, Any]:
    """Counts and missing-label shares of a generated dataset (what ``dataset.json`` holds).

    ``lesions``: every lesion of every volume; ``splits``: ``{volume: split}``. On a training
    slice (the key slice of a labeled train lesion) a lesion is visible when it has a 2D box
    there and unlabeled when ``annotations.csv`` has no box of it there (only labeled lesions'
    key slices carry boxes).
    """
    per_split: dict[str, dict[str, int]] = {
        s: {"volumes": 0, "lesions": 0, "labeled": 0} for s in SPLITS}
    for split in splits.values():
        per_split[split]["volumes"] += 1
    by_volume: dict[str, list[Lesion]] = {}
    by_kind: dict[str, dict[str, int]] = {}
    by_organ: dict[str, dict[str, int]] = {}
    band_train = {b: {"lesions": 0, "unlabeled": 0} for b in SIZE_BANDS}
    for les in lesions:
        split = splits[les.volume]
        per_split[split]["lesions"] += 1
        per_split[split]["labeled"] += int(les.labeled)
        by_volume.setdefault(les.volume, []).append(les)
        for table, key in ((by_kind, f"{les.organ}/{les.kind}"), (by_organ, les.organ)):
            row = table.setdefault(key, {"lesions": 0, "train": 0, "train_labeled": 0})
            row["lesions"] += 1
            row["train"] += int(split == "train")
            row["train_labeled"] += int(split == "train" and les.labeled)
        if split == "train":
            band_train[size_band(les.diameter_mm)]["lesions"] += 1
            band_train[size_band(les.diameter_mm)]["unlabeled"] += int(not les.labeled)
    visible = {b: {"visible": 0, "unlabeled": 0} for b in SIZE_BANDS}
    n_slices = 0
    for name, group in by_volume.items():
        if splits[name] != "train":
            continue
        for z in sorted({les.key_z for les in group if les.labeled}):
            n_slices += 1
            for les in group:
                if z in les.z:
                    row = visible[size_band(les.diameter_mm)]
                    row["visible"] += 1
                    row["unlabeled"] += int(not (les.labeled and les.key_z == z))
    for table, key in ((band_train, "lesions"), (visible, "visible")):
        total = {key: sum(r[key] for r in table.values()),
                 "unlabeled": sum(r["unlabeled"] for r in table.values())}
        table["all"] = total
        for row in table.values():
            row["unlabeled_share"] = _share(row["unlabeled"], row[key])
    train = per_split["train"]
    diameters = np.array([les.diameter_mm for les in lesions]) if lesions else np.zeros(1)
    return {
        "missing": config.missing if config is not None else None,
        "splits": per_split,
        "train_unlabeled_share": _share(train["lesions"] - train["labeled"], train["lesions"]),
        "train_lesions_by_size": band_train,
        "training_slices": n_slices,
        "training_slice_visible_by_size": visible,
        "diameter_mm": {"min": round(float(diameters.min()), 2),
                        "median": round(float(np.median(diameters)), 2),
                        "max": round(float(diameters.max()), 2)},
        "by_organ": dict(sorted(by_organ.items())),
        "by_kind": dict(sorted(by_kind.items())),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """A readable multi-line rendering of :func:`summarize`'s result."""

    def pct(value: float | None) -> str:
        return "   -" if value is None else f"{100 * value:5.1f}%"

    lines = [f"missing labels: {summary.get('missing')}"]
    lines.append(f"{'split':<6} {'volumes':>8} {'lesions':>8} {'labeled':>8}")
    for split, row in summary["splits"].items():
        lines.append(f"{split:<6} {row['volumes']:>8} {row['lesions']:>8} {row['labeled']:>8}")
    lines.append(f"train lesions left unlabeled: {pct(summary['train_unlabeled_share'])}")
    lines.append(f"training slices (key slices of labeled train lesions): "
                 f"{summary['training_slices']}")
    lines.append(f"{'size band':<10} {'train lesions':>14} {'unlabeled':>10}   "
                 f"{'visible on training slices':>27} {'unlabeled':>10}")
    lesions, visible = summary["train_lesions_by_size"], summary["training_slice_visible_by_size"]
    for band in (*SIZE_BANDS, "all"):
        a, b = lesions[band], visible[band]
        lines.append(f"{band:<10} {a['lesions']:>14} {pct(a['unlabeled_share']):>10}   "
                     f"{b['visible']:>27} {pct(b['unlabeled_share']):>10}")
    d = summary["diameter_mm"]
    lines.append(f"diameter mm: min {d['min']}, median {d['median']}, max {d['max']}")
    lines.append(f"{'organ/kind':<30} {'lesions':>8} {'train':>6} {'labeled':>8}")
    for key, row in summary["by_kind"].items():
        lines.append(f"{key:<30} {row['lesions']:>8} {row['train']:>6} {row['train_labeled']:>8}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# writing


_VOLUME_FILE = re.compile(r"^synth_\d{5}\.nii\.gz$")
ANNOTATION_COLUMNS = ("volume", "z", "x1", "y1", "x2", "y2", "key", "lesion")
LESION_COLUMNS = ("volume", "lesion", "organ", "kind", "diameter_mm", "key_z",
                  "x1", "y1", "z1", "x2", "y2", "z2", "labeled")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_synthetic_dataset(out_dir: str | Path, config: SynthConfig | None = None,
                            progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Generate every volume of ``config`` into ``out_dir`` (generic dataset format v1).

    Writes ``volumes/<name>.nii.gz``, ``splits.csv``, ``annotations.csv`` (what a user has: the
    key-slice boxes of labeled lesions), ``annotations_full.csv`` (every lesion on every slice,
    ``key`` on its key slice), ``annotations_random.csv`` (the same number of train labels as
    ``annotations.csv``, dropped at random: the control for the missingness model),
    ``annotations_largest.csv`` (RECIST-style selection, largest first, with the config's
    limits: the other control), one ``annotations_unlabeledNN.csv`` per sparsity level,
    ``lesions.csv`` (per-lesion truth) and, last, ``dataset.json``;
    Everything is written into a temporary sibling that replaces ``out_dir`` only once complete
    (:func:`uld.outdir.staged_folder`): a failed or interrupted run leaves ``out_dir`` as it was.
    A non-empty ``out_dir`` is replaced only if it is an unfinished synthetic dataset or
    ``overwrite`` is given; otherwise ``FileExistsError`` and nothing is touched.
    Returns the summary.
    """
    config = SynthConfig() if config is None else config
    with staged_folder(out_dir, overwrite, _unfinished_synth, "uld synth") as out:
        return _write_dataset(out, config, progress)


def _unfinished_synth(folder: Path) -> bool:
    """``folder`` holds only what this writer writes, without the ``dataset.json`` that marks
    a finished dataset (what an interrupted run of an older ``uld`` left)."""
    if (folder / "dataset.json").exists():
        return False
    for path in folder.iterdir():
        if path.name == "volumes" and path.is_dir():
            if not all(_VOLUME_FILE.match(p.name) or p.name.startswith(".") for p in path.iterdir()):
                return False
        elif not re.match(r"^(splits|lesions|annotations\w*)\.csv$|^\.", path.name):
            return False
    return True


def _write_dataset(out: Path, config: SynthConfig, progress: bool) -> dict[str, Any]:
    volumes_dir = out / "volumes"
    volumes_dir.mkdir(exist_ok=True)
    splits: dict[str, str] = {}
    all_lesions: list[Lesion] = []
    for index in tqdm(range(config.n_volumes), desc="synthetic CT", unit="vol",
                      disable=not progress):
        volume, lesions = generate_volume(config, index)
        name = volume_name(index)
        write_volume(volume, volumes_dir / f"{name}.nii.gz")
        splits[name] = split_of(config, index)
        all_lesions.extend(lesions)
    write_csv(out / "splits.csv", ("volume", "split"), splits.items())
    partial, full, table, matched = [], [], [], []
    keep_random = matched_random_labels(all_lesions, splits, config.seed)
    keep_largest = largest_first_labels(all_lesions, splits, config)
    largest = []
    for les, kept, big in zip(all_lesions, keep_random, keep_largest):
        key_row = (les.volume, les.key_z, *les.key_box_xyxy, 1, les.index)
        if les.labeled:
            partial.append(key_row)
        if kept:
            matched.append(key_row)
        if big:
            largest.append(key_row)
        for z, box in zip(les.z, les.boxes_xyxy):
            full.append((les.volume, z, *box, int(z == les.key_z), les.index))
        table.append((les.volume, les.index, les.organ, les.kind, les.diameter_mm, les.key_z,
                      *les.box3d, int(les.labeled)))
    write_csv(out / "annotations.csv", ANNOTATION_COLUMNS, partial)
    write_csv(out / "annotations_full.csv", ANNOTATION_COLUMNS, full)
    write_csv(out / "annotations_random.csv", ANNOTATION_COLUMNS, matched)
    write_csv(out / "annotations_largest.csv", ANNOTATION_COLUMNS, largest)
    write_csv(out / "lesions.csv", LESION_COLUMNS, table)
    for level in config.sparsity_levels:
        kept = sparsity_labels(all_lesions, splits, level, config.seed)
        write_csv(out / sparsity_file(level), ANNOTATION_COLUMNS,
                  [(les.volume, les.key_z, *les.key_box_xyxy, 1, les.index)
                   for les, k in zip(all_lesions, kept) if k])
    for path in volumes_dir.iterdir():
        if _VOLUME_FILE.match(path.name) and path.name[: -len(".nii.gz")] not in splits:
            path.unlink()
    summary = summarize(all_lesions, splits, config)
    _write_json(out / "dataset.json", {
        "format": FORMAT_NAME, "version": FORMAT_VERSION,
        "generator": dataclasses.asdict(config), "summary": summary,
    })
    return summary
