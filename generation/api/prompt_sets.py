"""Prompt sets (imported from a file) and their questions."""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import serializers, viewsets
from rest_framework.exceptions import ValidationError

from evalsite.api_helpers import import_action, import_upload

from ..models import PromptSet, Question
from ..registry import SET_HAS_ANSWERS, prompt_set_import


class PromptSetSerializer(serializers.ModelSerializer):
    question_count = serializers.IntegerField(source="questions.count", read_only=True)

    class Meta:
        model = PromptSet
        fields = ["id", "name", "description", "source", "question_count", "created_at"]
        read_only_fields = ["source", "created_at"]


class PromptSetImportSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    file = serializers.FileField()
    description = serializers.CharField(required=False, allow_blank=True, default="")
    replace = serializers.BooleanField(required=False, default=False)


class QuestionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Question
        fields = ["id", "prompt_set", "position", "text", "follow_ups", "category", "external_id"]


class PromptSetViewSet(viewsets.ModelViewSet):
    action_permissions = {"import_file": ["generation.add_promptset"]}
    queryset = PromptSet.objects.all()
    serializer_class = PromptSetSerializer
    filterset_fields = ["name"]

    def perform_update(self, serializer):
        if serializer.instance.has_answers:
            raise ValidationError(SET_HAS_ANSWERS.format(name=serializer.instance.name))
        serializer.save()

    def perform_destroy(self, instance):
        if instance.has_answers:
            raise ValidationError(SET_HAS_ANSWERS.format(name=instance.name))
        instance.delete()

    @import_action(PromptSetImportSerializer, PromptSetSerializer)
    def import_file(self, request):
        """Import a prompt set from a CSV / JSONL / JSON upload (atomic)."""
        return import_upload(
            request, PromptSetImportSerializer, prompt_set_import, PromptSetSerializer
        )


class QuestionViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Question.objects.all()
    serializer_class = QuestionSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_fields = ["prompt_set", "category"]
