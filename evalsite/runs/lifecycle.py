"""The lifecycle every kind of background run shares.

A run row is written first and its (kind, id) sent to the queue its kind chooses once the
transaction commits. A worker claims it with one conditional UPDATE, keeps a heartbeat on the row
while it holds it, and records a failure on the row. The periodic check requeues runs whose
heartbeat stopped (their worker died) and sends again runs that stayed queued longer than
``RUN_QUEUED_RESEND_SECONDS`` with no worker taking them (their message was lost), so every run
resumes where it stopped, and a duplicate message is harmless: only one claim succeeds.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from evalsite.errors import ServiceError, StateConflict

from .kinds import RunKind, all_kinds, kind_of

log = logging.getLogger(__name__)

CANNOT_CANCEL = "{label} {id} is {status}; only queued or running runs can be cancelled"
CANNOT_RETRY = "{label} {id} is {status}; only failed or cancelled runs can be {word}"
# What a failed run's error keeps: its message, never a traceback (that is in the worker's log).
ERROR_LIMIT = 1000
# Exceptions whose message is written for staff; others are prefixed with their class name.
_SAID_FOR_STAFF = (ServiceError, ValueError, RuntimeError)

# Called as ``hook(model, run_id)`` after a worker let go of a run of any kind, whatever came of
# it (succeeded, failed, cancelled). Apps built on runs (sweeps) register here; a hook's
# exception is logged, never the run's failure.
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


def enqueue(run) -> None:
    """Send the run to the queue its kind chooses once the current transaction commits."""
    from . import shards
    from .tasks import run_execute_task

    if shards.enqueue(run):  # split: one message per queued shard
        return
    kind = kind_of(run)
    queue = kind.queue(run)
    key, run_id = kind.key, run.pk
    transaction.on_commit(lambda: run_execute_task.apply_async((key, run_id), queue=queue))


def enqueue_id(model, run_id: int) -> None:
    """``enqueue`` for a run known by id (the row is read for the queue choice)."""
    enqueue(model.objects.get(pk=run_id))


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


def failure_message(exc: BaseException) -> str:
    """What a failed run shows staff: the exception's message (its class name first for an
    unexpected kind), absolute server paths made relative, bounded by ERROR_LIMIT. Never a
    traceback or a server's whole answer: those stay in the worker's log."""
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
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 1] + "…"


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
        log.exception("%s %s failed", label, run_id)
        # Not only a running row: a run whose success hook failed is failed too, so that a retry
        # finishes what the hook was to do. A cancelled run stays cancelled.
        model.objects.filter(pk=run_id, worker=worker).exclude(
            status=model.Status.CANCELLED
        ).update(
            status=model.Status.FAILED,
            error=failure_message(exc),
            finished_at=timezone.now(),
        )
    finally:
        heartbeat.stop()
    _finished(model, run_id)
    return True


def execute(kind: RunKind | str, run_id: int, shard: int | None = None):
    """Claim a run of ``kind`` and do what it is missing; the run refreshed, or None when it was
    not claimable. Safe to call any number of times for one run (redelivered or requeued
    messages, ``--inline`` commands).

    ``shard``: that shard of a split run only. A split run without ``shard`` (``--inline``)
    executes its unfinished shards one after another in this process.
    """
    from . import shards

    kind = kind_of(kind) if isinstance(kind, str) else kind
    if shard is not None:
        if not shards.execute(kind, run_id, shard):
            return None
        return kind.model.objects.get(pk=run_id)
    pending = shards.of(kind.model, run_id).exclude(status=kind.model.Status.SUCCEEDED)
    if shards.of(kind.model, run_id).exists():
        claimed = [shards.execute(kind, run_id, i) for i in pending.values_list("index", flat=True)]
        return kind.model.objects.get(pk=run_id) if any(claimed) else None

    def work(run_id: int, worker: str) -> None:
        kind.work(run_id, worker)
        if kind.model.objects.filter(pk=run_id, status=kind.model.Status.SUCCEEDED).exists():
            for hook in kind.on_success:
                hook(run_id)

    if not run_held(kind.model, run_id, work, label=kind.label, **kind.claimable):
        return None
    return kind.model.objects.get(pk=run_id)


def _audit(kind: RunKind, action: str, run, user) -> None:
    if not action:
        return
    from evalsite.accounts.services import audit_record

    details = {name: getattr(run, name) for name in kind.audit_fields}
    audit_record(user=user, action=action, obj=run, **details)


def cancel(run, user=None):
    """Queued runs stop at once; a running worker sees the status and stops at its next check.

    Refused (ServiceError) when the run is no longer active; audited with the kind's action.
    """
    from . import shards

    kind = kind_of(run)
    model = type(run)
    with transaction.atomic():
        updated = model.objects.filter(pk=run.pk, status__in=model.ACTIVE).update(
            status=model.Status.CANCELLED, finished_at=timezone.now()
        )
        run.refresh_from_db()
        if not updated:
            raise StateConflict(
                CANNOT_CANCEL.format(label=kind.label, id=run.pk, status=run.status)
            )
        shards.cancelled(run)
        _audit(kind, kind.cancel_action, run, user)
    return run


def retry(run, user=None, *, send: bool = True):
    """Queue a failed or cancelled run again; it does only what it is missing.

    Without ``send`` the run is only marked queued, for a caller that executes it itself
    (``--inline``). Refused (ServiceError) in another state; audited with the kind's action.
    """
    from . import shards

    kind = kind_of(run)
    model = type(run)
    with transaction.atomic():
        updated = model.objects.filter(
            pk=run.pk, status__in=[model.Status.FAILED, model.Status.CANCELLED]
        ).update(
            status=model.Status.QUEUED,
            error="",
            finished_at=None,
            worker="",
            heartbeat_at=timezone.now(),
        )
        run.refresh_from_db()
        if not updated:
            raise StateConflict(
                CANNOT_RETRY.format(
                    label=kind.label, id=run.pk, status=run.status, word=kind.retry_word
                )
            )
        shards.retried(run)
        if send:
            enqueue(run)
        _audit(kind, kind.retry_action, run, user)
    return run


def requeue_stale(kind: RunKind) -> list[int]:
    """Put running runs of ``kind`` whose heartbeat stopped (their worker died) back in the
    queue; their ids. A split run is left to its shards' check (shards.requeue_stale)."""
    from . import shards

    model = kind.model
    cutoff = timezone.now() - settings.RUN_HEARTBEAT_TIMEOUT
    stale = (
        Q(status=model.Status.RUNNING)
        & (Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff))
        & ~Q(pk__in=shards.sharded_ids(model))
    )
    requeued = []
    for run_id in model.objects.filter(stale).values_list("pk", flat=True):
        with transaction.atomic():
            # Conditional UPDATE: another process may have requeued or finished it meanwhile.
            if model.objects.filter(Q(pk=run_id) & stale).update(
                status=model.Status.QUEUED, worker="", heartbeat_at=timezone.now()
            ):
                enqueue_id(model, run_id)
                requeued.append(run_id)
    if requeued:
        log.warning("requeued %ss with a stale heartbeat: %s", kind.label, requeued)
    return requeued


def resend_lost(kind: RunKind) -> list[int]:
    """Send again the queued runs of ``kind`` that no worker took within
    ``RUN_QUEUED_RESEND_SECONDS`` of being sent (a lost message: a broker restarted without
    persistence, a worker of another deployment took it); their ids.

    While queued, ``heartbeat_at`` holds when the run's message was last sent (None: when the
    row was made), so each run is sent again at most once per interval; a run whose message was
    only slow gets a duplicate, which its claim makes harmless. A split run's shards are sent
    again by shards.resend_lost.
    """
    from . import shards

    model = kind.model
    cutoff = timezone.now() - timedelta(seconds=settings.RUN_QUEUED_RESEND_SECONDS)
    lost = Q(status=model.Status.QUEUED, **kind.claimable) & ~Q(pk__in=shards.sharded_ids(model))
    sent = Coalesce("heartbeat_at", "created_at")
    resent = []
    candidates = model.objects.annotate(sent=sent).filter(lost, sent__lt=cutoff)
    for run_id in candidates.values_list("pk", flat=True):
        with transaction.atomic():
            still = model.objects.annotate(sent=sent).filter(lost, pk=run_id, sent__lt=cutoff)
            if still.update(heartbeat_at=timezone.now()):
                enqueue_id(model, run_id)
                resent.append(run_id)
    if resent:
        log.warning("sent again %ss queued with no worker taking them: %s", kind.label, resent)
    return resent


def requeue_all() -> dict[str, list[int]]:
    """The periodic check: for every kind, stale runs requeued and lost messages sent again;
    then the same for the shards of split runs (their ids under "shards")."""
    from . import shards

    done = {}
    for kind in all_kinds():
        ids = requeue_stale(kind) + resend_lost(kind)
        if ids:
            done[kind.key] = ids
    shard_ids = shards.requeue_stale() + shards.resend_lost()
    if shard_ids:
        done["shards"] = shard_ids
    return done
