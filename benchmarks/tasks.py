"""Thin Celery tasks: load ids, call a service, let the service record status."""

from celery import shared_task

from . import runs


@shared_task(acks_late=True, ignore_result=True)
def benchmark_run_execute_task(run_id: int) -> None:
    # A model with weights: routed to the `gpu` queue (settings.CELERY_TASK_ROUTES). The service
    # claims the run and scores only the tasks without results, so a redelivery is harmless.
    runs.benchmark_run_execute(run_id)


@shared_task(acks_late=True, ignore_result=True)
def endpoint_benchmark_run_execute_task(run_id: int) -> None:
    # A served model only receives requests: the `default` queue (the `benchmarks.tasks.*` route).
    runs.benchmark_run_execute(run_id)
