"""Less per request of the annotator loop (issue 30): the rate limit is one Redis round trip and
still limits; the connection is checked after an error or an idle spell, not before every
request; a revoked annotator cannot keep voting on anything cached."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import connection, connections
from rest_framework.throttling import ScopedRateThrottle

from evalsite.auth import counter_hit
from evalsite.middleware import ConnectionCheckMiddleware
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db


def _redis() -> bool:
    return "redis" in settings.CACHES["default"]["BACKEND"].lower()


def test_the_counter_counts_hits_in_a_window_that_starts_at_the_first():
    cache.delete("hits:test-counter")
    assert counter_hit("hits:test-counter", window=60)[0] == 1
    hits, left = counter_hit("hits:test-counter", window=60)
    assert hits == 2 and 0 < left <= 60


def test_the_annotator_rate_limit_is_one_redis_round_trip(make_study, annotator, monkeypatch):
    if not _redis():
        pytest.skip("needs the Redis cache")
    import redis

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"annotate": "100/min"})
    study = make_study(models=2, questions=2, k=1)
    client = logged_in(annotator)
    client.get(f"/api/studies/{study.pk}/next/")  # the session is in the cache now
    sent = []
    original = redis.connection.Connection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    assert client.get(f"/api/studies/{study.pk}/next/").status_code == 200
    # The session's read and the rate limit's pipeline: two round trips in all.
    assert len(sent) == 2


def test_a_revoked_annotator_cannot_keep_voting(make_study, annotator):
    study = make_study(models=2, questions=3, k=1)
    client = logged_in(annotator)
    token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
    following = client.post(
        f"/api/assignments/{token}/vote/?next=1",
        {"choice": "left"},
        content_type="application/json",
    ).json()["next"]["token"]
    annotator.groups.remove(Group.objects.get(name="annotators"))
    refused = client.post(
        f"/api/assignments/{following}/vote/?next=1",
        {"choice": "left"},
        content_type="application/json",
    )
    assert refused.status_code == 403
    assert client.get(f"/api/studies/{study.pk}/next/").status_code == 403
    # Deactivated: not even signed in any more.
    annotator.groups.add(Group.objects.get(name="annotators"))
    annotator.is_active = False
    annotator.save(update_fields=["is_active"])
    assert client.get(f"/api/studies/{study.pk}/next/").status_code in (401, 403)


def _checked(middleware, monkeypatch) -> bool:
    """Run one request's database work through the middleware, as the WSGI handler starts it
    (request_started resets the check); whether the connection was checked (``is_usable``,
    which bypasses Django's cursor, so it is counted where it is called)."""
    from django.db import close_old_connections
    from django.http import HttpResponse

    calls = []
    wrapper = connections["default"]
    usable = type(wrapper).is_usable
    monkeypatch.setattr(type(wrapper), "is_usable", lambda self: calls.append(1) or usable(self))
    close_old_connections()

    def view(request):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 42")
        return HttpResponse()

    middleware(view)(None)
    monkeypatch.setattr(type(wrapper), "is_usable", usable)
    return bool(calls)


@pytest.mark.django_db(transaction=True)
def test_the_connection_is_checked_after_an_error_or_an_idle_spell_only(settings, monkeypatch):
    connection.ensure_connection()
    connection.health_check_enabled = True
    connection.evalsite_last_ok = None  # whatever earlier tests' requests left
    settings.DB_HEALTH_CHECK_IDLE = 10
    middleware = ConnectionCheckMiddleware
    assert _checked(middleware, monkeypatch)  # never vouched for: checked
    assert not _checked(middleware, monkeypatch)  # busy and healthy: not checked
    connection.evalsite_last_ok -= 11  # idle for longer than the interval
    assert _checked(middleware, monkeypatch)
    connection.errors_occurred = True  # an error in the last request
    assert _checked(middleware, monkeypatch)
    settings.DB_HEALTH_CHECK_IDLE = 0  # as Django: every request
    assert _checked(middleware, monkeypatch)
    assert _checked(middleware, monkeypatch)


def test_the_word_diff_is_sent_unless_asked_without(make_study, annotator):
    """The voting page asks ?diff=0 while its diff box is unticked; outside tools asking as
    before get the diff, and every pair has the same fields either way."""
    study = make_study(models=2, questions=3, k=1)
    client = logged_in(annotator)
    pair = client.get(f"/api/studies/{study.pk}/next/").json()
    assert pair["left_diff"] and pair["right_diff"]
    again = client.get(f"/api/studies/{study.pk}/next/?diff=0").json()  # the same pair, held
    assert again["token"] == pair["token"]
    assert again["left_diff"] is None and again["right_diff"] is None
    assert list(again) == list(pair)
    assert {k: v for k, v in again.items() if "diff" not in k} == {
        k: v for k, v in pair.items() if "diff" not in k
    }
    voted = client.post(
        f"/api/assignments/{pair['token']}/vote/?next=1&diff=0",
        {"choice": "left"},
        content_type="application/json",
    ).json()
    following = voted["next"]
    assert following["left_diff"] is None and list(following) == list(pair)
    voted = client.post(
        f"/api/assignments/{following['token']}/vote/?next=1",
        {"choice": "right"},
        content_type="application/json",
    ).json()
    assert voted["next"]["left_diff"] and voted["next"]["right_diff"]
    skipped = client.post(
        f"/api/assignments/{voted['next']['token']}/skip/?next=1&diff=false",
        {"reason": "broken"},
        content_type="application/json",
    ).json()
    assert skipped["next"] is None or skipped["next"]["left_diff"] is None


def test_the_signed_in_user_is_read_in_one_statement_as_the_orm_reads_it(annotator):
    from django.contrib.auth.models import User
    from django.test.utils import CaptureQueriesContext

    from evalsite.auth import ModelBackend, user_row

    annotator.last_login = None
    annotator.save()
    annotator = User.objects.get(pk=annotator.pk)
    client = logged_in(annotator)  # sets last_login
    with CaptureQueriesContext(connection) as queries:
        user = ModelBackend().get_user(annotator.pk)
    assert len(queries) == 1
    expected = User.objects.get(pk=annotator.pk)
    fields = [f.attname for f in User._meta.concrete_fields]
    assert [getattr(user, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert user.last_login is not None and user.last_login.tzinfo is not None
    assert type(user.is_active) is bool and user.groups.filter(name="annotators").exists()
    assert client.get("/api/ping/").status_code == 200
    assert user_row(10**9) is None and user_row("not a number") is None
    # Deactivated, or gone: nobody is signed in.
    User.objects.filter(pk=annotator.pk).update(is_active=False)
    assert ModelBackend().get_user(annotator.pk) is None
    assert client.get("/api/ping/").status_code in (401, 403)
