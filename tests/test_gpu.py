"""GPU-marked tests (``pytest -m gpu``; skipped with the reason where there is no CUDA GPU).

benchmarks/gpu/check.sh runs them on a GPU machine: AMP parity against fp32, the device of
every tensor of a training step, a fp16 run whose scaler state reaches last.pt and resumes,
and prediction on CUDA against the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from uld.config import load_config
from uld.data.synth import SynthConfig, write_synthetic_dataset
from uld.data.volume import Volume
from uld.infer.predict import detect_slices, load_model
from uld.mining.ema import EMATeacher
from uld.model.build import build_detector
from uld.model.precision import autocast
from uld.train.checkpoint import load_checkpoint
from uld.train.loop import train

pytestmark = pytest.mark.gpu

TINY = [
    "model.small_channels=[8, 16]", "model.out_channels=16", "model.representation_size=32",
    "model.rpn_batch_size_per_image=32", "model.box_batch_size_per_image=32",
    "train.batch_size=2", "train.warmup_iterations=2", "train.log_every=2",
    "mining.policy=add", "mining.tau=0.0", "mining.ema_momentum=0.5", "mining.start_iteration=0",
    "train.device=cuda",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, SynthConfig(n_train=4, n_val=1, n_test=1, size=64, seed=4),
                            progress=False)
    return root


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_amp_losses_agree_with_fp32(mode: str) -> None:
    if mode == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    config = load_config("demo")
    torch.manual_seed(0)
    model = build_detector(config.model, config.data.num_slices).cuda().train()
    images = [torch.rand(config.data.num_slices, 128, 128, device="cuda") for _ in range(2)]
    targets = [{"boxes": torch.tensor([[30.0, 30.0, 60.0, 64.0]], device="cuda"),
                "labels": torch.ones(1, dtype=torch.int64, device="cuda")} for _ in range(2)]
    torch.manual_seed(1)
    fp32 = model(images, targets)
    torch.manual_seed(1)
    with autocast(mode, "cuda"):
        mixed = model(images, targets)
    for key in fp32:
        assert torch.isfinite(mixed[key]), key
        assert abs(float(mixed[key]) - float(fp32[key])) <= 0.05 * abs(float(fp32[key])) + 1e-3, key


def test_every_tensor_of_a_training_step_is_on_the_gpu(dataset: Path, tmp_path: Path) -> None:
    config = load_config("demo", [*TINY, f"data.root={dataset}", "train.iterations=2",
                                  "train.eval_every=2", "train.checkpoint_every=2"])
    train(config, tmp_path / "run", progress=False)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    student = build_detector(config.model, config.data.num_slices).cuda()
    student.load_state_dict(saved["student"])
    teacher = EMATeacher(student)
    tensors = [*student.state_dict().values(), *teacher.state_dict()["module"].values()]
    assert all(t.device.type == "cuda" for t in tensors)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    optimizer.load_state_dict(saved["optimizer"])
    states = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    assert states and all(t.device.type == "cuda" for t in states)


def test_fp16_run_saves_its_scaler_and_resumes_exactly(dataset: Path, tmp_path: Path) -> None:
    settings = [*TINY, f"data.root={dataset}", "train.amp=fp16", "train.eval_every=100",
                "train.checkpoint_every=2"]
    train(load_config("demo", [*settings, "train.iterations=4"]), tmp_path / "whole", progress=False)
    train(load_config("demo", [*settings, "train.iterations=2"]), tmp_path / "part", progress=False)
    assert "scale" in load_checkpoint(tmp_path / "part" / "last.pt")["scaler"]
    train(load_config("demo", [*settings, "train.iterations=4"]), tmp_path / "part", resume=True,
          progress=False)
    a, b = (load_checkpoint(tmp_path / r / "last.pt") for r in ("whole", "part"))
    assert a["scaler"] == b["scaler"]
    assert all(torch.equal(a["student"][k], b["student"][k]) for k in a["student"])
    assert all(v.dtype == torch.float32 for v in a["student"].values() if v.is_floating_point())


def test_predict_on_cuda_matches_the_cpu(dataset: Path, tmp_path: Path) -> None:
    config = load_config("demo", [*TINY, f"data.root={dataset}", "train.iterations=2",
                                  "train.eval_every=2", "train.checkpoint_every=2"])
    train(config, tmp_path / "run", progress=False)
    volume = Volume(hu=np.random.default_rng(0).uniform(-1000, 400, (6, 64, 64)).astype(np.float32),
                    spacing_xyz=(0.8, 0.8, 2.0))
    gpu_model, gpu_config = load_model(tmp_path / "run", "cuda")
    cpu_model, _ = load_model(tmp_path / "run", "cpu")
    on_gpu = detect_slices(gpu_model, volume, gpu_config, "cuda")
    on_cpu = detect_slices(cpu_model, volume, gpu_config, "cpu")
    assert [s.z for s in on_gpu] == [s.z for s in on_cpu]
    for g, c in zip(on_gpu, on_cpu):  # kernels differ: boxes near a threshold may come or go
        n = min(len(g.scores), len(c.scores))
        assert g.boxes.dtype == np.float64 and abs(len(g.scores) - len(c.scores)) <= 2
        np.testing.assert_allclose(g.scores[:n], c.scores[:n], atol=1e-2)
