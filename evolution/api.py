"""Staff-only REST API for evolution runs (routes: evolution/api_urls.py): create
(evolution.runs.evolution_run_create), list, retrieve with the per-operation counts, cancel,
retry, and page through a run's items (``?kept=true|false``, ``?rule=``, ``?operation=``,
``?round=``). Evolver models, prompts and outputs are staff matters: nothing here is open to
annotators."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError

from evalsite.query import whole_number
from evalsite.runs.api import RUN_STATE_FIELDS, RunViewSet
from generation.models import InstructionDataset, LanguageModel

from .engine.elimination import RULES
from .models import EvolutionItem, EvolutionRun
from .runs import MOST_ROUNDS, evolution_run_create
from .summary import evolution_totals


class EvolutionRunInputSerializer(serializers.Serializer):
    """A new evolution run; unset values take the service's defaults."""

    source = serializers.PrimaryKeyRelatedField(queryset=InstructionDataset.objects.all())
    model = serializers.PrimaryKeyRelatedField(queryset=LanguageModel.objects.all())
    answer_model = serializers.PrimaryKeyRelatedField(
        queryset=LanguageModel.objects.all(), required=False, allow_null=True, default=None
    )
    judge = serializers.PrimaryKeyRelatedField(
        queryset=LanguageModel.objects.all(), required=False, allow_null=True, default=None
    )
    rounds = serializers.IntegerField(default=1, min_value=1, max_value=MOST_ROUNDS)
    seed = serializers.IntegerField(default=0, min_value=-(2**31), max_value=2**31 - 1)
    batch_size = serializers.IntegerField(default=8, min_value=1, max_value=1024)
    params = serializers.DictField(required=False, default=dict, help_text="Evolver decoding")
    answer_params = serializers.DictField(required=False, default=dict)
    rules = serializers.DictField(required=False, default=dict, help_text="Elimination thresholds")
    name = serializers.CharField(required=False, default="", allow_blank=True, max_length=200)


class EvolutionRunSerializer(serializers.ModelSerializer):
    source_name = serializers.CharField(source="source.name", read_only=True)
    model_name = serializers.CharField(source="model.name", read_only=True)
    answer_model_name = serializers.CharField(source="answer_model.name", read_only=True)
    totals = serializers.SerializerMethodField()

    class Meta:
        model = EvolutionRun
        fields = [
            "id",
            "source",
            "source_name",
            "model",
            "model_name",
            "answer_model",
            "answer_model_name",
            "judge",
            "rounds",
            "seed",
            "batch_size",
            "params",
            "answer_params",
            "rules",
            "prompts",
            "name",
            "result",
            "status",
            "done",
            "total",
            "counts",
            "totals",
            *RUN_STATE_FIELDS,
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_totals(self, run: EvolutionRun) -> dict:
        """items, kept, dropped per rule over every operation."""
        return evolution_totals(run.counts or {})


class EvolutionItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = EvolutionItem
        fields = [
            "id",
            "round",
            "source_example",
            "parent_item",
            "parent_text",
            "operation",
            "prompt",
            "prompt_text",
            "output",
            "instruction",
            "judge_output",
            "answer",
            "kept",
            "drop_rule",
            "drop_detail",
            "created_at",
        ]
        read_only_fields = fields


class EvolutionRunViewSet(RunViewSet):
    """Staff only."""

    # Queueing a run needs the right to run models as well as to add the row.
    action_permissions = {
        "create": ["evolution.add_evolutionrun", "generation.run_languagemodel"],
        "retry": ["evolution.change_evolutionrun", "generation.run_languagemodel"],
        "cancel": ["evolution.change_evolutionrun"],
        "items": ["evolution.view_evolutionrun"],
    }
    queryset = EvolutionRun.objects.select_related("source", "model", "answer_model")
    serializer_class = EvolutionRunSerializer
    input_serializer_class = EvolutionRunInputSerializer
    filterset_fields = ["source", "model", "status"]

    def create_run(self, data: dict, user) -> EvolutionRun:
        return evolution_run_create(**data, user=user)

    @extend_schema(
        parameters=[
            OpenApiParameter("kept", bool),
            OpenApiParameter("rule", str, enum=list(RULES)),
            OpenApiParameter("operation", str),
            OpenApiParameter("round", int),
        ],
        responses=EvolutionItemSerializer(many=True),
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def items(self, request, pk=None):
        """The run's items by round and source row (paginated: ``limit``, ``offset``)."""
        rows = EvolutionItem.objects.filter(run=self.get_object()).order_by(
            "round", "source_example_id"
        )
        query = request.query_params
        if "kept" in query:
            if query["kept"] not in ("true", "false"):
                raise ValidationError({"kept": "true or false"})
            rows = rows.filter(kept=query["kept"] == "true")
        if "rule" in query:
            if query["rule"] not in RULES:
                raise ValidationError({"rule": "one of: " + ", ".join(RULES)})
            rows = rows.filter(drop_rule=query["rule"])
        if "operation" in query:
            rows = rows.filter(operation=query["operation"])
        if "round" in query:
            try:
                round_ = whole_number(query["round"], name="round", high=MOST_ROUNDS)
            except ValueError as exc:
                raise ValidationError({"round": str(exc)}) from None
            rows = rows.filter(round=round_)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(EvolutionItemSerializer(page, many=True).data)
