"""Active sampling's Django side: the comparisons' weights, refreshed from the study's fit.

The claim (``loop.assign``) reads ``Comparison.sampling_weight`` and records the pick's
probability; this module keeps the weights current. A refresh fits the study's counted votes
(the plain Bradley-Terry point fit, weighted as the results' fit is, no intervals), turns it
into one weight per model pair (``ranking.active.pair_weights``) and writes them in one UPDATE.
Claims in an active study ask for a refresh at most once per ``REFRESH_SECONDS`` per study (a
cache key); the refresh runs as a Celery task after the claim commits, never in the request.
"""

from __future__ import annotations

from django.core.cache import cache
from django.db.models import Case, F, FloatField, Q, Value, When

from .models import Comparison, Study, StudyRun

REFRESH_SECONDS = 30


def _refresh_key(study_id: int) -> str:
    return f"annotation:sampling-refresh:{study_id}"


def sampling_refresh_soon(*, study_id: int) -> None:
    """Queue a refresh of the study's weights unless one was queued in the last
    ``REFRESH_SECONDS`` (one cache round trip, no SQL)."""
    if cache.add(_refresh_key(study_id), 1, REFRESH_SECONDS):
        from .tasks import sampling_weights_refresh_task

        sampling_weights_refresh_task.delay_on_commit(study_id)


def sampling_weights_refresh(*, study: Study) -> dict[tuple[str, str], float]:
    """Write each comparison's weight from the current fit; returns {(model a, model b):
    weight} by model name (empty, and nothing written, while some model has no votes)."""
    import numpy as np

    from . import figures, ranking
    from .ranking.active import pair_weights
    from .results import study_labels, study_models, study_vote_rows

    rows, weights = study_vote_rows(study=study)
    if not rows:
        return {}
    # The plain point fit and its information matrix: no intervals, no robustness search.
    fitted = ranking.rank(
        figures.battles(rows, weights, position=False),
        models=study_models(study=study),
        bootstrap=0,
        sandwich=False,
    )
    if fitted.covariance is None:
        return {}
    labels = study_labels(study=study)
    runs = dict(StudyRun.objects.filter(study=study).values_list("model__name", "run_id"))
    by_label = {labels[name]: name for name in runs}
    names = fitted.names_fitted
    if len(names) < len(runs):
        return {}
    theta = np.array([fitted.model(name).log_strength for name in names])
    weights = pair_weights(theta, fitted.covariance, study.sampling_floor)
    found: dict[tuple[str, str], float] = {}
    cases = []
    for i, first in enumerate(names):
        for j, second in enumerate(names):
            run_a, run_b = runs[by_label[first]], runs[by_label[second]]
            if run_a < run_b:
                found[(by_label[first], by_label[second])] = float(weights[i, j])
                cases.append(When(Q(run_a=run_a, run_b=run_b), then=Value(float(weights[i, j]))))
    Comparison.objects.filter(study=study).update(
        sampling_weight=Case(*cases, default=F("sampling_weight"), output_field=FloatField())
    )
    return found
