"""Complete, atomically written checkpoints.

``last.pt`` (to resume): student, teacher, optimiser, next step, RNG states, config, version,
and the loop's running records. ``best.pt`` / ``model.pt`` (to predict): the teacher's weights,
the config and the metrics that chose it. Files are written to a temporary name and renamed,
so a killed run never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import torch

import uld
from uld.atomic import write_bytes
from uld.config import upgrade_saved_config
from uld.model.files import load_torch_file


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to memory, then to a temporary file in the same folder, renamed over
    ``path``: a full disk is an ``OSError`` "no space left on device, PATH" (``torch.save``
    straight to a file says "enforce fail at inline_container.cc") and the previous file
    stays as it was."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def rng_state() -> dict[str, Any]:
    """Every random state the loop draws from (Python, torch CPU, torch CUDA)."""
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by this package (tensors and plain values only)."""
    state = load_torch_file(path)
    if isinstance(state, dict) and isinstance(state.get("config"), dict):
        state["config"] = upgrade_saved_config(state["config"])
    return state


def resume_file(
    student: dict[str, Any], teacher: dict[str, Any], optimizer: dict[str, Any], step: int,
    config: dict, records: dict[str, Any], scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """The content of ``last.pt``: the state dicts of the student, the EMA teacher and the
    optimiser, the next step, every RNG state (taken now), the config, the loop's records and
    the package version: all that ``uld train --resume`` restores; with fp16 training also the
    gradient scaler's state (its scale and growth tracker)."""
    extra = {"scaler": scaler.state_dict()} if scaler is not None and scaler.is_enabled() else {}
    return {**extra,
        "student": student,
        "teacher": teacher,
        "optimizer": optimizer,
        "step": step,
        "rng": rng_state(),
        "config": config,
        "records": records,
        "version": uld.__version__,
    }


def model_file(model_state: dict[str, torch.Tensor], config: dict, step: int, metrics: dict) -> dict:
    """The content of ``best.pt`` / ``model.pt``: the teacher's weights, the config, the step
    and the metrics that chose it, the package version."""
    return {
        "model": model_state,
        "config": config,
        "step": step,
        "metrics": metrics,
        "version": uld.__version__,
    }
