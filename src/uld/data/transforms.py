"""Box-aware image transforms (torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resized_size(height: int, width: int, ratio: float) -> tuple[int, int]:
    """Integer size of an image resized by ``ratio`` (at least one pixel)."""
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def resize_image(image: torch.Tensor, ratio: float) -> tuple[torch.Tensor, float, float]:
    """Bilinear resize of ``image`` (Tensor[C, H, W]) by ``ratio``.

    Returns the image and the exact scale factors ``(sx, sy)`` to apply to its boxes
    (rounding makes them differ slightly from ``ratio``).
    """
    height, width = image.shape[-2:]
    new_h, new_w = resized_size(height, width, ratio)
    if (new_h, new_w) == (height, width):
        return image, 1.0, 1.0
    out = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    return out, new_w / width, new_h / height


def scale_boxes(boxes_xyxy: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Boxes (Tensor[N, 4]) of an image scaled by ``sx`` along x and ``sy`` along y."""
    factor = torch.tensor([sx, sy, sx, sy], dtype=boxes_xyxy.dtype, device=boxes_xyxy.device)
    return boxes_xyxy * factor


def flip_boxes(boxes_xyxy: torch.Tensor, width: float) -> torch.Tensor:
    """Boxes (Tensor[N, 4]) of an image ``width`` pixels wide, mirrored left-right with it
    (``image.flip(-1)``): x1, x2 become width - x2, width - x1."""
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)
    return torch.stack([width - x2, y1, width - x1, y2], dim=-1)
