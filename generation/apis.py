"""Staff-only REST API for prompt sets, questions, models and generation runs."""

from __future__ import annotations

from django.db import transaction
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, parsers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from . import services
from .importers import ImportFormatError
from .models import GenerationRun, LanguageModel, PromptSet, Question


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
        fields = ["id", "prompt_set", "position", "text", "category", "external_id"]


class LanguageModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = LanguageModel
        fields = [
            "id",
            "name",
            "name_or_path",
            "revision",
            "maker",
            "prompt_format",
            "generation_defaults",
            "base_model",
            "adapter_path",
            "trust_remote_code",
            "created_at",
        ]
        read_only_fields = ["created_at"]

    def validate_trust_remote_code(self, value: bool) -> bool:
        user = self.context["request"].user
        if value and not user.is_superuser:
            raise ValidationError(services.REMOTE_CODE_SUPERUSER)
        return value


class GenerationRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = GenerationRun
        fields = [
            "id",
            "model",
            "prompt_set",
            "params",
            "seed",
            "batch_size",
            "imported",
            "status",
            "done",
            "total",
            "error",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
        ]
        read_only_fields = [
            "imported",
            "status",
            "done",
            "total",
            "error",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
        ]


class PromptSetViewSet(viewsets.ModelViewSet):
    queryset = PromptSet.objects.all()
    serializer_class = PromptSetSerializer
    filterset_fields = ["name"]

    def perform_update(self, serializer):
        if serializer.instance.has_answers:
            raise ValidationError(services.SET_HAS_ANSWERS.format(name=serializer.instance.name))
        serializer.save()

    def perform_destroy(self, instance):
        if instance.has_answers:
            raise ValidationError(services.SET_HAS_ANSWERS.format(name=instance.name))
        instance.delete()

    @extend_schema(request=PromptSetImportSerializer, responses={201: PromptSetSerializer})
    @action(
        detail=False,
        methods=["post"],
        url_path="import",
        parser_classes=[parsers.MultiPartParser],
    )
    def import_file(self, request):
        """Import a prompt set from a CSV / JSONL / JSON upload (atomic)."""
        form = PromptSetImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        try:
            prompt_set = services.prompt_set_import(
                name=form.validated_data["name"],
                data=upload.read(),
                filename=upload.name,
                replace=form.validated_data["replace"],
                description=form.validated_data["description"],
            )
        except (ImportFormatError, services.ServiceError) as exc:
            raise ValidationError({"file": [str(exc)]}) from None
        return Response(PromptSetSerializer(prompt_set).data, status=status.HTTP_201_CREATED)


class QuestionViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Question.objects.all()
    serializer_class = QuestionSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_fields = ["prompt_set", "category"]


class LanguageModelViewSet(viewsets.ModelViewSet):
    queryset = LanguageModel.objects.all()
    serializer_class = LanguageModelSerializer
    filterset_fields = ["name", "prompt_format"]


class GenerationRunViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    queryset = GenerationRun.objects.select_related("model", "prompt_set")
    serializer_class = GenerationRunSerializer
    filterset_fields = ["model", "prompt_set", "status"]

    def perform_create(self, serializer):
        data = serializer.validated_data
        try:
            serializer.instance = services.generation_run_create(
                model=data["model"],
                prompt_set=data["prompt_set"],
                params=data.get("params") or {},
                seed=data.get("seed", 0),
                batch_size=data.get("batch_size", 8),
                user=self.request.user,
            )
        except services.ServiceError as exc:
            raise ValidationError(str(exc)) from None

    @extend_schema(request=None, responses=GenerationRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        try:
            run = services.generation_run_cancel(run=self.get_object())
        except services.ServiceError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(GenerationRunSerializer(run).data)

    @extend_schema(request=None, responses=GenerationRunSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        with transaction.atomic():
            try:
                run = services.generation_run_retry(run=self.get_object())
            except services.ServiceError as exc:
                return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(GenerationRunSerializer(run).data)
