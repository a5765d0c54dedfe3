"""Reading saved weights: one ``ValueError`` naming the file for anything unreadable.

``torch.load(weights_only=True)`` refuses pickled code, but a damaged file fails in many ways
(``UnpicklingError``, ``RuntimeError`` from the zip reader, ``EOFError``, ``KeyError``): every
one of them becomes ``"PATH: not a readable uld checkpoint (...)"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


def load_torch_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU; a missing file is
    ``FileNotFoundError``, any other failure a ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says more
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign or damaged file: say which
        kind = exc.__class__.__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            kind = "it names code to run, which is refused"
        elif path.stat().st_size == 0:
            kind = "empty file"
        raise ValueError(f"{path}: not a readable uld checkpoint ({kind})") from exc


def first_non_finite(state: Mapping[str, Any]) -> str | None:
    """The name of the first floating tensor of ``state`` holding a NaN or infinity."""
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def read_model_file(path: str | Path) -> dict[str, Any]:
    """``best.pt`` / ``model.pt`` content (``model`` weights and ``config``); anything else,
    or weights holding NaN or infinity, is a ``ValueError`` naming the file."""
    state = load_torch_file(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) \
            or not isinstance(state.get("config"), dict):
        raise ValueError(f"{path}: not a uld model file (needs 'model' and 'config')")
    bad = first_non_finite(state["model"])
    if bad is not None:
        raise ValueError(f"{path}: weight {bad} is not finite (NaN or infinity)")
    return state
