"""GET /api/health/: what a load balancer sees with everything up, with the database down and with
the broker down (a real gunicorn serving the app under those settings), and what staff see."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from django.conf import settings

from evalsite.runs import lifecycle
from evalsite.runs.workers import census
from evalsite.views import HEALTH_DOWN, HEALTH_OK
from generation.models import GenerationRun
from generation.registry import language_model_register, prompt_set_import
from generation.runs import generation_run_create
from tests.conftest import REPO, logged_in, this_test_database_url, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.broker]

URL = "/api/health/"
# Only guards against a hung test; nothing here asserts on time.
HUNG = 120
CLOSED = "127.0.0.1:1"  # nothing listens on port 1


@pytest.fixture(autouse=True)
def _fresh_census(settings):
    # Every request asks the workers afresh: a census cached by an earlier test would be stale.
    settings.WORKER_CENSUS_CACHE_SECONDS = 0


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_netloc(url: str, netloc: str) -> str:
    return urlunsplit(urlsplit(url)._replace(netloc=netloc))


@contextmanager
def served(tmp_path, **env) -> Iterator[str]:
    """The app under gunicorn (as in production) with ``env`` over this process's environment;
    yields its base URL."""
    port = _free_port()
    log_path = tmp_path / f"gunicorn-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "evalsite.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
            ],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        assert process.poll() is None, log_path.read_text(errors="replace")
        with closing(socket.socket()) as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, timeout=HUNG, message=f"gunicorn on port {port}")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def _get(url: str, **kwargs) -> httpx.Response:
    return httpx.get(url, timeout=HUNG, **kwargs)


def _assert_clean(response: httpx.Response) -> None:
    assert response.headers["Content-Type"].startswith("application/json")
    assert "Traceback" not in response.text


def _running_run() -> GenerationRun:
    """A run held by a worker on host "gpu-box" (claimed as a worker claims it)."""
    prompt_set = prompt_set_import(name="ops", data=b"question\nhello\n", filename="ops.csv")
    model = language_model_register(name="never-loaded", name_or_path="tiny-0")
    run = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    assert lifecycle.claim(GenerationRun, run.pk, "gpu-box:4242")
    return GenerationRun.objects.get(pk=run.pk)


@pytest.mark.django_db
def test_anonymous_callers_get_200_with_only_database_and_broker(client):
    response = client.get(URL)

    assert response.status_code == 200
    assert response.json() == {"database": HEALTH_OK, "broker": HEALTH_OK}
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_annotators_see_no_workers_or_runs(annotator):
    _running_run()

    response = logged_in(annotator).get(URL)

    assert response.status_code == 200
    assert response.json() == {"database": HEALTH_OK, "broker": HEALTH_OK}
    assert "gpu-box" not in response.content.decode()


@pytest.mark.quick  # `make test-quick` runs this one of its family
@pytest.mark.django_db(transaction=True)
def test_staff_see_the_workers_per_queue_and_the_runs_with_their_last_heartbeat(
    shared_worker, staff_user
):
    run = _running_run()
    shared_worker(queues="gpu")
    wait_for(lambda: census().consumers("gpu"), timeout=HUNG, message="the worker to answer")

    response = logged_in(staff_user).get(URL)

    assert response.status_code == 200
    body = response.json()
    assert (body["database"], body["broker"], body["workers_known"]) == (HEALTH_OK, HEALTH_OK, True)
    [worker] = body["workers"]["gpu"]
    assert worker["name"].startswith("test-") and worker["last_heartbeat"]
    assert body["workers"]["default"] == []  # listed, with nobody consuming it
    [held] = body["runs"]
    assert (held["kind"], held["id"], held["queue"], held["worker"]) == (
        "generation run",
        run.pk,
        "gpu",
        "gpu-box:4242",
    )
    assert held["heartbeat_at"]


@pytest.mark.django_db
def test_staff_see_an_empty_queue_when_no_worker_runs(staff_user):
    response = logged_in(staff_user).get(URL)

    body = response.json()
    assert body["workers_known"] is True
    assert body["workers"]["gpu"] == []


def test_with_the_database_down_it_answers_503_naming_the_database(tmp_path):
    down = _with_netloc(os.environ["DATABASE_URL"], CLOSED)
    with served(tmp_path, DATABASE_URL=down) as base:
        plain = _get(base + URL)
        # A session cookie or token that cannot be checked makes the caller anonymous.
        with_credentials = _get(
            base + URL,
            headers={"Authorization": "Bearer not-a-token", "Cookie": "sessionid=abc"},
        )

    for response in (plain, with_credentials):
        assert response.status_code == 503
        assert response.json() == {"database": HEALTH_DOWN, "broker": HEALTH_OK}
        assert response.headers["Retry-After"]
        _assert_clean(response)


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_down_it_answers_503_naming_the_broker(tmp_path, staff_user):
    run = _running_run()
    cookie = logged_in(staff_user).cookies["sessionid"].value
    broker_down = _with_netloc(os.environ["CELERY_BROKER_URL"], CLOSED)
    with served(
        tmp_path,
        DATABASE_URL=this_test_database_url(),
        CELERY_BROKER_URL=broker_down,
        # Only the broker is down: sessions are read from the cache, which stays up.
        CACHE_URL=settings.CACHES["default"]["LOCATION"],
    ) as base:
        anonymous = _get(base + URL)
        staff = _get(base + URL, headers={"Cookie": f"sessionid={cookie}"})

    assert anonymous.status_code == 503
    assert anonymous.json() == {"database": HEALTH_OK, "broker": HEALTH_DOWN}
    _assert_clean(anonymous)
    # Staff still see the runs (from the database); which workers exist cannot be known.
    assert staff.status_code == 503
    body = staff.json()
    assert (body["broker"], body["workers_known"]) == (HEALTH_DOWN, False)
    assert [held["id"] for held in body["runs"]] == [run.pk]


def test_a_broker_that_accepts_and_never_answers_is_a_503_not_a_hang(tmp_path):
    with closing(socket.socket()) as silent:
        # Accepts connections (the kernel's backlog) and never says a word.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        netloc = f"127.0.0.1:{silent.getsockname()[1]}"
        with served(
            tmp_path,
            DATABASE_URL=_with_netloc(os.environ["DATABASE_URL"], CLOSED),
            CELERY_BROKER_URL=_with_netloc(os.environ["CELERY_BROKER_URL"], netloc),
        ) as base:
            response = _get(base + URL)

    assert response.status_code == 503
    assert response.json() == {"database": HEALTH_DOWN, "broker": HEALTH_DOWN}
