"""A picture of mined lesions, in the manner of the paper's Fig. 3."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from uld.atomic import atomic_path
from uld.config import Config
from uld.data.samples import KeySliceDataset
from uld.data.stack import REVIEW_WINDOW_HU
from uld.mining.harvest import MinedSlice


def _draw(ax, boxes: torch.Tensor, color: str, style: str = "-") -> None:
    for x1, y1, x2, y2 in boxes.tolist():
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                               linewidth=1.2, linestyle=style))


def mined_gallery(
    dataset: KeySliceDataset,
    mined: Sequence[MinedSlice],
    config: Config,
    path: str | Path,
    count: int = 8,
) -> int:
    """Draw up to ``count`` training slices that gained mined boxes (the most confident, one
    per volume): labeled boxes green, mined boxes blue with their scores, and (when the
    dataset knows them) every true lesion dashed white. Returns how many were drawn."""
    chosen, volumes = [], set()
    for m in sorted(mined, key=lambda m: -float(m.scores.max())):
        if m.volume not in volumes:
            chosen.append(m)
            volumes.add(m.volume)
        if len(chosen) == count:
            break
    found = [(dataset[m.index], m.boxes, m.scores) for m in chosen]
    columns = 4
    rows = max(1, -(-len(found) // columns))
    fig = Figure(figsize=(3 * columns, 3 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    centre = config.data.num_slices // 2
    low, high = config.data.window_hu  # show a soft-tissue window (-160..240 HU) of the input
    shown = ((REVIEW_WINDOW_HU[0] - low) / (high - low), (REVIEW_WINDOW_HU[1] - low) / (high - low))
    for ax, (sample, boxes, scores) in zip(axes.flat, found):
        ax.imshow(sample.image[centre].numpy(), cmap="gray", vmin=shown[0], vmax=shown[1])
        if sample.truth is not None:
            _draw(ax, sample.truth, "white", "--")
        _draw(ax, sample.boxes, "lime")
        _draw(ax, boxes, "deepskyblue")
        for (x1, y1, _, _), score in zip(boxes.tolist(), scores.tolist()):
            ax.text(x1, y1 - 1, f"{score:.2f}", color="deepskyblue", fontsize=6)
        ax.set_title(f"{sample.volume} z={sample.z}\nmined {len(boxes)}, "
                     f"max score {float(scores.max()):.2f}", fontsize=8)
    if not found:
        axes.flat[0].text(0.5, 0.5, "no box mined", ha="center", va="center")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    return len(found)
