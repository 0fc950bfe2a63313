"""A mean score per model with a percentile bootstrap interval that resamples whole questions
(plain numpy: grading results and sweep tables use it)."""

from __future__ import annotations

import warnings

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def bootstrap_means(
    sums: np.ndarray, counts: np.ndarray, *, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column (model): the mean score, and the low and high ends of the percentile
    interval at ``LEVEL`` over ``resamples`` resamples of the rows (questions).

    ``sums`` and ``counts`` are questions x models: the summed scores and how many there are
    (several turns of one question, or none). A model with no score anywhere gets NaN."""
    sums = np.asarray(sums, dtype=float)
    counts = np.asarray(counts, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums.sum(axis=0) / counts.sum(axis=0)
    if sums.shape[0] == 0:
        nan = np.full(sums.shape[1], np.nan)
        return means, nan, nan
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, sums.shape[0], size=(resamples, sums.shape[0]))
    with np.errstate(invalid="ignore", divide="ignore"):
        drawn = sums[rows].sum(axis=1) / counts[rows].sum(axis=1)
    tail = 100 * (1 - LEVEL) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a model never graded: all NaN
        low, high = np.nanpercentile(drawn, [tail, 100 - tail], axis=0)
    return means, low, high
