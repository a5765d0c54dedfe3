"""``train_step``: one step of the method (mining, the student's step, the EMA update) on a
tiny random detector, with no run folder, logger or checkpoint."""

import pytest
import torch

from uld.config import load_config
from uld.data.samples import Sample
from uld.mining.ema import EMATeacher
from uld.model.build import build_detector
from uld.train.guard import NonFiniteError
from uld.train.loop import StepResult, train_step
from uld.train.schedule import build_optimizer, learning_rate

TINY = [
    "model.small_channels=[8, 16]", "model.out_channels=16", "model.representation_size=32",
    "model.rpn_pre_nms_top_n_train=100", "model.rpn_post_nms_top_n_train=50",
    "model.rpn_pre_nms_top_n_test=50", "model.rpn_post_nms_top_n_test=20",
    "model.rpn_batch_size_per_image=32", "model.box_batch_size_per_image=32",
    "train.warmup_iterations=2", "mining.ema_momentum=0.5", "mining.ema_warmup=false",
    "mining.start_iteration=1",
]


def _batch(channels: int) -> list[Sample]:
    def sample(known, truth):
        return Sample(image=torch.rand(channels, 64, 64, generator=torch.Generator().manual_seed(len(known))),
                      boxes=torch.tensor(known, dtype=torch.float32).reshape(-1, 4),
                      truth=torch.tensor(truth, dtype=torch.float32).reshape(-1, 4), volume="v", z=3)
    lesion, missing = [10, 10, 30, 30], [40, 40, 56, 56]
    return [sample([lesion], [lesion, missing]), sample([], [missing])]


def _parts(*extra: str):
    torch.manual_seed(0)
    config = load_config("demo", [*TINY, *extra])
    student = build_detector(config.model, config.data.num_slices)
    teacher = EMATeacher(student, config.mining.ema_momentum, config.mining.ema_warmup)
    tc = config.train
    optimizer = build_optimizer(student.parameters(), tc.optimizer, tc.lr, tc.momentum, tc.weight_decay)
    return config, student, teacher, optimizer


def test_a_step_trains_the_student_and_moves_the_teacher():
    config, student, teacher, optimizer = _parts("mining.policy=add", "mining.source=truth")
    before_student = {k: v.clone() for k, v in student.state_dict().items()}
    before_teacher = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    result = train_step(0, _batch(config.data.num_slices), student, teacher, optimizer, config)
    assert isinstance(result, StepResult) and result.step == 0
    assert result.loss == pytest.approx(sum(result.losses.values()))
    tc = config.train
    assert result.lr == learning_rate(0, tc.lr, tc.warmup_iterations, tc.lr_schedule, tc.iterations,
                                      tc.lr_decay_at, tc.lr_decay_gamma) < tc.lr  # warming up
    assert optimizer.param_groups[0]["lr"] == result.lr
    assert result.ema_momentum == 0.5 and result.mining.mined == 0  # no mining before start_iteration
    assert any(not torch.equal(v, before_student[k]) for k, v in student.state_dict().items())
    moved = [k for k, v in teacher.module.state_dict().items() if not torch.equal(v, before_teacher[k])]
    assert moved


def test_mining_counts_from_start_iteration_on():
    config, student, teacher, optimizer = _parts("mining.policy=add", "mining.source=truth")
    result = train_step(1, _batch(config.data.num_slices), student, teacher, optimizer, config)
    # the perfect teacher finds the one unlabeled lesion on each slice
    assert (result.mining.mined, result.mining.true) == (2, 2)
    assert result.teacher_seconds >= 0 and result.student_seconds > 0


def test_no_mining_with_policy_none():
    config, student, teacher, optimizer = _parts("mining.policy=none")
    result = train_step(5, _batch(config.data.num_slices), student, teacher, optimizer, config)
    assert result.mining.mined == 0


def test_a_non_finite_loss_stops_before_the_weights_change():
    config, student, teacher, optimizer = _parts("mining.policy=none")
    batch = _batch(config.data.num_slices)
    for sample in batch:
        sample.image[:] = float("nan")
    before = {k: v.clone() for k, v in student.named_parameters()}
    with pytest.raises(NonFiniteError, match=r"^step 7: the loss is not finite .*no checkpoint was written"):
        train_step(7, batch, student, teacher, optimizer, config)
    assert all(torch.equal(v, before[k]) for k, v in student.named_parameters())  # no optimiser step


def test_the_ignore_band_takes_unsure_teacher_boxes_out_of_the_background(monkeypatch):
    import uld.train.loop as loop

    seen = []
    real = loop.student_batch

    def recording(*args, **kwargs):
        images, targets = real(*args, **kwargs)
        seen.append((kwargs.get("uncertain"), targets))
        return images, targets

    monkeypatch.setattr(loop, "student_batch", recording)
    # an untrained teacher scores nothing >= 0.9 and plenty in [0.01, 0.9)
    config, student, teacher, optimizer = _parts("mining.policy=add", "mining.ignore_low=0.01")
    result = train_step(1, _batch(config.data.num_slices), student, teacher, optimizer, config)
    uncertain, targets = seen[-1]
    assert result.mining.mined == 0 and sum(len(b) for b in uncertain) > 0
    assert all(len(t["boxes"]) == len(s.boxes) for t, s in zip(targets, _batch(config.data.num_slices)))
    assert sum(len(t.get("ignore_boxes", [])) for t in targets) == sum(len(b) for b in uncertain)
    config, student, teacher, optimizer = _parts("mining.policy=add")  # off by default
    train_step(1, _batch(config.data.num_slices), student, teacher, optimizer, config)
    assert seen[-1][0] is None and not any("ignore_boxes" in t for t in seen[-1][1])


def test_a_lesion_labeled_on_a_nearby_slice_is_neither_mined_nor_background(monkeypatch):
    from dataclasses import replace

    import uld.train.loop as loop

    seen = []
    real = loop.student_batch

    def recording(*args, **kwargs):
        images, targets = real(*args, **kwargs)
        seen.append(targets)
        return images, targets

    monkeypatch.setattr(loop, "student_batch", recording)
    config, student, teacher, optimizer = _parts("mining.policy=add", "mining.source=truth")
    # the second slice is an unlabeled neighbour: its lesion is labeled on a slice nearby
    lesion, missing = [10, 10, 30, 30], [40, 40, 56, 56]
    first, second = _batch(config.data.num_slices)
    second = replace(second, truth=torch.tensor([lesion, missing], dtype=torch.float32),
                     nearby=torch.tensor([lesion], dtype=torch.float32))
    result = train_step(1, [first, second], student, teacher, optimizer, config)
    assert (result.mining.mined, result.mining.true) == (2, 2)  # not the nearby lesion
    ratio = seen[-1][1]["boxes"][0, 2] / missing[2]  # the step's resize ratio
    assert torch.allclose(seen[-1][1]["boxes"], torch.tensor([missing]) * ratio)
    assert torch.allclose(seen[-1][1]["ignore_boxes"], torch.tensor([lesion]) * ratio)
    assert "ignore_boxes" not in seen[-1][0]


def test_a_mirrored_student_image_carries_its_known_and_mined_boxes_with_it():
    from uld.train.loop import student_batch

    config, *_ = _parts("mining.policy=add")
    batch = _batch(config.data.num_slices)
    mined = [torch.tensor([[40.0, 40.0, 56.0, 56.0]]), torch.zeros((0, 4))]
    images, targets = student_batch(batch, mined, 1.0, config, flips=[True, False])
    assert torch.equal(images[0], batch[0].image.flip(-1)) and torch.equal(images[1], batch[1].image)
    # 64 pixels wide: x1, x2 -> 64 - x2, 64 - x1 for the known box and the mined one alike
    assert torch.equal(targets[0]["boxes"], torch.tensor([[34.0, 10.0, 54.0, 30.0], [8.0, 40.0, 24.0, 56.0]]))
    assert torch.equal(targets[1]["boxes"], batch[1].boxes)
    plain, _ = student_batch(batch, mined, 1.0, config)
    assert torch.equal(plain[0], batch[0].image)


def test_hflip_trains_a_step_and_is_range_checked():
    from uld.config import ConfigError

    config, student, teacher, optimizer = _parts("mining.policy=add", "mining.source=truth",
                                                 "train.hflip=1.0")
    result = train_step(2, _batch(config.data.num_slices), student, teacher, optimizer, config)
    assert result.mining.mined == 2 and torch.isfinite(torch.tensor(result.loss))
    with pytest.raises(ConfigError, match=r"train.hflip.*\[0, 1\]"):
        load_config("demo", ["train.hflip=1.5"])
