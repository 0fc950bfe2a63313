"""The sweep's plain arithmetic (no Django): the grid's cells, a cell's pairwise win rate with
its interval, and which cell is best.

A pairwise cell's score is the share of the judge's verdicts that prefer the cell's model over
the base model, a tie counting half (the Chatbot Arena and Rakuda convention the study results
use). Its interval is the percentile bootstrap of ``judging.engine.bootstrap.bootstrap_means`` over
questions, because both orders of one question are judged on the same pair of answers and are
not independent draws.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from judging.engine.bootstrap import bootstrap_means

# What one verdict gives the cell's model: a win, half for a tie, nothing for a loss.
WIN, TIE, LOSS = 1.0, 0.5, 0.0
EMPTY_AXIS = "the grid needs at least one value for {axis}"
REPEATED_VALUE = "{axis} lists {value!r} twice"


@dataclass(frozen=True)
class CellValues:
    """One combination of the grid: a mix (data set ids), rows per data set (None: all),
    learning rate, epochs and method."""

    mix: tuple[int, ...]
    rows: int | None
    learning_rate: float
    epochs: float
    method: str


def cells_of(
    *,
    mixes: Sequence[Sequence[int]],
    rows: Sequence[int | None],
    learning_rates: Sequence[float],
    epochs: Sequence[float],
    methods: Sequence[str],
) -> list[CellValues]:
    """Every combination, mixes outermost and methods innermost (the table's order); ValueError
    for an empty axis or a value given twice."""
    axes = {
        "mixes": [tuple(m) for m in mixes],
        "rows": list(rows),
        "learning rates": list(learning_rates),
        "epochs": list(epochs),
        "methods": list(methods),
    }
    for axis, values in axes.items():
        if not values:
            raise ValueError(EMPTY_AXIS.format(axis=axis))
        seen = set()
        for value in values:
            if value in seen:
                raise ValueError(REPEATED_VALUE.format(axis=axis, value=value))
            seen.add(value)
    return [
        CellValues(mix=m, rows=r, learning_rate=lr, epochs=e, method=method)
        for m, r, lr, e, method in itertools.product(*axes.values())
    ]


class Score(NamedTuple):
    """A cell's score with the ends of its interval and the verdicts (or grades) counted."""

    score: float | None
    low: float | None
    high: float | None
    counted: int


def _number(value) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 4)


def win_rate(outcomes: Iterable[tuple[object, float]], *, seed: int, resamples: int) -> Score:
    """Win rate of the cell's model from ``(question, outcome)`` pairs (outcome WIN, TIE or
    LOSS for each parsed verdict), with a bootstrap interval over questions."""
    per_question: dict[object, list[float]] = {}
    for question, outcome in outcomes:
        per_question.setdefault(question, []).append(outcome)
    if not per_question:
        return Score(None, None, None, 0)
    sums = np.array([[sum(v)] for v in per_question.values()])
    counts = np.array([[len(v)] for v in per_question.values()])
    means, low, high = bootstrap_means(sums, counts, resamples=resamples, seed=seed)
    return Score(_number(means[0]), _number(low[0]), _number(high[0]), int(counts.sum()))


def best_index(scores: Sequence[tuple[float | None, float | None]]) -> int | None:
    """The index of the best of ``(score, interval low)`` pairs: the highest score, the higher
    low end breaking a tie. None when nothing is scored, or when the top is shared (a tie
    names no best cell: marking the first of equals would read as a finding)."""
    ranked = sorted(
        ((s, low if low is not None else s), i)
        for i, (s, low) in enumerate(scores)
        if s is not None
    )
    if not ranked or (len(ranked) > 1 and ranked[-1][0] == ranked[-2][0]):
        return None
    return ranked[-1][1]


BAD_LIST_VALUE = "{axis}: {value!r} is not {kind}"
ALL_ROWS = "all"


def parse_values(text: str, *, axis: str, kind: type, allow_all: bool = False) -> list:
    """Comma-separated values of one axis ("8,16", "1e-4,3e-4"; ``allow_all``: "all" is None,
    every row), ValueError naming the axis and the bad value."""
    values: list = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if allow_all and part.lower() == ALL_ROWS:
            values.append(None)
            continue
        try:
            number = kind(part)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            if allow_all:
                what += " or 'all'"
            raise ValueError(BAD_LIST_VALUE.format(axis=axis, value=part, kind=what)) from None
        values.append(number)
    if not values:
        raise ValueError(EMPTY_AXIS.format(axis=axis))
    return values
