"""Thin Celery tasks: load ids, call a service, let the service record status."""

from celery import shared_task

from . import runs


@shared_task(acks_late=True, ignore_result=True)
def judge_run_execute_task(run_id: int) -> None:
    # A judge with weights: routed to the `gpu` queue (settings.CELERY_TASK_ROUTES). The service
    # claims the run and asks only for missing verdicts, so a redelivered message is harmless.
    runs.judge_run_execute(run_id)


@shared_task(acks_late=True, ignore_result=True)
def endpoint_judge_run_execute_task(run_id: int) -> None:
    # A served judge only sends requests: the `default` queue (the `judging.tasks.*` route).
    runs.judge_run_execute(run_id)
