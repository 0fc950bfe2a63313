import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")

app = Celery("evalsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _requeue_stale_runs(sender=None, **kwargs) -> None:
    """A worker that starts picks up runs whose worker died (stale heartbeat) or whose message
    was lost."""
    from evalsite.runs.tasks import runs_requeue_task

    runs_requeue_task.delay()
