"""Percentile bootstrap intervals of the strengths.

Each round resamples whole questions (or single votes) by reweighting the per-question counts,
never by looping over votes. All rounds are then fitted together by the batched Newton's method
on the same likelihood as the point fit (``solvers``), under the same rule: the plain
maximum-likelihood fit where the resample has one (``existence``), the fallback regularisation
where it has not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .counts import Counts, submatrix
from .existence import mle_exists_each
from .sentences import Note, sentence
from .solvers import FALLBACK_ALPHA, fit_totals

DEFAULT_BOOTSTRAP = 1000

NOTE_NO_QUESTIONS = sentence(
    "The votes carry no question ids, so the bootstrap resamples single votes instead of questions."
)
NOTE_ONE_QUESTION = sentence(
    "All votes are on one question, so the bootstrap resamples single votes instead of questions."
)
NOTE_FEW_QUESTIONS = sentence(
    "Only {n} questions: intervals from resampling so few questions are rough."
)
NOTE_NO_BOOTSTRAP = sentence("No bootstrap was run: ci_low and ci_high equal the strength.")
NOTE_WEIGHTED_VOTES = sentence(
    "The votes carry sampling weights, so the bootstrap resamples whole questions (their "
    "weights with them) instead of single votes: drawing votes with the average weight would "
    "leave out how much the weights vary."
)


def resampling(counts: Counts, bootstrap: int, resample: str) -> tuple[str, list[str]]:
    """The resampling the bootstrap can do on these counts, and the notes that say why it
    differs from ``resample`` or how far to trust the intervals."""
    notes = []
    effective = resample
    if bootstrap and counts.n_votes and resample == "question":
        if not counts.clustered:
            notes.append(NOTE_NO_QUESTIONS)
            effective = "vote"
        elif counts.n_questions < 2:
            notes.append(NOTE_ONE_QUESTION)
            effective = "vote"
        elif counts.n_questions < 20:
            notes.append(Note(NOTE_FEW_QUESTIONS, n=counts.n_questions))
    weighted_votes = bootstrap and counts.n_votes and effective == "vote" and counts.weighted
    if weighted_votes and counts.clustered and counts.n_questions >= 2:
        notes.append(NOTE_WEIGHTED_VOTES)
        effective = "question"
    if not bootstrap and counts.n_votes:
        notes.append(NOTE_NO_BOOTSTRAP)
    return effective, notes


@dataclass(frozen=True)
class Bootstrap:
    """Percentile bounds of the log-strengths (k,) and of the extra parameter, the resampled
    log-strengths themselves (rounds, k) for intervals of differences and ranks, and how many
    rounds had no maximum-likelihood estimate (fitted with the fallback regularisation)."""

    low: np.ndarray
    high: np.ndarray
    extra_ci: tuple[float | None, float | None]
    samples: np.ndarray
    regularised: int


def bootstrap_bounds(
    chunks: Iterable[np.ndarray],
    active: np.ndarray,
    theta: np.ndarray,
    extra: float | None,
    kind: str,
    alpha: float | None,
    confidence: float,
) -> Bootstrap:
    """Refit the ``active`` models to every resampled round in ``chunks`` (from
    ``resampled_totals``), each started at the point fit (``theta``, ``extra``). ``alpha``: a
    fixed penalty, or None for the maximum-likelihood rule round by round."""
    tail = (1 - confidence) / 2 * 100
    start = theta[active]
    samples, extra_samples = [], []
    regularised = 0
    for chunk in chunks:
        sub = submatrix(chunk, active)
        if alpha is None:
            rows = np.where(mle_exists_each(sub, kind), 0.0, FALLBACK_ALPHA)
            regularised += int((rows > 0).sum())
        else:
            rows = np.full(len(sub), float(alpha))
        fitted, fitted_extra, _ = fit_totals(sub, kind, rows, start=(start, extra))
        samples.append(fitted)
        if fitted_extra is not None:
            extra_samples.append(fitted_extra)
    everything = np.zeros((sum(len(x) for x in samples), len(theta)))
    everything[:, active] = np.concatenate(samples)
    low, high = theta.copy(), theta.copy()
    low[active], high[active] = np.percentile(everything[:, active], [tail, 100 - tail], axis=0)
    extra_ci = (extra, extra)
    if extra_samples:
        bounds = np.percentile(np.concatenate(extra_samples), [tail, 100 - tail])
        extra_ci = (float(bounds[0]), float(bounds[1]))
    return Bootstrap(low, high, extra_ci, everything, regularised)


def resampled_totals(counts: Counts, rounds: int, resample: str, seed: int) -> Iterator[np.ndarray]:
    """Yield chunks of resampled channel totals, shape (r, C, k, k), ``rounds`` in all."""
    rng = np.random.default_rng(seed)
    per_q = counts.per_question
    nq, n_channels, k, _ = per_q.shape
    cells = n_channels * k * k
    chunk = max(1, min(rounds, 4_000_000 // cells))
    flat = per_q.reshape(nq, cells).astype(np.float64)
    if resample == "vote":
        totals = flat.sum(axis=0)
        nonzero = np.flatnonzero(totals)
        p = totals[nonzero] / totals[nonzero].sum()
    for done in range(0, rounds, chunk):
        r = min(chunk, rounds - done)
        if resample == "vote":
            out = np.zeros((r, cells))
            out[:, nonzero] = rng.multinomial(counts.n_votes, p, size=r)
            if counts.weighted:  # draws of the average vote's weight
                out *= totals.sum() / counts.n_votes
        else:
            draws = rng.integers(0, nq, size=(r, nq))
            offsets = (np.arange(r) * nq)[:, None]
            weights = np.bincount((draws + offsets).ravel(), minlength=r * nq).reshape(r, nq)
            out = weights.astype(np.float64) @ flat
        yield out.reshape(r, n_channels, k, k)
