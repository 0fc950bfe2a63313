"""Sweeps in the staff lists of work (evalsite.runs.listing): a sweep is not a run of its own
kind (it drives fine-tune, generation and judge runs), so it registers as a work source."""

from __future__ import annotations

from django.db.models import Count, Q
from django.urls import reverse

from evalsite.runs.listing import WorkRow, WorkSource

from .models import Sweep, SweepCell


def sweep_rows(status: str | None, limit: int) -> list[WorkRow]:
    """Sweeps (of ``status``, None: any), newest first; progress counts finished cells."""
    found = Sweep.objects.select_related("base_model").annotate(
        cells_total=Count("cells"),
        cells_done=Count("cells", filter=Q(cells__status__in=SweepCell.DONE)),
        failed_cells=Count("cells", filter=Q(cells__status=SweepCell.Status.FAILED)),
    )
    if status:
        found = found.filter(status=status)
    return [
        WorkRow(
            kind="sweep",
            id=sweep.pk,
            title=f"sweep {sweep.name}: {sweep.base_model.name}",
            status=sweep.status,
            done=sweep.cells_done,
            total=sweep.cells_total,
            unit="cells",
            error=sweep.error,
            created_at=sweep.created_at,
            # A sweep runs from the moment it is made (it has no queued state of its own).
            started_at=sweep.created_at,
            finished_at=sweep.finished_at,
            url=reverse("sweep-detail", args=[sweep.pk]),
            progress_url="",
        )
        for sweep in found.order_by("-created_at")[:limit]
    ]


SWEEPS = WorkSource(
    name="sweep",
    rows=sweep_rows,
    permission="sweeps.view_sweep",
    statuses=tuple(Sweep.Status.values),
)
