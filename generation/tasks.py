"""Thin Celery tasks: load ids, call a service, let the service record status."""

import logging

from celery import shared_task

from . import lifecycle, runs
from .errors import ServiceError
from .models import LanguageModel
from .training import finetune, merge

log = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def generation_run_execute_task(run_id: int) -> None:
    # Routed to the `gpu` queue (settings.CELERY_TASK_ROUTES). The service claims the run and
    # generates only missing answers, so a redelivered or duplicated message is harmless.
    runs.generation_run_execute(run_id=run_id)


@shared_task(acks_late=True, ignore_result=True)
def endpoint_run_execute_task(run_id: int) -> None:
    # A run of a served model: it only sends requests, so it goes to the `default` queue (the
    # `generation.tasks.*` route), not to a GPU worker. The same service, the same safety.
    runs.generation_run_execute(run_id=run_id)


@shared_task(acks_late=True, ignore_result=True)
def finetune_run_execute_task(run_id: int) -> None:
    # Routed to the `gpu` queue. The service claims the run and continues from its last
    # checkpoint, so a redelivered or duplicated message is harmless.
    finetune.finetune_run_execute(run_id=run_id)


@shared_task(acks_late=True, ignore_result=True)
def language_model_merge_task(model_id: int, name: str) -> None:
    # Sent to the `gpu` queue explicitly (training/merge.language_model_merge_request).
    model = LanguageModel.objects.select_related("base_model").filter(pk=model_id).first()
    if model is None:
        log.warning("merge: model %s no longer exists", model_id)
        return
    try:
        merge.language_model_merge(model=model, name=name)
    except ServiceError as exc:
        # Already merged (a redelivered message) or no longer mergeable: nothing to do.
        log.warning("merge of model %s skipped: %s", model_id, exc)


@shared_task(ignore_result=True)
def requeue_stale_runs_task() -> None:
    runs.generation_runs_requeue_stale()
    finetune.finetune_runs_requeue_stale()
    # Judge, evolution and benchmark runs share the lifecycle and this schedule; their apps
    # register their requeue functions (generation does not import the apps built on it).
    for requeue in lifecycle.registered_requeuers():
        requeue()
