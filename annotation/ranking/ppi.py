"""Prediction-powered Bradley-Terry strengths: the LLM judge's verdicts on every comparison,
corrected by people's votes on a sample of comparisons drawn with known probabilities.

The method is prediction-powered inference (Angelopoulos, Bates, Fannjiang, Jordan and Zrnic,
"Prediction-powered inference", Science 2023) with the power tuning of PPI++ (Angelopoulos,
Duchi and Zrnic, "PPI++: Efficient prediction-powered inference", 2024), applied to pairwise
rankings as Chatzi, Straitouri, Thejaswi and Gomez-Rodriguez do for judge and human votes
("Prediction-powered ranking of large language models", NeurIPS 2024). Written for this package
from the papers.

Bradley-Terry with a tie as half a win has, per vote with score y (1, 1/2, 0 for model a) and
d = theta_a - theta_b, the loss l(y, d) = -y d + log(1 + e^d), linear in y. The rectified loss
(the PPI++ loss) of comparison c is

    lam l(J_c, d_c) + sum over people's votes v on c of w_v (l(y_v, d_c) - lam l(J_c, d_c))

where J_c is the judge's outcome on c (the mean score of its verdicts, both shown orders)
and w_v = 1 / (K pi_v), pi_v the probability that the vote was asked for (the comparison drawn
for people, times every stopping rule's chance of asking again) and K the votes a comparison
gets in the reference design. Because E[sum_v w_v l(y_v)] = E[l(y)] and E[sum_v w_v] = 1 for
any design with known positive probabilities, the expected loss is people's whatever the judge
does: the strengths are unbiased for people's (as n grows; exactly so for the estimating
equation), and the judge only narrows the intervals, the more the better it agrees with people.
lambda = 0 is people alone (inverse-probability weighted), lambda = 1 the original PPI; the
PPI++ choice minimises the estimated variance (trace of the covariance of the centred
strengths) and is clipped to [0, 1]. It is estimated at lambda = 1's strengths; refitted at
the lambda chosen, the estimate is kept only when its estimated variance is below people
alone's (lambda = 0), else the fit is people alone's: PPI++ is never worse than classical.

Being linear in y, the loss aggregates into per-comparison "games" G_c and "score" S_c, possibly
fractional: L = sum_c -S_c d_c + G_c log(1 + e^{d_c}), G_c >= 0, so the fit is a weighted
Bradley-Terry fit solved by Newton's method. Intervals are the sandwich H^-1 M H^-1 with M the
sum over questions of the per-question score's outer product (cluster-robust by question,
G / (G - 1) corrected), which allows for votes on one question being alike and for the sampling
of comparisons being independent across questions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from scipy.stats import norm

from .sandwich import sum_to_zero

LENGTHS = "model_a, model_b, question and judge must have one entry per comparison"
VOTE_LENGTHS = "vote_comparison, vote_score and vote_weight must have one entry per vote"
BAD_LAMBDA = "lam must be between 0 and 1, or None (tuned); got {lam!r}"
BAD_VOTE_WEIGHT = "vote weights must be finite and positive"
# Fitted log-strengths beyond this are separation, not an estimate (as in ``sandwich``).
SEPARATED = 25.0


@dataclass(frozen=True)
class PPIFit:
    """Centred log-strengths (k,) of the ``fitted`` models (others 0) and their cluster-robust
    covariance (k, k; zero rows for models not fitted); the lambda used; what it rests on."""

    theta: np.ndarray
    covariance: np.ndarray | None
    lam: float
    fitted: np.ndarray  # bool (k,)
    human_votes: int
    judged: int  # comparisons with a judge outcome
    comparisons: int
    n_questions: int
    converged: bool
    lam_tuned: float | None = None  # PPI++'s formula's lambda, before the guard (tuned fits)

    def se(self) -> np.ndarray:
        if self.covariance is None:
            return np.full(self.theta.size, np.nan)
        return np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))

    def gap_se(self, i: int, j: int) -> float:
        if self.covariance is None:
            return math.nan
        c = self.covariance
        return math.sqrt(max(c[i, i] + c[j, j] - 2 * c[i, j], 0.0))


@dataclass(frozen=True)
class _Cells:
    """Per comparison: sum of people's weights (sw), of weight x score (swy); judged (m) and
    the judge's score (yh, 0 where not judged); design rows X (C, k - 1); question index."""

    sw: np.ndarray
    swy: np.ndarray
    m: np.ndarray
    yh: np.ndarray
    x: np.ndarray
    question: np.ndarray
    n_questions: int

    def games_score(self, lam: float) -> tuple[np.ndarray, np.ndarray]:
        g = self.sw + lam * self.m * (1.0 - self.sw)
        s = self.swy + lam * self.m * self.yh * (1.0 - self.sw)
        return g, s


def fit_ppi(
    model_a: np.ndarray,
    model_b: np.ndarray,
    question: np.ndarray,
    judge: np.ndarray,
    vote_comparison: np.ndarray,
    vote_score: np.ndarray,
    vote_weight: np.ndarray,
    n_models: int,
    *,
    lam: float | None = None,
    covariance: bool = True,
) -> PPIFit:
    """The prediction-powered fit.

    Per comparison c (arrays of length C): the models ``model_a`` / ``model_b`` (indices), its
    ``question`` (int, the cluster), the ``judge``'s score for model a in [0, 1] (NaN where the
    judge gave none). Per people's vote (length V): the comparison it is on, its score for model
    a (1 / 0.5 / 0) and its weight 1 / (K pi). ``lam``: None tunes it (PPI++), 0 fits people
    alone, 1 is the original PPI. Judge alone: no votes and ``lam=1``.
    """
    a = np.asarray(model_a, np.int64)
    b = np.asarray(model_b, np.int64)
    q = np.asarray(question, np.int64)
    yj = np.asarray(judge, np.float64)
    if not (a.size == b.size == q.size == yj.size):
        raise ValueError(LENGTHS)
    vc = np.asarray(vote_comparison, np.int64)
    vy = np.asarray(vote_score, np.float64)
    vw = np.asarray(vote_weight, np.float64)
    if not (vc.size == vy.size == vw.size):
        raise ValueError(VOTE_LENGTHS)
    if vw.size and not (np.isfinite(vw).all() and (vw > 0).all()):
        raise ValueError(BAD_VOTE_WEIGHT)
    if lam is not None and not 0.0 <= lam <= 1.0:
        raise ValueError(BAD_LAMBDA.format(lam=lam))
    n_comparisons = a.size
    sw = np.bincount(vc, weights=vw, minlength=n_comparisons)
    swy = np.bincount(vc, weights=vw * vy, minlength=n_comparisons)
    m = np.isfinite(yj).astype(np.float64)
    yh = np.where(m > 0, yj, 0.0)
    # Models that take part: in a comparison people voted on, or one the judge judged (when
    # its verdicts count at all).
    used = (sw > 0) | ((m > 0) & (lam is None or lam > 0))
    fitted = np.zeros(n_models, dtype=bool)
    fitted[a[used]] = fitted[b[used]] = True
    k = int(fitted.sum())
    theta = np.zeros(n_models)
    base = {
        "human_votes": int(vc.size),
        "judged": int(m.sum()),
        "comparisons": n_comparisons,
        "n_questions": int(np.unique(q[used]).size),
    }
    if k < 2:
        return PPIFit(theta, None, 0.0 if lam is None else lam, fitted, converged=False, **base)
    index = np.full(n_models, -1)
    index[fitted] = np.arange(k)
    coding = sum_to_zero(k)
    keep = used & fitted[a] & fitted[b]
    x = coding[index[a[keep]]] - coding[index[b[keep]]]
    questions, q_index = np.unique(q[keep], return_inverse=True)
    cells = _Cells(sw[keep], swy[keep], m[keep], yh[keep], x, q_index, questions.size)

    if lam is None:
        beta, ok = _newton(cells, 1.0)
        lam_used = _tuned_lambda(cells, beta, coding) if ok else 0.0
        lam_tuned = lam_used
    else:
        lam_tuned = None
        lam_used = float(lam)
    beta, ok = _newton(cells, lam_used)
    if not ok and lam_used > 0:  # fall back to people alone
        lam_used = 0.0
        beta, ok = _newton(cells, 0.0)
    sandwich = None
    if ok and cells.n_questions >= 2 and (covariance or (lam is None and lam_used > 0)):
        try:
            sandwich = _sandwich(cells, beta, lam_used)
        except np.linalg.LinAlgError:
            if covariance:
                raise
    if lam is None and lam_used > 0 and sandwich is not None:
        # The guard: the tuned lambda was chosen at lambda = 1's strengths; refitted at its
        # own, its estimated variance must be below people alone's (lambda = 0), else people
        # alone it is (PPI++ is never to be worse than the classical estimate).
        alone, alone_ok = _newton(cells, 0.0)
        if alone_ok:
            try:
                alone_sandwich = _sandwich(cells, alone, 0.0)
            except np.linalg.LinAlgError:
                alone_sandwich = None
            if alone_sandwich is not None and not _spread_of(coding, sandwich) < _spread_of(
                coding, alone_sandwich
            ):
                lam_used, beta, sandwich = 0.0, alone, alone_sandwich
    centred = coding @ beta
    theta[fitted] = centred
    cov = None
    if covariance and sandwich is not None:
        cov_fitted = coding @ sandwich @ coding.T
        cov = np.zeros((n_models, n_models))
        cov[np.ix_(fitted, fitted)] = cov_fitted
    return PPIFit(theta, cov, lam_used, fitted, converged=ok, lam_tuned=lam_tuned, **base)


def _spread_of(coding: np.ndarray, covariance: np.ndarray) -> float:
    """The trace of the centred strengths' covariance: what the power tuning minimises."""
    return float(np.trace(coding @ covariance @ coding.T))


def _loss(cells: _Cells, lam: float, beta: np.ndarray) -> float:
    g, s = cells.games_score(lam)
    d = cells.x @ beta
    return float(np.sum(-s * d + g * np.logaddexp(0.0, d)))


def _newton(cells: _Cells, lam: float, tol: float = 1e-10) -> tuple[np.ndarray, bool]:
    """Minimise the rectified loss (convex: G_c >= 0) by damped Newton steps."""
    g, s = cells.games_score(lam)
    x = cells.x
    beta = np.zeros(x.shape[1])
    current = _loss(cells, lam, beta)
    for _ in range(100):
        p = expit(x @ beta)
        grad = x.T @ (g * p - s)
        hess = (x * (g * p * (1 - p))[:, None]).T @ x
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(hess.shape[0]), grad)
        except np.linalg.LinAlgError:
            return beta, False
        t = 1.0
        while True:
            candidate = beta - t * step
            value = _loss(cells, lam, candidate)
            if value <= current + 1e-12 * abs(current) or t < 1e-6:
                break
            t /= 2
        beta, current = candidate, value
        if np.abs(t * step).max() < tol:
            break
    else:
        return beta, False
    ok = bool(np.isfinite(beta).all() and np.abs(beta).max() < SEPARATED)
    return beta, ok


def _parts(
    cells: _Cells, beta: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-question scores split as A + lambda B (nq, k - 1), and the rectified loss's Hessian
    at this lambda (in expectation people's, every comparison counted once)."""
    p = expit(cells.x @ beta)
    g, _ = cells.games_score(lam)
    a_c = cells.sw * p - cells.swy  # people's part: sum_v w_v (p - y_v)
    b_c = cells.m * (1.0 - cells.sw) * (p - cells.yh)  # the judge's, mean zero
    nq = cells.n_questions
    a_q = np.zeros((nq, cells.x.shape[1]))
    b_q = np.zeros_like(a_q)
    np.add.at(a_q, cells.question, cells.x * a_c[:, None])
    np.add.at(b_q, cells.question, cells.x * b_c[:, None])
    hess = (cells.x * (g * p * (1 - p))[:, None]).T @ cells.x
    return a_q, b_q, hess


def _tuned_lambda(cells: _Cells, beta: np.ndarray, coding: np.ndarray) -> float:
    """PPI++'s power tuning: the lambda minimising the trace of the estimated covariance of the
    centred strengths, tr(C H^-1 (S_AA + 2 lambda S_AB + lambda^2 S_BB) H^-1 C^T), in [0, 1]."""
    a_q, b_q, hess = _parts(cells, beta, 1.0)
    try:
        h_inv = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        return 0.0
    outer = coding @ h_inv
    cross = 0.5 * (a_q.T @ b_q + b_q.T @ a_q)
    denominator = np.trace(outer @ (b_q.T @ b_q) @ outer.T)
    if not denominator > 0:
        return 0.0
    return float(np.clip(-np.trace(outer @ cross @ outer.T) / denominator, 0.0, 1.0))


def _sandwich(cells: _Cells, beta: np.ndarray, lam: float) -> np.ndarray:
    """Cluster-robust covariance of beta: H^-1 (sum_q psi_q psi_q^T) H^-1 * G / (G - 1)."""
    a_q, b_q, hess = _parts(cells, beta, lam)
    psi = a_q + lam * b_q
    nq = cells.n_questions
    meat = psi.T @ psi * nq / (nq - 1)
    h_inv = np.linalg.inv(hess)
    return h_inv @ meat @ h_inv


def gap_interval(fit: PPIFit, i: int, j: int, confidence: float = 0.95) -> tuple[float, float]:
    """The interval of theta_i - theta_j (log scale)."""
    half = float(norm.ppf(1 - (1 - confidence) / 2)) * fit.gap_se(i, j)
    gap = float(fit.theta[i] - fit.theta[j])
    return gap - half, gap + half
