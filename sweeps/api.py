"""Staff API of sweeps: create (sweeps.services.sweep_create), list, retrieve with every cell,
cancel, and the chart (PNG, or SVG with ``?image=svg``)."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from generation.engine import charts
from generation.models import FineTuneRun, InstructionDataset, LanguageModel, PromptSet
from judging.models import JudgePrompt

from .models import Sweep
from .services import METHODS, sweep_cancel, sweep_create
from .tables import sweep_cells, sweep_counts, sweep_plot


class SweepInputSerializer(serializers.Serializer):
    """A new sweep: one fine-tune run per combination of the grid's values."""

    name = serializers.CharField(max_length=150)
    base_model = serializers.PrimaryKeyRelatedField(queryset=LanguageModel.objects.all())
    mixes = serializers.ListField(
        child=serializers.ListField(
            child=serializers.PrimaryKeyRelatedField(queryset=InstructionDataset.objects.all()),
            min_length=1,
            max_length=20,
        ),
        min_length=1,
        max_length=50,
        help_text="Data set ids per mix: [[1], [2], [1, 2]] sweeps 1, 2 and both together",
    )
    rows = serializers.ListField(
        child=serializers.IntegerField(min_value=1, allow_null=True),
        min_length=1,
        max_length=50,
        help_text="Rows per data set of a mix; null: all of its rows",
    )
    learning_rates = serializers.ListField(
        child=serializers.FloatField(), min_length=1, max_length=50
    )
    epochs = serializers.ListField(
        child=serializers.FloatField(), min_length=1, max_length=50, default=[1.0]
    )
    methods = serializers.ListField(
        child=serializers.ChoiceField(choices=list(METHODS)),
        min_length=1,
        max_length=2,
        default=[FineTuneRun.Method.LORA],
    )
    params = serializers.DictField(
        required=False, default=dict, help_text="Shared fine-tune hyper-parameters (max_steps...)"
    )
    prompt_set = serializers.PrimaryKeyRelatedField(queryset=PromptSet.objects.all())
    generation_params = serializers.DictField(required=False, default=dict)
    judge = serializers.PrimaryKeyRelatedField(queryset=LanguageModel.objects.all())
    mode = serializers.ChoiceField(choices=Sweep.Mode.choices, default=Sweep.Mode.PAIRWISE)
    judge_prompt = serializers.PrimaryKeyRelatedField(
        queryset=JudgePrompt.objects.all(), required=False, allow_null=True, default=None
    )
    judge_params = serializers.DictField(required=False, default=dict)
    human_study = serializers.BooleanField(default=False)
    seed = serializers.IntegerField(default=0, min_value=-(2**31), max_value=2**31 - 1)


class SweepSerializer(serializers.ModelSerializer):
    base_model_name = serializers.CharField(source="base_model.name", read_only=True)
    judge_name = serializers.CharField(source="judge.name", read_only=True)
    judge_prompt_name = serializers.CharField(source="judge_prompt", read_only=True)
    counts = serializers.SerializerMethodField()

    class Meta:
        model = Sweep
        fields = [
            "id",
            "name",
            "base_model",
            "base_model_name",
            "grid",
            "params",
            "prompt_set",
            "generation_params",
            "judge",
            "judge_name",
            "mode",
            "judge_prompt",
            "judge_prompt_name",
            "judge_params",
            "human_study",
            "study",
            "base_run",
            "seed",
            "status",
            "error",
            "counts",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_counts(self, sweep: Sweep) -> dict:
        """Cells per state."""
        return sweep_counts(sweep_cells(sweep))


class SweepDetailSerializer(SweepSerializer):
    cells = serializers.SerializerMethodField()

    class Meta(SweepSerializer.Meta):
        fields = [*SweepSerializer.Meta.fields, "cells"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_cells(self, sweep: Sweep) -> list[dict]:
        """Every cell in grid order: values, status, score with interval, best, run ids."""
        return sweep_cells(sweep)


class SweepViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Staff only: sweeps name models, data sets and runs."""

    # Starting a sweep spends GPU time: the right to run models as well as to add the row.
    action_permissions = {
        "create": ["sweeps.add_sweep", "generation.run_languagemodel"],
        "cancel": ["sweeps.change_sweep"],
        "chart": ["sweeps.view_sweep"],
    }
    queryset = Sweep.objects.select_related("base_model", "judge", "judge_prompt")
    serializer_class = SweepSerializer
    filterset_fields = ["base_model", "status", "mode"]

    def get_serializer_class(self):
        return SweepDetailSerializer if self.action == "retrieve" else SweepSerializer

    @extend_schema(request=SweepInputSerializer, responses={201: SweepDetailSerializer})
    def create(self, request):
        form = SweepInputSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        sweep = sweep_create(**form.validated_data, user=request.user)
        return Response(SweepDetailSerializer(sweep).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=SweepSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel every queued or running run of the sweep (409 when it is not running)."""
        sweep = sweep_cancel(sweep=self.get_object(), user=request.user)
        return Response(SweepSerializer(sweep).data)

    @extend_schema(
        parameters=[OpenApiParameter("image", str, enum=list(charts.FORMATS))],
        responses={
            (200, "image/png"): OpenApiTypes.BINARY,
            (200, "image/svg+xml"): OpenApiTypes.STR,
        },
    )
    @action(detail=True, methods=["get"], url_path="plot")
    def chart(self, request, pk=None):
        """Score against training rows, one line per learning rate, the best cell ringed."""
        fmt = request.query_params.get("image", "png")
        if fmt not in charts.FORMATS:
            raise ValidationError({"image": charts.UNKNOWN_FORMAT.format(fmt=fmt)})
        chart = sweep_plot(self.get_object(), fmt=fmt)
        kind = "image/png" if fmt == "png" else "image/svg+xml"
        return HttpResponse(chart.data, content_type=kind)
