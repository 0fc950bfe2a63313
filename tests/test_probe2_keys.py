"""Security issue 24, findings 1, 4 and 7: what a worker sends to a served model, and where.

A real Celery worker runs with canaries in its environment: OPENAI_API_KEY, OPENAI_ORG_ID,
OPENAI_PROJECT_ID, OPENAI_CUSTOM_HEADERS, and OPENAI_BASE_URL / HTTP(S)_PROXY pointing at a
second listener. Staff who are not superusers register a served model through the API, pointed
at a listener on 127.0.0.1 that speaks the chat-completions API and records every header, and
start each kind of run that talks to a server (generation, pairwise judging, grading, evolution,
benchmark). The listener must see ``Bearer none`` and never a canary; the second listener must
see nothing. A redirect is a failure, never followed; a server's error body (a secret and a
traceback) never reaches the run's error or the staff API; a host outside
ENDPOINT_ALLOWED_HOSTS is refused when saved and by the worker.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evalsite.errors import ServiceError
from generation.registry import language_model_register
from tests.conftest import REPO, CeleryWorker, logged_in, this_test_database_url, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Only guards against a hung worker; nothing here asserts on time.
HUNG = 600
CANARY = "sk-canary-worker-env-7f3a9c"
CANARY_ORG = "org-canary-7f3a9c"
NAMED_KEY_ENV = "PROBE2_NAMED_KEY"
NAMED_KEY = "sk-probe2-named-key-of-the-row"
SECRET = "db-password-hunter2-5e1d"
# What the worker allows: the listeners on 127.0.0.1, but not 127.0.0.2 (the web process, with
# the default setting, allows both: as if the setting had changed after the model was saved).
WORKER_ALLOWED = "localhost,127.0.0.1/32"
PERMISSIONS = [
    "generation.add_languagemodel",
    "generation.view_languagemodel",
    "generation.run_languagemodel",
    "generation.add_generationrun",
    "generation.view_generationrun",
    "judging.add_judgerun",
    "judging.view_judgerun",
    "evolution.add_evolutionrun",
    "evolution.view_evolutionrun",
    "benchmarks.add_benchmarkrun",
    "benchmarks.view_benchmarkrun",
]


@dataclass
class Seen:
    path: str
    headers: dict
    body: bytes


@dataclass
class Listener:
    """A chat-completions server on ``host`` that records what it receives. ``mode``: "ok",
    "redirect" (307 to ``redirect_to``), "error" (400 with a secret and a traceback) or
    "error_text" (the same as plain text, not JSON)."""

    host: str = "127.0.0.1"
    mode: str = "ok"
    redirect_to: str = ""
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._answer(b"")

            def do_POST(self):
                self._answer(self.rfile.read(int(self.headers.get("content-length") or 0)))

            def _answer(self, body: bytes):
                with listener.lock:
                    listener.seen.append(
                        Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                if listener.mode == "redirect":
                    self.send_response(307)
                    self.send_header("location", listener.redirect_to + self.path)
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif listener.mode == "error":
                    self._send(400, {"error": {"message": ERROR_MESSAGE}, "trace": TRACEBACK})
                elif listener.mode == "error_text":
                    data = f"{ERROR_MESSAGE}\n{TRACEBACK}".encode()
                    self.send_response(400)
                    self.send_header("content-type", "text/plain; charset=utf-8")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self._send(200, _completion(body))

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{self.host}:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


TRACEBACK = (
    'Traceback (most recent call last):\n  File "/srv/llm/app.py", line 88, in chat\n'
    f"    connect(password={SECRET!r})\nRuntimeError: {SECRET}"
)
ERROR_MESSAGE = f"the model is overloaded\n{TRACEBACK}"


def _completion(body: bytes) -> dict:
    request = json.loads(body or b"{}")
    text = "[[A]] 評価: 5 これは回答です。"
    return {
        "id": "probe2",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "probe2"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
    }


# --- one worker for the module, canaries in its environment ------------------------------------


@pytest.fixture(scope="module")
def canary_listener():
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, canary_listener, tmp_path_factory, _model_storage):
    from evalsite.celery import app

    with django_db_blocker.unblock():
        url = this_test_database_url()
    folder = tmp_path_factory.mktemp("probe2-worker")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "MODEL_STORAGE": str(_model_storage),
        "RUN_HEARTBEAT_INTERVAL": "0.5",
        "RUN_HEARTBEAT_TIMEOUT": "6",
        "RUN_STALE_CHECK_SECONDS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "ENDPOINT_ALLOWED_HOSTS": WORKER_ALLOWED,
        NAMED_KEY_ENV: NAMED_KEY,
        # What client libraries read by themselves: none of it may reach a listener.
        "OPENAI_API_KEY": CANARY,
        "OPENAI_ADMIN_KEY": CANARY,
        "OPENAI_ORG_ID": CANARY_ORG,
        "OPENAI_PROJECT_ID": CANARY_ORG,
        "OPENAI_CUSTOM_HEADERS": f"X-Canary: {CANARY}\nAuthorization: Bearer {CANARY}",
        "OPENAI_BASE_URL": canary_listener.url,
        "HTTP_PROXY": canary_listener.url.removesuffix("/v1"),
        "HTTPS_PROXY": canary_listener.url.removesuffix("/v1"),
        "NO_PROXY": "",
    }
    app.control.purge()
    started = CeleryWorker(env, folder / "worker.log", "default,gpu", folder)
    yield started
    started.stop(warm=False)  # the module's tests are over: no warm shutdown to wait for
    app.control.purge()


@pytest.fixture
def listener():
    started = Listener()
    yield started
    started.close()


@pytest.fixture
def staff(django_user_model):
    """Staff, not a superuser, with exactly the rights to register models and start runs."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("probe2", password="probe2-pass", is_staff=True)
    for name in PERMISSIONS:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return logged_in(user)


def _register(client, url: str, name: str = "probe2-served") -> int:
    response = client.post(
        "/api/models/",
        {"name": name, "prompt_format": "plain", "endpoint_url": url, "endpoint_model": "m"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


# --- how each kind of run is started through the API -------------------------------------------


def _generation(client, model_id: int) -> str:
    from generation.importers import ParsedQuestion
    from generation.registry import prompt_set_create

    prompt_set = prompt_set_create(
        name="probe2", questions=[ParsedQuestion(line=1, text="日本の首都はどこですか。")]
    )
    response = client.post(
        "/api/runs/",
        {"model": model_id, "prompt_set": prompt_set.pk, "params": {"max_new_tokens": 8}},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return f"/api/runs/{response.json()['id']}/"


def _judging(client, model_id: int, *, grading: bool = False) -> str:
    from judging.prompts import judge_presets_install
    from tests.judging.conftest import study_of

    judge_presets_install()
    study = study_of(models=("short", "long"))
    response = client.post(
        "/api/judge-runs/",
        {
            "judge": model_id,
            "study": study.pk,
            "grading": grading,
            "params": {"max_new_tokens": 8},
            "max_attempts": 1,
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return f"/api/judge-runs/{response.json()['id']}/"


def _grading(client, model_id: int) -> str:
    return _judging(client, model_id, grading=True)


def _evolution(client, model_id: int) -> str:
    from tests.evolution.conftest import SOURCE_ROWS
    from tests.generation.conftest import instruction_dataset

    source = instruction_dataset("probe2-source", SOURCE_ROWS[:2])
    response = client.post(
        "/api/evolution-runs/",
        {
            "source": source.pk,
            "model": model_id,
            "judge": model_id,
            "params": {"max_new_tokens": 16},
            "answer_params": {"max_new_tokens": 16},
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return f"/api/evolution-runs/{response.json()['id']}/"


def _benchmark(client, model_id: int) -> str:
    response = client.post(
        "/api/benchmark-runs/",
        {
            "model": model_id,
            "tasks": ["ja_fixture_gen"],
            "scoring": "generative",
            "limit": 2,
            "params": {"max_gen_toks": 8},
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return f"/api/benchmark-runs/{response.json()['id']}/"


KINDS = {
    "generation": _generation,
    "judging": _judging,
    "grading": _grading,
    "evolution": _evolution,
    "benchmark": _benchmark,
}
ACTIVE = {"queued", "running"}


def _finished(client, run_url: str, worker) -> dict:
    def done() -> bool:
        return client.get(run_url).json()["status"] not in ACTIVE

    wait_for(done, timeout=HUNG, message=f"{run_url}; log:\n{worker.log_tail()}")
    return client.get(run_url).json()


def _leaks(seen: list[Seen]) -> list[str]:
    found = []
    for request in seen:
        text = json.dumps(request.headers) + request.body.decode(errors="replace")
        found += [c for c in (CANARY, CANARY_ORG) if c in text]
    return found


# --- the key -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_no_run_sends_the_workers_environment_to_a_server_staff_chose(
    kind, worker, staff, listener, canary_listener
):
    model_id = _register(staff, listener.url)
    run = _finished(staff, KINDS[kind](staff, model_id), worker)
    # Nothing went where the environment points (OPENAI_BASE_URL, proxies).
    assert [(s.path, s.headers.get("authorization")) for s in canary_listener.requests()] == []
    seen = listener.requests()
    assert seen, f"{kind}: the listener was never asked ({run}); log:\n{worker.log_tail()}"
    assert {s.headers.get("authorization") for s in seen} == {"Bearer none"}
    assert not _leaks(seen)
    assert not any(
        k in ("openai-organization", "openai-project", "x-canary") for s in seen for k in s.headers
    )
    assert run["status"] == "succeeded", run


def test_a_model_that_names_its_key_sends_that_key_and_no_other(
    worker, admin_user, staff, listener, canary_listener
):
    admin = logged_in(admin_user)
    response = admin.post(
        "/api/models/",
        {
            "name": "probe2-keyed",
            "prompt_format": "plain",
            "endpoint_url": listener.url,
            "endpoint_model": "m",
            "api_key_env": NAMED_KEY_ENV,
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    run = _finished(staff, _benchmark(staff, response.json()["id"]), worker)
    assert run["status"] == "succeeded", run
    seen = listener.requests()
    assert seen and {s.headers.get("authorization") for s in seen} == {f"Bearer {NAMED_KEY}"}
    assert not _leaks(seen) and canary_listener.requests() == []


# --- redirects and error bodies ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["generation", "benchmark"])
def test_a_redirect_is_a_short_failure_and_the_second_server_hears_nothing(
    kind, worker, staff, listener, canary_listener
):
    second = Listener()
    try:
        listener.mode, listener.redirect_to = "redirect", second.url.removesuffix("/v1")
        run = _finished(staff, KINDS[kind](staff, _register(staff, listener.url)), worker)
        assert run["status"] == "failed"
        assert "HTTP 307" in run["error"] and "redirects are not followed" in run["error"]
        assert "Traceback" not in run["error"]
        assert listener.requests() and second.requests() == []
        assert canary_listener.requests() == []
    finally:
        second.close()


@pytest.mark.parametrize("mode", ["error", "error_text"])
@pytest.mark.parametrize("kind", ["generation", "judging", "grading", "evolution", "benchmark"])
def test_a_servers_error_body_reaches_staff_as_its_status_and_first_line_only(
    kind, mode, worker, staff, listener
):
    # Every kind of run on a served model, a JSON error body and a plain-text one (issue 27).
    listener.mode = mode
    run_url = KINDS[kind](staff, _register(staff, listener.url))
    run = _finished(staff, run_url, worker)
    assert run["status"] == "failed"
    assert "HTTP 400: the model is overloaded" in run["error"]
    assert len(run["error"]) < 600
    shown = staff.get(run_url).content.decode()
    for hidden in (SECRET, "Traceback", "/srv/llm", str(REPO)):
        assert hidden not in shown
    # The traceback is the worker's to log, not the API's to show.
    assert "Traceback" in worker.log_tail(200_000)


# --- where -------------------------------------------------------------------------------------


def test_a_host_outside_the_allowed_setting_is_refused_when_saved(staff, settings):
    for url in (
        "http://10.1.2.3:8000/v1",
        "http://169.254.169.254/latest",
        "http://no-such.invalid/v1",
    ):
        response = staff.post(
            "/api/models/",
            {
                "name": "outside",
                "prompt_format": "plain",
                "endpoint_url": url,
                "endpoint_model": "m",
            },
            content_type="application/json",
        )
        assert response.status_code == 400, response.content
        assert "ENDPOINT_ALLOWED_HOSTS" in response.content.decode()
    # A name not listed is resolved: localhost's address is outside this setting.
    settings.ENDPOINT_ALLOWED_HOSTS = ["127.0.0.2/32"]
    with pytest.raises(ServiceError, match=r"'localhost' is not allowed \(it resolves to 127\."):
        language_model_register(
            name="by-name", endpoint_url="http://localhost:8000/v1", endpoint_model="m"
        )
    # Listed by name, or inside a listed network: saved.
    settings.ENDPOINT_ALLOWED_HOSTS = ["serving.example", "10.0.0.0/8"]
    language_model_register(
        name="named", endpoint_url="http://serving.example/v1", endpoint_model="m"
    )
    language_model_register(
        name="inside", endpoint_url="http://10.1.2.3:8000/v1", endpoint_model="m"
    )


@pytest.mark.parametrize("kind", ["generation", "benchmark"])
def test_the_worker_refuses_a_host_the_setting_no_longer_allows(kind, worker, staff):
    # Saved while the setting allowed 127.0.0.0/8; the worker's now allows 127.0.0.1 only.
    elsewhere = Listener(host="127.0.0.2")
    try:
        run = _finished(staff, KINDS[kind](staff, _register(staff, elsewhere.url)), worker)
        assert run["status"] == "failed"
        assert (
            "'127.0.0.2' is not allowed" in run["error"]
            and "ENDPOINT_ALLOWED_HOSTS" in run["error"]
        )
        assert elsewhere.requests() == []
    finally:
        elsewhere.close()


def test_benchmark_task_listings_show_no_server_paths(staff):
    response = staff.get("/api/benchmark-tasks/")
    assert response.status_code == 200
    rows = response.json()
    assert {"ja_fixture_gen", "ja_fixture_mc"} <= {r["name"] for r in rows}
    for row in rows:
        assert not Path(row["path"]).is_absolute() and str(REPO) not in row["path"], row
    paths = {r["name"]: r["path"] for r in rows}
    assert paths["ja_fixture_gen"] == "fixtures/benchmarks/ja_fixture_gen.yaml"
