"""The shared lifecycle of every kind of background run (generation, fine-tuning, ...).

A run is claimed with one conditional UPDATE, keeps a heartbeat on its row while a worker holds
it, and is requeued when that heartbeat stops (its worker died), so it resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Callable

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from .errors import ServiceError

log = logging.getLogger(__name__)

# Called as ``hook(model, run_id)`` after a worker let go of a run of any kind, whatever came of
# it (succeeded, failed, cancelled). Apps built on runs (sweeps) register here, so this module
# need not know them; a hook's exception is logged, never the run's failure.
_ON_FINISHED: list[Callable[[type, int], object]] = []


def on_run_finished(hook: Callable[[type, int], object]) -> Callable[[type, int], object]:
    """Register ``hook(model, run_id)``; usable as a decorator. Registering twice calls it once."""
    if hook not in _ON_FINISHED:
        _ON_FINISHED.append(hook)
    return hook


def _finished(model, run_id: int) -> None:
    for hook in _ON_FINISHED:
        try:
            hook(model, run_id)
        except Exception:
            log.exception("run-finished hook %r failed for %s %s", hook, model.__name__, run_id)


# Requeuers of the run kinds other apps define (judge, evolution, benchmark runs): each app
# registers its own in AppConfig.ready(), and the periodic check (generation.tasks) calls them
# all after generation's own, so this app never imports the apps built on it.
_STALE_REQUEUERS: list[Callable[[], object]] = []


def stale_requeuer_register(requeue: Callable[[], object]) -> None:
    """Have the periodic stale-run check call ``requeue()`` too (registering twice: once)."""
    if requeue not in _STALE_REQUEUERS:
        _STALE_REQUEUERS.append(requeue)


def registered_requeuers() -> tuple[Callable[[], object], ...]:
    return tuple(_STALE_REQUEUERS)


def requeue_stale(model, enqueue: Callable[[int], None], *, label: str) -> list[int]:
    """Put running rows of ``model`` (a run model) with a stale heartbeat back in the queue
    (their worker died) and return their ids; ``enqueue(run_id)`` runs inside the transaction."""
    cutoff = timezone.now() - settings.RUN_HEARTBEAT_TIMEOUT
    stale = Q(status=model.Status.RUNNING) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    requeued = []
    for run_id in model.objects.filter(stale).values_list("pk", flat=True):
        with transaction.atomic():
            # Conditional UPDATE: another process may have requeued or finished it meanwhile.
            if model.objects.filter(Q(pk=run_id) & stale).update(
                status=model.Status.QUEUED, worker=""
            ):
                enqueue(run_id)
                requeued.append(run_id)
    if requeued:
        log.warning("requeued %ss with a stale heartbeat: %s", label, requeued)
    return requeued


def drop_stale_connection() -> None:
    """Start a long task on a usable connection (a worker's may have timed out meanwhile).

    Inside a transaction (a caller's, or a test's) the connection is left alone: closing it
    there would throw the transaction away.
    """
    if not connection.in_atomic_block:
        close_old_connections()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(model, run_id: int, worker: str, **only) -> bool:
    """Take the run for this worker: one conditional UPDATE, so two workers never both run it."""
    cutoff = timezone.now() - settings.RUN_HEARTBEAT_TIMEOUT
    now = timezone.now()
    claimable = Q(status=model.Status.QUEUED) | Q(
        status=model.Status.RUNNING, heartbeat_at__lt=cutoff
    )
    claimed = model.objects.filter(Q(pk=run_id) & claimable, **only).update(
        status=model.Status.RUNNING,
        worker=worker,
        heartbeat_at=now,
        error="",
    )
    if claimed:
        model.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
        model.objects.filter(pk=run_id).update(attempts=F("attempts") + 1)
    return bool(claimed)


class Heartbeat(threading.Thread):
    """Touches the run row every few seconds while this worker holds it."""

    def __init__(self, model, run_id: int, worker: str, interval: float):
        super().__init__(daemon=True, name=f"heartbeat-{model._meta.model_name}-{run_id}")
        self.run_id, self.worker, self.interval, self.model = run_id, worker, interval, model
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                self.model.objects.filter(
                    pk=self.run_id, status=self.model.Status.RUNNING, worker=self.worker
                ).update(heartbeat_at=timezone.now())
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def run_held(model, run_id: int, work: Callable[[int, str], None], *, label: str, **only) -> bool:
    """Claim the run, call ``work(run_id, worker)`` under a heartbeat, record a failure on its row.

    Returns False when the run was not claimable (finished, cancelled or held by a live worker).
    ``only`` narrows which rows may be claimed.
    """
    drop_stale_connection()
    worker = worker_name()
    if not claim(model, run_id, worker, **only):
        log.info("%s %s is not claimable (finished, cancelled or held elsewhere)", label, run_id)
        return False
    heartbeat = Heartbeat(model, run_id, worker, settings.RUN_HEARTBEAT_INTERVAL)
    heartbeat.start()
    try:
        work(run_id, worker)
    except Exception as exc:
        log.exception("%s %s failed", label, run_id)  # the traceback: the worker's log only
        # Not only a running row: a run whose success hook failed is failed too, so that a retry
        # finishes what the hook was to do. A cancelled run stays cancelled.
        model.objects.filter(pk=run_id, worker=worker).exclude(
            status=model.Status.CANCELLED
        ).update(
            status=model.Status.FAILED,
            error=run_error(exc),
            finished_at=timezone.now(),
        )
    finally:
        heartbeat.stop()
    _finished(model, run_id)
    return True


# What a failed run's error keeps: its message, never a traceback (that is in the worker's log).
RUN_ERROR_CHARS = 1000
# Exceptions whose message is written for staff; others are prefixed with their class name.
_SAID_FOR_STAFF = (ServiceError, ValueError, RuntimeError)


def run_error(exc: BaseException) -> str:
    """The error staff see for a failed run: the exception's message (the class name first for
    an unexpected kind), absolute server paths made relative, bounded by RUN_ERROR_CHARS."""
    text = str(exc).strip()
    if not isinstance(exc, _SAID_FOR_STAFF) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    roots = [
        (str(settings.MODEL_STORAGE), "MODEL_STORAGE"),
        (str(settings.BASE_DIR), "."),
        *((p, "<python>") for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}),
    ]
    for root, shown in sorted(roots, key=lambda r: -len(r[0])):
        if root and root != "/":
            text = text.replace(root, shown)
    if len(text) > RUN_ERROR_CHARS:
        text = text[: RUN_ERROR_CHARS - 1] + "…"
    return text


def cancel(run, message: str):
    """Queued runs stop at once; a running worker sees the status and stops at its next check.

    ``message`` (with ``{id}`` and ``{status}``) is the error when the run is no longer active.
    """
    model = type(run)
    updated = model.objects.filter(pk=run.pk, status__in=model.ACTIVE).update(
        status=model.Status.CANCELLED, finished_at=timezone.now()
    )
    run.refresh_from_db()
    if not updated:
        raise ServiceError(message.format(id=run.pk, status=run.status))
    return run


def requeue(run, message: str, enqueue: Callable[[int], None] | None):
    """Queue a failed or cancelled run again (``enqueue(run_id)`` inside the transaction).

    ``message`` (with ``{id}`` and ``{status}``) is the error when the run is in another state.
    """
    model = type(run)
    with transaction.atomic():
        updated = model.objects.filter(
            pk=run.pk, status__in=[model.Status.FAILED, model.Status.CANCELLED]
        ).update(status=model.Status.QUEUED, error="", finished_at=None, worker="")
        if updated and enqueue is not None:
            enqueue(run.pk)
    run.refresh_from_db()
    if not updated:
        raise ServiceError(message.format(id=run.pk, status=run.status))
    return run


def enqueue_on_commit(task, run_id: int) -> None:
    """Send ``task(run_id)`` once the transaction that wrote the run commits."""
    transaction.on_commit(lambda: task.delay(run_id))
