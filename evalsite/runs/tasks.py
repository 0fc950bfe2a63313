"""The spine's Celery tasks: one executes a run of any kind, one requeues what needs it.

A run's message carries only its kind's key and its id (and a shard's index, for a run split
into shards: evalsite/runs/shards.py), and goes to the queue the kind chose
when it was queued (``lifecycle.enqueue``); routes in settings are not needed for it.
"""

from celery import shared_task

from . import lifecycle


@shared_task(name="runs.execute", acks_late=True, ignore_result=True)
def run_execute_task(kind: str, run_id: int, shard: int | None = None) -> None:
    # The service claims the run (or its shard) and does only what it is missing, so a
    # redelivered or duplicated message is harmless.
    lifecycle.execute(kind, run_id, shard)


@shared_task(name="runs.requeue", ignore_result=True)
def runs_requeue_task() -> None:
    lifecycle.requeue_all()
