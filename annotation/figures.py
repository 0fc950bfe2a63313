"""The ranking figures beyond the main fit (results page, JSON export): how much each vote
weighs in the fit, the shown order of imported votes, the length- and style-controlled fit,
per-category strengths, and all of that as JSON. The fits themselves are ``ranking``'s."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from generation.models import Answer

from . import ranking, reports
from .models import Comparison, Study, Vote
from .ranking.covariates import FEATURE_LABELS, StyleControl, style_control, style_counts

# Per-category fits run on every results page: fewer bootstrap rounds than the main fit (their
# sandwich intervals are shown beside them).
CATEGORY_BOOTSTRAP = 200
OUTCOME_CODES = {"a": 0, "tie": 1, "b": 2}


def shown_first(vote: Vote) -> str | None:
    """Which answer ("a" / "b") was shown first: the assignment's left side, or what an import
    recorded; None when unknown."""
    if vote.assignment_id:
        return vote.assignment.left
    return vote.first_shown or None


def battles(
    rows: Sequence[reports.VoteRow], weights: Sequence[float], position: bool
) -> list[ranking.Battle]:
    """The fit's records; with ``position`` only votes whose shown order is known (votes cast
    here, and imports that kept the order)."""
    return [
        ranking.Battle(r.model_a, r.model_b, r.outcome, r.question, r.shown_left, weight=w)
        for r, w in zip(rows, weights, strict=True)
        if not position or r.shown_left is not None
    ]


def category_strengths(
    rows: Sequence[reports.VoteRow], weights: Sequence[float], models: list[str], options: dict
) -> dict[str, ranking.Ranking]:
    """A fit per question category (only when there are two categories or more)."""
    by_category: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_category[row.category].append(i)
    if len(by_category) < 2:
        return {}
    fitted = {}
    for category in sorted(by_category):
        chosen = by_category[category]
        picked = [rows[i] for i in chosen]
        used = sorted({m for r in picked for m in (r.model_a, r.model_b)}, key=models.index)
        fitted[category] = ranking.rank(
            battles(picked, [weights[i] for i in chosen], options["position"]),
            models=used,
            method=options["method"],
            position=options["position"],
            bootstrap=min(options["bootstrap"], CATEGORY_BOOTSTRAP),
            resample=options["resample"],
            seed=options["seed"],
        )
    return fitted


def style_fit(
    rows: Sequence[reports.VoteRow], weights: Sequence[float], models: list[str], options: dict
) -> StyleControl | None:
    """The length- and style-controlled fit of the votes (``ranking.covariates``)."""
    if not rows:
        return None
    pairs = dict(
        (str(pk), (a, b))
        for pk, a, b in Comparison.objects.filter(pk__in={int(r.comparison) for r in rows})
        .order_by()
        .values_list("pk", "answer_a_id", "answer_b_id")
    )
    answer_ids = {answer for pair in pairs.values() for answer in pair}
    styles = {
        pk: style_counts(text)
        for pk, text in Answer.objects.filter(pk__in=answer_ids).values_list("pk", "text")
    }
    index = {name: i for i, name in enumerate(models)}
    questions: dict[str, int] = {}
    position = options["position"]
    return style_control(
        np.array([index[r.model_a] for r in rows]),
        np.array([index[r.model_b] for r in rows]),
        np.array([OUTCOME_CODES[r.outcome] for r in rows]),
        np.array([questions.setdefault(r.question, len(questions)) for r in rows]),
        np.array([int(r.comparison) for r in rows]),
        np.array([styles[pairs[r.comparison][0]] for r in rows], dtype=float),
        np.array([styles[pairs[r.comparison][1]] for r in rows], dtype=float),
        models=models,
        first_shown=(
            np.array([{"a": 0, "b": 1}.get(r.shown_left, -1) for r in rows]) if position else None
        ),
        weights=np.asarray(weights, dtype=float),
    )


def _model_extras(fitted: ranking.Ranking) -> dict[str, dict]:
    return {
        m.name: {
            "sandwich_low": m.sandwich_low,
            "sandwich_high": m.sandwich_high,
            "se": m.se,
            "rank_low": m.rank_low,
            "rank_high": m.rank_high,
            "estimated": m.estimated,
        }
        for m in fitted.models
    }


def _strengths(fitted: ranking.Ranking) -> list[dict]:
    return [
        {
            "name": m.name,
            "strength": m.strength,
            "ci_low": m.ci_low,
            "ci_high": m.ci_high,
            "sandwich_low": m.sandwich_low,
            "sandwich_high": m.sandwich_high,
            "games": m.games,
        }
        for m in fitted.models
    ]


def figures_json(
    *,
    study: Study,
    fitted: ranking.Ranking | None,
    options: dict,
    style: StyleControl | None,
    categories: dict[str, ranking.Ranking],
    weighted_votes: int,
) -> dict:
    """The new figures' part of the JSON export (merged into ``results_export.results_json``)."""
    out: dict = {
        "options": {
            "method": options["method"],
            "position": options["position"],
            "resample": options["resample"],
            "bootstrap": options["bootstrap"],
            "seed": options["seed"],
            "style_control": options["style_control"],
        },
        "sampling": {
            "mode": study.sampling,
            "floor": study.sampling_floor,
            "weighted_votes": weighted_votes,
        },
    }
    if fitted is None:
        return out
    out["fit"] = {
        "maximum_likelihood": not fitted.regularised,
        "alpha": fitted.alpha,
        "bootstrap_regularised": fitted.bootstrap_regularised,
        "interval_source": fitted.interval_source,
        "position_advantage_elo": fitted.position_advantage_elo,
        "position_advantage_ci": fitted.position_advantage_ci,
        "position_advantage_sandwich": fitted.position_advantage_sandwich,
    }
    out["model_intervals"] = _model_extras(fitted)
    out["orders"] = [asdict(order) for order in fitted.orders]
    if fitted.robustness is not None:
        found = fitted.robustness
        out["robustness"] = {
            "top": found.top,
            "votes": found.votes,
            "share": found.share,
            "new_top": found.new_top,
            "limit": found.limit,
            "method": found.method,
        }
    if categories:
        out["category_strengths"] = {
            category: _strengths(found) for category, found in categories.items()
        }
    if options["style_control"]:
        out["style_control"] = None
        if style is not None:
            out["style_control"] = {
                "models": [asdict(m) for m in style.models],
                "coefficients": [
                    {**asdict(c), "label": FEATURE_LABELS[c.feature]} for c in style.coefficients
                ],
                "position_advantage_elo": style.position_advantage_elo,
                "notes": style.notes,
            }
    return out
