"""Intervals that respect the design: sandwich and bootstrap coverage on simulated studies whose
votes are correlated within a question, the sandwich against a hand computation, rank ranges and
the adjacent-pair sentences (no database)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from annotation.ranking import ELO_PER_LOG, Battle, aggregate, rank
from annotation.ranking.sandwich import cluster_logit, hand_sandwich, logistic_rows
from annotation.ranking.summaries import NOT_SETTLED, SETTLED, rank_ranges

from .test_ranking import battles

TRUE = np.array([0.7, 0.25, -0.15, -0.8])
NAMES = ["a", "b", "c", "d"]
PAIRS = [(i, j) for i in range(4) for j in range(i + 1, 4)]


def clustered_study(rng: np.random.Generator, n_questions: int = 50, k_votes: int = 3):
    """Every pair on every question, judged ``k_votes`` times. The votes on one comparison share
    a probability drawn from a Beta around the Bradley-Terry one (mean exactly
    sigmoid(gap)), so they are correlated within a question, as real judgments are, while the
    true centred strengths stay the estimand."""
    q = np.repeat(np.arange(n_questions), len(PAIRS))
    a = np.tile([i for i, _ in PAIRS], n_questions)
    b = np.tile([j for _, j in PAIRS], n_questions)
    mean = expit(TRUE[a] - TRUE[b])
    concentration = 1.5
    p = rng.beta(mean * concentration, (1 - mean) * concentration)
    wins = rng.binomial(k_votes, p)
    votes_a = np.repeat(a, k_votes)
    votes_b = np.repeat(b, k_votes)
    votes_q = np.repeat(q, k_votes)
    outcome = np.zeros(votes_a.size, dtype=np.int64)
    for row in range(q.size):  # the first ``wins`` votes of each comparison go to a
        outcome[row * k_votes + wins[row] : (row + 1) * k_votes] = 2
    return aggregate(votes_a, votes_b, outcome, votes_q, 4, n_questions)


@pytest.fixture(scope="module")
def coverage():
    """Share of (study, model) cases whose 95 % interval holds the true centred strength, over
    200 simulated studies of 50 questions (1800 votes each)."""
    rng = np.random.default_rng(20240)
    truth = 1000 + ELO_PER_LOG * (TRUE - TRUE.mean())
    hits = {"bootstrap": 0, "sandwich": 0, "model": 0}
    cases = 0
    for study in range(200):
        counts = clustered_study(rng)
        result = rank(counts, models=NAMES, bootstrap=300, seed=study)
        for name, true in zip(NAMES, truth, strict=True):
            m = result.model(name)
            hits["bootstrap"] += m.ci_low <= true <= m.ci_high
            hits["sandwich"] += m.sandwich_low <= true <= m.sandwich_high
            index = result.names_fitted.index(name)
            half = 1.96 * ELO_PER_LOG * np.sqrt(result.covariance[index, index])
            hits["model"] += m.strength - half <= true <= m.strength + half
            cases += 1
    return {kind: n / cases for kind, n in hits.items()}


def test_sandwich_intervals_cover_the_true_strength_92_to_98_percent(coverage):
    assert 0.92 <= coverage["sandwich"] <= 0.98


def test_question_bootstrap_intervals_cover_the_true_strength_92_to_98_percent(coverage):
    assert 0.92 <= coverage["bootstrap"] <= 0.98


def test_intervals_that_ignore_the_questions_are_too_narrow_here(coverage):
    # The inverse-information intervals treat correlated votes as independent.
    assert coverage["model"] < 0.90


def test_statsmodels_cluster_covariance_equals_the_per_question_sum_by_hand():
    counts = clustered_study(np.random.default_rng(3), n_questions=30)
    result = rank(counts, models=NAMES, bootstrap=0)
    theta = np.array([result.model(n).log_strength for n in NAMES])
    per_question = counts.per_question.astype(float)

    by_hand, _ = hand_sandwich(per_question, theta, "bradley_terry", 0.0)
    found = cluster_logit(logistic_rows(per_question, position=False), 4)

    np.testing.assert_allclose(found.params, theta, atol=1e-6)
    np.testing.assert_allclose(found.cov, by_hand, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(result.sandwich_covariance, by_hand, rtol=1e-5, atol=1e-10)


def test_rank_ranges_follow_the_overlap_of_intervals():
    low = np.array([10.0, 5.0, 4.0, -3.0])
    high = np.array([14.0, 9.0, 8.0, 1.0])
    best, worst = rank_ranges(low, high)
    assert best.tolist() == [1, 2, 2, 4]
    assert worst.tolist() == [1, 3, 3, 4]


def test_each_adjacent_pair_is_said_to_be_settled_or_not():
    votes = battles("strong", "middle", 80, 0, 20) + battles("middle", "twin", 51, 0, 49)
    votes += battles("strong", "twin", 78, 4, 18)

    result = rank(votes, bootstrap=300, seed=1)

    first, second = result.orders
    assert (first.upper, first.lower, first.settled) == ("strong", "middle", True)
    assert first.sentence.startswith("strong ranks above middle")
    assert (second.upper, second.lower, second.settled) == ("middle", "twin", False)
    assert "are not separated at 95%" in second.sentence
    assert second.low < 0 < second.high
    assert result.interval_source == "bootstrap"
    assert result.model("strong").rank_low == result.model("strong").rank_high == 1
    assert (result.model("twin").rank_low, result.model("twin").rank_high) == (2, 3)
    assert SETTLED.split(":")[0] and NOT_SETTLED.split(":")[0]  # the sentences' templates


def test_without_a_bootstrap_the_sentences_use_the_sandwich():
    rng = np.random.default_rng(5)
    wins = rng.random(100) < 0.7
    votes = [
        Battle("x", "y", "a" if won else "b", question=f"q{i % 10}") for i, won in enumerate(wins)
    ]
    result = rank(votes, bootstrap=0)
    (order,) = result.orders
    assert result.interval_source == "sandwich"
    assert order.settled is True
    m = result.model("x")
    assert m.sandwich_low < m.strength < m.sandwich_high
    assert m.se == pytest.approx((m.sandwich_high - m.strength) / 1.959964, rel=1e-4)
