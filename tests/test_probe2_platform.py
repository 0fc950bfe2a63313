"""Probe of issue 24, finding 2 and the platform parts of finding 7, through the real endpoints.

2. Per-address limits took the whole client-written X-Forwarded-For header as the address: a new
   header value per attempt never reached the limit, and failures "from" 127.0.0.1 locked a real
   user there out of sign-in and tokens. Now the address is REMOTE_ADDR unless NUM_PROXIES
   trusted proxies stand in front, and every per-address limit (sign-in, API tokens, password
   reset, DRF throttles) reads it from evalsite.auth.client_address.
7. /api/health/ showed worker host names and runs to staff with no permissions; the password
   reset pages were open and unthrottled with no mail server to send anything.

Each test failed on the code the probe ran against and passes now.
"""

from __future__ import annotations

import re
import socket

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, include, path
from rest_framework import throttling
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from evalsite import auth
from evalsite.accounts import password_reset
from evalsite.accounts.authentication import TOO_MANY_TOKEN_FAILURES
from evalsite.accounts.services import api_token_create
from evalsite.runs import lifecycle
from evalsite.runs.workers import census
from evalsite.views import HEALTH_OK
from generation.models import GenerationRun
from generation.registry import language_model_register, prompt_set_import
from generation.runs import generation_run_create
from tests.conftest import logged_in, wait_for

pytestmark = pytest.mark.django_db

ATTACKER = "192.0.2.66"
PROXY = "10.0.0.2"
LOGIN = "/accounts/login/"
STAFF_ENDPOINT = "/api/prompt-sets/"
WRONG_TOKEN = "evt_00000000_" + "A" * 43
HUNG = 120  # only guards against a hung test


@pytest.fixture(autouse=True)
def _fresh_counters(settings):
    """Counters live in the shared cache: each test starts from none, with no proxy configured
    (NUM_PROXIES unset is 0) and the default limits."""
    settings.NUM_PROXIES = 0
    cache.clear()
    yield
    cache.clear()


def _sign_in_fails(client: Client, n: int, **headers) -> int:
    """A wrong password for a new username each time (a spray: no per-user limit is reached)."""
    response = client.post(LOGIN, {"username": f"sprayed{n}", "password": "guess"}, **headers)
    return response.status_code


def _bearer(raw: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


# --- 2. sign-in failures -------------------------------------------------------------------------


def test_sixty_failed_sign_ins_each_with_a_new_forwarded_for_reach_the_address_limit(settings):
    attacker = Client(REMOTE_ADDR=ATTACKER)
    limit = settings.LOGIN_ADDRESS_FAILURE_LIMIT

    statuses = [
        _sign_in_fails(attacker, n, HTTP_X_FORWARDED_FOR=f"10.{n}.{n}.1") for n in range(60)
    ]

    assert statuses[:limit] == [200] * limit
    assert statuses[limit:] == [429] * (60 - limit)
    response = attacker.post(
        LOGIN, {"username": "x", "password": "y"}, HTTP_X_FORWARDED_FOR="1.2.3.4"
    )
    assert auth.TOO_MANY_FROM_ADDRESS.split(";")[0] in response.content.decode()


def test_failures_forged_as_from_127_0_0_1_do_not_lock_out_a_user_there(annotator, settings):
    attacker = Client(REMOTE_ADDR=ATTACKER)
    for n in range(settings.LOGIN_ADDRESS_FAILURE_LIMIT):
        assert _sign_in_fails(attacker, n, HTTP_X_FORWARDED_FOR="127.0.0.1") == 200

    at_home = Client(REMOTE_ADDR="127.0.0.1")
    response = at_home.post(LOGIN, {"username": "annotator", "password": "annotator-pass"})

    assert response.status_code == 302
    # The failures counted where they came from.
    assert _sign_in_fails(attacker, 999, HTTP_X_FORWARDED_FOR="127.0.0.1") == 429


def test_behind_one_proxy_the_rightmost_forwarded_entry_is_the_address(annotator, settings):
    settings.NUM_PROXIES = 1
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 3
    through_proxy = Client(REMOTE_ADDR=PROXY)
    # Whatever the client writes on the left, the proxy appends the address it saw.
    for n in range(3):
        forwarded = f"127.0.0.{n}, 203.0.113.5"
        assert _sign_in_fails(through_proxy, n, HTTP_X_FORWARDED_FOR=forwarded) == 200
    assert _sign_in_fails(through_proxy, 9, HTTP_X_FORWARDED_FOR="8.8.8.8, 203.0.113.5") == 429

    # Another client behind the same proxy (one REMOTE_ADDR for all) is not held back.
    response = through_proxy.post(
        LOGIN,
        {"username": "annotator", "password": "annotator-pass"},
        HTTP_X_FORWARDED_FOR="203.0.113.5, 198.51.100.7",
    )
    assert response.status_code == 302


def test_a_forwarded_for_shorter_than_the_proxy_count_falls_back_to_remote_addr(settings):
    settings.NUM_PROXIES = 2
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 3
    direct = Client(REMOTE_ADDR=ATTACKER)  # past the proxies: one entry it wrote itself
    statuses = [_sign_in_fails(direct, n, HTTP_X_FORWARDED_FOR=f"10.9.9.{n}") for n in range(4)]
    assert statuses == [200, 200, 200, 429]


# --- 2. API token failures -----------------------------------------------------------------------


def test_token_failures_with_new_forwarded_for_values_reach_the_address_limit(settings):
    attacker = Client(REMOTE_ADDR=ATTACKER)
    limit = settings.LOGIN_ADDRESS_FAILURE_LIMIT
    statuses = [
        attacker.get(
            STAFF_ENDPOINT, HTTP_X_FORWARDED_FOR=f"10.{n}.0.{n}", **_bearer(WRONG_TOKEN)
        ).status_code
        for n in range(60)
    ]
    assert statuses[:limit] == [401] * limit
    assert statuses[limit:] == [429] * (60 - limit)


def test_token_failures_forged_as_from_127_0_0_1_do_not_lock_out_a_token_there(
    staff_user, settings
):
    _, raw = api_token_create(user=staff_user, name="ci")
    attacker = Client(REMOTE_ADDR=ATTACKER)
    for _ in range(settings.LOGIN_ADDRESS_FAILURE_LIMIT):
        forged = attacker.get(
            STAFF_ENDPOINT, HTTP_X_FORWARDED_FOR="127.0.0.1", **_bearer(WRONG_TOKEN)
        )
        assert forged.status_code == 401

    assert Client(REMOTE_ADDR="127.0.0.1").get(STAFF_ENDPOINT, **_bearer(raw)).status_code == 200
    blocked = attacker.get(STAFF_ENDPOINT, HTTP_X_FORWARDED_FOR="127.0.0.1", **_bearer(raw))
    assert blocked.status_code == 429
    minutes = settings.LOGIN_FAILURE_WINDOW // 60
    assert blocked.json()["detail"].startswith(TOO_MANY_TOKEN_FAILURES.format(minutes=minutes))


def test_token_failures_behind_one_proxy_follow_the_rightmost_entry(staff_user, settings):
    settings.NUM_PROXIES = 1
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 3
    _, raw = api_token_create(user=staff_user, name="ci")
    through_proxy = Client(REMOTE_ADDR=PROXY)
    for n in range(3):
        failed = through_proxy.get(
            STAFF_ENDPOINT, HTTP_X_FORWARDED_FOR=f"1.1.1.{n}, 203.0.113.5", **_bearer(WRONG_TOKEN)
        )
        assert failed.status_code == 401
    held = through_proxy.get(STAFF_ENDPOINT, HTTP_X_FORWARDED_FOR="203.0.113.5", **_bearer(raw))
    assert held.status_code == 429
    other = through_proxy.get(STAFF_ENDPOINT, HTTP_X_FORWARDED_FOR="198.51.100.7", **_bearer(raw))
    assert other.status_code == 200


# --- 2. DRF throttles ----------------------------------------------------------------------------


class _ThreeAMinute(auth.AnonRateThrottle):
    """The project's throttle class, at a rate a test reaches quickly."""

    rate = "3/min"


class _StockThreeAMinute(throttling.AnonRateThrottle):
    """DRF's own class, as someone adding a throttle without the project's might."""

    rate = "3/min"


class _Open(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request):
        return Response({"ok": True})


class _ProjectThrottled(_Open):
    throttle_classes = [_ThreeAMinute]


class _StockThrottled(_Open):
    throttle_classes = [_StockThreeAMinute]


# This module is the URLconf of the DRF throttle tests: the project's URLs plus two throttled
# endpoints (the project has no address-keyed throttle on an endpoint anonymous callers reach:
# the annotator API's is keyed on the signed-in user).
urlpatterns = [
    path("probe/project-throttle/", _ProjectThrottled.as_view()),
    path("probe/stock-throttle/", _StockThrottled.as_view()),
    path("", include("evalsite.urls")),
]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("url", ["/probe/project-throttle/", "/probe/stock-throttle/"])
def test_a_drf_throttle_is_not_dodged_with_new_forwarded_for_values(url):
    attacker = Client(REMOTE_ADDR=ATTACKER)
    statuses = [attacker.get(url, HTTP_X_FORWARDED_FOR=f"10.0.{n}.1").status_code for n in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    # A client at the address the attacker wrote is not held back.
    assert Client(REMOTE_ADDR="10.0.0.1").get(url).status_code == 200


@pytest.mark.urls(__name__)
def test_a_drf_throttle_behind_one_proxy_follows_the_rightmost_entry(settings):
    settings.NUM_PROXIES = 1
    url = "/probe/project-throttle/"
    through_proxy = Client(REMOTE_ADDR=PROXY)
    statuses = [
        through_proxy.get(url, HTTP_X_FORWARDED_FOR=f"9.9.9.{n}, 203.0.113.5").status_code
        for n in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    other = through_proxy.get(url, HTTP_X_FORWARDED_FOR="203.0.113.5, 198.51.100.7")
    assert other.status_code == 200


def _drf_views(resolver=None):
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            yield from _drf_views(entry)
        elif isinstance(entry, URLPattern):
            view = getattr(entry.callback, "cls", None)
            if view is not None and hasattr(view, "throttle_classes"):
                yield entry, view


def test_every_drf_throttle_in_the_project_keys_on_the_one_client_address():
    throttled = []
    for entry, view in _drf_views():
        for throttle in view.throttle_classes:
            assert issubclass(throttle, auth.ClientAddressThrottleMixin), (entry, throttle)
            throttled.append(view)
    assert throttled  # the annotator API's throttle at least


# --- 7. /api/health/ -----------------------------------------------------------------------------


def _running_run() -> GenerationRun:
    prompt_set = prompt_set_import(name="ops", data=b"question\nhello\n", filename="ops.csv")
    model = language_model_register(name="never-loaded", name_or_path="tiny-0")
    run = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    assert lifecycle.claim(GenerationRun, run.pk, "gpu-box:4242")
    return run


def _grant(user, *perms: str):
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


@pytest.fixture
def _health_fresh(settings):
    settings.WORKER_CENSUS_CACHE_SECONDS = 0


@pytest.mark.usefixtures("_health_fresh")
def test_health_tells_anonymous_callers_and_bare_staff_only_that_services_answer(
    client, bare_staff
):
    _running_run()
    for caller in (client, logged_in(bare_staff)):
        response = caller.get("/api/health/")
        assert response.status_code == 200
        assert response.json() == {"database": HEALTH_OK, "broker": HEALTH_OK}
        assert "gpu-box" not in response.content.decode()


@pytest.mark.usefixtures("_health_fresh")
def test_health_shows_runs_only_of_the_kinds_the_staff_user_may_view(django_user_model):
    run = _running_run()
    generation_viewer = _grant(
        django_user_model.objects.create_user("gen", password="x", is_staff=True),
        "generation.view_generationrun",
    )
    judge_viewer = _grant(
        django_user_model.objects.create_user("judge", password="x", is_staff=True),
        "judging.view_judgerun",
    )

    seen = logged_in(generation_viewer).get("/api/health/").json()
    assert [(r["kind"], r["id"], r["worker"]) for r in seen["runs"]] == [
        ("generation run", run.pk, "gpu-box:4242")
    ]
    assert "workers" in seen and "workers_known" in seen

    other_kind = logged_in(judge_viewer).get("/api/health/").json()
    assert other_kind["runs"] == []
    assert "workers" in other_kind


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
@pytest.mark.usefixtures("_health_fresh")
def test_worker_host_names_reach_run_viewers_only_not_bare_staff_nor_the_schema(
    shared_worker, bare_staff, django_user_model
):
    _running_run()
    shared_worker(queues="gpu")
    wait_for(lambda: census().consumers("gpu"), timeout=HUNG, message="the worker to answer")
    [worker_name] = census().consumers("gpu")
    host = socket.gethostname()
    viewer = _grant(
        django_user_model.objects.create_user("viewer", password="x", is_staff=True),
        "generation.view_generationrun",
    )

    shown = logged_in(viewer).get("/api/health/").json()
    assert [w["name"] for w in shown["workers"]["gpu"]] == [worker_name]

    bare = logged_in(bare_staff)
    hidden = bare.get("/api/health/")
    assert hidden.json() == {"database": HEALTH_OK, "broker": HEALTH_OK}
    # The schema describes the fields; it carries no live worker, host or run.
    schema = bare.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for live in (worker_name, host, "gpu-box"):
        assert live not in text, live


# --- 7. password reset ---------------------------------------------------------------------------


RESET_PAGES = [
    "/accounts/password_reset/",
    "/accounts/password_reset/done/",
    "/accounts/reset/MQ/set-password/",
    "/accounts/reset/done/",
]


@pytest.fixture
def mailed_user(django_user_model):
    return django_user_model.objects.create_user(
        "mailed", email="Mailed@example.com", password="old-pass-1234"
    )


@pytest.mark.parametrize("url", RESET_PAGES)
def test_password_reset_is_404_without_mail_configured(client, mailed_user, url):
    assert client.get(url).status_code == 404
    assert client.post(url, {"email": "mailed@example.com"}).status_code == 404
    assert mail.outbox == []


def test_the_sign_in_page_links_to_the_reset_only_when_mail_is_configured(client, settings):
    assert "password_reset" not in client.get(LOGIN).content.decode()
    settings.PASSWORD_RESET_ENABLED = True
    assert 'href="/accounts/password_reset/"' in client.get(LOGIN).content.decode()


def test_with_mail_configured_a_reset_mail_sets_a_new_password(client, mailed_user, settings):
    settings.PASSWORD_RESET_ENABLED = True  # the test mail backend (locmem) is the server

    response = client.post("/accounts/password_reset/", {"email": "mailed@example.com"})

    assert response.status_code == 302 and response["Location"] == "/accounts/password_reset/done/"
    [message] = mail.outbox
    assert message.to == ["Mailed@example.com"]
    [link] = re.findall(r"http://testserver(/accounts/reset/\S+/)", message.body)
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200 and "new_password1" in form_page.content.decode()
    done = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": "brand-new-pass-5678", "new_password2": "brand-new-pass-5678"},
    )
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"
    signed_in = Client().post(LOGIN, {"username": "mailed", "password": "brand-new-pass-5678"})
    assert signed_in.status_code == 302


def test_reset_requests_are_limited_per_email_in_any_spelling(client, mailed_user, settings):
    settings.PASSWORD_RESET_ENABLED = True
    settings.PASSWORD_RESET_EMAIL_LIMIT = 2
    for n, spelling in enumerate(["mailed@example.com", "MAILED@example.com"]):
        # From different addresses: the email's own counter is what stops the third.
        sent = Client(REMOTE_ADDR=f"192.0.2.{n + 1}").post(
            "/accounts/password_reset/", {"email": spelling}
        )
        assert sent.status_code == 302
    refused = Client(REMOTE_ADDR="192.0.2.9").post(
        "/accounts/password_reset/", {"email": "ｍailed@example.com"}
    )
    assert refused.status_code == 429
    minutes = settings.PASSWORD_RESET_WINDOW // 60
    assert password_reset.TOO_MANY_FOR_EMAIL.format(minutes=minutes) in refused.content.decode()
    assert len(mail.outbox) == 2


def test_reset_requests_are_limited_per_address_whatever_forwarded_for_says(settings):
    settings.PASSWORD_RESET_ENABLED = True
    settings.PASSWORD_RESET_ADDRESS_LIMIT = 3
    attacker = Client(REMOTE_ADDR=ATTACKER)
    statuses = [
        attacker.post(
            "/accounts/password_reset/",
            {"email": f"someone{n}@example.com"},
            HTTP_X_FORWARDED_FOR=f"10.0.0.{n}",
        ).status_code
        for n in range(4)
    ]
    assert statuses == [302, 302, 302, 429]
    refused = attacker.post("/accounts/password_reset/", {"email": "x@example.com"})
    minutes = settings.PASSWORD_RESET_WINDOW // 60
    assert password_reset.TOO_MANY_FROM_ADDRESS.format(minutes=minutes) in refused.content.decode()
    elsewhere = Client(REMOTE_ADDR="192.0.2.200")
    assert (
        elsewhere.post("/accounts/password_reset/", {"email": "y@example.com"}).status_code == 302
    )
