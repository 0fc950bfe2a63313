"""Benchmark runs: create (benchmarks.runs.benchmark_run_create), follow, cancel, retry, read
their results and page through their per-example outputs; and the tasks a run may name."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from evalsite.runs.api import RUN_STATE_FIELDS, RunViewSet, shards_field
from generation.models import LanguageModel

from ..catalog import task_rows
from ..models import BenchmarkRun, BenchmarkSample, PromptMode, Scoring
from ..results import result_rows
from ..runs import GEN_PARAMS, SYSTEM_LIMIT, benchmark_run_create

GEN_RULES = [f"{p.name} ({p.rule})" for p in GEN_PARAMS]


class BenchmarkRunInputSerializer(serializers.Serializer):
    model = serializers.PrimaryKeyRelatedField(queryset=LanguageModel.objects.all())
    tasks = serializers.ListField(
        child=serializers.CharField(max_length=200),
        allow_empty=False,
        max_length=200,
        help_text="Task or group names from /api/benchmark-tasks/",
    )
    num_fewshot = serializers.IntegerField(default=0, min_value=0, max_value=32)
    scoring = serializers.ChoiceField(choices=Scoring.choices, default=Scoring.LOGLIKELIHOOD)
    limit = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)
    batch_size = serializers.IntegerField(default=8, min_value=1, max_value=1024)
    shards = shards_field()
    seed = serializers.IntegerField(default=0, min_value=-(2**31), max_value=2**31 - 1)
    params = serializers.DictField(
        required=False,
        default=dict,
        help_text="Decoding for generative scoring: " + ", ".join(GEN_RULES),
    )
    prompt = serializers.ChoiceField(
        choices=PromptMode.choices,
        default=PromptMode.TEMPLATE,
        help_text="template: rendered by the model's prompt template as generation does; raw: "
        "the task's own text (models with weights only)",
    )
    system_instruction = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        max_length=SYSTEM_LIMIT,
        help_text="Replaces the template's system prompt (blank: the template's own)",
    )
    fewshot_as_multiturn = serializers.BooleanField(
        default=True, help_text="Few-shot examples as earlier user/assistant turns"
    )


class BenchmarkRunSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True)

    class Meta:
        model = BenchmarkRun
        fields = [
            "id",
            "model",
            "model_name",
            "tasks",
            "num_fewshot",
            "scoring",
            "limit",
            "batch_size",
            "seed",
            "params",
            "prompt",
            "system_instruction",
            "fewshot_as_multiturn",
            "status",
            "done",
            "total",
            "harness_version",
            "task_source",
            *RUN_STATE_FIELDS,
        ]
        read_only_fields = fields


class BenchmarkResultSerializer(serializers.Serializer):
    task = serializers.CharField()
    metric = serializers.CharField()
    value = serializers.FloatField()
    stderr = serializers.FloatField(allow_null=True)
    n = serializers.IntegerField()
    num_fewshot = serializers.IntegerField()
    scoring = serializers.CharField()
    prompt_format = serializers.CharField()
    harness_version = serializers.CharField()


class BenchmarkSampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = BenchmarkSample
        fields = [
            "id",
            "task",
            "doc_id",
            "prompt",
            "messages",
            "target",
            "output",
            "correct",
            "metrics",
        ]
        read_only_fields = fields


class BenchmarkRunViewSet(RunViewSet):
    """Staff only: runs name their model and hold its outputs."""

    # Queueing benchmarks needs the right to run models as well as to add the row.
    action_permissions = {
        "create": ["benchmarks.add_benchmarkrun", "generation.run_languagemodel"],
        "retry": ["benchmarks.change_benchmarkrun", "generation.run_languagemodel"],
        "cancel": ["benchmarks.change_benchmarkrun"],
        "results": ["benchmarks.view_benchmarkrun"],
        "samples": ["benchmarks.view_benchmarkrun"],
    }
    queryset = BenchmarkRun.objects.select_related("model")
    serializer_class = BenchmarkRunSerializer
    input_serializer_class = BenchmarkRunInputSerializer
    filterset_fields = ["model", "status", "scoring"]

    def create_run(self, data: dict, user) -> BenchmarkRun:
        return benchmark_run_create(**data, user=user)

    @extend_schema(responses=BenchmarkResultSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def results(self, request, pk=None):
        """Every metric of every finished task, with how it was made."""
        return Response(BenchmarkResultSerializer(result_rows(self.get_object()), many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("task", str, description="Only this task"),
            OpenApiParameter("correct", bool, description="true / false: right or wrong only"),
        ],
        responses=BenchmarkSampleSerializer(many=True),
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def samples(self, request, pk=None):
        """Per-example prompt, target, output and correctness (paginated: limit, offset)."""
        rows = BenchmarkSample.objects.filter(run=self.get_object()).order_by("task", "doc_id")
        task = request.query_params.get("task")
        if task:
            rows = rows.filter(task=task)
        correct = request.query_params.get("correct")
        if correct is not None and correct != "":
            flag = correct.lower()
            if flag not in ("true", "false", "1", "0"):
                raise ValidationError({"correct": "use true or false"})
            rows = rows.filter(correct=flag in ("true", "1"))
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(BenchmarkSampleSerializer(page, many=True).data)


class BenchmarkTaskSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()
    output_type = serializers.CharField()
    members = serializers.ListField(child=serializers.CharField())
    source = serializers.CharField()
    path = serializers.CharField()
    error = serializers.CharField(
        help_text="Kind broken: why the file cannot be read (it is left out of runs)"
    )


class BenchmarkTaskList(APIView):
    """The tasks and groups a benchmark run may name, then the task files left out because
    they cannot be read (kind ``broken``, with the error) (staff who may view benchmark runs)."""

    required_permissions = ["benchmarks.view_benchmarkrun"]

    @extend_schema(responses=BenchmarkTaskSerializer(many=True))
    def get(self, request):
        return Response(BenchmarkTaskSerializer(task_rows(), many=True).data)
