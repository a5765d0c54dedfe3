"""What the training loop does when something goes wrong, kept out of the loop itself.

- :class:`StopOnInterrupt`: the first SIGINT (Ctrl-C) is noted and the loop stops after the
  step in progress, saves ``last.pt`` and raises :class:`TrainingInterrupted` ("interrupted at
  step N; resume with ..."); a second SIGINT interrupts at once.
- :func:`check_finite_loss` / :func:`check_finite_weights`: a NaN or infinite loss or weight
  stops the run with :class:`NonFiniteError`, naming the step and the losses (or tensors),
  before anything non-finite is written; the last checkpoint on disk stays the last finite one.
  :class:`FiniteGuard` holds the two for one run, with the checkpoint its messages name.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

import torch

from uld.model.files import first_non_finite
from uld.train.interrupt import TrainingInterrupted as TrainingInterrupted  # re-exported


class NonFiniteError(FloatingPointError):
    """A NaN or infinite loss or weight; the message names the step and the values."""


class StopOnInterrupt:
    """Context manager: while active, SIGINT sets :attr:`requested` instead of raising
    ``KeyboardInterrupt`` (a second SIGINT raises it). Outside the main thread it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: object = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopOnInterrupt:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        except ValueError:  # not the main thread
            self._installed = False
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._installed = False

    def release(self) -> None:
        """Give SIGINT back its previous handler (once the loop is over, Ctrl-C interrupts
        at once); a SIGINT noted but not acted on is raised now as ``KeyboardInterrupt``."""
        self._restore()
        if self.requested:
            raise KeyboardInterrupt


def _plain(losses: Mapping[str, torch.Tensor | float]) -> str:
    return ", ".join(f"{k} = {float(v):g}" for k, v in losses.items())


def check_finite_loss(step: int, losses: Mapping[str, torch.Tensor | float], last_checkpoint: Path,
                      checkpoint_step: int | None) -> None:
    """Raise :class:`NonFiniteError` when any loss (a tensor, or a float already on the
    host) is NaN or infinite."""
    if all(bool(torch.isfinite(torch.as_tensor(v).detach()).all()) for v in losses.values()):
        return
    raise NonFiniteError(f"step {step}: the loss is not finite ({_plain(losses)}); "
                         f"{_kept(last_checkpoint, checkpoint_step)}")


def check_finite_weights(step: int, named: Iterable[tuple[str, Mapping[str, torch.Tensor]]],
                         last_checkpoint: Path, checkpoint_step: int | None) -> None:
    """Raise :class:`NonFiniteError` naming the first tensor holding a NaN or infinity, so
    that no checkpoint with such weights is ever written."""
    for owner, state in named:
        key = first_non_finite(state)
        if key is not None:
            raise NonFiniteError(f"step {step}: {owner} weight {key} is not finite; "
                                 f"{_kept(last_checkpoint, checkpoint_step)}")


def _kept(path: Path, step: int | None) -> str:
    if step is None or not path.is_file():
        return "no checkpoint was written yet; lower train.lr or check the data"
    return f"the last finite checkpoint, {path} (step {step}), is kept; lower train.lr or check the data"


@dataclass
class FiniteGuard:
    """The NaN/inf checks of one run. Their message names ``last_checkpoint`` and the step it
    holds (``checkpoint_step``, None until the run has written one)."""

    last_checkpoint: Path
    checkpoint_step: int | None = None

    def loss(self, step: int, losses: Mapping[str, torch.Tensor | float]) -> None:
        check_finite_loss(step, losses, self.last_checkpoint, self.checkpoint_step)

    def weights(self, step: int, named: Iterable[tuple[str, Mapping[str, torch.Tensor]]]) -> None:
        check_finite_weights(step, named, self.last_checkpoint, self.checkpoint_step)
