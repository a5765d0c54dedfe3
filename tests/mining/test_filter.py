import torch

from uld.mining.diagnostics import mining_counts
from uld.mining.filter import confident, gt_nms, mine
from uld.mining.policy import targets_for_student

GT = torch.tensor([[0.0, 0.0, 10.0, 10.0]])


def test_gt_nms_drops_only_boxes_above_the_threshold():
    preds = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],   # IoU 1.0 -> known lesion, dropped
        [0.0, 0.0, 10.0, 13.0],   # IoU 100/130 = 0.769 -> dropped
        [0.0, 0.0, 10.0, 14.3],   # IoU 100/143 = 0.699 -> kept
        [50.0, 50.0, 60.0, 60.0],  # no overlap -> kept
    ])
    assert gt_nms(preds, GT, 0.7).tolist() == [False, False, True, True]


def test_gt_contain_also_drops_parts_of_and_boxes_around_a_known_lesion():
    preds = torch.tensor([
        [0.0, 0.0, 4.0, 4.0],       # inside the known box: IoU 0.16, all of it inside
        [-10.0, -10.0, 15.0, 15.0],  # around it: IoU 0.16, all of the known box inside it
        [8.0, 8.0, 14.0, 14.0],     # touching a corner: 4 of its 36 pixels inside
        [20.0, 0.0, 30.0, 10.0],    # beside it
    ])
    assert gt_nms(preds, GT, 0.3).tolist() == [True, True, True, True]  # IoU alone keeps all
    assert gt_nms(preds, GT, 0.3, contain_threshold=0.5).tolist() == [False, False, True, True]
    assert gt_nms(preds, GT, 0.3, contain_threshold=1.0).tolist() == [True, True, True, True]
    boxes, _ = mine(preds, torch.ones(4), GT, tau=0.9, gt_nms_iou=0.3, gt_contain=0.5)
    assert boxes.tolist() == preds[2:].tolist()


def test_without_known_boxes_everything_passes_gt_nms():
    preds = torch.rand(3, 4) * 5 + torch.tensor([0, 0, 6, 6])
    assert gt_nms(preds, torch.zeros((0, 4)), 0.7).all()


def test_confidence_filter_is_inclusive():
    assert confident(torch.tensor([0.89, 0.9, 0.95]), 0.9).tolist() == [False, True, True]


def test_mine_combines_both_filters():
    preds = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [30, 30, 40, 40.0]])
    scores = torch.tensor([0.99, 0.95, 0.5])
    boxes, kept = mine(preds, scores, GT, tau=0.9, gt_nms_iou=0.7)
    assert boxes.tolist() == [[50.0, 50.0, 60.0, 60.0]] and kept.tolist() == [0.949999988079071]


def test_policies_differ_exactly_in_the_mined_boxes():
    known = torch.tensor([[1.0, 1.0, 5.0, 5.0]])
    mined = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    none = targets_for_student(known, mined, "none")
    add = targets_for_student(known, mined, "add")
    assert none["boxes"].tolist() == known.tolist()
    assert add["boxes"].tolist() == [[1.0, 1.0, 5.0, 5.0], [10.0, 10.0, 20.0, 20.0]]
    assert add["labels"].tolist() == [1, 1] and add["labels"].dtype == torch.int64
    empty = targets_for_student(torch.zeros((0, 4)), torch.zeros((0, 4)), "add")
    assert empty["boxes"].shape == (0, 4)


def test_mining_counts():
    truth = torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30], [40.0, 40, 50, 50]])
    known = truth[:1]
    # on a missing lesion, on nothing, and a shifted copy of the known lesion (IoU 100/132)
    mined = torch.tensor([[20.0, 20, 30, 31], [60.0, 60, 70, 70], [0.0, 0, 10, 13.2]])
    c = mining_counts(mined, known, truth)
    assert (c.mined, c.true, c.missing, c.found) == (3, 1, 2, 1)
    assert c.precision == 1 / 3 and c.recall == 0.5


def test_consistency_keeps_boxes_the_neighbouring_stacks_confirm():
    from uld.mining.filter import supported

    mined = torch.tensor([[10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]])
    above = (torch.tensor([[11.0, 10.0, 30.0, 31.0], [50.0, 50.0, 60.0, 60.0]]), torch.tensor([0.8, 0.3]))
    below = (torch.tensor([[9.0, 9.0, 29.0, 29.0]]), torch.tensor([0.6]))
    assert supported(mined, [above, below], 0.5, 0.5, 2).tolist() == [True, False]
    assert supported(mined, [above, below], 0.2, 0.5, 1).tolist() == [True, True]
    assert supported(mined, [above, below], 0.7, 0.5, 2).tolist() == [False, False]
    assert supported(mined[:0], [above, below], 0.5, 0.5, 1).shape == (0,)


def test_context_stack_holds_the_sample_and_its_neighbouring_stacks(tmp_path):
    from uld.config import load_config
    from uld.data.samples import KeySliceDataset
    from uld.data.sources import open_training_data
    from uld.data.synth import SynthConfig, write_synthetic_dataset

    write_synthetic_dataset(tmp_path, SynthConfig(n_train=2, n_val=0, n_test=0, size=48,
                                                  depth=(10, 12), seed=1), progress=False)
    config = load_config("demo", [f"data.root={tmp_path}"])
    data = open_training_data(config.data)
    plain = KeySliceDataset(data.store, data.labels, config.data)
    wide = KeySliceDataset(data.store, data.labels, config.data, context=True)
    a, b = plain[0], wide[0]
    assert b.context.shape[0] == a.image.shape[0] + 2
    torch.testing.assert_close(b.image, a.image)
    assert torch.equal(b.context[1:-1], b.image)


def test_gt_contain_is_range_checked():
    import pytest

    from uld.config import Config, ConfigError, override

    with pytest.raises(ConfigError, match=r"^mining.gt_contain = 1.5: must lie in \[0, 1\]$"):
        override(Config(), "mining.gt_contain=1.5")


def test_uncertain_boxes_leave_the_background_under_every_policy():
    known = torch.tensor([[1.0, 1.0, 5.0, 5.0]])
    mined = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    unsure = torch.tensor([[30.0, 30.0, 40.0, 40.0]])
    add = targets_for_student(known, mined, "add", uncertain_boxes=unsure)
    assert add["boxes"].tolist() == [*known.tolist(), *mined.tolist()]
    assert add["ignore_boxes"].tolist() == unsure.tolist()
    ignore = targets_for_student(known, mined, "ignore", uncertain_boxes=unsure)
    assert ignore["boxes"].tolist() == known.tolist()
    assert ignore["ignore_boxes"].tolist() == [*mined.tolist(), *unsure.tolist()]
    assert "ignore_boxes" not in targets_for_student(known, mined, "add",
                                                     uncertain_boxes=torch.zeros((0, 4)))


def test_boxes_labeled_nearby_leave_the_background_under_every_policy():
    known = torch.tensor([[1.0, 1.0, 5.0, 5.0]])
    mined = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    nearby = torch.tensor([[30.0, 30.0, 40.0, 40.0]])
    for policy in ("none", "add"):
        target = targets_for_student(known, mined, policy, nearby_boxes=nearby)
        assert target["ignore_boxes"].tolist() == nearby.tolist()
    ignore = targets_for_student(known, mined, "ignore", nearby_boxes=nearby)
    assert ignore["ignore_boxes"].tolist() == [*mined.tolist(), *nearby.tolist()]


def test_ignore_low_is_range_checked():
    import pytest

    from uld.config import Config, ConfigError, override

    with pytest.raises(ConfigError, match=r"^mining.ignore_low = -0.1: must lie in \[0, 1\]$"):
        override(Config(), "mining.ignore_low=-0.1")
