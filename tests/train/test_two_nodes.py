"""Two torchrun agents on one machine as two "nodes" (static rendezvous on the loopback, CPU,
gloo, one process each): the README's several-machine recipe, run for a few steps."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from uld.data.synth import SynthConfig, write_synthetic_dataset

WORKER = Path(__file__).with_name("two_nodes_worker.py")
TINY = [
    "model.small_channels=[8, 16]", "model.out_channels=16", "model.representation_size=32",
    "model.rpn_pre_nms_top_n_train=100", "model.rpn_post_nms_top_n_train=50",
    "model.rpn_pre_nms_top_n_test=50", "model.rpn_post_nms_top_n_test=20",
    "model.rpn_batch_size_per_image=32", "model.box_batch_size_per_image=32",
    "train.batch_size=1", "train.warmup_iterations=1", "train.log_every=1",
    "mining.policy=add", "mining.tau=0.0", "mining.start_iteration=0",
    "train.iterations=3", "train.eval_every=100", "train.checkpoint_every=3",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _agent(node_rank: int, port: int, *args: str, timeout: int = 5) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
            "--rdzv_conf", f"timeout={timeout}", *args]


def test_two_nodes_see_different_batches_and_end_with_the_same_weights(tmp_path: Path) -> None:
    dataset = tmp_path / "synth"
    write_synthetic_dataset(dataset, SynthConfig(n_train=6, n_val=1, n_test=1, size=64, seed=1),
                            progress=False)
    port, env = _free_port(), {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(_agent(rank, port, str(WORKER), str(tmp_path), str(dataset), *TINY,
                                     timeout=120),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 3
    assert all(a != b for a, b in zip(*seen)), seen  # each step, each node its own share
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "run" / "model.pt").is_file()  # written once, by rank 0


@pytest.mark.parametrize("node_rank", [1])
def test_a_node_that_cannot_reach_the_rendezvous_names_the_endpoint(node_rank: int) -> None:
    port = _free_port()  # nothing listens there
    done = subprocess.run(_agent(node_rank, port, str(WORKER), timeout=2), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert f"timed out after 2000ms while trying to connect to (127.0.0.1, {port})" in done.stderr
