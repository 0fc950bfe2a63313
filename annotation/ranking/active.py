"""Active sampling: which model pairs the next votes should go to.

Once every comparison has a vote, the claim picks among the comparisons still below K with
probability proportional to their weight (``Comparison.sampling_weight``; ``loop.assign``), and
every comparison of a model pair has the pair's weight from ``pair_weights``:

    weight(i, j) = sum over adjacent pairs (u, v) of the ranking of
                   urgency(u, v) * influence of one vote on (i, j) on the gap u - v

where urgency = phi(|gap| / se - z) (the density of the gap's z-statistic at the 95 % threshold
z = 1.96: a pair about to be settled gets the most, a settled pair or a coin flip little) and the
influence is the square root of the share of the gap's variance that one more vote would remove
(the rank-one update of the covariance by one vote's information p(1 - p) along e_i - e_j).
Weights are scaled to mean 1 over the model pairs and floored at ``floor`` (every comparison
keeps a chance). The fit weights each such vote by 1 / (n * p), n the number of comparisons the
pick was among and p its probability, i.e. by how much likelier a uniform pick would have made
it, so estimates stay unbiased for the uniform design and uniform votes keep weight 1. That
weighting costs precision (rarely picked votes count several times), which takes back much of
what the targeting gains: bench/ranking.py prints the net effect.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from scipy.stats import norm

DEFAULT_FLOOR = 0.2


def pair_weights(
    theta: np.ndarray,
    covariance: np.ndarray,
    floor: float = DEFAULT_FLOOR,
    confidence: float = 0.95,
) -> np.ndarray:
    """Symmetric (k, k) weights of the model pairs (diagonal 0) from centred log-strengths and
    their covariance; all 1 when no order is uncertain."""
    k = theta.size
    weights = np.ones((k, k))
    np.fill_diagonal(weights, 0.0)
    if k < 2:
        return weights
    order = np.argsort(-theta, kind="stable")
    adjacent = np.zeros((k - 1, k))
    adjacent[np.arange(k - 1), order[:-1]] = 1.0
    adjacent[np.arange(k - 1), order[1:]] = -1.0
    i, j = np.triu_indices(k, 1)
    pairs = np.zeros((i.size, k))
    pairs[np.arange(i.size), i] = 1.0
    pairs[np.arange(i.size), j] = -1.0
    variance = np.einsum("ak,kl,al->a", adjacent, covariance, adjacent)
    se = np.sqrt(np.clip(variance, 1e-300, None))
    gap = adjacent @ theta
    # How close each adjacent gap is to being settled: its z-statistic's density at the
    # two-sided threshold (coin flips and settled pairs get little, pairs about to settle most).
    urgency = norm.pdf(np.abs(gap) / se - norm.ppf(1 - (1 - confidence) / 2))
    p = expit(theta[i] - theta[j])
    info = p * (1 - p)
    cross = adjacent @ covariance @ pairs.T  # (adjacent, pairs)
    own = np.einsum("pk,kl,pl->p", pairs, covariance, pairs)
    # The share of each adjacent gap's variance one vote on (i, j) would remove, square-rooted:
    # a vote's influence on the gap relative to its standard error. Picking in proportion to
    # influence (not to its square) is Neyman's allocation, the best one for an estimate that
    # weights each vote by 1 / its probability, as the fit does.
    drop = info[None, :] * cross**2 / (1 + info[None, :] * own[None, :])
    narrowing = np.sqrt(np.clip(drop / np.clip(variance, 1e-300, None)[:, None], 0, None))
    priority = urgency @ narrowing
    if not np.isfinite(priority).all() or priority.max() <= 0:
        return weights
    scaled = np.maximum(priority / priority.mean(), floor)
    weights[i, j] = weights[j, i] = scaled
    return weights


def importance_weight(probability: float | None, eligible: int | None) -> float:
    """What a vote counts for in the fit: 1 / (n p) for an active pick among n comparisons with
    probability p, 1 for a uniform one (no probability recorded)."""
    if probability is None or not eligible:
        return 1.0
    return 1.0 / (eligible * probability)
