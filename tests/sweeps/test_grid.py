"""The sweep's plain parts: the grid's cells, the win rate and its interval, the best cell, the
axis parser and the chart (points drawn, PNG and SVG bytes)."""

from __future__ import annotations

import pytest

from sweeps.grid import (
    EMPTY_AXIS,
    LOSS,
    REPEATED_VALUE,
    TIE,
    WIN,
    best_index,
    cells_of,
    parse_values,
    win_rate,
)
from sweeps.plots import CellPoint, sweep_chart


def test_the_grid_has_one_cell_per_combination_in_table_order():
    cells = cells_of(
        mixes=[[1], [1, 2]],
        rows=[8, None],
        learning_rates=[1e-4, 3e-4],
        epochs=[1.0],
        methods=["lora", "full"],
    )
    assert len(cells) == 2 * 2 * 2 * 1 * 2
    assert (cells[0].mix, cells[0].rows, cells[0].learning_rate, cells[0].method) == (
        (1,),
        8,
        1e-4,
        "lora",
    )
    assert (cells[1].method, cells[-1].mix, cells[-1].rows) == ("full", (1, 2), None)
    assert len(set(cells)) == len(cells)


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({"rows": []}, EMPTY_AXIS.format(axis="rows")),
        (
            {"learning_rates": [1e-4, 1e-4]},
            REPEATED_VALUE.format(axis="learning rates", value=1e-4),
        ),
        ({"mixes": [[1], [1]]}, REPEATED_VALUE.format(axis="mixes", value=(1,))),
    ],
)
def test_an_empty_axis_or_a_repeated_value_is_refused(axes, message):
    values = {"mixes": [[1]], "rows": [8], "learning_rates": [1e-4], "epochs": [1.0]}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cells_of(**{**values, **axes, "methods": ["lora"]})


def test_the_win_rate_counts_a_tie_as_half_and_its_interval_resamples_questions():
    # Question 1: won in both orders; 2: a tie and a loss; 3: lost twice; 4: one order only.
    outcomes = [(1, WIN), (1, WIN), (2, TIE), (2, LOSS), (3, LOSS), (3, LOSS), (4, WIN)]
    score = win_rate(outcomes, seed=0, resamples=500)
    assert score.counted == 7
    assert score.score == pytest.approx((2 + 0.5 + 0 + 1) / 7, abs=1e-4)
    assert 0 <= score.low <= score.score <= score.high <= 1
    assert win_rate(outcomes, seed=0, resamples=500) == score  # seeded: the same interval


def test_a_unanimous_win_rate_has_no_width_and_no_verdicts_have_no_score():
    assert win_rate([(q, WIN) for q in range(4)], seed=1, resamples=200)[:3] == (1.0, 1.0, 1.0)
    assert win_rate([], seed=0, resamples=200).score is None


def test_the_best_cell_is_the_highest_score_then_the_higher_low_end_and_a_tie_has_none():
    assert best_index([(0.5, 0.2), (0.7, 0.4), (None, None), (0.7, 0.5)]) == 3
    assert best_index([(0.4, 0.1)]) == 0
    assert best_index([(0.6, 0.3), (0.6, 0.3), (0.2, 0.1)]) is None
    assert best_index([(None, None)]) is None


def test_axis_values_parse_with_all_rows_and_say_what_is_wrong():
    assert parse_values("8, 16,all", axis="rows", kind=int, allow_all=True) == [8, 16, None]
    assert parse_values("1e-4,3e-4", axis="lr", kind=float) == [1e-4, 3e-4]
    with pytest.raises(ValueError, match="rows: 'eight' is not a whole number or 'all'"):
        parse_values("8,eight", axis="rows", kind=int, allow_all=True)
    with pytest.raises(ValueError, match="at least one value for lr"):
        parse_values(" , ", axis="lr", kind=float)


def _point(position, rows, lr, score, facet="", best=False):
    low = None if score is None else score - 0.1
    high = None if score is None else score + 0.1
    return CellPoint(position, facet, rows, lr, score, low, high, best)


def test_the_chart_draws_one_line_per_learning_rate_in_rows_order_and_rings_the_best():
    cells = [
        _point(1, 16, 1e-4, 0.4),
        _point(2, 8, 1e-4, 0.3),
        _point(3, 8, 3e-4, 0.6, best=True),
        _point(4, 16, 3e-4, None),  # not scored yet: left out
    ]
    chart = sweep_chart(cells, mode="pairwise", title="rows x lr", baseline=0.5)
    assert chart.lines == {"": {1e-4: [(8, 0.3), (16, 0.4)], 3e-4: [(8, 0.6)]}}
    assert chart.best == 3
    assert chart.data.startswith(b"\x89PNG")
    assert sweep_chart(cells, fmt="svg").data.lstrip().startswith(b"<?xml")


def test_the_chart_has_one_panel_per_facet_and_says_when_nothing_is_scored():
    cells = [_point(1, 8, 1e-4, 0.5, "lora"), _point(2, 8, 1e-4, 0.7, "full")]
    chart = sweep_chart(cells)
    assert chart.lines == {"lora": {1e-4: [(8, 0.5)]}, "full": {1e-4: [(8, 0.7)]}}
    empty = sweep_chart([_point(1, 8, 1e-4, None)])
    assert empty.lines == {"": {}} and empty.best is None
    with pytest.raises(ValueError, match="unknown image format"):
        sweep_chart(cells, fmt="gif")
