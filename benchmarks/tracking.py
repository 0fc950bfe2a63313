"""The leaderboard in the experiment tracker (``evalsite.trackers``): every figure of the table
the page shows (human and judge strengths, judge grades, benchmark scores) as one tracker run.
``leaderboard_report`` is plain (the table in, a ``trackers.Report`` out);
``leaderboard_log`` builds the page's table for its options and writes the report.
"""

from __future__ import annotations

from datetime import UTC, datetime

from evalsite import trackers
from evalsite.trackers import Table, metric_key

from . import leaderboard as board
from . import leaderboard_table as lt

EMPTY = "the leaderboard has no figure to log for these options"
FIGURE_COLUMNS = ["model", "column", "value", "low", "high", "stderr", "n", "run"]
# The metric names of the columns that are not benchmark scores.
NAMES = {lt.HUMAN: "human_strength", lt.JUDGE: "judge_strength", lt.GRADE: "judge_grade"}


def column_name(column: lt.Column) -> str:
    """A column's metric name: ``human_strength`` ..., or ``<task>.<metric>.<scoring>.<n>shot``
    for a benchmark score (the modes and few-shot counts give different numbers)."""
    if column.kind in NAMES:
        return NAMES[column.kind]
    return f"{column.task}.{column.metric}.{column.scoring}.{column.num_fewshot}shot"


def leaderboard_report(table: lt.Table, context: dict, *, name: str | None = None):
    """Per column and model: the value (``<column>/<model>``), and its interval
    (``<column>_low`` / ``<column>_high``) or standard error (``<column>_stderr``)."""
    values: list[tuple[str, float | None]] = []
    rows = []
    for row in table.rows:
        for column in table.columns:
            figure = row.figures.get(column.key)
            if figure is None:
                continue
            base = column_name(column)
            values += [
                (metric_key(base, row.model), figure.value),
                (metric_key(f"{base}_low", row.model), figure.low),
                (metric_key(f"{base}_high", row.model), figure.high),
                (metric_key(f"{base}_stderr", row.model), figure.stderr),
            ]
            rows.append(
                [row.model, base, figure.value, figure.low, figure.high, figure.stderr]
                + [figure.n, figure.run]
            )
    if not rows:
        raise ValueError(EMPTY)
    study, grading = context.get("study"), context.get("grading_run")
    tags = {"app": "evalsite", "app_run": "leaderboard"}
    if study:
        tags |= {"study": study["name"], "study_id": str(study["id"])}
    if grading:
        tags["grading_run"] = str(grading)
    params = {
        "study": study["name"] if study else None,
        "grading_run": grading,
        "tasks": ", ".join(context.get("tasks") or []) or "all",
        "columns": ", ".join(column_name(c) for c in table.columns),
    }
    return trackers.Report(
        name=name or f"leaderboard-{datetime.now(UTC):%Y%m%d-%H%M%S}",
        tags=tags,
        params=params,
        metrics=trackers.numbers(values),
        tables={"leaderboard": Table(FIGURE_COLUMNS, rows)},
    )


def leaderboard_log(*, options: board.Options, tracker: trackers.Tracker) -> trackers.Logged:
    """Log the leaderboard the page shows for ``options`` to ``tracker`` (ValueError: nothing
    to log, no tracker, or its library missing)."""
    problem = trackers.unavailable(tracker.kind) if tracker.enabled else trackers.NO_TRACKER
    if problem:
        raise ValueError(problem)
    report = leaderboard_report(board.leaderboard(options), board.context(options))
    return trackers.log_report(tracker, report)
