"""The smaller statistical items of issue 28, each on the engine that holds it."""

from __future__ import annotations

import numpy as np

from annotation import reports
from annotation.agreement import orientation_free_kappa
from annotation.ranking import Battle, rank
from annotation.ranking.intervals import NOTE_WEIGHTED_VOTES
from annotation.results import position_by_question


def test_kappa_does_not_depend_on_which_model_is_stored_as_a():
    table = np.array([[30, 5, 10], [4, 6, 3], [8, 2, 12]])
    # The same comparisons with a and b swapped on both sides: rows and columns reversed.
    assert np.isclose(orientation_free_kappa(table), orientation_free_kappa(table[::-1, ::-1]))
    half = np.array([[30, 5, 0], [4, 6, 0], [0, 0, 0]]) + np.array(
        [[0, 0, 0], [0, 0, 0], [10, 2, 12]]
    )
    assert orientation_free_kappa(half) is not None


def _battles(rng, strengths, n):
    out = []
    k = len(strengths)
    for v in range(n):
        i, j = rng.choice(k, 2, replace=False)
        p = 1 / (1 + np.exp(strengths[j] - strengths[i]))
        outcome = "a" if rng.random() < p else "b"
        out.append(Battle(str(i), str(j), outcome, question=f"q{v % 40}"))
    return out


def test_rank_ranges_agree_with_the_settled_sentences():
    rng = np.random.default_rng(0)
    fitted = rank(_battles(rng, [1.0, 0.75, 0.0, -0.1], 1500), bootstrap=200, seed=1)
    by_name = {m.name: m for m in fitted.models}
    for order in fitted.orders:
        upper, lower = by_name[order.upper], by_name[order.lower]
        if order.settled:
            assert upper.rank_high < lower.rank_low
        else:
            assert upper.rank_high >= lower.rank_low


def test_a_model_without_votes_is_not_estimated_and_listed_last():
    rng = np.random.default_rng(1)
    fitted = rank(_battles(rng, [0.5, 0.0, -0.5], 300), models=["0", "1", "2", "idle"], bootstrap=0)
    assert fitted.models[-1].name == "idle" and not fitted.models[-1].estimated
    assert fitted.models[-1].rank_low is None and fitted.models[-1].sandwich_low is None
    assert all(m.estimated for m in fitted.models[:-1])


def test_weighted_votes_are_bootstrapped_by_question_with_their_weights():
    rng = np.random.default_rng(2)
    battles = [
        Battle(b.model_a, b.model_b, b.outcome, b.question, weight=float(rng.uniform(0.5, 3)))
        for b in _battles(rng, [0.5, 0.0, -0.5], 400)
    ]
    fitted = rank(battles, bootstrap=50, resample="vote", seed=0)
    assert fitted.resample == "question" and NOTE_WEIGHTED_VOTES in fitted.notes


def _row(question, outcome, left):
    return reports.VoteRow(
        comparison=question,
        question=question,
        category="",
        model_a="x",
        model_b="y",
        outcome=outcome,
        shown_left=left,
        annotator="u",
        both_bad=False,
    )


def test_the_position_test_counts_questions_not_votes():
    # 30 questions: on 10 every vote (20 each) went left, on 20 the votes split evenly. Taken as
    # independent votes that is overwhelming; by question, ten questions are weak evidence.
    rows = []
    for q in range(30):
        for v in range(20):
            side = "a" if q < 10 or v % 2 else "b"
            rows.append(_row(f"q{q}", side, "a"))
    naive = reports.position_bias(rows)
    clustered = position_by_question(rows)
    assert naive.p_value < 1e-10
    assert clustered.p_value > 1e-3
    assert clustered.left_wins == naive.left_wins


def test_routing_records_the_chance_each_comparison_went_to_people():
    from judging.routing import CONSISTENT, INCONSISTENT, inclusion_probabilities, routing_plan

    states = {pk: CONSISTENT for pk in range(10)} | {10: INCONSISTENT, 11: ""}
    plan = routing_plan(states=states, share=0.2, seed=3)
    found = inclusion_probabilities(plan)
    assert all(found[pk] == 0.2 for pk in range(10))
    assert found[10] == found[11] == 1.0
