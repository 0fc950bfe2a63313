"""Server-side charts as PNG or SVG bytes (plain module: matplotlib's Agg canvas, no pyplot).

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, so nothing touches global
pyplot state and web or worker threads can draw at the same time. Japanese model names need a
CJK font: Noto Sans CJK JP is used when matplotlib's font manager finds it (Debian's
fonts-noto-cjk), otherwise matplotlib's default font is used without complaint.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from functools import lru_cache

from matplotlib import font_manager, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from annotation.ranking import ELO_MEAN, Ranking

FORMATS = ("png", "svg")
CJK_FONTS = ("Noto Sans CJK JP", "Noto Sans JP", "Noto Sans CJK SC", "IPAexGothic", "IPAGothic")
UNKNOWN_FORMAT = "unknown image format {fmt!r}: use 'png' or 'svg'"
LENGTHS_DIFFER = "steps and losses differ in length ({steps} and {losses})"
NO_DATA = "no data yet"


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The first CJK-capable family the font manager knows, or None."""
    available = {entry.name for entry in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in available:
            return name
    return None


def _render(fig: Figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    # Fixed metadata (no creation date) so the same chart gives the same bytes.
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    fig.savefig(buffer, format=fmt, metadata=metadata, bbox_inches="tight")
    return buffer.getvalue()


def _style():
    families = [cjk_font()] if cjk_font() else []
    # svg.hashsalt: stable element ids in SVG output.
    params = {"font.family": [*families, "DejaVu Sans"], "svg.hashsalt": "pairwise-eval"}
    stack = ExitStack()
    stack.enter_context(rc_context(params))
    # Without a CJK font, Japanese names render as boxes: fall back silently, as documented.
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", message="Glyph .* missing from")
    return stack


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(UNKNOWN_FORMAT.format(fmt=fmt))


def strength_chart(
    ranking: Ranking,
    *,
    fmt: str = "png",
    title: str | None = None,
    names: dict[str, str] | None = None,
) -> bytes:
    """Horizontal chart of strengths (Elo-like scale), strongest on top, with interval bars."""
    _check_format(fmt)
    names = names or {}
    models = ranking.models  # strongest first
    labels = [names.get(m.name, m.name) for m in models]
    with _style():
        fig = Figure(figsize=(7.5, 1.2 + 0.45 * max(len(models), 1)), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
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
            ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
        level = round(ranking.confidence * 100)
        ax.set_xlabel(f"strength (Elo scale, mean {ELO_MEAN:.0f}; bars: {level}% interval)")
        ax.grid(axis="x", alpha=0.3)
        if title:
            ax.set_title(title)
        return _render(fig, fmt)


def loss_chart(
    steps: Sequence[float],
    losses: Sequence[float],
    eval_points: Sequence[tuple[float, float]] | None = None,
    fmt: str = "svg",
    *,
    title: str | None = None,
) -> bytes:
    """Training loss by step for a fine-tune run, with optional (step, eval loss) points."""
    _check_format(fmt)
    if len(steps) != len(losses):
        raise ValueError(LENGTHS_DIFFER.format(steps=len(steps), losses=len(losses)))
    eval_points = list(eval_points or [])
    with _style():
        fig = Figure(figsize=(7, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if steps:
            ax.plot(list(steps), list(losses), color="#1f5fa8", linewidth=1.5, label="train loss")
        if eval_points:
            xs, ys = zip(*eval_points, strict=True)
            ax.plot(xs, ys, "o-", color="#d9822b", markersize=5, label="eval loss")
        if steps or eval_points:
            ax.legend(loc="upper right")
        else:
            ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if title:
            ax.set_title(title)
        return _render(fig, fmt)
