"""Length and style control: Bradley-Terry with covariates for how the two answers look.

As the Chatbot Arena leaderboard does it: beside the model strengths, the logistic model gets one
column per style feature, the normalised difference (a - b) / (a + b + 1) of the two answers'
counts (lmarena's ``add_one``), standardised over the votes (minus its mean, divided by its
standard deviation, as lmarena's ``construct_style_matrices`` does), so each coefficient is the
effect of one standard deviation of difference. Features: length (characters: Japanese has no
spaces to count words by), Markdown headers, list items and bold spans. The strengths of that fit
are what each model is worth once its answers' style is accounted for; the coefficients (log-odds
per standard deviation, and in Elo) say how much judges reward the style itself.

Fitted by statsmodels' binomial GLM with covariance clustered by question (``sandwich``), on
rows aggregated per comparison (and shown order, when the position advantage is fitted too); a
tie is half a win each way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from .sandwich import LogisticRows, cluster_logit, sum_to_zero
from .sentences import Note, sentence

FEATURES = ("length", "headers", "lists", "bold")
FEATURE_LABELS = {
    "length": "answer length",
    "headers": "Markdown headers",
    "lists": "list items",
    "bold": "bold spans",
}
_HEADER = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+・]|\d+[.)．）])\s+\S", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+?\*\*|__[^_\n]+?__")

NOTE_STYLE_FAILED = sentence(
    "The style-controlled fit could not be made: it needs votes on two questions or more, and "
    "no model (with its answers' style) may win or lose everything."
)
NOTE_STYLE_CONSTANT = sentence(
    "No {feature} difference between any two answers: left out of the fit."
)
NOTE_STYLE_CONFOUNDED = sentence(
    "The {feature} differences follow the models and the features before it exactly (they "
    "tell the fit nothing new): left out of the fit."
)
ARRAY_LENGTHS = "style arrays differ in length from the votes"


def style_counts(text: str) -> tuple[int, int, int, int]:
    """(characters, Markdown headers, list items, bold spans) of an answer."""
    return (
        len(text),
        len(_HEADER.findall(text)),
        len(_LIST_ITEM.findall(text)),
        len(_BOLD.findall(text)),
    )


def sd_or_1(sd: np.ndarray) -> np.ndarray:
    return np.where(sd > 0, sd, 1.0)


def normalised_differences(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(first - second) / (first + second + 1) per feature (lmarena's normalisation)."""
    first, second = np.asarray(first, float), np.asarray(second, float)
    return (first - second) / (first + second + 1.0)


@dataclass(frozen=True)
class StyleCoefficient:
    feature: str
    log_odds: float  # per standard deviation of the normalised difference
    elo: float
    low: float  # interval, Elo
    high: float
    sd: float  # the standard deviation it was scaled by


@dataclass(frozen=True)
class ControlledStrength:
    name: str
    strength: float  # Elo-like scale, mean 1000 over the fitted models
    low: float
    high: float


@dataclass(frozen=True)
class StyleControl:
    models: list[ControlledStrength]  # strongest first
    coefficients: list[StyleCoefficient]
    position_advantage_elo: float | None
    confidence: float
    n_votes: int
    notes: list[str]

    def model(self, name: str) -> ControlledStrength:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


def style_control(
    model_a: np.ndarray,
    model_b: np.ndarray,
    outcome: np.ndarray,
    question: np.ndarray,
    comparison: np.ndarray,
    style_a: np.ndarray,
    style_b: np.ndarray,
    *,
    models: Sequence[str],
    first_shown: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    confidence: float = 0.95,
    elo_per_log: float = 400 / math.log(10),
    elo_mean: float = 1000.0,
) -> StyleControl | None:
    """The covariate fit. One entry per vote: model indices, outcome codes (0 a, 1 tie, 2 b),
    question and comparison ids (ints), the two answers' ``style_counts`` (n, 4);
    ``first_shown``: 0 a, 1 b, -1 unknown (fits the position advantage too); ``weights``: what
    each vote counts for. None when the fit cannot be made."""
    a, b = np.asarray(model_a, np.int64), np.asarray(model_b, np.int64)
    n = a.size
    arrays = [outcome, question, comparison, style_a, style_b]
    arrays += [x for x in (first_shown, weights) if x is not None]
    if any(len(x) != n for x in arrays):
        raise ValueError(ARRAY_LENGTHS)
    if not n:
        return None
    out = np.asarray(outcome, np.int64)
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    shown = np.full(n, -1) if first_shown is None else np.asarray(first_shown, np.int64)
    b_first = shown == 1
    first, second = np.where(b_first, b, a), np.where(b_first, a, b)
    score_a = np.where(out == 0, 1.0, np.where(out == 1, 0.5, 0.0))
    score = np.where(b_first, 1 - score_a, score_a)
    diffs = normalised_differences(
        np.where(b_first[:, None], style_b, style_a), np.where(b_first[:, None], style_a, style_b)
    )
    # One row per comparison and shown order: the votes in it share the design row.
    keys = np.asarray(comparison, np.int64) * 3 + (shown + 1)
    _, row, inverse = np.unique(keys, return_index=True, return_inverse=True)
    games = np.bincount(inverse, weights=w)
    scores = np.bincount(inverse, weights=w * score)
    active = np.unique(np.concatenate([a, b]))
    k = active.size
    if k < 2:
        return None
    index = np.full(len(models), -1)
    index[active] = np.arange(k)
    positioned = bool((shown >= 0).any())
    design = np.zeros((row.size, k + int(positioned)))
    design[np.arange(row.size), index[first[row]]] = 1.0
    design[np.arange(row.size), index[second[row]]] = -1.0
    if positioned:
        design[:, k] = (shown[row] >= 0).astype(float)
    notes = []
    centre = np.average(diffs, axis=0, weights=w)
    diffs = diffs - centre
    sd = np.sqrt(np.average(diffs**2, axis=0, weights=w))
    # Which features tell the fit something the strengths (and the features before) do not:
    # the rank of the columns, read from their small Gram matrix (weighted by games).
    columns_all = np.hstack([design @ sum_to_zero(k, int(positioned)), diffs[row] / sd_or_1(sd)])
    gram = columns_all.T @ (columns_all * games[:, None])
    base = columns_all.shape[1] - len(FEATURES)
    kept: list[int] = []
    for f in range(len(FEATURES)):
        label = FEATURE_LABELS[FEATURES[f]]
        if sd[f] == 0:
            notes.append(Note(NOTE_STYLE_CONSTANT, feature=label))
            continue
        chosen = [*range(base), *(base + g for g in (*kept, f))]
        if np.linalg.matrix_rank(gram[np.ix_(chosen, chosen)], hermitian=True) < len(chosen):
            notes.append(Note(NOTE_STYLE_CONFOUNDED, feature=label))
            continue
        kept.append(f)
    columns = diffs[row][:, kept] / sd[kept]
    rows = LogisticRows(design, scores, games, np.asarray(question, np.int64)[row])
    found = cluster_logit(rows, k, extra_columns=columns)
    if found is None:
        return None
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    se = np.sqrt(np.clip(np.diag(found.cov), 0.0, None))
    strengths = [
        ControlledStrength(
            name=models[active[i]],
            strength=float(elo_mean + elo_per_log * found.params[i]),
            low=float(elo_mean + elo_per_log * (found.params[i] - z * se[i])),
            high=float(elo_mean + elo_per_log * (found.params[i] + z * se[i])),
        )
        for i in range(k)
    ]
    strengths.sort(key=lambda m: (-m.strength, m.name))
    offset = k + int(positioned)
    coefficients = []
    for column, f in enumerate(kept):
        beta, half = found.params[offset + column], z * se[offset + column]
        coefficients.append(
            StyleCoefficient(
                feature=FEATURES[f],
                log_odds=float(beta),
                elo=float(beta * elo_per_log),
                low=float((beta - half) * elo_per_log),
                high=float((beta + half) * elo_per_log),
                sd=float(sd[f]),
            )
        )
    return StyleControl(
        models=strengths,
        coefficients=coefficients,
        position_advantage_elo=float(found.params[k] * elo_per_log) if positioned else None,
        confidence=confidence,
        n_votes=n,
        notes=notes,
    )
