"""Learning-rate schedule: linear warm-up, then constant (the paper's choice) or step decay."""

from __future__ import annotations

from collections.abc import Sequence


def learning_rate(
    step: int,
    base_lr: float,
    warmup_iterations: int,
    schedule: str = "constant",
    iterations: int = 0,
    decay_at: Sequence[float] = (),
    gamma: float = 0.1,
) -> float:
    """lr at ``step`` (0-based).

    Warm-up: from ``base_lr / 10`` rising linearly to ``base_lr`` over ``warmup_iterations``.
    ``constant``: ``base_lr`` afterwards. ``step``: times ``gamma`` for every fraction in
    ``decay_at`` whose iteration ``round(fraction * iterations)`` the step has reached.
    """
    if schedule not in ("constant", "step"):
        raise ValueError(f"unknown lr schedule {schedule!r} (known: constant, step)")
    lr = base_lr
    if schedule == "step":
        lr *= gamma ** sum(step >= round(f * iterations) for f in decay_at)
    if warmup_iterations <= 0 or step >= warmup_iterations:
        return lr
    return lr * (0.1 + 0.9 * step / warmup_iterations)
