"""Whether the maximum-likelihood estimate exists, which decides the regularisation.

Every fit is the plain maximum-likelihood estimate (alpha = 0) when it exists, and falls back to
``solvers.FALLBACK_ALPHA`` only when it does not; bootstrap resamples follow the same rule one by
one. The estimate exists, finite and unique, exactly when no direction of the parameters raises
the likelihood of every vote at once (no "separation"):

- Bradley-Terry: the score graph (an edge i -> j when i scored against j, a tie being half a win
  each way) is strongly connected: every group of models has both won and lost against the rest
  (Zermelo 1929; Hunter 2004, assumption 1).
- Davidson: the same graph with ties as edges both ways, and the votes hold both ties and
  decisive outcomes (else nu is 0 or infinite).
- Position advantage: the logistic model's own condition. With each vote's design row v
  oriented towards its outcome (e_first - e_second + e_advantage when the first-shown answer
  scored, its negative when the second did), the estimate exists iff the rows span the
  parameters (less the common shift of the strengths) and some strictly positive combination of
  them is zero (Stiemke's alternative to a separating direction; Albert and Anderson 1984). That
  is a small linear programme; it is solved only when a sufficient check fails (the pairs shown
  in one order that went both ways already pin every parameter).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from .counts import positioned_scores, wins_ties


def strongly_connected(edges: np.ndarray) -> bool:
    """Whether a k x k adjacency (edge i -> j where edges[i, j] > 0) is one strong component."""
    k = edges.shape[-1]
    if k < 2:
        return True
    n, _ = connected_components(csr_matrix(edges > 0), directed=True, connection="strong")
    return n == 1


def mle_exists(totals: np.ndarray, kind: str) -> bool:
    """Whether channel totals (C, k, k) of the models in the fit have a finite, unique MLE."""
    wins, ties = wins_ties(totals)
    if kind == "position":
        return _position_mle_exists(*positioned_scores(totals))
    if kind == "davidson":
        decisive = wins.sum()
        return bool(ties.sum() > 0 and decisive > 0 and strongly_connected(wins + ties))
    return strongly_connected(wins + ties / 2)


def mle_exists_each(totals: np.ndarray, kind: str) -> np.ndarray:
    """``mle_exists`` for every round of a batch (r, C, k, k); a boolean (r,) array."""
    return np.array([mle_exists(round_totals, kind) for round_totals in totals], dtype=bool)


def _position_mle_exists(first: np.ndarray, second: np.ndarray, unpositioned: np.ndarray) -> bool:
    """The logistic condition for the position model (first / second indexed [first, second];
    ``unpositioned`` holds scores of votes whose order is unknown)."""
    k = first.shape[-1]
    if not strongly_connected(first + second.T + unpositioned):
        return False  # the strengths alone already separate
    rows, pinned = [], []
    for f, s in zip(*np.nonzero((first > 0) | (second > 0)), strict=True):
        v = np.zeros(k + 1)
        v[f], v[s], v[k] = 1.0, -1.0, 1.0
        if first[f, s] > 0:
            rows.append(v)
        if second[f, s] > 0:
            rows.append(-v)
        if first[f, s] > 0 and second[f, s] > 0:
            pinned.append(v)
    if not pinned and not rows:
        return False
    for i, j in zip(*np.nonzero(unpositioned > 0), strict=True):
        v = np.zeros(k + 1)
        v[i], v[j] = 1.0, -1.0
        rows.append(v)
    # The common shift of the strengths changes nothing: add it, then ask for full rank.
    shift = np.append(np.ones(k), 0.0)
    if pinned and np.linalg.matrix_rank(np.vstack([*pinned, shift])) == k + 1:
        return True
    design = np.vstack(rows)
    if np.linalg.matrix_rank(np.vstack([design, shift])) < k + 1:
        return False
    found = linprog(
        np.zeros(len(design)),
        A_eq=design.T,
        b_eq=np.zeros(k + 1),
        bounds=(1, None),
        method="highs",
    )
    return bool(found.status == 0)
