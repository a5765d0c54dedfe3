"""Tables shaped like the paper's Table I (markdown)."""

from __future__ import annotations

from collections.abc import Sequence

from uld.eval.p3d import P3DResult

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def results_table(rows: Sequence[tuple[str, bool, bool, P3DResult]]) -> str:
    """Markdown table: method | R | P+ | sensitivity (%) at 0.125..8 FPs/volume | AVG | AP.

    Each row is ``(method, uses official labels R, uses mined lesions P+, result)``.
    """
    header = ["method", "R", "P+", *[f"{f:g}" for f in FP_RATES], "AVG", "AP"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, official, mined, result in rows:
        sens = [100 * result.sensitivity[f] for f in FP_RATES]
        cells = [name, "x" if official else "", "x" if mined else "",
                 *[f"{s:.2f}" for s in sens], f"{100 * result.avg:.2f}", f"{100 * result.ap:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
