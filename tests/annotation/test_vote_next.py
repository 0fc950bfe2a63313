"""A vote (or skip) that answers the next pair: one request per vote (issue 30).

``?next=1`` (or ``"next": true``) adds ``next``, the next pair of the same study claimed in the
vote's transaction; without it the vote and skip contracts are unchanged. Blinding holds for the
new response as for every other (tests/annotation/test_blinding.py's recorder and forbidden
words and ids)."""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connection
from django.test import Client

from annotation import gold
from annotation.models import Assignment, Comparison, Study, Vote
from tests.conftest import logged_in

from .conftest import PAIR_FIELDS
from .test_blinding import Recorder, _forbidden, blinded_study  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db(transaction=False)

VOTE_FIELDS = ["token", "choice", "comment", "seconds", "progress"]


def _post(client, url, body):
    return client.post(url, body, content_type="application/json")


def test_a_vote_without_next_keeps_its_contract(make_study, annotator):
    study = make_study(models=2, questions=3, k=1)
    client = logged_in(annotator)
    token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
    body = _post(client, f"/api/assignments/{token}/vote/", {"choice": "left"}).json()
    assert list(body) == VOTE_FIELDS


def test_a_vote_with_next_answers_the_next_pair_already_leased(make_study, annotator):
    study = make_study(models=2, questions=3, k=1)
    client = logged_in(annotator)
    token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
    response = _post(client, f"/api/assignments/{token}/vote/?next=1", {"choice": "left"})
    assert response.status_code == 201
    body = response.json()
    assert list(body) == [*VOTE_FIELDS, "next"]
    following = body["next"]
    assert sorted(following) == sorted(PAIR_FIELDS)
    assert following["token"] != token
    assert body["progress"] == following["progress"] == {"done": 1, "total": 3}
    # Claimed: the next-pair API gives the same pair back (a reload), not another one.
    assert client.get(f"/api/studies/{study.pk}/next/").json()["token"] == following["token"]
    assert Assignment.objects.get(token=following["token"]).status == Assignment.Status.LEASED


def test_next_in_the_body_works_as_the_query(make_study, annotator):
    study = make_study(models=2, questions=2, k=1)
    client = logged_in(annotator)
    token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
    body = _post(client, f"/api/assignments/{token}/vote/", {"choice": "tie", "next": True}).json()
    assert body["next"]["token"] != token


def test_the_loop_runs_to_the_end_one_request_per_vote(make_study, annotator):
    study = make_study(models=3, questions=2, k=1)  # 6 comparisons
    client = logged_in(annotator)
    pair = client.get(f"/api/studies/{study.pk}/next/").json()
    votes = 0
    while pair is not None:
        body = _post(
            client, f"/api/assignments/{pair['token']}/vote/?next=1", {"choice": "right"}
        ).json()
        votes += 1
        assert body["progress"]["done"] == votes
        pair = body["next"]
    assert votes == 6 and body["progress"] == {"done": 6, "total": 6}
    assert client.get(f"/api/studies/{study.pk}/next/").status_code == 204


def test_a_retried_vote_with_next_changes_nothing_and_gives_the_same_next_pair(
    make_study, annotator
):
    study = make_study(models=2, questions=3, k=1)
    client = logged_in(annotator)
    token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
    url = f"/api/assignments/{token}/vote/?next=1"
    first = _post(client, url, {"choice": "left"})
    again = _post(client, url, {"choice": "left"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["next"]["token"] == first.json()["next"]["token"]
    assert again.json()["progress"] == first.json()["progress"]
    assert Vote.objects.filter(annotator=annotator).count() == 1
    leased = Assignment.objects.filter(annotator=annotator, status=Assignment.Status.LEASED)
    assert leased.count() == 1
    # A different choice is a conflict, and claims nothing more.
    assert _post(client, url, {"choice": "right"}).status_code == 409
    assert leased.count() == 1


def test_a_vote_that_is_refused_claims_no_next_pair(make_study, annotator):
    study = make_study(models=2, questions=3, k=1)
    client = logged_in(annotator)
    token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
    response = _post(client, f"/api/assignments/{token}/vote/?next=1", {"choice": "sideways"})
    assert response.status_code == 400
    assert Assignment.objects.filter(annotator=annotator).count() == 1
    assert not Vote.objects.exists()


def test_the_next_pair_rolls_back_with_the_vote(make_study, annotator, monkeypatch):
    # The vote and the claim are one transaction: a failure while claiming leaves no vote.
    from annotation import apis

    study = make_study(models=2, questions=3, k=1)
    client = logged_in(annotator)
    token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]

    def broken(*, state):
        Assignment.objects.create(
            study_id=state.study_id,
            comparison=Comparison.objects.filter(study=study).last(),
            annotator=annotator,
            token="half-claimed",
            left="a",
            first_delivered_at=state.now,
            lease_expires_at=state.now,
        )
        raise RuntimeError("the claim failed")

    monkeypatch.setattr(apis, "next_pair_here", broken)
    client.raise_request_exception = False
    response = _post(client, f"/api/assignments/{token}/vote/?next=1", {"choice": "left"})
    assert response.status_code == 500
    assert not Vote.objects.exists()
    assert not Assignment.objects.filter(token="half-claimed").exists()
    assert Assignment.objects.get(token=token).status == Assignment.Status.LEASED
    assert Comparison.objects.filter(study=study, vote_count__gt=0).count() == 0


def test_a_skip_with_next_answers_the_next_pair(make_study, annotator):
    study = make_study(models=2, questions=3, k=1)
    client = logged_in(annotator)
    token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
    body = _post(client, f"/api/assignments/{token}/skip/?next=1", {"reason": "broken"}).json()
    assert body["progress"] == {"done": 0, "total": 2}
    assert body["next"]["token"] != token
    assert body["next"]["progress"] == {"done": 0, "total": 2}
    without = _post(client, f"/api/assignments/{body['next']['token']}/skip/", {"reason": "broken"})
    assert list(without.json()) == ["token", "reason", "progress"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_votes_with_next_never_go_over_k_nor_lose_a_vote(make_study, django_user_model):
    from django.contrib.auth.models import Group

    study = make_study(models=3, questions=4, k=2)  # 12 comparisons, 24 slots
    group, _ = Group.objects.get_or_create(name="annotators")
    people = []
    for i in range(6):
        user = django_user_model.objects.create_user(f"voter{i}", password="x")
        user.groups.add(group)
        people.append(user)
    errors = []

    def run(user):
        try:
            client = Client()
            client.force_login(user)
            response = client.get(f"/api/studies/{study.pk}/next/")
            pair = response.json() if response.status_code == 200 else None
            while pair is not None:
                url = f"/api/assignments/{pair['token']}/vote/?next=1"
                response = _post(client, url, {"choice": "left"})
                assert response.status_code in (201, 409), response.content
                pair = response.json().get("next") if response.status_code == 201 else None
                if response.status_code == 409:
                    response = client.get(f"/api/studies/{study.pk}/next/")
                    pair = response.json() if response.status_code == 200 else None
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(user,)) for user in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for comparison in Comparison.objects.filter(study=study):
        assert comparison.votes.count() == comparison.vote_count <= 2
    assert Vote.objects.filter(comparison__study=study).count() == 24
    pairs = Vote.objects.values_list("comparison_id", "annotator_id")
    assert len(set(pairs)) == len(pairs)


def test_the_vote_and_skip_with_next_name_no_model(blinded_study, annotator, other_annotator):  # noqa: F811
    study = blinded_study
    gold.comparisons_mark_gold(
        comparisons=Comparison.objects.filter(study=study).order_by("pk")[:2], expected="a"
    )
    Study.objects.filter(pk=study.pk).update(gold_rate=0.5, quota=8)
    rec = Recorder()
    client = Client()
    client.force_login(annotator)
    pair = rec.get(client, f"/api/studies/{study.pk}/next/").json()
    skipped = rec.post(
        client,
        f"/api/assignments/{pair['token']}/skip/?next=1",
        {"reason": "broken"},
        content_type="application/json",
    ).json()
    pair = skipped["next"]
    n = 0
    while pair is not None:
        url = f"/api/assignments/{pair['token']}/vote/?next=1"
        choice = ["left", "tie", "tie_bothbad", "right"][n % 4]
        body = rec.post(client, url, {"choice": choice}, content_type="application/json").json()
        rec.post(client, url, {"choice": choice}, content_type="application/json")  # a retry
        n += 1
        pair = body["next"]
    assert n == 8  # the quota
    words, ids = _forbidden(study)
    id_pattern = re.compile(r"(?<!\d)(" + "|".join(str(i) for i in sorted(ids)) + r")(?!\d)")
    for url, text in rec.seen:
        for word in [*words, "gold"]:
            assert word.lower() not in text.lower(), f"{word!r} leaked in {url}: {text[:300]!r}"
        match = id_pattern.search(text)
        assert match is None, f"id {match.group()} leaked in {url}: {text[:300]!r}"
