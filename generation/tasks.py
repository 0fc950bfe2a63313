"""Thin Celery tasks: load ids, call a service, let the service record status."""

from celery import shared_task

from . import services


@shared_task(acks_late=True, ignore_result=True)
def generation_run_execute_task(run_id: int) -> None:
    # Routed to the `gpu` queue (settings.CELERY_TASK_ROUTES). The service claims the run and
    # generates only missing answers, so a redelivered or duplicated message is harmless.
    services.generation_run_execute(run_id=run_id)


@shared_task(ignore_result=True)
def requeue_stale_runs_task() -> None:
    services.generation_runs_requeue_stale()
