"""The sweep chart: score against training rows, one line per learning rate, one panel per
(mix, method, epochs) when the grid has more than one, the best cell ringed (plain module: plain
data in, PNG or SVG bytes and the points drawn out; matplotlib through generation.engine.charts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from generation.engine import charts

COLOURS = ("#1f5fa8", "#d9822b", "#2e8b57", "#b03a48", "#6a4c93", "#8c6d1f", "#3b8ea5")
BEST_COLOUR = "#c0392b"
Y_LABELS = {
    "pairwise": "win rate over the base model (ties half)",
    "grading": "mean grade",
}


@dataclass(frozen=True)
class CellPoint:
    """One cell as the chart takes it (``score`` None: not scored, left out)."""

    position: int
    facet: str
    rows: int
    learning_rate: float
    score: float | None
    low: float | None
    high: float | None
    best: bool = False


@dataclass(frozen=True)
class Chart:
    data: bytes
    # What was drawn: per panel, per learning rate, the (rows, score) points in rows order,
    # and the position of the ringed best cell.
    lines: dict[str, dict[float, list[tuple[int, float]]]]
    best: int | None


def sweep_chart(
    cells: Sequence[CellPoint],
    *,
    mode: str = "pairwise",
    fmt: str = "png",
    title: str | None = None,
    baseline: float | None = None,
) -> Chart:
    """Draw the scored ``cells``; ``baseline``: a dashed line at the base model's score."""
    charts.check_format(fmt)
    facets = list(dict.fromkeys(c.facet for c in cells)) or [""]
    lines: dict[str, dict[float, list[tuple[int, float]]]] = {}
    best = next((c.position for c in cells if c.best and c.score is not None), None)
    columns = min(len(facets), 2)
    panels = math.ceil(len(facets) / columns)
    with charts.style():
        fig = charts.figure(6.5 * columns, 0.6 + 4.0 * panels)
        for index, facet in enumerate(facets, start=1):
            ax = fig.add_subplot(panels, columns, index)
            lines[facet] = _panel(ax, [c for c in cells if c.facet == facet], baseline)
            ax.set_xlabel("training rows")
            ax.set_ylabel(Y_LABELS.get(mode, "score"))
            if mode == "pairwise":
                ax.set_ylim(-0.03, 1.03)  # a win rate: the whole scale, so panels compare
            if facet:
                ax.set_title(facet, fontsize=9)
        if title:
            fig.suptitle(title)
        data = charts.render(fig, fmt)
    return Chart(data=data, lines=lines, best=best)


def _panel(ax, cells: Sequence[CellPoint], baseline: float | None):
    scored = [c for c in cells if c.score is not None]
    drawn: dict[float, list[tuple[int, float]]] = {}
    if not scored:
        ax.text(0.5, 0.5, charts.NO_DATA, ha="center", va="center", transform=ax.transAxes)
        return drawn
    rates = sorted({c.learning_rate for c in scored})
    for i, rate in enumerate(rates):
        line = sorted((c for c in scored if c.learning_rate == rate), key=lambda c: c.rows)
        colour = COLOURS[i % len(COLOURS)]
        x = [c.rows for c in line]
        y = [c.score for c in line]
        below = [max(c.score - c.low, 0.0) if c.low is not None else 0.0 for c in line]
        above = [max(c.high - c.score, 0.0) if c.high is not None else 0.0 for c in line]
        ax.errorbar(
            x, y, yerr=[below, above], fmt="-o", color=colour, capsize=3, label=f"lr {rate:g}"
        )
        drawn[rate] = list(zip(x, y, strict=True))
        for c in line:
            if c.best:
                ax.scatter(
                    [c.rows],
                    [c.score],
                    s=260,
                    facecolors="none",
                    edgecolors=BEST_COLOUR,
                    linewidths=2,
                    zorder=5,
                    label="best cell",
                )
    if baseline is not None:
        ax.axhline(baseline, color="#999999", linestyle="--", linewidth=1, label="base model")
    ax.set_xticks(sorted({c.rows for c in scored}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return drawn
