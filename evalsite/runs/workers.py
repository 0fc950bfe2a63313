"""Who consumes which queue: the one place the commands, the admin and the health endpoint ask.

Celery's ``inspect`` broadcasts to the workers through the broker and collects replies (Redis and
kombu's filesystem transport both support it); a transport that cannot broadcast, or a broker
that does not answer, gives a census whose ``known`` is False, and callers fall back to "the run
is still queued after a while". The run rows add what Celery cannot: which worker holds a run
and when it last touched it (``heartbeat_at``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from .kinds import all_kinds, kind_of

log = logging.getLogger(__name__)

# The command that starts a worker, as README's "Running it for real" gives it.
WORKER_COMMAND = ".venv/bin/celery -A evalsite worker -Q {queue} --concurrency 1"
NO_CONSUMER = "no worker consumes the '{queue}' queue"
CONSUMERS_UNKNOWN = "the broker cannot say which workers consume the '{queue}' queue"
START_WORKER = "start one with `{command}`"
INLINE_ALTERNATIVE = "or run it in this process with --inline"
QUEUED_BEHIND = (
    "{label} {id} is still queued; the '{queue}' queue is consumed by {workers} "
    "(busy with other work, or about to take it)"
)
PICKED_UP = "{label} {id} picked up by worker {worker}"
CONSUMER_APPEARED = "a worker now consumes the '{queue}' queue ({workers}); waiting for it"
BROKER_DOWN = "broker unreachable"

_CACHE_KEY = "runs:workers:census"


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


@dataclass(frozen=True)
class Census:
    """The workers that answered one broadcast, with the queues each consumes.

    ``known`` is False when the broker could not be asked (no broadcast on this transport, or
    the broker is down): then ``workers`` is empty and says nothing.
    """

    known: bool
    taken_at: datetime
    workers: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def consumers(self, queue: str) -> list[str]:
        return sorted(name for name, queues in self.workers.items() if queue in queues)

    def by_queue(self) -> dict[str, list[str]]:
        """Worker names per queue, every configured queue listed (empty when none consumes it)."""
        queues = set(configured_queues())
        for consumed in self.workers.values():
            queues.update(consumed)
        return {queue: self.consumers(queue) for queue in sorted(queues)}


def configured_queues() -> list[str]:
    """The queues runs and tasks are sent to: the run kinds' (``gpu``, ``default``), the routes'
    and the default queue."""
    from .kinds import DEFAULT, GPU

    routes = getattr(settings, "CELERY_TASK_ROUTES", {}) or {}
    queues = {route["queue"] for route in routes.values() if "queue" in route}
    queues.update({GPU, DEFAULT, getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")})
    return sorted(queues)


def run_queue(run) -> str:
    """The queue this run is sent to, as its kind chooses (weights: ``gpu``, served:
    ``default``)."""
    return kind_of(run).queue(run)


def _connection(timeout: float):
    from evalsite.celery import app

    # Socket timeouts as well as the connect timeout: a broker that accepts the connection and
    # then says nothing would otherwise hold the caller (a load balancer's probe) indefinitely.
    return app.connection_for_write(
        connect_timeout=timeout,
        transport_options={"socket_timeout": timeout, "socket_connect_timeout": timeout},
    )


def broker_error(timeout: float | None = None) -> str | None:
    """None when the broker accepts a connection within ``timeout`` seconds, else why not."""
    timeout = timeout if timeout is not None else _setting("BROKER_CHECK_TIMEOUT", 2.0)
    try:
        with _connection(timeout) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=timeout
            )
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable" to the caller
        log.warning("broker check failed: %s", exc)
        return f"{BROKER_DOWN}: {exc}"
    return None


def census(*, timeout: float | None = None) -> Census:
    """Ask every worker (through the broker) which queues it consumes; waits ``timeout`` s."""
    from evalsite.celery import app

    timeout = timeout if timeout is not None else _setting("WORKER_INSPECT_TIMEOUT", 1.0)
    now = timezone.now()
    # Checked first: inspect against a dead broker retries for several seconds before failing.
    if broker_error(timeout) is not None:
        return Census(known=False, taken_at=now)
    try:
        with _connection(timeout) as conn:
            replies = app.control.inspect(timeout=timeout, connection=conn).active_queues()
    except Exception as exc:  # noqa: BLE001 - e.g. a transport with no broadcast
        log.warning("cannot ask the workers which queues they consume: %s", exc)
        return Census(known=False, taken_at=now)
    workers = {
        name: tuple(sorted(q["name"] for q in queues or []))
        for name, queues in (replies or {}).items()
    }
    return Census(known=True, taken_at=now, workers=workers)


def recent_census() -> Census:
    """A census at most WORKER_CENSUS_CACHE_SECONDS old, shared by page views (each fresh one
    costs the inspect timeout). A cache that is down only means asking every time."""
    seconds = _setting("WORKER_CENSUS_CACHE_SECONDS", 5.0)
    if seconds <= 0:
        return census()
    # One entry per broker: processes sharing a cache may not share a broker.
    key = f"{_CACHE_KEY}:{hashlib.sha256(settings.CELERY_BROKER_URL.encode()).hexdigest()[:16]}"
    try:
        found = cache.get(key)
    except Exception:  # noqa: BLE001 - the cache is an optimisation here
        found = None
    if isinstance(found, Census):
        return found
    fresh = census()
    try:
        cache.set(key, fresh, seconds)
    except Exception:  # noqa: BLE001
        log.debug("could not cache the worker census", exc_info=True)
    return fresh


def no_worker_message(run, found: Census, *, inline: bool = False) -> str:
    """Why nothing runs ``run`` (queued) and what to do about it, in one sentence."""
    model = type(run)
    queue = run_queue(run)
    reason = (NO_CONSUMER if found.known else CONSUMERS_UNKNOWN).format(queue=queue)
    advice = START_WORKER.format(command=WORKER_COMMAND.format(queue=queue))
    if inline:
        advice += f", {INLINE_ALTERNATIVE}"
    return f"No worker has taken {kind_of(model).label} {run.pk}: {reason}; {advice}."


def unconsumed_warning(runs, found: Census | None = None) -> str | None:
    """A warning for the admin when any of ``runs`` is queued on a queue nobody consumes."""
    queued = [run for run in runs if run.status == run.Status.QUEUED]
    if not queued:
        return None
    found = found or recent_census()
    stuck = [run for run in queued if not found.consumers(run_queue(run))]
    if not stuck:
        return None
    if len(stuck) == 1:
        return no_worker_message(stuck[0], found)
    queue = run_queue(stuck[0])
    reason = (NO_CONSUMER if found.known else CONSUMERS_UNKNOWN).format(queue=queue)
    ids = ", ".join(str(run.pk) for run in stuck)
    advice = START_WORKER.format(command=WORKER_COMMAND.format(queue=queue))
    return f"No worker has taken runs {ids}: {reason}; {advice}."


def running_runs() -> list[dict]:
    """Every running run of every kind with the worker holding it and its last heartbeat
    (staff only)."""
    rows = []
    for kind in all_kinds():
        for run in kind.model.objects.filter(status=kind.model.Status.RUNNING):
            rows.append(
                {
                    "kind": kind.label,
                    "id": run.pk,
                    "queue": run_queue(run),
                    "worker": run.worker,
                    "heartbeat_at": run.heartbeat_at,
                }
            )
    return rows


class QueueWatch:
    """Follows a run for a ``--wait`` command: says when nobody has taken it, and when someone
    does. Call ``check(run)`` after each refresh; it returns the lines to print (often none).

    While the run is queued, the workers are asked after WAIT_NO_WORKER_SECONDS and again every
    WAIT_RECHECK_SECONDS; a line is printed only when what they say changes.
    """

    def __init__(self, run, *, inline: bool):
        self.inline = inline
        self.queue = run_queue(run)
        self.label = kind_of(run).label
        self.started = time.monotonic()
        self.next_check = self.started + _setting("WAIT_NO_WORKER_SECONDS", 5.0)
        self.said: str | None = None  # "none", "busy" or "unknown": what was last printed

    def check(self, run) -> list[tuple[str, str]]:
        """(level, line) pairs: level is "warning" or "info"."""
        if run.status != run.Status.QUEUED:
            if self.said is not None and run.worker:
                self.said = None
                return [("info", PICKED_UP.format(label=self.label, id=run.pk, worker=run.worker))]
            return []
        if time.monotonic() < self.next_check:
            return []
        self.next_check = time.monotonic() + _setting("WAIT_RECHECK_SECONDS", 30.0)
        found = census()
        consumers = found.consumers(self.queue)
        state = "busy" if consumers else ("none" if found.known else "unknown")
        if state == self.said:
            return []
        previous, self.said = self.said, state
        if state == "busy":
            workers = ", ".join(consumers)
            if previous is not None:
                line = CONSUMER_APPEARED.format(queue=self.queue, workers=workers)
            else:
                line = QUEUED_BEHIND.format(
                    label=self.label, id=run.pk, queue=self.queue, workers=workers
                )
            return [("info", line)]
        message = no_worker_message(run, found, inline=self.inline)
        return [("warning", f"{message} Still waiting.")]


def poll_seconds() -> float:
    """Seconds between refreshes of a ``--wait`` command's run row."""
    return _setting("WAIT_POLL_SECONDS", 1.0)


def say(command, bar, level: str, line: str) -> None:
    """Print a QueueWatch line from a management command above its tqdm progress bar: warnings
    on stderr (styled), news on stdout."""
    from tqdm import tqdm

    if level == "warning":
        out, text = command.stderr, command.style.WARNING(line)
    else:
        out, text = command.stdout, line
    # tqdm.write clears the bar, writes, and draws the bar again below; OutputWrapper adds the
    # newline itself, so no second one.
    tqdm.write(text, file=out, end="")


def follow(
    command, run, *, desc: str, unit: str, done: str = "done", total: str = "total", postfix=None
):
    """Follow a run for a ``--wait`` command until it is no longer queued or running, and
    return it refreshed: a progress bar of its ``done`` / ``total`` fields (names), the
    status (or ``postfix(run)``) after the bar, and QueueWatch's lines above it, so a run no
    worker takes is never a silent bar at 0 (it keeps waiting: a worker may start meanwhile)."""
    from tqdm import tqdm

    watch = QueueWatch(run, inline=True)
    with tqdm(total=getattr(run, total), desc=desc, unit=unit) as bar:
        while True:
            run.refresh_from_db()
            for level, line in watch.check(run):
                say(command, bar, level, line)
            bar.total = getattr(run, total)
            bar.update(getattr(run, done) - bar.n)
            bar.set_postfix_str(postfix(run) if postfix is not None else run.status)
            if run.status not in run.ACTIVE:
                return run
            time.sleep(poll_seconds())
