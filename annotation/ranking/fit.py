"""Counts -> a ``Ranking``: the options, the point fit, the intervals and the Elo-like scale.

Strengths are centred natural log-strengths (``log_strength``, mean 0 over the models with votes)
and the Elo-like scale ``strength = 1000 + 400 * log10(e) * log_strength`` (400 points per
factor of 10 in odds). ``strength`` is the fit on all votes; ``ci_low`` / ``ci_high`` are
percentile bootstrap bounds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from .counts import (
    DUPLICATE_MODEL,
    Battle,
    Counts,
    aggregate,
    battles_to_counts,
    positioned_scores,
    submatrix,
    wins_ties,
)
from .diagnostics import graph_notes
from .intervals import (
    DEFAULT_BOOTSTRAP,
    RESAMPLE,
    bootstrap_bounds,
    resampled_totals,
    resampling,
)
from .solvers import DEFAULT_ALPHA, fit_totals

ELO_PER_LOG = 400 / math.log(10)
ELO_MEAN = 1000.0
METHODS = ("bradley_terry", "davidson")

UNKNOWN_METHOD = "unknown method {method!r}: use one of {choices}"
UNKNOWN_RESAMPLE = "unknown resample {resample!r}: use one of {choices}"
BAD_ALPHA = "alpha must be positive (it keeps strengths finite); got {alpha!r}"
BAD_BOOTSTRAP = "bootstrap must be 0 (no intervals) or a positive number of rounds; got {n!r}"
BAD_CONFIDENCE = "confidence must be between 0 and 1; got {confidence!r}"
POSITION_NEEDS_BT = "the position-advantage fit is available for bradley_terry only"
POSITION_NEEDS_COUNTS = "position=True needs counts aggregated with first_shown"
MODELS_MISMATCH = "models names {n_names} models but the counts hold {n_models}"

NOTE_DAVIDSON_NO_TIES = "There are no ties: the Davidson fit reduces to Bradley-Terry."
NOTE_NO_POSITION = (
    "No vote records which answer was shown first: the position advantage was not estimated."
)


class PairMap(Mapping):
    """Read-only ``{(a, b): value}`` over ordered model pairs, read from a k x k (x m) array.

    Built in O(1) and computed on access, so a ranking of many models stays cheap. Values are
    floats, or tuples of ints for a (k, k, m) integer array. ``present`` limits the keys.
    """

    def __init__(self, names: Sequence[str], values: np.ndarray, present: np.ndarray | None = None):
        self._names = list(names)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._values = values
        k = len(self._names)
        self._present = (
            ~np.eye(k, dtype=bool) if present is None else present & ~np.eye(k, dtype=bool)
        )

    def __getitem__(self, key: tuple[str, str]):
        try:
            i, j = self._index[key[0]], self._index[key[1]]
        except (KeyError, TypeError, IndexError):
            raise KeyError(key) from None
        if not self._present[i, j]:
            raise KeyError(key)
        value = self._values[i, j]
        if np.ndim(value):
            return tuple(int(v) for v in value)
        return float(value)

    def __iter__(self):
        for i, j in zip(*np.nonzero(self._present), strict=True):
            yield self._names[i], self._names[j]

    def __len__(self) -> int:
        return int(self._present.sum())

    def __repr__(self) -> str:
        return f"PairMap({dict(self)!r})"


@dataclass(frozen=True)
class ModelStrength:
    name: str
    strength: float
    ci_low: float
    ci_high: float
    log_strength: float
    wins: int
    ties: int
    losses: int
    games: int
    win_rate: float | None  # (wins + ties / 2) / games; None without games


@dataclass(frozen=True)
class Ranking:
    """A fitted ranking; ``models`` is strongest first."""

    models: list[ModelStrength]
    win_probability: PairMap  # (a, b) -> expected score of a against b, every ordered pair
    notes: list[str]
    method: str
    position_advantage_elo: float | None
    n_votes: int
    n_questions: int
    bootstrap: int
    resample: str
    seed: int
    alpha: float
    confidence: float
    # (a, b) -> (wins of a over b, ties, losses of a to b), both orders, only pairs that met.
    pair_counts: PairMap | dict = field(default_factory=dict)
    position_advantage_ci: tuple[float, float] | None = None
    tie_parameter: float | None = None  # Davidson's nu
    tie_probability: PairMap | None = None  # Davidson only

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def model(self, name: str) -> ModelStrength:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


def rank(
    data: Counts | Iterable[Battle],
    *,
    models: Sequence[str] | None = None,
    method: str = "bradley_terry",
    bootstrap: int = DEFAULT_BOOTSTRAP,
    resample: str = "question",
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
    position: bool = False,
    confidence: float = 0.95,
) -> Ranking:
    """Fit strengths, bootstrap intervals and pairwise win probabilities.

    ``data``: ``Battle`` records, or ``Counts`` from ``aggregate`` (then ``models`` names the
    k indices and is required). With battles, ``models`` fixes the model list (models without
    votes are kept and noted); otherwise names are taken from the battles.
    ``bootstrap``: rounds (0: intervals equal the point estimate). ``resample``: "question"
    (all votes on a question together) or "vote". ``position``: also fit a first-position
    advantage (Bradley-Terry only; needs ``Battle.first_shown`` or counts with first_shown).
    """
    if method not in METHODS:
        raise ValueError(UNKNOWN_METHOD.format(method=method, choices=", ".join(METHODS)))
    if resample not in RESAMPLE:
        raise ValueError(UNKNOWN_RESAMPLE.format(resample=resample, choices=", ".join(RESAMPLE)))
    if not (isinstance(alpha, int | float) and alpha > 0 and math.isfinite(alpha)):
        raise ValueError(BAD_ALPHA.format(alpha=alpha))
    if not (isinstance(bootstrap, int) and bootstrap >= 0):
        raise ValueError(BAD_BOOTSTRAP.format(n=bootstrap))
    if not 0 < confidence < 1:
        raise ValueError(BAD_CONFIDENCE.format(confidence=confidence))
    if position and method != "bradley_terry":
        raise ValueError(POSITION_NEEDS_BT)

    counts, names = _counts(data, models, position)
    k = len(names)
    notes: list[str] = []
    totals = counts.totals()
    wins, ties = wins_ties(totals)
    games = wins + wins.T + ties
    notes.extend(graph_notes(names, wins + ties / 2, games, alpha, counts.n_votes))

    use_position = position
    if position:
        first, second, _ = positioned_scores(totals)
        if (first + second).sum() == 0:
            notes.append(NOTE_NO_POSITION)
            use_position = False
    if method == "davidson" and ties.sum() == 0 and counts.n_votes:
        notes.append(NOTE_DAVIDSON_NO_TIES)

    # Models without votes stay out of the fit and sit at the mean (log-strength 0).
    active = np.flatnonzero(games.sum(axis=1) > 0)
    fit_kind = "position" if use_position else method
    theta = np.zeros(k)
    extra: float | None = {"position": 0.0, "davidson": 1.0}.get(fit_kind)
    if len(active) >= 2:
        theta_active, extra, fallback = fit_totals(submatrix(totals, active), fit_kind, alpha)
        theta[active] = theta_active
        if fallback:
            notes.append(fallback)

    effective_resample, resample_notes = resampling(counts, bootstrap, resample)
    notes.extend(resample_notes)
    low, high, extra_ci = theta, theta, (extra, extra)
    if bootstrap and len(active) >= 2:
        chunks = resampled_totals(counts, bootstrap, effective_resample, seed)
        low, high, extra_ci = bootstrap_bounds(
            chunks, active, theta, extra, fit_kind, alpha, confidence
        )

    nu = extra if fit_kind == "davidson" else None
    advantage = extra if fit_kind == "position" else None
    advantage_ci = None
    if advantage is not None:
        advantage_ci = (extra_ci[0] * ELO_PER_LOG, extra_ci[1] * ELO_PER_LOG)
    win_probability, tie_probability = _probabilities(names, theta, nu)
    return Ranking(
        models=_model_rows(names, theta, low, high, wins, ties),
        win_probability=win_probability,
        notes=notes,
        method=method,
        position_advantage_elo=advantage * ELO_PER_LOG if advantage is not None else None,
        position_advantage_ci=advantage_ci,
        n_votes=counts.n_votes,
        n_questions=counts.n_questions,
        bootstrap=bootstrap,
        resample=effective_resample,
        seed=seed,
        alpha=float(alpha),
        confidence=confidence,
        pair_counts=PairMap(names, np.stack([wins, ties, wins.T], axis=-1), present=games > 0),
        tie_parameter=nu,
        tie_probability=tie_probability,
    )


def _counts(
    data: Counts | Iterable[Battle], models: Sequence[str] | None, position: bool
) -> tuple[Counts, list[str]]:
    if not isinstance(data, Counts):
        return battles_to_counts(data, models, position=position)
    names = list(models) if models is not None else [str(i) for i in range(data.n_models)]
    if len(names) != data.n_models:
        raise ValueError(MODELS_MISMATCH.format(n_names=len(names), n_models=data.n_models))
    if len(set(names)) != len(names):
        raise ValueError(DUPLICATE_MODEL.format(name=_first_duplicate(names)))
    if position and not data.positioned:
        raise ValueError(POSITION_NEEDS_COUNTS)
    return data, names


def _model_rows(
    names: list[str],
    theta: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    wins: np.ndarray,
    ties: np.ndarray,
) -> list[ModelStrength]:
    """One row per model on the Elo-like scale, strongest first."""
    row_wins, row_ties, row_losses = wins.sum(axis=1), ties.sum(axis=1), wins.sum(axis=0)
    elo, elo_low, elo_high = (ELO_MEAN + ELO_PER_LOG * x for x in (theta, low, high))
    rows = []
    for i, name in enumerate(names):
        w_i, t_i, l_i = int(row_wins[i]), int(row_ties[i]), int(row_losses[i])
        n_i = w_i + t_i + l_i
        rows.append(
            ModelStrength(
                name=name,
                strength=float(elo[i]),
                ci_low=float(elo_low[i]),
                ci_high=float(elo_high[i]),
                log_strength=float(theta[i]),
                wins=w_i,
                ties=t_i,
                losses=l_i,
                games=n_i,
                win_rate=(w_i + t_i / 2) / n_i if n_i else None,
            )
        )
    rows.sort(key=lambda m: (-m.log_strength, m.name))
    return rows


def rank_arrays(
    model_a_idx: Sequence[int] | np.ndarray,
    model_b_idx: Sequence[int] | np.ndarray,
    outcome: Sequence[int | str] | np.ndarray,
    question_idx: Sequence[int] | np.ndarray | None,
    *,
    models: Sequence[str],
    first_shown: Sequence[int | str | None] | np.ndarray | None = None,
    **options,
) -> Ranking:
    """``aggregate`` then ``rank``: votes as parallel arrays indexing ``models``."""
    counts = aggregate(
        model_a_idx, model_b_idx, outcome, question_idx, len(models), first_shown=first_shown
    )
    return rank(counts, models=models, **options)


def _first_duplicate(names: Sequence[str]) -> str:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return ""


def _probabilities(
    names: list[str], theta: np.ndarray, nu: float | None
) -> tuple[PairMap, PairMap | None]:
    """Expected score of a against b (P(win) + P(tie)/2) for every ordered pair; Davidson's
    tie probabilities."""
    d = theta[:, None] - theta[None, :]
    if nu is None:
        return PairMap(names, expit(d)), None
    log_z = np.logaddexp(np.logaddexp(d / 2, -d / 2), math.log(nu))
    tie = np.exp(math.log(nu) - log_z)
    return PairMap(names, np.exp(d / 2 - log_z) + tie / 2), PairMap(names, tie)
