"""Counts -> a ``Ranking``: the options, the point fit, the intervals and the Elo-like scale.

Strengths are centred natural log-strengths (``log_strength``, mean 0 over the models with votes)
and the Elo-like scale ``strength = 1000 + 400 * log10(e) * log_strength`` (400 points per
factor of 10 in odds). ``strength`` is the fit on all votes: the plain maximum-likelihood
estimate when it exists, else the fallback regularisation (``existence``, noted); ``ci_low`` /
``ci_high`` are percentile bootstrap bounds, ``sandwich_low`` / ``sandwich_high`` normal bounds
from the cluster-robust covariance by question; ``rank_low`` / ``rank_high`` the ranks a model
can take: 1 + the models settled above it, and the count of models less those settled below it,
"settled" read from the interval of each gap, the rule the adjacent-pair sentences use. A model
without votes is not estimated (``estimated`` False) and listed last.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.special import expit
from scipy.stats import norm

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
from .existence import mle_exists
from .intervals import (
    DEFAULT_BOOTSTRAP,
    bootstrap_bounds,
    resampled_totals,
    resampling,
)
from .options import METHODS, RESAMPLE
from .robustness import Robustness, top_robustness
from .sandwich import covariances, embed, embed_diagonal
from .sentences import Note, sentence
from .solvers import FALLBACK_ALPHA, fit_totals
from .summaries import PairOrder, gap_intervals, gap_rank_ranges, pair_orders, rank_ranges

ELO_PER_LOG = 400 / math.log(10)
ELO_MEAN = 1000.0

UNKNOWN_METHOD = "unknown method {method!r}: use one of {choices}"
UNKNOWN_RESAMPLE = "unknown resample {resample!r}: use one of {choices}"
BAD_ALPHA = (
    "alpha must be positive (a fixed penalty), or None (the maximum-likelihood fit, with a "
    "fallback penalty only where it does not exist); got {alpha!r}"
)
BAD_BOOTSTRAP = "bootstrap must be 0 (no intervals) or a positive number of rounds; got {n!r}"
BAD_CONFIDENCE = "confidence must be between 0 and 1; got {confidence!r}"
POSITION_NEEDS_BT = "the position-advantage fit is available for bradley_terry only"
POSITION_NEEDS_COUNTS = "position=True needs counts aggregated with first_shown"
MODELS_MISMATCH = "models names {n_names} models but the counts hold {n_models}"

NOTE_DAVIDSON_NO_TIES = sentence("There are no ties: the Davidson fit reduces to Bradley-Terry.")
NOTE_NO_POSITION = sentence(
    "No vote records which answer was shown first: the position advantage was not estimated."
)
NOTE_REGULARISED = sentence(
    "These votes have no maximum-likelihood estimate, so the fit adds the fallback "
    "regularisation (alpha={alpha:g}), which pulls strengths towards the mean."
)
NOTE_BOOTSTRAP_REGULARISED = sentence(
    "{n} of {rounds} bootstrap resamples had no maximum-likelihood estimate and were fitted "
    "with the fallback regularisation (alpha={alpha:g})."
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
    sandwich_low: float | None = None  # normal bounds from the cluster-robust covariance
    sandwich_high: float | None = None
    se: float | None = None  # its standard error (Elo)
    rank_low: int | None = None  # best rank within the interval (1 = top)
    rank_high: int | None = None  # worst rank within the interval
    # False for a model with no votes: nothing was estimated (its strength is only the mean
    # it is parked at, and it is listed last).
    estimated: bool = True


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
    regularised: bool = False  # the point fit needed a penalty (``alpha`` > 0)
    bootstrap_regularised: int = 0  # resamples fitted with the fallback penalty
    # Which intervals rank_low / rank_high and ``orders`` come from: "bootstrap", "sandwich".
    interval_source: str | None = None
    orders: list[PairOrder] = field(default_factory=list)  # adjacent pairs, strongest first
    position_advantage_sandwich: tuple[float, float] | None = None
    # Covariances of the centred log-strengths (k x k, ``names_fitted`` order): inverse
    # information, and cluster-robust by question (None where not available).
    covariance: np.ndarray | None = None
    sandwich_covariance: np.ndarray | None = None
    names_fitted: list[str] = field(default_factory=list)
    robustness: Robustness | None = None

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
    alpha: float | None = None,
    position: bool = False,
    confidence: float = 0.95,
    sandwich: bool = True,
    robustness: bool = False,
) -> Ranking:
    """Fit strengths, bootstrap intervals and pairwise win probabilities.

    ``data``: ``Battle`` records, or ``Counts`` from ``aggregate`` (then ``models`` names the
    k indices and is required). With battles, ``models`` fixes the model list (models without
    votes are kept and noted); otherwise names are taken from the battles.
    ``bootstrap``: rounds (0: intervals equal the point estimate). ``resample``: "question"
    (all votes on a question together) or "vote". ``position``: also fit a first-position
    advantage (Bradley-Terry only; needs ``Battle.first_shown`` or counts with first_shown).
    ``alpha``: None (default) fits the maximum-likelihood estimate wherever it exists (point fit
    and each bootstrap resample) and the fallback penalty elsewhere; a positive number always
    adds that penalty. ``sandwich``: also cluster-robust intervals by question (statsmodels);
    ``robustness``: also the greedy count of votes that hold the top model up.
    """
    if method not in METHODS:
        raise ValueError(UNKNOWN_METHOD.format(method=method, choices=", ".join(METHODS)))
    if resample not in RESAMPLE:
        raise ValueError(UNKNOWN_RESAMPLE.format(resample=resample, choices=", ".join(RESAMPLE)))
    if alpha is not None and not (
        isinstance(alpha, int | float) and alpha > 0 and math.isfinite(alpha)
    ):
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
    totals = counts.totals()  # weighted where the votes carry weights: what is fitted
    wins, ties = wins_ties(totals)
    games = wins + wins.T + ties
    vote_wins, vote_ties = wins_ties(counts.vote_totals())  # plain counts: what is shown

    use_position = position
    if position:
        first, second, _ = positioned_scores(totals)
        if (first + second).sum() == 0:
            use_position = False
    if method == "davidson" and ties.sum() == 0 and counts.n_votes:
        notes.append(NOTE_DAVIDSON_NO_TIES)

    # Models without votes stay out of the fit and sit at the mean (log-strength 0).
    active = np.flatnonzero(games.sum(axis=1) > 0)
    fit_kind = "position" if use_position else method
    fitting = len(active) >= 2
    sub = submatrix(totals, active)
    used_alpha = float(alpha) if alpha is not None else 0.0
    if fitting and alpha is None and not mle_exists(sub, fit_kind):
        used_alpha = FALLBACK_ALPHA
    graph_alpha = used_alpha if used_alpha > 0 else FALLBACK_ALPHA
    notes[:0] = graph_notes(names, wins + ties / 2, games, graph_alpha, counts.n_votes)
    if position and not use_position:
        notes.append(NOTE_NO_POSITION)
    if fitting and alpha is None and used_alpha > 0:
        notes.append(Note(NOTE_REGULARISED, alpha=used_alpha))

    theta = np.zeros(k)
    extra: float | None = {"position": 0.0, "davidson": 1.0}.get(fit_kind)
    x = np.zeros(0)
    if fitting:
        theta_active, extra, fallback = fit_totals(sub, fit_kind, used_alpha)
        theta[active] = theta_active
        if fallback:
            notes.append(fallback)
        x = _fit_vector(theta_active, extra, fit_kind)

    covariance, robust = covariances(
        counts, active, sub, x, fit_kind, used_alpha, sandwich and fitting, notes
    )

    effective_resample, resample_notes = resampling(counts, bootstrap, resample)
    notes.extend(resample_notes)
    low, high, extra_ci, samples, n_regularised = theta, theta, (extra, extra), None, 0
    if bootstrap and fitting:
        chunks = resampled_totals(counts, bootstrap, effective_resample, seed)
        booted = bootstrap_bounds(chunks, active, theta, extra, fit_kind, alpha, confidence)
        low, high, extra_ci = booted.low, booted.high, booted.extra_ci
        samples, n_regularised = booted.samples, booted.regularised
        if n_regularised and alpha is None:
            notes.append(
                Note(
                    NOTE_BOOTSTRAP_REGULARISED,
                    n=n_regularised,
                    rounds=bootstrap,
                    alpha=FALLBACK_ALPHA,
                )
            )

    z = float(norm.ppf(1 - (1 - confidence) / 2))
    sandwich_se = embed_diagonal(robust, active, k)
    source = "bootstrap" if samples is not None else "sandwich" if robust is not None else None
    if source == "bootstrap":
        range_low, range_high = low, high
    elif source == "sandwich":
        range_low, range_high = theta - z * sandwich_se, theta + z * sandwich_se
    else:
        range_low = range_high = theta
    elo = ELO_MEAN + ELO_PER_LOG * theta
    order = sorted(active.tolist(), key=lambda i: (-theta[i], names[i]))
    # Rank ranges and the "settled" sentences read one rule: a model ranks above another when
    # the interval of the gap between them leaves out zero (bootstrap, else sandwich).
    robust_embedded = embed(robust, active, k) if robust is not None else None
    if source is not None:
        rank_low, rank_high = gap_rank_ranges(
            active,
            theta,
            confidence,
            samples=samples,
            covariance=robust_embedded if samples is None else None,
        )
    else:
        rank_low, rank_high = rank_ranges(range_low[active], range_high[active])
    ranks = {
        int(i): (int(lo), int(hi)) for i, lo, hi in zip(active, rank_low, rank_high, strict=True)
    }
    gaps = gap_intervals(
        order,
        elo,
        confidence,
        samples=samples,
        covariance=robust_embedded if samples is None else None,
        scale=ELO_PER_LOG,
    )

    nu = extra if fit_kind == "davidson" else None
    advantage = extra if fit_kind == "position" else None
    advantage_ci = advantage_sandwich = None
    if advantage is not None:
        advantage_ci = (extra_ci[0] * ELO_PER_LOG, extra_ci[1] * ELO_PER_LOG)
        if robust is not None:
            half = z * math.sqrt(max(robust[-1, -1], 0.0)) * ELO_PER_LOG
            advantage_sandwich = (advantage * ELO_PER_LOG - half, advantage * ELO_PER_LOG + half)
    fitted_names = [names[i] for i in active]
    win_probability, tie_probability = _probabilities(names, theta, nu)
    rows = _model_rows(names, theta, low, high, vote_wins, vote_ties)
    fitted_set = set(active.tolist()) if fitting else set()
    rows = [
        _with_intervals(row, i, theta, sandwich_se if robust is not None else None, z, ranks)
        if i in fitted_set
        else replace(row, estimated=False)
        for i, row in rows
    ]
    rows.sort(key=lambda m: (not m.estimated, -m.log_strength, m.name))
    return Ranking(
        models=rows,
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
        alpha=used_alpha,
        confidence=confidence,
        pair_counts=PairMap(
            names,
            np.rint(np.stack([vote_wins, vote_ties, vote_wins.T], axis=-1)).astype(np.int64),
            present=(vote_wins + vote_wins.T + vote_ties) > 0,
        ),
        tie_parameter=nu,
        tie_probability=tie_probability,
        regularised=used_alpha > 0,
        bootstrap_regularised=n_regularised,
        interval_source=source,
        orders=pair_orders(names, gaps, round(confidence * 100)),
        position_advantage_sandwich=advantage_sandwich,
        covariance=covariance[: len(active), : len(active)] if covariance is not None else None,
        sandwich_covariance=robust[: len(active), : len(active)] if robust is not None else None,
        names_fitted=fitted_names,
        robustness=(
            top_robustness(
                sub, submatrix(counts.vote_totals(), active), fitted_names, fit_kind, alpha
            )
            if robustness and fitting
            else None
        ),
    )


def _fit_vector(theta: np.ndarray, extra: float | None, kind: str) -> np.ndarray:
    """The solvers' parameter vector: strengths, then the advantage or log nu."""
    if kind == "position":
        return np.append(theta, extra)
    if kind == "davidson":
        return np.append(theta, math.log(extra))
    return np.asarray(theta, dtype=np.float64)


def _with_intervals(row, i, theta, se, z, ranks) -> ModelStrength:
    """The row with its sandwich bounds (Elo) and rank range filled in."""
    changes = {}
    if se is not None:
        half = z * se[i]
        changes |= {
            "sandwich_low": float(ELO_MEAN + ELO_PER_LOG * (theta[i] - half)),
            "sandwich_high": float(ELO_MEAN + ELO_PER_LOG * (theta[i] + half)),
            "se": float(ELO_PER_LOG * se[i]),
        }
    if i in ranks:
        changes |= {"rank_low": ranks[i][0], "rank_high": ranks[i][1]}
    return replace(row, **changes)


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
) -> list[tuple[int, ModelStrength]]:
    """(index, row) per model on the Elo-like scale, in the names' order."""
    row_wins, row_ties, row_losses = wins.sum(axis=1), ties.sum(axis=1), wins.sum(axis=0)
    elo, elo_low, elo_high = (ELO_MEAN + ELO_PER_LOG * x for x in (theta, low, high))
    rows = []
    for i, name in enumerate(names):
        w_i, t_i, l_i = (round(float(x)) for x in (row_wins[i], row_ties[i], row_losses[i]))
        n_i = w_i + t_i + l_i
        rows.append(
            (
                i,
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
                ),
            )
        )
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
