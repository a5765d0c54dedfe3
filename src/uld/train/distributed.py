"""Process-group facts the loop needs, and the step-indexed batch schedule.

One process per GPU under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set) or a single
process otherwise. Only rank 0 logs, validates and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context(device: str = "auto") -> Context:
    """Rank, world size and device of this process; starts the process group under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(rank=rank, world_size=world_size, device=dev)


def local_world_size() -> int:
    """Training processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 without it)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def batch_indices(step: int, dataset_size: int, batch_size: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> list[int]:
    """Sample indices of this rank at ``step``: a pure function of its arguments.

    The global batch (``batch_size * world_size`` samples) is the ``step``-th slice of an
    endless stream of epochs, each a permutation seeded by ``(seed, epoch)``; rank ``r`` takes
    the ``r``-th share. Resuming at any step therefore sees exactly the same batches.
    """
    if dataset_size <= 0:
        raise ValueError("the training set is empty: no annotated key slice in the train split")
    global_batch = batch_size * world_size
    first = step * global_batch + rank * batch_size
    out: list[int] = []
    cache: dict[int, torch.Tensor] = {}
    for position in range(first, first + batch_size):
        epoch, offset = divmod(position, dataset_size)
        if epoch not in cache:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            cache[epoch] = torch.randperm(dataset_size, generator=generator)
        out.append(int(cache[epoch][offset]))
    return out


def flip_draws(step: int, seed: int, n: int, probability: float) -> list[bool]:
    """Which of the step's ``n`` student images are mirrored (``train.hflip``), from their own
    seeded generator (the same on every rank, as the resize ratio)."""
    if probability == 0:
        return [False] * n
    generator = torch.Generator().manual_seed(seed * 104_729 + step + 1)
    return (torch.rand(n, generator=generator) < probability).tolist()


def resize_ratio(step: int, seed: int, low: float, high: float) -> float:
    """The student's resize ratio at ``step``, drawn from its own seeded generator."""
    if low == high:
        return low
    generator = torch.Generator().manual_seed(seed * 7_919 + step + 1)
    return low + (high - low) * float(torch.rand((), generator=generator))
