"""The optimiser, and its learning rate: linear warm-up, then constant (the paper's choice) or
step decay."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """``sgd`` (the paper's: momentum, L2 weight decay) or ``adamw`` (decoupled weight decay;
    ``momentum`` is unused). ``lr`` is the base rate; the loop sets each step's rate."""
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} (known: sgd, adamw)")


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
