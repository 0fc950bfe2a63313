"""Thin Celery tasks: load ids, call a service, let the service record status."""

from celery import shared_task

from . import runs


@shared_task(acks_late=True, ignore_result=True)
def evolution_run_execute_task(run_id: int) -> None:
    # A model with weights: the `gpu` queue (settings.CELERY_TASK_ROUTES). The service claims
    # the run and makes only the missing items, so a redelivered message is harmless.
    runs.evolution_run_execute(run_id)


@shared_task(acks_late=True, ignore_result=True)
def endpoint_evolution_run_execute_task(run_id: int) -> None:
    # Every model served: only requests are sent, so the `default` queue.
    runs.evolution_run_execute(run_id)


@shared_task(ignore_result=True)
def requeue_stale_evolution_runs_task() -> None:
    runs.evolution_runs_requeue_stale()
