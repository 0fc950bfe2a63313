"""Background work of the annotation app (the ``default`` queue)."""

from __future__ import annotations

from celery import shared_task

from .models import Study
from .sampling import sampling_weights_refresh


@shared_task(ignore_result=True)
def sampling_weights_refresh_task(study_id: int) -> None:
    """Refresh an active-sampling or adaptive-K study's comparison weights from its fit."""
    study = Study.objects.filter(
        pk=study_id, sampling__in=[Study.Sampling.ACTIVE, Study.Sampling.ADAPTIVE]
    ).first()
    if study is not None:
        sampling_weights_refresh(study=study)
