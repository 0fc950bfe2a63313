"""How many votes hold the top model up: a greedy estimate of the fewest votes whose removal
would put another model first.

Greedy, guided by influence: at each step, every kind of vote (model pair, outcome, shown order)
gets the change one fewer of it would make to the leader's lead over each challenger (one Newton
step: the vote's gradient through the inverse information); the vote that closes some lead
fastest is removed, the model refitted on what is left, and so on until another model leads.
Far from the crossing several votes of the chosen kind go at once (a quarter of the estimated
distance), near it one at a time. It is an upper bound on the true minimum (a search over all
subsets is out of reach), usually close to it. Bradley-Terry and the position fit are logistic,
which gives the gradients in closed form; a Davidson ranking is probed through its
Bradley-Terry fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from .counts import OUTCOME_A, OUTCOME_TIE, POS_A_FIRST, POS_B_FIRST
from .existence import mle_exists
from .sentences import sentence
from .solvers import FALLBACK_ALPHA, fit_totals, objective

METHOD = sentence(
    "greedy: remove the vote whose influence narrows the leader's lead fastest, refit, repeat"
)
DEFAULT_LIMIT = 2000
# A refit of a tie (4 - 4) puts the two strengths equal up to the solver's rounding, which may
# fall either way (it did with scipy 1.17): a lead smaller than this is a tie, not a new top.
LEAD_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Robustness:
    top: str
    votes: int | None  # fewest votes found whose removal changes the top model; None: > limit
    new_top: str | None  # who leads once they are removed
    n_votes: int
    limit: int
    method: str = METHOD

    @property
    def share(self) -> float | None:
        return self.votes / self.n_votes if self.votes is not None and self.n_votes else None


def top_robustness(
    totals: np.ndarray,
    vote_totals: np.ndarray,
    names: list[str],
    kind: str,
    alpha: float | None,
    limit: int = DEFAULT_LIMIT,
) -> Robustness | None:
    """Channel totals (C, k, k) of the models with votes (weighted), their plain vote counts,
    the names, the fit kind and alpha (None: the maximum-likelihood rule after each removal)."""
    k = len(names)
    if k < 2 or vote_totals.sum() == 0:
        return None
    if kind == "davidson":
        kind = "bradley_terry"
    positioned = kind == "position"
    weights = totals.astype(np.float64).copy()
    votes = vote_totals.astype(np.float64).copy()
    n_votes = int(round(votes.sum()))
    limit = min(limit, n_votes)
    x = _fit(weights, kind, alpha)
    top = int(np.argmax(x[:k]))
    cells = np.argwhere(votes > 0)
    design, score = _cells(cells, k, positioned)
    removed = 0
    while removed < limit:
        margins = x[top] - x[:k]
        challengers = np.flatnonzero(np.arange(k) != top)
        if (margins[challengers] < -LEAD_TOLERANCE).any():
            break
        live = votes[tuple(cells.T)] > 0
        per_vote = weights[tuple(cells.T)] / np.maximum(votes[tuple(cells.T)], 1)
        neg_hess = objective(weights, kind, _alpha(weights, kind, alpha))(x[None])[2][0]
        targets = np.zeros((x.size, challengers.size))
        targets[top] = 1.0
        targets[challengers, np.arange(challengers.size)] = -1.0
        u = np.linalg.solve(neg_hess, targets)  # (p, m)
        residual = score - expit(design @ x)  # (cells,)
        # Removing one vote of a cell moves x by -w H^-1 g, g = residual * design row.
        change = -(per_vote * residual)[:, None] * (design @ u)  # (cells, m)
        closing = np.where(live[:, None] & (change < 0), -change, 0.0)
        with np.errstate(divide="ignore"):
            needed = np.where(closing > 0, margins[challengers][None, :] / closing, np.inf)
        if not np.isfinite(needed).any():
            break
        cell, _ = np.unravel_index(np.argmin(needed), needed.shape)
        available = int(votes[tuple(cells[cell])])
        step = max(1, min(available, int(needed.min() // 4), limit - removed))
        index = tuple(cells[cell])
        weights[index] -= per_vote[cell] * step
        votes[index] -= step
        weights[index] = max(weights[index], 0.0)
        removed += step
        x = _fit(weights, kind, alpha, start=x)
        leader = int(np.argmax(x[:k]))
        if leader != top and x[leader] > x[top] + LEAD_TOLERANCE:
            return Robustness(names[top], removed, names[leader], n_votes, limit)
    return Robustness(names[top], None, None, n_votes, limit)


def _alpha(totals: np.ndarray, kind: str, alpha: float | None) -> float:
    if alpha is not None:
        return alpha
    return 0.0 if mle_exists(totals, kind) else FALLBACK_ALPHA


def _fit(totals: np.ndarray, kind: str, alpha: float | None, start=None) -> np.ndarray:
    used = _alpha(totals, kind, alpha)
    if start is None:
        theta, extra, _ = fit_totals(totals, kind, used)
    else:
        k = totals.shape[-1]
        extra_start = float(start[k]) if kind == "position" else None
        theta, extra, _ = fit_totals(totals[None], kind, used, start=(start[:k], extra_start))
        theta, extra = theta[0], None if extra is None else float(extra[0])
    return np.append(theta, extra) if kind == "position" else np.asarray(theta)


def _cells(cells: np.ndarray, k: int, positioned: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's (channel, i, j) as a logistic design row over (strengths, [advantage]) and
    the score of the row's first side (1 won, 1/2 tie, 0 lost)."""
    channel, i, j = cells.T
    outcome, position = channel % 3, channel // 3
    score_a = np.where(outcome == OUTCOME_A, 1.0, np.where(outcome == OUTCOME_TIE, 0.5, 0.0))
    design = np.zeros((len(cells), k + int(positioned)))
    rows = np.arange(len(cells))
    b_first = positioned & (position == POS_B_FIRST)
    first = np.where(b_first, j, i)
    second = np.where(b_first, i, j)
    design[rows, first] = 1.0
    design[rows, second] = -1.0
    score = np.where(b_first, 1.0 - score_a, score_a)
    if positioned:
        design[:, k] = ((position == POS_A_FIRST) | b_first).astype(np.float64)
    return design, score
