"""Mixed precision and device habits, one place for training and prediction (issue 12).

``amp`` is ``"off"`` (fp32, the default), ``"bf16"`` or ``"fp16"``:

- :func:`check_amp` says, in one line, what to use instead when the device cannot run the
  mode: fp16 autocast needs a CUDA GPU (on a CPU use bf16 or off); bf16 needs a GPU that has
  it (Ampere or newer; else fp16) or any CPU.
- :func:`autocast` is the context in which the student's forward and the teacher's
  prediction run; weights, gradients, the optimiser and the EMA stay fp32 (autocast casts
  per operation, never the parameters).
- :func:`grad_scaler` is torch's ``GradScaler``, enabled for fp16 only (bf16 has fp32's
  range and needs none); its state goes into ``last.pt``.
- :class:`Autocast` wraps a predictor (the teacher) so that whoever calls it (the mining)
  gets fp32 boxes and scores back, whatever the compute dtype.
- :func:`device_habits`: ``cudnn.benchmark`` and the matmul precision, set only on CUDA.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

__all__ = ["AMP_MODES", "Autocast", "autocast", "check_amp", "device_habits", "grad_scaler"]

AMP_MODES = ("off", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _device(device: torch.device | str) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def check_amp(mode: str, device: torch.device | str, key: str = "train.amp") -> None:
    """Raise ``ValueError`` (one line naming ``key`` and what to use instead) when ``device``
    cannot run ``mode``."""
    if mode not in AMP_MODES:
        raise ValueError(f"{key} = {mode!r}: must be one of {', '.join(AMP_MODES)}")
    dev = _device(device)
    if mode == "fp16" and dev.type != "cuda":
        raise ValueError(f"{key} = fp16 needs a CUDA GPU; on this {dev.type} use {key}=bf16 (or off)")
    if mode == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(dev)
        raise ValueError(f"{key} = bf16: this GPU ({name}) has no bf16; use {key}=fp16 (or off)")


def autocast(mode: str, device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``mode`` on ``device``'s type; a no-op context for ``"off"``."""
    if mode == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=_device(device).type, dtype=_DTYPES[mode])


def grad_scaler(mode: str, device: torch.device | str) -> torch.amp.GradScaler:
    """A ``GradScaler`` that scales only for fp16 (disabled, a pass-through, otherwise)."""
    dev = _device(device)
    return torch.amp.GradScaler(dev.type, enabled=mode == "fp16" and dev.type == "cuda")


def _float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
        return value.float()
    if isinstance(value, dict):
        return {k: _float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_float32(v) for v in value)
    return value


class Autocast(nn.Module):
    """``module`` run under :func:`autocast`, its floating outputs returned as fp32.

    Holds ``module`` (no copy, same parameters); for prediction (the teacher's pass, inference).
    With ``mode="off"`` it calls ``module`` unchanged.
    """

    def __init__(self, module: nn.Module, mode: str, device: torch.device | str) -> None:
        super().__init__()
        self.module, self.mode, self.device = module, mode, _device(device)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "off":
            return self.module(*args, **kwargs)
        with autocast(self.mode, self.device):
            out = self.module(*args, **kwargs)
        return _float32(out)


def device_habits(device: torch.device | str, cudnn_benchmark: bool) -> None:
    """On CUDA: ``cudnn.benchmark`` as asked (cuDNN times its convolution algorithms once per
    input shape and keeps the fastest; the student's random resize makes a few dozen shapes).
    Nothing on CPU."""
    if _device(device).type != "cuda":
        return
    torch.backends.cudnn.benchmark = cudnn_benchmark

