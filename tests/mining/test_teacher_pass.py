"""The teacher pass's speed-ups (issue 12) mine exactly what the plain pipeline mined.

The reference below is ``mine_samples`` as it was before them: the teacher under
``torch.no_grad`` with torchvision's own normalise-and-batch, containment suppression on all of
its boxes, then GT NMS and the confidence filter. Each change is checked alone against it, and
all of them together through ``mine_samples``, on a tiny detector trained for a few dozen steps
so that its scores spread on both sides of ``tau`` as a real teacher's do.
"""

import copy

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from uld.config import MiningConfig, load_config
from uld.data.samples import Sample
from uld.infer.suppress import contained_keep
from uld.mining.filter import mine, supported
from uld.mining.harvest import confident_only, mine_samples
from uld.model.build import build_detector

SIZE = 64
SETTINGS = {  # the demo's filters, tau lowered so that the tiny teacher mines a few boxes
    "demo": dict(tau=0.6, gt_nms_iou=0.3, gt_contain=0.5, contain_thresh=0.3),
    "no_containment": dict(tau=0.6, gt_nms_iou=0.3),
    "consistency": dict(tau=0.6, gt_nms_iou=0.3, gt_contain=0.5, contain_thresh=0.3,
                        consistency_neighbours=2, consistency_score=0.5, consistency_iou=0.7),
}


class TorchvisionTransform(GeneralizedRCNNTransform):
    """The detector's transform before issue 12: torchvision's normalise and batch."""

    def resize(self, image, target=None):
        return image, target


def _scene(g: torch.Generator, slices: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand(slices, SIZE, SIZE, generator=g) * 0.3
    boxes = []
    for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
        r = int(torch.randint(4, 9, (1,), generator=g))
        cx, cy = (int(v) for v in torch.randint(r, SIZE - r, (2,), generator=g))
        image[:, cy - r:cy + r, cx - r:cx + r] += 0.6
        boxes.append([cx - r, cy - r, cx + r, cy + r])
    return image, torch.tensor(boxes, dtype=torch.float32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny teacher's scores, and so which filters it exercises, depend on the thread count
    (float sums in another order): one thread, as the guard test was checked with."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    """A tiny detector after 40 AdamW steps on bright squares (under a second)."""
    config = load_config("demo", ["model.small_channels=[8, 16]", "model.out_channels=16",
                                  "model.representation_size=32", "model.anchor_sizes=[8, 16]"])
    torch.manual_seed(0)
    model = build_detector(config.model, 9).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        scenes = [_scene(g) for _ in range(2)]
        targets = [{"boxes": b, "labels": torch.ones(len(b), dtype=torch.int64)} for _, b in scenes]
        loss = sum(model([image for image, _ in scenes], targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def batch() -> list[Sample]:
    """Eight slices, the first lesion of each labeled, one volume complete; with context."""
    g = torch.Generator().manual_seed(5)
    samples = []
    for i in range(8):
        context, boxes = _scene(g, slices=11)
        samples.append(Sample(image=context[1:-1].clone(), boxes=boxes[:1], truth=boxes,
                              volume=f"v{i}", z=i, complete=i == 3, context=context))
    return samples


def _with_torchvision_transform(model: torch.nn.Module) -> torch.nn.Module:
    old = copy.deepcopy(model)
    t = model.transform
    old.transform = TorchvisionTransform(t.min_size, t.max_size, t.image_mean, t.image_std)
    return old


def _reference(teacher, batch, config, grad_mode=torch.no_grad, prefilter=False):
    """``mine_samples`` before issue 12 (``grad_mode`` and ``prefilter`` switch one change on)."""
    with grad_mode():
        predictions = teacher([s.image for s in batch])
        mined = []
        for sample, p in zip(batch, predictions):
            boxes, scores = p["boxes"], p["scores"]
            if sample.complete:
                mined.append((boxes[:0], scores[:0]))
                continue
            if prefilter:
                boxes, scores = confident_only(boxes, scores, config.tau)
            if config.contain_thresh < 1.0:
                keep = contained_keep(boxes, scores, config.contain_thresh, config.contain_area_ratio)
                boxes, scores = boxes[keep], scores[keep]
            mined.append(mine(boxes, scores, sample.boxes, config.tau, config.gt_nms_iou,
                              config.gt_contain))
        if config.consistency_neighbours:
            todo = [i for i, (b, _) in enumerate(mined) if len(b)]
            around = teacher([batch[i].context[:-2] for i in todo]
                             + [batch[i].context[2:] for i in todo])
            for j, i in enumerate(todo):
                neighbours = [(around[j]["boxes"], around[j]["scores"]),
                              (around[j + len(todo)]["boxes"], around[j + len(todo)]["scores"])]
                keep = supported(mined[i][0], neighbours, config.consistency_score,
                                 config.consistency_iou, config.consistency_neighbours)
                mined[i] = (mined[i][0][keep], mined[i][1][keep])
        return [(b.clone(), s.clone()) for b, s in mined]


def _assert_identical(got, expected) -> None:
    assert len(got) == len(expected)
    for (boxes, scores), (ref_boxes, ref_scores) in zip(got, expected):
        assert torch.equal(boxes, ref_boxes)
        assert torch.equal(scores, ref_scores)


def test_the_teacher_exercises_every_filter(teacher, batch):
    """Else the comparisons below would prove little: weak and confident boxes, nested
    duplicates, boxes on known lesions, boxes without support in the neighbouring stacks, and
    boxes that are mined."""
    config = MiningConfig(**SETTINGS["demo"])
    with torch.no_grad():
        predictions = teacher([s.image for s in batch])
    scores = torch.cat([p["scores"] for p in predictions])
    assert (scores < config.tau).sum() >= 10 and (scores >= config.tau).sum() >= 5
    nested = sum(int((~contained_keep(p["boxes"], p["scores"], config.contain_thresh)).sum())
                 for p in predictions)
    assert nested >= 1
    mined = _reference(_with_torchvision_transform(teacher), batch, config)
    n_mined = sum(len(b) for b, _ in mined)
    assert n_mined >= 3
    unfiltered = _reference(_with_torchvision_transform(teacher), batch,
                            MiningConfig(tau=config.tau, gt_nms_iou=1.0))
    assert sum(len(b) for b, _ in unfiltered) > n_mined  # GT NMS and suppression took some
    consistent = _reference(_with_torchvision_transform(teacher), batch,
                            MiningConfig(**SETTINGS["consistency"]))
    assert 0 < sum(len(b) for b, _ in consistent) < n_mined  # the 3D filter took some


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_inference_mode_mines_the_same(teacher, batch, setting):
    config, old = MiningConfig(**SETTINGS[setting]), _with_torchvision_transform(teacher)
    _assert_identical(_reference(old, batch, config, grad_mode=torch.inference_mode),
                      _reference(old, batch, config))


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_dropping_boxes_below_tau_first_mines_the_same(teacher, batch, setting):
    config, old = MiningConfig(**SETTINGS[setting]), _with_torchvision_transform(teacher)
    _assert_identical(_reference(old, batch, config, prefilter=True), _reference(old, batch, config))


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_the_one_copy_batching_mines_the_same(teacher, batch, setting):
    config, old = MiningConfig(**SETTINGS[setting]), _with_torchvision_transform(teacher)
    _assert_identical(_reference(teacher, batch, config), _reference(old, batch, config))


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_mine_samples_mines_what_the_plain_pipeline_mined(teacher, batch, setting):
    config = MiningConfig(**SETTINGS[setting])
    mined = mine_samples(teacher, batch, config)
    _assert_identical(mined, _reference(_with_torchvision_transform(teacher), batch, config))
    # ordinary tensors: the student's targets are built from them outside inference mode
    assert not any(b.is_inference() or s.is_inference() for b, s in mined)
    mined[0][0].mul_(1.0)  # in place outside inference mode: allowed
