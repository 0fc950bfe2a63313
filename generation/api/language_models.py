"""The model registry: weights a worker loads, or a served endpoint."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from ..lineage import model_lineage
from ..models import LanguageModel
from ..registry import LANGUAGE_MODEL_FIELDS, language_model_register, language_model_update
from ..templates import model_template_check, template_from_model
from .templates import PreviewTokensSerializer, PromptTemplateSerializer


class LanguageModelSerializer(serializers.ModelSerializer):
    # Where the model came from: base, and per fine-tune the method, data sets, preference pairs
    # and the study whose votes made them (generation/lineage.py).
    lineage = serializers.SerializerMethodField()

    class Meta:
        model = LanguageModel
        fields = ["id", *LANGUAGE_MODEL_FIELDS, "lineage", "created_at"]
        read_only_fields = ["created_at", "lineage"]

    def get_lineage(self, model: LanguageModel) -> dict:
        return model_lineage(model)

    # The registry decides who may change what a worker loads (SECURITY.md), for the admin too.
    def create(self, validated_data):
        user = self.context["request"].user
        return language_model_register(**validated_data, user=user)

    def update(self, instance, validated_data):
        user = self.context["request"].user
        return language_model_update(model=instance, changes=validated_data, user=user)


class TemplateCheckSerializer(serializers.Serializer):
    template = serializers.CharField(help_text="The prompt template the model names")
    version = serializers.IntegerField(help_text="Its latest version (what a run would use)")
    own_chat_template = serializers.CharField(help_text="The model's own chat template, or ''")
    own_chat_template_file = serializers.CharField(
        help_text="chat_template.jinja or tokenizer_config.json (where it was found), or ''"
    )
    diff = serializers.CharField(
        help_text="Unified diff of both rendered on a sample conversation ('' when the same)"
    )
    preview = PreviewTokensSerializer(allow_null=True, help_text="What generation sends")
    preview_error = serializers.CharField()
    warnings = serializers.ListField(child=serializers.CharField())


class AdoptInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="Name of the new template")
    use = serializers.BooleanField(default=False, help_text="The model names it from now on")


class LanguageModelViewSet(viewsets.ModelViewSet):
    queryset = LanguageModel.objects.all()
    serializer_class = LanguageModelSerializer
    filterset_fields = ["name", "prompt_format"]
    action_permissions = {
        "template": ["generation.view_languagemodel", "generation.view_prompttemplate"],
        "adopt_template": ["generation.view_languagemodel", "generation.add_prompttemplate"],
    }

    @extend_schema(responses={200: TemplateCheckSerializer})
    @action(detail=True, methods=["get"])
    def template(self, request, pk=None):
        """The model's prompting: its template, its own chat template (when it has one) and the
        diff of the two on a sample conversation, what generation sends (text, token ids,
        special tokens), and special-token warnings. Reads the tokenizer on this machine."""
        check = model_template_check(model=self.get_object())
        return Response(TemplateCheckSerializer(check).data)

    @extend_schema(request=AdoptInputSerializer, responses={201: PromptTemplateSerializer})
    @action(detail=True, methods=["post"], url_path="template/adopt")
    def adopt_template(self, request, pk=None):
        """Create a template (kind jinja, version 1) from the model's own chat template; with
        ``use`` the model names it from then on (needs the right to change models)."""
        model = self.get_object()
        form = AdoptInputSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        use = form.validated_data["use"]
        if use and not request.user.has_perm("generation.change_languagemodel"):
            raise PermissionDenied("using the new template needs the right to change models")
        row = template_from_model(
            model=model, name=form.validated_data["name"], use=use, user=request.user
        )
        data = PromptTemplateSerializer(row, context={"request": request}).data
        return Response(data, status=status.HTTP_201_CREATED)
