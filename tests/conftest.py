"""Shared fixtures: named users, the tiny model (built once per session), service markers."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
EXTERNAL_DATA = Path(os.environ.get("EXTERNAL_DATA", REPO.parent / "shared" / "external-data"))
FIXTURES = REPO / "fixtures"


def _is_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


def _has_broker() -> bool:
    return bool(os.environ.get("CELERY_BROKER_URL"))


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    # GPU tests are deselected, not skipped, on a machine with no GPU (.ci/run fails on skips).
    if not _has_gpu():
        kept = [item for item in items if "gpu" not in item.keywords]
        deselected = [item for item in items if "gpu" in item.keywords]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = kept
    for item in items:
        if "postgres" in item.keywords and not _is_postgres():
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL"))
        if "broker" in item.keywords and not (_has_broker() and _is_postgres()):
            item.add_marker(
                pytest.mark.skip(
                    reason="needs a real broker and PostgreSQL: set CELERY_BROKER_URL, DATABASE_URL"
                )
            )
        if "browser" in item.keywords and not shutil.which("chromium"):
            item.add_marker(
                pytest.mark.skip(reason="needs Debian's chromium (apt-get install chromium)")
            )


@pytest.fixture(autouse=True)
def _prompt_template_presets(request):
    """Every test with the database sees the shipped prompt-template presets. Migration 0006
    makes them, but a transactional test (one with a real worker) empties every table when it
    ends, and models cannot be registered without their template."""
    wants_db = request.node.get_closest_marker("django_db") is not None or bool(
        {"db", "transactional_db"} & set(request.fixturenames)
    )
    if not wants_db:
        return
    request.getfixturevalue("_django_db_helper")  # the database access the test itself asked for
    from generation.templates import template_presets_install

    template_presets_install()


@pytest.fixture
def one_torch_thread():
    """The tiny model gains nothing from threads; on a small shared machine they only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def external_data() -> Path:
    if not EXTERNAL_DATA.is_dir():
        pytest.skip(f"external data not found at {EXTERNAL_DATA} (../shared/external-data)")
    return EXTERNAL_DATA


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing():
    """Production hashing costs ~0.3 s a password; tests log in thousands of times."""
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _model_storage(tmp_path_factory):
    """Every test session gets its own MODEL_STORAGE root, shared with worker subprocesses."""
    from django.conf import settings

    root = tmp_path_factory.mktemp("model_storage")
    settings.MODEL_STORAGE = root
    os.environ["MODEL_STORAGE"] = str(root)
    return root


@pytest.fixture(scope="session")
def model_storage(_model_storage) -> Path:
    return _model_storage


@pytest.fixture(scope="session")
def tiny_model_dir(_model_storage) -> Path:
    """The project's tiny GPT-NeoX + BPE tokenizer, built once per test session (seed 0)."""
    from generation.engine.tiny import build_tiny_model

    out = _model_storage / "tiny-0"
    build_tiny_model(out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir_seed1(_model_storage) -> Path:
    from generation.engine.tiny import build_tiny_model

    out = _model_storage / "tiny-1"
    build_tiny_model(out, seed=1)
    return out


@pytest.fixture
def prompt_set(db):
    """fixtures/prompts_ja.jsonl (100 questions) as the prompt set "fixture"."""
    from generation.registry import prompt_set_import

    return prompt_set_import(
        name="fixture", data=(FIXTURES / "prompts_ja.jsonl").read_bytes(), filename="p.jsonl"
    )


@pytest.fixture
def fixture_dataset(db):
    """fixtures/instructions_ja.jsonl as the instruction data set "instructions-ja"."""
    from generation.training.data import instruction_dataset_import

    return instruction_dataset_import(
        name="instructions-ja",
        data=(FIXTURES / "instructions_ja.jsonl").read_bytes(),
        filename="instructions_ja.jsonl",
    )


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-pass")


@pytest.fixture
def staff_user(django_user_model):
    """Staff with every permission of the two apps, as an admin grants an operator."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("staff", password="staff-pass", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label__in=["generation", "annotation"])
    )
    return user


@pytest.fixture
def bare_staff(django_user_model):
    """Staff whom the admin lets view or edit nothing."""
    return django_user_model.objects.create_user("bare", password="bare-pass", is_staff=True)


@pytest.fixture
def annotator(django_user_model):
    return _annotator(django_user_model, "annotator")


@pytest.fixture
def other_annotator(django_user_model):
    return _annotator(django_user_model, "other_annotator")


def _annotator(django_user_model, username: str):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(username, password=f"{username}-pass")
    group, _ = Group.objects.get_or_create(name="annotators")
    user.groups.add(group)
    return user


class CeleryWorker:
    """A real `celery worker` subprocess (own process group, so kill -9 takes all of it)."""

    def __init__(self, env: dict, log_path: Path, queues: str, beat_dir: Path):
        import subprocess
        import sys

        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "evalsite",
            "worker",
            "-Q",
            queues,
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--loglevel",
            "INFO",
            "-B",
            "-s",
            str(beat_dir / "celerybeat-schedule"),
            "-n",
            f"test-{os.getpid()}-{id(self)}@%h",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except (ProcessLookupError, Exception):
                self.kill()
        self._log.close()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def this_test_database_url() -> str:
    """The real connection URL (user, password, host, port, options) with the test database in
    it: a worker or server started by a test must reach the database the test writes to."""
    from django.db import connection

    return urlunsplit(
        urlsplit(os.environ["DATABASE_URL"])._replace(
            path="/" + quote(connection.settings_dict["NAME"])
        )
    )


@pytest.fixture
def celery_worker_factory(tmp_path, _model_storage):
    """Start real workers on the test database and the real broker; all are stopped after."""

    from evalsite.celery import app

    url = this_test_database_url()
    app.control.purge()
    workers: list[CeleryWorker] = []

    def start(queues: str = "gpu,default", **extra_env) -> CeleryWorker:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "MODEL_STORAGE": str(_model_storage),
            "RUN_HEARTBEAT_INTERVAL": "0.5",
            "RUN_HEARTBEAT_TIMEOUT": "6",
            "RUN_STALE_CHECK_SECONDS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            # torch's default of one thread per core is far slower on a small shared machine.
            "OMP_NUM_THREADS": "1",
            **{k: str(v) for k, v in extra_env.items()},
        }
        worker = CeleryWorker(env, tmp_path / f"worker-{len(workers)}.log", queues, tmp_path)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
    app.control.purge()


def logged_in(user):
    """A test client signed in as ``user`` (a session, as the browser has)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def wait_for(predicate, *, timeout: float, interval: float = 0.2, message: str = "") -> None:
    """Poll until predicate() is true. The timeout only guards against a hung test."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {message}")
        time.sleep(interval)
