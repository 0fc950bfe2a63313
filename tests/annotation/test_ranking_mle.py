"""The maximum-likelihood fit by default, the fallback regularisation only where it does not
exist (point fit and each bootstrap resample), and the robustness count (no database)."""

from __future__ import annotations

import itertools
import math

import choix
import numpy as np
import pytest
from scipy.special import expit

from annotation.ranking import Battle, aggregate, rank
from annotation.ranking.existence import mle_exists
from annotation.ranking.fit import NOTE_BOOTSTRAP_REGULARISED, NOTE_REGULARISED
from annotation.ranking.solvers import FALLBACK_ALPHA

from .test_ranking import battles


def test_the_default_fit_is_choix_without_a_penalty():
    rng = np.random.default_rng(12)
    true = np.array([0.9, 0.4, 0.0, -0.3, -1.0])
    a = rng.integers(0, 5, 3000)
    b = (a + rng.integers(1, 5, a.size)) % 5
    outcome = np.where(rng.random(a.size) < expit(true[a] - true[b]), "a", "b").astype(object)
    outcome[rng.random(a.size) < 0.1] = "tie"
    counts = aggregate(a, b, outcome, rng.integers(0, 40, a.size), 5, 40)

    result = rank(counts, models=list("vwxyz"), bootstrap=0)

    scores = np.zeros((5, 5))
    for i, j, o in zip(a, b, outcome, strict=True):
        scores[i, j] += {"a": 1, "tie": 0.5, "b": 0}[o]
        scores[j, i] += {"a": 0, "tie": 0.5, "b": 1}[o]
    expected = choix.ilsr_pairwise_dense(scores, alpha=0.0, max_iter=100_000, tol=1e-12)
    fitted = [result.model(n).log_strength for n in "vwxyz"]
    np.testing.assert_allclose(fitted, expected - expected.mean(), atol=1e-6)
    assert result.alpha == 0 and not result.regularised
    assert NOTE_REGULARISED.split("(")[0][:40] not in " ".join(result.notes)


def test_an_undefeated_model_falls_back_to_the_regularisation_and_says_so():
    votes = battles("champ", "mid", 10, 0, 0) + battles("mid", "low", 6, 2, 2)
    votes += battles("champ", "low", 5, 0, 0)

    result = rank(votes, bootstrap=0)

    assert result.regularised and result.alpha == FALLBACK_ALPHA
    assert NOTE_REGULARISED.format(alpha=FALLBACK_ALPHA) in result.notes
    assert any(note.startswith("champ never lost a vote") for note in result.notes)
    assert math.isfinite(result.model("champ").strength)


def test_an_explicit_alpha_is_always_applied():
    votes = battles("x", "y", 7, 0, 3)
    plain = rank(votes, bootstrap=0)
    penalised = rank(votes, bootstrap=0, alpha=0.5)

    assert plain.alpha == 0 and penalised.alpha == 0.5 and penalised.regularised
    gap = penalised.model("x").log_strength - penalised.model("y").log_strength
    assert 0 < gap < math.log(7 / 3)


def test_bootstrap_resamples_without_an_mle_are_regularised_one_by_one():
    # x beat y in 9 of 10 votes, each on its own question: about 35 % of resamples hold no loss
    # of x (0.9^10), and only those need the penalty.
    votes = [Battle("x", "y", "a" if i < 9 else "b", question=f"q{i}") for i in range(10)]

    result = rank(votes, bootstrap=400, seed=3)

    assert not result.regularised
    assert 0.25 * 400 < result.bootstrap_regularised < 0.45 * 400
    note = NOTE_BOOTSTRAP_REGULARISED.format(
        n=result.bootstrap_regularised, rounds=400, alpha=FALLBACK_ALPHA
    )
    assert note in result.notes
    assert all(math.isfinite(m.ci_high) for m in result.models)


def test_a_first_position_advantage_that_separates_is_caught():
    # Whoever is shown first always wins: strengths are finite (each model won and lost) but the
    # advantage is not, so the position fit has no MLE while the plain one has.
    votes = [Battle("x", "y", "a", f"q{i}", first_shown="a") for i in range(8)]
    votes += [Battle("x", "y", "b", f"q{i}", first_shown="b") for i in range(6)]
    votes += [Battle("y", "z", "a", f"r{i}", first_shown="a") for i in range(5)]
    votes += [Battle("y", "z", "b", f"r{i}", first_shown="b") for i in range(5)]

    plain = rank(votes, bootstrap=0)
    positioned = rank(votes, bootstrap=0, position=True)

    assert not plain.regularised
    assert positioned.regularised
    assert math.isfinite(positioned.position_advantage_elo)


@pytest.mark.parametrize(
    ("scores", "exists"),
    [
        ([[0, 3, 1], [2, 0, 1], [1, 1, 0]], True),
        ([[0, 3, 1], [0, 0, 1], [1, 1, 0]], True),  # 0 -> 1 -> 2 -> 0: still a cycle
        ([[0, 3, 1], [0, 0, 1], [0, 1, 0]], False),  # 0 never lost
        ([[0, 3, 0], [2, 0, 0], [0, 0, 0]], False),  # 2 never played
    ],
)
def test_the_bradley_terry_mle_exists_exactly_when_the_graph_is_strongly_connected(scores, exists):
    totals = np.zeros((3, 3, 3))
    totals[0] = scores  # outcome a: i beat j
    assert mle_exists(totals, "bradley_terry") is exists


def test_robustness_counts_the_votes_that_hold_the_leader_up():
    # x leads y 6 - 4: three of x's wins must go before y leads (4 - 4 is a tie, not a lead).
    result = rank(battles("x", "y", 6, 0, 4), bootstrap=0, robustness=True)

    found = result.robustness
    assert (found.top, found.votes, found.new_top) == ("x", 3, "y")
    assert found.share == pytest.approx(0.3)


def test_the_greedy_count_matches_a_brute_force_search_on_a_small_study():
    votes = battles("a", "b", 4, 1, 2) + battles("b", "c", 3, 0, 3) + battles("a", "c", 3, 1, 2)
    result = rank(votes, bootstrap=0, robustness=True)
    top = result.names[0]

    def leader(kept):
        fitted = rank(kept, models=["a", "b", "c"], bootstrap=0, sandwich=False)
        first, second = fitted.models[0], fitted.models[1]
        return first.name if first.log_strength > second.log_strength + 1e-9 else None

    smallest = None
    for size in range(1, result.robustness.votes + 1):
        for removed in itertools.combinations(range(len(votes)), size):
            kept = [v for i, v in enumerate(votes) if i not in set(removed)]
            if leader(kept) not in (top, None):
                smallest = size
                break
        if smallest is not None:
            break
    assert result.robustness.votes == smallest
