"""The base of every run's API view set: list, retrieve, create through the kind's service,
cancel and retry (409 when the run's state forbids it, through the API's exception handler)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from evalsite.errors import ServiceError

from . import lifecycle
from .kinds import kind_of
from .provenance import provenance_check

# The state fields every run serializer lists after its own.
RUN_STATE_FIELDS = ["error", "attempts", "created_at", "started_at", "finished_at", "heartbeat_at"]

RUN_NOT_EDITED = (
    "a {label} is not edited: what it does is set when it is made; cancel it and create another"
)
_REFUSED = {
    400: OpenApiResponse(description="runs are not edited (a queued one: cancel and create)"),
    409: OpenApiResponse(description="the run has started: its provenance is kept"),
}


def shards_field() -> serializers.IntegerField:
    """What a create request of a kind that can be split gives as ``shards``
    (evalsite/runs/shards.py)."""
    return serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=1,
        max_value=1024,
        write_only=True,
        help_text="Split the run into this many shards that workers execute at once (none: "
        "one per worker consuming its queue)",
    )


class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Subclasses set ``queryset``, ``serializer_class`` (the run as it is shown),
    ``input_serializer_class`` (what create takes) and ``create_run(data, user)`` (the kind's
    service), and ``action_permissions`` for create, cancel and retry."""

    input_serializer_class = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # The schema of the shared actions, per kind: what create takes, what each answers.
        if cls.input_serializer_class is not None:
            extend_schema_view(
                create=extend_schema(
                    request=cls.input_serializer_class, responses={201: cls.serializer_class}
                ),
                cancel=extend_schema(request=None, responses=cls.serializer_class),
                retry=extend_schema(request=None, responses=cls.serializer_class),
                update=extend_schema(request=OpenApiTypes.OBJECT, responses=_REFUSED),
                partial_update=extend_schema(request=OpenApiTypes.OBJECT, responses=_REFUSED),
            )(cls)

    def create_run(self, data: dict, user):
        raise NotImplementedError

    def create(self, request):
        form = self.input_serializer_class(data=request.data)
        form.is_valid(raise_exception=True)
        run = self.create_run(form.validated_data, request.user)
        return Response(self.serializer_class(run).data, status=status.HTTP_201_CREATED)

    def update(self, request, pk=None, partial=False):
        """Refused: 409 naming the fields when the run has started (its model, template and
        parameters are kept as they were: runs/provenance.py), 400 otherwise."""
        run = self.get_object()
        values = request.data if isinstance(request.data, dict) else {}
        provenance_check(run, dict(values))
        raise ServiceError(RUN_NOT_EDITED.format(label=kind_of(run).label))

    def partial_update(self, request, pk=None):
        return self.update(request, pk, partial=True)

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Queued runs stop at once, running ones at their next check (409 when finished)."""
        run = lifecycle.cancel(self.get_object(), request.user)
        return Response(self.serializer_class(run).data)

    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Queue a failed or cancelled run again; it does only what it is missing (409 when it
        is in another state)."""
        run = self.retry_run(self.get_object(), request.user)
        return Response(self.serializer_class(run).data)

    def retry_run(self, run, user):
        """The kind's retry (a subclass may check more first)."""
        return lifecycle.retry(run, user)
