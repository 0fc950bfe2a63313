"""The annotator API and pages: votes are idempotent, never overwritten, and only yours."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from rest_framework.throttling import ScopedRateThrottle

from annotation import studies
from annotation.loop.votes import BAD_CHOICE, VOTE_CONFLICT
from annotation.models import Assignment, Vote
from tests.conftest import logged_in

from .conftest import PAIR_FIELDS

pytestmark = pytest.mark.django_db


def _next(client, study):
    return client.get(f"/api/studies/{study.pk}/next/")


def _postgres() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def _vote(client, token, body):
    return client.post(f"/api/assignments/{token}/vote/", body, content_type="application/json")


@pytest.fixture
def study(make_study):
    return make_study(models=2, questions=3, k=2)


def test_next_returns_exactly_the_contract_fields(study, annotator):
    response = _next(logged_in(annotator), study)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    data = response.json()
    assert list(data) == PAIR_FIELDS
    assert list(data["progress"]) == ["done", "total"]
    assert data["progress"] == {"done": 0, "total": 3}
    assert data["question"].startswith("質問")


def test_a_vote_is_stored_with_its_comment_and_shown_side(study, annotator):
    client = logged_in(annotator)
    token = _next(client, study).json()["token"]
    response = _vote(client, token, {"choice": "left", "comment": "  Aの方が具体的  "})
    assert response.status_code == 201
    body = response.json()
    assert list(body) == ["token", "choice", "comment", "seconds", "progress"]
    assert body["choice"] == "left" and body["comment"] == "Aの方が具体的"
    vote = Vote.objects.get(assignment__token=token)
    assignment = vote.assignment
    assert vote.shown == "left"
    assert vote.outcome == ("a" if assignment.left == "a" else "b")
    assert vote.annotator == annotator and not vote.imported
    assert assignment.status == Assignment.Status.VOTED


def test_repeating_the_same_vote_returns_200_and_stores_nothing_new(study, annotator):
    client = logged_in(annotator)
    token = _next(client, study).json()["token"]
    first = _vote(client, token, {"choice": "tie"})
    again = _vote(client, token, {"choice": "tie"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["choice"] == "tie"
    assert again.json()["seconds"] == first.json()["seconds"]
    assert Vote.objects.filter(assignment__token=token).count() == 1


def test_it_rejects_a_different_vote_on_a_voted_token_with_409(study, annotator):
    client = logged_in(annotator)
    token = _next(client, study).json()["token"]
    assert _vote(client, token, {"choice": "left"}).status_code == 201
    response = _vote(client, token, {"choice": "right"})
    assert response.status_code == 409
    assert response.json() == {"detail": VOTE_CONFLICT}
    assert Vote.objects.get(assignment__token=token).shown == "left"


def test_another_annotators_token_is_404(study, annotator, other_annotator):
    token = _next(logged_in(annotator), study).json()["token"]
    response = _vote(logged_in(other_annotator), token, {"choice": "left"})
    assert response.status_code == 404
    assert not Vote.objects.exists()


def test_an_unknown_token_is_404(study, annotator):
    assert _vote(logged_in(annotator), "no-such-token", {"choice": "left"}).status_code == 404


@pytest.mark.parametrize("body", [{"choice": "up"}, {"choice": "A"}, {"comment": "no choice"}])
def test_an_unknown_choice_is_400_with_a_message(study, annotator, body):
    client = logged_in(annotator)
    token = _next(client, study).json()["token"]
    response = _vote(client, token, body)
    assert response.status_code == 400
    assert response.json() == {"choice": [BAD_CHOICE]}
    assert not Vote.objects.exists()


@pytest.mark.parametrize("status", ["draft", "closed"])
def test_a_study_that_is_not_open_is_404_for_annotators(make_study, annotator, status):
    study = make_study(open_now=False)
    if status == "closed":
        studies.study_open(study=study)
        token = _next(logged_in(annotator), study).json()["token"]
        studies.study_close(study=study)
        assert _vote(logged_in(annotator), token, {"choice": "left"}).status_code == 404
    client = logged_in(annotator)
    assert _next(client, study).status_code == 404
    assert client.get(f"/annotate/{study.pk}/").status_code == 404
    assert client.get("/annotate/").content.decode().count(f"/annotate/{study.pk}/") == 0


def test_people_who_are_not_annotators_cannot_use_the_api(study, django_user_model):
    outsider = django_user_model.objects.create_user("outsider", password="x")
    assert _next(logged_in(outsider), study).status_code == 403
    assert _next(Client(), study).status_code == 403
    assert logged_in(outsider).get("/annotate/").status_code == 403
    anonymous = Client().get("/annotate/")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/")


def test_staff_may_annotate_too(study, staff_user):
    client = logged_in(staff_user)
    token = _next(client, study).json()["token"]
    assert _vote(client, token, {"choice": "right"}).status_code == 201


def test_csrf_is_enforced_on_votes(study, annotator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    token = _next(client, study).json()["token"]
    response = _vote(client, token, {"choice": "left"})
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    # With the token the page hands to its script, the same request goes through.
    page = client.get(f"/annotate/{study.pk}/")
    csrf = page.context["csrf_token"]
    ok = client.post(
        f"/api/assignments/{token}/vote/",
        {"choice": "left"},
        content_type="application/json",
        headers={"X-CSRFToken": str(csrf)},
    )
    assert ok.status_code == 201


def test_next_and_vote_are_throttled_per_user(study, annotator, other_annotator, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"annotate": "3/min"})
    client = logged_in(annotator)
    token = _next(client, study).json()["token"]
    assert _next(client, study).status_code == 200
    assert _vote(client, token, {"choice": "left"}).status_code == 201
    assert _next(client, study).status_code == 429
    assert _vote(client, token, {"choice": "left"}).status_code == 429
    # Another annotator has their own allowance.
    assert _next(logged_in(other_annotator), study).status_code == 200


def test_the_landing_page_lists_open_studies_with_my_progress(make_study, annotator):
    shown = make_study(models=2, questions=3, k=1)
    hidden = make_study(models=2, questions=2, open_now=False)
    client = logged_in(annotator)
    data = _next(client, shown).json()
    _vote(client, data["token"], {"choice": "tie"})
    page = client.get("/annotate/")
    html = page.content.decode()
    assert page.status_code == 200
    assert f'href="/annotate/{shown.pk}/"' in html
    assert f"/annotate/{hidden.pk}/" not in html
    assert "1 of 3 done" in html
    assert f"Study {shown.pk}" in html


def test_the_landing_page_and_voting_page_speak_japanese_when_asked(study, annotator):
    client = logged_in(annotator)
    landing = client.get("/annotate/", headers={"accept-language": "ja"})
    assert "受付中の評価" in landing.content.decode()
    assert f"評価 {study.pk}" in landing.content.decode()
    assert "3 件中 0 件完了" in landing.content.decode()
    page = client.get(f"/annotate/{study.pk}/", headers={"accept-language": "ja,en;q=0.5"})
    html = page.content.decode()
    assert '<html lang="ja">' in html
    for text in ["A の方が良い", "どちらも良い", "どちらも悪い", "B の方が良い", "スキップ"]:
        assert text in html
    english = client.get(f"/annotate/{study.pk}/", headers={"accept-language": "en"})
    assert "A is better" in english.content.decode()


def test_the_voting_page_has_no_inline_script_and_shows_the_shortcuts(study, annotator):
    html = logged_in(annotator).get(f"/annotate/{study.pk}/").content.decode()
    assert '<script src="/static/annotation/vote.js" defer></script>' in html
    assert html.count("<script") == 1
    assert " on" + "click=" not in html and "javascript:" not in html
    for key in ["<kbd>1</kbd>", "<kbd>2</kbd>", "<kbd>3</kbd>", "<kbd>←</kbd>", "<kbd>→</kbd>"]:
        assert key in html
    assert f'data-next-url="/api/studies/{study.pk}/next/"' in html
    assert 'data-vote-url="/api/assignments/TOKEN/vote/"' in html
    assert "落ち着いて、より役に立つ回答を選んでください。" in html


def test_the_login_page_logs_an_annotator_in(study, annotator):
    client = Client()
    page = client.get("/accounts/login/?next=/annotate/")
    assert page.status_code == 200
    response = client.post(
        "/accounts/login/",
        {"username": "annotator", "password": "annotator-pass", "next": "/annotate/"},
    )
    assert response.status_code == 302 and response["Location"] == "/annotate/"
    assert client.get("/annotate/").status_code == 200


def test_every_message_of_the_japanese_catalogue_is_translated(compiled_messages):
    po = compiled_messages.with_suffix(".po").read_text(encoding="utf-8")
    assert len(re.findall(r'^msgid "(.+)"$', po, flags=re.M)) >= 30
    # An empty msgstr not continued on the next line is a message left in English.
    assert re.findall(r'^msgid "(.+)"\nmsgstr ""\n(?!")', po, flags=re.M) == []
    assert "#, fuzzy" not in po
    # Entry by entry, so that long (multi-line) messages and plurals are checked too.
    for entry in po.split("\n\n")[1:]:  # the header entry has an empty msgid on purpose
        translated = entry.split("msgstr", 1)[1].strip()
        assert translated not in ('""', '[0] ""'), entry


def _statements(request) -> int:
    """Statements a request runs, not counting the savepoints the test's transaction adds."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        request()
    return sum(1 for q in queries.captured_queries if "SAVEPOINT" not in q["sql"])


def _session_and_user() -> int:
    """Statements a signed-in request spends before the view: the user, and the session unless
    it is read from the shared cache (settings: cached_db sessions when there is a Redis)."""
    from django.conf import settings

    return 1 if settings.SESSION_ENGINE.endswith("cached_db") else 2


def test_the_annotator_loop_keeps_its_statement_counts(study, annotator):
    # The load path (README, "Studies and annotators"), after the session and the user:
    # next-pair reads the state, claims a pair with its texts and inserts the lease; a reload
    # reads the state, the held lease and its pair; a vote reads its target and writes (one
    # statement on PostgreSQL, three on SQLite).
    client = logged_in(annotator)
    token = None

    def take():
        nonlocal token
        token = _next(client, study).json()["token"]

    # An annotator's first request in a study counts their kept progress once (loop/progress.py);
    # the counts below are those of every request after it.
    from annotation.loop.state import annotator_progress

    annotator_progress(study_id=study.pk, annotator=annotator)
    before = _session_and_user()
    assert _statements(take) == before + 3
    assert _statements(lambda: _next(client, study)) == before + 3
    vote = lambda: _vote(client, token, {"choice": "left"})  # noqa: E731
    # SQLite: the slot, the vote, the mark, the kept progress and its read (issue 30).
    assert _statements(vote) == before + (2 if _postgres() else 6)


def test_a_signed_in_request_reads_its_session_from_the_cache_not_the_database(study, annotator):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if _session_and_user() != 1:
        pytest.skip("needs a Redis cache: set CACHE_URL or a Redis CELERY_BROKER_URL")
    client = logged_in(annotator)
    _next(client, study)
    with CaptureQueriesContext(connection) as queries:
        assert _next(client, study).status_code == 200
    assert not any("django_session" in q["sql"] for q in queries.captured_queries)
