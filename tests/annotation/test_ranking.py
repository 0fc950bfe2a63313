"""The plain ranking module against cases with known answers (no database)."""

from __future__ import annotations

import math

import choix
import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from annotation.ranking import (
    ELO_PER_LOG,
    FIRST_A,
    FIRST_B,
    OUTCOME_A,
    OUTCOME_B,
    OUTCOME_TIE,
    Battle,
    aggregate,
    compare,
    rank,
    rank_arrays,
)
from annotation.ranking.counts import BLOCK, wins_ties
from annotation.ranking.diagnostics import NOTE_NO_VOTES
from annotation.ranking.fit import NOTE_NO_POSITION
from annotation.ranking.intervals import NOTE_NO_QUESTIONS
from annotation.ranking.solvers import fit_bt_newton, fit_davidson, fit_position

# The default fit is the maximum-likelihood estimate (no penalty where it exists): exact up to
# the solver's tolerance.
REGULARISATION_TOLERANCE = 1e-5


def battles(model_a: str, model_b: str, wins: int, ties: int, losses: int) -> list[Battle]:
    """``wins`` / ``ties`` / ``losses`` from model_a's side, spread over ten questions."""
    outcomes = ["a"] * wins + ["tie"] * ties + ["b"] * losses
    return [
        Battle(model_a, model_b, outcome, question=f"q{i % 10}")
        for i, outcome in enumerate(outcomes)
    ]


def simulate(
    strengths: np.ndarray,
    n_votes: int,
    rng: np.random.Generator,
    n_questions: int = 50,
    advantage: float = 0.0,
):
    """Votes drawn from Bradley-Terry with these log-strengths (first shown gets ``advantage``)."""
    k = len(strengths)
    a = rng.integers(0, k, n_votes)
    b = (a + rng.integers(1, k, n_votes)) % k
    a_first = rng.random(n_votes) < 0.5
    first = np.where(a_first, a, b)
    second = np.where(a_first, b, a)
    first_wins = rng.random(n_votes) < expit(advantage + strengths[first] - strengths[second])
    a_wins = first_wins == a_first
    outcome = np.where(a_wins, OUTCOME_A, OUTCOME_B)
    question = rng.integers(0, n_questions, n_votes)
    first_shown = np.where(a_first, FIRST_A, FIRST_B)
    return a, b, outcome, question, first_shown


def test_a_70_30_record_gives_a_gap_of_ln_7_over_3():
    result = rank(battles("x", "y", 70, 0, 30), bootstrap=0)

    x, y = result.model("x"), result.model("y")
    assert x.log_strength - y.log_strength == pytest.approx(
        math.log(7 / 3), abs=REGULARISATION_TOLERANCE
    )
    assert x.log_strength == pytest.approx(-y.log_strength)  # centred
    assert result.win_probability[("x", "y")] == pytest.approx(0.7, abs=1e-3)
    # Elo scale: 400 points per factor of 10 in odds, mean 1000.
    assert x.strength - y.strength == pytest.approx(400 * math.log10(7 / 3), abs=0.5)
    assert (x.strength + y.strength) / 2 == pytest.approx(1000)
    assert (x.wins, x.ties, x.losses, x.games, x.win_rate) == (70, 0, 30, 100, 0.7)
    assert result.names == ["x", "y"]
    assert result.n_votes == 100


def test_ties_count_as_half_a_win_for_each_side():
    even = rank(battles("x", "y", 40, 20, 40), bootstrap=0)
    only_ties = rank(battles("x", "y", 0, 30, 0), bootstrap=0)
    with_ties = rank(battles("x", "y", 60, 20, 20), bootstrap=0)
    without = rank(battles("x", "y", 70, 0, 30), bootstrap=0)

    assert even.model("x").log_strength == pytest.approx(0, abs=1e-9)
    assert only_ties.model("x").log_strength == pytest.approx(0, abs=1e-9)
    assert with_ties.model("x").log_strength == pytest.approx(without.model("x").log_strength)
    assert with_ties.model("x").win_rate == pytest.approx(0.7)
    assert with_ties.pair_counts[("x", "y")] == (60, 20, 20)
    assert with_ties.pair_counts[("y", "x")] == (20, 20, 60)


def test_a_chain_of_models_is_recovered_in_order_from_20k_votes():
    true = np.linspace(1.2, -1.2, 8)
    a, b, outcome, question, _ = simulate(true, 20_000, np.random.default_rng(3))
    names = [f"m{i}" for i in range(8)]

    result = rank(aggregate(a, b, outcome, question, 8, 50), models=names, bootstrap=0)

    fitted = [result.model(name).log_strength for name in names]
    assert stats.spearmanr(fitted, true).statistic == 1.0
    assert result.names == names


def test_question_bootstrap_intervals_cover_the_true_strength_in_at_least_90_percent():
    rng = np.random.default_rng(2024)
    true = np.array([0.8, 0.3, -0.2, -0.9])
    centred = true - true.mean()
    names = ["a", "b", "c", "d"]
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    covered = cases = 0
    for study in range(100):
        # 60 questions, every pair judged twice per question: 720 votes. (Seeds 1-4 and 2024
        # give 0.925-0.96 here; with half as many votes the percentile bootstrap dips to 0.90.)
        q = np.repeat(np.arange(60), len(pairs) * 2)
        a = np.tile([i for i, _ in pairs for _ in range(2)], 60)
        b = np.tile([j for _, j in pairs for _ in range(2)], 60)
        a_wins = rng.random(a.size) < expit(true[a] - true[b])
        outcome = np.where(a_wins, OUTCOME_A, OUTCOME_B)
        result = rank(aggregate(a, b, outcome, q, 4, 60), models=names, bootstrap=200, seed=study)
        for name, truth in zip(names, centred, strict=True):
            m = result.model(name)
            covered += m.ci_low <= 1000 + ELO_PER_LOG * truth <= m.ci_high
            cases += 1
    assert cases == 400
    assert covered / cases >= 0.90


def test_models_that_never_met_get_finite_strengths_and_a_note():
    votes = battles("a", "b", 6, 1, 3) + battles("c", "d", 2, 0, 5)

    result = rank(votes, bootstrap=50)

    for m in result.models:
        assert all(math.isfinite(v) for v in (m.strength, m.ci_low, m.ci_high, m.log_strength))
    assert any("2 groups with no votes between them" in note for note in result.notes)
    assert not any("never met" in note for note in result.notes)  # separate groups
    assert math.isfinite(result.win_probability[("a", "c")])


def test_pairs_that_never_met_inside_a_connected_group_are_noted():
    votes = battles("a", "b", 6, 1, 3) + battles("b", "c", 5, 0, 5) + battles("a", "c", 4, 2, 4)
    votes += battles("c", "d", 3, 3, 4)

    result = rank(votes, bootstrap=0)

    assert any(note.startswith("2 of 6 model pairs never met") for note in result.notes)


def test_an_undefeated_model_and_a_winless_one_stay_finite_and_are_noted():
    votes = battles("champ", "mid", 10, 0, 0) + battles("mid", "low", 6, 2, 2)
    votes += battles("mid", "zero", 10, 0, 0) + battles("champ", "low", 5, 0, 0)

    result = rank(votes, bootstrap=100)

    champ = result.model("champ")
    assert champ == result.models[0]
    assert all(math.isfinite(m.strength) and math.isfinite(m.ci_high) for m in result.models)
    assert champ.strength < 3000
    assert any(n.startswith("champ never lost a vote") for n in result.notes)
    assert any(n.startswith("zero never won or tied a vote") for n in result.notes)
    assert all(0 < p < 1 for p in result.win_probability.values())


def test_a_model_without_votes_sits_at_the_mean_with_a_note():
    result = rank(battles("x", "y", 7, 0, 3), models=["x", "y", "idle"], bootstrap=20)

    idle = result.model("idle")
    assert (idle.strength, idle.ci_low, idle.ci_high, idle.games) == (1000, 1000, 1000, 0)
    assert idle.win_rate is None
    assert "idle has no votes: it is shown at the mean with no information." in result.notes


def test_no_votes_at_all_gives_a_flat_ranking_and_a_note():
    result = rank([], models=["x", "y"], bootstrap=10)

    assert [m.strength for m in result.models] == [1000, 1000]
    assert result.notes == [NOTE_NO_VOTES]
    assert result.win_probability[("x", "y")] == 0.5


def test_win_probability_covers_every_ordered_pair():
    a, b, outcome, question, _ = simulate(np.array([0.5, 0, -0.5]), 600, np.random.default_rng(0))
    result = rank(aggregate(a, b, outcome, question, 3, 50), models=["a", "b", "c"], bootstrap=0)

    assert len(result.win_probability) == 6
    for (x, y), p in result.win_probability.items():
        assert p + result.win_probability[(y, x)] == pytest.approx(1)
        diff = result.model(x).log_strength - result.model(y).log_strength
        assert p == pytest.approx(expit(diff))
    with pytest.raises(KeyError):
        result.win_probability[("a", "a")]


def test_the_bootstrap_is_reproducible_and_resamples_questions_or_votes():
    rng = np.random.default_rng(5)
    a, b, outcome, question, _ = simulate(np.array([0.4, 0.0, -0.4]), 900, rng, n_questions=40)
    counts = aggregate(a, b, outcome, question, 3, 40)

    first = rank(counts, models=["a", "b", "c"], bootstrap=300, seed=1)
    again = rank(counts, models=["a", "b", "c"], bootstrap=300, seed=1)
    by_vote = rank(counts, models=["a", "b", "c"], bootstrap=300, seed=1, resample="vote")

    assert [(m.ci_low, m.ci_high) for m in first.models] == [
        (m.ci_low, m.ci_high) for m in again.models
    ]
    assert by_vote.resample == "vote" and first.resample == "question"
    assert [m.strength for m in by_vote.models] == [m.strength for m in first.models]
    assert [m.ci_low for m in by_vote.models] != [m.ci_low for m in first.models]
    for m in first.models + by_vote.models:
        assert m.ci_low < m.strength < m.ci_high
        assert 20 < m.ci_high - m.ci_low < 200


def test_votes_without_question_ids_are_resampled_one_by_one_with_a_note():
    result = rank([Battle("x", "y", "a")] * 7 + [Battle("x", "y", "b")] * 3, bootstrap=50)
    counts = aggregate([0] * 10, [1] * 10, ["a"] * 6 + ["b"] * 4, None, 2)
    unclustered = rank(counts, models=["x", "y"], bootstrap=50)

    assert NOTE_NO_QUESTIONS not in result.notes  # each vote is its own question
    assert unclustered.resample == "vote"
    assert NOTE_NO_QUESTIONS in unclustered.notes


def test_the_batched_bootstrap_solver_gives_choix_s_answer():
    rng = np.random.default_rng(11)
    for case in range(6):
        scores = rng.integers(0, 12, (6, 6)).astype(float) + rng.random((6, 6)) / 2
        np.fill_diagonal(scores, 0)
        if case == 1:
            scores[:, 0] = 0  # model 0 never lost
        if case == 2:
            scores[:3, 3:] = scores[3:, :3] = 0  # two groups that never met
        expected = choix.ilsr_pairwise_dense(scores, alpha=0.05, max_iter=1000)
        got = fit_bt_newton(scores[None], 0.05)[0]
        np.testing.assert_allclose(got, expected - expected.mean(), atol=1e-6)


def test_davidson_is_selectable_and_recovers_the_tie_parameter():
    rng = np.random.default_rng(8)
    true, nu = np.array([0.6, 0.1, -0.7]), 0.8
    a = rng.integers(0, 3, 30_000)
    b = (a + rng.integers(1, 3, a.size)) % 3
    pa, pb = np.exp(true[a]), np.exp(true[b])
    tie_w = nu * np.sqrt(pa * pb)
    u = rng.random(a.size) * (pa + pb + tie_w)
    outcome = np.where(u < pa, OUTCOME_A, np.where(u < pa + tie_w, OUTCOME_TIE, OUTCOME_B))
    counts = aggregate(a, b, outcome, rng.integers(0, 60, a.size), 3, 60)

    result = rank(counts, models=["x", "y", "z"], method="davidson", bootstrap=30)

    assert result.method == "davidson"
    assert result.tie_parameter == pytest.approx(nu, rel=0.1)
    fitted = [result.model(n).log_strength for n in "xyz"]
    np.testing.assert_allclose(fitted, true - true.mean(), atol=0.06)
    p_tie = result.tie_probability[("x", "z")]
    p_win = result.win_probability[("x", "z")]
    assert 0 < p_tie < 1 and p_tie / 2 < p_win < 1
    assert all(m.ci_low <= m.strength <= m.ci_high for m in result.models)


def test_the_position_variant_recovers_a_first_position_advantage():
    true, advantage = np.array([0.5, 0.2, -0.1, -0.6]), 0.4
    a, b, outcome, question, first = simulate(true, 20_000, np.random.default_rng(1), 100, 0.4)
    counts = aggregate(a, b, outcome, question, 4, 100, first_shown=first)

    result = rank(counts, models=list("wxyz"), position=True, bootstrap=30)

    expected_elo = advantage * ELO_PER_LOG  # about 69.5 Elo
    assert result.position_advantage_elo == pytest.approx(expected_elo, abs=12)
    low, high = result.position_advantage_ci
    assert low < result.position_advantage_elo < high
    fitted = [result.model(n).log_strength for n in "wxyz"]
    np.testing.assert_allclose(fitted, true - true.mean(), atol=0.06)
    plain = rank(counts, models=list("wxyz"), bootstrap=0)
    assert plain.position_advantage_elo is None


def test_position_needs_first_shown_and_bradley_terry():
    votes = battles("x", "y", 6, 0, 4)
    no_position = rank(votes, position=True, bootstrap=0)

    assert no_position.position_advantage_elo is None
    assert NOTE_NO_POSITION in no_position.notes
    with pytest.raises(ValueError, match="bradley_terry only"):
        rank(votes, position=True, method="davidson")
    with pytest.raises(ValueError, match="first_shown"):
        rank(aggregate([0], [1], [0], None, 2), models=["x", "y"], position=True)


def test_battles_with_first_shown_feed_the_position_fit():
    votes = [Battle("x", "y", "a", f"q{i}", first_shown="a") for i in range(30)]
    votes += [Battle("x", "y", "b", f"q{i}", first_shown="b") for i in range(30)]
    votes += [Battle("x", "y", "tie", f"q{i}", first_shown="ab"[i % 2]) for i in range(10)]

    result = rank(votes, position=True, bootstrap=0)

    # The first-shown answer won all 60 decided votes: odds 32.5 : 2.5 whichever was first.
    assert result.position_advantage_elo == pytest.approx(ELO_PER_LOG * math.log(13), abs=1)
    assert result.model("x").log_strength == pytest.approx(0, abs=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "elo"}, "unknown method"),
        ({"resample": "pairs"}, "unknown resample"),
        ({"alpha": 0}, "alpha must be positive"),
        ({"bootstrap": -1}, "bootstrap must be"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rank(battles("x", "y", 1, 0, 1), **kwargs)


def test_aggregate_refuses_malformed_votes():
    with pytest.raises(ValueError, match="equals model_b_idx in 1 vote"):
        aggregate([0, 1], [1, 1], [0, 0], None, 2)
    with pytest.raises(ValueError, match="model_b index out of range"):
        aggregate([0], [2], [0], None, 2)
    with pytest.raises(ValueError, match="differ in length"):
        aggregate([0, 1], [1], [0, 0], None, 2)
    with pytest.raises(ValueError, match="unknown outcome 'win'"):
        aggregate([0], [1], ["win"], None, 2)
    with pytest.raises(ValueError, match="question index out of range"):
        aggregate([0], [1], [0], [3], 2, n_questions=2)
    with pytest.raises(ValueError, match="compared with itself"):
        rank([Battle("x", "x", "a")])
    with pytest.raises(ValueError, match="unknown model 'z'"):
        rank([Battle("x", "z", "a")], models=["x", "y"])


def test_aggregate_accepts_outcome_names_and_keeps_only_questions_with_votes():
    counts = aggregate([0, 1, 0], [1, 0, 1], ["a", "tie", "b"], [0, 4, 4], 2, n_questions=9)

    assert counts.n_questions == 2
    assert counts.n_votes == 3
    wins, ties = wins_ties(counts.totals())
    assert wins.tolist() == [[0, 1], [1, 0]]  # 0 beat 1 once, 1 beat 0 once
    assert ties.tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.uint64])
def test_aggregate_counts_every_vote_once_across_its_blocks(dtype):
    # Several blocks and a partial last one; every channel (question, position, outcome) used.
    rng = np.random.default_rng(5)
    n, k, nq = 2 * BLOCK + 1234, 7, 11
    a = rng.integers(0, k, n)
    b = (a + rng.integers(1, k, n)) % k
    outcome = rng.integers(0, 3, n)
    question = rng.integers(0, nq, n)
    first = rng.integers(-1, 2, n)
    counts = aggregate(
        a.astype(dtype),
        b.astype(dtype),
        outcome.astype(dtype),
        question.astype(dtype),
        k,
        nq,
        first_shown=first,
    )

    expected = np.zeros((nq, 9, k, k), dtype=np.int64)
    for vote in range(n):  # one vote at a time, the slow obvious way
        channel = 3 * (first[vote] + 1) + outcome[vote]
        expected[question[vote], channel, a[vote], b[vote]] += 1
    assert counts.n_votes == n
    assert np.array_equal(counts.per_question, expected)


def test_a_bad_vote_in_a_late_block_is_refused():
    n = BLOCK + 10
    a, b, outcome = np.zeros(n, np.int32), np.ones(n, np.int32), np.zeros(n, np.int32)
    b[-1] = -1
    with pytest.raises(ValueError, match="model_b index out of range"):
        aggregate(a, b, outcome, None, 2)
    b[-1], outcome[-1] = 1, 3
    with pytest.raises(ValueError, match="outcome codes must lie in 0..2"):
        aggregate(a, b, outcome, None, 2)
    outcome[-1] = 0
    first = np.zeros(n, np.int32)
    first[-1] = 2
    with pytest.raises(ValueError, match="first_shown codes must lie in -1..1"):
        aggregate(a, b, outcome, None, 2, first_shown=first)


def test_two_studies_are_compared_by_kendall_tau_and_pair_win_rates():
    first = rank(
        battles("a", "b", 7, 0, 3) + battles("b", "c", 6, 2, 2) + battles("a", "c", 8, 0, 2),
        bootstrap=0,
    )
    second = rank(
        battles("a", "b", 6, 2, 2) + battles("b", "c", 5, 0, 5) + battles("a", "c", 9, 1, 0),
        models=["a", "b", "c", "extra"],
        bootstrap=0,
    )

    result = compare(first, second)

    assert result.models == ["a", "b", "c"]
    assert result.kendall_tau == pytest.approx(1.0)
    by_pair = {(p.model_a, p.model_b): p for p in result.pairs}
    assert by_pair[("a", "b")].win_rate_1 == pytest.approx(0.7)
    assert by_pair[("a", "b")].win_rate_2 == pytest.approx(0.7)
    assert by_pair[("b", "c")].win_rate_1 == pytest.approx(0.7)
    assert by_pair[("b", "c")].win_rate_2 == pytest.approx(0.5)
    assert by_pair[("a", "c")].games_2 == 10


def test_the_batched_bootstrap_solvers_agree_with_the_scipy_point_fits():
    rng = np.random.default_rng(4)
    wins = rng.integers(0, 15, (5, 5)).astype(float)
    ties = rng.integers(0, 4, (5, 5)).astype(float)
    ties += ties.T
    np.fill_diagonal(wins, 0)
    np.fill_diagonal(ties, 0)
    wins[:, 0] = 0  # model 0 never lost outright

    theta, nu = fit_davidson(wins, ties, 0.01)
    batch_theta, batch_nu = fit_davidson(wins[None], ties[None], 0.01, start=np.zeros(6))
    np.testing.assert_allclose(batch_theta[0], theta, atol=1e-6)
    assert batch_nu[0] == pytest.approx(nu, rel=1e-6)

    first, second, unknown = (rng.integers(0, 9, (5, 5)).astype(float) for _ in range(3))
    for m in (first, second, unknown):
        np.fill_diagonal(m, 0)
    theta, advantage = fit_position(first, second, unknown, 0.01)
    batch_theta, batch_adv = fit_position(
        first[None], second[None], unknown[None], 0.01, start=np.zeros(6)
    )
    np.testing.assert_allclose(batch_theta[0], theta, atol=1e-6)
    assert batch_adv[0] == pytest.approx(advantage, abs=1e-6)


def test_rank_arrays_aggregates_and_ranks_in_one_call():
    result = rank_arrays(
        [0, 0, 0, 1],
        [1, 1, 1, 0],
        ["a", "a", "b", "tie"],
        [0, 1, 2, 2],
        models=["x", "y"],
        bootstrap=0,
    )

    assert result.pair_counts[("x", "y")] == (2, 1, 1)
    assert result.n_questions == 3
