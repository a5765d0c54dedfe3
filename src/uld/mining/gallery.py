"""A picture of mined lesions, in the manner of the paper's Fig. 3."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from uld.atomic import atomic_path
from uld.config import Config
from uld.data.samples import KeySliceDataset
from uld.mining.filter import mine

DISPLAY_HU = (-160.0, 240.0)


def _draw(ax, boxes: torch.Tensor, color: str, style: str = "-") -> None:
    for x1, y1, x2, y2 in boxes.tolist():
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                               linewidth=1.2, linestyle=style))


@torch.no_grad()
def mined_gallery(
    teacher: nn.Module,
    dataset: KeySliceDataset,
    config: Config,
    path: str | Path,
    count: int = 8,
    max_samples: int = 400,
) -> int:
    """Mine with ``teacher`` over the first ``max_samples`` training slices and draw up to
    ``count`` slices that gained mined boxes: labeled boxes green, mined boxes blue, and (when
    the dataset knows them) the unlabeled true lesions dashed white. Returns how many were drawn.
    """
    teacher.eval()
    found = []
    for index in range(min(len(dataset), max_samples)):
        sample = dataset[index]
        pred = teacher([sample.image])[0]
        boxes, scores = mine(pred["boxes"], pred["scores"], sample.boxes,
                             config.mining.tau, config.mining.gt_nms_iou)
        if len(boxes):
            found.append((sample, boxes, scores))
        if len(found) == count:
            break
    columns = 4
    rows = max(1, -(-len(found) // columns))
    fig = Figure(figsize=(3 * columns, 3 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    centre = config.data.num_slices // 2
    low, high = config.data.window_hu  # show a soft-tissue window (-160..240 HU) of the input
    shown = ((DISPLAY_HU[0] - low) / (high - low), (DISPLAY_HU[1] - low) / (high - low))
    for ax, (sample, boxes, scores) in zip(axes.flat, found):
        ax.imshow(sample.image[centre].numpy(), cmap="gray", vmin=shown[0], vmax=shown[1])
        if sample.truth is not None:
            _draw(ax, sample.truth, "white", "--")
        _draw(ax, sample.boxes, "lime")
        _draw(ax, boxes, "deepskyblue")
        ax.set_title(f"{sample.volume} z={sample.z}\nmined {len(boxes)}, "
                     f"max score {float(scores.max()):.2f}", fontsize=8)
    if not found:
        axes.flat[0].text(0.5, 0.5, "no box mined", ha="center", va="center")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    return len(found)
