"""Ranges of config values, checked once when a config is built (``uld.config``).

Types are checked by ``uld.config._coerce``; this module checks that each number is one the
code can run with, so that ``--set train.iterations=-5`` or ``train.lr=nan`` stops before
anything is written instead of producing an untrained model with exit 0. Every float of the
tree must also be finite (``uld.config`` rejects ``.nan`` and ``.inf``).

A rule is ``(test, text)``: ``test`` takes the value and says whether it is fine, ``text``
says what it must be. Keys are dotted paths of the plain config dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

Rule = tuple[Callable[[Any], bool], str]


def _at_least(low: float) -> Rule:
    return (lambda v: v >= low, f"must be >= {low:g}")


_POSITIVE: Rule = (lambda v: v > 0, "must be > 0")
_NON_NEGATIVE: Rule = (lambda v: v >= 0, "must be >= 0")
_UNIT: Rule = (lambda v: 0 <= v <= 1, "must lie in [0, 1]")
_OPEN_UNIT: Rule = (lambda v: 0 < v <= 1, "must lie in (0, 1]")
_MOMENTUM: Rule = (lambda v: 0 <= v < 1, "must lie in [0, 1)")
_ODD: Rule = (lambda v: v >= 1 and v % 2 == 1, "must be an odd number >= 1")
_INCREASING_PAIR: Rule = (lambda v: len(v) == 2 and v[0] < v[1], "must be a pair (low, high) with low < high")
_RESIZE: Rule = (lambda v: len(v) == 2 and 0 < v[0] <= v[1], "must be a pair 0 < low <= high")
_FRACTIONS: Rule = (lambda v: all(0 <= f <= 1 for f in v), "must be fractions of the run, each in [0, 1]")
_ALL_POSITIVE: Rule = (lambda v: len(v) > 0 and all(x > 0 for x in v), "must be positive values")

RULES: dict[str, Rule] = {
    "data.num_slices": _ODD,
    "data.slice_spacing_mm": _POSITIVE,
    "data.window_hu": _INCREASING_PAIR,
    "data.pixel_spacing_mm": _NON_NEGATIVE,
    "data.max_size": _NON_NEGATIVE,
    "data.unlabeled_neighbours": _NON_NEGATIVE,
    "data.unlabeled_neighbours_from": _NON_NEGATIVE,
    "model.small_channels": _ALL_POSITIVE,
    "model.out_channels": _at_least(1),
    "model.anchor_sizes": _ALL_POSITIVE,
    "model.aspect_ratios": _ALL_POSITIVE,
    "model.representation_size": _at_least(1),
    "model.roi_sampling_ratio": _NON_NEGATIVE,
    "model.rpn_pre_nms_top_n_train": _at_least(1),
    "model.rpn_post_nms_top_n_train": _at_least(1),
    "model.rpn_pre_nms_top_n_test": _at_least(1),
    "model.rpn_post_nms_top_n_test": _at_least(1),
    "model.rpn_batch_size_per_image": _at_least(1),
    "model.box_batch_size_per_image": _at_least(1),
    "model.soft_sampling_floor": _UNIT,
    "model.box_score_thresh": _UNIT,
    "model.box_nms_thresh": _UNIT,
    "model.detections_per_img": _at_least(1),
    "model.image_std": _POSITIVE,
    "mining.ema_momentum": _UNIT,
    "mining.start_iteration": _NON_NEGATIVE,
    "mining.consistency_score": _UNIT,
    "mining.consistency_iou": _UNIT,
    "train.iterations": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.lr": _POSITIVE,
    "train.momentum": _MOMENTUM,
    "train.weight_decay": _NON_NEGATIVE,
    "train.warmup_iterations": _NON_NEGATIVE,
    "train.lr_decay_at": _FRACTIONS,
    "train.lr_decay_gamma": _POSITIVE,
    "train.resize_range": _RESIZE,
    "train.hflip": _UNIT,
    "train.eval_every": _at_least(1),
    "train.checkpoint_every": _at_least(1),
    "train.log_every": _at_least(1),
    "data.num_workers": (lambda v: v >= -1, "must be >= 0 (or -1: what the machine allows)"),
    "data.prefetch_factor": _at_least(1),
    "infer.batch_size": _at_least(1),
    "infer.kalman.max_gap": _NON_NEGATIVE,
    "infer.kalman.gate": _POSITIVE,
    "infer.kalman.min_size_px": _NON_NEGATIVE,
    "infer.overlap.iou_threshold": _UNIT,
    "infer.overlap.max_gap": _NON_NEGATIVE,
    "eval.iou": _OPEN_UNIT,
}


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def range_problem(values: Mapping[str, Any]) -> str | None:
    """The first value of a plain config dict outside its range, as one line; None if all fit.

    Also catches a float anywhere in the tree that is NaN or infinite.
    """
    flat = _flat(values)
    for key, value in flat.items():
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            return f"{key} = {_show(value)}: must be a finite number"
    for key, (test, text) in RULES.items():
        if key in flat and not test(flat[key]):
            return f"{key} = {_show(flat[key])}: {text}"
    return None
