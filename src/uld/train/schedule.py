"""Learning-rate schedule: linear warm-up, then constant (the paper's choice)."""

from __future__ import annotations


def learning_rate(step: int, base_lr: float, warmup_iterations: int) -> float:
    """lr at ``step`` (0-based): from ``base_lr / 10`` rising linearly to ``base_lr``."""
    if warmup_iterations <= 0 or step >= warmup_iterations:
        return base_lr
    return base_lr * (0.1 + 0.9 * step / warmup_iterations)
