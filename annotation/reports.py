"""Tables and exports built from votes (plain module: rows in, tables and text out; no Django).

The Django layer turns its votes into ``VoteRow``s (one per vote, outcome stored canonically for
the comparison's model_a / model_b) and calls:

- ``pair_table`` / ``category_tables``: wins / ties / losses per model pair from the first
  model's side, e.g. ``line-3.6b (SFT) v.s. rinna-3.6b (PPO) | 37% | 27% | 36%``;
- ``position_bias``: how often the answer shown on the left won, with a binomial test;
- ``annotator_table``: per annotator counts, tie rate, agreement with the others' majority;
- ``agreement``: Krippendorff's alpha (nominal) over comparisons with several votes;
- ``battles_from_rows`` -> ``annotation.ranking.rank``;
- ``to_json`` / ``to_csv`` / ``to_markdown``: the exports (``to_json``'s field names are a
  contract with API clients; CSV and Markdown through ``evalsite.exports``, as every app's).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import krippendorff
import numpy as np
from scipy.stats import binomtest

from annotation.ranking import Battle, Ranking
from evalsite.exports import (
    FORMULA_STARTS,  # noqa: F401 (the first probe's CSV rule, still importable from here)
    csv_cell,  # noqa: F401
    csv_text,
    markdown_table,
    markdown_text,
)

from .ranking.sentences import sentence

OUTCOMES = ("a", "tie", "b")
SIDES = ("a", "b")
UNKNOWN_OUTCOME = "vote on comparison {comparison!r}: unknown outcome {outcome!r}"
UNKNOWN_SIDE = "vote on comparison {comparison!r}: shown_left must be 'a', 'b' or None"
SAME_MODEL = "vote on comparison {comparison!r}: model_a and model_b are both {model!r}"
NO_CATEGORY = "(no category)"

ALPHA_NO_REPEATS = sentence("No comparison has more than one vote: agreement cannot be measured.")
ALPHA_ONE_VALUE = sentence(
    "All repeated votes gave the same outcome: Krippendorff's alpha is undefined (no variation)."
)


@dataclass(frozen=True)
class VoteRow:
    comparison: str  # identifies (question, answer of model a, answer of model b)
    question: str
    category: str
    model_a: str
    model_b: str
    outcome: str  # "a" | "tie" | "b", for model_a / model_b
    shown_left: str | None  # which model's answer was on the left: "a", "b", or None (unknown)
    annotator: str
    both_bad: bool = False  # a tie judged "both bad" (FastChat's ``tie (bothbad)``)


# --- pairs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairRow:
    """Votes between two models, counted from model_a's side."""

    model_a: str
    model_b: str
    wins: int
    ties: int  # every tie, both-bad ones included
    losses: int
    ties_bothbad: int = 0  # the ties judged "both bad"

    @property
    def games(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_pct(self) -> float:
        return _pct(self.wins, self.games)

    @property
    def tie_pct(self) -> float:
        return _pct(self.ties, self.games)

    @property
    def loss_pct(self) -> float:
        return _pct(self.losses, self.games)

    @property
    def win_rate(self) -> float | None:
        """(wins + ties / 2) / games, the ranking's convention."""
        return (self.wins + self.ties / 2) / self.games if self.games else None

    def label(self, names: Mapping[str, str] | None = None) -> str:
        names = names or {}
        return (
            f"{names.get(self.model_a, self.model_a)} v.s. {names.get(self.model_b, self.model_b)}"
        )

    def line(self, names: Mapping[str, str] | None = None) -> str:
        """``a v.s. b | 37% | 27% | 36%`` (whole percents that add up to 100)."""
        win, tie, loss = whole_percents(self.wins, self.ties, self.losses)
        return f"{self.label(names)} | {win}% | {tie}% | {loss}%"


def _pct(part: int, whole: int) -> float:
    return 100 * part / whole if whole else 0.0


def whole_percents(*counts: int) -> tuple[int, ...]:
    """Whole percentages that add up to 100 (largest remainder), all 0 when there is nothing."""
    total = sum(counts)
    if not total:
        return tuple(0 for _ in counts)
    exact = [100 * c / total for c in counts]
    floors = [math.floor(x) for x in exact]
    short = 100 - sum(floors)
    by_remainder = sorted(range(len(counts)), key=lambda i: (floors[i] - exact[i], i))
    for i in by_remainder[:short]:
        floors[i] += 1
    return tuple(floors)


def model_order(rows: Iterable[VoteRow]) -> list[str]:
    """Model names in order of first appearance."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.setdefault(row.model_a)
        seen.setdefault(row.model_b)
    return list(seen)


def pair_table(rows: Iterable[VoteRow], models: Sequence[str] | None = None) -> list[PairRow]:
    """One row per model pair that has votes, from the side of the model listed first.

    ``models`` sets the order (the earlier model is ``model_a``); by default, first appearance.
    """
    rows = list(rows)
    order = list(models) if models is not None else model_order(rows)
    position = {name: i for i, name in enumerate(order)}
    for name in model_order(rows):
        position.setdefault(name, len(position))
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        _check(row)
        outcome = OUTCOMES.index(row.outcome)
        first, second = row.model_a, row.model_b
        if position[first] > position[second]:
            first, second, outcome = second, first, 2 - outcome
        counts[(first, second)][outcome] += 1
        counts[(first, second)][3] += row.outcome == "tie" and row.both_bad
    keys = sorted(counts, key=lambda pair: (position[pair[0]], position[pair[1]]))
    return [PairRow(a, b, *counts[(a, b)]) for a, b in keys]


def category_tables(
    rows: Iterable[VoteRow], models: Sequence[str] | None = None
) -> dict[str, list[PairRow]]:
    """``pair_table`` per question category (categories in order of first appearance)."""
    rows = list(rows)
    order = list(models) if models is not None else model_order(rows)
    by_category: dict[str, list[VoteRow]] = defaultdict(list)
    for row in rows:
        by_category[row.category].append(row)
    return {category: pair_table(group, order) for category, group in by_category.items()}


def _check(row: VoteRow) -> None:
    if row.outcome not in OUTCOMES:
        raise ValueError(UNKNOWN_OUTCOME.format(comparison=row.comparison, outcome=row.outcome))
    if row.shown_left is not None and row.shown_left not in SIDES:
        raise ValueError(UNKNOWN_SIDE.format(comparison=row.comparison))
    if row.model_a == row.model_b:
        raise ValueError(SAME_MODEL.format(comparison=row.comparison, model=row.model_a))


def battles_from_rows(rows: Iterable[VoteRow]) -> list[Battle]:
    """The ranking module's records: the left answer is the one shown first."""
    battles = []
    for row in rows:
        _check(row)
        battles.append(Battle(row.model_a, row.model_b, row.outcome, row.question, row.shown_left))
    return battles


# --- position bias -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionBias:
    left_wins: int
    right_wins: int
    ties: int
    unknown: int  # votes that do not record the sides
    left_rate: float | None  # left_wins / (left_wins + right_wins)
    p_value: float | None  # two-sided binomial test of left_rate = 1/2

    @property
    def decided(self) -> int:
        return self.left_wins + self.right_wins


def position_bias(rows: Iterable[VoteRow]) -> PositionBias:
    """How often the answer shown on the left won, among votes that were not ties."""
    left = right = ties = unknown = 0
    for row in rows:
        _check(row)
        if row.shown_left is None:
            unknown += 1
        elif row.outcome == "tie":
            ties += 1
        elif row.outcome == row.shown_left:
            left += 1
        else:
            right += 1
    decided = left + right
    if not decided:
        return PositionBias(left, right, ties, unknown, None, None)
    p_value = binomtest(left, decided, 0.5, alternative="two-sided").pvalue
    return PositionBias(left, right, ties, unknown, left / decided, float(p_value))


# --- annotators --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatorRow:
    annotator: str
    votes: int
    ties: int
    tie_rate: float
    compared: int  # votes on comparisons where the other votes have a single majority outcome
    agreed: int  # ... and this vote matched it
    agreement: float | None  # agreed / compared


def annotator_table(rows: Iterable[VoteRow]) -> list[AnnotatorRow]:
    """Per annotator: votes, tie rate, and agreement with the majority of the *other* votes on
    the same comparison (a vote counts only where those others have one most common outcome)."""
    rows = list(rows)
    by_comparison: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        _check(row)
        by_comparison[row.comparison][row.outcome] += 1
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # votes ties compared agreed
    for row in rows:
        entry = stats[row.annotator]
        entry[0] += 1
        entry[1] += row.outcome == "tie"
        others = by_comparison[row.comparison].copy()
        others[row.outcome] -= 1
        majority = _majority(others)
        if majority is not None:
            entry[2] += 1
            entry[3] += row.outcome == majority
    table = [
        AnnotatorRow(
            annotator=name,
            votes=votes,
            ties=ties,
            tie_rate=ties / votes,
            compared=compared,
            agreed=agreed,
            agreement=agreed / compared if compared else None,
        )
        for name, (votes, ties, compared, agreed) in stats.items()
    ]
    table.sort(key=lambda r: (-r.votes, r.annotator))
    return table


def _majority(counts: Counter) -> str | None:
    top = [(n, outcome) for outcome, n in counts.items() if n > 0]
    if not top:
        return None
    top.sort(reverse=True)
    if len(top) > 1 and top[0][0] == top[1][0]:
        return None
    return top[0][1]


@dataclass(frozen=True)
class Agreement:
    alpha: float | None  # Krippendorff's alpha, nominal; None when it cannot be computed
    comparisons: int  # comparisons with two or more votes
    votes: int  # votes on those comparisons
    note: str | None = None


def agreement(rows: Iterable[VoteRow]) -> Agreement:
    """Krippendorff's alpha (nominal: a / tie / b) over comparisons with two or more votes."""
    by_comparison: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        _check(row)
        by_comparison[row.comparison][row.outcome] += 1
    repeated = [c for c in by_comparison.values() if sum(c.values()) >= 2]
    if not repeated:
        return Agreement(None, 0, 0, ALPHA_NO_REPEATS)
    value_counts = np.array([[c[o] for o in OUTCOMES] for c in repeated], dtype=float)
    votes = int(value_counts.sum())
    if np.count_nonzero(value_counts.sum(axis=0)) < 2:
        return Agreement(None, len(repeated), votes, ALPHA_ONE_VALUE)
    alpha = krippendorff.alpha(value_counts=value_counts, level_of_measurement="nominal")
    return Agreement(float(alpha), len(repeated), votes)


# --- exports -----------------------------------------------------------------------------------

PAIR_FIELDS = ("model_a", "model_b", "wins", "ties", "losses", "games")
PAIR_FIELDS += ("win_pct", "tie_pct", "loss_pct", "ties_bothbad")
MODEL_FIELDS = ("name", "strength", "ci_low", "ci_high", "log_strength", "win_rate")
MODEL_FIELDS += ("wins", "ties", "losses", "games")


def pair_dict(pair: PairRow) -> dict:
    return {name: getattr(pair, name) for name in PAIR_FIELDS}


def to_json(
    ranking: Ranking | None,
    pairs: Sequence[PairRow],
    study_name: str,
    *,
    categories: Mapping[str, Sequence[PairRow]] | None = None,
) -> dict:
    """The results as a JSON-ready dict. Pair counts are from model_a's side; percentages are
    0-100; models are strongest first, on the Elo-like scale (mean 1000)."""
    out: dict = {"study": study_name, "models": [], "pairs": [pair_dict(p) for p in pairs]}
    if ranking is not None:
        out["models"] = [
            {"rank": i, **{name: getattr(m, name) for name in MODEL_FIELDS}}
            for i, m in enumerate(ranking.models, start=1)
        ]
        out["ranking"] = {
            "method": ranking.method,
            "n_votes": ranking.n_votes,
            "n_questions": ranking.n_questions,
            "bootstrap": ranking.bootstrap,
            "resample": ranking.resample,
            "confidence": ranking.confidence,
            "alpha": ranking.alpha,
            "seed": ranking.seed,
            "position_advantage_elo": ranking.position_advantage_elo,
            "notes": list(ranking.notes),
        }
    if categories is not None:
        out["categories"] = {
            category: [pair_dict(p) for p in rows] for category, rows in categories.items()
        }
    return out


def pairs_csv(pairs: Sequence[PairRow]) -> str:
    return csv_text(PAIR_FIELDS, ([getattr(p, name) for name in PAIR_FIELDS] for p in pairs))


def strengths_csv(ranking: Ranking | None) -> str:
    models = ranking.models if ranking is not None else ()
    return csv_text(
        ("rank", *MODEL_FIELDS),
        ([i, *(getattr(m, name) for name in MODEL_FIELDS)] for i, m in enumerate(models, 1)),
    )


def to_csv(ranking: Ranking | None, pairs: Sequence[PairRow]) -> dict[str, str]:
    """Two CSV texts: ``{"pairs": ..., "strengths": ...}``."""
    return {"pairs": pairs_csv(pairs), "strengths": strengths_csv(ranking)}


def to_markdown(
    ranking: Ranking | None,
    pairs: Sequence[PairRow],
    study_name: str | None = None,
    *,
    names: Mapping[str, str] | None = None,
    style=None,
) -> str:
    """The win / tie / loss table and the strength table with intervals (bootstrap, and the
    sandwich's where the fit made them), the kind of fit, and the length- and style-controlled
    strengths when ``style`` (a ``ranking.covariates.StyleControl``) is given; ready to paste.

    ``names`` maps model names to display labels (e.g. ``line-3.6b (SFT)``).
    """
    names = names or {}
    lines = []
    if study_name:
        lines += [f"## {markdown_text(study_name)}", ""]
    pair_rows = []
    for pair in pairs:
        win, tie, loss = whole_percents(pair.wins, pair.ties, pair.losses)
        pair_rows.append([pair.label(names), f"{win}%", f"{tie}%", f"{loss}%"])
    lines.append(markdown_table(("Model pair", "Win", "Tie", "Loss"), pair_rows, align="lrrr"))
    if ranking is not None and ranking.models:
        lines += ["", _strength_table(ranking, names), ""]
        lines += [_method_line(ranking), _fit_line(ranking)]
        lines += [f"- {markdown_text(note)}" for note in ranking.notes]
    if style is not None:
        lines += _style_lines(style, names)
    return "\n".join(lines) + "\n"


def _strength_table(ranking: Ranking, names: Mapping[str, str]) -> str:
    level = round(ranking.confidence * 100)
    sandwich = any(m.sandwich_low is not None for m in ranking.models)
    header = ["Rank", "Model", "Strength", f"{level}% CI", "Win rate", "Games"]
    header += [f"{level}% CI (sandwich)"] if sandwich else []
    rows = []
    for i, m in enumerate(ranking.models, start=1):
        rate = f"{100 * m.win_rate:.1f}%" if m.win_rate is not None else "-"
        row = [i, names.get(m.name, m.name), f"{m.strength:.0f}"]
        row += [f"{m.ci_low:.0f} – {m.ci_high:.0f}", rate, m.games]
        if sandwich:
            row.append(
                f"{m.sandwich_low:.0f} – {m.sandwich_high:.0f}"
                if m.sandwich_low is not None
                else "-"
            )
        rows.append(row)
    return markdown_table(header, rows, align="rl" + "r" * (len(header) - 2))


def _fit_line(ranking: Ranking) -> str:
    """Which fit was made: maximum likelihood, or the regularised fallback (and how often the
    bootstrap needed it); where the sandwich intervals come from."""
    if ranking.regularised:
        text = (
            f"Regularised fit (alpha = {ranking.alpha:g}): the maximum-likelihood estimate does "
            "not exist for these votes"
        )
    else:
        text = "Maximum-likelihood fit (no regularisation)"
    if ranking.bootstrap_regularised:
        text += f"; {ranking.bootstrap_regularised} bootstrap rounds needed the fallback penalty"
    if any(m.sandwich_low is not None for m in ranking.models):
        text += "; sandwich intervals from the covariance clustered by question"
    return text + "."


def _style_lines(style, names: Mapping[str, str]) -> list[str]:
    level = round(style.confidence * 100)
    strengths = markdown_table(
        ("Model", "Strength", f"{level}% CI"),
        [
            [names.get(m.name, m.name), f"{m.strength:.0f}", f"{m.low:.0f} – {m.high:.0f}"]
            for m in style.models
        ],
        align="lrr",
    )
    effects = markdown_table(
        ("Feature", "Effect (Elo)", "CI"),
        [[c.feature, f"{c.elo:.1f}", f"{c.low:.1f} – {c.high:.1f}"] for c in style.coefficients],
        align="lrr",
    )
    lines = ["", "Length- and style-controlled strengths:", "", strengths, "", effects]
    return lines + [f"- {markdown_text(note)}" for note in style.notes]


def _method_line(ranking: Ranking) -> str:
    method = {"bradley_terry": "Bradley-Terry", "davidson": "Davidson (ties)"}[ranking.method]
    text = (
        f"{method} fit on {ranking.n_votes} votes, ties counted as half a win; strengths on the "
        "Elo-like scale (400 per factor of 10 in odds, mean 1000)"
    )
    if ranking.bootstrap:
        unit = "questions" if ranking.resample == "question" else "votes"
        text += f"; intervals from {ranking.bootstrap} bootstrap rounds over {unit}"
    if ranking.position_advantage_elo is not None:
        text += f"; first-position advantage {ranking.position_advantage_elo:.0f} Elo"
    return text + "."
