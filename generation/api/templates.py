"""Prompt templates: versioned; editing a version a run used returns the new version it made."""

from __future__ import annotations

import dataclasses

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from ..engine import render as engine_render
from ..models import LanguageModel, PromptTemplate
from ..templates import (
    TEMPLATE_FIELDS,
    as_template,
    model_preview,
    template_create,
    template_delete,
    template_in_use,
    template_update,
)


class PromptTemplateSerializer(serializers.ModelSerializer):
    in_use = serializers.SerializerMethodField(
        help_text="A run recorded this version: editing it saves a new version"
    )
    stop_strings = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False), required=False
    )

    class Meta:
        model = PromptTemplate
        fields = ["id", *TEMPLATE_FIELDS, "version", "in_use", "created_by", "created_at"]
        read_only_fields = ["version", "created_by", "created_at"]
        # A template's spaces and newlines are part of the prompt: keep them as sent.
        extra_kwargs = {
            f: {"trim_whitespace": False}
            for f in TEMPLATE_FIELDS
            if f not in ("name", "kind", "stop_strings", "end_with_eos")
        }
        # Names and versions are the service's to allot (templates.template_create / _update).
        validators = []

    def get_in_use(self, obj: PromptTemplate) -> bool:
        return template_in_use(obj)

    def create(self, validated_data):
        user = self.context["request"].user
        return template_create(**validated_data, user=user)

    def update(self, instance, validated_data):
        user = self.context["request"].user
        return template_update(template=instance, changes=validated_data, user=user)


class PreviewTokensSerializer(serializers.Serializer):
    prompt = serializers.CharField(help_text="The model's whole input")
    token_ids = serializers.ListField(child=serializers.IntegerField())
    tokens = serializers.ListField(child=serializers.CharField())
    special_tokens = serializers.ListField(
        child=serializers.CharField(), help_text="The special tokens among them, in order"
    )
    decoded = serializers.CharField(help_text="The ids decoded, special tokens kept")
    tokenizer_would_add = serializers.ListField(
        child=serializers.CharField(),
        help_text="Tokens the tokenizer adds by itself that generation does not add",
    )


class RenderInputSerializer(serializers.Serializer):
    turns = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False), min_length=1, max_length=50
    )
    replies = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False, allow_blank=True),
        required=False,
        default=list,
        max_length=50,
    )
    model = serializers.PrimaryKeyRelatedField(
        queryset=LanguageModel.objects.all(),
        required=False,
        allow_null=True,
        help_text="Render with this model's tokenizer: the exact text and tokens generation "
        "sends it (BOS/EOS and other special tokens included)",
    )


class RenderOutputSerializer(serializers.Serializer):
    prompt = serializers.CharField(help_text="The model's whole input; the reply follows it")
    messages = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        help_text="What an endpoint model is sent instead",
    )
    stop_strings = serializers.ListField(child=serializers.CharField())
    tokens = PreviewTokensSerializer(
        required=False, help_text="With a model: its tokenizer's view of the prompt"
    )


class PromptTemplateViewSet(viewsets.ModelViewSet):
    """Templates by name and version. PUT/PATCH on a version a run used leaves it as it is and
    answers with the new version holding the changes (its ``id`` and ``version`` say which)."""

    queryset = PromptTemplate.objects.all()
    serializer_class = PromptTemplateSerializer
    filterset_fields = ["name", "kind", "version"]
    action_permissions = {"preview": ["generation.view_prompttemplate"]}

    @extend_schema(request=RenderInputSerializer, responses={200: RenderOutputSerializer})
    @action(detail=True, methods=["post"])
    def preview(self, request, pk=None):
        """Preview: the prompt this version renders for ``turns`` (user turns) and ``replies``
        (one fewer). With ``model``, rendered and tokenized with that model's tokenizer exactly
        as generation does (``tokens``); without one, a chat_template version (each model's
        tokenizer renders it) is a 400."""
        row = self.get_object()
        template = as_template(row)
        form = RenderInputSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            messages = engine_render.conversation(
                form.validated_data["turns"], form.validated_data["replies"]
            )
            if len(messages) % 2 == 0:
                raise ValueError(engine_render.PROMPT_ENDS_WITH_REPLY)
            model = form.validated_data.get("model")
            if model is not None:
                if not request.user.has_perm("generation.view_languagemodel"):
                    raise PermissionDenied("previewing with a model needs the right to view models")
                tokens = model_preview(model=model, template=row, messages=messages)
                prompt = tokens.prompt
            else:
                tokens = None
                prompt = engine_render.render_prompt(template, messages)
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from None
        body = {
            "prompt": prompt,
            "messages": engine_render.chat_messages(template, messages),
            "stop_strings": list(template.stop_strings),
        }
        if tokens is not None:
            body["tokens"] = dataclasses.asdict(tokens)
        return Response(body)

    def perform_destroy(self, instance):
        template_delete(template=instance)
