"""Mixed precision (issue 12): bf16 autocast trains, resumes exactly and predicts on the CPU;
modes a device cannot run are one line saying what to use; defaults stay fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from uld.config import load_config
from uld.data.synth import SynthConfig, write_synthetic_dataset
from uld.data.volume import Volume
from uld.infer.predict import detect_slices, load_model
from uld.model.precision import Autocast, autocast, check_amp, grad_scaler
from uld.train.checkpoint import load_checkpoint
from uld.train.loop import train

TINY = [
    "model.small_channels=[8, 16]", "model.out_channels=16", "model.representation_size=32",
    "model.rpn_pre_nms_top_n_train=100", "model.rpn_post_nms_top_n_train=50",
    "model.rpn_pre_nms_top_n_test=50", "model.rpn_post_nms_top_n_test=20",
    "model.rpn_batch_size_per_image=32", "model.box_batch_size_per_image=32",
    "train.batch_size=2", "train.warmup_iterations=2", "train.log_every=2",
    "mining.policy=add", "mining.tau=0.0", "mining.ema_momentum=0.5", "mining.start_iteration=0",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, SynthConfig(n_train=4, n_val=1, n_test=1, size=48, seed=2),
                            progress=False)
    return root


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_trains_resumes_to_identical_weights_and_predicts(dataset: Path, tmp_path: Path) -> None:
    settings = [*TINY, f"data.root={dataset}", "train.amp=bf16", "infer.amp=bf16",
                "train.checkpoint_every=3", "train.eval_every=100"]
    whole = tmp_path / "whole"
    train(load_config("demo", [*settings, "train.iterations=6"]), whole, progress=False)
    part = tmp_path / "part"
    train(load_config("demo", [*settings, "train.iterations=3"]), part, progress=False)
    train(load_config("demo", [*settings, "train.iterations=6"]), part, resume=True, progress=False)
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(part / "last.pt")
    assert a["step"] == b["step"] == 6
    assert _states_equal(a["student"], b["student"])
    assert _states_equal(a["teacher"]["module"], b["teacher"]["module"])
    assert all(v.dtype == torch.float32 for v in a["student"].values() if v.is_floating_point())
    assert "scaler" not in a  # bf16 needs no gradient scaler
    fp32 = tmp_path / "fp32"
    train(load_config("demo", [*settings, "train.iterations=6", "train.amp=off"]), fp32,
          progress=False)
    assert not _states_equal(a["student"], load_checkpoint(fp32 / "last.pt")["student"])

    model, config = load_model(whole)
    assert config.infer.amp == "bf16"
    volume = Volume(hu=np.random.default_rng(0).uniform(-1000, 400, (5, 48, 48)).astype(np.float32),
                    spacing_xyz=(0.8, 0.8, 2.0))
    slices = detect_slices(model, volume, config)
    assert len(slices) == 5 and all(s.boxes.dtype == np.float64 for s in slices)


def test_default_is_fp32_and_untouched() -> None:
    config = load_config("demo")
    assert config.train.amp == "off" and config.infer.amp == "off" and not config.train.compile
    with autocast("off", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    assert not grad_scaler("off", "cpu").is_enabled()
    layer = torch.nn.Linear(3, 2)
    assert Autocast(layer, "off", "cpu")(torch.ones(1, 3)).dtype == torch.float32
    assert Autocast(layer, "bf16", "cpu")(torch.ones(1, 3)).dtype == torch.float32  # fp32 back


def test_modes_a_device_cannot_run_say_what_to_use() -> None:
    with pytest.raises(ValueError, match=r"^train.amp = fp16 needs a CUDA GPU; on this cpu use "
                                         r"train.amp=bf16 \(or off\)$"):
        check_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="must be one of off, bf16, fp16"):
        check_amp("fp8", "cpu")
    check_amp("bf16", "cpu")


def test_fp16_on_cpu_is_one_line_from_the_cli(dataset: Path, tmp_path: Path, capsys) -> None:
    from uld.cli import main

    args = ["train", "--config", "demo", "--data", str(dataset), "--out", str(tmp_path / "r"),
            "--quiet", "--set", "train.amp=fp16", "--set", "train.device=cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == "uld: error: train.amp = fp16 needs a CUDA GPU; on this cpu use train.amp=bf16 (or off)"


def test_the_teacher_alone_can_mine_in_bf16(monkeypatch) -> None:
    from uld.data.samples import Sample
    from uld.mining.ema import EMATeacher
    from uld.model.build import build_detector
    from uld.train.loop import teacher_amp, train_step
    from uld.train.schedule import build_optimizer

    config = load_config("demo", [*TINY, "mining.teacher_amp=bf16"])
    assert teacher_amp(config) == "bf16"
    assert teacher_amp(load_config("demo", [*TINY, "train.amp=bf16"])) == "bf16"  # "train"
    assert teacher_amp(load_config("demo", TINY)) == "off"
    torch.manual_seed(0)
    student = build_detector(config.model, config.data.num_slices)
    teacher = EMATeacher(student, config.mining.ema_momentum, config.mining.ema_warmup)
    seen = {}
    def hook(name):
        def record(_module, _args, _out) -> None:
            seen.setdefault(name, torch.is_autocast_enabled("cpu"))
        return record

    for name, model in (("teacher", teacher.module), ("student", student)):
        model.backbone.register_forward_hook(hook(name))
    optimizer = build_optimizer(student.parameters(), "adamw", 1e-3, 0.9, 0.0)
    batch = [Sample(image=torch.rand(config.data.num_slices, 48, 48),
                    boxes=torch.tensor([[10.0, 10.0, 30.0, 30.0]]), truth=None, volume="v", z=3)]
    result = train_step(1, batch, student, teacher, optimizer, config)
    assert seen == {"teacher": True, "student": False}
    assert np.isfinite(result.loss)


def test_fp16_teacher_on_cpu_is_one_line_from_the_cli(dataset: Path, tmp_path: Path, capsys) -> None:
    from uld.cli import main

    args = ["train", "--config", "demo", "--data", str(dataset), "--out", str(tmp_path / "r"),
            "--quiet", "--set", "mining.teacher_amp=fp16", "--set", "train.device=cpu"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == ("uld: error: mining.teacher_amp = fp16 needs a CUDA "
                                               "GPU; on this cpu use mining.teacher_amp=bf16 (or off)")
