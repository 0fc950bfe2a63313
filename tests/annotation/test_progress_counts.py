"""Progress kept, not recounted (annotation/loop/progress.py): after concurrent votes (with and
without the next pair), skips, exclusions, gold checks, routing and quota changes, every
annotator's kept counts equal a count from the votes and assignments, and the next pair and the
vote read the kept counts instead of counting the study's comparisons."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from annotation import gold, quality
from annotation.loop.progress import progress_counted, progress_of
from annotation.loop.state import annotator_progress
from annotation.models import AnnotatorProgress, Comparison, Study, Vote
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db(transaction=True)


def _kept(study: Study, user) -> tuple[bool, object]:
    """(whether the kept row is current, the progress it gives), read without counting."""
    study.refresh_from_db()
    row = AnnotatorProgress.objects.filter(study=study, annotator=user).first()
    if row is None or row.basis != study.progress_basis or study.open_pairs is None:
        return False, None
    return True, progress_of(
        done=row.done, closed=row.closed, open_pairs=study.open_pairs, quota=study.quota
    )


def _voters(django_user_model, n: int):
    group, _ = Group.objects.get_or_create(name="annotators")
    people = []
    for i in range(n):
        user = django_user_model.objects.create_user(f"person{i}", password="x")
        user.groups.add(group)
        people.append(user)
    return people


def _work(study: Study, people, rounds: int) -> None:
    """Each person, in a thread of their own: take pairs, vote (every other one with the next
    pair in the same request), skip every fifth, for ``rounds`` pairs or until none is left."""
    errors = []

    def run(index, user):
        try:
            client = Client()
            client.force_login(user)
            pair = None
            for step in range(rounds):
                if pair is None:
                    response = client.get(f"/api/studies/{study.pk}/next/")
                    if response.status_code == 204:
                        return
                    pair = response.json()
                token = pair["token"]
                if (step + index) % 5 == 0:
                    url, body = f"/api/assignments/{token}/skip/", {"reason": "broken"}
                else:
                    url, body = f"/api/assignments/{token}/vote/", {"choice": "left"}
                if step % 2:
                    url += "?next=1"
                response = client.post(url, body, content_type="application/json")
                assert response.status_code in (201, 409), response.content
                pair = response.json().get("next") if response.status_code == 201 else None
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, u)) for i, u in enumerate(people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def _all_equal_a_count(study: Study, people, *, kept_expected: bool) -> None:
    for user in people:
        counted = progress_counted(study_id=study.pk, annotator_id=user.pk)
        current, kept = _kept(study, user)
        if kept_expected:
            assert current, f"{user}: the kept row is out of date"
        if current:
            assert kept == counted, user
        # What the API shows (counting again first if the row is out of date).
        assert annotator_progress(study_id=study.pk, annotator=user) == counted, user


@pytest.mark.postgres  # threads: the test SQLite database is one in-memory file
def test_kept_progress_equals_a_count_through_votes_skips_exclusion_gold_routing_and_quota(
    make_study, django_user_model
):
    study = make_study(models=4, questions=5, k=2)  # 30 comparisons
    people = _voters(django_user_model, 6)
    _work(study, people, rounds=6)
    # Votes and skips alone keep every row current: nobody had to count again.
    _all_equal_a_count(study, people, kept_expected=True)
    assert Vote.objects.filter(comparison__study=study).count() > 0

    # Leaving an annotator's votes out of the results changes nobody's progress.
    quality.annotator_exclude(study=study, annotator_id=people[0].pk, excluded=True)
    _all_equal_a_count(study, people, kept_expected=True)

    # Gold checks: marked after votes, they are open to everyone not given them.
    gold.comparisons_mark_gold(
        comparisons=Comparison.objects.filter(study=study, vote_count=0).order_by("pk")[:3],
        expected="a",
    )
    _all_equal_a_count(study, people, kept_expected=False)
    _work(study, people, rounds=4)
    _all_equal_a_count(study, people, kept_expected=True)

    # Routing settles some comparisons (its own bulk UPDATE of votes_wanted, as
    # judging.routing.route writes it) and gives others back to K.
    ordinary = Comparison.objects.filter(study=study, gold=False).order_by("pk")
    Comparison.objects.filter(pk__in=[c.pk for c in ordinary[:8]]).update(votes_wanted=0)
    _all_equal_a_count(study, people, kept_expected=False)
    _work(study, people, rounds=4)
    _all_equal_a_count(study, people, kept_expected=True)
    Comparison.objects.filter(study=study).update(votes_wanted=None)
    _all_equal_a_count(study, people, kept_expected=False)

    # A quota: applied when read, nothing to count again.
    quota = max(Vote.objects.filter(annotator=u).count() for u in people) + 2
    Study.objects.filter(pk=study.pk).update(quota=quota)
    _all_equal_a_count(study, people, kept_expected=True)
    _work(study, people, rounds=30)
    _all_equal_a_count(study, people, kept_expected=True)
    assert max(Vote.objects.filter(annotator=u).count() for u in people) <= quota

    # To the end: with no quota left anyone can vote until nothing is open.
    Study.objects.filter(pk=study.pk).update(quota=None)
    _work(study, people, rounds=60)
    _all_equal_a_count(study, people, kept_expected=True)
    for comparison in Comparison.objects.filter(study=study, gold=False):
        assert comparison.votes.count() == comparison.vote_count <= 2


def test_a_lease_that_ran_out_and_was_given_up_closes_the_pair_in_the_kept_counts(
    make_study, annotator, other_annotator
):
    from datetime import timedelta

    from annotation.models import Assignment

    study = make_study(models=2, questions=2, k=1)
    client = logged_in(annotator)
    token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
    # Their lease runs out and someone else fills the comparison; their next request gives
    # it up (expired) and hands them another pair.
    held = Assignment.objects.get(token=token)
    Assignment.objects.filter(pk=held.pk).update(
        lease_expires_at=held.lease_expires_at - timedelta(days=1)
    )
    other = logged_in(other_annotator)
    while (response := other.get(f"/api/studies/{study.pk}/next/")).status_code == 200:
        other.post(
            f"/api/assignments/{response.json()['token']}/vote/",
            {"choice": "tie"},
            content_type="application/json",
        )
    client.get(f"/api/studies/{study.pk}/next/")
    for user in (annotator, other_annotator):
        current, kept = _kept(study, user)
        assert current and kept == progress_counted(study_id=study.pk, annotator_id=user.pk)


def test_the_next_pair_and_the_vote_count_no_comparisons(make_study, annotator):
    study = make_study(models=3, questions=4, k=2)
    client = logged_in(annotator)
    annotator_progress(study_id=study.pk, annotator=annotator)  # the first contact counts once
    with CaptureQueriesContext(connection) as queries:
        token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
        client.post(
            f"/api/assignments/{token}/vote/?next=1",
            {"choice": "left"},
            content_type="application/json",
        )
    # The claim ranks candidates by load (votes + live leases), which is its job, not progress;
    # no other statement counts the study's comparisons (the recount did, twice per next pair
    # and once per vote).
    from annotation.models import Comparison as C

    counting = [
        q["sql"]
        for q in queries.captured_queries
        if f"COUNT(*) FROM {C._meta.db_table}" in q["sql"] and "SKIP LOCKED" not in q["sql"]
    ]
    assert counting == []
    assert len(queries.captured_queries) > 3  # the requests did run their statements
