"""Lesions of a phantom: where they go (:func:`place_lesions`: organ, kind, size, shape,
appearance) and the acquisition that turns the painted HU into the CT (:func:`acquire`: blur
and noise)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

from uld.data.synth.anatomy import Anatomy, Canvas, Geometry, Tissue, labels_in, local_frame
from uld.data.synth.config import KIND_WEIGHTS, LESION_KINDS, ORGAN_WEIGHTS, Lesion, SynthConfig

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


def _lesion_shape(geo: Geometry, rng: np.random.Generator, centre: np.ndarray,
                  diameter: float, look: _Look) -> _Shape | None:
    a = diameter / 2
    semi = np.array([a, a * rng.uniform(*look.flat), a * rng.uniform(0.75, 1.15)])
    reach = semi.max() * (1 + 3 * look.irregular) + look.edge_mm + geo.px
    region, d = local_frame(geo, centre, np.array([reach, reach, reach]))
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


def _measure(shape: _Shape, geo: Geometry, min_px: int
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


def place_lesions(
    config: SynthConfig, geo: Geometry, canvas: Canvas, anatomy: Anatomy, name: str,
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
    organs = [o for o in ORGAN_WEIGHTS if counts[list(_ORGAN_SEED[o])].sum() >= 40]
    if not organs:
        return [], np.zeros(tissue.shape, dtype=np.int16)
    seeds: dict[str, np.ndarray] = {}
    weights = np.array([ORGAN_WEIGHTS[o] for o in organs])
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
            kind = kinds[rng.choice(len(kinds), p=np.asarray(KIND_WEIGHTS[organ]))]
        look = _look(organ, kind, anatomy.organ_hu[organ], anatomy.enhancement, rng)
        cap = min(config.diameter_mm[1], look.max_mm, _ORGAN_MAX_DIAMETER[organ] * geo.kappa)
        if organ == "bone":
            cap = min(cap, 1.6 * anatomy.vertebra_radius)
        diameter = _truncated_lognormal(rng, config.diameter_median_mm, config.diameter_sigma,
                                        config.diameter_mm[0], max(cap, config.diameter_mm[0]))
        allowed = _ORGAN_ALLOWED[organ]
        if organ not in seeds:
            seeds[organ] = np.flatnonzero(labels_in(tissue, _ORGAN_SEED[organ]))
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
            inside = labels_in(tissue[shape.region], allowed)[shape.mask].mean()
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


def acquire(hu: np.ndarray, geo: Geometry, config: SynthConfig,
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
