"""Assignment under real concurrency (PostgreSQL row locks, SKIP LOCKED): never over K."""

from __future__ import annotations

import threading

import pytest
from django.db import close_old_connections, connection, transaction
from django.db.models import Count
from django.test.utils import CaptureQueriesContext

from annotation.loop import assign
from annotation.loop.votes import vote_record
from annotation.models import Assignment, Comparison, Vote

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 20


def _run_in_threads(target, users) -> list[BaseException]:
    barrier = threading.Barrier(len(users))
    errors: list[BaseException] = []

    def work(user):
        try:
            barrier.wait(timeout=30)
            target(user)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    return errors


def _annotators(django_user_model, n, prefix):
    from django.contrib.auth.models import Group

    group, _ = Group.objects.get_or_create(name="annotators")
    users = [django_user_model.objects.create_user(f"{prefix}{i}") for i in range(n)]
    for user in users:
        user.groups.add(group)
    return users


def test_twenty_annotators_claiming_and_voting_at_once_never_exceed_k(
    make_study, django_user_model, next_assignment
):
    assert connection.vendor == "postgresql"
    assert connection.features.has_select_for_update_skip_locked
    study = make_study(models=3, questions=10, k=2)  # 30 comparisons
    # One annotator has voted on everything: one slot is left per comparison.
    (seed,) = _annotators(django_user_model, 1, "seed")
    while (assignment := next_assignment(study, seed)) is not None:
        vote_record(assignment=assignment, choice="tie")
    assert Vote.objects.count() == 30

    users = _annotators(django_user_model, THREADS, "racer")
    claimed: list[int] = []  # list.append is atomic under the GIL

    def claim_and_vote(user):
        close_old_connections()
        while (a := next_assignment(study, user)) is not None:
            vote_record(assignment=a, choice="left")
            claimed.append(user.pk)

    errors = _run_in_threads(claim_and_vote, users)
    assert not errors, errors

    per_comparison = dict(
        Comparison.objects.filter(study=study).annotate(n=Count("votes")).values_list("pk", "n")
    )
    assert max(per_comparison.values()) <= study.votes_per_comparison
    # Every slot was filled, each exactly once.
    assert set(per_comparison.values()) == {2}
    assert Vote.objects.count() == 60 == 30 + len(claimed)
    # The kept counts agree with the votes stored.
    kept = dict(Comparison.objects.filter(study=study).values_list("pk", "vote_count"))
    assert kept == per_comparison
    assert len(set(claimed)) > 1  # the slots were shared out, not taken by one thread
    assert not (Vote.objects.values("assignment").annotate(n=Count("pk")).filter(n__gt=1).exists())
    assert not (
        Assignment.objects.values("comparison", "annotator")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .exists()
    )
    # And nobody voted twice on a comparison.
    assert not (
        Vote.objects.values("comparison", "annotator")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .exists()
    )


def test_twenty_annotators_asking_for_the_one_last_slot_at_once_get_it_once(
    make_study, django_user_model, next_assignment
):
    study = make_study(models=2, questions=1, k=1)  # a single comparison, a single slot
    users = _annotators(django_user_model, THREADS, "last")
    winners = []

    def ask(user):
        close_old_connections()
        assignment = next_assignment(study, user)
        if assignment is not None:
            winners.append(assignment.token)

    errors = _run_in_threads(ask, users)
    assert not errors, errors
    assert len(winners) == 1
    assert Assignment.objects.filter(study=study).count() == 1


def test_one_annotator_asking_twice_at_once_holds_a_single_pair(
    make_study, django_user_model, next_assignment
):
    study = make_study(models=3, questions=10, k=2)
    (user,) = _annotators(django_user_model, 1, "double")
    tokens = []

    def ask(_):
        close_old_connections()
        tokens.append(next_assignment(study, user).token)

    errors = _run_in_threads(ask, [user] * 8)
    assert not errors, errors
    assert len(set(tokens)) == 1
    assert Assignment.objects.filter(study=study, annotator=user).count() == 1


def test_simultaneous_votes_on_one_token_store_one_vote(
    make_study, django_user_model, next_assignment
):
    study = make_study(models=2, questions=1, k=1)
    (user,) = _annotators(django_user_model, 1, "voter")
    assignment = next_assignment(study, user)
    results = []

    def vote(_):
        close_old_connections()
        results.append(vote_record(assignment=assignment, choice="right")[1])

    errors = _run_in_threads(vote, [user] * 10)
    assert not errors, errors
    assert sorted(results) == [False] * 9 + [True]
    assert Vote.objects.count() == 1


def test_claims_lock_only_the_comparison_row_and_skip_locked_ones(
    make_study, annotator, next_assignment
):
    # A lock that joined the study row (through the default ordering) would make every
    # concurrent claim in the study skip every comparison.
    study = make_study(models=2, questions=2, k=1)
    with CaptureQueriesContext(connection) as queries:
        assignment = next_assignment(study, annotator)
        vote_record(assignment=assignment, choice="left")
    locks = [q["sql"] for q in queries.captured_queries if "FOR UPDATE" in q["sql"]]
    assert any("SKIP LOCKED" in sql for sql in locks)
    for sql in locks:
        assert " JOIN " not in sql or "FOR UPDATE OF" in sql, sql
        assert "FOR UPDATE OF" in sql, sql


def test_a_claim_looks_past_its_window_when_every_comparison_in_it_is_locked(
    make_study, annotator, django_user_model, monkeypatch, next_assignment
):
    # Loads 0, 1, 1: with a window of one comparison the claim looks at the load-0 one only;
    # another transaction holds that one, so the claim must ask again over all of them.
    study = make_study(models=2, questions=3, k=2)
    (other,) = _annotators(django_user_model, 1, "other")
    comparisons = list(Comparison.objects.filter(study=study).order_by("pk"))
    for comparison in comparisons[1:]:
        Comparison.objects.filter(pk=comparison.pk).update(vote_count=1)
    monkeypatch.setattr(assign, "CLAIM_WINDOW", 1)
    locked = threading.Event()
    release = threading.Event()

    def hold_lock(_):
        close_old_connections()
        with transaction.atomic():
            Comparison.objects.select_for_update(of=("self",)).filter(
                pk=comparisons[0].pk
            ).order_by().get()
            locked.set()
            release.wait(timeout=60)

    holder = threading.Thread(target=_run_in_threads, args=(hold_lock, [other]))
    holder.start()
    try:
        assert locked.wait(timeout=30)
        assignment = next_assignment(study, annotator)
    finally:
        release.set()
        holder.join(timeout=60)
    assert assignment is not None
    assert assignment.comparison_id in {c.pk for c in comparisons[1:]}
