"""The only place torchvision's Faster R-CNN is configured.

The detector is assembled from parts (STYLE.md, "parts in, not flags in"): a backbone that
returns one feature map, an anchor generator, torchvision's RPN and RoI heads, and a
transform that normalises and batches but does not resize (resizing is the training loop's
job: the student's random resize and the teacher's ratio 1.0 must be explicit).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import DenseNet121_Weights, densenet121
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from uld.config import ModelConfig
from uld.model.heads import LesionRoIHeads, LesionRPN


class NoResizeTransform(GeneralizedRCNNTransform):
    """Normalise and batch (padding to a multiple of 32) without resizing.

    Boxes therefore stay in the pixel frame of the images passed in, both for the targets
    and for the detections returned.

    forward(images, targets=None):
        images (list[FloatTensor[C, H, W]]). Returns an ``ImageList`` whose ``tensors``
        (FloatTensor[N, C, H', W'], H' and W' rounded up to ``size_divisible``, zero-padded)
        are bit for bit torchvision's, and the targets as given. Images of one shape (every
        teacher pass) are batched in one copy and normalised in place
        (:func:`normalize_batch`); torchvision normalises each image into a new tensor,
        zero-fills the batch and copies each image in: three passes more over the batch.
    """

    def resize(self, image, target=None):
        return image, target

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> tuple[ImageList, list[dict[str, torch.Tensor]] | None]:
        first = images[0] if images else None
        if first is None or first.dim() != 3 or not first.is_floating_point() \
                or any(image.shape != first.shape or image.dtype != first.dtype for image in images):
            return super().forward(images, targets)  # its checks and messages, mixed sizes
        batch = normalize_batch(images, self.image_mean, self.image_std, self.size_divisible)
        height, width = first.shape[-2:]
        targets = None if targets is None else [dict(t) for t in targets]  # as torchvision
        return ImageList(batch, [(int(height), int(width))] * len(images)), targets


def normalize_batch(
    images: list[torch.Tensor], mean: list[float], std: list[float], size_divisible: int = 32
) -> torch.Tensor:
    """Images of one shape, normalised and batched as torchvision's
    ``GeneralizedRCNNTransform`` does, in one copy.

    images (list[FloatTensor[C, H, W]], one shape); mean, std (C floats). Returns
    FloatTensor[N, C, H', W'] with H', W' rounded up to ``size_divisible``: ``(image - mean) /
    std`` in the top-left H x W, zero in the padding. The same two float operations per pixel
    as torchvision, so the values are identical to its.
    """
    first = images[0]
    channels, height, width = first.shape
    padded_h = math.ceil(height / size_divisible) * size_divisible
    padded_w = math.ceil(width / size_divisible) * size_divisible
    if (padded_h, padded_w) == (height, width):
        batch = torch.stack(images)
        region = batch
    else:
        batch = first.new_zeros((len(images), channels, padded_h, padded_w))
        region = batch[..., :height, :width]
        for i, image in enumerate(images):
            region[i].copy_(image)
    m = torch.as_tensor(mean, dtype=first.dtype, device=first.device)[:, None, None]
    s = torch.as_tensor(std, dtype=first.dtype, device=first.device)[:, None, None]
    region.sub_(m).div_(s)
    return batch


class LesionDetector(GeneralizedRCNN):
    """Faster R-CNN over 2.5D stacks, one class ("lesion").

    forward(images, targets=None):
        images (list[FloatTensor[S, H, W]]): windowed stacks in [0, 1].
        targets (list[dict]): ``boxes`` FloatTensor[N, 4] (x1, y1, x2, y2 pixels, N may be 0)
            and ``labels`` Int64Tensor[N] (all 1); optionally ``regress``, ``ignore_boxes`` and
            ``hard_negatives`` (``uld.model.sampling``).
        Training mode returns the four torchvision losses; eval mode returns per image
        ``boxes`` FloatTensor[K, 4], ``scores`` FloatTensor[K], ``labels`` Int64Tensor[K].
    """

    def __init__(
        self,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
        transform: GeneralizedRCNNTransform,
    ) -> None:
        super().__init__(backbone, rpn, roi_heads, transform)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)


def _conv_block(c_in: int, c_out: int, stride: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        _norm(norm, c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        _norm(norm, c_out),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(nn.Sequential):
    """A few conv blocks for CPU runs: stride 2 on every block but the last (stride 8 for 4)."""

    def __init__(
        self, in_channels: int, channels: tuple[int, ...], out_channels: int, norm: str = "group"
    ) -> None:
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c in enumerate(channels):
            layers.append(_conv_block(c_in, c, 2 if i < len(channels) - 1 else 1, norm))
            c_in = c
        layers.append(nn.Conv2d(c_in, out_channels, 1))
        super().__init__(*layers)
        self.out_channels = out_channels


def inflate_stem(weight_rgb: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A 3-channel conv kernel (O, 3, k, k) -> (O, in_channels, k, k) with the same response
    to a grey image: the RGB filters are summed and spread evenly over the new channels."""
    return weight_rgb.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels


_OLD_DENSE_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


IMAGENET = "imagenet"
"""``model.pretrained`` value that names torchvision's ImageNet DenseNet-121 weights."""


def pretrained_file(spec: str) -> Path:
    """Where the weights named by ``model.pretrained`` live.

    ``"imagenet"``: torchvision's ``DenseNet121_Weights.IMAGENET1K_V1`` in the torch hub cache
    (``$TORCH_HOME/hub/checkpoints/densenet121-a639ec97.pth``, where ``torchvision`` puts it
    when it downloads); anything else: a path to a state dict file.
    """
    if spec == IMAGENET:
        name = Path(urlparse(DenseNet121_Weights.IMAGENET1K_V1.url).path).name
        return Path(torch.hub.get_dir()) / "checkpoints" / name
    return Path(spec).expanduser()


def load_densenet121_weights(spec: str | Path) -> dict[str, torch.Tensor]:
    """Read ImageNet DenseNet-121 weights: ``"imagenet"`` (torch cache) or a file path.

    Nothing is downloaded and nothing falls back to random weights: a missing file raises
    FileNotFoundError saying where to put it and where to get it.
    """
    path = pretrained_file(str(spec))
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights {path} not found: download torchvision's DenseNet-121 ImageNet "
            f"weights ({DenseNet121_Weights.IMAGENET1K_V1.url}) and put the file there (or name "
            "another copy with model.pretrained=PATH), or set model.pretrained='' to start from "
            "random weights on purpose"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download, an HTML error page saved as .pth, ...
        raise ValueError(f"{path}: not a readable PyTorch state dict ({exc})") from exc
    # torchvision's published file names dense-layer parts 'norm.1' where the model has 'norm1'.
    return {_OLD_DENSE_KEY.sub(r"\1\2", k): v for k, v in state.items()}


class DenseNetTrunk(nn.Sequential):
    """DenseNet-121 truncated after dense block 3 (as MULAN), 9-channel stem, stride 16,
    then a 1x1 projection to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, pretrained: str = "") -> None:
        net = densenet121(weights=None)
        if pretrained:
            net.load_state_dict(load_densenet121_weights(pretrained))
        f = net.features
        stem = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            stem.weight.copy_(inflate_stem(f.conv0.weight, in_channels))
        super().__init__(
            stem, f.norm0, f.relu0, f.pool0,
            f.denseblock1, f.transition1, f.denseblock2, f.transition2, f.denseblock3,
            nn.Conv2d(1024, out_channels, 1),
        )
        self.out_channels = out_channels


def build_backbone(config: ModelConfig, in_channels: int) -> nn.Module:
    """The feature extractor named by ``config.backbone``; it has ``out_channels``."""
    if config.backbone == "small":
        return SmallBackbone(
            in_channels, config.small_channels, config.out_channels, config.small_norm
        )
    if config.backbone == "densenet121":
        return DenseNetTrunk(in_channels, config.out_channels, config.pretrained)
    raise ValueError(f"unknown backbone {config.backbone!r}")


def build_detector(config: ModelConfig, in_channels: int) -> LesionDetector:
    """Faster R-CNN for one class over ``in_channels``-slice stacks, as ``config`` says."""
    backbone = build_backbone(config, in_channels)
    anchors = AnchorGenerator(
        sizes=(tuple(config.anchor_sizes),), aspect_ratios=(tuple(config.aspect_ratios),)
    )
    rpn = LesionRPN(
        anchors,
        RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=config.rpn_batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_top_n={
            "training": config.rpn_pre_nms_top_n_train,
            "testing": config.rpn_pre_nms_top_n_test,
        },
        post_nms_top_n={
            "training": config.rpn_post_nms_top_n_train,
            "testing": config.rpn_post_nms_top_n_test,
        },
        nms_thresh=0.7,
    )
    roi_heads = LesionRoIHeads(
        box_roi_pool=MultiScaleRoIAlign(
            featmap_names=["0"], output_size=7, sampling_ratio=config.roi_sampling_ratio
        ),
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, config.representation_size),
        box_predictor=FastRCNNPredictor(config.representation_size, num_classes=2),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=config.box_batch_size_per_image,
        positive_fraction=0.25,
        bbox_reg_weights=None,
        score_thresh=config.box_score_thresh,
        nms_thresh=config.box_nms_thresh,
        detections_per_img=config.detections_per_img,
        soft_sampling_floor=config.soft_sampling_floor,
    )
    transform = NoResizeTransform(
        min_size=1,
        max_size=1,
        image_mean=[config.image_mean] * in_channels,
        image_std=[config.image_std] * in_channels,
    )
    return LesionDetector(backbone, rpn, roi_heads, transform)
