"""The background anatomy of a phantom: geometry (:class:`Geometry`), the canvas being painted
(:class:`Canvas`), the tissue labels (:class:`Tissue`), and :func:`draw_anatomy`, which paints
the body wall, lungs and heart, bowel, liver, spleen, kidneys, ribs, tubes and vessels, spine,
pulmonary vessels, calcifications and texture, in that order (the order of the random draws)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from uld.data.synth.config import SynthConfig


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


_REFERENCE_FOV_MM = 128 * 2.6  # the default field of view; anatomy scales with fov / this


@dataclass(frozen=True)
class Geometry:
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


def _box_window(geo: Geometry, lo: float, hi: float) -> slice:
    """Pixel index window covering the mm interval ``[lo, hi]`` (clipped to the image)."""
    i0 = int(np.floor(lo / geo.px + (geo.size - 1) / 2))
    i1 = int(np.ceil(hi / geo.px + (geo.size - 1) / 2)) + 1
    return slice(max(i0, 0), min(max(i1, 0), geo.size))


def _profile(s: np.ndarray, top: float, bottom: float, power: float = 0.6,
             skew: float = 1.0) -> np.ndarray:
    """(Z,) organ size factor along s: 0 outside ``[top, bottom]``, a rounded bump inside."""
    t = np.clip((s - top) / max(bottom - top, 1e-6), 0.0, 1.0)
    return np.sin(np.pi * t**skew) ** power


def labels_in(tissue: np.ndarray, labels: Sequence[int]) -> np.ndarray:
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


class Canvas:
    """The HU and tissue arrays being painted (internal; one per generated volume)."""

    def __init__(self, geo: Geometry) -> None:
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
            rho[~labels_in(self.tissue[region], within)] = np.inf
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


@dataclass(frozen=True)
class Anatomy:
    enhancement: float
    organ_hu: dict[str, float]
    lung_base: float
    vertebra_radius: float


def sample_geometry(config: SynthConfig, rng: np.random.Generator) -> tuple[Geometry, float]:
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
    geo = Geometry(
        size=size, depth=depth, px=px, dz=dz, s0=float(s0),
        kappa=size * px / _REFERENCE_FOV_MM,
        xs=centre, ys=centre.copy(), s=s0 + np.arange(depth) * dz,
    )
    return geo, lung_base


@dataclass(frozen=True)
class _Body:
    """The body frame the organs are placed in (mm; shapes as in :class:`Canvas`).

    a, b_post: semi-axes of the body outline (across, towards the back); cy0: its centre's
    row offset; scale (ndarray[Z]): the outline's breathing along s; rho2, yy (ndarray[Y, X]):
    normalised body radius and row offset from cy0; inner: the share of the radius inside the
    muscle wall; a_in, b_in: the semi-axes there; smin: the smallest scale; ones (ndarray[Z]).
    x_v, y_v, r_v: centre and radius of the vertebral bodies.
    """

    a: float
    b_post: float
    cy0: float
    scale: np.ndarray
    rho2: np.ndarray
    yy: np.ndarray
    inner: float
    a_in: float
    b_in: float
    smin: float
    ones: np.ndarray
    x_v: float
    y_v: float
    r_v: float


def draw_anatomy(canvas: Canvas, lung_base: float, rng: np.random.Generator) -> Anatomy:
    """Paint the background anatomy into ``canvas``; returns what lesions need to know.

    One organ (group) per call; the calls are in the order of their random draws, which the
    determinism of a volume depends on (module docstring of :mod:`uld.data.synth`).
    """
    e, hu = _tissue_values(rng)
    body = _draw_body_wall(canvas, rng, hu)
    lb_r, lb_l = _draw_chest(canvas, rng, body, hu, lung_base)
    # bowel loops and stomach (drawn before the solid organs, which cover them)
    _draw_bowel(canvas, rng, body.a_in, body.b_in, body.y_v - body.r_v, lb_r, lb_l, e)
    _draw_liver(canvas, rng, body, hu, lb_r)
    _draw_spleen(canvas, rng, body, hu, lb_l)
    _draw_kidneys(canvas, rng, body, hu, lb_r)
    # ribs: oblique bands that cut the body wall ring into fragments
    _draw_ribs(canvas, rng, body.rho2, body.scale, body.inner,
               np.abs(np.arctan2(canvas.x[0], body.yy)), lb_r + rng.uniform(60, 100))
    aorta = _draw_vessels(canvas, rng, body, hu)
    _draw_spine(canvas, rng, body, hu)
    _draw_lung_vessels(canvas, rng, hu)
    _draw_calcifications(canvas, rng, aorta)
    _add_texture(canvas, rng)
    return Anatomy(
        enhancement=e,
        organ_hu={"liver": hu["liver"], "spleen": hu["spleen"], "kidney": hu["kidney"],
                  "lung": hu["lung"], "bone": hu["bone"], "soft_tissue": hu["visceral_fat"]},
        lung_base=lb_r, vertebra_radius=body.r_v,
    )


def _tissue_values(rng: np.random.Generator) -> tuple[float, dict[str, float]]:
    """The contrast enhancement of the portal-venous phase and the HU of each tissue."""
    e = float(rng.uniform(0.5, 0.95))
    hu = {
        "fat": rng.uniform(-115, -85), "muscle": rng.uniform(40, 55),
        "visceral_fat": rng.uniform(-100, -75), "lung": rng.uniform(-880, -820),
        "liver": 55 + 50 * e + rng.uniform(-8, 8), "spleen": 45 + 70 * e + rng.uniform(-8, 8),
        "kidney": 35 + 125 * e + rng.uniform(-8, 8), "vessel": 45 + 210 * e + rng.uniform(-10, 10),
        "bone": rng.uniform(180, 350), "cortex": rng.uniform(600, 1000),
    }
    return e, hu


def _draw_body_wall(canvas: Canvas, rng: np.random.Generator, hu: dict[str, float]) -> _Body:
    """Air, subcutaneous fat, the muscle wall and visceral fat on every slice; the body frame
    and where the spine goes."""
    geo = canvas.geo
    k = geo.kappa
    s = geo.s
    x, y = canvas.x, canvas.y
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
    smin = float(scale.min())
    # spine geometry (needed to keep vessels in front of it)
    r_v = rng.uniform(13, 17) * k
    y_v = cy0 + b_post * inner * smin - 1.1 * r_v
    x_v = rng.uniform(-0.03, 0.03) * a
    return _Body(a=a, b_post=b_post, cy0=cy0, scale=scale, rho2=rho2, yy=yy, inner=inner,
                 a_in=a * inner, b_in=b * inner, smin=smin, ones=np.ones(geo.depth),
                 x_v=x_v, y_v=y_v, r_v=r_v)


def _draw_chest(canvas: Canvas, rng: np.random.Generator, body: _Body, hu: dict[str, float],
                lung_base: float) -> tuple[float, float]:
    """Lungs and heart (upper slices of some volumes); returns the right and left lung bases."""
    s, ones, a_in, b_in = canvas.geo.s, body.ones, body.a_in, body.b_in
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
    return lb_r, lb_l


def _draw_liver(canvas: Canvas, rng: np.random.Generator, body: _Body, hu: dict[str, float],
                lb_r: float) -> None:
    s, a_in, b_in = canvas.geo.s, body.a_in, body.b_in
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


def _draw_spleen(canvas: Canvas, rng: np.random.Generator, body: _Body, hu: dict[str, float],
                 lb_l: float) -> None:
    s, ones, a_in, b_in = canvas.geo.s, body.ones, body.a_in, body.b_in
    top = lb_l - rng.uniform(0, 15)
    g = _profile(s, top, top + rng.uniform(80, 110))
    out = canvas.ellipse(0.6 * a_in * ones, 0.3 * b_in * ones, 0.2 * a_in * g, 0.34 * b_in * g,
                         angle=rng.uniform(-0.7, -0.3),
                         harmonics=(rng.uniform(-0.08, 0.08), rng.uniform(0, np.pi), 0.0, 0.0),
                         within=(Tissue.VISCERAL_FAT, Tissue.BOWEL_WALL, Tissue.BOWEL_GAS,
                                 Tissue.BOWEL_FLUID, Tissue.BOWEL_CONTRAST))
    if out is not None:
        canvas.paint(out[0], out[1] <= 1, Tissue.SPLEEN, hu["spleen"])


def _draw_kidneys(canvas: Canvas, rng: np.random.Generator, body: _Body, hu: dict[str, float],
                  lb_r: float) -> None:
    """Cortex, medulla and sinus of both kidneys."""
    s, ones, a_in, b_in = canvas.geo.s, body.ones, body.a_in, body.b_in
    top_r = lb_r + rng.uniform(50, 70)
    for side, top in ((-1, top_r), (1, top_r - rng.uniform(5, 20))):
        g = _profile(s, top, top + rng.uniform(100, 125), power=0.5)
        cx = side * rng.uniform(0.42, 0.5) * a_in * ones
        cy = (body.y_v - rng.uniform(0, 0.3) * body.r_v) * ones
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


def _draw_vessels(canvas: Canvas, rng: np.random.Generator, body: _Body,
                  hu: dict[str, float]) -> tuple[float, float, float]:
    """Non-enhancing tubes (ureter-like), the aorta, the vena cava and smaller enhancing
    vessels, all on every slice; returns the aorta's centre and radius ``(x, y, r)``."""
    geo = canvas.geo
    k, s, ones = geo.kappa, geo.s, body.ones
    a_in, b_in, smin, x_v, y_v, r_v = body.a_in, body.b_in, body.smin, body.x_v, body.y_v, body.r_v
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
    return ao_x, ao_y, r_ao


def _draw_spine(canvas: Canvas, rng: np.random.Generator, body: _Body, hu: dict[str, float]) -> None:
    """Drawn last of the solid anatomy: paraspinal muscles, posterior arch, canal, vertebral
    bodies with discs."""
    s, ones, x_v, y_v, r_v = canvas.geo.s, body.ones, body.x_v, body.y_v, body.r_v
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


def _draw_lung_vessels(canvas: Canvas, rng: np.random.Generator, hu: dict[str, float]) -> None:
    """Pulmonary vessels: short bright branches inside the lungs."""
    geo = canvas.geo
    k = geo.kappa
    lung_idx = np.flatnonzero(canvas.tissue == Tissue.LUNG)
    for _ in range(int(rng.integers(8, 18)) if lung_idx.size > 200 else 0):
        zc, yc, xc = np.unravel_index(lung_idx[rng.integers(lung_idx.size)], canvas.tissue.shape)
        p0 = np.array([geo.xs[xc], geo.ys[yc], geo.s[zc]])
        direction = rng.normal(size=3)
        direction[2] *= 1.5
        p1 = p0 + direction / np.linalg.norm(direction) * rng.uniform(15, 50) * k
        _capsule(canvas, p0, p1, max(rng.uniform(1.0, 3.0) * k, 0.6 * geo.px),
                 Tissue.LUNG_VESSEL, hu["vessel"] * rng.uniform(0.4, 0.8), within=(Tissue.LUNG,))


def _draw_calcifications(canvas: Canvas, rng: np.random.Generator,
                         aorta: tuple[float, float, float]) -> None:
    """On the aortic wall or anywhere in the visceral fat / kidneys."""
    geo = canvas.geo
    s = geo.s
    ao_x, ao_y, r_ao = aorta
    calc_idx = np.flatnonzero(labels_in(canvas.tissue, (Tissue.VISCERAL_FAT, Tissue.KIDNEY_SINUS)))
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


def _add_texture(canvas: Canvas, rng: np.random.Generator) -> None:
    """Slow texture, so organs are not flat."""
    geo = canvas.geo
    s = geo.s
    amp = rng.uniform(3, 8)
    for _ in range(2):
        fx, fy, fz = 2 * np.pi / rng.uniform(25, 80, size=3)
        px_, py_, pz_ = rng.uniform(0, 2 * np.pi, size=3)
        along_z = (amp * np.cos(fz * s + pz_)).astype(np.float32)[:, None, None]
        in_plane = (np.cos(fy * geo.ys + py_)[:, None] * np.cos(fx * geo.xs + px_)[None, :])
        canvas.hu += along_z * in_plane.astype(np.float32)


def _draw_ribs(canvas: Canvas, rng: np.random.Generator, rho2: np.ndarray, scale: np.ndarray,
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


def _draw_bowel(canvas: Canvas, rng: np.random.Generator, a_in: float, b_in: float,
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
        region, d = local_frame(geo, centre, semi)
        if region is None:
            continue
        angle = rng.uniform(0, np.pi)
        c, sn = np.cos(angle), np.sin(angle)
        u = (c * d[0] + sn * d[1]) / semi[0]
        v = (-sn * d[0] + c * d[1]) / semi[1]
        rho = np.sqrt(u * u + v * v + (d[2] / semi[2]) ** 2)
        ok = labels_in(canvas.tissue[region], inside)
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


def local_frame(geo: Geometry, centre: np.ndarray, reach: np.ndarray
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


def _capsule(canvas: Canvas, p0: np.ndarray, p1: np.ndarray, radius: float, label: int,
             value: float, within: tuple[int, ...]) -> None:
    centre = (p0 + p1) / 2
    reach = np.abs(p1 - p0) / 2 + radius + canvas.geo.px
    region, d = local_frame(canvas.geo, centre, reach)
    if region is None:
        return
    axis = (p1 - p0).astype(np.float32)
    length2 = float(axis @ axis)
    rel = [d[i] + np.float32(centre[i] - p0[i]) for i in range(3)]
    t = np.clip((rel[0] * axis[0] + rel[1] * axis[1] + rel[2] * axis[2]) / length2, 0, 1)
    dist2 = sum((rel[i] - t * axis[i]) ** 2 for i in range(3))
    mask = (dist2 <= radius * radius) & labels_in(canvas.tissue[region], within)
    canvas.paint(region, mask, label, value)


def _calcification(canvas: Canvas, centre: np.ndarray, radius: float, value: float) -> None:
    geo = canvas.geo
    sigma = max(radius, 0.45 * geo.px)
    region, d = local_frame(geo, centre, np.array([3 * sigma, 3 * sigma, max(3 * sigma, geo.dz)]))
    if region is None:
        return
    g = np.exp(-(d[0] ** 2 + d[1] ** 2) / (2 * sigma**2) - d[2] ** 2 / (2 * max(sigma, 0.4 * geo.dz) ** 2))
    h = canvas.hu[region]
    h += (value - h) * g
    t = canvas.tissue[region]
    t[(g > 0.5) & (t != Tissue.VESSEL)] = Tissue.CALCIFICATION
