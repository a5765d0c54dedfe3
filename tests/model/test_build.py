import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from uld.config import load_config
from uld.model.build import build_detector, inflate_stem, load_densenet121_weights, pretrained_file


def _tiny():
    return load_config("demo", ["model.small_channels=[8, 16]", "model.out_channels=16",
                                "model.representation_size=32"]).model


def _target(boxes):
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": b, "labels": torch.ones(len(b), dtype=torch.int64)}


def test_losses_finite_with_negative_images():
    torch.manual_seed(0)
    model = build_detector(_tiny(), 9).train()
    images = [torch.rand(9, 64, 64), torch.rand(9, 64, 64)]
    losses = model(images, [_target([[10, 10, 30, 30]]), _target([])])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    losses = model(images, [_target([]), _target([])])
    assert all(torch.isfinite(v) for v in losses.values())


def test_detections_stay_in_the_input_frame():
    model = build_detector(_tiny(), 9).eval()
    with torch.no_grad():
        out = model([torch.rand(9, 48, 80)])
    boxes = out[0]["boxes"]
    assert boxes.shape[1] == 4
    if len(boxes):
        assert float(boxes[:, 2].max()) <= 80 and float(boxes[:, 3].max()) <= 48


def test_densenet_trunk_takes_nine_slices():
    cfg = load_config(None, ["model.pretrained=", "model.out_channels=32",
                             "model.representation_size=32"]).model
    model = build_detector(cfg, 9).eval()
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 9, 64, 64))
    assert feats.shape == (1, 32, 4, 4)  # stride 16 after dense block 3


def test_inflated_stem_answers_a_grey_image_like_the_rgb_one():
    w = torch.randn(4, 3, 7, 7)
    grey = torch.rand(1, 1, 7, 7)
    rgb = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), w)
    nine = torch.nn.functional.conv2d(grey.repeat(1, 9, 1, 1), inflate_stem(w, 9))
    assert torch.allclose(rgb, nine, atol=1e-5)


def test_missing_pretrained_weights_fail_loudly(tmp_path):
    with pytest.raises(FileNotFoundError, match="densenet121-a639ec97.pth"):
        load_densenet121_weights(tmp_path / "missing.pth")
    cfg = load_config(None, [f"model.pretrained={tmp_path / 'missing.pth'}"]).model
    with pytest.raises(FileNotFoundError, match="put the file there"):
        build_detector(cfg, 9)


def test_pretrained_weights_are_loaded_and_inflated(tmp_path):
    from torchvision.models import densenet121

    reference = densenet121(weights=None)
    # the published file uses the old 'norm.1' key names and has no num_batches_tracked
    state = {k.replace("norm1", "norm.1").replace("conv2", "conv.2"): v
             for k, v in reference.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "densenet121.pth")
    cfg = load_config(None, [f"model.pretrained={tmp_path / 'densenet121.pth'}",
                             "model.out_channels=32", "model.representation_size=32"]).model
    model = build_detector(cfg, 9)
    trunk = model.backbone
    assert torch.equal(trunk[0].weight, inflate_stem(reference.features.conv0.weight, 9))
    assert torch.equal(trunk[4].denselayer1.norm1.weight,
                       reference.features.denseblock1.denselayer1.norm1.weight)


def test_imagenet_weights_come_from_the_torch_cache(tmp_path, monkeypatch):
    from torchvision.models import densenet121

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints" / "densenet121-a639ec97.pth"
    assert pretrained_file("imagenet") == cache
    cfg = load_config(None, ["model.out_channels=32", "model.representation_size=32"]).model
    assert cfg.pretrained == "imagenet"  # the paper's start is the default
    with pytest.raises(FileNotFoundError, match=r"hub/checkpoints/densenet121-a639ec97.pth not found"):
        build_detector(cfg, 9)
    cache.parent.mkdir(parents=True)
    cache.write_text("<html>not a checkpoint</html>")
    with pytest.raises(ValueError, match=r"not a readable PyTorch state dict"):
        build_detector(cfg, 9)
    torch.save(densenet121(weights=None).state_dict(), cache)
    assert build_detector(cfg, 9).backbone.out_channels == 32



class _TorchvisionBatching(GeneralizedRCNNTransform):
    """torchvision's normalise and batch, without resizing (the transform before issue 12)."""

    def resize(self, image, target=None):
        return image, target


@pytest.mark.parametrize("shapes", [
    [(9, 64, 64)] * 3,  # the teacher's pass: one shape, a multiple of 32
    [(9, 70, 50)] * 2,  # one shape, padded (the student's resized batch)
    [(9, 64, 64), (9, 70, 50)],  # mixed: torchvision's own path
])
def test_batching_is_torchvision_bit_for_bit(shapes):
    torch.manual_seed(0)
    transform = build_detector(_tiny(), 9).transform
    reference = _TorchvisionBatching(1, 1, transform.image_mean, transform.image_std)
    images = [torch.rand(*shape) for shape in shapes]
    inputs = [image.clone() for image in images]
    targets = [_target([[1, 2, 10, 12]]) for _ in images]
    got, got_targets = transform(images, targets)
    expected, expected_targets = reference(inputs, targets)
    assert torch.equal(got.tensors, expected.tensors)
    assert got.image_sizes == expected.image_sizes
    assert all(torch.equal(i, r) for i, r in zip(images, inputs))  # inputs left as they were
    assert all(g is not t and g.keys() == t.keys() for g, t in zip(got_targets, targets))
    assert all(torch.equal(g["boxes"], e["boxes"]) for g, e in zip(got_targets, expected_targets))
    assert transform(images)[1] is None
