"""Covariances of the fitted strengths: model-based, and cluster-robust (sandwich) by question.

Votes on one question are not independent (the same two answers are judged again and again), so
the plain inverse-information covariance is too narrow; the sandwich B^-1 M B^-1, with M summed
over questions, is not. Bradley-Terry and the position fit are logistic models, fitted here again
by statsmodels' binomial GLM (one row per question, model pair and shown order, its score
wins + ties/2 out of its games as the response and the games as ``var_weights``; a tie is half a
win each way, the Chatbot Arena practice) with ``cov_type="cluster"`` by question. Davidson's
tie model is not a GLM, so its sandwich is computed by hand from the per-question gradients of
the same likelihood the solvers maximise (``solvers.objective``); a test checks that this hand
computation equals statsmodels' on a logistic fit.

Strengths are reported centred, so covariances are for centred log-strengths: the model is fitted
in sum-to-zero coding (strength of the last model = minus the sum of the others) and mapped back.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .counts import Counts, positioned_scores, submatrix, swap, wins_ties
from .sentences import sentence
from .solvers import objective

NOTE_SANDWICH_NEEDS_MLE = sentence(
    "No sandwich intervals: they need the maximum-likelihood fit, which these votes do not have."
)
NOTE_SANDWICH_ONE_QUESTION = sentence(
    "No sandwich intervals: they need votes on two questions or more."
)
SEPARATED = 25.0


@dataclass(frozen=True)
class LogisticRows:
    """Votes as binomial rows: ``design`` (n, p) over (strengths, [advantage]), ``score``
    (wins + ties / 2 for the row's first model), ``games`` and the row's ``question``."""

    design: np.ndarray
    score: np.ndarray
    games: np.ndarray
    question: np.ndarray


def logistic_rows(per_question: np.ndarray, position: bool) -> LogisticRows:
    """Binomial rows from per-question channel counts (nq, C, k, k). With ``position``, rows
    of votes whose shown order is known are (first, second) with an advantage column of 1."""
    k = per_question.shape[-1]
    parts = []
    if position:
        first, second, unpositioned = positioned_scores(per_question)
        q, f, s = np.nonzero(first + second)
        design = np.zeros((q.size, k + 1))
        design[np.arange(q.size), f] = 1.0
        design[np.arange(q.size), s] = -1.0
        design[:, k] = 1.0
        parts.append((design, first[q, f, s], first[q, f, s] + second[q, f, s], q))
        scores = unpositioned
    else:
        wins, ties = wins_ties(per_question)
        scores = wins + ties / 2
    games = scores + swap(scores)
    q, i, j = np.nonzero(np.triu(games, 1))
    design = np.zeros((q.size, k + int(position)))
    design[np.arange(q.size), i] = 1.0
    design[np.arange(q.size), j] = -1.0
    parts.append((design, scores[q, i, j], games[q, i, j], q))
    return LogisticRows(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def sum_to_zero(k: int, extra: int = 0) -> np.ndarray:
    """C with x = C b: k - 1 free strengths (the last is minus their sum), then ``extra``."""
    c = np.zeros((k + extra, k - 1 + extra))
    c[: k - 1, : k - 1] = np.eye(k - 1)
    c[k - 1, : k - 1] = -1.0
    c[k:, k - 1 :] = np.eye(extra)
    return c


@dataclass(frozen=True)
class ClusterFit:
    params: np.ndarray  # in the full coding (strengths centred, then the extra columns)
    cov: np.ndarray  # cluster-robust, same coding


def cluster_logit(rows: LogisticRows, k: int, extra_columns: np.ndarray | None = None):
    """statsmodels' binomial GLM of ``rows`` (strength columns in sum-to-zero coding, plus any
    ``extra_columns``), with covariance clustered by question; None when it cannot be fitted
    (separation, or a single question)."""
    # Imported here: statsmodels takes about a second to import, and most processes that load
    # the ranking (every web worker) never fit a sandwich.
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import (
        ConvergenceWarning,
        PerfectSeparationWarning,
        SpecificationWarning,
    )

    n_extra = rows.design.shape[1] - k
    design = rows.design
    if extra_columns is not None:
        design = np.hstack([design, extra_columns])
        n_extra += extra_columns.shape[1]
    coding = sum_to_zero(k, n_extra)
    groups = np.unique(rows.question, return_inverse=True)[1]
    n_groups = int(groups.max()) + 1 if groups.size else 0
    if n_groups < 2:
        return None
    exog = design @ coding
    model = sm.GLM(
        rows.score / rows.games,
        exog,
        family=sm.families.Binomial(),
        var_weights=rows.games,
        hasconst=False,  # there is none; saves statsmodels a search of every column
    )
    with warnings.catch_warnings():
        # statsmodels warns of "perfect prediction" whenever the fitted probabilities equal the
        # observed shares, which happens with regular data too; separation is checked below.
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        # "cov_type not fully supported with var_weights": the cluster sums use score_obs,
        # which carries the weights, and the weighted Hessian; that is the sandwich wanted
        # here (a test checks it against the per-question sum computed by hand).
        warnings.simplefilter("ignore", SpecificationWarning)
        try:
            found = model.fit(
                cov_type="cluster",
                # statsmodels' default correction counts rows, and a row here is many votes:
                # only the number of clusters' factor G / (G - 1) is applied (below).
                cov_kwds={"groups": groups, "use_correction": False},
                # Newton's method on the normal equations (p x p): on the 10^5-row style fit
                # it is several times faster than the default IRLS's least squares per step.
                method="newton",
                start_params=np.zeros(exog.shape[1]),
                tol=1e-10,
                maxiter=100,
                disp=False,
            )
        except (np.linalg.LinAlgError, ValueError):
            return None
    params = np.asarray(found.params)
    # Separated data send some estimate off towards infinity (IRLS stops somewhere far out):
    # e^25 to 1 odds is no estimate.
    if not np.isfinite(params).all() or np.abs(params).max() > SEPARATED:
        return None
    cov = np.asarray(found.cov_params()) * n_groups / (n_groups - 1)
    return ClusterFit(coding @ params, coding @ cov @ coding.T)


def _centring(k: int, extra: int) -> np.ndarray:
    p = np.eye(k + extra)
    p[:k, :k] -= 1.0 / k
    return p


def model_covariance(totals: np.ndarray, x: np.ndarray, kind: str, alpha: float) -> np.ndarray:
    """Inverse information at the fit x = (centred strengths, [extra]) of channel totals (C, k, k),
    for centred strengths: what a one-vote change does (influence, active sampling). With
    alpha = 0 the gauge term's 1 1^T only fixes the common shift, which the centring removes."""
    k = totals.shape[-1]
    neg_hess = objective(totals, kind, alpha)(x[None])[2][0]
    centre = _centring(k, x.size - k)
    return centre @ np.linalg.inv(neg_hess) @ centre.T


def hand_sandwich(
    per_question: np.ndarray, x: np.ndarray, kind: str, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """(cluster-robust, model-based) covariance of x from per-question gradients of the solvers'
    own likelihood: B^-1 (sum_q g_q g_q^T) B^-1 * G / (G - 1). For Davidson, which statsmodels
    has no family for; the same sum as statsmodels' cluster covariance for logistic fits. The
    gauge term's gradient, sum(x), is zero at a centred fit."""
    k = per_question.shape[-1]
    n_groups = per_question.shape[0]
    grads = objective(per_question, kind, 0.0)(np.broadcast_to(x, (n_groups, x.size)).copy())[1]
    meat = grads.T @ grads * n_groups / max(n_groups - 1, 1)
    total = per_question.sum(axis=0)
    bread = np.linalg.inv(objective(total, kind, alpha)(x[None])[2][0])
    centre = _centring(k, x.size - k)
    return centre @ bread @ meat @ bread @ centre.T, centre @ bread @ centre.T


def covariances(
    counts: Counts,
    active: np.ndarray,
    sub: np.ndarray,
    x: np.ndarray,
    kind: str,
    alpha: float,
    sandwich: bool,
    notes: list[str],
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(inverse information, cluster-robust by question) covariances of x, or None."""
    if not x.size:
        return None, None
    covariance = model_covariance(sub, x, kind, alpha)
    if not sandwich:
        return covariance, None
    if alpha > 0:
        notes.append(NOTE_SANDWICH_NEEDS_MLE)
        return covariance, None
    if counts.n_questions < 2:
        notes.append(NOTE_SANDWICH_ONE_QUESTION)
        return covariance, None
    per_question = submatrix(counts.per_question, active).astype(np.float64)
    if kind == "davidson":
        return covariance, hand_sandwich(per_question, x, kind, alpha)[0]
    found = cluster_logit(logistic_rows(per_question, kind == "position"), len(active))
    if found is None:
        notes.append(NOTE_SANDWICH_NEEDS_MLE)
        return covariance, None
    return covariance, found.cov


def embed(cov: np.ndarray, active: np.ndarray, k: int) -> np.ndarray:
    """A covariance of the active models' strengths as k x k (zeros elsewhere)."""
    out = np.zeros((k, k))
    n = len(active)
    out[np.ix_(active, active)] = cov[:n, :n]
    return out


def embed_diagonal(cov: np.ndarray | None, active: np.ndarray, k: int) -> np.ndarray:
    se = np.zeros(k)
    if cov is not None:
        se[active] = np.sqrt(np.clip(np.diag(cov)[: len(active)], 0.0, None))
    return se
