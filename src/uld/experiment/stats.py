"""Noise and effects: paired differences over seeds and a bootstrap over test volumes.

Pure functions. A comparison between two settings is made on the same seeds (same data, same
batches, same initialisation), so each seed gives one difference and the seeds' scatter of
*differences* is the noise of the comparison. A 95 % interval of the mean difference that
excludes 0 is what the reports call an effect; one that contains 0 is "within noise".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy import stats

T = TypeVar("T")


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided 95 % interval (``low``/``high`` NaN when ``n`` < 2)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float = math.nan
    """Bootstrap intervals: the standard deviation of the resampled values."""

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def text(self, decimals: int = 1) -> str:
        """``+2.3 [+0.4, +4.2]`` (``+2.3 (1 seed, no interval)`` for a single value)."""
        if self.n < 2:
            return f"{self.mean:+.{decimals}f} (1 seed, no interval)"
        return f"{self.mean:+.{decimals}f} [{self.low:+.{decimals}f}, {self.high:+.{decimals}f}]"


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of ``a[i] - b[i]`` with Student's t interval over the pairs.

    a, b: one value per seed, in the same seed order; equal lengths >= 1.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired difference needs equal non-empty lists, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return Interval(mean, mean - half, mean + half, len(d))


def paired_by_seed(a: Mapping[int, float], b: Mapping[int, float]) -> Interval:
    """:func:`paired_difference` over the seeds both mappings hold (``{seed: value}``)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("no seed in common")
    return paired_difference([a[s] for s in seeds], [b[s] for s in seeds])


def bootstrap_volumes(
    volumes: Sequence[str], metric: Callable[[list[str]], float], n_resamples: int = 1000,
    seed: int = 0, level: float = 0.95,
) -> Interval:
    """Percentile bootstrap of ``metric`` over volumes drawn with replacement.

    ``metric(names)`` scores a list of volume names that may repeat (the caller gives each
    repeat its own key). Returns the metric on all volumes with the resamples' interval; the
    interval's half-width is how much the choice of test volumes alone moves the metric.
    """
    if not volumes:
        raise ValueError("bootstrap needs at least one volume")
    rng = np.random.default_rng(seed)
    names = list(volumes)
    values = [metric([names[i] for i in rng.integers(0, len(names), len(names))])
              for _ in range(n_resamples)]
    low, high = np.quantile(values, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(metric(names), float(low), float(high), n_resamples, float(np.std(values)))


def resampled(mapping: Mapping[str, T], names: Sequence[str]) -> dict[str, T]:
    """``{name#k: mapping[name]}`` for a resample that may repeat names (k = repeat count)."""
    out: dict[str, T] = {}
    seen: dict[str, int] = {}
    for name in names:
        k = seen.get(name, 0)
        seen[name] = k + 1
        out[f"{name}#{k}"] = mapping.get(name, [])  # type: ignore[arg-type]
    return out


def closed_share(gap: Interval, change: Interval) -> float | None:
    """Share of the oracle - baseline gap that a row's change over the baseline closes (means;
    None where there is no gap)."""
    return None if gap.mean <= 0 else change.mean / gap.mean


