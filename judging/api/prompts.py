"""Judge prompts: versioned like prompt templates (editing a version a judge run used returns the
new version it made), a preview, and prompts uploaded from a file."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from jinja2 import TemplateError
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from evalsite.api_helpers import import_action, import_upload

from ..engine import verdicts
from ..models import JudgePrompt
from ..prompts import (
    PROMPT_FIELDS,
    judge_prompt_create,
    judge_prompt_delete,
    judge_prompt_in_use,
    judge_prompt_preview,
    judge_prompt_update,
    judge_prompts_import,
)

# A prompt's spaces and newlines are part of what the judge reads: keep them as sent.
_TEXT = ("description", "system_prompt", "template")


class JudgePromptSerializer(serializers.ModelSerializer):
    in_use = serializers.SerializerMethodField(
        help_text="A judge run recorded this version: editing it saves a new version"
    )

    class Meta:
        model = JudgePrompt
        fields = ["id", *PROMPT_FIELDS, "version", "in_use", "created_by", "created_at"]
        # ``source`` says which file a prompt came from: only a file import sets it.
        read_only_fields = ["source", "version", "created_by", "created_at"]
        extra_kwargs = {f: {"trim_whitespace": False} for f in _TEXT}
        # Names and versions are the service's to allot (prompts.judge_prompt_create / _update).
        validators = []

    def get_in_use(self, obj: JudgePrompt) -> bool:
        return judge_prompt_in_use(obj)

    def create(self, validated_data):
        return judge_prompt_create(**validated_data, user=self.context["request"].user)

    def update(self, instance, validated_data):
        user = self.context["request"].user
        return judge_prompt_update(prompt=instance, changes=validated_data, user=user)


def _value() -> serializers.CharField:
    return serializers.CharField(
        trim_whitespace=False, allow_blank=True, required=False, max_length=100_000
    )


class PreviewInputSerializer(serializers.Serializer):
    """Values for the prompt's variables; an empty body previews with sample values."""

    question = _value()
    answer_1 = _value()
    answer_2 = _value()
    answer = _value()
    reference = _value()
    criteria = _value()


class PreviewOutputSerializer(serializers.Serializer):
    system_prompt = serializers.CharField()
    prompt = serializers.CharField(help_text="What the judge is asked (its user turn)")
    verdict_format = serializers.CharField()


class PromptFileSerializer(serializers.Serializer):
    """A judge prompt file: JSON, JSON Lines, YAML, FastChat's judge_prompts.jsonl, or a text
    template with YAML front matter (see ``manage.py load_judge_prompt --help``)."""

    file = serializers.FileField()
    only = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        default=None,
        help_text="Just these prompts of the file",
    )
    name = serializers.CharField(
        max_length=100, required=False, default=None, help_text="Store a one-prompt file so"
    )


def _prompts_out(rows) -> JudgePromptSerializer:
    return JudgePromptSerializer(rows, many=True)


class JudgePromptViewSet(viewsets.ModelViewSet):
    """Judge prompts by name and version. PUT/PATCH on a version a judge run used leaves it as it
    is and answers with the new version holding the changes (its ``id`` and ``version`` say
    which); a used version cannot be deleted."""

    queryset = JudgePrompt.objects.all()
    serializer_class = JudgePromptSerializer
    filterset_fields = ["name", "kind", "version"]
    action_permissions = {
        "preview": ["judging.view_judgeprompt"],
        "import_file": ["judging.add_judgeprompt", "judging.change_judgeprompt"],
    }

    @extend_schema(request=PreviewInputSerializer, responses={200: PreviewOutputSerializer})
    @action(detail=True, methods=["post"])
    def preview(self, request, pk=None):
        """The judge prompt this version renders for the values given (none: samples)."""
        row = self.get_object()
        form = PreviewInputSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        given = dict(form.validated_data)
        wanted = set(verdicts.VARIABLES[row.kind])
        extra = sorted(set(given) - wanted)
        if extra:
            raise ValidationError({"detail": f"a {row.kind} prompt has no {', '.join(extra)}"})
        try:
            text = judge_prompt_preview(row, given or None)
        except (TemplateError, ValueError) as exc:  # a stored row that no longer renders
            raise ValidationError({"detail": f"the template failed: {exc}"}) from None
        return Response(
            {
                "system_prompt": row.system_prompt,
                "prompt": text,
                "verdict_format": row.verdict_format,
            }
        )

    @import_action(PromptFileSerializer, JudgePromptSerializer(many=True))
    def import_file(self, request):
        """Store every prompt of an uploaded file (checked first, then all in one transaction;
        a name that exists gets a new version when a run used the current one)."""
        return import_upload(
            request, PromptFileSerializer, judge_prompts_import, _prompts_out, user=request.user
        )

    def perform_destroy(self, instance):
        judge_prompt_delete(prompt=instance)
