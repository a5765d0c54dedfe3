"""The ignore policy, hard negatives and regress switch inside the RPN and the RoI heads."""

from __future__ import annotations

import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, Matcher
from torchvision.models.detection.roi_heads import fastrcnn_loss

from uld.config import ModelConfig
from uld.mining.policy import targets_for_student
from uld.model.build import build_detector
from uld.model.heads import box_losses
from uld.model.sampling import (
    BACKGROUND,
    HARD_NEGATIVE,
    IGNORE,
    POSITIVE,
    POSITIVE_NO_REGRESSION,
    HardNegativeSampler,
    match_labels,
    soft_sampling_weights,
)

KNOWN = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
MINED = torch.tensor([[60.0, 60.0, 84.0, 84.0]])


def _grid(step: float = 4.0, size: float = 24.0, extent: float = 100.0) -> torch.Tensor:
    """Square candidates of one size on a grid."""
    xy = torch.arange(0.0, extent - size, step)
    x, y = torch.meshgrid(xy, xy, indexing="xy")
    return torch.stack([x, y, x + size, y + size], dim=-1).reshape(-1, 4)


def _labels(policy: str, matcher: Matcher, candidates: torch.Tensor, **kw) -> torch.Tensor:
    target = targets_for_student(KNOWN, MINED, policy, **kw)
    return match_labels(matcher, candidates, target)[0]


def test_policies_differ_exactly_on_candidates_near_the_mined_box():
    candidates = _grid()
    for matcher in (Matcher(0.7, 0.3, allow_low_quality_matches=True), Matcher(0.5, 0.5)):
        none = _labels("none", matcher, candidates)
        add = _labels("add", matcher, candidates)
        ignore = _labels("ignore", matcher, candidates)
        from torchvision.ops import box_iou
        near_mined = box_iou(candidates, MINED)[:, 0] >= matcher.low_threshold
        assert near_mined.any() and (~near_mined).any()
        # away from the mined box the three policies give the same labels
        assert torch.equal(none[~near_mined], add[~near_mined])
        assert torch.equal(none[~near_mined], ignore[~near_mined])
        # near it: background without mining, ignored under ignore, foreground-ish under add
        assert (none[near_mined] == BACKGROUND).all()
        assert (ignore[near_mined] == IGNORE).all()
        assert (add[near_mined] != BACKGROUND).all()
        assert (add[near_mined] == POSITIVE).any()
        # the known lesion is a positive under every policy
        for labels in (none, add, ignore):
            assert (labels == POSITIVE).sum() >= 1


def test_unregressed_mined_boxes_train_the_classifier_only():
    matcher = Matcher(0.5, 0.5)
    candidates = _grid()
    with_reg = _labels("add", matcher, candidates, regress_mined=True)
    without = _labels("add", matcher, candidates, regress_mined=False)
    assert (without == POSITIVE_NO_REGRESSION).any()
    assert torch.equal(with_reg >= 1, without >= 1)  # same foreground for the classifier
    assert not (with_reg == POSITIVE_NO_REGRESSION).any()


def test_sampler_matches_torchvision_without_hard_negatives_and_takes_them_first():
    labels = [torch.tensor([1, 0, 0, -1, 0, 1, 0, 0, 0, 0] * 30)]
    torch.manual_seed(3)
    ours = HardNegativeSampler(64, 0.25)(labels)
    torch.manual_seed(3)
    theirs = BalancedPositiveNegativeSampler(64, 0.25)(labels)
    assert all(torch.equal(a, b) for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1]))

    coded = labels[0].clone()
    hard = torch.arange(7, 300, 50)
    coded[hard] = HARD_NEGATIVE
    for seed in range(5):
        torch.manual_seed(seed)
        pos, neg = HardNegativeSampler(16, 0.25)([coded])
        assert neg[0][hard].all(), "every hard negative is drawn"
        assert int(pos[0].sum() + neg[0].sum()) == 16
        assert not (pos[0].bool() & (coded < 1)).any()
        assert not neg[0][coded == IGNORE].any()


def _detector(**settings) -> torch.nn.Module:
    config = ModelConfig(backbone="small", pretrained="", small_channels=(8, 8), out_channels=8,
                         representation_size=16, anchor_sizes=(16, 24), rpn_batch_size_per_image=64,
                         box_batch_size_per_image=32, **settings)
    torch.manual_seed(0)
    return build_detector(config, 3).train()


def test_without_optional_keys_the_losses_equal_torchvisions():
    model = _detector()
    images = [torch.rand(3, 64, 64)]
    target = {"boxes": torch.tensor([[10.0, 12.0, 34.0, 30.0]]), "labels": torch.tensor([1])}
    features = model.backbone(model.transform(images)[0].tensors)
    logits = torch.randn(32, 2)
    deltas = torch.randn(32, 8)
    labels = torch.randint(0, 2, (32,))
    targets = torch.randn(32, 4)
    ours = box_losses(logits, deltas, labels, targets)
    theirs = fastrcnn_loss(logits, deltas, [labels], [targets])
    assert torch.allclose(ours[0], theirs[0]) and torch.allclose(ours[1], theirs[1])
    torch.manual_seed(1)
    losses = model(images, [target])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier",
                           "loss_box_reg"}
    assert features.shape[1] == 8
    assert all(torch.isfinite(v) for v in losses.values())


def test_an_ignored_region_contributes_nothing_to_the_classification_losses():
    model = _detector()
    rpn = model.rpn
    image = torch.rand(3, 96, 96)
    anchors = _grid(step=4.0, size=24.0, extent=96.0)
    target = targets_for_student(KNOWN, MINED, "ignore")
    codes, _ = rpn.assign_targets_to_anchors([anchors], [target])
    ignored = codes[0] == IGNORE
    assert ignored.any()
    objectness = torch.zeros(anchors.shape[0], requires_grad=True)
    deltas = torch.zeros(anchors.shape[0], 4, requires_grad=True)
    reg_targets = torch.zeros(anchors.shape[0], 4)
    for seed in range(5):
        torch.manual_seed(seed)
        loss, _ = rpn.compute_loss(objectness, deltas, codes, [reg_targets])
        (grad,) = torch.autograd.grad(loss, objectness)
        assert (grad[ignored] == 0).all()
        assert (grad[~ignored] != 0).any()
    del image

    # the RoI head: proposals on the mined box never enter the classifier's sample
    heads = model.roi_heads
    proposals = [_grid(step=6.0, size=24.0, extent=96.0)]
    torch.manual_seed(0)
    sampled, labels, _ = heads.select_training_samples(proposals, [target])
    from torchvision.ops import box_iou
    on_mined = box_iou(sampled[0], MINED)[:, 0] >= 0.5
    assert not on_mined.any()
    assert (labels[0] != IGNORE).all()
    none_target = targets_for_student(KNOWN, MINED, "none")
    torch.manual_seed(0)
    sampled_none, _, _ = heads.select_training_samples(proposals, [none_target])
    assert (box_iou(sampled_none[0], MINED)[:, 0] >= 0.5).any()  # as background without it


def test_a_foreground_only_image_trains_its_boxes_and_no_background():
    model = _detector()
    hard = torch.tensor([[50.0, 50.0, 70.0, 74.0]])
    full = targets_for_student(KNOWN, MINED, "add", hard_negatives=hard)
    fg = targets_for_student(KNOWN, MINED, "add", hard_negatives=hard, background=False)
    for matcher in (Matcher(0.7, 0.3, allow_low_quality_matches=True), Matcher(0.5, 0.5)):
        candidates = _grid()
        with_bg = match_labels(matcher, candidates, full)[0]
        without = match_labels(matcher, candidates, fg)[0]
        # positives and hard negatives stay; every other background sample leaves the loss
        assert torch.equal(with_bg >= 1, without >= 1) and (without >= 1).any()
        assert torch.equal(with_bg == HARD_NEGATIVE, without == HARD_NEGATIVE)
        assert (with_bg == BACKGROUND).any() and not (without == BACKGROUND).any()
    torch.manual_seed(0)
    losses = model([torch.rand(3, 96, 96)], [fg])
    assert all(torch.isfinite(v) for v in losses.values())
    # a foreground-only image whose boxes all fell outside it samples nothing: zero losses
    empty = targets_for_student(torch.zeros(0, 4), torch.zeros(0, 4), "none", background=False)
    losses = model([torch.rand(3, 96, 96)], [empty])
    assert all(v.detach().item() == 0 for v in losses.values())
    sum(losses.values()).backward()


def test_hard_negatives_are_always_background_samples_in_both_stages():
    model = _detector()
    hard = torch.tensor([[50.0, 50.0, 70.0, 74.0]])
    target = targets_for_student(KNOWN, torch.zeros(0, 4), "none", hard_negatives=hard)
    from torchvision.ops import box_iou
    anchors = _grid(step=4.0, size=24.0, extent=96.0)
    codes, _ = model.rpn.assign_targets_to_anchors([anchors], [target])
    forced = box_iou(anchors, hard)[:, 0] >= 0.5
    assert forced.any() and (codes[0][forced] == HARD_NEGATIVE).all()
    for seed in range(5):
        torch.manual_seed(seed)
        _, neg = model.rpn.fg_bg_sampler(codes)
        assert neg[0][forced].all()
        torch.manual_seed(seed)
        proposals = [_grid(step=8.0, size=16.0, extent=96.0)]
        sampled, labels, _ = model.roi_heads.select_training_samples(proposals, [target])
        hits = box_iou(sampled[0], hard)[:, 0]
        assert (hits > 0.999).any(), "the hard negative box itself is a sampled proposal"
        assert (labels[0][hits >= 0.5] == HARD_NEGATIVE).all()
    torch.manual_seed(0)
    losses = model([torch.rand(3, 96, 96)], [target])
    assert all(torch.isfinite(v) for v in losses.values())


def test_regression_loss_leaves_out_unregressed_positives():
    labels = torch.tensor([POSITIVE, POSITIVE_NO_REGRESSION, BACKGROUND, HARD_NEGATIVE])
    logits = torch.zeros(4, 2)
    deltas = torch.zeros(4, 8)
    targets = torch.tensor([[0.0] * 4, [5.0] * 4, [7.0] * 4, [9.0] * 4])
    cls, box = box_losses(logits, deltas, labels, targets)
    assert box == 0.0  # only the first entry is regressed, and its target is met
    deltas[1, 4:] = 5.0
    targets[0] = 1.0
    _, box = box_losses(logits, deltas, labels, targets)
    expected = torch.nn.functional.smooth_l1_loss(
        torch.zeros(4), torch.ones(4), beta=1 / 9, reduction="sum") / 4
    assert torch.isclose(box, expected)
    # the classifier sees both positives as lesions and both negatives as background
    logits[:, 1] = torch.tensor([5.0, 5.0, -5.0, -5.0])
    cls, _ = box_losses(logits, torch.zeros(4, 8), labels, targets)
    assert cls < 0.01


def test_soft_sampling_weighs_background_by_its_overlap_with_known_boxes():
    known = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    proposals = torch.tensor([
        [10.0, 10.0, 30.0, 30.0],  # the lesion itself: positive
        [60.0, 60.0, 80.0, 80.0],  # far from it: maybe an unlabeled lesion
        [20.0, 10.0, 40.0, 30.0],  # half over it (IoU 1/3): a reliable hard negative
        [70.0, 10.0, 90.0, 30.0],  # far, but an explicit hard negative
        [26.0, 10.0, 46.0, 30.0],  # just touching (IoU 1/9)
    ])
    labels = torch.tensor([POSITIVE, BACKGROUND, BACKGROUND, HARD_NEGATIVE, BACKGROUND])
    weights = soft_sampling_weights(labels, proposals, known, 0.25)
    assert weights[0] == 1.0 and weights[3] == 1.0
    assert weights[1] == 0.25
    assert 0.99 < weights[2] < 1.0
    assert torch.isclose(weights[4], 1 - torch.exp(torch.tensor(-20.0 / 9)))
    assert torch.equal(soft_sampling_weights(labels, proposals, known, 1.0), torch.ones(5))
    no_boxes = soft_sampling_weights(labels, proposals, torch.zeros(0, 4), 0.0)
    assert torch.equal(no_boxes, torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0]))


def test_soft_sampling_only_takes_gradient_away_from_far_background():
    labels = torch.tensor([POSITIVE, BACKGROUND, BACKGROUND, HARD_NEGATIVE])
    logits = torch.tensor([[0.0, 1.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.5]])
    targets = torch.zeros(4, 4)
    plain, _ = box_losses(logits, torch.zeros(4, 8), labels, targets)
    ones, _ = box_losses(logits, torch.zeros(4, 8), labels, targets, torch.ones(4))
    assert torch.isclose(plain, ones)
    per = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 0, 0, 0]), reduction="none")
    weighted, _ = box_losses(logits, torch.zeros(4, 8), labels, targets,
                             torch.tensor([1.0, 0.25, 1.0, 1.0]))
    assert torch.isclose(weighted, (per[0] + 0.25 * per[1] + per[2] + per[3]) / 4)


def test_soft_sampling_trains_and_is_range_checked():
    import pytest

    from uld.config import ConfigError, load_config

    model = _detector(soft_sampling_floor=0.25)
    target = targets_for_student(KNOWN, torch.zeros(0, 4), "none")
    losses = model([torch.rand(3, 96, 96)], [target])
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ConfigError, match=r"^model.soft_sampling_floor = 1.5: must lie in \[0, 1\]"):
        load_config("demo", ["model.soft_sampling_floor=1.5"])
