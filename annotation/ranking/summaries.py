"""What the intervals say about the order: rank intervals, and per adjacent pair whether their
order is settled at the chosen confidence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from .sentences import Note, sentence, whole

SETTLED = sentence(
    "{upper} ranks above {lower}: the gap of {gap:.0f} Elo ({low:.0f} to {high:.0f}) leaves out "
    "zero at {level}%."
)
NOT_SETTLED = sentence(
    "{upper} and {lower} are not separated at {level}%: the gap of {gap:.0f} Elo ({low:.0f} to "
    "{high:.0f}) takes in zero."
)
NO_INTERVAL = sentence(
    "{upper} is ahead of {lower} by {gap:.0f} Elo; with no intervals, whether that order is "
    "settled is not known."
)


@dataclass(frozen=True)
class PairOrder:
    """Two models next to each other in the ranking, the gap between them (Elo) and its
    interval; ``settled``: the interval leaves out zero (None without intervals)."""

    upper: str
    lower: str
    gap: float
    low: float | None
    high: float | None
    settled: bool | None
    sentence: str


def rank_ranges(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ranks each model can take within its interval: best = 1 + the models whose interval
    lies wholly above its own, worst = the number of models less those wholly below it."""
    above = (low[None, :] > high[:, None]).sum(axis=1)
    below = (high[None, :] < low[:, None]).sum(axis=1)
    return 1 + above, len(low) - below


def gap_rank_ranges(
    active: np.ndarray,
    theta: np.ndarray,
    confidence: float,
    *,
    samples: np.ndarray | None = None,
    covariance: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank ranges of the ``active`` models from the interval of every pairwise gap (percentile
    bounds of resampled gaps, else normal bounds from ``covariance``): i is settled above j when
    the interval of theta_i - theta_j lies above zero. The same rule as ``pair_orders``, so a
    settled adjacent pair never shares a rank range."""
    tail = (1 - confidence) / 2
    idx = np.asarray(active)
    n = idx.size
    above = np.zeros((n, n), dtype=bool)  # above[i, j]: i settled above j
    if samples is not None:
        s = samples[:, idx]
        diffs = s[:, :, None] - s[:, None, :]
        low = np.percentile(diffs, 100 * tail, axis=0)
        above = low > 0
    elif covariance is not None:
        c = covariance[np.ix_(idx, idx)]
        d = np.diag(c)
        variance = np.clip(d[:, None] + d[None, :] - 2 * c, 0.0, None)
        gap = theta[idx][:, None] - theta[idx][None, :]
        above = gap - norm.ppf(1 - tail) * np.sqrt(variance) > 0
    np.fill_diagonal(above, False)
    best = 1 + above.sum(axis=0)  # models settled above each
    worst = n - above.sum(axis=1)  # less those settled below
    return best, worst


def gap_intervals(
    order: list[int],
    elo: np.ndarray,
    confidence: float,
    *,
    samples: np.ndarray | None = None,
    covariance: np.ndarray | None = None,
    scale: float = 1.0,
) -> list[tuple[int, int, float, float | None, float | None]]:
    """(upper, lower, gap, low, high) for each adjacent pair of ``order`` (indices, strongest
    first): percentile bounds of the resampled gaps (``samples``, rounds x k, log scale), else
    normal bounds from ``covariance`` (log scale); ``scale`` turns log units into Elo."""
    tail = (1 - confidence) / 2
    out = []
    for u, v in zip(order, order[1:], strict=False):
        gap = float(elo[u] - elo[v])
        low = high = None
        if samples is not None:
            diffs = (samples[:, u] - samples[:, v]) * scale
            low, high = (float(x) for x in np.percentile(diffs, [100 * tail, 100 * (1 - tail)]))
        elif covariance is not None:
            variance = covariance[u, u] + covariance[v, v] - 2 * covariance[u, v]
            half = float(norm.ppf(1 - tail) * np.sqrt(max(variance, 0.0)) * scale)
            low, high = gap - half, gap + half
        out.append((u, v, gap, low, high))
    return out


def pair_orders(
    names: list[str], gaps: list[tuple[int, int, float, float | None, float | None]], level: int
) -> list[PairOrder]:
    """``gap_intervals`` in words."""
    orders = []
    for u, v, gap, low, high in gaps:
        words = {"upper": names[u], "lower": names[v], "gap": gap, "level": level}
        if low is None or high is None:
            orders.append(
                PairOrder(names[u], names[v], gap, None, None, None, Note(NO_INTERVAL, **words))
            )
            continue
        settled = low > 0 or high < 0
        template = SETTLED if settled else NOT_SETTLED
        said = Note(template, **words, low=whole(low), high=whole(high))
        orders.append(PairOrder(names[u], names[v], gap, low, high, settled, said))
    return orders
