"""Staff-only REST API for prompt sets, questions, models, generation runs, instruction data
sets and fine-tune runs."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, parsers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from .engine.params import FINETUNE, Param
from .errors import ServiceError
from .importers import TOO_LARGE, ImportFormatError
from .models import (
    FineTuneLog,
    FineTuneRun,
    GenerationRun,
    InstructionDataset,
    LanguageModel,
    PromptSet,
    Question,
)
from .params import FINETUNE_FIELDS
from .registry import (
    LANGUAGE_MODEL_FIELDS,
    SET_HAS_ANSWERS,
    language_model_register,
    language_model_update,
    prompt_set_import,
)
from .runs import generation_run_cancel, generation_run_create, generation_run_retry
from .training.data import (
    instruction_dataset_augment,
    instruction_dataset_import,
    instruction_dataset_token_stats,
)
from .training.finetune import finetune_run_cancel, finetune_run_create, finetune_run_resume

# The state every run shows (models.Run), after its own fields.
RUN_STATE_FIELDS = ["error", "attempts", "created_at", "started_at", "finished_at", "heartbeat_at"]


def _import_action(form_class, output_class):
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


def _import_upload(request, form_class, service, output_class, **extra) -> Response:
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


def _run_change(service, run, output_class, user) -> Response:
    """Cancel, retry or resume a run as ``user`` (the audit log's who): the run as it now is,
    or 409 when its state forbids it."""
    try:
        run = service(run=run, user=user)
    except ServiceError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    return Response(output_class(run).data)


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
        fields = ["id", *LANGUAGE_MODEL_FIELDS, "created_at"]
        read_only_fields = ["created_at"]

    # The registry decides who may change what a worker loads (SECURITY.md), for the admin too.
    def create(self, validated_data):
        user = self.context["request"].user
        try:
            return language_model_register(**validated_data, user=user)
        except ServiceError as exc:
            raise ValidationError({"detail": str(exc)}) from None

    def update(self, instance, validated_data):
        user = self.context["request"].user
        try:
            return language_model_update(model=instance, changes=validated_data, user=user)
        except ServiceError as exc:
            raise ValidationError({"detail": str(exc)}) from None


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
            *RUN_STATE_FIELDS,
        ]
        # What follows the request's own fields is the run's state.
        read_only_fields = fields[fields.index("imported") :]


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

    @_import_action(PromptSetImportSerializer, PromptSetSerializer)
    def import_file(self, request):
        """Import a prompt set from a CSV / JSONL / JSON upload (atomic)."""
        return _import_upload(
            request, PromptSetImportSerializer, prompt_set_import, PromptSetSerializer
        )


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
    # Queueing work for the GPU needs the right to run models as well as to add the row.
    action_permissions = {
        "create": ["generation.add_generationrun", "generation.run_languagemodel"],
        "retry": ["generation.change_generationrun", "generation.run_languagemodel"],
    }
    queryset = GenerationRun.objects.select_related("model", "prompt_set")
    serializer_class = GenerationRunSerializer
    filterset_fields = ["model", "prompt_set", "status"]

    def perform_create(self, serializer):
        data = serializer.validated_data
        try:
            serializer.instance = generation_run_create(
                model=data["model"],
                prompt_set=data["prompt_set"],
                params=data.get("params") or {},
                seed=data.get("seed", 0),
                batch_size=data.get("batch_size", 8),
                user=self.request.user,
            )
        except ServiceError as exc:
            raise ValidationError(str(exc)) from None

    @extend_schema(request=None, responses=GenerationRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return _run_change(
            generation_run_cancel, self.get_object(), GenerationRunSerializer, request.user
        )

    @extend_schema(request=None, responses=GenerationRunSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        with transaction.atomic():
            return _run_change(
                generation_run_retry, self.get_object(), GenerationRunSerializer, request.user
            )


# --- instruction data sets ---------------------------------------------------------------------


class InstructionDatasetSerializer(serializers.ModelSerializer):
    class Meta:
        model = InstructionDataset
        fields = ["id", "name", "description", "source", "stats", "derived_from", "created_at"]
        read_only_fields = ["source", "stats", "derived_from", "created_at"]


class InstructionDatasetImportSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    file = serializers.FileField()
    description = serializers.CharField(required=False, allow_blank=True, default="")
    drop_duplicates = serializers.BooleanField(required=False, default=False)
    tokenizer_model = serializers.PrimaryKeyRelatedField(
        queryset=LanguageModel.objects.all(), required=False, allow_null=True, default=None
    )


class TokenStatsSerializer(serializers.Serializer):
    model = serializers.PrimaryKeyRelatedField(queryset=LanguageModel.objects.all())


class AugmentSerializer(serializers.Serializer):
    model = serializers.PrimaryKeyRelatedField(queryset=LanguageModel.objects.all())
    name = serializers.CharField(max_length=200)
    params = serializers.DictField(required=False, default=dict)
    seed = serializers.IntegerField(required=False, default=0)
    batch_size = serializers.IntegerField(required=False, default=8, min_value=1, max_value=512)


class AugmentOutputSerializer(serializers.Serializer):
    run = serializers.IntegerField(source="run_id")
    name = serializers.CharField()


class InstructionDatasetViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Data sets are created by import (or augmentation); their rows never change."""

    action_permissions = {
        "import_file": ["generation.add_instructiondataset"],
        "token_stats": ["generation.view_instructiondataset"],
        "augment": [
            "generation.add_instructiondataset",
            "generation.add_generationrun",
            "generation.run_languagemodel",
        ],
    }
    queryset = InstructionDataset.objects.all()
    serializer_class = InstructionDatasetSerializer
    filterset_fields = ["name"]

    @_import_action(InstructionDatasetImportSerializer, InstructionDatasetSerializer)
    def import_file(self, request):
        """Import a data set from a JSONL / JSON / CSV upload (atomic)."""
        return _import_upload(
            request,
            InstructionDatasetImportSerializer,
            instruction_dataset_import,
            InstructionDatasetSerializer,
            user=request.user,
        )

    @extend_schema(request=TokenStatsSerializer, responses=InstructionDatasetSerializer)
    @action(detail=True, methods=["post"], url_path="token-stats")
    def token_stats(self, request, pk=None):
        """Token-length percentiles as the given model would be trained on the set."""
        form = TokenStatsSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            dataset = instruction_dataset_token_stats(
                dataset=self.get_object(), model=form.validated_data["model"]
            )
        except ServiceError as exc:
            raise ValidationError(str(exc)) from None
        return Response(InstructionDatasetSerializer(dataset).data)

    @extend_schema(request=AugmentSerializer, responses={202: AugmentOutputSerializer})
    @action(detail=True, methods=["post"])
    def augment(self, request, pk=None):
        """Queue answers by a model to the set's unique instructions, saved as a new set."""
        form = AugmentSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            augmentation = instruction_dataset_augment(
                dataset=self.get_object(), user=request.user, **form.validated_data
            )
        except ServiceError as exc:
            raise ValidationError(str(exc)) from None
        data = AugmentOutputSerializer(augmentation).data
        return Response(data, status=status.HTTP_202_ACCEPTED)


# --- fine-tune runs ----------------------------------------------------------------------------


class FineTuneSourceSerializer(serializers.Serializer):
    dataset = serializers.PrimaryKeyRelatedField(queryset=InstructionDataset.objects.all())
    rows = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)


class FineTuneRunInputSerializer(serializers.Serializer):
    """A new run: unset hyper-parameters take their defaults (see the run's fields)."""

    base_model = serializers.PrimaryKeyRelatedField(queryset=LanguageModel.objects.all())
    datasets = FineTuneSourceSerializer(many=True, allow_empty=False)
    method = serializers.ChoiceField(choices=FineTuneRun.Method.choices, default="lora")
    model_name = serializers.CharField(required=False, allow_blank=True, default="")

    def get_fields(self):
        # One optional field per hyper-parameter; the service checks the values.
        return {**super().get_fields(), **{p.name: _hyperparameter_field(p) for p in FINETUNE}}


def _hyperparameter_field(param: Param) -> serializers.Field:
    if param.kind is list:
        return serializers.ListField(child=serializers.CharField(), required=False)
    kinds = {bool: serializers.BooleanField, int: serializers.IntegerField}
    return kinds.get(param.kind, serializers.FloatField)(required=False)


class FineTuneRunSerializer(serializers.ModelSerializer):
    datasets = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = FineTuneRun
        fields = [
            "id",
            "base_model",
            "datasets",
            "method",
            "model_name",
            *FINETUNE_FIELDS,
            "status",
            "step",
            "total_steps",
            "epoch",
            "progress",
            "train_examples",
            "eval_examples",
            "skipped_examples",
            "train_tokens",
            "output_path",
            "checkpoint",
            "resumed_from_step",
            "result_model",
            *RUN_STATE_FIELDS,
        ]
        read_only_fields = fields

    def get_datasets(self, run: FineTuneRun) -> list[dict]:
        return [
            {"dataset": s.dataset_id, "name": s.dataset.name, "rows": s.rows}
            for s in run.sources.select_related("dataset")
        ]

    def get_progress(self, run: FineTuneRun) -> float:
        return round(run.step / run.total_steps, 4) if run.total_steps else 0.0


class FineTuneRunDetailSerializer(FineTuneRunSerializer):
    """A run with its loss log (``?log_after=STEP`` returns only newer entries)."""

    loss_log = serializers.SerializerMethodField()
    eval_log = serializers.SerializerMethodField()

    class Meta(FineTuneRunSerializer.Meta):
        fields = [*FineTuneRunSerializer.Meta.fields, "loss_log", "eval_log"]
        read_only_fields = fields

    def _entries(self, run: FineTuneRun, kind: str):
        after = self.context.get("log_after", -1)
        return run.log_entries.filter(kind=kind, step__gt=after).order_by("step")

    def get_loss_log(self, run: FineTuneRun) -> list[dict]:
        return [
            {"step": e.step, "loss": e.loss, "learning_rate": e.learning_rate, "epoch": e.epoch}
            for e in self._entries(run, FineTuneLog.Kind.TRAIN)
        ]

    def get_eval_log(self, run: FineTuneRun) -> list[dict]:
        return [
            {"step": e.step, "loss": e.loss, "epoch": e.epoch}
            for e in self._entries(run, FineTuneLog.Kind.EVAL)
        ]


class FineTuneRunViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    action_permissions = {
        "create": ["generation.add_finetunerun", "generation.run_languagemodel"],
        "resume": ["generation.change_finetunerun", "generation.run_languagemodel"],
    }
    queryset = FineTuneRun.objects.select_related("base_model", "result_model")
    serializer_class = FineTuneRunSerializer
    filterset_fields = ["base_model", "status", "method"]

    def get_serializer_class(self):
        return FineTuneRunDetailSerializer if self.action == "retrieve" else FineTuneRunSerializer

    def get_serializer_context(self):
        context = super().get_serializer_context()
        after = self.request.query_params.get("log_after", "")
        if after.lstrip("-").isdigit():
            context["log_after"] = int(after)
        return context

    @extend_schema(request=FineTuneRunInputSerializer, responses={201: FineTuneRunSerializer})
    def create(self, request):
        form = FineTuneRunInputSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        sources = [(s["dataset"], s["rows"]) for s in data.pop("datasets")]
        try:
            run = finetune_run_create(
                base_model=data.pop("base_model"),
                datasets=sources,
                method=data.pop("method"),
                model_name=data.pop("model_name"),
                params=data,
                user=request.user,
            )
        except ServiceError as exc:
            raise ValidationError(str(exc)) from None
        return Response(FineTuneRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=FineTuneRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Stop after the current step; the last checkpoint is kept for resuming."""
        return _run_change(
            finetune_run_cancel, self.get_object(), FineTuneRunSerializer, request.user
        )

    @extend_schema(request=None, responses=FineTuneRunSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        """Queue a failed or cancelled run again; it continues from its last checkpoint."""
        return _run_change(
            finetune_run_resume, self.get_object(), FineTuneRunSerializer, request.user
        )
