"""The leaderboard as plain data (no Django): columns, one row per model, sorting, and the
CSV / Markdown / JSON forms of the same table.

Every figure is rounded once, here (``DECIMALS`` per kind of column), and the page, the
Markdown and the CSV all print that rounded number, so the three show the same figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from evalsite.exports import csv_text, markdown_table, markdown_text

HUMAN, JUDGE, GRADE, BENCH = "human", "judge", "grade", "bench"
KINDS = (HUMAN, JUDGE, GRADE, BENCH)
# Places after the point: strengths on the Elo-like scale, mean grades, benchmark scores.
DECIMALS = {HUMAN: 0, JUDGE: 0, GRADE: 2, BENCH: 4}
# Sorting by something other than a figure: lineage groups a model with its base, then the
# models tuned from it (a sweep's models line up under their base); model sorts by label.
LINEAGE, MODEL = "lineage", "model"
ASC, DESC = "asc", "desc"
SCORING_WORDS = {"loglikelihood": "log-likelihood", "generative": "generative"}
UNKNOWN_SORT = "unknown sort column {key!r}"
UNKNOWN_DIR = "sort direction is asc or desc, not {value!r}"


@dataclass(frozen=True)
class Column:
    key: str  # "human", "judge", "grade" or "bench:<task>|<metric>|<scoring>|<few-shot>"
    kind: str  # one of KINDS
    title: str  # the header: what is measured
    detail: str  # how: the study, the interval, the scoring mode and few-shot count
    task: str = ""
    metric: str = ""
    scoring: str = ""
    num_fewshot: int | None = None


def bench_key(task: str, metric: str, scoring: str, num_fewshot: int) -> str:
    return f"bench:{task}|{metric}|{scoring}|{num_fewshot}"


@dataclass(frozen=True)
class Figure:
    value: float
    low: float | None = None  # an interval (strengths, grades) ...
    high: float | None = None
    stderr: float | None = None  # ... or a standard error (benchmarks)
    n: int | None = None  # games, answers graded or examples scored
    run: int | None = None  # the run that made it (benchmark or grading run)
    url: str = ""  # where to look at it
    prompt_format: str = ""  # benchmarks: the template (name and version) or "raw"


@dataclass(frozen=True)
class Lineage:
    base: str | None = None  # the model it was tuned from (None: not a tuned model)
    root: str = ""  # the first model of its chain (itself when untuned)
    depth: int = 0  # tunings between the root and this model
    method: str = ""  # lora / full / qlora / dpo, "adapter" for a registered LoRA
    data: tuple[str, ...] = ()  # instruction data sets, "name (rows)" when sampled
    preferences: str = ""  # preference data set (DPO)
    preference_study: str = ""  # the study whose votes made it
    finetune_run: int | None = None

    def as_dict(self) -> dict:
        return {
            "base": self.base,
            "root": self.root,
            "depth": self.depth,
            "method": self.method,
            "data": list(self.data),
            "preferences": self.preferences,
            "preference_study": self.preference_study,
            "finetune_run": self.finetune_run,
        }


@dataclass
class Row:
    model: str
    label: str
    lineage: Lineage
    figures: dict[str, Figure] = field(default_factory=dict)


@dataclass
class Table:
    columns: list[Column]
    rows: list[Row]
    sort: str = LINEAGE
    direction: str = ASC
    notes: list[str] = field(default_factory=list)


def rounded(kind: str, value: float | None) -> float | None:
    if value is None:
        return None
    return round(float(value), DECIMALS[kind])


def _number(kind: str, value: float) -> str:
    return f"{rounded(kind, value):.{DECIMALS[kind]}f}"


def figure_text(column: Column, figure: Figure | None) -> str:
    """What a cell shows: "1034 [998, 1070]", "7.25 [6.80, 7.70]", "0.6250 ± 0.0500"."""
    if figure is None:
        return ""
    text = _number(column.kind, figure.value)
    if figure.stderr is not None:
        text += f" ± {_number(column.kind, figure.stderr)}"
    elif figure.low is not None and figure.high is not None:
        text += f" [{_number(column.kind, figure.low)}, {_number(column.kind, figure.high)}]"
    return text


def default_direction(key: str) -> str:
    """Figures read best first; names and lineage in alphabetical order."""
    return ASC if key in (LINEAGE, MODEL) else DESC


def _lineage_key(row: Row) -> tuple:
    return (row.lineage.root.casefold(), row.lineage.depth, row.label.casefold(), row.model)


def sort_rows(rows: Iterable[Row], columns: Sequence[Column], key: str, direction: str) -> list:
    """Rows sorted by ``key`` (a column key, LINEAGE or MODEL) in ``direction``; models without
    the figure come last whichever way, in lineage order (ValueError: unknown key or direction)."""
    if direction not in (ASC, DESC):
        raise ValueError(UNKNOWN_DIR.format(value=direction))
    rows = sorted(rows, key=_lineage_key)
    if key == LINEAGE:
        return rows if direction == ASC else rows[::-1]
    if key == MODEL:
        rows.sort(key=lambda r: (r.label.casefold(), r.model), reverse=direction == DESC)
        return rows
    found = next((c for c in columns if c.key == key), None)
    if found is None:
        if is_column_key(key):
            return rows  # a column this table does not have (say no judge votes): nobody has it
        raise ValueError(UNKNOWN_SORT.format(key=key))
    have = [r for r in rows if key in r.figures]
    missing = [r for r in rows if key not in r.figures]
    # Stable: equal figures keep lineage order.
    have.sort(key=lambda r: rounded(found.kind, r.figures[key].value), reverse=direction == DESC)
    return have + missing


def is_column_key(key: str) -> bool:
    return key in (HUMAN, JUDGE, GRADE) or key.startswith("bench:")


def header(column: Column) -> str:
    """The exports' name of a column: its title, and for a benchmark how it was scored (the
    same task scored two ways is two columns)."""
    if column.kind != BENCH:
        return column.title
    scoring = SCORING_WORDS.get(column.scoring, column.scoring)
    return f"{column.title} ({scoring}, {column.num_fewshot}-shot)"


# --- exports -----------------------------------------------------------------------------------

LINEAGE_FIELDS = ["model", "label", "base_model", "method", "data", "preferences", "vote_study"]


def _lineage_cells(row: Row) -> list:
    lineage = row.lineage
    return [
        row.model,
        row.label,
        lineage.base or "",
        lineage.method,
        "; ".join(lineage.data),
        lineage.preferences,
        lineage.preference_study,
    ]


def _column_fields(column: Column) -> list[tuple[str, Callable[[Figure], object]]]:
    """(CSV header, getter) for each CSV column of one leaderboard column."""
    kind = column.kind
    name = header(column)
    fields: list[tuple[str, Callable[[Figure], object]]] = [
        (name, lambda f: rounded(kind, f.value))
    ]
    if kind == BENCH:
        fields += [
            (f"{name} stderr", lambda f: rounded(kind, f.stderr)),
            (f"{name} n", lambda f: f.n),
            (f"{name} run", lambda f: f.run),
            (f"{name} prompt", lambda f: f.prompt_format),
        ]
    else:
        fields += [
            (f"{name} low", lambda f: rounded(kind, f.low)),
            (f"{name} high", lambda f: rounded(kind, f.high)),
            (f"{name} n", lambda f: f.n),
        ]
        if kind == GRADE:
            fields.append((f"{name} run", lambda f: f.run))
    return fields


def to_csv(table: Table) -> str:
    """One line per row in the table's order; per figure its value, then its interval or
    standard error, count and run (blank: the model has no such figure). Cells, headers too
    (they name studies), go through ``evalsite.exports`` (no spreadsheet formulas; floats
    printed with four places, of the number already rounded as the page shows it)."""
    per_column = [_column_fields(c) for c in table.columns]
    names = LINEAGE_FIELDS + [name for fields in per_column for name, _ in fields]
    lines = []
    for row in table.rows:
        cells = _lineage_cells(row)
        for column, fields in zip(table.columns, per_column, strict=True):
            figure = row.figures.get(column.key)
            cells += [None if figure is None else get(figure) for _, get in fields]
        lines.append(cells)
    return csv_text(names, lines)


def lineage_text(lineage: Lineage) -> str:
    """ "base → method on data" in a few words (blank for a model that was not tuned here)."""
    if lineage.base is None:
        return ""
    parts = [f"{lineage.base} → {lineage.method}" if lineage.method else lineage.base]
    if lineage.data:
        parts.append(", ".join(lineage.data))
    if lineage.preferences:
        found = lineage.preferences
        if lineage.preference_study:
            found += f" ({lineage.preference_study})"
        parts.append(found)
    return "; ".join(parts)


def to_markdown(table: Table, *, title: str = "Leaderboard") -> str:
    """The page's table, ready to paste: the same cells, then what each column means."""
    headers = ["Model", "Lineage", *(header(c) for c in table.columns)]
    rows = [
        [
            row.label,
            lineage_text(row.lineage),
            *(figure_text(c, row.figures.get(c.key)) for c in table.columns),
        ]
        for row in table.rows
    ]
    lines = [f"## {markdown_text(title)}", ""]
    lines.append(markdown_table(headers, rows, align="ll" + "r" * len(table.columns)))
    lines += ["", *(f"- {markdown_text(f'{header(c)}: {c.detail}')}" for c in table.columns)]
    lines += [f"- {markdown_text(note)}" for note in table.notes]
    return "\n".join(lines) + "\n"


def to_json(table: Table) -> dict:
    return {
        "sort": table.sort,
        "dir": table.direction,
        "columns": [
            {
                "key": c.key,
                "kind": c.kind,
                "title": c.title,
                "detail": c.detail,
                **(
                    {
                        "task": c.task,
                        "metric": c.metric,
                        "scoring": c.scoring,
                        "num_fewshot": c.num_fewshot,
                    }
                    if c.kind == BENCH
                    else {}
                ),
            }
            for c in table.columns
        ],
        "rows": [
            {
                "model": row.model,
                "label": row.label,
                "lineage": row.lineage.as_dict(),
                "figures": {
                    c.key: _figure_json(c, row.figures[c.key])
                    for c in table.columns
                    if c.key in row.figures
                },
            }
            for row in table.rows
        ],
        "notes": list(table.notes),
    }


def _figure_json(column: Column, figure: Figure) -> dict:
    kind = column.kind
    return {
        "value": rounded(kind, figure.value),
        "low": rounded(kind, figure.low),
        "high": rounded(kind, figure.high),
        "stderr": rounded(kind, figure.stderr),
        "n": figure.n,
        "run": figure.run,
        "url": figure.url,
        "text": figure_text(column, figure),
        **({"prompt_format": figure.prompt_format} if kind == BENCH else {}),
    }
