"""Adaptive K in the live loop (annotation/loop/adaptive.py, ranking/adaptive.py), with real
votes through the annotator API: a comparison whose vote agrees with the judge's consistent
verdict stops asking (with the recorded probability) and is no longer served; a comparison of
a close model pair gets more than K people and a clear one fewer; the kept progress stays equal
to a recount throughout; the fit weights each vote by 1 / (cap x the chance it was asked)."""

from __future__ import annotations

import numpy as np
import pytest

from annotation import studies
from annotation.loop.progress import progress_counted
from annotation.loop.state import annotator_progress
from annotation.models import Assignment, Comparison, Study, Vote
from annotation.ranking import adaptive
from annotation.study_votes import study_votes
from tests.conftest import logged_in

from .judged import CONSISTENT_A, judged_run
from .test_concurrency import _annotators

pytestmark = pytest.mark.django_db


def _adaptive_study(make_study, **kwargs) -> Study:
    study = make_study(open_now=False, **kwargs)
    study.sampling = Study.Sampling.ADAPTIVE
    study.save(update_fields=["sampling"])
    return studies.study_open(study=study)


def _vote_until_nothing_left(client, study, side_for_a: str | None) -> list[int]:
    """Take pairs through the API and vote on each until none is left; ``side_for_a``:
    "a" votes for the comparison's model a, None alternates (never settles). Returns the
    comparisons voted on, in order."""
    voted = []
    while True:
        found = client.get(f"/api/studies/{study.pk}/next/")
        if found.status_code == 204:
            return voted
        token = found.json()["token"]
        assignment = Assignment.objects.get(token=token)
        if side_for_a == "a":
            choice = "left" if assignment.left == Assignment.Side.A else "right"
        else:
            choice = ("left", "right")[len(voted) % 2]
        response = client.post(
            f"/api/assignments/{token}/vote/", {"choice": choice}, content_type="application/json"
        )
        assert response.status_code in (200, 201), response.content
        voted.append(assignment.comparison_id)


def _progress_is_a_recount(study: Study, people) -> None:
    for user in people:
        counted = progress_counted(study_id=study.pk, annotator_id=user.pk)
        assert annotator_progress(study_id=study.pk, annotator=user) == counted, user


def test_a_settled_comparison_stops_asking_and_is_no_longer_served(make_study, django_user_model):
    # 30 comparisons of one model pair, K = 2, the judge consistent for model a everywhere.
    study = _adaptive_study(make_study, models=2, questions=30, k=2)
    ids = list(Comparison.objects.filter(study=study).values_list("pk", flat=True))
    assert set(Comparison.objects.filter(study=study).values_list("votes_wanted", flat=True)) == {1}
    judged_run(study, dict.fromkeys(ids, CONSISTENT_A))
    first, second, third = _annotators(django_user_model, 3, "adaptive")

    # The first annotator agrees with the judge on every comparison: each is settled, so the
    # next person is asked with probability CONTINUE_WHEN_SETTLED, recorded on the vote.
    assert sorted(_vote_until_nothing_left(logged_in(first), study, "a")) == sorted(ids)
    votes = Vote.objects.filter(comparison__study=study, voter=Vote.Voter.PEOPLE)
    assert {(v.cap, v.asked, v.next_asked) for v in votes} == {
        (2, 1.0, adaptive.CONTINUE_WHEN_SETTLED)
    }
    wanted = dict(Comparison.objects.filter(study=study).values_list("pk", "votes_wanted"))
    stopped = {pk for pk, n in wanted.items() if n == 1}
    going_on = {pk for pk, n in wanted.items() if n == 2}
    assert stopped | going_on == set(ids)
    # P(none stops) = 0.25^30, P(all stop) = 0.75^30 ~ 2e-4.
    assert stopped and going_on
    _progress_is_a_recount(study, [first, second, third])

    # The second annotator is served exactly the comparisons that went on, none that stopped.
    assert sorted(_vote_until_nothing_left(logged_in(second), study, "a")) == sorted(going_on)
    seconds = Vote.objects.filter(comparison_id__in=going_on, annotator=second)
    # At the cap (K = 2 for a pair of weight 1): asked with 0.25, and nobody after them.
    assert {(v.cap, v.asked, v.next_asked) for v in seconds} == {
        (2, adaptive.CONTINUE_WHEN_SETTLED, 0.0)
    }
    # The third annotator gets nothing: every comparison is settled or at its cap.
    assert _vote_until_nothing_left(logged_in(third), study, "a") == []
    _progress_is_a_recount(study, [first, second, third])
    # Each comparison counts as K votes in the fit: 2 / (2 x 1) for a first vote that stopped
    # it; 1 + 2 / (2 x 0.25) = 5 for one that went on (its expectation over the coin: 2).
    # (The weights as the fits read them: the one read of the study's votes.)
    records = study_votes(study).counted("people")
    for pk in ids:
        weights = [r.weight for r in records if r.comparison_id == pk]
        assert sum(weights) == pytest.approx(1.0 if pk in stopped else 5.0)


def test_a_close_pair_gets_more_than_k_people_and_a_clear_one_fewer(make_study, django_user_model):
    # Two questions of one model pair; the weights are what the refresh (annotation/sampling.py)
    # writes from the fit: the first comparison's pair about to be decided, the second's clear.
    study = _adaptive_study(make_study, models=2, questions=2, k=2)
    close, clear = Comparison.objects.filter(study=study).order_by("pk")
    Comparison.objects.filter(pk=close.pk).update(sampling_weight=3.0)
    Comparison.objects.filter(pk=clear.pk).update(sampling_weight=0.2)
    people = _annotators(django_user_model, 8, "caps")

    # No judge verdict: nothing settles, so each comparison asks people up to its cap.
    for user in people:
        _vote_until_nothing_left(logged_in(user), study, None)
        _progress_is_a_recount(study, people)
    counts = dict(Comparison.objects.filter(study=study).values_list("pk", "vote_count"))
    assert counts[close.pk] == adaptive.vote_cap(3.0, 2) == 6 > study.votes_per_comparison
    assert counts[clear.pk] == adaptive.vote_cap(0.2, 2) == 1 < study.votes_per_comparison
    chain = Vote.objects.filter(comparison=close).order_by("pk")
    assert [v.next_asked for v in chain] == [1.0] * 5 + [0.0]
    assert all(v.asked == 1.0 and v.cap == 6 for v in chain)


def test_the_rule_keeps_a_comparisons_expected_weight_at_one():
    # The stopping rule's weights, simulated on one comparison many times: whatever the votes
    # and the judge, the weights of its votes sum to 1 in expectation (the fit's unbiasedness).
    rng = np.random.default_rng(3)
    for p_a, judge, cap in ((0.8, 1.0, 4), (0.3, 1.0, 3), (0.5, np.nan, 2), (0.9, 0.0, 5)):
        totals, weighted = [], []
        for _ in range(40_000):
            recent, reach, total, score_sum, count = [np.nan], 1.0, 0.0, 0.0, 0
            while True:
                y = float(rng.random() < p_a)
                count += 1
                total += 1 / (cap * reach)
                score_sum += y / (cap * reach)
                recent = [y]
                go_on = adaptive.continue_probability(
                    np.array([recent]), np.array([judge]), count, cap
                )[0]
                if not rng.random() < go_on:
                    break
                reach *= go_on
            totals.append(total)
            weighted.append(score_sum)
        assert np.mean(totals) == pytest.approx(1.0, abs=0.02)
        assert np.mean(weighted) == pytest.approx(p_a, abs=0.02)
