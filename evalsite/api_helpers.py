"""What every app's staff API shares beyond the run view sets (evalsite/runs/api.py): the
``POST import/`` upload action of a view set, checked and imported in one go."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import parsers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from evalsite.errors import ServiceError
from evalsite.imports import TOO_LARGE, ImportFormatError


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
    """Check the upload form, then import the file in one go (nothing on any error): 201.
    A refused file is a 400 naming the ``file`` field."""
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
