"""A run's live progress as a small JSON document, for any kind: what a run page polls while
the run is queued or running (evalsite/runs/static/runs/live.js)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from evalsite.permissions import model_permission

from .kinds import kind_named, kind_of
from .listing import progress_text, run_row


def progress_dict(run) -> dict:
    """What a run page shows live: status, progress, error, timings, and whether it is still
    going (``active``: poll again)."""
    row = run_row(run)
    kind = kind_of(run)
    return {
        **row.as_dict(),
        "text": kind.progress_text(run)
        if kind.progress_text
        else progress_text(row.done, row.total, f" {row.unit}"),
        "active": run.status in run.ACTIVE,
    }


class RunProgressApi(APIView):
    """Staff: one run's status and progress (``kind``: generation, finetune, judge, evolution,
    benchmark), with the view permission of that kind's model."""

    def initial(self, request, *args, **kwargs):
        # The permission depends on the kind in the URL (evalsite.permissions reads this).
        try:
            self.kind = kind_named(kwargs["kind"])
        except LookupError:
            self.kind = None
            self.required_permissions = []
        else:
            self.required_permissions = [model_permission(self.kind.model, "view")]
        super().initial(request, *args, **kwargs)

    @extend_schema(operation_id="run_progress", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, kind: str, pk: int):
        if self.kind is None:
            raise Http404
        run = self.kind.model.objects.select_related(*self.kind.related).filter(pk=pk).first()
        if run is None:
            raise Http404
        return Response(progress_dict(run))
