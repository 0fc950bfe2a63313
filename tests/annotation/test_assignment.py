"""Who gets which pair: fair spread, K respected, reloads, leases, left/right counterbalancing."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from django.db.models import Count
from django.test import Client
from django.utils import timezone
from scipy.stats import binomtest

from annotation.loop.votes import COMPARISON_FULL, vote_record
from annotation.models import Assignment, Comparison, Vote
from tests.conftest import logged_in

from .conftest import PAIR_FIELDS

pytestmark = pytest.mark.django_db


def _next(client: Client, study):
    return client.get(f"/api/studies/{study.pk}/next/")


def _run_out(**lease) -> None:
    """The lease (by pk or token) ran out a second ago."""
    Assignment.objects.filter(**lease).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


def _vote(client: Client, token: str, choice: str, comment: str = ""):
    return client.post(
        f"/api/assignments/{token}/vote/",
        {"choice": choice, "comment": comment},
        content_type="application/json",
    )


@pytest.mark.slow  # a large study or many simulated votes: the full suite runs it
def test_two_annotators_fill_a_300_comparison_study_evenly_and_blindly(
    make_study, annotator, other_annotator
):
    study = make_study(models=3, questions=100, k=2)
    assert Comparison.objects.filter(study=study).count() == 300
    text_to_answer = {text: (run_id, pos) for (run_id, pos), text in study.built.texts.items()}
    comparisons = {
        c.pk: c for c in Comparison.objects.filter(study=study).select_related("question")
    }
    by_answers = {(c.answer_a.text, c.answer_b.text): c for c in comparisons.values()}
    rng = random.Random(1234)
    clients = {
        annotator.username: logged_in(annotator),
        other_annotator.username: logged_in(other_annotator),
    }
    finished: set[str] = set()
    seen: dict[str, list[int]] = defaultdict(list)
    # (comparison, annotator) -> whether answer a was shown on the left, from the JSON itself
    a_left: dict[tuple[int, str], bool] = {}
    expected_outcome: dict[tuple[int, str], str] = {}
    last_progress = {}
    while len(finished) < 2:
        name = rng.choice(sorted(set(clients) - finished))
        response = _next(clients[name], study)
        if response.status_code == 204:
            finished.add(name)
            continue
        assert response.status_code == 200, response.content
        data = response.json()
        assert set(data) == set(PAIR_FIELDS)
        if (data["left"], data["right"]) in by_answers:
            comparison, shown_a_left = by_answers[(data["left"], data["right"])], True
        else:
            comparison, shown_a_left = by_answers[(data["right"], data["left"])], False
        assert comparison.question.text == data["question"]
        assert text_to_answer[data["left"]] != text_to_answer[data["right"]]
        seen[name].append(comparison.pk)
        a_left[(comparison.pk, name)] = shown_a_left
        choice = rng.choice(["left", "tie", "right"])
        expected_outcome[(comparison.pk, name)] = {
            ("left", True): "a",
            ("right", False): "a",
            ("left", False): "b",
            ("right", True): "b",
        }.get((choice, shown_a_left), "tie")
        voted = _vote(clients[name], data["token"], choice)
        assert voted.status_code == 201, voted.content
        last_progress[name] = voted.json()["progress"]

    assert Vote.objects.filter(comparison__study=study).count() == 600
    per_comparison = Counter(
        Vote.objects.filter(comparison__study=study).values_list("comparison", flat=True)
    )
    assert set(per_comparison.values()) == {2} and len(per_comparison) == 300
    for name, ids in seen.items():
        assert len(ids) == len(set(ids)) == 300, f"{name} saw a comparison twice"
        assert last_progress[name] == {"done": 300, "total": 300}
    # The canonical outcome is what the annotator meant, whichever side a was on.
    for vote in Vote.objects.filter(comparison__study=study).select_related("annotator"):
        assert vote.outcome == expected_outcome[(vote.comparison_id, vote.annotator.username)]

    # Left/right: about half and half overall, per model pair, and per comparison.
    shown = list(a_left.values())
    lefts = sum(shown)
    assert binomtest(lefts, len(shown), 0.5).pvalue > 0.001
    assert 0.4 <= lefts / len(shown) <= 0.6
    per_pair: dict[tuple[int, int], list[bool]] = defaultdict(list)
    per_comparison_left: dict[int, list[bool]] = defaultdict(list)
    for (comparison_id, _), was_left in a_left.items():
        c = comparisons[comparison_id]
        per_pair[(c.run_a_id, c.run_b_id)].append(was_left)
        per_comparison_left[comparison_id].append(was_left)
    assert len(per_pair) == 3
    for pair, sides in per_pair.items():
        assert len(sides) == 200
        assert binomtest(sum(sides), len(sides), 0.5).pvalue > 0.001, pair
        assert 0.4 <= sum(sides) / len(sides) <= 0.6, pair
    # With K=2 each comparison shows a on the left once and on the right once.
    assert all(sorted(sides) == [False, True] for sides in per_comparison_left.values())


def test_it_gives_the_least_voted_comparisons_first(
    make_study, annotator, other_annotator, next_assignment
):
    study = make_study(models=2, questions=4, k=3)
    first = next_assignment(study, annotator)
    vote_record(assignment=first, choice="left")
    # Every other comparison has no votes: the other annotator never gets the voted one first,
    # nor while any untouched comparison is left.
    given = []
    for _ in range(3):
        a = next_assignment(study, other_annotator)
        given.append(a.comparison_id)
        vote_record(assignment=a, choice="tie")
    assert first.comparison_id not in given
    assert len(set(given)) == 3


def test_it_hands_out_the_first_pairs_at_random_not_in_table_order(
    make_study, django_user_model, next_assignment
):
    # 120 comparisons (6 model pairs x 20 questions, stored question by question), all at load
    # 0, and 12 annotators taking their first pair: a fixed order (by id, say) would hand out
    # the 12 lowest ids, on 2 questions. At random, all 12 among the lowest 24 ids has a
    # chance of about 3e-10, and 12 pairs on at most 4 questions about 1e-6.
    study = make_study(models=4, questions=20, k=1)
    ids = list(Comparison.objects.filter(study=study).order_by("pk").values_list("pk", flat=True))
    assert len(ids) == 120
    rank = {pk: i for i, pk in enumerate(ids)}
    taken = []
    for i in range(12):
        user = django_user_model.objects.create_user(f"u{i}", is_staff=True)
        taken.append(next_assignment(study, user).comparison)
    assert len({c.pk for c in taken}) == 12  # each lease takes its comparison's one slot
    assert max(rank[c.pk] for c in taken) >= 24
    assert len({c.question_id for c in taken}) >= 5
    assert len({(c.run_a_id, c.run_b_id) for c in taken}) >= 2


def _refused_as_full(user, token: str, choice: str) -> None:
    response = _vote(logged_in(user), token, choice)
    assert response.status_code == 409
    assert response.json()["detail"] == COMPARISON_FULL


def test_a_reload_returns_the_same_assignment(make_study, annotator):
    study = make_study()
    client = logged_in(annotator)
    first = _next(client, study).json()
    again = _next(client, study).json()
    assert again == first
    assert Assignment.objects.filter(study=study, annotator=annotator).count() == 1


def test_a_reload_after_the_lease_ran_out_renews_it_while_there_is_room(make_study, annotator):
    study = make_study()
    client = logged_in(annotator)
    first = _next(client, study).json()
    _run_out(token=first["token"])
    assert _next(client, study).json()["token"] == first["token"]
    assignment = Assignment.objects.get(token=first["token"])
    assert assignment.lease_expires_at > timezone.now()


def test_an_expired_lease_is_given_to_someone_else_and_a_late_vote_counts_below_k(
    make_study, annotator, other_annotator, django_user_model, next_assignment
):
    study = make_study(models=2, questions=1, k=2)  # one comparison, two slots
    late = next_assignment(study, annotator)
    third = django_user_model.objects.create_user("third", is_staff=True)
    second = next_assignment(study, other_annotator)
    # Both slots are leased: nobody else gets the comparison.
    assert next_assignment(study, third) is None
    _run_out(pk=late.pk)
    taken = next_assignment(study, third)
    assert taken is not None and taken.comparison_id == late.comparison_id

    # Late vote while the comparison has 0 of 2 votes: accepted.
    response = _vote(logged_in(annotator), late.token, "left")
    assert response.status_code == 201
    # Now 1 vote + 2 live leases for 2 slots: the first of the live holders to vote fills it,
    # the other is told the pair is full.
    assert _vote(logged_in(other_annotator), second.token, "right").status_code == 201
    _refused_as_full(third, taken.token, "tie")
    assert Vote.objects.filter(comparison=late.comparison).count() == 2


def test_a_late_vote_is_refused_with_409_once_the_comparison_has_k_votes(
    make_study, annotator, other_annotator, next_assignment
):
    study = make_study(models=2, questions=1, k=1)
    late = next_assignment(study, annotator)
    _run_out(pk=late.pk)
    taken = next_assignment(study, other_annotator)
    assert taken.comparison_id == late.comparison_id
    assert _vote(logged_in(other_annotator), taken.token, "left").status_code == 201
    _refused_as_full(annotator, late.token, "right")
    assert Vote.objects.filter(comparison=late.comparison).count() == 1


def test_an_annotator_whose_lease_ran_out_and_was_taken_moves_on(
    make_study, annotator, other_annotator, next_assignment
):
    study = make_study(models=2, questions=2, k=1)
    mine = next_assignment(study, annotator)
    _run_out(pk=mine.pk)
    # The other annotator is given the least loaded comparison; both have load 0 now.
    theirs = next_assignment(study, other_annotator)
    if theirs.comparison_id != mine.comparison_id:
        vote_record(assignment=theirs, choice="tie")
        theirs = next_assignment(study, other_annotator)
    assert theirs.comparison_id == mine.comparison_id
    following = next_assignment(study, annotator)
    mine.refresh_from_db()
    assert mine.status == Assignment.Status.EXPIRED
    assert following is None or following.comparison_id != mine.comparison_id


def test_seconds_are_measured_by_the_server_from_the_first_delivery(make_study, annotator):
    study = make_study()
    client = logged_in(annotator)
    token = _next(client, study).json()["token"]
    delivered = timezone.now() - timedelta(seconds=42)
    Assignment.objects.filter(token=token).update(first_delivered_at=delivered)
    # A reload in between does not restart the clock.
    assert _next(client, study).json()["token"] == token
    response = _vote(client, token, "tie")
    assert response.status_code == 201
    vote = Vote.objects.get(assignment__token=token)
    assert 42 <= vote.seconds < 52
    assert response.json()["seconds"] == pytest.approx(vote.seconds)


def test_it_returns_204_when_nothing_is_left_for_the_annotator(make_study, annotator):
    study = make_study(models=2, questions=2, k=1)
    client = logged_in(annotator)
    for _ in range(2):
        data = _next(client, study).json()
        assert _vote(client, data["token"], "left").status_code == 201
    response = _next(client, study)
    assert response.status_code == 204
    assert response.content == b""


def test_progress_counts_what_is_done_and_what_can_still_be_given(
    make_study, annotator, other_annotator, next_assignment
):
    study = make_study(models=2, questions=3, k=1)
    other = next_assignment(study, other_annotator)
    vote_record(assignment=other, choice="left")
    client = logged_in(annotator)
    data = _next(client, study).json()
    # 3 comparisons, one already full: 2 can be given to this annotator, none done yet.
    assert data["progress"] == {"done": 0, "total": 2}
    voted = _vote(client, data["token"], "right").json()
    assert voted["progress"] == {"done": 1, "total": 2}


def test_the_comparison_left_side_balances_within_a_comparison(
    make_study, django_user_model, next_assignment
):
    study = make_study(models=2, questions=1, k=6)
    sides = []
    for i in range(6):
        user = django_user_model.objects.create_user(f"b{i}", is_staff=True)
        a = next_assignment(study, user)
        sides.append(a.left)
    assert Counter(sides) == {"a": 3, "b": 3}


def test_votes_per_assignment_and_assignments_per_annotator_are_unique_in_the_database(
    make_study, annotator, next_assignment
):
    from django.db import IntegrityError, transaction

    study = make_study(models=2, questions=1, k=2)
    assignment = next_assignment(study, annotator)
    vote, _ = vote_record(assignment=assignment, choice="left")
    with pytest.raises(IntegrityError), transaction.atomic():
        Vote.objects.create(
            comparison=assignment.comparison,
            assignment=assignment,
            annotator=annotator,
            outcome="b",
            shown="right",
            seconds=1,
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(
            study=study,
            comparison=assignment.comparison,
            annotator=annotator,
            token="another-token",
            left="a",
            status="voted",
            first_delivered_at=timezone.now(),
            lease_expires_at=timezone.now(),
        )
    # App votes need an assignment; imported votes need none.
    with pytest.raises(IntegrityError), transaction.atomic():
        Vote.objects.create(comparison=assignment.comparison, outcome="a", shown="left", seconds=1)
    Vote.objects.create(
        comparison=assignment.comparison, outcome="tie", imported=True, judge="gpt-4"
    )
    assert (
        Vote.objects.filter(comparison=assignment.comparison)
        .values("assignment")
        .annotate(n=Count("pk"))
        .filter(assignment__isnull=False, n__gt=1)
        .count()
        == 0
    )
