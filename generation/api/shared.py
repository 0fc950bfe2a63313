"""What the staff API's view sets share: template versions and upload imports. Run view sets
build on the spine's RunViewSet (evalsite/runs/api.py); ``RUN_STATE_FIELDS`` and ``run_change``
stay here for the apps whose run views are not on it yet (judging, evolution, sweeps)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import parsers, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from evalsite.errors import ServiceError
from evalsite.runs.api import RUN_STATE_FIELDS  # noqa: F401 - re-exported for judging, evolution

from ..importers import TOO_LARGE, ImportFormatError


class TemplateRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.IntegerField()


def template_ref(template) -> dict | None:
    """The prompt template version a run rendered with, as the API names it."""
    if template is None:
        return None
    return {"id": template.pk, "name": template.name, "version": template.version}


def import_action(form_class, output_class):
    """Declares a view set's ``POST import/`` (a multipart upload) and its schema."""

    def decorate(view):
        view = action(
            detail=False,
            methods=["post"],
            url_path="import",
            parser_classes=[parsers.MultiPartParser],
        )(view)
        return extend_schema(request=form_class, responses={201: output_class})(view)

    return decorate


def import_upload(request, form_class, service, output_class, **extra) -> Response:
    """Check the upload form, then import the file in one go (nothing on any error): 201."""
    form = form_class(data=request.data)
    form.is_valid(raise_exception=True)
    values = dict(form.validated_data)
    upload = values.pop("file")
    if upload.size > settings.MAX_UPLOAD_BYTES:
        # Refused by its size before a byte of it is read into memory.
        problem = TOO_LARGE.format(size=upload.size, limit=settings.MAX_UPLOAD_BYTES)
        raise ValidationError({"file": [f"{upload.name}: {problem}"]})
    try:
        created = service(data=upload.read(), filename=upload.name, **values, **extra)
    except (ImportFormatError, ServiceError) as exc:
        raise ValidationError({"file": [str(exc)]}) from None
    return Response(output_class(created).data, status=status.HTTP_201_CREATED)


def run_change(service, run, output_class, user) -> Response:
    """Cancel, retry or resume a run as ``user`` (the audit log's who): the run as it now is,
    or 409 when its state forbids it."""
    try:
        run = service(run=run, user=user)
    except ServiceError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    return Response(output_class(run).data)
