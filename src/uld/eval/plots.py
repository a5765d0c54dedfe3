"""FROC plots, drawn with matplotlib's Agg canvas (no display, no pyplot global state)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from uld.atomic import write_bytes
from uld.eval.froc import FP_RATES, froc_sensitivity

__all__ = ["plot_froc"]


def plot_froc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    fp_rates: Sequence[float] = FP_RATES,
    title: str | None = None,
    xlabel: str = "false positives per volume",
    ylabel: str = "sensitivity",
    dpi: int = 120,
    readings: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Draw FROC curves on a log2 x-axis (0.125 .. 16 FPs per volume) and write a PNG.

    curves: ``{label: (fps, sens)}``, each ``(T,)`` arrays in ranking order, e.g.
        ``(result.fps, result.sens)`` of a :class:`uld.eval.p3d.P3DResult`.
    path: the PNG to write (atomically: temporary file, then ``os.replace``).
    fp_rates: where markers show the interpolated sensitivity (the protocol's readings,
        :func:`uld.eval.p3d.froc_sensitivity`); the legend carries their mean over the
        rates up to 8 when there are any.
    readings: ``{label: sensitivity at each of fp_rates}`` where a protocol reads its curve
        differently (the key-slice and IOBB protocols hold the last point at a tie); default:
        the P3D reading of each curve.
    Returns ``path``.
    """
    rates = np.asarray(fp_rates, dtype=np.float64)
    lo, hi = float(min(0.125, rates.min(initial=0.125))), float(max(16.0, rates.max(initial=16)))
    fig = Figure(figsize=(6.0, 4.5), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, (fps, sens) in curves.items():
        fps = np.asarray(fps, dtype=np.float64).ravel()
        sens = np.asarray(sens, dtype=np.float64).ravel()
        if fps.shape != sens.shape:
            raise ValueError(f"curve {label!r}: fps {fps.shape} and sens {sens.shape} differ")
        at_rates = (np.asarray(readings[label], dtype=np.float64) if readings and label in readings
                    else froc_sensitivity(fps, sens, rates))
        averaged = at_rates[rates <= 8.0]
        text = f"{label} (avg {averaged.mean():.3f})" if len(averaged) else str(label)
        inside = (fps > 0) & (fps <= hi)
        (line,) = ax.plot(fps[inside], sens[inside], linewidth=1.2, label=text)
        ax.plot(rates, at_rates, linestyle="none", marker="o", markersize=4,
                color=line.get_color(), clip_on=False)
    ax.set_xscale("log", base=2)
    ax.set_xlim(lo, hi)
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(rates)
    ax.set_xticklabels([f"{r:g}" for r in rates])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return write_bytes(path, buffer.getvalue())
