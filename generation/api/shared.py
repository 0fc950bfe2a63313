"""What generation's API view sets share: the prompt template version a run rendered with."""

from __future__ import annotations

from rest_framework import serializers


class TemplateRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.IntegerField()


def template_ref(template) -> dict | None:
    """The prompt template version a run rendered with, as the API names it."""
    if template is None:
        return None
    return {"id": template.pk, "name": template.name, "version": template.version}
