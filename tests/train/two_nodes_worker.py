"""One training process of tests/train/test_two_nodes.py, started by torchrun.

Usage: ``python two_nodes_worker.py OUT DATASET KEY=VALUE ...``. Trains with ``uld.train.loop``
and, besides the run folder (rank 0), writes ``OUT/rank{R}.json`` (the samples this rank
trained on at each step) and ``OUT/rank{R}.pt`` (its student's final parameters, which DDP
keeps equal; BatchNorm running statistics are rank 0's, broadcast at each forward, and rank 0
alone saves them).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from uld.config import load_config
from uld.train import loop


def main() -> None:
    out, dataset, settings = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    rank = int(os.environ["RANK"])
    seen: list[list[list]] = []
    student_batch, finish = loop.student_batch, loop.finish

    def recording_batch(batch, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append([[sample.volume, sample.z] for sample in batch])
        return student_batch(batch, *args, **kwargs)

    def recording_finish(run):  # type: ignore[no-untyped-def]
        weights = {k: v.detach() for k, v in run.student.named_parameters()}
        torch.save(weights, out / f"rank{rank}.pt")
        (out / f"rank{rank}.json").write_text(json.dumps(seen))
        return finish(run)

    loop.student_batch, loop.finish = recording_batch, recording_finish
    config = load_config("demo", [*settings, f"data.root={dataset}", "train.device=cpu"])
    loop.train(config, out / "run", progress=False)


if __name__ == "__main__":
    main()
