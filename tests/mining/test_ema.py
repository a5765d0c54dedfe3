import pytest
import torch
from torch import nn

from uld.mining.ema import EMATeacher, ema_decay, unwrap


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.bn = nn.BatchNorm1d(1)


def test_update_is_the_documented_average():
    student = Toy()
    teacher = EMATeacher(student, momentum=0.9)
    before = teacher.module.lin.weight.clone()
    with torch.no_grad():
        student.lin.weight.add_(1.0)
        student.bn.num_batches_tracked.fill_(7)
        student.bn.running_mean.fill_(2.0)
    teacher.update(student)
    expected = 0.9 * before + 0.1 * student.lin.weight
    assert torch.allclose(teacher.module.lin.weight, expected)
    assert int(teacher.module.bn.num_batches_tracked) == 7  # integer buffer copied
    assert torch.allclose(teacher.module.bn.running_mean, torch.tensor([0.2]))  # float averaged


def test_teacher_has_no_gradients_and_stays_in_eval_mode():
    teacher = EMATeacher(Toy().train())
    assert not teacher.module.training
    assert not any(p.requires_grad for p in teacher.module.parameters())


def test_warmup_ramp():
    assert ema_decay(0.999, 0, warmup=True) == 0.0
    assert ema_decay(0.999, 1, warmup=True) == 0.5
    assert ema_decay(0.999, 10_000, warmup=True) == 0.999
    assert ema_decay(0.999, 0, warmup=False) == 0.999


def test_first_warmup_update_copies_the_student():
    student = Toy()
    teacher = EMATeacher(student, 0.99, warmup=True)
    with torch.no_grad():
        student.lin.weight.mul_(3.0)
    teacher.update(student)
    assert torch.equal(teacher.module.lin.weight, student.lin.weight)


def test_state_dict_round_trip_and_unwrap():
    student = Toy()
    a = EMATeacher(student, 0.5)
    a.update(student)
    b = EMATeacher(Toy(), 0.5)
    b.load_state_dict(a.state_dict())
    assert b.updates == 1 and torch.equal(b.module.lin.weight, a.module.lin.weight)
    wrapped = nn.DataParallel(student)
    assert unwrap(wrapped) is student


def test_momentum_range():
    with pytest.raises(ValueError):
        EMATeacher(Toy(), momentum=1.0)
