"""Scalars of a run: TensorBoard and a plain ``metrics.jsonl``, written by rank 0 only."""

from __future__ import annotations

import json
import math
from pathlib import Path


class RunLogger:
    """Writes ``{"step": s, tag: value, ...}`` lines and TensorBoard scalars; NaNs are skipped."""

    def __init__(self, out_dir: str | Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self._writer = None
        self._jsonl = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(out / "tensorboard"))
            self._jsonl = (out / "metrics.jsonl").open("a")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        finite = {k: float(v) for k, v in values.items() if not math.isnan(float(v))}
        for tag, value in finite.items():
            self._writer.add_scalar(tag, value, step)
        self._jsonl.write(json.dumps({"step": step, **finite}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._jsonl.close()
