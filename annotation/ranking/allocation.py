"""How a design spends people's votes over model pairs: the staged design's plan of a stage
(``plan_allocation``, on the prediction-powered fit of the stages before it) and the oracle's
allocation that knows the true strengths (``oracle_allocation``, the bench's limit). Plain
numpy, no Django; ``designs`` draws and weighs the votes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.special import expit
from scipy.stats import norm

from .population import Population
from .ppi import PPIFit

if TYPE_CHECKING:
    from .designs import Sample

# Each pair's floor in a planned stage, as a share of an even split of the stage: 0.02 left
# rare votes with weights in the hundreds, whose fit moved 2-3 standard errors off people's
# strengths over 200 studies and certainty no higher; 0.5 was within them and narrower.
PLAN_FLOOR = 0.5
SETTLE_LOG = 30.0 / (400 / np.log(10))  # the smallest gap worth settling (30 Elo), log scale
Z95 = 1.959964


def pair_index(pop: Population) -> np.ndarray:
    """Each comparison's model pair, as an index into ``np.triu_indices(k, 1)``."""
    k = pop.n_models
    table = np.full((k, k), -1)
    i, j = np.triu_indices(k, 1)
    table[i, j] = table[j, i] = np.arange(i.size)
    return table[pop.model_a, pop.model_b]


def plan_allocation(
    pop: Population,
    fitted: PPIFit,
    sample: Sample,
    budget: float,
    earlier: list[tuple[float, np.ndarray]],
    later: tuple[float, ...],
    settle: float = SETTLE_LOG,
    floor: float = PLAN_FLOOR,
    chunks: int = 100,
) -> np.ndarray:
    """People's votes per model pair (triu order) for a stage of ``budget`` votes: greedy
    chunks to the pair that most raises sum_g pi_g log Phi(|gap_g| / sd_g - 1.96) over the
    adjacent pairs g of the fitted order, pi_g the chance the gap is at least ``settle``
    (normal, from the fit's interval) and sd_g the gap's standard error after the stage.

    That error is the prediction-powered sandwich's people part: per pair, the votes'
    rectified residuals' mean square v (y - lambda J - (1 - lambda) p, from the votes so far)
    times Q^2 / votes (Q its comparisons), carried to the gap through the Hessian of every
    comparison counted once; stage t's votes enter with alpha_t^2 (``earlier``: (alpha_t,
    votes per pair) of the stages done; ``later``: the shares of this stage and the ones after
    it, assumed to repeat this stage's allocation). ``floor``: each pair gets at least this
    share of an even split (every comparison keeps a chance)."""
    k = pop.n_models
    i, j = np.triu_indices(k, 1)
    pair = pair_index(pop)
    q = np.bincount(pair, minlength=i.size).astype(float)
    theta = fitted.theta
    p = expit(theta[i] - theta[j])
    rows = np.zeros((i.size, k))
    rows[np.arange(i.size), i], rows[np.arange(i.size), j] = 1.0, -1.0
    hessian = (rows * (q * p * (1 - p))[:, None]).T @ rows + np.ones((k, k)) / k
    h_inv = np.linalg.inv(hessian)
    lam = fitted.lam
    vp = pair[sample.comparison]
    residual = sample.score - lam * pop.judge[sample.comparison] - (1 - lam) * p[vp]
    counts = np.bincount(vp, minlength=i.size)
    square = np.bincount(vp, weights=residual**2, minlength=i.size)
    fallback = p * (1 - p)
    v = np.where(counts >= 10, square / np.maximum(counts, 1), fallback)
    # Adjacent pairs of the fitted order, their gaps and how likely each needs settling.
    order = np.argsort(-theta, kind="stable")
    adjacent = np.zeros((k - 1, k))
    adjacent[np.arange(k - 1), order[:-1]] = 1.0
    adjacent[np.arange(k - 1), order[1:]] = -1.0
    gap = adjacent @ theta
    cov = fitted.covariance if fitted.covariance is not None else h_inv
    now_sd = np.sqrt(np.clip(np.einsum("gk,kl,gl->g", adjacent, cov, adjacent), 1e-12, None))
    matters = norm.cdf((gap - settle) / now_sd)
    reach = (adjacent @ h_inv @ rows.T) ** 2 * (q**2 * v)[None, :]  # (gaps, pairs)
    before = np.zeros(i.size)
    for alpha, votes in earlier:
        before += alpha**2 / np.maximum(votes, 1.0)
    ahead = later[0] * sum(later)  # sum_t alpha_t^2 / votes_t, votes_t in proportion
    n = np.full(i.size, floor * budget / i.size)
    chunk = (budget - n.sum()) / chunks

    def score(extra: np.ndarray) -> np.ndarray:
        # Objective for each candidate allocation (rows: candidates).
        var = (before[None, :] + ahead / extra)[:, None, :] * reach[None, :, :]
        sd = np.sqrt(var.sum(axis=2))
        return (matters[None, :] * norm.logcdf(gap[None, :] / sd - Z95)).sum(axis=1)

    candidates = np.eye(i.size) * chunk
    for _ in range(chunks):
        n = n + candidates[int(np.argmax(score(n[None, :] + candidates)))]
    return n


def oracle_allocation(strengths: np.ndarray, needed: list[tuple[int, int]], budget: float):
    """Votes per model pair (k, k) that an allocation knowing the true strengths gives: greedy
    chunks to the pair that most raises the smallest z-statistic of the needed gaps, from the
    Fisher information of plain Bradley-Terry votes."""
    k = strengths.size
    i, j = np.triu_indices(k, 1)
    info = expit(strengths[i] - strengths[j]) * expit(strengths[j] - strengths[i])
    rows = np.zeros((i.size, k))
    rows[np.arange(i.size), i], rows[np.arange(i.size), j] = 1.0, -1.0
    contrasts = np.zeros((len(needed), k))
    for n, (u, v) in enumerate(needed):
        contrasts[n, u], contrasts[n, v] = 1.0, -1.0
    gaps = np.abs(contrasts @ strengths)
    counts = np.full(i.size, 1.0)
    chunk = max(budget / 200, 1.0)

    def worst(c):
        fisher = (rows * (c * info)[:, None]).T @ rows + np.ones((k, k)) / k
        cov = np.linalg.inv(fisher)
        se = np.sqrt(np.einsum("nk,kl,nl->n", contrasts, cov, contrasts))
        return float((gaps / se).min())

    while counts.sum() + chunk <= budget:
        best = max(range(i.size), key=lambda p: worst(counts + chunk * (np.arange(i.size) == p)))
        counts[best] += chunk
    share = np.zeros((k, k))
    # A floor of 2 % of the even share keeps every pair in the fit.
    mixed = 0.98 * counts / counts.sum() + 0.02 / i.size
    share[i, j] = share[j, i] = mixed
    return share
