"""Count matrices -> centred log-strengths: Bradley-Terry, Davidson and the position advantage.

A single fit goes to choix (Bradley-Terry) or scipy (Davidson, position); a batch of bootstrap
rounds goes to one batched Newton's method on the same penalised likelihood (thousands of separate
choix or scipy calls would dominate the run time); the tests check both give the same answer.

Each ``*_terms`` function returns the penalised log-likelihood, its gradient and the negated
Hessian for a batch of parameter vectors x (r, p) and count matrices (r, k, k) (or one (k, k)
shared by all rows). The scipy point fits and the batched Newton bootstrap both use them, so
they solve the same problem. Count matrices have zero diagonals.

``alpha`` is a number, or one per row of a batch. ``alpha = 0`` is the plain maximum-likelihood
fit: the likelihood does not change when every log-strength moves by the same amount, so those
rows get the gauge term (sum of log-strengths)^2 / 2 instead, which only picks the centred
solution among equal ones (its gradient is zero there) and keeps Newton's system solvable.
"""

from __future__ import annotations

import math

import choix
import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from .counts import positioned_scores, swap, wins_ties
from .sentences import Note, sentence

# The regularisation used when the maximum-likelihood estimate does not exist (a model that never
# lost or never won, groups that never met): the project's earlier default for every fit. Any
# positive alpha keeps the strengths finite, and an undefeated model's lead then grows like
# log(1 / alpha), so there is no smallest one that means more; 0.01 moves well-measured models
# by a few Elo and keeps undefeated ones within a few hundred.
FALLBACK_ALPHA = 0.01
DEFAULT_ALPHA = FALLBACK_ALPHA  # the name older callers use
NOTE_CHOIX_FALLBACK = sentence(
    "choix did not converge ({error}); the same regularised fit was solved by Newton's method."
)


def _laplacian(curvature: np.ndarray) -> np.ndarray:
    """-c off the diagonal, row sums on it: the curvature of pairwise log-likelihoods."""
    k = curvature.shape[-1]
    out = -curvature
    out[..., np.arange(k), np.arange(k)] = curvature.sum(axis=-1)
    return out


def _alpha_rows(alpha, r: int) -> np.ndarray:
    """alpha (a number or one per row) as an (r,) array."""
    return np.broadcast_to(np.asarray(alpha, dtype=np.float64), (r,))


def _strength_penalty(theta: np.ndarray, alpha):
    """choix's alpha as a penalty alpha * k * sum(exp(t) - t) (rows with alpha > 0), and the
    gauge term sum(t)^2 / 2 (rows with alpha = 0): value (r,), gradient (r, k), the penalty's
    diagonal curvature (r, k) and the gauge's weight (r,) (its curvature is that times 1 1^T)."""
    r, k = theta.shape
    a = _alpha_rows(alpha, r)
    gauge = (a == 0).astype(np.float64)
    w = np.exp(theta)
    total = theta.sum(axis=-1)
    value = a * k * (w - theta).sum(axis=-1) + gauge * total * total / 2
    grad = (a * k)[:, None] * (w - 1) + (gauge * total)[:, None]
    return value, grad, (a * k)[:, None] * w, gauge


def _neg_hessian(strength_block: np.ndarray, penalty, extra: int) -> np.ndarray:
    """The negated Hessian (r, k + extra, k + extra) with its strengths block (the likelihood's
    curvature plus the penalty's and the gauge's) filled; the caller fills the ``extra``
    parameter's row."""
    pen_curv, gauge = penalty
    r, k = pen_curv.shape
    out = strength_block  # filled in place when there is no extra parameter: no copy
    if extra:
        out = np.empty((r, k + extra, k + extra))
        out[:, :k, :k] = strength_block
    out[:, np.arange(k), np.arange(k)] += pen_curv
    if gauge.any():
        out[:, :k, :k] += gauge[:, None, None]
    return out


def bt_terms(x: np.ndarray, scores: np.ndarray, alpha):
    d = x[:, :, None] - x[:, None, :]
    games = scores + swap(scores)
    p = expit(d)
    pen, pen_grad, pen_curv, gauge = _strength_penalty(x, alpha)
    value = (scores * log_expit(d)).sum(axis=(-1, -2)) - pen
    grad = (scores - games * p).sum(axis=-1) - pen_grad
    return value, grad, _neg_hessian(_laplacian(games * p * (1 - p)), (pen_curv, gauge), 0)


def davidson_terms(x: np.ndarray, wins: np.ndarray, ties: np.ndarray, alpha):
    """x = (log-strengths, log nu). Ties symmetric; log nu gets a ridge alpha * u^2 / 2."""
    r, k = x.shape[0], x.shape[1] - 1
    theta, u = x[:, :k], x[:, k]
    d = theta[:, :, None] - theta[:, None, :]
    uu = u[:, None, None]
    games = wins + swap(wins) + ties
    log_z = np.logaddexp(np.logaddexp(d / 2, -d / 2), uu)
    p_i, p_j, p_t = np.exp(d / 2 - log_z), np.exp(-d / 2 - log_z), np.exp(uu - log_z)
    m = (p_i - p_j) / 2  # d log Z / d d
    pen, pen_grad, pen_curv, gauge = _strength_penalty(theta, alpha)
    a = _alpha_rows(alpha, r)
    tie_total = ties.sum(axis=(-1, -2)) / 2
    value = (wins * d).sum(axis=(-1, -2)) / 2 + tie_total * u
    value = value - (games * log_z).sum(axis=(-1, -2)) / 2 - pen - a * u * u / 2
    grad = np.empty((r, k + 1))
    grad[:, :k] = (wins - swap(wins)).sum(axis=-1) / 2 - (games * m).sum(axis=-1) - pen_grad
    grad[:, k] = tie_total - (games * p_t).sum(axis=(-1, -2)) / 2 - a * u
    block = _laplacian(games * ((p_i + p_j) / 4 - m * m))
    neg_hess = _neg_hessian(block, (pen_curv, gauge), 1)
    cross = -(games * m * p_t).sum(axis=-1)
    neg_hess[:, :k, k] = neg_hess[:, k, :k] = cross
    neg_hess[:, k, k] = (games * p_t * (1 - p_t)).sum(axis=(-1, -2)) / 2 + a
    return value, grad, neg_hess


def position_terms(x, first, second, unpositioned, alpha):
    """x = (log-strengths, first-position advantage a); a gets a ridge alpha * a^2 / 2."""
    r, k = x.shape[0], x.shape[1] - 1
    theta, adv = x[:, :k], x[:, k]
    d = theta[:, :, None] - theta[:, None, :]
    z = adv[:, None, None] + d
    shown = first + second
    games_u = unpositioned + swap(unpositioned)
    s, s_u = expit(z), expit(d)
    pen, pen_grad, pen_curv, gauge = _strength_penalty(theta, alpha)
    a = _alpha_rows(alpha, r)
    value = (first * log_expit(z) + second * log_expit(-z)).sum(axis=(-1, -2))
    value = value + (unpositioned * log_expit(d)).sum(axis=(-1, -2)) - pen - a * adv * adv / 2
    resid = first - shown * s
    grad = np.empty((r, k + 1))
    grad[:, :k] = resid.sum(axis=-1) - resid.sum(axis=-2)
    grad[:, :k] += (unpositioned - games_u * s_u).sum(axis=-1) - pen_grad
    grad[:, k] = resid.sum(axis=(-1, -2)) - a * adv
    c = shown * s * (1 - s)
    block = _laplacian(c + swap(c)) + _laplacian(games_u * s_u * (1 - s_u))
    neg_hess = _neg_hessian(block, (pen_curv, gauge), 1)
    neg_hess[:, :k, k] = neg_hess[:, k, :k] = c.sum(axis=-1) - c.sum(axis=-2)
    neg_hess[:, k, k] = c.sum(axis=(-1, -2)) + a
    return value, grad, neg_hess


def _newton(terms, x0: np.ndarray, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """Maximise a strictly concave objective for every row of x0 (r, p) at once.

    Newton steps, capped at 2 in any coordinate and halved where the objective would fall.
    """
    x = x0.copy()
    value, grad, neg_hess = terms(x)
    for _ in range(max_iter):
        try:
            step = np.linalg.solve(neg_hess, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            # A flat direction at this iterate (say a huge tie parameter, where the curvature
            # underflows): the least-squares step, which leaves that direction alone.
            step = (np.linalg.pinv(neg_hess) @ grad[..., None])[..., 0]
        biggest = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, 2.0 / np.maximum(biggest, 1e-300))
        for _ in range(40):
            trial = x + step
            new_value, new_grad, new_hess = terms(trial)
            worse = new_value < value - 1e-12 * np.abs(value)
            if not worse.any():
                break
            step[worse] /= 2
        x, value, grad, neg_hess = trial, new_value, new_grad, new_hess
        if biggest.max() < tol:
            break
    return x


def _on_penalty_surface(theta: np.ndarray, alpha=1.0) -> np.ndarray:
    """Shift log-strengths so sum(exp) = k, where every penalised optimum lies (rows with
    alpha > 0), or centre them (alpha = 0: the gauge's optimum)."""
    k = theta.shape[-1]
    penalised = np.log(np.exp(theta).sum(axis=-1, keepdims=True) / k)
    if theta.ndim == 1:
        return theta - (penalised if np.all(np.asarray(alpha) > 0) else theta.mean())
    a = _alpha_rows(alpha, theta.shape[0])[:, None]
    return theta - np.where(a > 0, penalised, theta.mean(axis=-1, keepdims=True))


def _centred(theta: np.ndarray) -> np.ndarray:
    return theta - theta.mean(axis=-1, keepdims=True)


def _scipy_fit(terms, x0: np.ndarray, scale: float) -> np.ndarray:
    """One fit with scipy's trust-region Newton on the same objective (scaled per vote)."""

    def fun(y):
        value, grad, _ = terms(y[None])
        return -value[0] / scale, -grad[0] / scale

    def hess(y):
        return terms(y[None])[2][0] / scale

    result = minimize(fun, x0, jac=True, hess=hess, method="trust-exact", options={"gtol": 1e-10})
    return result.x


def _fit_with_extra(terms, x0: np.ndarray, games: float, alpha) -> tuple[np.ndarray, np.ndarray]:
    """Maximise ``terms`` over (log-strengths, one more parameter): one x0 (k + 1,) with scipy,
    its objective scaled by ``games``; a batch x0 (r, k + 1) (a previous fit's x) with the batched
    Newton. Returns the centred log-strengths and the extra parameter."""
    k = x0.shape[-1] - 1
    if x0.ndim == 1:
        x = _scipy_fit(terms, x0, max(games, 1.0))
    else:
        x0 = x0.copy()
        x0[:, :k] = _on_penalty_surface(x0[:, :k], alpha)
        x = _newton(terms, x0)
    return _centred(x[..., :k]), x[..., k]


def fit_bradley_terry(scores: np.ndarray, alpha: float = 0.0) -> np.ndarray:
    """Centred log-strengths from a k x k score matrix (wins + ties/2), with choix (alpha = 0:
    the maximum-likelihood fit, which needs a strongly connected score graph)."""
    return _fit_bt_choix(scores, alpha)[0]


def _fit_bt_choix(scores: np.ndarray, alpha: float) -> tuple[np.ndarray, str | None]:
    try:
        # tol bounds the mean change of a log-strength between iterations: 1e-6 is 2e-4 Elo,
        # far below what is reported; it saves one or two ILSR iterations of the 1e-8 default.
        theta = choix.ilsr_pairwise_dense(scores, alpha=alpha, max_iter=1000, tol=1e-6)
        if not np.all(np.isfinite(theta)):
            raise ValueError("non-finite strengths")
    except (RuntimeError, ValueError, FloatingPointError) as exc:
        theta = fit_bt_newton(scores[None], alpha)[0]
        return theta, Note(NOTE_CHOIX_FALLBACK, error=exc)
    return _centred(theta), None


def fit_bt_newton(scores: np.ndarray, alpha, start: np.ndarray | None = None) -> np.ndarray:
    """Bradley-Terry for many score matrices (r, k, k) at once; centred (r, k).

    The same penalised likelihood as choix's ILSR with ``alpha`` (see the package docstring), so
    it gives choix's answer; the bootstrap uses it, where thousands of fits are needed.
    ``alpha``: one value, or one per matrix (0: maximum likelihood).
    """
    r, k, _ = scores.shape
    x0 = np.zeros((r, k)) if start is None else np.broadcast_to(start, (r, k))
    x = _newton(lambda x: bt_terms(x, scores, alpha), _on_penalty_surface(x0, alpha))
    return _centred(x)


def fit_davidson(
    wins: np.ndarray, ties: np.ndarray, alpha, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Davidson's model: centred log-strengths and nu. One (k, k) fit uses scipy; a batch
    (r, k, k) uses the batched Newton (``start``: a previous fit's x)."""
    k = wins.shape[-1]
    games = (wins.sum() * 2 + ties.sum()) / 2
    if wins.ndim == 2:
        share = ties.sum() / 2 / max(games, 1.0)
        x0 = np.zeros(k + 1)
        # Equal strengths: P(tie) = nu / (2 + nu) = share.
        x0[k] = math.log(2 * max(share, 1e-4) / max(1 - share, 1e-4))
    else:
        x0 = np.broadcast_to(start, (wins.shape[0], k + 1))
    terms = lambda y: davidson_terms(y, wins, ties, alpha)  # noqa: E731
    theta, log_nu = _fit_with_extra(terms, x0, games, alpha)
    return theta, np.exp(log_nu)


def fit_position(
    first: np.ndarray,
    second: np.ndarray,
    unpositioned: np.ndarray,
    alpha,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bradley-Terry with a first-position term: centred strengths and the advantage. One
    (k, k) fit uses scipy; a batch (r, k, k) uses the batched Newton."""
    k = first.shape[-1]
    games = first.sum() + second.sum() + unpositioned.sum()
    x0 = np.zeros(k + 1) if first.ndim == 2 else np.broadcast_to(start, (first.shape[0], k + 1))

    def terms(y):
        return position_terms(y, first, second, unpositioned, alpha)

    return _fit_with_extra(terms, x0, games, alpha)


def objective(totals: np.ndarray, kind: str, alpha):
    """The terms function x -> (value, gradient, negated Hessian) of channel totals (C, k, k)
    or (r, C, k, k) for a fit kind: what the solvers maximise, for intervals and influence."""
    if kind == "position":
        first, second, unpositioned = positioned_scores(totals)
        return lambda x: position_terms(x, first, second, unpositioned, alpha)
    wins, ties = wins_ties(totals)
    if kind == "davidson":
        return lambda x: davidson_terms(x, wins, ties, alpha)
    return lambda x: bt_terms(x, wins + ties / 2, alpha)


def fit_totals(
    totals: np.ndarray,
    kind: str,
    alpha,
    start: tuple[np.ndarray, float | None] | None = None,
):
    """Fit channel totals. One (C, k, k): (centred log-strengths, nu or advantage, note), by
    choix or scipy. A batch (r, C, k, k), started from ``start`` = (log-strengths, extra):
    ((r, k), (r,) or None, None), by the batched Newton; ``alpha`` may then be one per row."""
    batch = totals.ndim == 4
    if kind == "position":
        x0 = None if start is None else np.append(start[0], start[1])
        theta, advantage = fit_position(*positioned_scores(totals), alpha, start=x0)
        return theta, advantage if batch else float(advantage), None
    wins, ties = wins_ties(totals)
    if kind == "davidson":
        x0 = None if start is None else np.append(start[0], math.log(start[1]))
        theta, nu = fit_davidson(wins, ties, alpha, start=x0)
        return theta, nu if batch else float(nu), None
    if batch:
        return fit_bt_newton(wins + ties / 2, alpha, start=start[0]), None, None
    theta, note = _fit_bt_choix(wins + ties / 2, alpha)
    return theta, None, note
