"""Active sampling: the weighted claim, what it records, the weights' refresh, the fit's weights,
and (simulated studies) what it buys."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from django.db import connection
from django.db.models import Count

from annotation import results
from annotation.loop.votes import vote_record
from annotation.models import Assignment, Comparison, Study, Vote
from annotation.ranking import ELO_PER_LOG
from annotation.ranking.active import importance_weight, pair_weights
from annotation.ranking.simulate import simulate_study
from annotation.sampling import sampling_weights_refresh
from tests.conftest import logged_in

from .test_concurrency import _annotators, _run_in_threads
from .test_vote_api import _session_and_user, _statements

pytestmark = pytest.mark.django_db


def _active(study, floor: float = 0.2) -> Study:
    study.sampling = Study.Sampling.ACTIVE
    study.sampling_floor = floor
    study.save(update_fields=["sampling", "sampling_floor"])
    return study


def _vote_everything_once(study, annotator, take_pair, choice="left") -> None:
    while (assignment := take_pair(study, annotator)) is not None:
        vote_record(assignment=assignment, choice=choice)


def test_every_comparison_gets_a_vote_before_any_gets_a_second(
    make_study, django_user_model, next_assignment
):
    study = _active(make_study(models=3, questions=4, k=3))  # 12 comparisons
    users = _annotators(django_user_model, 3, "first")

    picks = []
    for _ in range(12):  # round robin over three annotators, as a team would vote
        for user in users:
            assignment = next_assignment(study, user)
            picks.append(assignment)
            vote_record(assignment=assignment, choice="tie")
            if len(picks) == 12:
                break
        if len(picks) == 12:
            break

    assert sorted(a.comparison_id for a in picks) == sorted(
        Comparison.objects.filter(study=study).values_list("pk", flat=True)
    )
    # Unvoted comparisons are drawn uniformly: the i-th pick had 12 - i to choose from.
    for i, assignment in enumerate(picks):
        stored = Assignment.objects.get(pk=assignment.pk)
        assert stored.sampling_eligible == 12 - i
        assert stored.sampling_probability == pytest.approx(1 / (12 - i))
        assert importance_weight(stored.sampling_probability, stored.sampling_eligible) == 1.0


def test_after_the_first_round_the_claim_draws_by_weight_and_records_the_probability(
    make_study, django_user_model, next_assignment
):
    study = _active(make_study(models=3, questions=2, k=3))  # 6 comparisons, 3 model pairs
    (seed,) = _annotators(django_user_model, 1, "seed")
    _vote_everything_once(study, seed, next_assignment)
    comparisons = list(Comparison.objects.filter(study=study).order_by("pk"))
    weights = [8.0, 8.0, 0.5, 0.5, 1.0, 1.0]
    for comparison, weight in zip(comparisons, weights, strict=True):
        comparison.sampling_weight = weight
        comparison.save(update_fields=["sampling_weight"])

    users = _annotators(django_user_model, 400, "drawer")
    first_picks = Counter()
    for user in users:
        assignment = next_assignment(study, user)
        stored = Assignment.objects.get(pk=assignment.pk)
        # Every comparison was eligible (one vote each, K = 3, none of them this user's).
        assert stored.sampling_eligible == 6
        weight = Comparison.objects.get(pk=stored.comparison_id).sampling_weight
        assert stored.sampling_probability == pytest.approx(weight / sum(weights))
        first_picks[stored.comparison_id] += 1
        stored.delete()  # give the slot back: every draw sees the same weights

    # The two comparisons weighted 8 of 19 each: 42 % of the draws each, about 10 draws of SD.
    heavy = first_picks[comparisons[0].pk] + first_picks[comparisons[1].pk]
    assert abs(heavy - 400 * 16 / 19) < 4 * math.sqrt(400 * (16 / 19) * (3 / 19))
    light = first_picks[comparisons[2].pk] + first_picks[comparisons[3].pk]
    assert abs(light - 400 * 1 / 19) < 4 * math.sqrt(400 * (1 / 19) * (18 / 19))


def test_a_uniform_study_records_no_probability(make_study, annotator, next_assignment):
    study = make_study(models=2, questions=2, k=2)
    assignment = next_assignment(study, annotator)
    stored = Assignment.objects.get(pk=assignment.pk)
    assert stored.sampling_probability is None and stored.sampling_eligible is None


def test_the_fit_weights_each_vote_by_one_over_n_p(make_study, django_user_model, next_assignment):
    study = _active(make_study(models=3, questions=2, k=2))
    (seed, second) = _annotators(django_user_model, 2, "weigh")
    _vote_everything_once(study, seed, next_assignment)
    Comparison.objects.filter(study=study, question__position=1).update(sampling_weight=3.0)
    _vote_everything_once(study, second, next_assignment, choice="right")

    found = results.study_results(study=study, bootstrap=0)

    expected = []
    for vote in Vote.objects.filter(comparison__study=study).order_by("pk"):
        a = vote.assignment
        expected.append(1 / (a.sampling_eligible * a.sampling_probability))
    assert found.weights == pytest.approx(expected)
    assert any(w != pytest.approx(1.0) for w in found.weights)
    assert sum(found.weights[:6]) == pytest.approx(6)  # the first round counts 1 each


def test_the_loop_keeps_its_statement_counts_under_active_sampling(make_study, annotator):
    # The same counts as a uniform study (test_vote_api): the state, the claim with its texts
    # and probability, the lease; a vote, its target and one write on PostgreSQL.
    study = _active(make_study(models=2, questions=3, k=2))
    client = logged_in(annotator)
    token = None

    def take():
        nonlocal token
        token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]

    def vote():
        client.post(
            f"/api/assignments/{token}/vote/", {"choice": "left"}, content_type="application/json"
        )

    # The first request of an annotator in a study counts their kept progress once
    # (loop/progress.py); the counts are those of every request after it.
    from annotation.loop.state import annotator_progress

    annotator_progress(study_id=study.pk, annotator=annotator)
    before = _session_and_user()
    assert _statements(take) == before + 3
    assert _statements(vote) == before + (2 if connection.vendor == "postgresql" else 6)
    assert _statements(take) == before + 3  # now among comparisons that have votes


def test_the_refresh_weights_the_least_settled_pair_most(make_study, django_user_model):
    study = _active(make_study(models=3, questions=12, k=3), floor=0.2)
    names = [m.name for m in study.built.models]
    runs = {m.name: r.pk for m, r in zip(study.built.models, study.built.runs, strict=True)}
    # Model 0 beats both others most of the time; models 1 and 2 are even.
    rng = np.random.default_rng(7)
    votes = []
    for comparison in Comparison.objects.filter(study=study):
        pair = {comparison.run_a_id, comparison.run_b_id}
        for _ in range(2):
            if runs[names[0]] in pair:
                zero_wins = rng.random() < 0.9
                a_is_zero = comparison.run_a_id == runs[names[0]]
                outcome = "a" if zero_wins == a_is_zero else "b"
            else:
                outcome = "a" if rng.random() < 0.55 else "b"
            votes.append(Vote(comparison=comparison, outcome=outcome, imported=True))
    Vote.objects.bulk_create(votes)
    Comparison.objects.filter(study=study).update(vote_count=2)

    found = sampling_weights_refresh(study=study)

    even = found[(names[1], names[2])]
    assert even > found[(names[0], names[1])] and even > found[(names[0], names[2])]
    stored = dict(
        Comparison.objects.filter(
            study=study, run_a=runs[names[1]], run_b=runs[names[2]]
        ).values_list("pk", "sampling_weight")
    )
    assert len(stored) == 12 and all(w == pytest.approx(even) for w in stored.values())
    assert min(found.values()) >= 0.2 - 1e-12


def test_pair_weights_are_floored_and_average_one():
    theta = np.array([1.0, 0.1, 0.0, -1.2])
    covariance = np.eye(4) * 0.02 - 0.005
    weights = pair_weights(theta, covariance, floor=0.3)
    upper = weights[np.triu_indices(4, 1)]
    assert np.allclose(weights, weights.T) and np.all(np.diag(weights) == 0)
    assert upper.min() >= 0.3
    # The close pair (0.1 vs 0.0) leads, the settled far pairs sit on the floor.
    assert weights[1, 2] == upper.max()
    assert weights[0, 3] == pytest.approx(0.3)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_annotators_at_once_under_active_sampling_never_exceed_k(
    make_study, django_user_model, next_assignment
):
    study = _active(make_study(models=3, questions=10, k=2))
    (seed,) = _annotators(django_user_model, 1, "aseed")
    _vote_everything_once(study, seed, next_assignment, choice="tie")
    Comparison.objects.filter(study=study, question__position__lte=3).update(sampling_weight=5.0)
    users = _annotators(django_user_model, 20, "aracer")

    def claim_and_vote(user):
        while (a := next_assignment(study, user)) is not None:
            vote_record(assignment=a, choice="left")

    errors = _run_in_threads(claim_and_vote, users)
    assert not errors, errors
    per_comparison = Comparison.objects.filter(study=study).annotate(n=Count("votes"))
    assert {c.n for c in per_comparison} == {2}  # every slot taken, none twice over
    twice = (
        Assignment.objects.filter(study=study)
        .values("comparison", "annotator")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert not twice.exists()


# --- simulated studies -------------------------------------------------------------------------

# Four models whose two closest (a 40 Elo gap) are far from the others; 50 questions, K = 10.
SIM_ELO = np.array([1300.0, 1040.0, 1000.0, 740.0])
SIM_THETA = (SIM_ELO - SIM_ELO.mean()) / ELO_PER_LOG


def _closest_gap(sampling: str, seed: int, budget: int) -> tuple[float, float]:
    """(estimated gap - true gap, its sandwich standard error) of the two closest models after
    ``budget`` votes, log scale."""
    *_, votes = simulate_study(
        SIM_THETA,
        n_questions=50,
        votes_per_comparison=10,
        sampling=sampling,
        seed=seed,
        budget=budget,
        every=50,
    )
    from annotation.ranking import rank

    fitted = rank(votes.counts(), models=["0", "1", "2", "3"], bootstrap=0)
    index = {name: i for i, name in enumerate(fitted.names_fitted)}
    c = fitted.sandwich_covariance
    i, j = index["1"], index["2"]
    gap = fitted.model("1").log_strength - fitted.model("2").log_strength
    se = math.sqrt(c[i, i] + c[j, j] - 2 * c[i, j])
    return gap - (SIM_THETA[1] - SIM_THETA[2]), se


@pytest.fixture(scope="module")
def simulated():
    """40 seeds of each design, 2000 votes each (the first 300 go one to each comparison)."""
    return {
        sampling: np.array([_closest_gap(sampling, seed, 2000) for seed in range(40)])
        for sampling in ("uniform", "active")
    }


@pytest.mark.slow  # a large study or many simulated votes: the full suite runs it
def test_active_sampling_narrows_the_interval_of_the_closest_pair(simulated):
    # 0.96 with these seeds: the targeting gains more than weighting by 1 / p gives back.
    ratio = np.median(simulated["active"][:, 1] / simulated["uniform"][:, 1])
    assert ratio < 1


@pytest.mark.slow  # shares the simulated studies above
def test_active_sampling_estimates_stay_unbiased(simulated):
    errors = simulated["active"][:, 0]
    assert abs(errors.mean()) < 2 * errors.std(ddof=1) / math.sqrt(errors.size)


@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_claim_in_an_active_study_queues_the_refresh_a_worker_makes(
    make_study, django_user_model, next_assignment, shared_worker
):
    from django.core.cache import cache

    from annotation.sampling import _refresh_key
    from tests.conftest import wait_for

    study = _active(make_study(models=3, questions=8, k=3))  # 24 comparisons
    (seed,) = _annotators(django_user_model, 1, "rseed")
    choices = iter(["left", "right", "left", "tie"] * 6)
    while (assignment := next_assignment(study, seed)) is not None:
        vote_record(assignment=assignment, choice=next(choices))
    assert set(
        Comparison.objects.filter(study=study).values_list("sampling_weight", flat=True)
    ) == {1.0}
    cache.delete(_refresh_key(study.pk))  # the first claim's refresh found too few votes
    worker = shared_worker("default")

    (later,) = _annotators(django_user_model, 1, "rlater")
    assert next_assignment(study, later) is not None  # queues the refresh on commit

    def refreshed() -> bool:
        weights = Comparison.objects.filter(study=study).values_list("sampling_weight", flat=True)
        return set(weights) != {1.0}

    wait_for(refreshed, timeout=120, message=f"no refresh; worker log:\n{worker.log_tail()}")
    stored = dict(Comparison.objects.filter(study=study).values_list("pk", "sampling_weight"))
    sampling_weights_refresh(study=study)  # the same fit, in this process
    again = dict(Comparison.objects.filter(study=study).values_list("pk", "sampling_weight"))
    assert stored == pytest.approx(again)
