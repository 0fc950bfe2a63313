"""Generation's one task of its own: merging an adapter into its base (runs are executed by the
spine's task, evalsite/runs/tasks.py)."""

import logging

from celery import shared_task

from evalsite.errors import ServiceError

from .models import LanguageModel
from .training import merge

log = logging.getLogger(__name__)


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
