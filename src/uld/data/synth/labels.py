"""The missingness models: which train lesions keep a label. The benchmark's most important choice.

Everything the benchmark measures is the gap between training on these partial labels and on
complete ones, and how much of it mining closes. That gap depends on *which* lesions go
unlabeled far more than on how many: a reader measuring targets leaves out the small and the
further lesions of a scan, not random ones, and a detector learns a very different bias from
each. So the models live here, side by side, each a pure function of the lesions (and a seed):

- :func:`recist_labels`: RECIST-style selection per volume (at least
  ``recist_min_diameter_mm``, at most ``recist_max_per_organ`` per organ and
  ``recist_max_per_volume`` in all), largest first or in random order: the default,
  ``missing="recist"``, applied while a volume is generated;
- :func:`random_labels`: each label dropped with probability ``missing_rate``
  (``missing="random"``);
- :func:`largest_first_labels`: the RECIST selection, largest first, over a whole written
  dataset (an alternative annotation file);
- :func:`matched_random_labels`: the control for any model: as many train labels, dropped at
  random;
- :func:`sparsity_labels` / :func:`sparsity_file`: the sparsity sweep's nested levels (RECIST
  order, a higher level only ever removes labels) and their annotation files.

``docs/method.md`` ("Where the synthetic benchmark departs") says why RECIST order is the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from uld.data.synth.config import Lesion, SynthConfig


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
