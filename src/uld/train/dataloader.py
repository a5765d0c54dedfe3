"""The training DataLoader: how many workers, pinned memory, persistent workers, prefetch.

Every sample is a pure function of its index (``uld.data.samples``) and the batches a pure
function of the step (``uld.train.distributed.batch_indices``), so the number of workers
changes the speed, never the batches: a run with 0 workers and one with 8 see the same data in
the same order.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["available_cores", "make_loader", "worker_count"]

MAX_AUTO_WORKERS = 16


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_count(asked: int, cache_volumes: bool, processes_per_node: int = 1,
                 cores: int | None = None) -> int:
    """The worker processes to start for ``data.num_workers = asked``.

    ``-1``: 0 when volumes are cached in memory (each worker would decode them all again),
    else this process's share of the ``cores`` (split between the ``processes_per_node``
    training processes of a node) minus one for the process itself, at most
    :data:`MAX_AUTO_WORKERS`. A number above the share is capped to it, with a warning.
    """
    cores = available_cores() if cores is None else cores
    share = max(1, cores // max(1, processes_per_node))
    if asked < 0:
        return 0 if cache_volumes else min(MAX_AUTO_WORKERS, share - 1)
    if asked > share:
        warnings.warn(f"data.num_workers = {asked} is more than the {share} cores this process "
                      f"has; using {share}", stacklevel=2)
        return share
    return asked


def make_loader(dataset: torch.utils.data.Dataset, batch_sampler: torch.utils.data.Sampler,
                collate_fn: Callable[[Sequence[Any]], Any], workers: int, prefetch_factor: int,
                device: torch.device) -> torch.utils.data.DataLoader:
    """A DataLoader over ``batch_sampler``'s batches: pinned memory when training on CUDA (so
    the copies to the GPU can be non-blocking), persistent workers that prefetch
    ``prefetch_factor`` batches each. With 0 workers, exactly torch's plain loader."""
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor}
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, num_workers=workers,
        pin_memory=device.type == "cuda", **extra,
    )
