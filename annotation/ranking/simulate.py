"""Simulated studies: votes drawn from known strengths, assigned the way the claim assigns them
(uniform: fewest votes first; active: one vote each first, then by ``active.pair_weights``).
For the benchmark and the tests; plain numpy, no Django."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from .active import DEFAULT_FLOOR, pair_weights
from .counts import OUTCOME_A, OUTCOME_B, OUTCOME_TIE, Counts, aggregate
from .fit import rank

SAMPLINGS = ("uniform", "active")


@dataclass(frozen=True)
class SimulatedVotes:
    """The votes so far, one entry each (model indices, outcome codes, question, weight)."""

    model_a: np.ndarray
    model_b: np.ndarray
    outcome: np.ndarray
    question: np.ndarray
    weight: np.ndarray
    n_models: int
    n_questions: int

    def counts(self, weighted: bool = True) -> Counts:
        return aggregate(
            self.model_a,
            self.model_b,
            self.outcome,
            self.question,
            self.n_models,
            self.n_questions,
            weights=self.weight if weighted and (self.weight != 1).any() else None,
        )


def simulate_study(
    strengths: np.ndarray,
    *,
    n_questions: int,
    votes_per_comparison: int,
    sampling: str,
    seed: int,
    budget: int | None = None,
    every: int = 50,
    tie_share: float = 0.0,
    floor: float = DEFAULT_FLOOR,
) -> Iterator[SimulatedVotes]:
    """Yield the votes after every ``every`` votes (and at the end) of one study: every model
    pair on every question is a comparison that takes up to ``votes_per_comparison`` votes,
    ``budget`` votes at most. Outcomes: a tie with ``tie_share``, else Bradley-Terry on the
    log-``strengths``. Active weights are refreshed from a fit at every yield."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}: use one of {', '.join(SAMPLINGS)}")
    rng = np.random.default_rng(seed)
    k = len(strengths)
    first, second = np.triu_indices(k, 1)
    n_pairs = first.size
    pair = np.tile(np.arange(n_pairs), n_questions)
    question = np.repeat(np.arange(n_questions), n_pairs)
    load = np.zeros(pair.size, dtype=np.int64)
    capacity = pair.size * votes_per_comparison
    total = capacity if budget is None else min(budget, capacity)
    weights = np.ones(n_pairs)
    picked = np.zeros(total, dtype=np.int64)
    chosen_weight = np.ones(total)
    outcome = np.zeros(total, dtype=np.int64)
    for step in range(total):
        eligible = load < votes_per_comparison
        if sampling == "uniform":
            c = rng.choice(np.flatnonzero(eligible & (load == load[eligible].min())))
        elif (fresh := np.flatnonzero(load == 0)).size:
            c = rng.choice(fresh)
        else:
            candidates = np.flatnonzero(eligible)
            w = weights[pair[candidates]]
            p = w / w.sum()
            at = rng.choice(candidates.size, p=p)
            c, chosen_weight[step] = candidates[at], 1.0 / (candidates.size * p[at])
        load[c] += 1
        picked[step] = c
        a, b = first[pair[c]], second[pair[c]]
        tie, win = rng.random(2)
        outcome[step] = (
            OUTCOME_TIE
            if tie < tie_share
            else OUTCOME_A
            if win < expit(strengths[a] - strengths[b])
            else OUTCOME_B
        )
        if (step + 1) % every == 0 or step + 1 == total:
            n = step + 1
            c_all = picked[:n]
            votes = SimulatedVotes(
                first[pair[c_all]],
                second[pair[c_all]],
                outcome[:n].copy(),
                question[c_all],
                chosen_weight[:n].copy(),
                k,
                n_questions,
            )
            if sampling == "active":
                weights = _refreshed(votes, k, floor)
            yield votes


def _refreshed(votes: SimulatedVotes, k: int, floor: float) -> np.ndarray:
    """Pair weights (one per model pair, triu order) from a fit of the votes so far."""
    fitted = rank(votes.counts(), models=[str(i) for i in range(k)], bootstrap=0, sandwich=False)
    if fitted.covariance is None or len(fitted.names_fitted) < k:
        return np.ones(k * (k - 1) // 2)
    theta = np.array([fitted.model(str(i)).log_strength for i in range(k)])
    index = [int(name) for name in fitted.names_fitted]
    covariance = np.zeros((k, k))
    covariance[np.ix_(index, index)] = fitted.covariance
    return pair_weights(theta, covariance, floor)[np.triu_indices(k, 1)]
