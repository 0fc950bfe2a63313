"""Shared fixtures: named users, the tiny model (from the per-machine cache), real Celery
workers, service markers, and the per-process services of a parallel (pytest-xdist) run."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
EXTERNAL_DATA = Path(os.environ.get("EXTERNAL_DATA", REPO.parent / "shared" / "external-data"))
FIXTURES = REPO / "fixtures"

# Redis database numbers each xdist worker takes: its broker, and the cache in the next number.
REDIS_DBS_PER_WORKER = 2
TOO_MANY_WORKERS = (
    "xdist worker {worker} would need Redis database {db} (there are 16, 0-15): run fewer "
    "workers (-n) or start from a lower CELERY_BROKER_URL database number"
)


def _xdist_index() -> int | None:
    """This process's number in a parallel run (gw0 -> 0), None when not under xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") else None


def _with_redis_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def _redis_db(url: str) -> int:
    return int(urlsplit(url).path.strip("/") or 0)


def _own_redis_per_xdist_worker() -> None:
    """Under xdist, each worker process gets its own Redis databases, so that one process's
    purge or real Celery worker never touches another's queued tasks (kombu also scopes its
    broadcasts by database number) and one's cache.clear() never drops another's throttles.

    gwN takes broker database base + 2N and cache database base + 2N + 1 (base: the number in
    CELERY_BROKER_URL). pytest-django has read the settings before any conftest is imported,
    so the settings derived from those variables are set here as well; worker subprocesses
    read the rewritten environment.
    """
    index = _xdist_index()
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not index or not broker.startswith(("redis://", "rediss://")):
        return  # gw0 and a serial run keep the numbers they were given
    base = _redis_db(broker)
    db = base + REDIS_DBS_PER_WORKER * index
    if db + 1 > 15:
        raise pytest.UsageError(TOO_MANY_WORKERS.format(worker=index, db=db + 1))
    broker = _with_redis_db(broker, db)
    cache_url = os.environ.get("CACHE_URL")
    cache = (
        _with_redis_db(cache_url, _redis_db(cache_url) + REDIS_DBS_PER_WORKER * index)
        if cache_url
        else _with_redis_db(broker, db + 1)
    )
    os.environ["CELERY_BROKER_URL"] = broker
    os.environ["CACHE_URL"] = cache

    from django.conf import settings

    settings.CELERY_BROKER_URL = broker
    settings.CACHES["default"]["LOCATION"] = cache
    from evalsite.celery import app

    app.conf.broker_url = broker


_own_redis_per_xdist_worker()


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


# --- one migrated template, cloned by every xdist process -------------------------------------

# Clones retried while PostgreSQL says the template is in use (autovacuum may visit a new one).
TEMPLATE_IN_USE_TRIES = 60


def _template_cursor():
    from django.db import connection

    return connection.creation._nodb_cursor()


def _template_run(template: str) -> str | None:
    """The test run that built ``template`` (its database comment), None if there is none."""
    with _template_cursor() as cursor:
        cursor.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [template],
        )
        row = cursor.fetchone()
    return None if row is None else (row[0] or "")


def _template_build(template: str, run: str) -> None:
    """Migrate a new ``template`` database, as pytest-django migrates each test database."""
    from django.db import connection

    original = connection.settings_dict["NAME"]
    connection.settings_dict["TEST"]["NAME"] = template
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    connection.close()
    connection.settings_dict["NAME"] = original
    if not run.isalnum():
        raise ValueError(f"unexpected test run id {run!r}")
    with _template_cursor() as cursor:
        # A utility statement takes no parameters; the run id is hexadecimal.
        cursor.execute(f"COMMENT ON DATABASE \"{template}\" IS '{run}'")


def _template_clone(template: str, clone: str) -> None:
    import time

    from django.db import OperationalError, connection

    connection.close()
    connection.close_pool()
    with _template_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{clone}"')
        for attempt in range(TEMPLATE_IN_USE_TRIES):
            try:
                cursor.execute(f'CREATE DATABASE "{clone}" TEMPLATE "{template}"')
                return
            except OperationalError:  # "source database ... is being accessed by other users"
                if attempt == TEMPLATE_IN_USE_TRIES - 1:
                    raise
                time.sleep(0.5)


if _xdist_index() is not None and _is_postgres():

    @pytest.fixture(scope="session")
    def django_db_setup(
        request,
        django_test_environment,
        django_db_blocker,
        django_db_modify_db_settings,
        tmp_path_factory,
    ):
        """Under xdist on PostgreSQL: the migrations run once per test run, into a template
        database, and each process's test database is a copy of it (CREATE DATABASE ...
        TEMPLATE), where pytest-django would migrate one database per process; the same tables,
        triggers and migrated rows, without two of the three runs of every migration. The
        process that built the template drops it when its session ends (a process that starts
        later builds it again)."""
        from django.conf import settings
        from django.db import connection

        from generation.engine.tiny import file_lock

        clone = connection.creation._get_test_db_name()  # test_<name>_gwN
        template = clone.rsplit("_gw", 1)[0] + "_template"
        run = request.config.workerinput["testrunuid"]
        lock = Path(tmp_path_factory.getbasetemp()).parent / f"{template}.lock"
        original = connection.settings_dict["NAME"]
        built = False
        with django_db_blocker.unblock(), file_lock(lock):
            if _template_run(template) != run:
                _template_build(template, run)
                built = True
            _template_clone(template, clone)
        settings.DATABASES["default"]["NAME"] = clone
        connection.settings_dict["NAME"] = clone
        connection.settings_dict["TEST"]["NAME"] = clone
        connection.close()

        yield

        with django_db_blocker.unblock():
            connection.creation.destroy_test_db(original, verbosity=0)
            if built:
                with file_lock(lock), _template_cursor() as cursor:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{template}"')


def pytest_collection_modifyitems(config, items):
    for item in items:
        # A module of generated cases names those that represent it in `make test-quick`.
        quick_cases = getattr(getattr(item, "module", None), "QUICK_CASES", ())
        if any(case in item.name for case in quick_cases):
            item.add_marker(pytest.mark.quick)
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
    """Every test with the database sees what the migrations ship: the prompt-template presets
    (generation 0006), the judge prompts (judging 0002) and the rewrite prompts (evolution 0002).
    A transactional test (one with a real worker) empties every table when it ends, so without
    this a test would pass or fail by which tests ran before it in its process. One query each
    when nothing is missing."""
    wants_db = request.node.get_closest_marker("django_db") is not None or bool(
        {"db", "transactional_db"} & set(request.fixturenames)
    )
    if not wants_db:
        return
    request.getfixturevalue("_django_db_helper")  # the database access the test itself asked for
    from evolution.prompts import evolution_presets_install
    from generation.templates import template_presets_install
    from judging.prompts.versions import judge_presets_install

    template_presets_install()
    judge_presets_install()
    evolution_presets_install()


@pytest.fixture(scope="session", autouse=True)
def _flush_by_delete():
    """On PostgreSQL, the flush that empties every table after a transactional test (and the
    schema-fuzzing module) deletes the rows instead of truncating the tables: TRUNCATE makes
    new files for each of the ~50 tables and their indexes (0.75-1.4 s a flush on a busy
    2-core machine, against 35 ms for the deletes). Triggers and foreign-key checks are off
    for the deletes (session_replication_role, as TRUNCATE fires no row trigger either), so the
    tables end as TRUNCATE leaves them: empty, sequences untouched. That needs a superuser (as
    CI and these machines have); for another user Django's TRUNCATE stays."""
    if not _is_postgres():
        yield
        return
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush
    superuser: dict[str, bool] = {}

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        alias = self.connection.alias
        if alias not in superuser:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                superuser[alias] = cursor.fetchone()[0]
        if reset_sequences or allow_cascade or not tables or not superuser[alias]:
            return truncate(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        # Executed in one transaction (execute_sql_flush): SET LOCAL lasts for the deletes, and
        # is undone after them should that transaction be a test's own.
        deletes = [f"DELETE FROM {style.SQL_FIELD(self.quote_name(t))};" for t in tables]
        return [
            "SET LOCAL session_replication_role = replica;",
            *deletes,
            "SET LOCAL session_replication_role = DEFAULT;",
        ]

    DatabaseOperations.sql_flush = sql_flush
    yield
    DatabaseOperations.sql_flush = truncate


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
def _runs_unsplit_unless_asked():
    """A run made without ``shards`` is one piece in tests (RUN_SHARDS_DEFAULT=1): the default
    of one shard per worker asks the broker at every run creation (up to the inspect timeout),
    and a census cached by an earlier test would split a later test's run. The shard tests ask
    for shards, or set 0 to test the default."""
    from django.conf import settings

    settings.RUN_SHARDS_DEFAULT = 1


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
    """The project's tiny GPT-NeoX + BPE tokenizer (seed 0) in this session's MODEL_STORAGE,
    copied from the per-machine cache the demo shares (built into it once per machine)."""
    from generation.engine.tiny import tiny_model

    return tiny_model(_model_storage / "tiny-0", seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir_seed1(_model_storage) -> Path:
    from generation.engine.tiny import tiny_model

    return tiny_model(_model_storage / "tiny-1", seed=1)


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

    def __init__(self, env: dict, log_path: Path, queues: str, beat_dir: Path | None):
        """``beat_dir``: where the embedded beat (-B) keeps its schedule; None: no beat."""
        import subprocess
        import sys

        self.name = f"test-{os.getpid()}-{id(self)}@{socket.gethostname()}"
        self.env = env
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
            "-n",
            self.name,
            # Mingle asks the other workers for their revoked tasks and waits a full second
            # for replies at every start; gossip follows their events. The app uses neither
            # (the census asks the workers directly), and a test starts a worker dozens of times.
            "--without-mingle",
            "--without-gossip",
        ]
        if beat_dir is not None:
            command += ["-B", "-s", str(beat_dir / "celerybeat-schedule")]
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

    def stop(self, *, warm: bool = True) -> None:
        """``warm``: SIGTERM, as an operator stops a worker (it finishes its task, then stops
        its pool and beat: about two seconds idle); otherwise kill -9 at once."""
        import signal

        if not warm:
            self.kill()
        elif self.process.poll() is None:
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


def _worker_env(model_storage: Path, **extra_env) -> dict[str, str]:
    """A test worker's environment: the test database, this session's MODEL_STORAGE, quick
    heartbeats and stale checks, one thread per process."""
    return {
        **os.environ,
        "DATABASE_URL": this_test_database_url(),
        "MODEL_STORAGE": str(model_storage),
        "RUN_HEARTBEAT_INTERVAL": "0.5",
        "RUN_HEARTBEAT_TIMEOUT": "6",
        "RUN_STALE_CHECK_SECONDS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        # torch's default of one thread per core is far slower on a small shared machine.
        "OMP_NUM_THREADS": "1",
        # Runs a worker makes (a sweep's) are one piece, as the test process's are.
        "RUN_SHARDS_DEFAULT": "1",
        # The database is emptied between tests, and content types come back with new ids;
        # a worker that outlives a test (the shared one) must not keep the old ones.
        "CELERY_FRESH_CONTENT_TYPES": "1",
        **{k: str(v) for k, v in extra_env.items()},
    }


@pytest.fixture
def celery_worker_factory(tmp_path, _model_storage):
    """Start real workers on the test database and the real broker; all are stopped after.

    For tests that kill or stop their worker, or start it with its own environment; the
    others take ``shared_worker``."""

    from evalsite.celery import app

    app.control.purge()
    workers: list[CeleryWorker] = []

    def start(queues: str = "gpu,default", **extra_env) -> CeleryWorker:
        env = _worker_env(_model_storage, **extra_env)
        # Each worker's embedded beat keeps its own schedule file: two at once share none.
        beat_dir = tmp_path / f"beat-{len(workers)}"
        beat_dir.mkdir(exist_ok=True)
        worker = CeleryWorker(env, tmp_path / f"worker-{len(workers)}.log", queues, beat_dir)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        # The test is over: nothing it asserts on waits for a warm shutdown.
        worker.stop(warm=False)
    app.control.purge()


# How long a lease waits for the shared worker to answer or to finish its task; a worker that
# does not is replaced (the waits only guard against a hung worker).
SHARED_WORKER_WAIT = 120


class SharedWorker:
    """One real worker per test session (per xdist process) lent to one test at a time.

    Between tests it consumes no queue at all, so the tests without a worker see none: nothing
    they queue is taken, and no census counts it for any queue. A lease adds the queues the
    test asks for (Celery's add_consumer, acknowledged by the worker), and its end cancels
    them, waits for the task in hand to finish and purges what is left queued (the
    ``shared_worker`` fixture purges them when its test starts). It runs without
    the embedded beat: a beat's periodic tasks would pile up in the queues between tests.
    """

    def __init__(self, model_storage: Path, log_dir: Path):
        self.model_storage = model_storage
        self.log_dir = log_dir
        self.worker: CeleryWorker | None = None
        self.queues: list[str] = []
        self.env = _worker_env(model_storage)

    def ready(self) -> None:
        """Started (once), and the queues purged: called as a test that may lease it starts."""
        from evalsite.celery import app

        if self.worker is None or self.worker.process.poll() is not None:
            self._start()
        # Also drops the requeue a starting worker sends itself (worker_ready).
        app.control.purge()

    def lease(self, queues: str) -> CeleryWorker:
        if self.worker is None or self.worker.process.poll() is not None:
            self._start()
        self.queues = [q for q in queues.split(",") if q]
        for queue in self.queues:
            self._control("add_consumer", queue)
        return self.worker

    def release(self) -> None:
        from evalsite.celery import app

        if self.worker is None or self.worker.process.poll() is not None:
            self.worker = None
            return
        try:
            for queue in self.queues:
                self._control("cancel_consumer", queue)
            wait_for(self._idle, timeout=SHARED_WORKER_WAIT, interval=0.2, message="idle")
        except AssertionError:  # hung or busy past the wait: the next lease starts afresh
            self.close()
        self.queues = []
        app.control.purge()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def _start(self) -> None:
        from evalsite.celery import app

        self.close()
        # Started on a queue of its own, dropped as soon as it answers: idle, it consumes none.
        private = f"idle-{os.getpid()}-{id(self)}"
        self.worker = CeleryWorker(self.env, self.log_dir / "shared-worker.log", private, None)
        wait_for(
            lambda: self._answers(app),
            timeout=SHARED_WORKER_WAIT,
            interval=0.2,
            message=f"the shared worker to start; log:\n{self.worker.log_tail()}",
        )
        self._control("cancel_consumer", private)

    def _answers(self, app) -> bool:
        if self.worker.process.poll() is not None:
            raise AssertionError(f"the shared worker exited:\n{self.worker.log_tail()}")
        return bool(app.control.ping(destination=[self.worker.name], timeout=0.5))

    def _control(self, command: str, queue: str) -> None:
        from evalsite.celery import app

        replies = getattr(app.control, command)(
            queue, destination=[self.worker.name], reply=True, timeout=SHARED_WORKER_WAIT
        )
        if not replies:
            raise AssertionError(
                f"the shared worker did not answer {command} {queue}:\n{self.worker.log_tail()}"
            )

    def _idle(self) -> bool:
        from evalsite.celery import app

        inspect = app.control.inspect(destination=[self.worker.name], timeout=1)
        # A task taken before the cancel but not yet started is "reserved"; it still runs.
        return all(
            (ask() or {}).get(self.worker.name) == [] for ask in (inspect.active, inspect.reserved)
        )


@pytest.fixture(scope="session")
def _shared_worker(django_db_setup, _model_storage, tmp_path_factory):
    # django_db_setup: the worker is stopped before the test database is dropped.
    shared = SharedWorker(_model_storage, tmp_path_factory.mktemp("shared-worker"))
    yield shared
    shared.close()


@pytest.fixture
def shared_worker(_shared_worker):
    """``celery_worker_factory``'s call for tests that neither kill nor stop their worker nor
    give it an environment of its own: ``shared_worker("default")`` lends the session's one
    real worker (started once) consuming those queues for this test (default: gpu,default).

    The worker is started (if it is not yet) and the queues purged when the test starts, as
    ``celery_worker_factory`` purges them, not at the lease: what the test queues before it
    leases the worker is kept for the worker."""
    _shared_worker.ready()
    leased = False

    def lease(queues: str = "gpu,default", **env) -> CeleryWorker:
        nonlocal leased
        if leased:
            raise AssertionError("one shared_worker lease per test: use celery_worker_factory")
        differing = {k: v for k, v in env.items() if _shared_worker.env.get(k) != str(v)}
        if differing:
            raise AssertionError(
                f"{differing} differ from the shared worker's environment: "
                "use celery_worker_factory"
            )
        leased = True
        return _shared_worker.lease(queues)

    yield lease
    if leased:
        _shared_worker.release()


def logged_in(user):
    """A test client signed in as ``user`` (a session, as the browser has)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def choice_for(assignment, outcome: str) -> str:
    """The choice an annotator makes for ``outcome`` ("a", "b" or "tie", by the comparison's
    models) on ``assignment``, whose answer a is on the side its ``left`` says."""
    if outcome == "tie":
        return "tie"
    return "left" if assignment.left == outcome else "right"


def wait_for(predicate, *, timeout: float, interval: float = 0.2, message: str = "") -> None:
    """Poll until predicate() is true. The timeout only guards against a hung test."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {message}")
        time.sleep(interval)
