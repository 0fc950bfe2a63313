"""Thin Celery tasks (the `default` queue: the `sweeps.tasks.*` route)."""

from celery import shared_task

from . import progress


@shared_task(acks_late=True, ignore_result=True)
def sweeps_advance_task(sweep_id: int | None = None) -> None:
    # One sweep when a run of it finished; every running sweep from the periodic schedule. The
    # service takes the sweep's lock and starts only what is missing, so repeats are harmless.
    progress.sweeps_advance(sweep_id=sweep_id)
