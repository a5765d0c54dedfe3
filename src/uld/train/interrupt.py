"""The exception a SIGINT during training ends in, in a module without torch.

``uld``'s command line catches it for every command; keeping it here (re-exported by
:mod:`uld.train.guard`) lets ``uld evaluate`` and ``uld --help`` start without importing torch.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

__all__ = ["TrainingInterrupted"]


class TrainingInterrupted(Exception):
    """SIGINT during training; ``last.pt`` holds the state after ``step`` steps."""

    def __init__(self, step: int, out: Path) -> None:
        self.step, self.out = step, out
        super().__init__(f"interrupted at step {step}; resume with: uld train ... --out {out} --resume")

    def line(self, argv: Sequence[str]) -> str:
        """The message, with the command that resumes: ``argv`` (the ``uld`` arguments) plus
        ``--resume``."""
        again = " ".join(shlex.quote(a) for a in argv if a != "--resume")
        return f"interrupted at step {self.step}; resume with: uld {again} --resume"
