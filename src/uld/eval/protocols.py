"""One entry point for the three DeepLesion evaluation protocols.

=============  =====================================  =====================  ============
protocol       ground truth                           hit                    FPs per
=============  =====================================  =====================  ============
``p3d``        2D boxes on their slices               IoU >= 0.5 (+1 px) on  sub-volume
               (``Revised-Test1071.pkl``, folder)     the box's slice
``keyslice``   2D boxes on key slices                 IoU >= 0.5 (+1 px)     key image
               (``RECIST-Box-Test.pkl``, folder)
``iobb3d``     3D boxes (manual 1K, ``3D-Box.pkl``,   IOBB >= 0.3 (+1 px)    sub-volume
               folder)
=============  =====================================  =====================  ============

:func:`read_protocol_gt` reads the ground truth a protocol needs, :func:`evaluate_protocol`
matches detections (``{volume: [tracklet, ...]}``) against it and returns a
:class:`ProtocolResult` with the same small interface for every protocol. Options:
``threshold`` (the overlap threshold; default per protocol, :data:`DEFAULT_THRESHOLDS`),
``fp_rates``, and for ``keyslice`` ``score="box" | "tracklet"``. Only P3D defines an AP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uld.data.annotations import EvalFormatError, GroundTruth, read_gt
from uld.eval.froc import FP_RATES, FrocResult
from uld.eval.ground_truth import GroundTruth3D, read_boxes3d_gt, read_keyslice_gt
from uld.eval.iobb3d import IOBB3DMatches, iobb3d_metrics, match_iobb3d
from uld.eval.keyslice import KeySliceMatches, keyslice_metrics, match_keyslice
from uld.eval.p3d import P3DMatches, P3DResult, match_p3d, p3d_metrics

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PROTOCOLS",
    "ProtocolResult",
    "evaluate_protocol",
    "match_protocol",
    "protocol_result",
    "read_protocol_gt",
]

PROTOCOLS: tuple[str, ...] = ("p3d", "keyslice", "iobb3d")
DEFAULT_THRESHOLDS: dict[str, float] = {"p3d": 0.5, "keyslice": 0.5, "iobb3d": 0.3}
_OPTIONS: dict[str, tuple[str, ...]] = {"p3d": (), "keyslice": ("score",), "iobb3d": ()}
_TITLES = {
    "p3d": "P3D (Lesion Harvester)",
    "keyslice": "key-slice (DeepLesion official, MULAN)",
    "iobb3d": "3D IOBB (manual 1K)",
}
_COUNT_NAMES = {
    "npos": "lesion boxes", "n_volumes": "volumes", "n_images": "key-slice images",
    "n_tracklets": "tracklets", "n_detections": "detections", "n_hits": "boxes hit",
    "n_fp": "false positives",
}

AnyGroundTruth = GroundTruth | GroundTruth3D
AnyMatches = P3DMatches | KeySliceMatches | IOBB3DMatches


def _check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    return protocol


def read_protocol_gt(
    protocol: str, source: str | Path, split: str | None = None
) -> AnyGroundTruth:
    """The ground truth of ``protocol`` from a file or dataset folder.

    p3d: :func:`uld.data.annotations.read_gt`; keyslice:
    :func:`uld.eval.ground_truth.read_keyslice_gt`; iobb3d:
    :func:`uld.eval.ground_truth.read_boxes3d_gt` (the manual 1K pickle needs ``split``
    ``"val"`` or ``"test"``). A dataset folder needs ``split`` for every protocol.
    """
    _check_protocol(protocol)
    if protocol == "p3d":
        return read_gt(source, split)
    if protocol == "keyslice":
        return read_keyslice_gt(source, split)
    return read_boxes3d_gt(source, split)


def _check_gt(protocol: str, gt: Any) -> None:
    if protocol == "iobb3d":
        if not isinstance(gt, GroundTruth3D):
            raise EvalFormatError(
                f"protocol 'iobb3d' needs 3D ground truth (read_protocol_gt('iobb3d', ...)), "
                f"got {type(gt).__name__}"
            )
    elif isinstance(gt, GroundTruth3D):
        raise EvalFormatError(
            f"protocol {protocol!r} needs 2D ground truth {{volume: [(z, box), ...]}}, got 3D boxes "
            f"from {gt.source}"
        )


def match_protocol(
    protocol: str,
    gt: AnyGroundTruth,
    detections: Mapping[str, Any],
    threshold: float | None = None,
    **options: Any,
) -> AnyMatches:
    """Match ``detections`` against ``gt`` under ``protocol`` (arrays for metrics / breakdown).

    threshold: the overlap threshold (``None``: :data:`DEFAULT_THRESHOLDS`).
    options: ``score`` for ``keyslice``; anything else raises ``ValueError``.
    """
    _check_protocol(protocol)
    unknown = sorted(set(options) - set(_OPTIONS[protocol]))
    if unknown:
        takes = ", ".join(_OPTIONS[protocol]) or "none"
        raise ValueError(f"protocol {protocol!r} has no option {unknown[0]!r} (its options: {takes})")
    _check_gt(protocol, gt)
    thr = DEFAULT_THRESHOLDS[protocol] if threshold is None else float(threshold)
    if protocol == "p3d":
        return match_p3d(gt, detections, thr)  # type: ignore[arg-type]
    if protocol == "keyslice":
        return match_keyslice(gt, detections, thr, **options)  # type: ignore[arg-type]
    return match_iobb3d(gt, detections, thr)  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class ProtocolResult:
    """The figures of one evaluation, the same for every protocol.

    protocol (str): one of :data:`PROTOCOLS`.
    sensitivity (dict[float, float]): sensitivity at each FP rate.
    avg (float): mean sensitivity over 0.125 .. 8.
    ap (float | None): P3D's Pascal VOC AP; ``None`` for the protocols whose reference has none.
    fps, sens (ndarray[D], float64): the FROC curve (FPs per unit, sensitivity) in rank order.
    unit (str): ``"volume"`` or ``"image"``.
    counts (dict[str, int]): boxes, units, detections (and hits / FPs where known).
    settings (dict): threshold and protocol options.
    detail: the protocol's own result (:class:`~uld.eval.p3d.P3DResult` or
        :class:`~uld.eval.keyslice.FrocResult`); matches: its match arrays (for
        :func:`uld.eval.breakdown.breakdown`).
    """

    protocol: str
    sensitivity: dict[float, float]
    avg: float
    ap: float | None
    fps: np.ndarray
    sens: np.ndarray
    unit: str
    counts: dict[str, int]
    settings: dict[str, Any]
    detail: P3DResult | FrocResult = field(repr=False)
    matches: AnyMatches = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """Plain-Python figures: protocol, sensitivity (keys ``"0.125"`` ...), avg, ap, counts."""
        return {
            "protocol": self.protocol,
            "sensitivity": {f"{rate:g}": float(v) for rate, v in self.sensitivity.items()},
            "avg": float(self.avg),
            "ap": None if self.ap is None else float(self.ap),
            "unit": self.unit,
            **{k: int(v) for k, v in self.counts.items()},
            **self.settings,
        }

    def format(self) -> str:
        """Three lines for the screen: what was compared, the sensitivities, AVG and AP."""
        rule = f"{self.settings['overlap']} >= {self.settings['threshold']:g}"
        extra = [f"{k.replace('_', ' ')} {v}" for k, v in self.settings.items()
                 if k not in ("overlap", "threshold")]
        counts = ", ".join(f"{v} {_COUNT_NAMES.get(k, k)}" for k, v in self.counts.items())
        rates = "  ".join(f"{rate:g}: {100 * v:5.2f}" for rate, v in self.sensitivity.items())
        ap = "n/a (the reference defines none)" if self.ap is None else f"{100 * self.ap:.2f} %"
        return "\n".join([
            f"{_TITLES[self.protocol]}, {', '.join([rule, *extra])}: {counts}",
            f"sensitivity (%) at FPs per {self.unit}   {rates}",
            f"AVG (0.125..8) {100 * self.avg:.2f} %   AP {ap}",
        ])


def protocol_result(
    protocol: str, matches: AnyMatches, fp_rates: Sequence[float] = FP_RATES
) -> ProtocolResult:
    """Metrics of ``matches`` (from :func:`match_protocol`) as a :class:`ProtocolResult`."""
    _check_protocol(protocol)
    if protocol == "p3d":
        if not isinstance(matches, P3DMatches):
            raise TypeError(f"protocol 'p3d' needs P3DMatches, got {type(matches).__name__}")
        r = p3d_metrics(matches, fp_rates)
        return ProtocolResult(
            protocol=protocol, sensitivity=r.sensitivity, avg=r.avg, ap=r.ap, fps=r.fps,
            sens=r.sens, unit="volume",
            counts={"npos": r.npos, "n_volumes": r.n_volumes, "n_tracklets": r.n_tracklets},
            settings={"threshold": r.iou_threshold, "overlap": "IoU (+1 px)"},
            detail=r, matches=matches,
        )
    if protocol == "keyslice":
        if not isinstance(matches, KeySliceMatches):
            raise TypeError(f"protocol 'keyslice' needs KeySliceMatches, got {type(matches).__name__}")
        f = keyslice_metrics(matches, fp_rates)
    else:
        if not isinstance(matches, IOBB3DMatches):
            raise TypeError(f"protocol 'iobb3d' needs IOBB3DMatches, got {type(matches).__name__}")
        f = iobb3d_metrics(matches, fp_rates)
    return ProtocolResult(
        protocol=protocol, sensitivity=f.sensitivity, avg=f.avg, ap=None, fps=f.fps,
        sens=f.sens, unit=f.unit,
        counts={"npos": f.npos, f"n_{f.unit}s": f.n_units, "n_detections": f.n_detections,
                "n_hits": f.n_hits, "n_fp": f.n_fp},
        settings={"threshold": f.threshold, **f.settings},
        detail=f, matches=matches,
    )


def evaluate_protocol(
    protocol: str,
    gt: AnyGroundTruth,
    detections: Mapping[str, Any],
    *,
    threshold: float | None = None,
    fp_rates: Sequence[float] = FP_RATES,
    **options: Any,
) -> ProtocolResult:
    """:func:`match_protocol` then :func:`protocol_result`.

    protocol: ``"p3d"``, ``"keyslice"`` or ``"iobb3d"``; gt: from :func:`read_protocol_gt`;
    detections: ``{volume: [[(z, [x1, y1, x2, y2, score]), ...], ...]}``
    (:func:`uld.data.annotations.read_detections`).
    """
    matches = match_protocol(protocol, gt, detections, threshold, **options)
    return protocol_result(protocol, matches, fp_rates)
