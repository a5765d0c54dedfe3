"""A tiny run through the whole path: synth -> train -> kill -> resume -> predict -> evaluate."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from uld.cli import main
from uld.config import load_config
from uld.data.synth import SynthConfig, write_synthetic_dataset
from uld.train.checkpoint import load_checkpoint
from uld.train.loop import train

TINY = [
    "model.small_channels=[8, 16]",
    "model.out_channels=16",
    "model.representation_size=32",
    "model.rpn_pre_nms_top_n_train=100",
    "model.rpn_post_nms_top_n_train=50",
    "model.rpn_pre_nms_top_n_test=50",
    "model.rpn_post_nms_top_n_test=20",
    "model.rpn_batch_size_per_image=32",
    "model.box_batch_size_per_image=32",
    "train.batch_size=2",
    "train.warmup_iterations=2",
    "train.log_every=2",
    "mining.policy=add",
    "mining.tau=0.0",  # mine every confident-enough box, so the add policy really runs
    "mining.ema_momentum=0.5",
    "mining.start_iteration=0",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, SynthConfig(n_train=6, n_val=2, n_test=2, size=64, seed=1),
                            progress=False)
    return root


def _config(dataset: Path, *extra: str):
    return load_config("demo", [*TINY, f"data.root={dataset}", *extra])


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_killed_run_resumes_to_the_same_weights(dataset, tmp_path):
    iterations = 24
    settings = [f"train.iterations={iterations}", "train.checkpoint_every=4",
                "train.eval_every=12"]
    uninterrupted = tmp_path / "whole"
    train(_config(dataset, *settings), uninterrupted, progress=False)

    # A real kill: a separate process, SIGKILL as soon as a checkpoint exists.
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "uld.cli", "train", "--config", "demo", "--out", str(killed),
               "--quiet", "--data", str(dataset)] + [a for s in TINY + settings for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (killed / "last.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    assert load_checkpoint(killed / "last.pt")["step"] < iterations
    assert not (killed / "model.pt").exists()

    train(_config(dataset, *settings), killed, resume=True, progress=False)
    a, b = load_checkpoint(uninterrupted / "last.pt"), load_checkpoint(killed / "last.pt")
    assert a["step"] == b["step"] == iterations
    assert _states_equal(a["student"], b["student"])
    assert _states_equal(a["teacher"]["module"], b["teacher"]["module"])
    assert a["records"]["mining"] == b["records"]["mining"]
    assert a["records"]["mining"][0] > 0, "the add policy mined nothing: the test proves too little"


def test_refuses_to_overwrite_or_resume_with_another_config(dataset, tmp_path):
    settings = ["train.iterations=2", "train.checkpoint_every=2", "train.eval_every=2"]
    train(_config(dataset, *settings), tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(_config(dataset, *settings), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="train.lr"):
        train(_config(dataset, *settings, "train.lr=0.5"), tmp_path / "run", resume=True,
              progress=False)


def test_cli_train_predict_evaluate(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    overrides = [a for s in [*TINY, "train.iterations=4", "train.eval_every=2",
                             "train.checkpoint_every=2"] for a in ("--set", s)]
    assert main(["train", "--config", "demo", "--data", str(dataset), "--out", str(run),
                 "--quiet", *overrides]) == 0
    for name in ("config.yaml", "last.pt", "best.pt", "model.pt", "summary.json", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    assert main(["predict", "--model", str(run), "--data", str(dataset), "--split", "test",
                 "--out", str(tmp_path / "pred"), "--quiet", "--min-score", "0"]) == 0
    test_names = [line.split(",")[0] for line in (dataset / "splits.csv").read_text().splitlines()
                  if line.endswith(",test")]
    for name in test_names:
        document = json.loads((tmp_path / "pred" / f"{name}.lesions.json").read_text())
        assert document["volume"] == name and document["format"] == "uld-lesions"
        assert (tmp_path / "pred" / f"{name}.lesions.csv").is_file()
    assert (tmp_path / "pred" / "lesions.csv").read_text().startswith("volume,")
    # a scan file given directly (NIfTI), named after its file
    scan = dataset / "volumes" / f"{test_names[0]}.nii.gz"
    assert main(["predict", str(scan), "--model", str(run), "--out", str(tmp_path / "one"),
                 "--quiet", "--no-overlays"]) == 0
    one = json.loads((tmp_path / "one" / f"{test_names[0]}.lesions.json").read_text())
    assert one["source"] == str(scan)
    assert main(["predict", str(tmp_path / "nope.nii.gz"), "--model", str(run), "--out",
                 str(tmp_path / "x"), "--quiet"]) == 2
    assert "nope.nii.gz: no such file or folder" in capsys.readouterr().err
    out = tmp_path / "result.json"
    assert main(["evaluate", "--gt", str(dataset), "--split", "test",
                 "--detections", str(tmp_path / "pred"), "--json", str(out),
                 "--plot", str(tmp_path / "froc.png")]) == 0
    result = json.loads(out.read_text())
    assert set(result["sensitivity"]) >= {"0.125", "0.25", "0.5", "1", "2", "4", "8", "16"}
    assert 0.0 <= result["ap"] <= 1.0
    assert (tmp_path / "froc.png").stat().st_size > 0


def test_cli_names_bad_input(tmp_path, capsys):
    (tmp_path / "splits.csv").write_text("volume,split\na,training\n")
    code = main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2
    assert "row 2: split 'training'" in capsys.readouterr().err


def test_two_process_ddp_training_on_cpu(dataset, tmp_path):
    """torchrun with two CPU processes (gloo): rank 0 alone writes the run folder."""
    run = tmp_path / "ddp"
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "uld.cli",
               "train", "--config", "demo", "--data", str(dataset), "--out", str(run), "--quiet"]
    command += [a for s in [*TINY, "train.iterations=4", "train.eval_every=2",
                            "train.checkpoint_every=2"] for a in ("--set", s)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"steps": 4') == 1  # one report, from rank 0
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint["step"] == 4 and (run / "model.pt").is_file()
    assert json.loads((run / "summary.json").read_text())["mined"] > 0


def test_mining_settings_are_honoured_and_recorded(dataset, tmp_path):
    """ignore policy without regression, a step schedule and the 3D consistency filter train,
    land in the run's config, and the run ends with its mined-lesion exports."""
    config = _config(dataset, "train.iterations=4", "train.eval_every=4", "train.checkpoint_every=4",
                     "mining.policy=ignore", "mining.regress_mined=false", "mining.tau=0.01",
                     "mining.consistency_neighbours=1", "mining.consistency_score=0.0",
                     "train.lr_schedule=step", "train.lr_decay_at=[0.5]")
    summary = train(config, tmp_path / "run", progress=False)
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert (saved.mining.policy, saved.mining.regress_mined, saved.mining.consistency_neighbours,
            saved.train.lr_schedule) == ("ignore", False, 1, "step")
    lrs = [row["lr"] for row in map(json.loads, (tmp_path / "run" / "metrics.jsonl").open())
           if "lr" in row]
    assert lrs[-1] == pytest.approx(config.train.lr * 0.1)
    assert summary["mined"] > 0, "a near-zero tau mines from the first step"
    assert summary["final_teacher_mining"]["slices_searched"] > 0
    for name in ("MinedLesions.pkl", "mined_lesions.json", "mined_lesions.png"):
        assert (tmp_path / "run" / name).is_file()
