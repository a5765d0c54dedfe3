"""``mining.contain_thresh``: the teacher's nested duplicates are not mined as extra lesions."""

import pytest
import torch
from torch import nn

from uld.config import MiningConfig
from uld.data.samples import Sample
from uld.mining.harvest import mine_samples

KNOWN = [10, 10, 30, 30]  # a labeled lesion
INSIDE = [14, 14, 24, 24]  # the teacher's smaller box inside it: IoU 0.25 with the label
OTHER = [40, 40, 50, 50]  # an unlabeled lesion elsewhere
TOUCHING = [30, 12, 40, 28]  # a distinct lesion touching the labeled one


class Teacher(nn.Module):
    def forward(self, images):
        boxes = torch.tensor([KNOWN, INSIDE, OTHER, TOUCHING], dtype=torch.float32)
        return [{"boxes": boxes, "scores": torch.tensor([0.99, 0.95, 0.93, 0.92])} for _ in images]


def _mined(**settings):
    sample = Sample(image=torch.zeros(3, 64, 64), boxes=torch.tensor([KNOWN], dtype=torch.float32),
                    truth=None, volume="v", z=3, complete=False)
    config = MiningConfig(tau=0.9, gt_nms_iou=0.3, **settings)
    (boxes, _), = mine_samples(Teacher(), [sample], config)
    return boxes.tolist()


def test_a_box_inside_a_labeled_lesion_is_mined_only_without_containment_suppression():
    assert _mined() == [INSIDE, OTHER, TOUCHING]  # off (1.0): today's behaviour
    assert _mined(contain_thresh=1.0, contain_area_ratio=0.2) == [INSIDE, OTHER, TOUCHING]
    assert _mined(contain_thresh=0.6, contain_area_ratio=0.2) == [OTHER, TOUCHING]


def test_a_floor_below_tau_also_returns_the_ignore_band_and_nothing_on_known_lesions():
    sample = Sample(image=torch.zeros(3, 64, 64), boxes=torch.tensor([KNOWN], dtype=torch.float32),
                    truth=None, volume="v", z=3, complete=False)

    class Unsure(nn.Module):
        def forward(self, images):
            boxes = torch.tensor([KNOWN, OTHER, TOUCHING, INSIDE], dtype=torch.float32)
            return [{"boxes": boxes, "scores": torch.tensor([0.7, 0.95, 0.6, 0.3])} for _ in images]

    config = MiningConfig(tau=0.9, gt_nms_iou=0.3)
    (boxes, scores), = mine_samples(Unsure(), [sample], config, floor=0.5)
    assert boxes.tolist() == [OTHER, TOUCHING] and scores.tolist() == pytest.approx([0.95, 0.6])
    (boxes, _), = mine_samples(Unsure(), [sample], config)  # the default floor is tau
    assert boxes.tolist() == [OTHER]
