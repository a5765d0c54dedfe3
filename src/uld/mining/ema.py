"""The EMA teacher: an exponential moving average of the student's weights.

``teacher = m * teacher + (1 - m) * student`` after every optimiser step (``m = 0.999`` in the
paper; MMDetection writes the same rule as ``MeanTeacherHook(momentum=0.001)``, i.e. its
momentum is our ``1 - m``). Floating-point parameters and buffers are averaged; integer buffers
(BatchNorm's ``num_batches_tracked``) are copied. The teacher is never trained by gradients,
stays in eval mode, and is the model that is validated, kept and shipped.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module of a ``DistributedDataParallel`` (or ``DataParallel``) wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def ema_decay(momentum: float, updates: int, warmup: bool) -> float:
    """The momentum for update number ``updates`` (0-based).

    With ``warmup`` it ramps as ``min(1 - 1 / (updates + 1), momentum)`` (Tarvainen & Valpola),
    so the first update copies the student and early teachers follow it closely.
    """
    if not warmup:
        return momentum
    return min(1.0 - 1.0 / (updates + 1), momentum)


class EMATeacher:
    """An averaged copy of a student model.

    ``module`` is a deep copy of the (unwrapped) student in eval mode without gradients.
    """

    def __init__(self, student: nn.Module, momentum: float = 0.999, warmup: bool = False) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must lie in [0, 1), got {momentum}")
        self.module = copy.deepcopy(unwrap(student)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.momentum = momentum
        self.warmup = warmup
        self.updates = 0

    @torch.no_grad()
    def update(self, student: nn.Module) -> float:
        """Average the student into the teacher; returns the momentum used."""
        m = ema_decay(self.momentum, self.updates, self.warmup)
        student_state = unwrap(student).state_dict()
        for name, value in self.module.state_dict().items():
            source = student_state[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(m).add_(source.to(value.dtype), alpha=1.0 - m)
            else:
                value.copy_(source)
        self.updates += 1
        return m

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
