"""Server-side charts as PNG or SVG bytes (plain module: matplotlib's Agg canvas, no pyplot).

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, so nothing touches global
pyplot state and web or worker threads can draw at the same time. Japanese model names need a
CJK font: Noto Sans CJK JP is used when matplotlib's font manager finds it (Debian's
fonts-noto-cjk), otherwise matplotlib's default font is used without complaint.

The shared pieces (``check_format``, ``style``, ``axes``, ``render``) serve every chart of the
site; the loss chart of a fine-tune run is here, the strength chart in ``annotation.plots``.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from functools import lru_cache
from typing import TYPE_CHECKING

# matplotlib is imported where a chart is drawn, not when the module loads: every Django start
# (each command, each worker) imports the admin and the views that name this module, and
# matplotlib costs about a second of CPU there for a page most processes never draw.
if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = ("png", "svg")
CJK_FONTS = ("Noto Sans CJK JP", "Noto Sans JP", "Noto Sans CJK SC", "IPAexGothic", "IPAGothic")
UNKNOWN_FORMAT = "unknown image format {fmt!r}: use 'png' or 'svg'"
NO_DATA = "no data yet"
NO_LOSS = "no loss logged yet"
# A long training log is averaged down to this many points: the line looks the same and the
# chart stays small however many steps the run has.
LOSS_MAX_POINTS = 600
TRAIN_COLOUR, EVAL_COLOUR = "#1f5fa8", "#d9822b"


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The first CJK-capable family the font manager knows, or None."""
    from matplotlib import font_manager

    available = {entry.name for entry in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in available:
            return name
    return None


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(UNKNOWN_FORMAT.format(fmt=fmt))


def style() -> ExitStack:
    """The site's chart settings; draw and render inside ``with style():``."""
    from matplotlib import rc_context

    families = [cjk_font()] if cjk_font() else []
    # svg.hashsalt: stable element ids in SVG output.
    params = {"font.family": [*families, "DejaVu Sans"], "svg.hashsalt": "pairwise-eval"}
    stack = ExitStack()
    stack.enter_context(rc_context(params))
    # Without a CJK font, Japanese names render as boxes: fall back silently, as documented.
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", message="Glyph .* missing from")
    return stack


def figure(width: float, height: float) -> Figure:
    """A new figure of ``width`` x ``height`` inches (100 dpi) on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def axes(width: float, height: float) -> Axes:
    """One set of axes on a new figure of ``width`` x ``height`` inches (100 dpi)."""
    return figure(width, height).add_subplot()


def render(fig: Figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    # Fixed metadata (no creation date) so the same chart gives the same bytes.
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    fig.savefig(buffer, format=fmt, metadata=metadata, bbox_inches="tight")
    return buffer.getvalue()


def downsample(points: Sequence[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most ``limit`` points: consecutive points averaged in equal buckets."""
    if len(points) <= limit:
        return [(float(x), float(y)) for x, y in points]
    size = len(points) / limit
    out = []
    for i in range(limit):
        bucket = points[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)]
        out.append(
            (
                sum(x for x, _ in bucket) / len(bucket),
                sum(y for _, y in bucket) / len(bucket),
            )
        )
    return out


def loss_chart(
    train: Sequence[tuple[float, float]],
    held_out: Sequence[tuple[float, float]] = (),
    *,
    total_steps: int = 0,
    fmt: str = "svg",
    title: str | None = None,
) -> bytes:
    """A fine-tune run's training loss per step and held-out loss per evaluation.

    Both are (step, loss) pairs. NaN losses never plot; ``total_steps`` stretches the step axis
    to the planned end, so a run in progress shows how far it has come.
    """
    check_format(fmt)
    points = downsample([(s, v) for s, v in train if not math.isnan(v)], LOSS_MAX_POINTS)
    evals = [(s, v) for s, v in held_out if not math.isnan(v)]
    with style():
        ax = axes(7, 3.5)
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, color=TRAIN_COLOUR, linewidth=1.5, label="training loss")
        if evals:
            xs, ys = zip(*evals, strict=True)
            ax.plot(xs, ys, "o--", color=EVAL_COLOUR, markersize=5, label="held-out loss")
        if points or evals:
            ax.legend(loc="upper right")
            last_step = max([total_steps, *(s for s, _ in points + evals), 1])
            ax.set_xlim(0, last_step)
        else:
            ax.text(0.5, 0.5, NO_LOSS, ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if title:
            ax.set_title(title)
        return render(ax.figure, fmt)
