import os

from celery import Celery
from celery.signals import task_prerun, worker_ready

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


if os.environ.get("CELERY_FRESH_CONTENT_TYPES"):
    # For the test suite's worker, which serves many tests while the database is emptied
    # between them: content types come back with new ids, and Django's per-process cache of
    # them would make a later test's audit entries and shard rows point at ids that are gone.
    @task_prerun.connect
    def _fresh_content_types(**kwargs) -> None:
        from django.contrib.contenttypes.models import ContentType

        ContentType.objects.clear_cache()
