"""What remains of generation's own run lifecycle while run kinds move onto the spine
(evalsite/runs/lifecycle.py): claim, heartbeat, failure and the run-finished hooks are the
spine's already."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from evalsite.runs.lifecycle import (  # noqa: F401 - the spine's, re-exported during the move
    Heartbeat,
    claim,
    drop_stale_connection,
    on_run_finished,
    run_held,
    worker_name,
)

from .errors import ServiceError

log = logging.getLogger(__name__)

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
            if model.objects.filter(Q(pk=run_id) & stale).update(
                status=model.Status.QUEUED, worker=""
            ):
                enqueue(run_id)
                requeued.append(run_id)
    if requeued:
        log.warning("requeued %ss with a stale heartbeat: %s", label, requeued)
    return requeued


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
