"""The site's one chart path (generation.engine.charts): the shared rendering and the loss chart
of a fine-tune run. The strength chart is tested with the reports (tests/annotation)."""

from __future__ import annotations

import pytest

from generation.engine import charts

LONG_LOG = [(s, 4.0 - s / 1000) for s in range(1, 2001)]


def test_the_loss_chart_renders_training_and_held_out_loss_as_svg_or_png():
    svg = charts.loss_chart([(1, 2.0), (2, 1.5), (3, 1.2)], [(2, 1.7)])
    png = charts.loss_chart([(1, 2.0), (2, 1.5), (3, 1.2)], fmt="png")

    assert svg.startswith(b"<?xml") and b"<svg" in svg
    # matplotlib draws text as paths and keeps each string in a comment beside it.
    assert b"<!-- training loss -->" in svg and b"<!-- held-out loss -->" in svg
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert svg == charts.loss_chart([(1, 2.0), (2, 1.5), (3, 1.2)], [(2, 1.7)])  # stable bytes
    with pytest.raises(ValueError, match="unknown image format"):
        charts.loss_chart([], [], fmt="gif")


def test_the_loss_chart_says_when_nothing_is_logged_yet():
    for empty in (charts.loss_chart([], []), charts.loss_chart([(1, float("nan"))], [])):
        assert b"<!-- no loss logged yet -->" in empty
        assert b"training loss" not in empty


def test_the_loss_chart_leaves_out_nan_and_spans_the_planned_steps():
    svg = charts.loss_chart([*LONG_LOG, (2001, float("nan"))], [(1000, 3.0)], total_steps=3000)

    assert b"nan" not in svg.lower()
    assert b"<!-- 3000 -->" in svg  # the step axis reaches the run's last step


def test_a_long_log_is_averaged_down_in_equal_buckets():
    points = charts.downsample(LONG_LOG, charts.LOSS_MAX_POINTS)

    assert len(points) == 600
    assert points[0] == pytest.approx((2.0, 3.998))  # the mean of steps 1..3 (and their losses)
    assert charts.downsample(LONG_LOG[:5], 600) == [(float(s), v) for s, v in LONG_LOG[:5]]


def test_a_cjk_font_is_used_when_the_font_manager_has_one():
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    expected = next((n for n in charts.CJK_FONTS if n in names), None)

    assert charts.cjk_font() == expected
