"""Answers with their provenance (staff only: never in anything an annotator can see)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from ..models import Answer
from ..regenerate import answers_regenerate
from .runs import GenerationRunSerializer
from .shared import TemplateRefSerializer, template_ref

# How an answer was made: the template version, the exact prompt (or the request messages),
# the revision the loader saw, decoding parameters and seed (``decoding``), token counts and why
# it stopped.
PROVENANCE_FIELDS = [
    "template",
    "prompt_text",
    "prompt_tokens",
    "new_tokens",
    "model_revision",
    "decoding",
    "stop_reason",
    "truncated",
]


class AnswerSerializer(serializers.ModelSerializer):
    template = serializers.SerializerMethodField()

    class Meta:
        model = Answer
        fields = [
            "id",
            "run",
            "question",
            "turn",
            "text",
            *PROVENANCE_FIELDS,
            "copied_from",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(TemplateRefSerializer(allow_null=True))
    def get_template(self, answer: Answer) -> dict | None:
        """The template version the answer's run rendered with (None for imported answers)."""
        return template_ref(answer.run.template)


class AnswerViewSet(viewsets.ReadOnlyModelViewSet):
    action_permissions = {
        "regenerate": ["generation.add_generationrun", "generation.run_languagemodel"],
    }
    queryset = Answer.objects.select_related("run__template").order_by("run", "question", "turn")
    serializer_class = AnswerSerializer
    filterset_fields = ["run", "question", "turn", "stop_reason", "truncated"]

    @extend_schema(request=None, responses={201: GenerationRunSerializer})
    @action(detail=True, methods=["post"])
    def regenerate(self, request, pk=None):
        """Queue a new run making this answer again (and its question's later turns) with its
        run's parameters, every other answer copied; its ``regeneration`` says whether the
        answer came out the same. 409 when its run is imported or still active."""
        (run,) = answers_regenerate(answers=[self.get_object()], user=request.user)
        return Response(GenerationRunSerializer(run).data, status=status.HTTP_201_CREATED)
