"""Personal API tokens: made on the user's page or in the admin and shown once, stored hashed,
accepted as ``Authorization: Bearer`` by the staff API within the user's permissions (no CSRF),
refused with 401 once revoked or expired, limited per address after failures, and never a way
into the annotator pages, the annotator API or the admin."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from evalsite.accounts.authentication import INVALID_TOKEN, TOO_MANY_TOKEN_FAILURES
from evalsite.accounts.models import ApiToken, AuditEntry
from evalsite.accounts.services import api_token_create
from generation.models import LanguageModel
from tests.conftest import logged_in
from tests.test_audit import two_model_study

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r"evt_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
STAFF_ENDPOINT = "/api/prompt-sets/"


@pytest.fixture(autouse=True)
def _fresh_counters():
    """Failure counters live in the shared cache: each test starts from none."""
    cache.clear()
    yield
    cache.clear()


def bearer(raw: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def make_on_the_page(client: Client, name: str = "ci", expires_in: str = "") -> str:
    response = client.post("/accounts/tokens/", {"name": name, "expires_in": expires_in})
    assert response.status_code == 200, response.content.decode()[-2000:]
    [raw] = TOKEN.findall(response.content.decode())
    return raw


def test_a_new_token_is_shown_once_and_stored_only_as_a_hash(staff_user):
    client = logged_in(staff_user)
    response = client.post("/accounts/tokens/", {"name": "nightly export", "expires_in": "30"})
    assert response.status_code == 200
    [raw] = TOKEN.findall(response.content.decode())
    assert "no-store" in response["Cache-Control"]
    assert "<script" not in response.content.decode()  # the strict policy: no script at all
    token = ApiToken.objects.get()
    assert (token.user, token.name) == (staff_user, "nightly export")
    assert token.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert raw.startswith(f"evt_{token.prefix}_")
    # The secret is in no column, and no later page shows it.
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert not any(raw[len("evt_") + 9 :] in str(value) for value in row.values())
    page = client.get("/accounts/tokens/").content.decode()
    assert "nightly export" in page and token.prefix in page
    assert raw not in page and not TOKEN.findall(page)
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    [entry] = AuditEntry.objects.filter(action=AuditEntry.Action.TOKEN_CREATE)
    assert (entry.user, entry.object_id) == (staff_user, str(token.pk))


def test_a_token_works_on_the_staff_api_of_a_real_server_without_csrf(
    transactional_db, live_server, staff_user
):
    token, raw = api_token_create(user=staff_user, name="pipeline")

    def call(method: str, path: str, body: dict | None = None, headers: dict | None = None):
        request = urllib.request.Request(
            live_server.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    auth = {"Authorization": f"Bearer {raw}"}
    assert call("GET", STAFF_ENDPOINT, headers=auth) == (
        200,
        {"count": 0, "next": None, "previous": None, "results": []},
    )
    # A write with no cookie and no CSRF token: nothing for a forged request to ride on.
    status, body = call("POST", "/api/models/", {"name": "m", "name_or_path": "x/m"}, auth)
    assert status == 201, body
    assert LanguageModel.objects.filter(name="m").exists()
    # Without the token, the same calls are refused.
    assert call("GET", STAFF_ENDPOINT)[0] in (401, 403)
    assert call("POST", "/api/models/", {"name": "n", "name_or_path": "x/n"})[0] in (401, 403)
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_a_pipeline_exports_a_studys_results_with_a_token(client, staff_user):
    study = two_model_study(open_now=True)
    _, raw = api_token_create(user=staff_user, name="export")
    response = client.get(f"/api/studies/{study.pk}/export/json/", **bearer(raw))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")


def test_session_writes_still_need_csrf(staff_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    response = client.post("/api/models/", {"name": "m", "name_or_path": "x/m"}, "application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]


def test_a_token_carries_its_users_permissions_and_no_more(client, staff_user, bare_staff):
    _, full = api_token_create(user=staff_user, name="full")
    _, bare = api_token_create(user=bare_staff, name="bare")
    assert client.get(STAFF_ENDPOINT, **bearer(full)).status_code == 200
    assert client.get(STAFF_ENDPOINT, **bearer(bare)).status_code == 403
    # A token made while staff stops opening the staff API when its user stops being staff.
    staff_user.is_staff = False
    staff_user.save(update_fields=["is_staff"])
    assert client.get(STAFF_ENDPOINT, **bearer(full)).status_code == 403


def test_a_revoked_token_gets_401(client, staff_user):
    page = logged_in(staff_user)
    raw = make_on_the_page(page)
    assert client.get(STAFF_ENDPOINT, **bearer(raw)).status_code == 200
    token = ApiToken.objects.get()
    response = page.post(f"/accounts/tokens/{token.pk}/revoke/", follow=True)
    assert "revoked" in response.content.decode()
    refused = client.get(STAFF_ENDPOINT, **bearer(raw))
    assert refused.status_code == 401
    assert refused.json()["detail"] == INVALID_TOKEN
    assert refused["WWW-Authenticate"].startswith("Bearer")
    [entry] = AuditEntry.objects.filter(action=AuditEntry.Action.TOKEN_REVOKE)
    assert (entry.user, entry.object_id) == (staff_user, str(token.pk))
    # A second revoke changes nothing and logs nothing.
    page.post(f"/accounts/tokens/{token.pk}/revoke/")
    assert AuditEntry.objects.filter(action=AuditEntry.Action.TOKEN_REVOKE).count() == 1


def test_an_expired_token_gets_401(client, staff_user):
    token, raw = api_token_create(
        user=staff_user, name="short", expires_at=timezone.now() + timedelta(days=1)
    )
    assert client.get(STAFF_ENDPOINT, **bearer(raw)).status_code == 200
    # A day later (the row's expiry moved instead of the clock).
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(STAFF_ENDPOINT, **bearer(raw)).status_code == 401


@pytest.mark.parametrize(
    "raw",
    ["evt_00000000_" + "A" * 43, "not-a-token", "evt_", "evt_abc_def"],
)
def test_an_unknown_or_malformed_token_gets_401(client, staff_user, raw):
    api_token_create(user=staff_user, name="real")
    assert client.get(STAFF_ENDPOINT, **bearer(raw)).status_code == 401


def test_a_right_prefix_with_a_wrong_secret_gets_401(client, staff_user):
    token, raw = api_token_create(user=staff_user, name="real")
    forged = raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB")
    assert client.get(STAFF_ENDPOINT, **bearer(forged)).status_code == 401


def test_an_annotators_token_reaches_neither_staff_nor_annotator_endpoints(client, annotator):
    study = two_model_study(open_now=True)
    _, raw = api_token_create(user=annotator, name="mine")
    # The staff API: the token is the annotator, who is not staff.
    assert client.get(STAFF_ENDPOINT, **bearer(raw)).status_code == 403
    # The annotator API takes sessions only: the same person with a session gets a pair.
    assert logged_in(annotator).get(f"/api/studies/{study.pk}/next/").status_code == 200
    next_pair = client.get(f"/api/studies/{study.pk}/next/", **bearer(raw))
    assert next_pair.status_code in (401, 403)
    vote = client.post(
        "/api/assignments/anything/vote/", {"choice": "left"}, "application/json", **bearer(raw)
    )
    assert vote.status_code in (401, 403)
    # The annotator pages are Django views on the session: a token is no sign-in there.
    page = client.get("/annotate/", **bearer(raw))
    assert page.status_code == 302 and page["Location"].startswith("/accounts/login/")


def test_a_staff_token_never_opens_the_admin(client, admin_user):
    _, raw = api_token_create(user=admin_user, name="root")
    response = client.get("/admin/", **bearer(raw))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_failed_token_attempts_from_one_address_are_limited(client, staff_user, settings):
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 3
    _, raw = api_token_create(user=staff_user, name="real")
    wrong = "evt_00000000_" + "A" * 43
    for _ in range(3):
        assert client.get(STAFF_ENDPOINT, **bearer(wrong)).status_code == 401
    # Over the limit the address is refused, the right token included (no guessing on).
    blocked = client.get(STAFF_ENDPOINT, **bearer(raw))
    assert blocked.status_code == 429
    minutes = settings.LOGIN_FAILURE_WINDOW // 60
    assert blocked.json()["detail"].startswith(TOO_MANY_TOKEN_FAILURES.format(minutes=minutes))
    # Another address is not held back by this one's failures.
    other = client.get(STAFF_ENDPOINT, REMOTE_ADDR="10.0.0.9", **bearer(raw))
    assert other.status_code == 200


def test_the_token_page_is_for_signed_in_staff(client, annotator):
    assert client.get("/accounts/tokens/")["Location"].startswith("/accounts/login/")
    refused = logged_in(annotator).post("/accounts/tokens/", {"name": "x"})
    assert refused.status_code == 403
    assert not ApiToken.objects.exists()


def test_a_user_can_revoke_only_their_own_tokens(staff_user, admin_user):
    theirs, raw = api_token_create(user=admin_user, name="admin's")
    response = logged_in(staff_user).post(f"/accounts/tokens/{theirs.pk}/revoke/")
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_an_admin_makes_a_token_in_the_admin_sees_it_once_and_revokes_it(client, admin_user):
    admin = logged_in(admin_user)
    response = admin.post("/admin/accounts/apitoken/add/", {"name": "from admin"})
    assert response.status_code == 200, response.content.decode()[-2000:]
    [raw] = TOKEN.findall(response.content.decode())
    token = ApiToken.objects.get()
    assert token.user == admin_user
    assert client.get(STAFF_ENDPOINT, **bearer(raw)).status_code == 200
    change = admin.get(f"/admin/accounts/apitoken/{token.pk}/change/").content.decode()
    assert token.prefix in change and raw not in change
    admin.post(
        "/admin/accounts/apitoken/", {"action": "revoke_tokens", ACTION_CHECKBOX_NAME: [token.pk]}
    )
    assert client.get(STAFF_ENDPOINT, **bearer(raw)).status_code == 401
    assert AuditEntry.objects.filter(action=AuditEntry.Action.TOKEN_REVOKE).count() == 1


def test_the_admin_refuses_an_expiry_in_the_past(admin_user):
    past = timezone.now() - timedelta(days=1)
    response = logged_in(admin_user).post(
        "/admin/accounts/apitoken/add/",
        {"name": "late", "expires_at_0": past.strftime("%Y-%m-%d"), "expires_at_1": "00:00:00"},
    )
    assert response.status_code == 200
    assert "the expiry must be in the future" in response.content.decode()
    assert not ApiToken.objects.exists()
