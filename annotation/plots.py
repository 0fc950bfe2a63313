"""The strength chart of a study's results as PNG or SVG bytes (plain module, no Django).

Drawn with the site's one chart path, ``generation.engine.charts`` (matplotlib's Agg canvas,
the CJK font and the stable-bytes rendering).
"""

from __future__ import annotations

from annotation.ranking import ELO_MEAN, Ranking
from generation.engine import charts


def strength_chart(
    ranking: Ranking,
    *,
    fmt: str = "png",
    title: str | None = None,
    names: dict[str, str] | None = None,
) -> bytes:
    """Horizontal chart of strengths (Elo-like scale), strongest on top, with interval bars."""
    charts.check_format(fmt)
    names = names or {}
    models = ranking.models  # strongest first
    labels = [names.get(m.name, m.name) for m in models]
    with charts.style():
        ax = charts.axes(7.5, 1.2 + 0.45 * max(len(models), 1))
        if models:
            y = list(range(len(models)))[::-1]  # strongest at the top
            centre = [m.strength for m in models]
            below = [max(m.strength - m.ci_low, 0.0) for m in models]
            above = [max(m.ci_high - m.strength, 0.0) for m in models]
            ax.errorbar(
                centre,
                y,
                xerr=[below, above],
                fmt="o",
                color="#1f5fa8",
                ecolor="#6b8fbf",
                elinewidth=2,
                capsize=4,
            )
            ax.set_yticks(y, labels)
            ax.axvline(ELO_MEAN, color="#999999", linestyle="--", linewidth=1)
            for yi, m in zip(y, models, strict=True):
                ax.annotate(
                    f"{m.strength:.0f}",
                    (m.ci_high, yi),
                    xytext=(6, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                )
            ax.set_ylim(-0.7, len(models) - 0.3)
        else:
            ax.text(0.5, 0.5, charts.NO_DATA, ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
        level = round(ranking.confidence * 100)
        ax.set_xlabel(f"strength (Elo scale, mean {ELO_MEAN:.0f}; bars: {level}% interval)")
        ax.grid(axis="x", alpha=0.3)
        if title:
            ax.set_title(title)
        return charts.render(ax.figure, fmt)
