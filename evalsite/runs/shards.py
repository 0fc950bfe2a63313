"""Runs split into shards: ranges of one run's items that several workers execute at once.

A kind that can be split (``RunKind.items`` and ``work_shard``) gets, when its run is made with
more than one shard, one ``RunShard`` row per range of its items, written with the run. Each
shard is an ordinary message of the spine's one task (``runs.execute`` with the shard's index),
sent to the run's queue; a worker claims the shard with one conditional UPDATE, keeps a
heartbeat on it, and does only what the range is missing. The run holds the status and progress
of all of them: it is running from its first claim and succeeds when the last shard does (under
the run row's lock, so two shards finishing together agree on which one completes it); a
shard's failure fails the run, and the others stop at their next check. The periodic check
requeues shards whose heartbeat stopped and sends again those whose message was lost; cancel
and retry reach every shard through the run. The ranges are rows, not a plan in one process:
any worker of any deployment picks up any shard.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.models import Exists, F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from evalsite.errors import ServiceError

from .kinds import RunKind, kind_of
from .models import RunShard

log = logging.getLogger(__name__)

BAD_SHARDS = "shards must be a whole number of at least 1 (got {value!r})"
NOT_SPLIT = "a {label} cannot be split into shards (got shards={value})"
STOPPED = "shard {index} stopped before the end of its {unit}"
SHARD_FAILED = "shard {index}: {message}"


@dataclass(frozen=True)
class Shard:
    """What a kind's ``work_shard`` is handed: its range and a way to know it still holds it."""

    model: type
    pk: int
    run_id: int
    index: int
    start: int
    stop: int
    worker: str

    def held(self) -> bool:
        """This worker still holds the shard, and the run is still running (not cancelled,
        failed or finished)."""
        run_running = self.model.objects.filter(pk=self.run_id, status=self.model.Status.RUNNING)
        return (
            RunShard.objects.filter(pk=self.pk, status=RunShard.Status.RUNNING, worker=self.worker)
            .filter(Exists(run_running))
            .exists()
        )


def of_run(run):
    """The run's shard rows (none: it is one piece)."""
    return of(type(run), run.pk)


def of(model, run_id: int):
    """The shard rows of ``model``'s run ``run_id``."""
    return RunShard.objects.filter(
        content_type=ContentType.objects.get_for_model(model), object_id=run_id
    )


def sharded_ids(model):
    """A subquery of the ids of ``model``'s runs that have shards (to leave them out of the
    checks made for runs in one piece)."""
    return RunShard.objects.filter(content_type=ContentType.objects.get_for_model(model)).values(
        "object_id"
    )


def start(run, requested: int | None, *, enqueue: bool, user, action: str, **details) -> int:
    """A new run's start, in the transaction that made it: ``split`` it, record ``action`` with
    ``details`` (and the shard count when it is split) in the audit log, and send it to a
    worker when ``enqueue``. Returns the shard count."""
    from evalsite.accounts.services import audit_record

    from .lifecycle import enqueue as send

    count = split(run, requested, enqueue=enqueue)
    audit_record(
        user=user, action=action, obj=run, **details, **({"shards": count} if count > 1 else {})
    )
    if enqueue:
        send(run)
    return count


def ranges(items: int, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous ranges covering ``items``, their sizes differing by one at most."""
    size, extra = divmod(items, count)
    bounds, start = [], 0
    for index in range(count):
        stop = start + size + (1 if index < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def default_count(run) -> int:
    """RUN_SHARDS_DEFAULT when set, else one shard per worker consuming the run's queue (the
    census every page shares); one when the broker cannot say or nobody consumes it yet."""
    from .workers import recent_census

    if settings.RUN_SHARDS_DEFAULT > 0:
        return settings.RUN_SHARDS_DEFAULT
    found = recent_census()
    if not found.known:
        return 1
    return max(1, len(found.consumers(kind_of(run).queue(run))))


def split(run, requested: int | None, *, enqueue: bool) -> int:
    """Record the run's shards; the number it is split into (1: no shard rows, the run is
    executed in one piece as before). Call in the transaction that made the run, before it is
    enqueued.

    ``requested`` None: one shard per worker consuming its queue when it is sent to one, one
    when it is executed in this process (``enqueue`` False). Never more shards than items or
    ``RUN_SHARDS_MAX``.
    """
    kind = kind_of(run)
    if requested is not None and (
        isinstance(requested, bool) or not isinstance(requested, int) or requested < 1
    ):
        raise ServiceError(BAD_SHARDS.format(value=requested))
    if kind.items is None or kind.work_shard is None:
        if requested is not None and requested > 1:
            raise ServiceError(NOT_SPLIT.format(label=kind.label, value=requested))
        return 1
    if requested is None:
        requested = default_count(run) if enqueue else 1
    items = kind.items(run)
    count = min(requested, items, settings.RUN_SHARDS_MAX)
    if count <= 1:
        return 1
    content_type = ContentType.objects.get_for_model(type(run))
    RunShard.objects.bulk_create(
        RunShard(content_type=content_type, object_id=run.pk, index=i, start=start, stop=stop)
        for i, (start, stop) in enumerate(ranges(items, count))
    )
    return count


# --- sending -------------------------------------------------------------------------------------


def _send(kind: RunKind, run, indexes: list[int]) -> None:
    """Send one message per shard once the current transaction commits (a Celery group)."""
    from celery import group

    from .tasks import run_execute_task

    if not indexes:
        return
    queue = kind.queue(run)
    key, run_id = kind.key, run.pk
    messages = group(run_execute_task.si(key, run_id, index).set(queue=queue) for index in indexes)
    transaction.on_commit(messages.apply_async)


def enqueue(run) -> bool:
    """Send the run's queued shards; False when it has none (it is one piece)."""
    shards = of_run(run)
    if not shards.exists():
        return False
    queued = shards.filter(status=RunShard.Status.QUEUED).values_list("index", flat=True)
    _send(kind_of(run), run, list(queued))
    return True


def cancelled(run) -> None:
    """The run was cancelled: its active shards are too (a running one stops at its check)."""
    of_run(run).filter(status__in=RunShard.ACTIVE).update(
        status=RunShard.Status.CANCELLED, finished_at=timezone.now()
    )


def retried(run) -> None:
    """The run is queued again: every shard that did not succeed is queued again. When all
    had (a success hook failed), the last one is, so that completing it calls the hooks."""
    shards = of_run(run)
    again = {
        "status": RunShard.Status.QUEUED,
        "error": "",
        "worker": "",
        "finished_at": None,
        "heartbeat_at": timezone.now(),
    }
    if not shards.exclude(status=RunShard.Status.SUCCEEDED).update(**again):
        last = shards.order_by("-index").first()
        if last is not None:
            shards.filter(pk=last.pk).update(**again)


# --- a worker's side -----------------------------------------------------------------------------


def claim(kind: RunKind, run_id: int, index: int, worker: str) -> RunShard | None:
    """Take shard ``index`` of the run for this worker (one conditional UPDATE), and mark the
    run running; None when the run is not active or the shard is finished or held by a live
    worker."""
    model = kind.model
    now = timezone.now()
    cutoff = now - settings.RUN_HEARTBEAT_TIMEOUT
    with transaction.atomic():
        run = (
            model.objects.select_for_update()
            .filter(pk=run_id, status__in=model.ACTIVE, **kind.claimable)
            .first()
        )
        if run is None:
            return None
        claimable = Q(status=RunShard.Status.QUEUED) | Q(
            status=RunShard.Status.RUNNING, heartbeat_at__lt=cutoff
        )
        shard = of(model, run_id).filter(claimable, index=index)
        if not shard.update(
            status=RunShard.Status.RUNNING,
            worker=worker,
            heartbeat_at=now,
            error="",
            attempts=F("attempts") + 1,
            started_at=Coalesce("started_at", now),
        ):
            return None
        first = run.status == model.Status.QUEUED
        model.objects.filter(pk=run_id).update(
            status=model.Status.RUNNING,
            worker=worker,
            heartbeat_at=now,
            error="",
            started_at=Coalesce("started_at", now),
            attempts=F("attempts") + (1 if first else 0),
        )
        return of(model, run_id).get(index=index)


class Heartbeat(threading.Thread):
    """Touches the shard row, and its run's, every few seconds while this worker holds it."""

    def __init__(self, shard: Shard, interval: float):
        super().__init__(daemon=True, name=f"heartbeat-shard-{shard.pk}")
        self.shard, self.interval = shard, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        shard, model = self.shard, self.shard.model
        try:
            while not self.stopped.wait(self.interval):
                now = timezone.now()
                mine = RunShard.objects.filter(
                    pk=shard.pk, status=RunShard.Status.RUNNING, worker=shard.worker
                )
                if mine.update(heartbeat_at=now):
                    model.objects.filter(pk=shard.run_id, status=model.Status.RUNNING).update(
                        heartbeat_at=now
                    )
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def execute(kind: RunKind, run_id: int, index: int) -> bool:
    """Claim shard ``index`` of the run and do what its range is missing; False when it was not
    claimable. Safe to call any number of times for one shard."""
    from . import lifecycle

    lifecycle.drop_stale_connection()
    worker = lifecycle.worker_name()
    row = claim(kind, run_id, index, worker)
    if row is None:
        log.info("%s %s shard %s is not claimable", kind.label, run_id, index)
        return False
    shard = Shard(kind.model, row.pk, run_id, row.index, row.start, row.stop, worker)
    heartbeat = Heartbeat(shard, settings.RUN_HEARTBEAT_INTERVAL)
    heartbeat.start()
    try:
        complete = kind.work_shard(run_id, shard)
    except Exception as exc:
        log.exception("%s %s shard %s failed", kind.label, run_id, index)
        _failed(kind, shard, lifecycle.failure_message(exc))
        completed = False
    else:
        completed = _ended(kind, shard, bool(complete))
    finally:
        heartbeat.stop()
    if completed:
        _succeeded(kind, run_id)
    if not kind.model.objects.filter(pk=run_id, status__in=kind.model.ACTIVE).exists():
        lifecycle._finished(kind.model, run_id)
    return True


def _failed(kind: RunKind, shard: Shard, message: str) -> None:
    model = kind.model
    now = timezone.now()
    with transaction.atomic():
        mine = RunShard.objects.filter(pk=shard.pk, status=RunShard.Status.RUNNING)
        if mine.filter(worker=shard.worker).update(
            status=RunShard.Status.FAILED, error=message, finished_at=now
        ):
            model.objects.filter(pk=shard.run_id, status__in=model.ACTIVE).update(
                status=model.Status.FAILED,
                error=SHARD_FAILED.format(index=shard.index, message=message),
                finished_at=now,
            )


def _ended(kind: RunKind, shard: Shard, complete: bool) -> bool:
    """Record how the shard's work ended; True when it completed the run (every shard done)."""
    model = kind.model
    now = timezone.now()
    with transaction.atomic():
        # The run row's lock: the last two shards to finish agree on which one completes it.
        run = model.objects.select_for_update().get(pk=shard.run_id)
        mine = RunShard.objects.filter(
            pk=shard.pk, status=RunShard.Status.RUNNING, worker=shard.worker
        )
        if not complete:
            if run.status == model.Status.RUNNING:
                # Stopped while it held the shard and the run was running: its items are missing.
                message = STOPPED.format(index=shard.index, unit=kind.unit)
                if mine.update(status=RunShard.Status.FAILED, error=message, finished_at=now):
                    model.objects.filter(pk=run.pk).update(
                        status=model.Status.FAILED, error=message, finished_at=now
                    )
            else:
                mine.update(status=run.status, finished_at=now)
            return False
        if not mine.update(status=RunShard.Status.SUCCEEDED, error="", finished_at=now):
            return False  # requeued meanwhile (its heartbeat looked stale): the new holder ends it
        if run.status != model.Status.RUNNING:
            return False
        if of(model, run.pk).exclude(status=RunShard.Status.SUCCEEDED).exists():
            return False
        model.objects.filter(pk=run.pk).update(
            status=model.Status.SUCCEEDED,
            done=F(kind.total),
            error="",
            worker=shard.worker,
            finished_at=now,
        )
        return True


def _succeeded(kind: RunKind, run_id: int) -> None:
    """The run's success hooks, called by the worker that completed it (a hook's exception
    fails the run, so that a retry finishes the hook's work)."""
    from .lifecycle import failure_message

    model = kind.model
    try:
        for hook in kind.on_success:
            hook(run_id)
    except Exception as exc:
        log.exception("a success hook of %s %s failed", kind.label, run_id)
        model.objects.filter(pk=run_id).exclude(status=model.Status.CANCELLED).update(
            status=model.Status.FAILED, error=failure_message(exc), finished_at=timezone.now()
        )


# --- the periodic check --------------------------------------------------------------------------


def _run_of(shard: RunShard):
    model = shard.content_type.model_class()
    return model, model.objects.filter(pk=shard.object_id).first()


def _resend_if_active(shard: RunShard, changes: dict, condition: Q) -> bool:
    """Apply ``changes`` to the shard (still matching ``condition``) and send it, when its run is
    active; a shard of a finished run takes the run's status instead."""
    model, run = _run_of(shard)
    try:
        kind = kind_of(model)
    except LookupError:
        return False
    with transaction.atomic():
        row = RunShard.objects.filter(Q(pk=shard.pk) & condition)
        if run is None or run.status not in model.ACTIVE:
            status = run.status if run is not None else RunShard.Status.CANCELLED
            row.update(status=status, finished_at=timezone.now())
            return False
        if not row.update(**changes):
            return False  # another process got there first
        _send(kind, run, [shard.index])
    return True


def requeue_stale() -> list[int]:
    """Put running shards whose heartbeat stopped (their worker died) back in the queue; their
    ids."""
    cutoff = timezone.now() - settings.RUN_HEARTBEAT_TIMEOUT
    stale = Q(status=RunShard.Status.RUNNING) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    requeued = []
    for shard in RunShard.objects.filter(stale).select_related("content_type"):
        changes = {"status": RunShard.Status.QUEUED, "worker": "", "heartbeat_at": timezone.now()}
        if _resend_if_active(shard, changes, stale):
            requeued.append(shard.pk)
    if requeued:
        log.warning("requeued shards with a stale heartbeat: %s", requeued)
    return requeued


def resend_lost() -> list[int]:
    """Send again the queued shards no worker took within ``RUN_QUEUED_RESEND_SECONDS`` of being
    sent (their message was lost); their ids."""
    cutoff = timezone.now() - timedelta(seconds=settings.RUN_QUEUED_RESEND_SECONDS)
    sent = Coalesce("heartbeat_at", "created_at")
    queued = RunShard.objects.filter(status=RunShard.Status.QUEUED)
    lost = queued.annotate(sent=sent).filter(sent__lt=cutoff)
    resent = []
    for shard in lost.select_related("content_type"):
        still = Q(status=RunShard.Status.QUEUED) & (
            Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
        )
        if _resend_if_active(shard, {"heartbeat_at": timezone.now()}, still):
            resent.append(shard.pk)
    if resent:
        log.warning("sent again shards queued with no worker taking them: %s", resent)
    return resent
